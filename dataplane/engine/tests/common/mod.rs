//! A deterministic harness: several shards, fake clients and a virtual clock on one thread.
//! Mail between shards is delivered in order, like the SPSC rings of the real shard loop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tachyon_codec::*;
use tachyon_engine::{ConnId, Engine, EngineConfig};

pub struct Client {
    pub shard: usize,
    pub version: ProtocolVersion,
    inbox: BytesMut,
    pub closed: bool,
    /// A client that does not read: its output stays in the engine (see `stall`).
    pub stalled: bool,
}

pub struct Cluster {
    pub engines: Vec<Engine>,
    pub now: u64,
    next_conn: u64,
    pub clients: HashMap<ConnId, Client>,
    cfg: Arc<EngineConfig>,
    /// Each shard's log as the driver would write it (with `durable`).
    pub disks: Vec<Disk>,
    /// Commit every shard's log whenever the cluster is pumped (a fast disk).
    pub auto_commit: bool,
}

/// A shard's WAL in memory: records in order, and how many are durable.
#[derive(Default, Clone)]
pub struct Disk {
    pub records: Vec<(u8, Vec<u8>)>,
    pub durable: usize,
}

pub fn s(x: &str) -> Utf8Str {
    Utf8Str::from_string(x.to_string()).unwrap()
}

pub fn pid(x: u16) -> PacketId {
    PacketId::new(x).unwrap()
}

impl Cluster {
    pub fn new(shards: usize) -> Cluster {
        Cluster::with_config(shards, EngineConfig::default())
    }

    pub fn with_config(shards: usize, cfg: EngineConfig) -> Cluster {
        let cfg = Arc::new(cfg);
        Cluster {
            engines: (0..shards)
                .map(|i| Engine::new(i, shards, cfg.clone()))
                .collect(),
            now: 1_000,
            next_conn: 1,
            clients: HashMap::new(),
            cfg,
            disks: vec![Disk::default(); shards],
            auto_commit: true,
        }
    }

    /// Shards that log their state, acknowledgements waiting for it (durability `sync`).
    pub fn durable(shards: usize) -> Cluster {
        Cluster::with_config(
            shards,
            EngineConfig {
                log_state: true,
                acks_wait_for_log: true,
                unix_epoch_ms: 1_700_000_000_000,
                ..EngineConfig::default()
            },
        )
    }

    /// Everything shard `shard` logged so far becomes durable.
    pub fn commit(&mut self, shard: usize) {
        self.take_log(shard);
        let d = &mut self.disks[shard];
        d.durable = d.records.len();
        let pos = d.durable as u64;
        self.engines[shard].handle_durable(self.now, pos);
        self.pump();
    }

    fn take_log(&mut self, shard: usize) -> bool {
        let disk = &mut self.disks[shard];
        let (n, _) = self.engines[shard].drain_log(|k, p| {
            disk.records.push((k, p.to_vec()));
            Ok::<(), ()>(())
        });
        n > 0
    }

    /// The broker dies: what is durable on each disk is all that is left. A new set of
    /// engines recovers it (as `tachyon_net::durable::prepare` does) and each writes its
    /// snapshot; every client is disconnected.
    pub fn crash_and_restart(&mut self) -> tachyon_engine::persist::restore::Restored {
        use tachyon_engine::persist::{merge, Record, Replay};
        let images = self
            .disks
            .iter()
            .map(|d| {
                let mut r = Replay::default();
                for (k, p) in &d.records[..d.durable] {
                    r.apply(&Record::decode(*k, p).expect("the engine writes valid records"));
                }
                r.finish()
            })
            .collect();
        let image = merge(images);
        let n = self.engines.len();
        self.engines = (0..n)
            .map(|i| Engine::new(i, n, self.cfg.clone()))
            .collect();
        self.now += 10_000;
        let restored =
            tachyon_engine::persist::restore::restore_all(&mut self.engines, &image, self.now);
        self.disks = vec![Disk::default(); n];
        for i in 0..n {
            self.engines[i].snapshot();
            self.commit(i);
        }
        for c in self.clients.values_mut() {
            c.closed = true;
        }
        restored
    }

    /// Opens a TCP connection on `shard` (no CONNECT yet).
    pub fn open(&mut self, shard: usize, version: ProtocolVersion) -> ConnId {
        self.open_holding(shard, version, usize::MAX)
    }

    /// Opens a connection of listener `listener` (see `EngineConfig::listeners`).
    pub fn open_on(&mut self, shard: usize, version: ProtocolVersion, listener: u16) -> ConnId {
        self.open_inner(shard, version, usize::MAX, listener)
    }

    pub fn open_holding(&mut self, shard: usize, version: ProtocolVersion, held: usize) -> ConnId {
        self.open_inner(shard, version, held, 0)
    }

    fn open_inner(
        &mut self,
        shard: usize,
        version: ProtocolVersion,
        held: usize,
        listener: u16,
    ) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.clients.insert(
            id,
            Client {
                shard,
                version,
                inbox: BytesMut::new(),
                closed: false,
                stalled: false,
            },
        );
        let peer = format!("127.0.0.1:{}", 40000 + id.0).parse().unwrap();
        self.engines[shard].handle_open(self.now, id, peer, listener);
        self.pump_except(held);
        id
    }

    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        self.send_bytes_holding(conn, bytes, usize::MAX);
    }

    /// Sends bytes, then pumps everything except mail from shard `held`.
    pub fn send_bytes_holding(&mut self, conn: ConnId, bytes: &[u8], held: usize) {
        let shard = self.clients[&conn].shard;
        let mut rx = BytesMut::from(bytes);
        self.engines[shard].handle_bytes(self.now, conn, &mut rx);
        self.pump_except(held);
    }

    pub fn send_holding(&mut self, conn: ConnId, p: &Packet, held: usize) {
        let version = self.clients[&conn].version;
        let mut b = BytesMut::new();
        encode(p, version, &mut b).unwrap();
        self.send_bytes_holding(conn, &b, held);
    }

    pub fn send(&mut self, conn: ConnId, p: &Packet) {
        let version = self.clients[&conn].version;
        let mut b = BytesMut::new();
        encode(p, version, &mut b).unwrap();
        self.send_bytes(conn, &b);
    }

    /// Moves mail, output and closes until nothing moves.
    pub fn pump(&mut self) {
        self.pump_except(usize::MAX);
    }

    /// Like `pump`, but mail *from* shard `held` stays in its outbox (its ring is slow).
    pub fn pump_except(&mut self, held: usize) {
        loop {
            let mut moved = false;
            for i in 0..self.engines.len() {
                if self.take_log(i) && self.auto_commit {
                    let d = &mut self.disks[i];
                    d.durable = d.records.len();
                    let pos = d.durable as u64;
                    self.engines[i].handle_durable(self.now, pos);
                    moved = true;
                }
                if i != held {
                    while let Some((to, m)) = self.engines[i].poll_mail() {
                        moved = true;
                        self.engines[to].handle_mail(self.now, m);
                    }
                }
                while let Some(c) = self.engines[i].poll_dirty() {
                    moved = true;
                    self.drain_out(i, c);
                }
                while let Some(c) = self.engines[i].poll_close() {
                    moved = true;
                    self.drain_out(i, c);
                    if let Some(cl) = self.clients.get_mut(&c) {
                        cl.closed = true;
                    }
                    self.engines[i].handle_closed(self.now, c);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn drain_out(&mut self, shard: usize, c: ConnId) {
        if self
            .clients
            .get(&c)
            .is_some_and(|cl| cl.stalled && !cl.closed)
        {
            return;
        }
        if let Some(q) = self.engines[shard].out_queue(c) {
            let mut all = Vec::new();
            for ch in q.chunks() {
                all.extend_from_slice(ch);
            }
            let n = q.len_bytes();
            q.consume(n);
            if let Some(cl) = self.clients.get_mut(&c) {
                if !cl.closed {
                    cl.inbox.extend_from_slice(&all);
                }
            }
        }
    }

    /// The client stops reading: output for it stays queued in the engine.
    pub fn stall(&mut self, conn: ConnId) {
        self.clients.get_mut(&conn).unwrap().stalled = true;
    }

    /// The client reads again: everything queued reaches it; the shards get a tick (the
    /// driver ticks the engine on every loop) and move what follows.
    pub fn unstall(&mut self, conn: ConnId) {
        let shard = self.clients[&conn].shard;
        self.clients.get_mut(&conn).unwrap().stalled = false;
        self.drain_out(shard, conn);
        for e in &mut self.engines {
            e.handle_tick(self.now);
        }
        self.pump();
    }

    /// Bytes of output queued in the engine for `conn`.
    pub fn queued_output(&mut self, conn: ConnId) -> usize {
        let shard = self.clients[&conn].shard;
        self.engines[shard]
            .out_queue(conn)
            .map_or(0, |q| q.len_bytes())
    }

    /// Everything the client received since the last call.
    pub fn recv(&mut self, conn: ConnId) -> Vec<Packet> {
        let cl = self.clients.get_mut(&conn).unwrap();
        let mut out = Vec::new();
        while let Some(p) = decode(&mut cl.inbox, Some(cl.version), usize::MAX >> 4)
            .expect("server sent a valid packet")
        {
            out.push(p);
        }
        out
    }

    /// The bytes the client received since the last call, undecoded.
    pub fn recv_raw(&mut self, conn: ConnId) -> Vec<u8> {
        let cl = self.clients.get_mut(&conn).unwrap();
        cl.inbox.split().to_vec()
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.clients[&conn].closed
    }

    /// The client's TCP connection drops (no DISCONNECT).
    pub fn drop_conn(&mut self, conn: ConnId) {
        self.drop_conn_holding(conn, usize::MAX);
    }

    pub fn drop_conn_holding(&mut self, conn: ConnId, held: usize) {
        let shard = self.clients[&conn].shard;
        self.clients.get_mut(&conn).unwrap().closed = true;
        self.engines[shard].handle_closed(self.now, conn);
        self.pump_except(held);
    }

    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        // Step through deadlines so timers fire at their time.
        loop {
            let next = self.engines.iter().filter_map(|e| e.poll_deadline()).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for e in &mut self.engines {
                        e.handle_tick(self.now);
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        for e in &mut self.engines {
            e.handle_tick(self.now);
        }
        self.pump();
    }

    /// CONNECT and return the CONNACK.
    pub fn connect_with(&mut self, shard: usize, c: Connect) -> (ConnId, ConnAck) {
        let conn = self.open(shard, c.version);
        self.send(conn, &Packet::Connect(Box::new(c)));
        let mut got = self.recv(conn);
        assert!(!got.is_empty(), "no CONNACK");
        match got.remove(0) {
            Packet::ConnAck(a) => {
                // Keep later packets (e.g. resent messages) for the test.
                self.unread(conn, got);
                (conn, a)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn connect(
        &mut self,
        shard: usize,
        version: ProtocolVersion,
        id: &str,
        clean: bool,
    ) -> ConnId {
        let (c, ack) = self.connect_with(shard, connect(version, id, clean));
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        c
    }

    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_opts(
            conn,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        )
    }

    pub fn subscribe_opts(
        &mut self,
        conn: ConnId,
        filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubAck {
        let mut properties = Properties::default();
        if let Some(id) = id {
            properties.subscription_identifiers.push(id);
        }
        self.send(
            conn,
            &Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties,
                filters: vec![(s(filter), opts)],
            }),
        );
        let got = self.recv(conn);
        let mut ack = None;
        let mut rest = Vec::new();
        for p in got {
            match p {
                Packet::SubAck(a) if ack.is_none() => ack = Some(a),
                p => rest.push(p),
            }
        }
        self.unread(conn, rest);
        ack.expect("SUBACK")
    }

    /// Puts packets back in front of the client's inbox.
    pub fn unread(&mut self, conn: ConnId, packets: Vec<Packet>) {
        let cl = self.clients.get_mut(&conn).unwrap();
        let mut rest = BytesMut::new();
        for p in packets {
            encode(&p, cl.version, &mut rest).unwrap();
        }
        rest.extend_from_slice(&cl.inbox);
        cl.inbox = rest;
    }

    pub fn publish(
        &mut self,
        conn: ConnId,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        id: u16,
    ) {
        self.send(
            conn,
            &Packet::Publish(publish(topic, payload, qos, retain, id)),
        );
    }

    /// Publishes received by `conn` (acks QoS 1/2 like a well-behaved client when `ack`).
    pub fn publishes(&mut self, conn: ConnId, ack: bool) -> Vec<Publish> {
        let mut out = Vec::new();
        for p in self.recv(conn) {
            if let Packet::Publish(p) = p {
                if ack {
                    match p.qos {
                        QoS::AtLeastOnce => self.send(
                            conn,
                            &Packet::PubAck(PubResp::new(
                                p.packet_id.unwrap(),
                                ReasonCode::SUCCESS,
                            )),
                        ),
                        QoS::ExactlyOnce => {
                            self.send(
                                conn,
                                &Packet::PubRec(PubResp::new(
                                    p.packet_id.unwrap(),
                                    ReasonCode::SUCCESS,
                                )),
                            );
                            let _ = self.recv(conn); // PUBREL
                            self.send(
                                conn,
                                &Packet::PubComp(PubResp::new(
                                    p.packet_id.unwrap(),
                                    ReasonCode::SUCCESS,
                                )),
                            );
                        }
                        QoS::AtMostOnce => {}
                    }
                }
                out.push(p);
            }
        }
        out
    }
}

pub fn connect(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
    Connect {
        version,
        clean_start: clean,
        keep_alive_secs: 60,
        client_id: s(id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: s(topic),
        packet_id: if qos == QoS::AtMostOnce {
            None
        } else {
            Some(pid(id))
        },
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

pub fn will(topic: &str, payload: &[u8], delay: Option<u32>) -> Will {
    let properties = Properties {
        will_delay_interval: delay,
        ..Properties::default()
    };
    Will {
        topic: s(topic),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    }
}

pub fn disconnect_reason(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| {
        if let Packet::Disconnect(d) = p {
            Some(d.reason)
        } else {
            None
        }
    })
}
