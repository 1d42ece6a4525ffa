//! # tachyon-controlplane — layer 6: configuration and (later) supervision and admin
//!
//! Today this crate owns the configuration: one TOML file, parsed strictly (unknown keys are
//! errors), validated with messages that name the key, the value and the fix, and turned into
//! the engine's and the driver's settings. The separate supervising process, admin API,
//! metrics and `$SYS` come with issue 6.

pub mod config;
pub mod userspace;

pub use config::{Config, ConfigError};
pub use userspace::Driver;
