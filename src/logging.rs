//! Structured logs through `tracing`: text or JSON lines on stderr, levels per module
//! (`log.level = "info,tachyon_engine=debug"`), changeable at run time (a reload applies a new
//! `log.level` without a restart). `TACHYON_LOG` overrides the configured level and pins it.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer};

/// Applies a new level filter; an error names what is wrong with it.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Installs the process's subscriber. The two processes write to the same stderr; their
/// lines tell them apart by target (`tachyon::control`, `tachyon_controlplane::*` for the
/// control plane; `tachyon::dataplane`, `tachyon_net::*`, `tachyon_engine::*` for the
/// dataplane).
pub fn init(level: &str, json: bool) -> LogReload {
    let pinned = std::env::var("TACHYON_LOG").ok();
    let filter = pinned
        .as_deref()
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = if json {
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        // Colours only on a terminal: log files and journald get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    Box::new(move |level: &str| {
        if pinned.is_some() {
            tracing::info!("TACHYON_LOG is set: it keeps deciding the log level");
            return Ok(());
        }
        let f = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}
