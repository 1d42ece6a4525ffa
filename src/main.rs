//! `tachyon`: the broker binary.
//!
//! ```text
//!   tachyon serve [--config FILE] [-p PORT]   run the broker (embedded defaults without --config):
//!                                             the control plane, which starts the dataplane
//!   tachyon check-config FILE                 validate a configuration and exit
//!   tachyon ctl [--config FILE] COMMAND       the admin API from the command line
//!   tachyon inspect-data DIR                  what a data directory would recover
//!   tachyon dataplane --control-fd N          (started by `serve`, not by hand)
//!
//! `dataplane.driver` picks how bytes reach the shards: kernel sockets (default), smoltcp
//! over a TAP device, or smoltcp over DPDK ports (a binary built with `--features dpdk`).
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "count-allocs")]
mod alloc_count;
#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

mod control;
mod ctl;
mod dataplane;
mod logging;
mod signals;

use tachyon_controlplane::Config;

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
    /// The admin API from the command line (`tachyon ctl --help`).
    Ctl(ctl::CtlArgs),
    /// The dataplane process; `tachyon serve` starts it with its end of the control channel.
    #[command(hide = true)]
    Dataplane {
        #[arg(long)]
        control_fd: i32,
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
        } => control::serve(config, port, data_dir),
        Command::Ctl(args) => ctl::run(args),
        Command::Dataplane { control_fd } => dataplane::run(control_fd),
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
