//! `tachyon serve`: the control-plane process. It validates the configuration, starts the
//! admin API, spawns and supervises the dataplane process, publishes `$SYS`, reloads the
//! configuration on SIGHUP, and stops everything on SIGINT/SIGTERM.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tachyon_controlplane::api::Api;
use tachyon_controlplane::channel::Op;
use tachyon_controlplane::config::DEFAULT_CONFIG;
use tachyon_controlplane::supervisor::{LocalChange, Running, Supervisor};
use tachyon_controlplane::sys::Sys;
use tachyon_controlplane::{http, Config};

use crate::{logging, signals};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REV: &str = env!("TACHYON_GIT_REV");
pub const DRIVERS: &str = env!("TACHYON_DRIVERS");

/// What the control plane and the dataplane compare at the handshake.
pub fn build_id() -> String {
    format!("{VERSION} ({REV})")
}

pub fn serve(path: Option<PathBuf>, port: Option<u16>, data_dir: Option<String>) -> ExitCode {
    let (text, origin) = match &path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, p.display().to_string()),
            Err(e) => {
                eprintln!(
                    "config {}: cannot read: {e} — check the path given to --config",
                    p.display()
                );
                return ExitCode::from(2);
            }
        },
        None => (DEFAULT_CONFIG.to_owned(), "embedded default".to_owned()),
    };
    let running = match Running::parse(text, origin, path.clone(), port, data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cfg = running.cfg.clone();
    let log_reload = logging::init(&cfg.log.level, cfg.log.format == "json");
    tracing::info!(version = VERSION, rev = REV, config = %running.origin, pid = std::process::id(),
        "tachyon starting (control plane)");
    let child_affinity = keep_off_shard_cores(&cfg);

    // Everything the control plane can get wrong fails here, before a dataplane starts.
    let token = Arc::new(RwLock::new(String::new()));
    let admin = if cfg.admin.enabled {
        match admin_token(&cfg) {
            Ok(t) => *token.write().unwrap_or_else(|e| e.into_inner()) = t,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
        match TcpListener::bind(&cfg.admin.bind) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "config: admin.bind = {:?}: cannot listen: {e} — choose a free port, or set admin.enabled = false",
                    cfg.admin.bind
                );
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    if let Err(e) = signals::block(&signals::control_set()) {
        eprintln!("cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    // The running binary itself, even if the file was replaced since (an upgrade in place):
    // a restarted dataplane is always this build.
    let exe = match Path::new("/proc/self/exe")
        .exists()
        .then(|| PathBuf::from("/proc/self/exe"))
        .map(Ok)
        .unwrap_or_else(std::env::current_exe)
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find this program's path to start the dataplane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats_dir = match stats_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a directory for the statistics region in /dev/shm or the temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats_path = stats_dir.join("stats");
    let sup = Supervisor::new(running, exe, stats_path.clone(), build_id(), child_affinity);
    let me = nix::unistd::getpid();
    sup.start(Box::new(move || {
        let _ = nix::sys::signal::kill(me, Signal::SIGUSR2);
    }));

    let log_reload = Arc::new(log_reload);
    let reload = {
        let (sup, token, log_reload) = (sup.clone(), token.clone(), log_reload.clone());
        move || {
            let prepare = |next: &Config| -> Result<LocalChange, String> {
                // The token file is read (or created) now: a failure changes nothing.
                let new_token = if next.admin.enabled {
                    Some(admin_token(next)?)
                } else {
                    None
                };
                let level = next.log.level.clone(); // validated by Config::parse
                let (token, log_reload) = (token.clone(), log_reload.clone());
                Ok(Box::new(move || {
                    if let Some(t) = new_token {
                        *token.write().unwrap_or_else(|e| e.into_inner()) = t;
                    }
                    if let Err(e) = log_reload(&level) {
                        tracing::warn!("log.level not applied in the control plane: {e}");
                    }
                }))
            };
            sup.reload(&prepare)
        }
    };
    let reload = Arc::new(reload);
    if let Some(listener) = admin {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(address = %addr, token_file = %if cfg.admin.token.is_empty() { cfg.admin_token_path().display().to_string() } else { "(admin.token)".into() },
            "admin API listening: /health /ready /metrics /api/v1/... (Authorization: Bearer <token>)");
        let reload = reload.clone();
        let api = Arc::new(Api {
            sup: sup.clone(),
            token: token.clone(),
            reload: Box::new(move || reload()),
            version: VERSION,
            rev: REV,
            drivers: DRIVERS,
        });
        let spawned = std::thread::Builder::new()
            .name("tachyon-admin-accept".into())
            .spawn(move || http::serve(listener, Arc::new(move |req| api.handle(req))));
        if let Err(e) = spawned {
            eprintln!("cannot start the admin API thread: {e}");
            return ExitCode::FAILURE;
        }
    }
    {
        let sup = sup.clone();
        let _ = std::thread::Builder::new()
            .name("tachyon-sys".into())
            .spawn(move || publish_sys(&sup));
    }

    loop {
        match signals::wait(&signals::control_set()) {
            Some(Signal::SIGHUP) => match reload() {
                Ok(c) => {
                    tracing::info!(applied = ?c.live, restart_required = ?c.restart, "SIGHUP: configuration reloaded")
                }
                Err(e) => tracing::error!(
                    "SIGHUP: configuration not reloaded, the running one stays: {e}"
                ),
            },
            Some(Signal::SIGUSR1) => {
                let pid = sup.dataplane_pid();
                if pid != 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Signal::SIGUSR1,
                    );
                }
            }
            Some(Signal::SIGUSR2) => break,
            sig => {
                tracing::info!(signal = ?sig, "stopping the broker");
                let grace = Duration::from_millis(sup.with_config(|c| c.net.shutdown_drain_ms))
                    + Duration::from_secs(10);
                sup.stop(grace);
                break;
            }
        }
        if sup.is_stopping() && sup.dataplane_pid() == 0 {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&stats_dir);
    let code = *sup.gave_up.lock().unwrap_or_else(|e| e.into_inner());
    match code {
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => {
            tracing::info!("tachyon stopped");
            ExitCode::SUCCESS
        }
    }
}

/// Moves the control plane off the cores the shards are pinned to, when other cores are
/// left: the admin API, `$SYS` and supervision then never take a dataplane core's time.
/// Returns the set the dataplane must start with (the original one), if it changed.
fn keep_off_shard_cores(cfg: &Config) -> Option<nix::sched::CpuSet> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let shard = cfg.shard_cores();
    if shard.is_empty() {
        return None;
    }
    let me = nix::unistd::Pid::from_raw(0);
    let current = sched_getaffinity(me).ok()?;
    let mut allowed = CpuSet::new();
    let mut left = Vec::new();
    for c in 0..CpuSet::count() {
        if current.is_set(c).unwrap_or(false) && !shard.contains(&c) && allowed.set(c).is_ok() {
            left.push(c);
        }
    }
    if left.is_empty() {
        // Every core runs a shard (a small host): share them.
        return None;
    }
    match sched_setaffinity(me, &allowed) {
        Ok(()) => {
            tracing::info!(shard_cores = ?shard, control_cores = ?left, "control plane kept off the shard cores");
            // The dataplane starts with the whole set again.
            Some(current)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not move the control plane off the shard cores");
            None
        }
    }
}

/// The shared stats region lives in memory (`/dev/shm`) where there is one, inside a new
/// directory only this user can enter (the shared directory is writable by everyone: a
/// predictable file name there could be planted or linked by another user).
fn stats_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    sweep_stale_stats_dirs(&base);
    let mut last = None;
    for _ in 0..16 {
        let mut raw = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))?;
        let dir = base.join(format!(
            "tachyon-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(raw)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no directory")))
}

/// Removes the statistics directories of control planes that were killed (their pid is
/// gone) and belonged to this user.
fn sweep_stale_stats_dirs(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tachyon-")
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if mine && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The admin token: `admin.token`, else the token file, else a new random one written there
/// (mode 0600) for `tachyon ctl` and scripts to read.
fn admin_token(cfg: &Config) -> Result<String, String> {
    if !cfg.admin.token.is_empty() {
        return Ok(cfg.admin.token.clone());
    }
    let path = cfg.admin_token_path();
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim();
        if t.len() >= 16 {
            return Ok(t.to_owned());
        }
        return Err(format!(
            "config: admin.token_file = {:?} holds fewer than 16 characters — put a longer token in it, or delete it to have one generated",
            path.display()
        ));
    }
    let mut raw = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .map_err(|e| {
            format!("cannot read /dev/urandom for the admin token: {e} — set admin.token")
        })?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "config: admin.token_file = {:?}: cannot create {}: {e} — set admin.token or admin.token_file",
                path.display(),
                dir.display()
            )
        })?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()))
        .map_err(|e| {
            format!(
                "config: admin.token_file = {:?}: cannot write: {e} — set admin.token or admin.token_file",
                path.display()
            )
        })?;
    tracing::info!(file = %path.display(), "admin token generated");
    Ok(token)
}

/// Publishes `$SYS/broker/...` every `sys.interval_secs`, and at once after a dataplane
/// (re)start.
fn publish_sys(sup: &Supervisor) {
    let mut sys = Sys::default();
    let mut last: Option<(Instant, u32)> = None;
    while !sup.is_stopping() {
        std::thread::sleep(Duration::from_millis(200));
        let interval = sup.with_config(|c| c.sys.interval_secs);
        if interval == 0 || !sup.is_ready() {
            continue;
        }
        let pid = sup.dataplane_pid();
        let due =
            last.is_none_or(|(t, p)| p != pid || t.elapsed() >= Duration::from_secs(interval));
        if !due {
            continue;
        }
        let now = Instant::now();
        let messages = sys.compose(&sup.totals(), VERSION, sup.started.elapsed(), now);
        match sup.request(Op::PublishSys { messages }) {
            Ok(_) => last = Some((now, pid)),
            Err(e) => tracing::debug!(error = ?e, "$SYS not published"),
        }
    }
}
