//! The admin API's routes (docs/admin-api.yaml is their OpenAPI description). Everything
//! under `/api/v1/` needs `Authorization: Bearer <admin token>`; `/health` and `/ready` never
//! do (probes), `/metrics` only with `admin.metrics_require_token`.

use std::sync::{Arc, RwLock};

use serde_json::{json, Map, Value};
use tachyon_stats::{Histogram, COUNTERS, HISTOGRAMS};

use crate::channel::Op;
use crate::config::Changes;
use crate::http::{Request, Response};
use crate::metrics;
use crate::supervisor::{RequestError, Supervisor};

/// Most retained messages one listing returns unless `limit` says otherwise.
const RETAINED_LIMIT: usize = 1000;

pub type Reload = Box<dyn Fn() -> Result<Changes, String> + Send + Sync>;

pub struct Api {
    pub sup: Arc<Supervisor>,
    pub token: Arc<RwLock<String>>,
    pub reload: Reload,
    pub version: &'static str,
    pub rev: &'static str,
    pub drivers: &'static str,
}

/// Compares without an early exit, so the time taken does not tell how much of a guess
/// was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unavailable(e: RequestError) -> Response {
    match e {
        RequestError::Unavailable(s) => Response::error(503, &s),
        RequestError::Failed(s) => Response::error(422, &s),
    }
}

impl Api {
    fn authorized(&self, req: &Request) -> Result<(), Response> {
        let Some(h) = req.header("authorization") else {
            let mut r = Response::error(
                401,
                "missing token: send `Authorization: Bearer <token>` (admin.token, or the file admin.token_file)",
            );
            r.extra_headers.push(("WWW-Authenticate", "Bearer".into()));
            return Err(r);
        };
        // The scheme is case-insensitive (RFC 9110 11.1).
        let given = match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => "",
        };
        let token = self.token.read().unwrap_or_else(|e| e.into_inner());
        if given.is_empty() || !same(given.as_bytes(), token.as_bytes()) {
            let mut r = Response::error(401, "wrong token");
            r.extra_headers
                .push(("WWW-Authenticate", "Bearer error=\"invalid_token\"".into()));
            return Err(r);
        }
        Ok(())
    }

    pub fn handle(&self, req: &Request) -> Response {
        let path = req.path.as_str();
        let m = req.method.as_str();
        match (m, path) {
            ("GET", "/health") => {
                // The control plane answers; `status` says whether every shard of the
                // dataplane makes progress, and `stalled` names those that do not.
                let stalled = self.sup.stalled();
                let shards: Vec<Value> = stalled.iter().map(|(s, h)| h.json(*s)).collect();
                return Response::json(
                    200,
                    &json!({
                        "status": if stalled.is_empty() { "ok" } else { "degraded" },
                        "dataplane_ready": self.sup.is_ready(),
                        "stalled": shards,
                        "dataplane_hangs": self.sup.hangs(),
                    }),
                );
            }
            ("GET", "/ready") => {
                return if self.sup.is_ready() {
                    Response::json(200, &json!({ "ready": true }))
                } else {
                    let stalled: Vec<Value> =
                        self.sup.stalled().iter().map(|(s, h)| h.json(*s)).collect();
                    Response::json(503, &json!({ "ready": false, "stalled": stalled }))
                }
            }
            ("GET", "/metrics") => {
                if self.sup.with_config(|c| c.admin.metrics_require_token) {
                    if let Err(r) = self.authorized(req) {
                        return r;
                    }
                }
                let text = metrics::render(
                    &self.sup.totals(),
                    &metrics::Process {
                        version: self.version,
                        rev: self.rev,
                        uptime_secs: self.sup.started.elapsed().as_secs(),
                        dataplane_ready: self.sup.is_ready(),
                        restarts: self.sup.restarts(),
                        hangs: self.sup.hangs(),
                    },
                );
                return Response::text(200, "text/plain; version=0.0.4; charset=utf-8", text);
            }
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Response::error(
                404,
                &format!("no such resource {path:?}; see docs/admin-api.yaml"),
            );
        };
        if let Err(r) = self.authorized(req) {
            return r;
        }
        let (res, arg) = match rest.split_once('/') {
            Some((r, a)) => (r, Some(a).filter(|a| !a.is_empty())),
            None => (rest, None),
        };
        let client_filter = req.query("client_id").map(str::to_owned);
        match (m, res, arg) {
            ("GET", "info", None) => self.info(),
            ("GET", "stats", None) => self.stats(),
            ("POST", "reload", None) => match (self.reload)() {
                Ok(c) => Response::json(
                    200,
                    &json!({ "applied": c.live, "restart_required": c.restart }),
                ),
                Err(e) => Response::error(422, &e),
            },
            ("GET", "clients", id) => self.listing(
                Op::Clients {
                    client_id: id.map(str::to_owned).or(client_filter),
                },
                id,
                "client",
            ),
            ("DELETE", "clients", Some(id)) => match self.sup.request(Op::Kick {
                client_id: id.to_owned(),
            }) {
                Ok(v) if v["disconnected"].as_u64().unwrap_or(0) > 0 => {
                    Response::json(200, &json!({ "client_id": id, "disconnected": true }))
                }
                Ok(_) => Response::error(404, &format!("client {id:?} is not connected")),
                Err(e) => unavailable(e),
            },
            ("GET", "sessions", id) => self.listing(
                Op::Sessions {
                    client_id: id.map(str::to_owned).or(client_filter),
                },
                id,
                "session",
            ),
            ("GET", "subscriptions", None) => match self.sup.request(Op::Subscriptions {
                client_id: client_filter,
            }) {
                Ok(v) => Response::json(200, &v),
                Err(e) => unavailable(e),
            },
            ("GET", "retained", None) => {
                let filter = req.query("filter").unwrap_or("#").to_owned();
                let limit = match req.query("limit").map(str::parse::<usize>) {
                    None => RETAINED_LIMIT,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Response::error(400, "limit must be a number"),
                };
                match self.sup.request(Op::Retained { filter, limit }) {
                    Ok(v) => Response::json(200, &v),
                    Err(e) => unavailable(e),
                }
            }
            ("GET", "retained", Some(topic)) => {
                if topic.contains(['+', '#']) {
                    return Response::error(
                        400,
                        "a topic name, not a filter: list by filter with GET /api/v1/retained?filter=...",
                    );
                }
                match self.sup.request(Op::Retained {
                    filter: topic.to_owned(),
                    limit: 1,
                }) {
                    Ok(Value::Array(mut a)) if !a.is_empty() => Response::json(200, &a.remove(0)),
                    Ok(_) => Response::error(404, &format!("no retained message on {topic:?}")),
                    Err(e) => unavailable(e),
                }
            }
            ("DELETE", "retained", Some(topic)) => {
                if topic.contains(['+', '#']) {
                    return Response::error(400, "delete takes a topic name, not a filter");
                }
                match self.sup.request(Op::DeleteRetained {
                    topic: topic.to_owned(),
                }) {
                    Ok(v) if v["deleted"].as_u64().unwrap_or(0) > 0 => {
                        Response::json(200, &json!({ "topic": topic, "deleted": true }))
                    }
                    Ok(_) => Response::error(404, &format!("no retained message on {topic:?}")),
                    Err(e) => unavailable(e),
                }
            }
            (
                _,
                "info" | "stats" | "reload" | "clients" | "sessions" | "subscriptions" | "retained",
                _,
            ) => Response::error(405, &format!("{m} is not supported on {path}")),
            _ => Response::error(
                404,
                &format!("no such resource {path:?}; see docs/admin-api.yaml"),
            ),
        }
    }

    /// A list, or with `id` the one entry for it (404 when absent).
    fn listing(&self, op: Op, id: Option<&str>, what: &str) -> Response {
        match self.sup.request(op) {
            Ok(Value::Array(mut a)) => match id {
                None => Response::json(200, &Value::Array(a)),
                Some(_) if !a.is_empty() => Response::json(200, &a.remove(0)),
                Some(id) => Response::error(404, &format!("no {what} {id:?}")),
            },
            Ok(v) => Response::json(200, &v),
            Err(e) => unavailable(e),
        }
    }

    fn info(&self) -> Response {
        let r = self.sup.running();
        Response::json(
            200,
            &json!({
                "version": self.version,
                "rev": self.rev,
                "drivers": self.drivers,
                "uptime_secs": self.sup.started.elapsed().as_secs(),
                "control_plane_pid": std::process::id(),
                "dataplane_pid": Some(self.sup.dataplane_pid()).filter(|&p| p != 0),
                "dataplane_ready": self.sup.is_ready(),
                "dataplane_restarts": self.sup.restarts(),
                "config": r.origin,
                "driver": format!("{:?}", r.cfg.driver()).to_lowercase(),
                "shards": Some(self.sup.shards()).filter(|&n| n > 0),
                "listeners": r.cfg.listeners.iter().map(|l| l.bind.clone()).collect::<Vec<_>>(),
                "durability": r.cfg.durability.enabled.then(|| json!({
                    "data_dir": r.cfg.durability.data_dir, "sync": r.cfg.durability.sync,
                })),
            }),
        )
    }

    fn stats(&self) -> Response {
        let t = self.sup.totals();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let shards: Vec<Value> = t
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = block_json(&s.counters, &s.hists);
                v["shard"] = json!(i);
                v["published_ms_ago"] = json!(now_ms.saturating_sub(s.heartbeat_unix_ms));
                v
            })
            .collect();
        Response::json(
            200,
            &json!({
                "totals": block_json(&t.counters, &t.hists),
                "shards": shards,
            }),
        )
    }
}

/// Counters by metric name (with their label, e.g. `messages_received_total{qos="1"}`) and
/// histogram summaries.
fn block_json(counters: &[u64], hists: &[Histogram]) -> Value {
    let mut c = Map::new();
    for (i, info) in COUNTERS.iter().enumerate() {
        let key = match info.label {
            Some((k, v)) => format!("{}{{{k}=\"{v}\"}}", info.name),
            None => info.name.to_owned(),
        };
        c.insert(key, json!(counters.get(i).copied().unwrap_or(0)));
    }
    let mut h = Map::new();
    for (i, (name, _)) in HISTOGRAMS.iter().enumerate() {
        let Some(x) = hists.get(i) else { continue };
        let bound = |q| x.quantile_bound_us(q).filter(|&b| b != u64::MAX);
        h.insert(
            (*name).to_owned(),
            json!({
                "count": x.count,
                "mean_us": if x.count > 0 { Some(x.sum_us as f64 / x.count as f64) } else { None },
                "p50_at_most_us": bound(0.5),
                "p99_at_most_us": bound(0.99),
            }),
        );
    }
    json!({ "counters": c, "histograms": h })
}
