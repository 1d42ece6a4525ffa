//! `tachyon`: the broker binary.
//!
//! ```text
//!   tachyon serve [--config FILE] [-p PORT]   run the broker (embedded defaults without --config)
//!   tachyon check-config FILE                 validate a configuration and exit
//!
//! `dataplane.driver` picks how bytes reach the shards: kernel sockets (default), smoltcp
//! over a TAP device, or smoltcp over DPDK ports (a binary built with `--features dpdk`).
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[cfg(feature = "count-allocs")]
mod alloc_count;
#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

use nix_signals::wait_for_stop_signal;
use tachyon_controlplane::{Config, Driver};

#[derive(Parser)]
#[command(name = "tachyon", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TACHYON_GIT_REV"), "; drivers: ", env!("TACHYON_DRIVERS"), ")"), about = "MQTT 3.1.1 and 5.0 broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker in the foreground.
    Serve {
        /// Configuration file (TOML). Without it: configs/dev.toml, embedded.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Port of the first listener (overrides the configuration, like `mosquitto -p`).
        #[arg(long, short = 'p')]
        port: Option<u16>,
        /// Data directory of the WAL (overrides durability.data_dir; default ./data).
        #[arg(long)]
        data_dir: Option<String>,
    },
    /// Validate a configuration file and exit (0 = usable).
    CheckConfig { file: PathBuf },
    /// Show what a data directory holds (read only; the broker may be stopped or running).
    InspectData {
        dir: PathBuf,
        /// Only this client's session.
        #[arg(long)]
        client: Option<String>,
        /// List every held message.
        #[arg(long)]
        messages: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve {
            config,
            port,
            data_dir,
        } => serve(config, port, data_dir),
        Command::InspectData {
            dir,
            client,
            messages,
        } => {
            match tachyon_net::durable::inspect(
                &dir,
                client.as_deref(),
                messages,
                &mut std::io::stdout(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TACHYON_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config: Option<PathBuf>, port: Option<u16>, data_dir: Option<String>) -> ExitCode {
    let mut cfg = match &config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default_dev(),
    };
    if let Some(p) = port {
        cfg.override_port(p);
    }
    if let Some(d) = &data_dir {
        cfg.override_data_dir(d);
    }
    init_logging(&cfg);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), rev = env!("TACHYON_GIT_REV"),
        config = %config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded default".into()),
        "tachyon starting");

    if cfg.driver() == Driver::Kernel {
        match tachyon_net::limits::raise_nofile_limit() {
            Ok(n) => tracing::info!(
                open_files = n,
                connections_max = n.saturating_sub(16 + 4 * cfg.shard_count() as u64),
                "open-files limit raised to the hard limit; each connection uses one descriptor"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not raise the open-files limit; `ulimit -n` bounds connections")
            }
        }
    }

    // Signals are taken by one thread with sigwait; shard threads inherit the blocked mask.
    let shutdown = tachyon_net::Shutdown::new();
    if let Err(e) = nix_signals::block_stop_signals() {
        eprintln!("cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("tachyon-signals".into())
            .spawn(move || {
                let sig = wait_for_stop_signal();
                tracing::info!(
                    signal = sig,
                    "stopping: no new connections, DISCONNECT 0x8B to v5 clients, flushing"
                );
                shutdown.trigger();
            })
            .expect("spawning the signal thread at start-up");
    }

    let boot_nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    let engine_cfg = cfg.engine_config(boot_nonce);
    let durability = cfg.durability_config();
    let durability = durability.as_ref();
    let result = match cfg.driver() {
        Driver::Kernel => tachyon_net::run(cfg.kernel_config(), engine_cfg, durability, shutdown),
        Driver::Tap => match cfg.tap_config() {
            Ok(tap) => tachyon_net::userspace::tap::run(
                tap,
                cfg.stack_config(),
                engine_cfg,
                durability,
                shutdown,
            ),
            Err(e) => return config_error(e),
        },
        Driver::Dpdk => match cfg.dpdk_config() {
            Ok(dpdk) => run_dpdk(dpdk, cfg.stack_config(), engine_cfg, durability, shutdown),
            Err(e) => return config_error(e),
        },
    };
    match result {
        Ok(()) => {
            tracing::info!("tachyon stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tachyon: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: tachyon_controlplane::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

#[cfg(feature = "dpdk")]
fn run_dpdk(
    dpdk: tachyon_net::userspace::dpdk_config::DpdkConfig,
    stack: tachyon_net::userspace::StackConfig,
    engine_cfg: Arc<tachyon_engine::EngineConfig>,
    durability: Option<&tachyon_net::durable::DurabilityConfig>,
    shutdown: Arc<tachyon_net::Shutdown>,
) -> Result<(), tachyon_net::NetError> {
    tachyon_net::userspace::dpdk::run(dpdk, stack, engine_cfg, durability, shutdown)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(
    _: tachyon_net::userspace::dpdk_config::DpdkConfig,
    _: tachyon_net::userspace::StackConfig,
    _: Arc<tachyon_engine::EngineConfig>,
    _: Option<&tachyon_net::durable::DurabilityConfig>,
    _: Arc<tachyon_net::Shutdown>,
) -> Result<(), tachyon_net::NetError> {
    Err(tachyon_net::NetError::Device(
        "dataplane.driver = \"dpdk\", but this binary was built without DPDK — build it with `cargo build --release --features dpdk` (needs: apt-get install libdpdk-dev libclang-dev pkg-config), or use driver \"tap\" or \"kernel\"".into(),
    ))
}

/// SIGINT/SIGTERM handling without async-signal-safety concerns: block them everywhere and
/// take them synchronously on one thread.
mod nix_signals {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};

    fn stop_set() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        #[cfg(feature = "count-allocs")]
        set.add(Signal::SIGUSR1);
        set
    }

    pub fn block_stop_signals() -> nix::Result<()> {
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_set()), None)
    }

    pub fn wait_for_stop_signal() -> &'static str {
        // It loops only in a `count-allocs` build (SIGUSR1 reports and waits again).
        #[allow(clippy::never_loop)]
        loop {
            match stop_set().wait() {
                #[cfg(feature = "count-allocs")]
                Ok(Signal::SIGUSR1) => super::alloc_count::report(),
                Ok(Signal::SIGINT) => return "SIGINT",
                Ok(Signal::SIGTERM) => return "SIGTERM",
                Ok(_) | Err(_) => return "signal",
            }
        }
    }
}
