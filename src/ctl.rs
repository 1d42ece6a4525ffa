//! `tachyon ctl`: the admin API from the command line. It finds the API and its token in the
//! broker's configuration (`--config`, default: the embedded one), or takes `--url` and
//! `--token` (or `TACHYON_ADMIN_TOKEN`), and prints the JSON answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tachyon_controlplane::Config;

#[derive(Args)]
pub struct CtlArgs {
    /// The broker's configuration: where the admin API listens and where its token is.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The admin API's address (overrides the configuration), e.g. http://127.0.0.1:18083.
    #[arg(long)]
    url: Option<String>,
    /// The bearer token (default: $TACHYON_ADMIN_TOKEN, admin.token, or admin.token_file).
    #[arg(long, env = "TACHYON_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Is the control plane up (and the dataplane ready)?
    Health,
    /// Version, uptime, pids, restarts, driver, shards, listeners.
    Info,
    /// Counters and histogram summaries, total and per shard.
    Stats,
    /// The Prometheus exposition, as a scraper sees it.
    Metrics,
    /// Connected clients, or one.
    Clients { client_id: Option<String> },
    /// Disconnect a client (v5: DISCONNECT 0x98); its session stays.
    Kick { client_id: String },
    /// Sessions (connected and offline), or one.
    Sessions { client_id: Option<String> },
    /// Subscriptions, of every session or of one client.
    Subscriptions {
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Retained messages matching a filter (default `#`), or one topic with --topic.
    Retained {
        #[arg(long, default_value = "#")]
        filter: String,
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete the retained message of a topic.
    DeleteRetained { topic: String },
    /// Re-read the configuration file and apply what can change live.
    Reload,
}

/// Percent-encodes everything but unreserved characters (path segments and query values).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn run(a: CtlArgs) -> ExitCode {
    let cfg = match &a.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default_dev(),
    };
    let url = a
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.admin.bind));
    let Some(addr) = url.strip_prefix("http://").map(|s| s.trim_end_matches('/')) else {
        eprintln!("--url {url:?}: use http://host:port");
        return ExitCode::from(2);
    };
    let token = a.token.clone().or_else(|| {
        if !cfg.admin.token.is_empty() {
            return Some(cfg.admin.token.clone());
        }
        std::fs::read_to_string(cfg.admin_token_path())
            .ok()
            .map(|t| t.trim().to_owned())
    });
    let (method, path) = match &a.command {
        CtlCommand::Health => ("GET", "/health".to_owned()),
        CtlCommand::Info => ("GET", "/api/v1/info".into()),
        CtlCommand::Stats => ("GET", "/api/v1/stats".into()),
        CtlCommand::Metrics => ("GET", "/metrics".into()),
        CtlCommand::Clients { client_id: None } => ("GET", "/api/v1/clients".into()),
        CtlCommand::Clients {
            client_id: Some(id),
        } => ("GET", format!("/api/v1/clients/{}", enc(id))),
        CtlCommand::Kick { client_id } => ("DELETE", format!("/api/v1/clients/{}", enc(client_id))),
        CtlCommand::Sessions { client_id: None } => ("GET", "/api/v1/sessions".into()),
        CtlCommand::Sessions {
            client_id: Some(id),
        } => ("GET", format!("/api/v1/sessions/{}", enc(id))),
        CtlCommand::Subscriptions { client_id } => (
            "GET",
            match client_id {
                Some(id) => format!("/api/v1/subscriptions?client_id={}", enc(id)),
                None => "/api/v1/subscriptions".into(),
            },
        ),
        CtlCommand::Retained { topic: Some(t), .. } => {
            ("GET", format!("/api/v1/retained/{}", enc(t)))
        }
        CtlCommand::Retained { filter, limit, .. } => (
            "GET",
            format!(
                "/api/v1/retained?filter={}{}",
                enc(filter),
                limit.map(|n| format!("&limit={n}")).unwrap_or_default()
            ),
        ),
        CtlCommand::DeleteRetained { topic } => {
            ("DELETE", format!("/api/v1/retained/{}", enc(topic)))
        }
        CtlCommand::Reload => ("POST", "/api/v1/reload".into()),
    };
    match call(addr, method, &path, token.as_deref()) {
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body);
            if (200..300).contains(&status) {
                print!("{text}");
                ExitCode::SUCCESS
            } else {
                eprint!("HTTP {status}: {text}");
                if status == 401 && token.is_none() {
                    eprintln!("no token found: pass --token, set TACHYON_ADMIN_TOKEN, or --config the broker's file");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cannot reach the admin API at {url}: {e} — is `tachyon serve` running with [admin] enabled?");
            ExitCode::FAILURE
        }
    }
}

/// One HTTP/1.1 request; returns the status and body.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed status line"))?;
    Ok((status, raw[split + 4..].to_vec()))
}
