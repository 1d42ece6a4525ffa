//! What a shard shows the control plane: its counters, gauges and histograms, copied into its
//! block of the shared stats region (`tachyon_stats`) a few times a second, off the fast
//! path; and the hooks by which the dataplane process attaches its control thread.

use std::sync::Arc;
use std::time::Instant;

use tachyon_engine::admin::Gauges;
use tachyon_engine::Engine;
use tachyon_shard::Mesh;
use tachyon_stats::{Counter as C, Hist, Region, ShardSlot};

use crate::durable::ShardLog;

/// How often a shard publishes its block.
const PUBLISH_EVERY_MS: u64 = 250;
/// Session slots the gauge scan visits per publication (see `Engine::scan_gauges`): a
/// million sessions are summed every 4 s, at well under a millisecond per step.
const GAUGE_SCAN_BUDGET: usize = 65_536;

/// What the dataplane process attaches to a driver: where shards publish their statistics,
/// and a callback that receives the mesh once recovery is done and every listener is bound
/// (the control thread then answers admin requests through it and reports readiness).
#[derive(Default)]
pub struct ControlHooks {
    pub stats: Option<Arc<Region>>,
    pub on_ready: Option<Box<dyn FnOnce(Arc<Mesh>) + Send>>,
}

impl ControlHooks {
    /// Calls `on_ready` (once).
    pub(crate) fn ready(&mut self, mesh: &Arc<Mesh>) {
        if let Some(f) = self.on_ready.take() {
            f(mesh.clone());
        }
    }

    /// The marker with which shard `shard`'s long operations (WAL steps, snapshots) tell
    /// the control plane's hang check that the shard is slow, not hung.
    pub(crate) fn busy_marker(&self, shard: usize) -> Option<tachyon_stats::BusyMarker> {
        self.stats
            .as_ref()
            .filter(|r| shard < r.shard_count())
            .map(|r| r.slot(shard).busy_marker())
    }

    /// The observer of shard `shard`.
    pub(crate) fn observer(&self, shard: usize) -> Observer {
        let slot = self
            .stats
            .as_ref()
            .filter(|r| shard < r.shard_count())
            .map(|r| r.slot(shard));
        Observer {
            slot,
            next_ms: 0,
            gauges: Gauges::default(),
        }
    }
}

/// One shard's publisher into the stats region.
pub(crate) struct Observer {
    slot: Option<ShardSlot>,
    next_ms: u64,
    gauges: Gauges,
}

/// Microseconds since `epoch`, for [`Engine::set_clock_us`].
pub(crate) fn clock_us(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

impl Observer {
    /// The shard stops (draining output, closing its log): the hang check leaves it alone.
    pub(crate) fn shutting_down(&self) {
        if let Some(slot) = &self.slot {
            slot.busy_marker().begin(tachyon_stats::Busy::Shutdown);
        }
    }

    /// Publishes the shard's block when it is due (`now` in engine milliseconds).
    pub(crate) fn step(&mut self, now: u64, engine: &mut Engine, log: Option<&ShardLog>) {
        let Some(slot) = &self.slot else { return };
        if now < self.next_ms {
            return;
        }
        self.next_ms = now + PUBLISH_EVERY_MS;
        if let Some(g) = engine.scan_gauges(GAUGE_SCAN_BUDGET) {
            self.gauges = g;
        }
        let s = engine.stats();
        let g = self.gauges;
        for (c, v) in [
            (C::Connections, engine.connection_count() as u64),
            (C::ClientsConnected, s.clients_connected),
            (C::Sessions, g.sessions),
            (C::Subscriptions, g.subscriptions),
            (C::Retained, engine.retained_count() as u64),
            (C::QueuedMessages, g.queued),
            (C::InflightMessages, g.inflight),
            (C::ConnectionsOpened, s.connections_opened),
            (C::ConnectionsClosed, s.connections_closed),
            (C::ConnectsRefused, s.connects_refused),
            (C::MsgsInQos0, s.messages_received[0]),
            (C::MsgsInQos1, s.messages_received[1]),
            (C::MsgsInQos2, s.messages_received[2]),
            (C::MsgsOutQos0, s.messages_sent[0]),
            (C::MsgsOutQos1, s.messages_sent[1]),
            (C::MsgsOutQos2, s.messages_sent[2]),
            (C::PayloadInQos0, s.payload_bytes_received[0]),
            (C::PayloadInQos1, s.payload_bytes_received[1]),
            (C::PayloadInQos2, s.payload_bytes_received[2]),
            (C::PayloadOutQos0, s.payload_bytes_sent[0]),
            (C::PayloadOutQos1, s.payload_bytes_sent[1]),
            (C::PayloadOutQos2, s.payload_bytes_sent[2]),
            (C::BytesIn, s.bytes_received),
            (C::BytesOut, s.bytes_sent_queued),
            (C::DropQos0Slow, s.dropped_qos0_slow_consumer),
            (C::DropQueueFull, s.dropped_queue_full),
            (C::DropExpired, s.dropped_expired),
            (C::DropTooLarge, s.dropped_too_large_for_client),
            (C::DropQos0Offline, s.dropped_qos0_offline),
            (C::DropSharedNoMember, s.dropped_shared_no_member),
            (C::DropForwardNoSession, s.dropped_forward_no_session),
            (C::RefusedLogFailed, s.publishes_refused_log_failed),
            (C::ClosedSlowConsumer, s.closed_slow_consumer),
            (C::RetainedRefused, s.retained_refused),
            (C::WillsPublished, s.wills_published),
            (C::SessionsExpired, s.sessions_expired),
            (C::Takeovers, s.takeovers),
            (C::Violations, s.violations_total()),
            (C::UnknownIdPubAck, s.unknown_packet_ids[0]),
            (C::UnknownIdPubRec, s.unknown_packet_ids[1]),
            (C::UnknownIdPubRel, s.unknown_packet_ids[2]),
            (C::UnknownIdPubComp, s.unknown_packet_ids[3]),
            (C::LogFailures, s.log_failures),
            (C::WalCommits, log.map_or(0, |l| l.commits)),
            (C::WalBytes, log.map_or(0, |l| l.bytes_appended)),
        ] {
            slot.set(c, v);
        }
        slot.set_histogram(Hist::BrokerHop, &s.hop_latency);
        if let Some(l) = log {
            slot.set_histogram(Hist::WalCommit, &l.commit_latency);
        }
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        slot.heartbeat(unix_ms, tachyon_stats::monotonic_ms());
    }
}
