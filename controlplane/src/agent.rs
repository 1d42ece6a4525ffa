//! The control plane's agent inside the dataplane process: it owns the dataplane's end of
//! the control channel, reports readiness, and answers requests by handing admin queries to
//! the shards (`Mesh::submit_admin`) and merging their answers into JSON. It runs on its own
//! thread; shards only see a query now and then in their admin inbox.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tachyon_engine::admin::{AdminAnswer, AdminQuery, ClientInfo, Page, SessionInfo};
use tachyon_net::Shutdown;
use tachyon_shard::{AdminJob, Mesh};

use crate::channel::{self, ChannelError, FromDataplane, Op, ToDataplane};
use crate::Config;

/// How long the agent waits for the shards' answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies a new log filter (the dataplane's `tracing` reload handle).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// The dataplane's end of the channel, shared by the reader thread and the ready callback.
pub struct Agent {
    writer: Mutex<UnixStream>,
    mesh: OnceLock<Arc<Mesh>>,
    boot_nonce: u64,
}

impl Agent {
    /// Sends `Hello` and reads the `Start` message.
    ///
    /// # Errors
    /// When the channel fails or the first message is not `Start`.
    pub fn connect(
        mut stream: UnixStream,
        build: &str,
    ) -> Result<(Arc<Agent>, UnixStream, ToDataplane), ChannelError> {
        channel::send(
            &mut stream,
            &FromDataplane::Hello {
                pid: std::process::id(),
                build: build.to_owned(),
            },
        )?;
        let start: ToDataplane = channel::recv(&mut stream)?;
        let ToDataplane::Start { boot_nonce, .. } = &start else {
            return Err(ChannelError::Malformed(
                "expected a start message first".into(),
            ));
        };
        let reader = stream.try_clone().map_err(ChannelError::Io)?;
        let agent = Arc::new(Agent {
            writer: Mutex::new(stream),
            mesh: OnceLock::new(),
            boot_nonce: *boot_nonce,
        });
        Ok((agent, reader, start))
    }

    fn send(&self, msg: &FromDataplane) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = channel::send(&mut *w, msg) {
            tracing::warn!(error = %e, "cannot write to the control plane");
        }
        let _ = w.flush();
    }

    /// The driver's ready callback: shards run, listeners are bound.
    pub fn ready(self: &Arc<Agent>, mesh: Arc<Mesh>) {
        let shards = mesh.shard_count();
        let _ = self.mesh.set(mesh);
        self.send(&FromDataplane::Ready { shards });
    }

    /// Reads requests until the channel closes or asks to stop; either way the dataplane
    /// stops (a dataplane without its control plane would run unobserved).
    pub fn serve(
        self: Arc<Agent>,
        mut reader: UnixStream,
        shutdown: Arc<Shutdown>,
        log_reload: LogReload,
    ) {
        loop {
            match channel::recv::<ToDataplane>(&mut reader) {
                Ok(ToDataplane::Request { id, op }) => {
                    let (ok, body) = match self.handle(op, &log_reload) {
                        Ok(v) => (true, v),
                        Err(e) => (false, json!({ "error": e })),
                    };
                    self.send(&FromDataplane::Reply { id, ok, body });
                }
                Ok(ToDataplane::Stop) => {
                    tracing::info!("stop requested by the control plane: no new connections, DISCONNECT 0x8B to v5 clients, flushing");
                    shutdown.trigger();
                }
                Ok(ToDataplane::Start { .. }) => {
                    tracing::warn!("control plane sent a second start message; ignored");
                }
                Err(ChannelError::Closed) => {
                    if !shutdown.is_triggered() {
                        tracing::warn!("control plane gone (channel closed); stopping");
                        shutdown.trigger();
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "control channel unusable; stopping");
                    shutdown.trigger();
                    return;
                }
            }
        }
    }

    fn handle(&self, op: Op, log_reload: &LogReload) -> Result<Value, String> {
        let mesh = self
            .mesh
            .get()
            .ok_or("the dataplane is starting (recovering its state); try again shortly")?;
        let all = || (0..mesh.shard_count()).collect::<Vec<_>>();
        match op {
            Op::Clients { client_id } => {
                let mut list = ask_pages(
                    mesh,
                    |from| AdminQuery::Clients {
                        client_id: client_id.clone(),
                        from,
                    },
                    |a| match a {
                        AdminAnswer::Clients(p) => Some(p),
                        _ => None,
                    },
                )?;
                list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
                Ok(Value::Array(list.iter().map(client_json).collect()))
            }
            Op::Sessions { client_id } => {
                let mut list = ask_pages(
                    mesh,
                    |from| AdminQuery::Sessions {
                        client_id: client_id.clone(),
                        from,
                    },
                    |a| match a {
                        AdminAnswer::Sessions(p) => Some(p),
                        _ => None,
                    },
                )?;
                list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
                Ok(Value::Array(list.iter().map(session_json).collect()))
            }
            Op::Subscriptions { client_id } => {
                let mut list = ask_pages(
                    mesh,
                    |from| AdminQuery::Subscriptions {
                        client_id: client_id.clone(),
                        from,
                    },
                    |a| match a {
                        AdminAnswer::Subscriptions(p) => Some(p),
                        _ => None,
                    },
                )?;
                list.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
                Ok(Value::Array(
                    list.iter()
                        .map(|s| {
                            json!({
                                "client_id": s.client_id, "filter": s.filter, "qos": s.qos,
                                "no_local": s.no_local, "retain_as_published": s.retain_as_published,
                                "retain_handling": s.retain_handling, "subscription_id": s.subscription_id,
                            })
                        })
                        .collect(),
                ))
            }
            // Every shard holds a replica of the retained store: shard 0 answers.
            Op::Retained { filter, limit } => {
                let mut list = Vec::new();
                for a in ask(mesh, &[0], AdminQuery::Retained { filter, limit })? {
                    if let AdminAnswer::Retained(r) = a {
                        list.extend(r);
                    }
                }
                list.sort_by(|a, b| a.topic.cmp(&b.topic));
                Ok(Value::Array(
                    list.iter()
                        .map(|r| {
                            json!({
                                "topic": r.topic,
                                "payload": std::str::from_utf8(&r.payload).ok(),
                                "payload_base64": base64(&r.payload),
                                "qos": r.qos,
                                "expires_in_secs": r.expires_in_secs,
                            })
                        })
                        .collect(),
                ))
            }
            Op::DeleteRetained { topic } => {
                let n = done(ask(mesh, &[0], AdminQuery::DeleteRetained { topic })?)?;
                Ok(json!({ "deleted": n }))
            }
            Op::Kick { client_id } => {
                let n = done(ask(mesh, &all(), AdminQuery::Kick { client_id })?)?;
                Ok(json!({ "disconnected": n }))
            }
            Op::PublishSys { messages } => {
                let messages = messages
                    .into_iter()
                    .map(|(t, p)| (t, Bytes::from(p)))
                    .collect();
                let n = done(ask(mesh, &[0], AdminQuery::PublishSys { messages })?)?;
                Ok(json!({ "published": n }))
            }
            Op::Reconfigure { config } => {
                let cfg = Config::parse(&config, "reload").map_err(|e| e.to_string())?;
                let mut engine_cfg = (*cfg.engine_config(self.boot_nonce)).clone();
                // Split over the shards that run (a new shard count waits for a restart).
                engine_cfg.sessions_max_per_shard =
                    cfg.limits.max_sessions.div_ceil(mesh.shard_count()).max(1);
                let q = AdminQuery::Reconfigure(Arc::new(engine_cfg));
                done(ask(mesh, &all(), q)?)?;
                log_reload(&cfg.log.level)?;
                tracing::info!(level = %cfg.log.level, "configuration applied: limits, sessions, auth, log level");
                Ok(json!({ "applied": true }))
            }
        }
    }
}

/// Sends `q` to `shards` and collects one answer from each.
fn ask(mesh: &Mesh, shards: &[usize], q: AdminQuery) -> Result<Vec<AdminAnswer>, String> {
    let q = Arc::new(q);
    let jobs = shards.iter().map(|&s| (s, q.clone())).collect();
    Ok(ask_each(mesh, jobs)?.into_iter().map(|(_, a)| a).collect())
}

/// Sends each shard its query and collects the answers, by shard.
fn ask_each(
    mesh: &Mesh,
    jobs: Vec<(usize, Arc<AdminQuery>)>,
) -> Result<Vec<(usize, AdminAnswer)>, String> {
    let (tx, rx) = mpsc::channel();
    let n = jobs.len();
    for (s, query) in jobs {
        let job = AdminJob {
            query,
            reply: tx.clone(),
        };
        if mesh.submit_admin(s, job).is_err() {
            return Err(format!(
                "shard {s} has too many admin requests waiting; try again"
            ));
        }
    }
    drop(tx);
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(a) => out.push(a),
            Err(_) => {
                return Err(format!(
                    "{} of {} shards did not answer within {} s (a shard stuck or stopping)",
                    n - out.len(),
                    n,
                    ANSWER_TIMEOUT.as_secs()
                ))
            }
        }
    }
    Ok(out)
}

/// A listing from every shard, a page at a time (each shard walks at most `PAGE_SLOTS`
/// sessions per request, so no shard pauses long for it); shards are asked in parallel.
fn ask_pages<T>(
    mesh: &Mesh,
    query: impl Fn(usize) -> AdminQuery,
    page: impl Fn(AdminAnswer) -> Option<Page<T>>,
) -> Result<Vec<T>, String> {
    let mut items = Vec::new();
    let mut cursors: Vec<(usize, usize)> = (0..mesh.shard_count()).map(|s| (s, 0)).collect();
    while !cursors.is_empty() {
        let jobs = cursors
            .iter()
            .map(|&(s, from)| (s, Arc::new(query(from))))
            .collect();
        cursors.clear();
        for (s, a) in ask_each(mesh, jobs)? {
            if let Some(p) = page(a) {
                items.extend(p.items);
                if let Some(next) = p.next {
                    cursors.push((s, next));
                }
            }
        }
    }
    Ok(items)
}

/// Sums `Done` answers; a refusal is the error.
fn done(answers: Vec<AdminAnswer>) -> Result<usize, String> {
    let mut n = 0;
    for a in answers {
        match a {
            AdminAnswer::Done(k) => n += k,
            AdminAnswer::Refused(e) => return Err(e),
            _ => {}
        }
    }
    Ok(n)
}

fn session_json(s: &SessionInfo) -> Value {
    json!({
        "client_id": s.client_id, "shard": s.shard, "connected": s.connected,
        "protocol": s.protocol,
        "expiry_secs": (s.expiry_secs != u32::MAX).then_some(s.expiry_secs),
        "durable": s.durable, "subscriptions": s.subscriptions, "inflight": s.inflight,
        "queued": s.queued, "queued_bytes": s.queued_bytes,
    })
}

fn client_json(c: &ClientInfo) -> Value {
    let mut v = session_json(&c.session);
    v["peer"] = json!(c.peer.to_string());
    v["keep_alive_secs"] = json!(c.keep_alive_secs);
    v
}

/// Standard base64 with padding (RFC 4648), for payloads in JSON.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
