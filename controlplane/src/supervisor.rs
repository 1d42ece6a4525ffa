//! The control plane's hold on the dataplane process: it spawns it (this same binary, in its
//! `dataplane` mode) with one end of a Unix-domain socket pair, sends it the configuration,
//! relays admin requests over the channel, and restarts it with backoff when it dies. The
//! restarted dataplane recovers its state from the WAL like any start.
//!
//! ```text
//!   spawn ──▶ Hello ──▶ Start{config} ──▶ (recovery) ──▶ Ready ──▶ requests / replies
//!     ▲                                                              │ exit: crash
//!     └──────────────── backoff (doubling, reset once stable) ◀─────┘
//! ```
//!
//! The child gets `PR_SET_PDEATHSIG = SIGKILL`: if the control plane itself is killed, the
//! dataplane goes too (as one broker would), instead of running on unobserved; the data
//! directory's lock then lets the next start wait for it to be gone.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tachyon_stats::{Counter, Histogram, Kind, Region, ShardSnapshot, COUNTERS, HISTOGRAMS};

use crate::channel::{self, ChannelError, FromDataplane, Op, ToDataplane};
use crate::config::{Changes, Config};
use crate::liveness::{judge, ShardHealth};

/// How long a request waits for the dataplane's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The dataplane's first message must come this fast (it is sent before any work).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to the channel that takes longer finds a wedged dataplane.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Starts in a row that never reached `Ready` before the supervisor gives up.
const FAILED_STARTS_MAX: u32 = 5;

/// The configuration the broker runs, with where it came from.
#[derive(Clone)]
pub struct Running {
    pub cfg: Config,
    pub text: String,
    pub origin: String,
    /// The file (`None`: the embedded default).
    pub path: Option<PathBuf>,
    /// Command-line overrides, applied to every version of the file.
    pub port: Option<u16>,
    pub data_dir: Option<String>,
}

impl Running {
    /// Parses `text` and applies the command-line overrides.
    ///
    /// # Errors
    /// The configuration error, naming the key.
    pub fn parse(
        text: String,
        origin: String,
        path: Option<PathBuf>,
        port: Option<u16>,
        data_dir: Option<String>,
    ) -> Result<Running, crate::ConfigError> {
        let mut cfg = Config::parse(&text, &origin)?;
        if let Some(p) = port {
            cfg.override_port(p);
        }
        if let Some(d) = &data_dir {
            cfg.override_data_dir(d);
        }
        Ok(Running {
            cfg,
            text,
            origin,
            path,
            port,
            data_dir,
        })
    }
}

/// The control plane's own part of a reload, checked and ready to apply.
pub type LocalChange = Box<dyn FnOnce() + Send>;

/// An answer the API can pass on: the dataplane's error text, or that it is unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not running or not ready (starting, recovering, restarting).
    Unavailable(String),
    /// The dataplane refused or failed the operation.
    Failed(String),
}

/// The channel to the running dataplane incarnation.
struct Link {
    writer: Mutex<UnixStream>,
    pending: Mutex<HashMap<u64, mpsc::Sender<(bool, Value)>>>,
    next_id: AtomicU64,
}

/// Sums of the counters of dataplanes that have exited, so that what the control plane
/// reports only grows across restarts.
#[derive(Default)]
struct Carried {
    counters: Vec<u64>,
    hists: Vec<Histogram>,
}

/// Totals over the shards of the current dataplane plus those that came before.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Indexed by [`Counter`].
    pub counters: Vec<u64>,
    /// Indexed by `tachyon_stats::Hist`.
    pub hists: Vec<Histogram>,
    /// The current dataplane's shards.
    pub shards: Vec<ShardSnapshot>,
}

impl Totals {
    pub fn get(&self, c: Counter) -> u64 {
        self.counters.get(c as usize).copied().unwrap_or(0)
    }
}

/// Shared by the supervisor thread, the admin API, `$SYS` and the signal loop.
pub struct Supervisor {
    pub started: Instant,
    running: RwLock<Running>,
    link: Mutex<Option<Arc<Link>>>,
    ready: AtomicBool,
    /// Some dataplane has reported ready since the control plane started.
    ever_ready: AtomicBool,
    /// `Ready` messages received (one per dataplane that became ready).
    readies: AtomicU64,
    pid: AtomicU32,
    /// Shards of the running dataplane (from its `Ready`).
    shards: std::sync::atomic::AtomicUsize,
    restarts: AtomicU64,
    region: Mutex<Option<Region>>,
    carried: Mutex<Carried>,
    stopping: AtomicBool,
    /// Signalled when the dataplane exits and when stopping (wakes a backoff wait).
    events: (Mutex<u64>, Condvar),
    stats_path: PathBuf,
    exe: PathBuf,
    /// This build's identity (version and revision); the dataplane must report the same.
    build: String,
    /// The CPU set the dataplane starts with (the control plane may have moved itself off
    /// the shard cores; the dataplane places its shards itself).
    child_affinity: Option<nix::sched::CpuSet>,
    /// The dataplane's exit code when the supervisor gave up (a failed first start).
    pub gave_up: Mutex<Option<i32>>,
    /// Called when the supervisor ends on its own (the signal loop then exits).
    on_end: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// When the running dataplane reported ready (`tachyon_stats::monotonic_ms`).
    ready_mono_ms: AtomicU64,
    /// Shards of the running dataplane that are not live (see `liveness`), by the last hang
    /// check; while any is, the broker is not ready.
    stalled: Mutex<Vec<(usize, ShardHealth)>>,
    stalled_any: AtomicBool,
    /// The hang check killed the running dataplane (once per incarnation).
    hang_killed: AtomicBool,
    hangs: AtomicU64,
}

impl Supervisor {
    pub fn new(
        running: Running,
        exe: PathBuf,
        stats_path: PathBuf,
        build: String,
        child_affinity: Option<nix::sched::CpuSet>,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            started: Instant::now(),
            running: RwLock::new(running),
            link: Mutex::new(None),
            ready: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            readies: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            shards: std::sync::atomic::AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            region: Mutex::new(None),
            carried: Mutex::new(Carried::default()),
            stopping: AtomicBool::new(false),
            events: (Mutex::new(0), Condvar::new()),
            stats_path,
            exe,
            build,
            child_affinity,
            gave_up: Mutex::new(None),
            on_end: Mutex::new(None),
            ready_mono_ms: AtomicU64::new(0),
            stalled: Mutex::new(Vec::new()),
            stalled_any: AtomicBool::new(false),
            hang_killed: AtomicBool::new(false),
            hangs: AtomicU64::new(0),
        })
    }

    pub fn running(&self) -> Running {
        self.running
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads one setting of the running configuration without copying it (the scrape and
    /// `$SYS` paths ask several times a second).
    pub fn with_config<T>(&self, f: impl FnOnce(&Config) -> T) -> T {
        f(&self.running.read().unwrap_or_else(|e| e.into_inner()).cfg)
    }

    /// The dataplane reported ready and every shard is making progress.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stalled_any.load(Ordering::Acquire)
    }

    /// Shards the last hang check found not live (busy past the timeout, or hung).
    pub fn stalled(&self) -> Vec<(usize, ShardHealth)> {
        self.stalled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Dataplanes killed by the hang check.
    pub fn hangs(&self) -> u64 {
        self.hangs.load(Ordering::Relaxed)
    }

    /// Pid of the running dataplane (0: none).
    pub fn dataplane_pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    /// Shards of the running dataplane (0: none ready).
    pub fn shards(&self) -> usize {
        self.shards.load(Ordering::Acquire)
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Runs the supervision loop on a new thread; `on_end` runs when it ends by itself.
    pub fn start(self: &Arc<Supervisor>, on_end: Box<dyn FnOnce() + Send>) {
        *self.on_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(on_end);
        let me = self.clone();
        std::thread::Builder::new()
            .name("tachyon-supervisor".into())
            .spawn(move || me.supervise())
            .expect("spawning the supervisor thread at start-up");
        let me = self.clone();
        std::thread::Builder::new()
            .name("tachyon-watchdog".into())
            .spawn(move || me.watch_shards())
            .expect("spawning the watchdog thread at start-up");
    }

    /// The hang check: judges every shard of the ready dataplane a few times per
    /// `supervisor.hang_timeout_ms` (see `liveness`).
    fn watch_shards(self: Arc<Supervisor>) {
        let mut busy_logged: HashMap<usize, Instant> = HashMap::new();
        let mut blind_logged = false;
        while !self.is_stopping() {
            let (timeout_ms, action) = self.with_config(|c| {
                (
                    c.supervisor.hang_timeout_ms,
                    c.supervisor.hang_action.clone(),
                )
            });
            let tick = Duration::from_millis((timeout_ms / 8).clamp(50, 1_000));
            // What this check judges: one dataplane incarnation (a restart meanwhile voids it).
            let readies = self.readies.load(Ordering::Acquire);
            let pid = self.dataplane_pid();
            let stalled = if timeout_ms == 0 || !self.ready.load(Ordering::Acquire) {
                Vec::new()
            } else {
                match self.judge_shards(timeout_ms) {
                    Some(s) => s,
                    None => {
                        if !blind_logged {
                            tracing::error!("the hang check cannot read the dataplane's statistics region (see the warning when the dataplane became ready): hung shards go unnoticed until the next dataplane start");
                            blind_logged = true;
                        }
                        Vec::new()
                    }
                }
            };
            if self.readies.load(Ordering::Acquire) != readies {
                std::thread::sleep(tick);
                continue;
            }
            for &(shard, h) in &stalled {
                match h {
                    ShardHealth::Hung { silent_ms } => {
                        if self.hang_killed.load(Ordering::Acquire) {
                            continue;
                        }
                        if action == "restart" {
                            tracing::error!(shard, silent_ms, pid, timeout_ms,
                                "dataplane shard {shard} has made no progress for {silent_ms} ms and is in no WAL write, snapshot or shutdown: hung; killing the dataplane, which restarts with its state from the WAL (supervisor.hang_action = \"restart\")");
                            self.hang_killed.store(true, Ordering::Release);
                            self.hangs.fetch_add(1, Ordering::Relaxed);
                            // Only the incarnation judged (its pid was read before).
                            if pid != 0 && self.dataplane_pid() == pid {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(pid as i32),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                        } else if busy_logged
                            .get(&shard)
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                        {
                            tracing::error!(shard, silent_ms, pid, timeout_ms,
                                "dataplane shard {shard} has made no progress for {silent_ms} ms: hung; /ready is false (supervisor.hang_action = \"report\": restart it yourself, e.g. kill {pid})");
                            busy_logged.insert(shard, Instant::now());
                        }
                    }
                    ShardHealth::Busy { what, for_ms } => {
                        if busy_logged
                            .get(&shard)
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                        {
                            tracing::warn!(shard, busy = what.name(), busy_ms = for_ms, timeout_ms,
                                "dataplane shard {shard} has been in a {} for {for_ms} ms (a slow disk or a large state): not restarted; /ready is false until it finishes", what.name());
                            busy_logged.insert(shard, Instant::now());
                        }
                    }
                    ShardHealth::Live => {}
                }
            }
            if stalled.is_empty() {
                busy_logged.clear();
            }
            self.stalled_any
                .store(!stalled.is_empty(), Ordering::Release);
            *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) = stalled;
            std::thread::sleep(tick);
        }
    }

    /// The shards that are not live now; `None` without a statistics region to read.
    fn judge_shards(&self, timeout_ms: u64) -> Option<Vec<(usize, ShardHealth)>> {
        let slot = self.region.lock().unwrap_or_else(|e| e.into_inner());
        let region = slot.as_ref()?;
        let now = tachyon_stats::monotonic_ms();
        let ready = self.ready_mono_ms.load(Ordering::Acquire);
        Some(
            (0..region.shard_count())
                .map(|s| (s, judge(&region.read(s), now, ready, timeout_ms)))
                .filter(|(_, h)| *h != ShardHealth::Live)
                .collect(),
        )
    }

    fn notify(&self) {
        let (m, cv) = &self.events;
        *m.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    /// Waits up to `d` or until notified (stop or exit). Returns true when stopping.
    fn pause(&self, d: Duration) -> bool {
        let (m, cv) = &self.events;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *g;
        let deadline = Instant::now() + d;
        while *g == seen && !self.is_stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.is_stopping()
    }

    fn supervise(self: Arc<Supervisor>) {
        let mut backoff = Duration::ZERO;
        let mut failed_starts = 0u32;
        loop {
            let sv = self.with_config(|c| c.supervisor.clone());
            let began = Instant::now();
            let readies_before = self.readies.load(Ordering::Acquire);
            let status = match self.run_once() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the dataplane process");
                    None
                }
            };
            self.ready.store(false, Ordering::Release);
            let ever_ready = self.ever_ready.load(Ordering::Acquire);
            self.pid.store(0, Ordering::Release);
            self.carry_over();
            if self.is_stopping() {
                break;
            }
            let code = status.and_then(|s| s.code());
            if code == Some(0) {
                tracing::info!("dataplane stopped by itself (signal or stop request); stopping the control plane");
                self.stopping.store(true, Ordering::Release);
                break;
            }
            if !ever_ready {
                // A first start that fails is a configuration or environment problem (a port
                // in use, a locked data directory): report it rather than loop.
                tracing::error!(status = %describe(status), "dataplane failed to start; see the error above");
                *self.gave_up.lock().unwrap_or_else(|e| e.into_inner()) = Some(code.unwrap_or(1));
                self.stopping.store(true, Ordering::Release);
                break;
            }
            if self.readies.load(Ordering::Acquire) == readies_before {
                failed_starts += 1;
                if failed_starts >= FAILED_STARTS_MAX {
                    tracing::error!(status = %describe(status), attempts = failed_starts,
                        "dataplane failed to start {FAILED_STARTS_MAX} times in a row; giving up (see the errors above; a changed configuration that needs a restart may be the cause)");
                    *self.gave_up.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(code.unwrap_or(1));
                    self.stopping.store(true, Ordering::Release);
                    break;
                }
            } else {
                failed_starts = 0;
            }
            if began.elapsed() >= Duration::from_secs(sv.stable_after_secs) {
                backoff = Duration::ZERO;
            }
            backoff = if backoff.is_zero() {
                Duration::from_millis(sv.backoff_min_ms)
            } else {
                (backoff * 2).min(Duration::from_millis(sv.backoff_max_ms))
            };
            let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(status = %describe(status), restart = n, backoff_ms = backoff.as_millis() as u64,
                "dataplane died; restarting it (it recovers its state from the WAL; clients reconnect)");
            if self.pause(backoff) {
                break;
            }
        }
        if let Some(f) = self.on_end.lock().unwrap_or_else(|e| e.into_inner()).take() {
            f();
        }
    }

    fn spawn(&self) -> std::io::Result<(Child, UnixStream)> {
        // The previous dataplane's region is counted in `carried` already.
        let _ = std::fs::remove_file(&self.stats_path);
        let (ours, theirs) = UnixStream::pair()?;
        let fd = theirs.as_raw_fd();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { nix::libc::getpid() };
        let affinity = self.child_affinity;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("dataplane")
            .arg("--control-fd")
            .arg("3")
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl, getppid,
        // sched_setaffinity) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                if let Some(set) = &affinity {
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set)?;
                }
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The control plane died before prctl took effect: do not run orphaned.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        Ok((child, ours))
    }

    /// Runs one dataplane incarnation until it exits.
    fn run_once(self: &Arc<Supervisor>) -> Result<Option<ExitStatus>, String> {
        let (mut child, mut stream) = self
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.exe.display()))?;
        self.pid.store(child.id(), Ordering::Release);
        let handshake = (|| -> Result<(), ChannelError> {
            stream
                .set_read_timeout(Some(HELLO_TIMEOUT))
                .map_err(ChannelError::Io)?;
            let hello: FromDataplane = channel::recv(&mut stream)?;
            stream.set_read_timeout(None).map_err(ChannelError::Io)?;
            let FromDataplane::Hello { pid, build } = hello else {
                return Err(ChannelError::Malformed("expected hello".into()));
            };
            if build != self.build {
                return Err(ChannelError::Malformed(format!(
                    "the dataplane is build {build:?}, the control plane {:?} — restart `tachyon serve` after replacing the binary",
                    self.build
                )));
            }
            let r = self.running();
            tracing::info!(pid, "dataplane process started; sending its configuration");
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ ((pid as u64) << 32);
            channel::send(
                &mut stream,
                &ToDataplane::Start {
                    config: r.text,
                    origin: r.origin,
                    port: r.port,
                    data_dir: r.data_dir,
                    stats_path: self.stats_path.display().to_string(),
                    boot_nonce: nonce,
                },
            )
        })();
        if let Err(e) = handshake {
            tracing::error!(error = %e, "dataplane handshake failed; killing it");
            let _ = child.kill();
            return Ok(child.wait().ok());
        }
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        // A wedged dataplane must not wedge the control plane (its stop path included).
        writer
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let link = Arc::new(Link {
            writer: Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        if self.is_stopping() {
            self.send_stop();
        }
        let me = self.clone();
        let reader = std::thread::Builder::new()
            .name("tachyon-channel".into())
            .spawn(move || me.read_channel(stream, link))
            .map_err(|e| e.to_string())?;
        let status = child.wait().ok();
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = reader.join();
        self.notify();
        Ok(status)
    }

    fn read_channel(&self, mut stream: UnixStream, link: Arc<Link>) {
        loop {
            match channel::recv::<FromDataplane>(&mut stream) {
                Ok(FromDataplane::Ready { shards }) => {
                    match Region::open(&self.stats_path) {
                        Ok(r) => *self.region.lock().unwrap_or_else(|e| e.into_inner()) = Some(r),
                        Err(e) => tracing::warn!(error = %e, "statistics unavailable"),
                    }
                    self.shards.store(shards, Ordering::Release);
                    self.ready_mono_ms
                        .store(tachyon_stats::monotonic_ms(), Ordering::Release);
                    self.hang_killed.store(false, Ordering::Release);
                    self.stalled_any.store(false, Ordering::Release);
                    self.ready.store(true, Ordering::Release);
                    self.ever_ready.store(true, Ordering::Release);
                    self.readies.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(
                        shards,
                        pid = self.dataplane_pid(),
                        "dataplane ready: serving clients"
                    );
                }
                Ok(FromDataplane::Reply { id, ok, body }) => {
                    let waiter = link
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(w) = waiter {
                        let _ = w.send((ok, body));
                    }
                }
                Ok(FromDataplane::Hello { .. }) => {}
                Err(ChannelError::Closed) => break,
                Err(e) => {
                    // A dataplane that cannot be talked to cannot be supervised: kill it
                    // (it is restarted like after a crash) rather than leave it unobserved.
                    let pid = self.dataplane_pid();
                    tracing::error!(error = %e, pid, "control channel failed; killing the dataplane");
                    if pid != 0 {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    break;
                }
            }
        }
        self.ready.store(false, Ordering::Release);
        // Waiting requests fail now rather than at their timeout.
        link.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Asks the dataplane to perform `op`.
    ///
    /// # Errors
    /// [`RequestError::Unavailable`] when no dataplane is ready, [`RequestError::Failed`]
    /// with the dataplane's reason.
    pub fn request(&self, op: Op) -> Result<Value, RequestError> {
        if let Some(&(shard, h)) = self.stalled().first() {
            let what = match h {
                ShardHealth::Hung { silent_ms } => {
                    format!("shard {shard} has made no progress for {silent_ms} ms (hung)")
                }
                ShardHealth::Busy { what, for_ms } => {
                    format!(
                        "shard {shard} has been in a {} for {for_ms} ms",
                        what.name()
                    )
                }
                ShardHealth::Live => format!("shard {shard} is live"),
            };
            return Err(RequestError::Unavailable(format!(
                "the dataplane cannot answer: {what}; see /health and the log"
            )));
        }
        if !self.is_ready() {
            return Err(RequestError::Unavailable(
                "the dataplane is not ready (starting, recovering or restarting); try again shortly"
                    .into(),
            ));
        }
        let link = self
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| RequestError::Unavailable("no dataplane running".into()))?;
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        link.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        {
            let mut w = link.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = channel::send(&mut *w, &ToDataplane::Request { id, op }) {
                link.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return Err(RequestError::Unavailable(e.to_string()));
            }
        }
        match rx.recv_timeout(REPLY_TIMEOUT) {
            Ok((true, v)) => Ok(v),
            Ok((false, v)) => Err(RequestError::Failed(
                v["error"].as_str().unwrap_or("failed").to_owned(),
            )),
            Err(_) => {
                link.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(RequestError::Unavailable(
                    "the dataplane did not answer (it may have restarted)".into(),
                ))
            }
        }
    }

    fn send_stop(&self) {
        let link = self.link.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(link) = link {
            let mut w = link.writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = channel::send(&mut *w, &ToDataplane::Stop);
        }
    }

    /// Stops the dataplane cleanly; kills it (by its pid) if it has not exited after
    /// `grace`. Returns once it is gone.
    pub fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        self.notify();
        self.send_stop();
        let deadline = Instant::now() + grace;
        while self.dataplane_pid() != 0 {
            if Instant::now() >= deadline {
                let pid = self.dataplane_pid();
                if pid != 0 {
                    tracing::error!(
                        pid,
                        "dataplane did not stop within {} s; killing it",
                        grace.as_secs()
                    );
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                break;
            }
            // (`pause` returns at once while stopping.)
            std::thread::sleep(Duration::from_millis(20));
        }
        // The supervisor thread clears the pid once the child is reaped.
        let reaped_by = Instant::now() + Duration::from_secs(5);
        while self.dataplane_pid() != 0 && Instant::now() < reaped_by {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads the configuration file again; applies what can change live (through the
    /// dataplane for limits and log levels) and names what needs a restart.
    /// `prepare_local` checks the control plane's own live settings (admin token, log level)
    /// and returns what applies them; it runs first, so that a failure changes nothing.
    ///
    /// # Errors
    /// The configuration error (naming the key), a local setting that cannot be used, or a
    /// dataplane that could not apply it; the running configuration stays.
    pub fn reload(
        &self,
        prepare_local: &dyn Fn(&Config) -> Result<LocalChange, String>,
    ) -> Result<Changes, String> {
        let cur = self.running();
        let Some(path) = cur.path.clone() else {
            return Err("started without --config (embedded defaults): there is no file to reload; restart with --config FILE".into());
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("config {}: cannot read: {e}", path.display()))?;
        let next = Running::parse(
            text,
            path.display().to_string(),
            Some(path.clone()),
            cur.port,
            cur.data_dir.clone(),
        )
        .map_err(|e| e.to_string())?;
        let changes = cur.cfg.changes(&next.cfg);
        let apply_local = prepare_local(&next.cfg)?;
        let dataplane_part = ["limits", "sessions", "auth", "log.level"];
        if changes.live.iter().any(|k| dataplane_part.contains(k)) {
            self.request(Op::Reconfigure {
                config: next.text.clone(),
            })
            .map_err(|e| match e {
                RequestError::Unavailable(s) | RequestError::Failed(s) => {
                    format!("not applied: {s}")
                }
            })?;
        }
        apply_local();
        // The new file is what a restarted dataplane starts with; the parts that need a
        // restart take effect then.
        *self.running.write().unwrap_or_else(|e| e.into_inner()) = next;
        tracing::info!(applied = ?changes.live, restart_required = ?changes.restart, "configuration reloaded");
        Ok(changes)
    }

    /// Adds the final counters of the dataplane that just exited to the carried sums.
    fn carry_over(&self) {
        // Locks in the order `totals` takes them (region, then carried), both held: a reader
        // sees the old dataplane either in the region or in the carried sums, never in
        // neither (a counter that dipped would look like a reset to Prometheus).
        let mut slot = self.region.lock().unwrap_or_else(|e| e.into_inner());
        let Some(region) = slot.take() else {
            return;
        };
        let mut c = self.carried.lock().unwrap_or_else(|e| e.into_inner());
        c.counters.resize(COUNTERS.len(), 0);
        c.hists.resize(HISTOGRAMS.len(), Histogram::default());
        for s in 0..region.shard_count() {
            let snap = region.read(s);
            for (i, info) in COUNTERS.iter().enumerate() {
                if info.kind == Kind::Counter {
                    c.counters[i] += snap.counters[i];
                }
            }
            for (h, v) in c.hists.iter_mut().zip(&snap.hists) {
                h.merge(v);
            }
        }
    }

    /// Current totals: the running dataplane's shards plus what earlier ones counted.
    /// Gauges are the running dataplane's; retained messages are counted once (each shard
    /// holds a replica).
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            counters: vec![0; COUNTERS.len()],
            hists: vec![Histogram::default(); HISTOGRAMS.len()],
            shards: Vec::new(),
        };
        let slot = self.region.lock().unwrap_or_else(|e| e.into_inner());
        {
            let c = self.carried.lock().unwrap_or_else(|e| e.into_inner());
            for (a, b) in t.counters.iter_mut().zip(&c.counters) {
                *a += b;
            }
            for (a, b) in t.hists.iter_mut().zip(&c.hists) {
                a.merge(b);
            }
        }
        if let Some(region) = slot.as_ref() {
            for s in 0..region.shard_count() {
                let snap = region.read(s);
                for (i, v) in snap.counters.iter().enumerate() {
                    if i == Counter::Retained as usize {
                        t.counters[i] = t.counters[i].max(*v);
                    } else {
                        t.counters[i] += v;
                    }
                }
                for (a, b) in t.hists.iter_mut().zip(&snap.hists) {
                    a.merge(b);
                }
                t.shards.push(snap);
            }
        }
        t
    }
}

fn describe(s: Option<ExitStatus>) -> String {
    match s {
        None => "unknown".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown".into(),
        },
    }
}
