//! The `$SYS/broker/...` topics, under the names Mosquitto uses (so dashboards and scripts
//! written for Mosquitto read them unchanged), composed by the control plane from the
//! statistics and published by the dataplane as retained QoS 0 messages every
//! `sys.interval_secs`.

use std::time::{Duration, Instant};

use tachyon_stats::Counter as C;

use crate::supervisor::Totals;

/// Load averages as Mosquitto computes them: an exponentially damped per-minute rate over 1,
/// 5 and 15 minutes.
#[derive(Default)]
pub struct Sys {
    last: Option<(Instant, [u64; LOADS])>,
    loads: [[f64; 3]; LOADS],
    clients_max: u64,
}

const LOADS: usize = 8;
const LOAD_NAMES: [&str; LOADS] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

fn sum(t: &Totals, cs: &[C]) -> u64 {
    cs.iter().map(|&c| t.get(c)).sum()
}

impl Sys {
    /// The topics and payloads to publish now.
    pub fn compose(
        &mut self,
        t: &Totals,
        version: &str,
        uptime: Duration,
        now: Instant,
    ) -> Vec<(String, String)> {
        let received = sum(t, &[C::MsgsInQos0, C::MsgsInQos1, C::MsgsInQos2]);
        let sent = sum(t, &[C::MsgsOutQos0, C::MsgsOutQos1, C::MsgsOutQos2]);
        let pub_bytes_in = sum(t, &[C::PayloadInQos0, C::PayloadInQos1, C::PayloadInQos2]);
        let pub_bytes_out = sum(
            t,
            &[C::PayloadOutQos0, C::PayloadOutQos1, C::PayloadOutQos2],
        );
        let dropped = sum(
            t,
            &[
                C::DropQos0Slow,
                C::DropQueueFull,
                C::DropExpired,
                C::DropTooLarge,
                C::DropQos0Offline,
                C::DropSharedNoMember,
                C::DropForwardNoSession,
                C::RefusedLogFailed,
            ],
        );
        let connected = t.get(C::ClientsConnected);
        let sessions = t.get(C::Sessions);
        self.clients_max = self.clients_max.max(connected);
        let counts: [u64; LOADS] = [
            received,
            sent,
            received,
            sent,
            t.get(C::BytesIn),
            t.get(C::BytesOut),
            t.get(C::ConnectionsOpened)
                - t.get(C::ConnectsRefused).min(t.get(C::ConnectionsOpened)),
            t.get(C::ConnectionsOpened),
        ];
        if let Some((at, before)) = self.last {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            for (i, load) in self.loads.iter_mut().enumerate() {
                let per_min = counts[i].saturating_sub(before[i]) as f64 * 60.0 / secs;
                for (w, (_, window)) in load.iter_mut().zip(WINDOWS) {
                    let k = (-secs / window).exp();
                    *w = k * *w + (1.0 - k) * per_min;
                }
            }
        }
        self.last = Some((now, counts));

        let mut out: Vec<(String, String)> = vec![
            ("version".into(), format!("tachyon {version}")),
            ("uptime".into(), format!("{} seconds", uptime.as_secs())),
            ("clients/connected".into(), connected.to_string()),
            ("clients/active".into(), connected.to_string()),
            ("clients/total".into(), sessions.max(connected).to_string()),
            (
                "clients/disconnected".into(),
                sessions.saturating_sub(connected).to_string(),
            ),
            (
                "clients/inactive".into(),
                sessions.saturating_sub(connected).to_string(),
            ),
            ("clients/maximum".into(), self.clients_max.to_string()),
            (
                "clients/expired".into(),
                t.get(C::SessionsExpired).to_string(),
            ),
            ("messages/received".into(), received.to_string()),
            ("messages/sent".into(), sent.to_string()),
            (
                "messages/stored".into(),
                (t.get(C::QueuedMessages) + t.get(C::InflightMessages) + t.get(C::Retained))
                    .to_string(),
            ),
            (
                "store/messages/count".into(),
                (t.get(C::QueuedMessages) + t.get(C::InflightMessages) + t.get(C::Retained))
                    .to_string(),
            ),
            (
                "messages/inflight".into(),
                t.get(C::InflightMessages).to_string(),
            ),
            ("publish/messages/received".into(), received.to_string()),
            ("publish/messages/sent".into(), sent.to_string()),
            ("publish/messages/dropped".into(), dropped.to_string()),
            ("publish/bytes/received".into(), pub_bytes_in.to_string()),
            ("publish/bytes/sent".into(), pub_bytes_out.to_string()),
            ("bytes/received".into(), t.get(C::BytesIn).to_string()),
            ("bytes/sent".into(), t.get(C::BytesOut).to_string()),
            (
                "retained messages/count".into(),
                t.get(C::Retained).to_string(),
            ),
            (
                "subscriptions/count".into(),
                t.get(C::Subscriptions).to_string(),
            ),
        ];
        for (i, name) in LOAD_NAMES.iter().enumerate() {
            for (w, (label, _)) in WINDOWS.iter().enumerate() {
                out.push((
                    format!("load/{name}/{label}"),
                    format!("{:.2}", self.loads[i][w]),
                ));
            }
        }
        out.into_iter()
            .map(|(k, v)| (format!("$SYS/broker/{k}"), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tachyon_stats::COUNTERS;

    fn totals(received: u64, connected: u64, sessions: u64) -> Totals {
        let mut counters = vec![0; COUNTERS.len()];
        counters[C::MsgsInQos0 as usize] = received;
        counters[C::ClientsConnected as usize] = connected;
        counters[C::Sessions as usize] = sessions;
        Totals {
            counters,
            ..Totals::default()
        }
    }

    #[test]
    fn mosquitto_names_and_damped_loads() {
        let mut s = Sys::default();
        let t0 = Instant::now();
        let first = s.compose(&totals(0, 2, 3), "0.1.0", Duration::from_secs(7), t0);
        let get = |v: &[(String, String)], k: &str| {
            v.iter()
                .find(|(t, _)| t == &format!("$SYS/broker/{k}"))
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(get(&first, "uptime"), "7 seconds");
        assert_eq!(get(&first, "clients/connected"), "2");
        assert_eq!(get(&first, "clients/disconnected"), "1");
        assert_eq!(get(&first, "load/messages/received/1min"), "0.00");
        // 600 messages in 10 s is 3600 a minute; the 1-minute average moves 1 - e^(-1/6) of
        // the way there.
        let second = s.compose(
            &totals(600, 1, 3),
            "0.1.0",
            Duration::from_secs(17),
            t0 + Duration::from_secs(10),
        );
        let one: f64 = get(&second, "load/messages/received/1min").parse().unwrap();
        let expect = 3600.0 * (1.0 - (-10.0f64 / 60.0).exp());
        assert!((one - expect).abs() < 0.01, "{one} vs {expect}");
        let fifteen: f64 = get(&second, "load/messages/received/15min")
            .parse()
            .unwrap();
        assert!(fifteen < one);
        assert_eq!(get(&second, "clients/maximum"), "2");
        assert_eq!(get(&second, "messages/received"), "600");
    }
}
