//! `tachyon dataplane --control-fd N`: the dataplane process, started by the control plane
//! (never by hand). It reads its configuration from the control channel, recovers the
//! durable state, runs the shards on the configured driver, publishes statistics into the
//! shared region, and answers the control plane through its agent thread.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;

use tachyon_controlplane::agent::Agent;
use tachyon_controlplane::channel::ToDataplane;
use tachyon_controlplane::supervisor::Running;
use tachyon_controlplane::Driver;
use tachyon_net::ControlHooks;

use crate::{logging, signals};

pub fn run(control_fd: i32) -> ExitCode {
    // SAFETY: the control plane passes this descriptor (one end of a socket pair) to this
    // process and nothing else in it uses the number.
    let stream = unsafe { UnixStream::from_raw_fd(control_fd) };
    // Not inherited by anything this process might start.
    let _ = nix::fcntl::fcntl(
        control_fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let (agent, reader, start) = match Agent::connect(stream, &crate::control::build_id()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tachyon dataplane: {e} (this mode is started by `tachyon serve`)");
            return ExitCode::from(2);
        }
    };
    let ToDataplane::Start {
        config,
        origin,
        port,
        data_dir,
        stats_path,
        boot_nonce,
    } = start
    else {
        return ExitCode::from(2);
    };
    let cfg = match Running::parse(config, origin, None, port, data_dir) {
        Ok(r) => r.cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let log_reload = logging::init(&cfg.log.level, cfg.log.format == "json");
    tracing::info!(
        pid = std::process::id(),
        driver = ?cfg.driver(),
        shards = cfg.shard_count(),
        "dataplane starting"
    );

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

    let shutdown = tachyon_net::Shutdown::new();
    if let Err(e) = signals::block(&signals::dataplane_set()) {
        eprintln!("cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("tachyon-signals".into())
            .spawn(move || loop {
                match signals::wait(&signals::dataplane_set()) {
                    #[cfg(feature = "count-allocs")]
                    Some(nix::sys::signal::Signal::SIGUSR1) => crate::alloc_count::report(),
                    // Passed on by the control plane; meaningful only in a count-allocs build.
                    #[cfg(not(feature = "count-allocs"))]
                    Some(nix::sys::signal::Signal::SIGUSR1) => {
                        tracing::debug!("SIGUSR1: nothing to report (not a count-allocs build)")
                    }
                    sig => {
                        tracing::info!(signal = ?sig, "stopping: no new connections, DISCONNECT 0x8B to v5 clients, flushing");
                        shutdown.trigger();
                        return;
                    }
                }
            })
            .expect("spawning the signal thread at start-up");
    }
    {
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("tachyon-agent".into())
            .spawn(move || agent.serve(reader, shutdown, log_reload))
            .expect("spawning the agent thread at start-up");
    }

    let stats = match tachyon_stats::Region::create(stats_path.as_ref(), cfg.shard_count()) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "statistics region unavailable: /metrics and $SYS will show zeros");
            None
        }
    };
    let hooks = ControlHooks {
        stats,
        on_ready: Some(Box::new(move |mesh| agent.ready(mesh))),
    };
    let engine_cfg = cfg.engine_config(boot_nonce);
    let durability = cfg.durability_config();
    let durability = durability.as_ref();
    let result = match cfg.driver() {
        Driver::Kernel => Ok(tachyon_net::run(
            cfg.kernel_config(),
            engine_cfg,
            durability,
            shutdown,
            hooks,
        )),
        Driver::Tap => cfg.tap_config().map(|tap| {
            let stack = cfg.stack_config();
            tachyon_net::userspace::tap::run(tap, stack, engine_cfg, durability, shutdown, hooks)
        }),
        Driver::Dpdk => cfg.dpdk_config().map(|dpdk| {
            let stack = cfg.stack_config();
            run_dpdk(dpdk, stack, engine_cfg, durability, shutdown, hooks)
        }),
    };
    // The control plane validated the driver's section; should it still fail here, say why.
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => {
            tracing::info!("dataplane stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tachyon: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "dpdk")]
fn run_dpdk(
    dpdk: tachyon_net::userspace::dpdk_config::DpdkConfig,
    stack: tachyon_net::userspace::StackConfig,
    engine_cfg: Arc<tachyon_engine::EngineConfig>,
    durability: Option<&tachyon_net::durable::DurabilityConfig>,
    shutdown: Arc<tachyon_net::Shutdown>,
    hooks: ControlHooks,
) -> Result<(), tachyon_net::NetError> {
    tachyon_net::userspace::dpdk::run(dpdk, stack, engine_cfg, durability, shutdown, hooks)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(
    _: tachyon_net::userspace::dpdk_config::DpdkConfig,
    _: tachyon_net::userspace::StackConfig,
    _: Arc<tachyon_engine::EngineConfig>,
    _: Option<&tachyon_net::durable::DurabilityConfig>,
    _: Arc<tachyon_net::Shutdown>,
    _: ControlHooks,
) -> Result<(), tachyon_net::NetError> {
    Err(tachyon_net::NetError::Device(
        "dataplane.driver = \"dpdk\", but this binary was built without DPDK — build it with `cargo build --release --features dpdk` (needs: apt-get install libdpdk-dev libclang-dev pkg-config), or use driver \"tap\" or \"kernel\"".into(),
    ))
}
