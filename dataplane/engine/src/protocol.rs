//! The protocol state table: the one reaction to every packet a client can send, in every
//! stage of its connection and every state of the Packet Identifier the packet names.
//!
//! ```text
//!   (version, stage, packet, packet-id state) ──lookup──▶ Row { reaction, statements, choice }
//!        Connected, PUBCOMP, awaiting PUBACK   ──────────▶ Protocol Error (DISCONNECT 0x82)
//! ```
//!
//! The rows are data: `ROWS` below, in the order docs/conformance.md shows them. A dense
//! index over every (version, stage, packet, id state) is built from them at compile time,
//! and the build fails if a combination has no row or two rows (`TABLE_IS_COMPLETE`), so a
//! packet cannot be left to whatever a `match` arm happens to do. The engine consults the
//! table for every packet but the hot PUBLISH path, whose rows are asserted at compile time
//! to be the ones that path implements (`HOT_PATH_ROWS`). tests/protocol_table.rs drives the
//! engine through every combination and checks the wire bytes and the session afterwards.
//!
//! Packet Identifiers live in two namespaces: the broker's (its PUBLISHes; the client's
//! PUBACK, PUBREC and PUBCOMP name them) and the client's (its QoS > 0 PUBLISHes,
//! SUBSCRIBEs and UNSUBSCRIBEs; its PUBREL names them). The broker tracks the client's ids
//! only while a QoS 2 PUBLISH awaits PUBREL.

use tachyon_codec::{Packet, ProtocolVersion, QoS};

/// Where a connection is, as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP is up, no CONNECT yet.
    BeforeConnect,
    /// CONNECT accepted; its session is being claimed; no CONNACK yet.
    Connecting,
    /// CONNACK (success) sent.
    Connected,
    /// After the client's DISCONNECT, or after the broker closed the connection: what
    /// follows is discarded. (The enhanced-authentication stage comes with AUTH support.)
    Closed,
}

/// A packet as a client sends it; PUBLISH by QoS, since each QoS is its own flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    Connect,
    ConnAck,
    Publish0,
    Publish1,
    Publish2,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

/// What the session knows of the Packet Identifier a packet names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdState {
    /// The packet names no identifier, or the stage has no flows to look it up in.
    None,
    /// No flow uses it.
    Free,
    /// The broker's QoS 1 PUBLISH awaits PUBACK.
    AwaitPubAck,
    /// The broker's QoS 2 PUBLISH awaits PUBREC.
    AwaitPubRec,
    /// The broker's PUBREL awaits PUBCOMP.
    AwaitPubComp,
    /// The client's QoS 2 PUBLISH was answered with PUBREC on this connection; PUBREL has
    /// not come.
    AwaitPubRel,
    /// The same, from an earlier connection of the session (resumed since).
    AwaitPubRelEarlier,
}

/// What the broker does with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Handled by its packet's rules: CONNECT starts the session, PUBLISH is routed and
    /// acknowledged by QoS, SUBSCRIBE/UNSUBSCRIBE are answered, PINGREQ gets PINGRESP,
    /// DISCONNECT closes.
    Accept,
    /// Kept, and handled as in `Connected` once CONNACK is sent (clients need not wait for
    /// CONNACK).
    Defer,
    /// A QoS 2 PUBLISH again before PUBREL: PUBREC again, not routed again.
    PubRecAgain,
    /// PUBACK or PUBCOMP ends the broker's flow: the message is delivered, its place in the
    /// window is free.
    EndFlow,
    /// PUBREC: PUBREL, the flow awaits PUBCOMP (a Reason Code of 0x80 or more ends it).
    Release,
    /// PUBREC again after PUBREL: PUBREL again.
    ReleaseAgain,
    /// PUBREL: PUBCOMP, the client's QoS 2 flow ends.
    Complete,
    /// A new packet with the identifier of a QoS 2 flow of an earlier connection: the client
    /// no longer has that flow (it lost its state), so the broker ends it (its message was
    /// routed when it came) and handles the packet as with a free identifier; counted.
    ReleaseHeldAccept,
    /// An acknowledgement of an identifier nothing uses: ignored, counted.
    IgnoreUnknownId,
    /// PUBREC of an identifier nothing uses: PUBREL (v5 0x92 Packet Identifier not found),
    /// counted.
    PubRelUnknownId,
    /// PUBREL of an identifier nothing uses: PUBCOMP (v5 0x92), counted.
    PubCompUnknownId,
    /// The packet breaks the protocol in this state: the connection is closed (v5 with the
    /// Reason Code in CONNACK before CONNACK was sent, else in DISCONNECT).
    Violation(Rule),
    /// Refused by the decoder before the table is consulted (a Malformed Packet).
    Malformed,
    /// Discarded: the connection is closing.
    Ignore,
}

/// The rule a packet breaks (`Reaction::Violation`); the engine's `Violation` carries the
/// details and the Reason Code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    FirstPacketNotConnect,
    SecondConnect,
    ServerOnlyPacket,
    /// An acknowledgement of an identifier that is in flight in another kind or stage.
    AckOfOtherFlow,
    /// A new packet with an identifier the client's own QoS 2 flow still holds.
    PacketIdInUse,
    AuthNotSupported,
}

/// Versions a row applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    All,
    /// MQTT 3.1 and 3.1.1.
    V3,
    V5,
}

/// One row of the table.
#[derive(Debug)]
pub struct Row {
    pub versions: Versions,
    pub stages: &'static [Stage],
    pub packets: &'static [Inbound],
    pub ids: &'static [IdState],
    pub reaction: Reaction,
    /// The statements that decide the reaction.
    pub spec: &'static str,
    /// Where the specification leaves a choice: Tachyon's, and what Mosquitto and EMQX do.
    pub choice: Option<&'static str>,
}

/// The versions, in table order.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];
pub const STAGES: [Stage; 4] = [
    Stage::BeforeConnect,
    Stage::Connecting,
    Stage::Connected,
    Stage::Closed,
];
pub const PACKETS: [Inbound; 17] = [
    Inbound::Connect,
    Inbound::ConnAck,
    Inbound::Publish0,
    Inbound::Publish1,
    Inbound::Publish2,
    Inbound::PubAck,
    Inbound::PubRec,
    Inbound::PubRel,
    Inbound::PubComp,
    Inbound::Subscribe,
    Inbound::SubAck,
    Inbound::Unsubscribe,
    Inbound::UnsubAck,
    Inbound::PingReq,
    Inbound::PingResp,
    Inbound::Disconnect,
    Inbound::Auth,
];
const ID_COUNT: usize = 7;

/// Identifiers of the broker's flows (named by PUBACK, PUBREC, PUBCOMP).
const OUTBOUND: &[IdState] = &[
    IdState::Free,
    IdState::AwaitPubAck,
    IdState::AwaitPubRec,
    IdState::AwaitPubComp,
];
/// Identifiers of the client's packets (PUBLISH QoS > 0, SUBSCRIBE, UNSUBSCRIBE, PUBREL).
const INBOUND: &[IdState] = &[
    IdState::Free,
    IdState::AwaitPubRel,
    IdState::AwaitPubRelEarlier,
];
const NO_ID: &[IdState] = &[IdState::None];

/// The identifier states a packet can meet in a stage (the table's keys).
pub const fn id_states(stage: Stage, packet: Inbound) -> &'static [IdState] {
    match (stage, packet) {
        (Stage::Connected, Inbound::PubAck | Inbound::PubRec | Inbound::PubComp) => OUTBOUND,
        (
            Stage::Connected,
            Inbound::Publish1
            | Inbound::Publish2
            | Inbound::PubRel
            | Inbound::Subscribe
            | Inbound::Unsubscribe,
        ) => INBOUND,
        _ => NO_ID,
    }
}

impl Inbound {
    /// The kind of a decoded packet.
    pub fn of(packet: &Packet) -> Inbound {
        match packet {
            Packet::Connect(_) => Inbound::Connect,
            Packet::ConnAck(_) => Inbound::ConnAck,
            Packet::Publish(p) => Inbound::publish(p.qos),
            Packet::PubAck(_) => Inbound::PubAck,
            Packet::PubRec(_) => Inbound::PubRec,
            Packet::PubRel(_) => Inbound::PubRel,
            Packet::PubComp(_) => Inbound::PubComp,
            Packet::Subscribe(_) => Inbound::Subscribe,
            Packet::SubAck(_) => Inbound::SubAck,
            Packet::Unsubscribe(_) => Inbound::Unsubscribe,
            Packet::UnsubAck(_) => Inbound::UnsubAck,
            Packet::PingReq => Inbound::PingReq,
            Packet::PingResp => Inbound::PingResp,
            Packet::Disconnect(_) => Inbound::Disconnect,
            Packet::Auth(_) => Inbound::Auth,
        }
    }

    pub const fn publish(qos: QoS) -> Inbound {
        match qos {
            QoS::AtMostOnce => Inbound::Publish0,
            QoS::AtLeastOnce => Inbound::Publish1,
            QoS::ExactlyOnce => Inbound::Publish2,
        }
    }

    /// The kind of the packet whose fixed header starts with `first` (judged before the body
    /// is decoded); `None` for the reserved type 0.
    pub fn of_first_byte(first: u8) -> Option<Inbound> {
        let qos = (first >> 1) & 0x03;
        Some(match first >> 4 {
            1 => Inbound::Connect,
            2 => Inbound::ConnAck,
            3 if qos == 0 => Inbound::Publish0,
            3 if qos == 1 => Inbound::Publish1,
            3 => Inbound::Publish2,
            4 => Inbound::PubAck,
            5 => Inbound::PubRec,
            6 => Inbound::PubRel,
            7 => Inbound::PubComp,
            8 => Inbound::Subscribe,
            9 => Inbound::SubAck,
            10 => Inbound::Unsubscribe,
            11 => Inbound::UnsubAck,
            12 => Inbound::PingReq,
            13 => Inbound::PingResp,
            14 => Inbound::Disconnect,
            15 => Inbound::Auth,
            _ => return None,
        })
    }

    /// The packet's name as the specification writes it.
    pub fn name(self) -> &'static str {
        match self {
            Inbound::Connect => "CONNECT",
            Inbound::ConnAck => "CONNACK",
            Inbound::Publish0 => "PUBLISH QoS 0",
            Inbound::Publish1 => "PUBLISH QoS 1",
            Inbound::Publish2 => "PUBLISH QoS 2",
            Inbound::PubAck => "PUBACK",
            Inbound::PubRec => "PUBREC",
            Inbound::PubRel => "PUBREL",
            Inbound::PubComp => "PUBCOMP",
            Inbound::Subscribe => "SUBSCRIBE",
            Inbound::SubAck => "SUBACK",
            Inbound::Unsubscribe => "UNSUBSCRIBE",
            Inbound::UnsubAck => "UNSUBACK",
            Inbound::PingReq => "PINGREQ",
            Inbound::PingResp => "PINGRESP",
            Inbound::Disconnect => "DISCONNECT",
            Inbound::Auth => "AUTH",
        }
    }
}

const CONNECTED: &[Stage] = &[Stage::Connected];
const CONNECTING: &[Stage] = &[Stage::Connecting];
const BEFORE_CONNECT: &[Stage] = &[Stage::BeforeConnect];
const CLOSED: &[Stage] = &[Stage::Closed];
const ALL_PACKETS: &[Inbound] = &PACKETS;
/// Every packet but CONNECT (`PACKETS` starts with CONNECT and ends with AUTH).
const NOT_CONNECT: &[Inbound] = ALL_PACKETS.split_at(1).1;
/// Every packet but CONNECT and AUTH.
const NOT_CONNECT_AUTH: &[Inbound] = NOT_CONNECT.split_at(NOT_CONNECT.len() - 1).0;
const _: () = assert!(
    matches!(PACKETS[0], Inbound::Connect) && matches!(PACKETS[PACKETS.len() - 1], Inbound::Auth)
);
const FREE: &[IdState] = &[IdState::Free];
const AWAIT_PUBREL: &[IdState] = &[IdState::AwaitPubRel];
const AWAIT_PUBREL_ANY: &[IdState] = &[IdState::AwaitPubRel, IdState::AwaitPubRelEarlier];
const AWAIT_PUBREL_EARLIER: &[IdState] = &[IdState::AwaitPubRelEarlier];
const SERVER_ONLY: &[Inbound] = &[
    Inbound::ConnAck,
    Inbound::SubAck,
    Inbound::UnsubAck,
    Inbound::PingResp,
];

/// Shorthand for a row.
const fn row(
    versions: Versions,
    stages: &'static [Stage],
    packets: &'static [Inbound],
    ids: &'static [IdState],
    reaction: Reaction,
    spec: &'static str,
    choice: Option<&'static str>,
) -> Row {
    Row {
        versions,
        stages,
        packets,
        ids,
        reaction,
        spec,
        choice,
    }
}

use Reaction as R;
use Versions as V;

/// The table. Statement ids: "v5 [MQTT-…]" is MQTT 5.0, "v3.1.1 [MQTT-…]" MQTT 3.1.1 (MQTT
/// 3.1 follows 3.1.1 here).
pub static ROWS: &[Row] = &[
    // ---- before CONNECT
    row(V::All, BEFORE_CONNECT, &[Inbound::Connect], NO_ID, R::Accept,
        "v5 [MQTT-3.1.0-1]; v3.1.1 [MQTT-3.1.0-1]", None),
    row(V::All, BEFORE_CONNECT, NOT_CONNECT, NO_ID, R::Violation(Rule::FirstPacketNotConnect),
        "v5 [MQTT-3.1.0-1], [MQTT-4.13.1-1]; v3.1.1 [MQTT-3.1.0-1], [MQTT-4.8.0-1]",
        Some("closed without a packet: no CONNACK answers what is not a CONNECT, and v5 [MQTT-3.2.0-1] allows no DISCONNECT before CONNACK (Mosquitto and EMQX close too)")),
    // ---- between CONNECT and CONNACK (the session is being claimed)
    row(V::All, CONNECTING, &[Inbound::Connect], NO_ID, R::Violation(Rule::SecondConnect),
        "v5 [MQTT-3.1.0-2]; v3.1.1 [MQTT-3.1.0-2]",
        Some("v5: CONNACK 0x82 (the Reason Code goes in CONNACK until one is sent, v5 [MQTT-3.2.0-1]); v3.x: closed")),
    row(V::V5, CONNECTING, NOT_CONNECT, NO_ID, R::Defer,
        "v5 3.1.4 (the Client may send packets before CONNACK)",
        Some("handled in order after CONNACK, as in Connected (Mosquitto and EMQX answer CONNECT synchronously, with the same effect)")),
    row(V::V3, CONNECTING, NOT_CONNECT_AUTH, NO_ID, R::Defer,
        "v3.1.1 3.1.4 (the Client may send packets before CONNACK)",
        Some("handled in order after CONNACK, as in Connected")),
    row(V::V3, CONNECTING, &[Inbound::Auth], NO_ID, R::Malformed,
        "v3.1.1 2.2.1 (type 15 is reserved), [MQTT-4.8.0-1]", None),
    // ---- connected: session and connection packets
    row(V::All, CONNECTED, &[Inbound::Connect], NO_ID, R::Violation(Rule::SecondConnect),
        "v5 [MQTT-3.1.0-2]; v3.1.1 [MQTT-3.1.0-2]", None),
    row(V::All, CONNECTED, SERVER_ONLY, NO_ID, R::Violation(Rule::ServerOnlyPacket),
        "v5 2.1.2 (direction Server to Client), 1.2 Protocol Error, [MQTT-4.13.1-1]; v3.1.1 2.2.1, [MQTT-4.8.0-1]",
        Some("v5 DISCONNECT 0x82 (Mosquitto 0x82; EMQX 0x82, but 0x81 for PINGRESP)")),
    row(V::All, CONNECTED, &[Inbound::PingReq], NO_ID, R::Accept,
        "v5 [MQTT-3.12.4-1]; v3.1.1 [MQTT-3.12.4-1]", None),
    row(V::All, CONNECTED, &[Inbound::Disconnect], NO_ID, R::Accept,
        "v5 [MQTT-3.14.4-3]; v3.1.1 [MQTT-3.14.4-3]", None),
    row(V::V5, CONNECTED, &[Inbound::Auth], NO_ID, R::Violation(Rule::AuthNotSupported),
        "v5 [MQTT-4.12.0-7], [MQTT-4.13.1-1] (no Authentication Method in CONNECT)",
        Some("DISCONNECT 0x82 (Mosquitto 0x82; EMQX 0x82, or 0x8C when the AUTH names a method)")),
    row(V::V3, CONNECTED, &[Inbound::Auth], NO_ID, R::Malformed,
        "v3.1.1 2.2.1 (type 15 is reserved), [MQTT-4.8.0-1]", None),
    // ---- connected: the client's packets that carry its own identifiers
    row(V::All, CONNECTED, &[Inbound::Publish0], NO_ID, R::Accept,
        "v5 [MQTT-4.3.1-1]; v3.1.1 [MQTT-4.3.1-1]", None),
    row(V::All, CONNECTED, &[Inbound::Publish1], FREE, R::Accept,
        "v5 [MQTT-4.3.2-4], [MQTT-4.3.2-5]; v3.1.1 [MQTT-4.3.2-2]", None),
    row(V::All, CONNECTED, &[Inbound::Publish2], FREE, R::Accept,
        "v5 [MQTT-4.3.3-8], [MQTT-4.3.3-12]; v3.1.1 [MQTT-4.3.3-2]", None),
    row(V::All, CONNECTED, &[Inbound::Publish2], AWAIT_PUBREL_ANY, R::PubRecAgain,
        "v5 [MQTT-4.3.3-10]; v3.1.1 [MQTT-4.3.3-2]",
        Some("PUBREC 0x00, whatever DUP says (Mosquitto: the same once, a disconnect on a second resend; EMQX: 0x91 Packet Identifier in use when DUP is 0)")),
    row(V::All, CONNECTED, &[Inbound::Publish1, Inbound::Subscribe, Inbound::Unsubscribe], AWAIT_PUBREL,
        R::Violation(Rule::PacketIdInUse),
        "v5 [MQTT-2.2.1-3], 1.2 Protocol Error, [MQTT-4.13.1-1]; v3.1.1 [MQTT-2.3.1-2], [MQTT-4.8.0-1]",
        Some("the identifier is the client's QoS 2 message's until PUBREL: v5 DISCONNECT 0x82 (Mosquitto drops the held QoS 2 message and takes the new one; EMQX processes the new packet)")),
    row(V::All, CONNECTED, &[Inbound::Publish1, Inbound::Subscribe, Inbound::Unsubscribe], AWAIT_PUBREL_EARLIER,
        R::ReleaseHeldAccept,
        "v5 [MQTT-2.2.1-3], [MQTT-4.4.0-1]; v3.1.1 [MQTT-2.3.1-2], [MQTT-4.4.0-1]",
        Some("a client that resumed its session but lost its state would be disconnected again and again: the held flow ends (its message was routed at PUBLISH) and the packet is handled, counted (Mosquitto and EMQX handle the packet too)")),
    row(V::All, CONNECTED, &[Inbound::Subscribe], FREE, R::Accept,
        "v5 [MQTT-3.8.4-1]; v3.1.1 [MQTT-3.8.4-1]", None),
    row(V::All, CONNECTED, &[Inbound::Unsubscribe], FREE, R::Accept,
        "v5 [MQTT-3.10.4-4]; v3.1.1 [MQTT-3.10.4-4]", None),
    row(V::All, CONNECTED, &[Inbound::PubRel], AWAIT_PUBREL_ANY, R::Complete,
        "v5 [MQTT-4.3.3-11]; v3.1.1 [MQTT-4.3.3-2]", None),
    row(V::All, CONNECTED, &[Inbound::PubRel], FREE, R::PubCompUnknownId,
        "v5 3.7.2.1 (0x92 Packet Identifier not found), [MQTT-4.3.3-11]; v3.1.1 [MQTT-4.3.3-2]",
        Some("v5 PUBCOMP 0x92, v3.x PUBCOMP, counted (EMQX the same; Mosquitto PUBCOMP 0x00)")),
    // ---- connected: acknowledgements of the broker's PUBLISHes
    row(V::All, CONNECTED, &[Inbound::PubAck], &[IdState::AwaitPubAck], R::EndFlow,
        "v5 [MQTT-4.3.2-3]; v3.1.1 [MQTT-4.3.2-1]", None),
    row(V::All, CONNECTED, &[Inbound::PubRec], &[IdState::AwaitPubRec], R::Release,
        "v5 [MQTT-4.3.3-4], [MQTT-4.4.0-2]; v3.1.1 [MQTT-4.3.3-1]", None),
    row(V::All, CONNECTED, &[Inbound::PubRec], &[IdState::AwaitPubComp], R::ReleaseAgain,
        "v5 [MQTT-4.3.3-4]; v3.1.1 [MQTT-4.3.3-1]",
        Some("a repeated PUBREC names the flow it acknowledged: PUBREL again, 0x00 (a Reason Code of 0x80 or more ends the flow, v5 [MQTT-4.4.0-2]) (Mosquitto the same; EMQX PUBREL 0x91)")),
    row(V::All, CONNECTED, &[Inbound::PubComp], &[IdState::AwaitPubComp], R::EndFlow,
        "v5 [MQTT-4.3.3-5]; v3.1.1 [MQTT-4.3.3-1]", None),
    row(V::All, CONNECTED, &[Inbound::PubAck, Inbound::PubComp], FREE, R::IgnoreUnknownId,
        "v5 3.4.2.1, 3.7.2.1 (nothing to acknowledge); v3.1.1 4.3",
        Some("ignored and counted (Mosquitto and EMQX ignore it; EMQX logs it)")),
    row(V::All, CONNECTED, &[Inbound::PubRec], FREE, R::PubRelUnknownId,
        "v5 3.6.2.1 (0x92 Packet Identifier not found); v3.1.1 4.3.3",
        Some("v5 PUBREL 0x92, v3.x PUBREL, counted (EMQX the same; Mosquitto PUBREL 0x00)")),
    row(V::All, CONNECTED, &[Inbound::PubAck], &[IdState::AwaitPubRec, IdState::AwaitPubComp],
        R::Violation(Rule::AckOfOtherFlow),
        "v5 1.2 Protocol Error (inconsistent with the state), [MQTT-4.3.3-3], [MQTT-4.13.1-1]; v3.1.1 [MQTT-4.3.3-1], [MQTT-4.8.0-1]",
        None),
    row(V::All, CONNECTED, &[Inbound::PubRec], &[IdState::AwaitPubAck],
        R::Violation(Rule::AckOfOtherFlow),
        "v5 1.2 Protocol Error (inconsistent with the state), [MQTT-4.3.2-3], [MQTT-4.13.1-1]; v3.1.1 [MQTT-4.3.2-1], [MQTT-4.8.0-1]",
        None),
    row(V::All, CONNECTED, &[Inbound::PubComp], &[IdState::AwaitPubAck, IdState::AwaitPubRec],
        R::Violation(Rule::AckOfOtherFlow),
        "v5 1.2 Protocol Error (inconsistent with the state), [MQTT-4.3.2-3], [MQTT-4.3.3-3], [MQTT-4.13.1-1]; v3.1.1 [MQTT-4.3.3-1], [MQTT-4.8.0-1]",
        None),
    // ---- after DISCONNECT, or once the broker closed the connection
    row(V::All, CLOSED, ALL_PACKETS, NO_ID, R::Ignore,
        "v5 [MQTT-3.14.4-1], [MQTT-3.14.4-2]; v3.1.1 [MQTT-3.14.4-2]", None),
];

const fn version_index(v: ProtocolVersion) -> usize {
    match v {
        ProtocolVersion::V31 => 0,
        ProtocolVersion::V311 => 1,
        ProtocolVersion::V5 => 2,
    }
}

const fn versions_have(vs: Versions, v: usize) -> bool {
    match vs {
        Versions::All => true,
        Versions::V3 => v < 2,
        Versions::V5 => v == 2,
    }
}

const fn id_valid(stage: Stage, packet: Inbound, id: IdState) -> bool {
    let ids = id_states(stage, packet);
    let mut i = 0;
    while i < ids.len() {
        if ids[i] as usize == id as usize {
            return true;
        }
        i += 1;
    }
    false
}

const NO_ROW: u8 = u8::MAX;
type Dense = [[[[u8; ID_COUNT]; PACKETS.len()]; STAGES.len()]; VERSIONS.len()];

/// What is wrong with the rows, if anything: a key two rows claim, a key no row covers, or a
/// row naming an identifier state its packet cannot meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    Overlap {
        row: usize,
        version: usize,
        stage: Stage,
        packet: Inbound,
        id: IdState,
    },
    Gap {
        version: usize,
        stage: Stage,
        packet: Inbound,
        id: IdState,
    },
    ImpossibleKey {
        row: usize,
        stage: Stage,
        packet: Inbound,
        id: IdState,
    },
}

/// Builds the dense index from the rows (at compile time).
const fn build() -> (Dense, Option<Defect>) {
    let mut d: Dense = [[[[NO_ROW; ID_COUNT]; PACKETS.len()]; STAGES.len()]; VERSIONS.len()];
    let mut defect = None;
    let mut r = 0;
    while r < ROWS.len() {
        let row = &ROWS[r];
        let mut v = 0;
        while v < VERSIONS.len() {
            if versions_have(row.versions, v) {
                let mut s = 0;
                while s < row.stages.len() {
                    let mut p = 0;
                    while p < row.packets.len() {
                        let mut i = 0;
                        while i < row.ids.len() {
                            let (stage, packet, id) = (row.stages[s], row.packets[p], row.ids[i]);
                            let slot = &mut d[v][stage as usize][packet as usize][id as usize];
                            if !id_valid(stage, packet, id) {
                                if defect.is_none() {
                                    defect = Some(Defect::ImpossibleKey {
                                        row: r,
                                        stage,
                                        packet,
                                        id,
                                    });
                                }
                            } else if *slot != NO_ROW {
                                if defect.is_none() {
                                    defect = Some(Defect::Overlap {
                                        row: r,
                                        version: v,
                                        stage,
                                        packet,
                                        id,
                                    });
                                }
                            } else {
                                *slot = r as u8;
                            }
                            i += 1;
                        }
                        p += 1;
                    }
                    s += 1;
                }
            }
            v += 1;
        }
        r += 1;
    }
    let mut v = 0;
    while v < VERSIONS.len() {
        let mut s = 0;
        while s < STAGES.len() {
            let mut p = 0;
            while p < PACKETS.len() {
                let ids = id_states(STAGES[s], PACKETS[p]);
                let mut i = 0;
                while i < ids.len() {
                    if d[v][s][p][ids[i] as usize] == NO_ROW && defect.is_none() {
                        defect = Some(Defect::Gap {
                            version: v,
                            stage: STAGES[s],
                            packet: PACKETS[p],
                            id: ids[i],
                        });
                    }
                    i += 1;
                }
                p += 1;
            }
            s += 1;
        }
        v += 1;
    }
    (d, defect)
}

const BUILT: (Dense, Option<Defect>) = build();
static DENSE: Dense = BUILT.0;

/// The first defect of the rows (`None` when every key has exactly one row).
pub const DEFECT: Option<Defect> = BUILT.1;

// A build with a gap or an overlap in the table fails here. (The unit tests are compiled
// without this, so that `protocol::tests::table_is_complete` can name the defect.)
#[cfg(not(test))]
const TABLE_IS_COMPLETE: () = assert!(
    DEFECT.is_none(),
    "the protocol table has a gap or an overlap: `cargo test -p tachyon-engine --lib protocol` names it"
);
#[cfg(not(test))]
const _: () = TABLE_IS_COMPLETE;

/// The row deciding `packet` in `stage` with its identifier in state `id`.
///
/// # Panics
/// If `id` is not one of `id_states(stage, packet)` (a bug of the caller).
pub fn lookup(
    version: ProtocolVersion,
    stage: Stage,
    packet: Inbound,
    id: IdState,
) -> &'static Row {
    let r = DENSE[version_index(version)][stage as usize][packet as usize][id as usize];
    assert!(
        r != NO_ROW,
        "protocol table: no row for {version:?} {stage:?} {packet:?} {id:?}"
    );
    &ROWS[r as usize]
}

const fn reaction_at(v: usize, stage: Stage, packet: Inbound, id: IdState) -> Option<Reaction> {
    let r = BUILT.0[v][stage as usize][packet as usize][id as usize];
    if r == NO_ROW {
        None
    } else {
        Some(ROWS[r as usize].reaction)
    }
}

const fn is_accept(r: Option<Reaction>) -> bool {
    matches!(r, Some(Reaction::Accept))
}

/// The engine does not look up what it knows: a connected PUBLISH goes straight to its
/// handler unless its identifier is held by an inbound QoS 2 flow, and a closed
/// connection's input is dropped unread. These are the table's rows for those keys.
pub const HOT_PATH_ROWS: bool = {
    let mut ok = true;
    let mut v = 0;
    while v < VERSIONS.len() {
        ok &= is_accept(reaction_at(
            v,
            Stage::Connected,
            Inbound::Publish0,
            IdState::None,
        ));
        ok &= is_accept(reaction_at(
            v,
            Stage::Connected,
            Inbound::Publish1,
            IdState::Free,
        ));
        ok &= is_accept(reaction_at(
            v,
            Stage::Connected,
            Inbound::Publish2,
            IdState::Free,
        ));
        // `Engine::on_publish` hands a held identifier to `Engine::react`, which needs no
        // packet (or ends the held flow and goes on): not Accept or Defer.
        ok &= !matches!(
            reaction_at(v, Stage::Connected, Inbound::Publish1, IdState::AwaitPubRel),
            Some(Reaction::Accept | Reaction::Defer) | None
        );
        ok &= !matches!(
            reaction_at(v, Stage::Connected, Inbound::Publish2, IdState::AwaitPubRel),
            Some(Reaction::Accept | Reaction::Defer) | None
        );
        ok &= !matches!(
            reaction_at(
                v,
                Stage::Connected,
                Inbound::Publish1,
                IdState::AwaitPubRelEarlier
            ),
            Some(Reaction::Accept | Reaction::Defer) | None
        );
        ok &= !matches!(
            reaction_at(
                v,
                Stage::Connected,
                Inbound::Publish2,
                IdState::AwaitPubRelEarlier
            ),
            Some(Reaction::Accept | Reaction::Defer) | None
        );
        let mut p = 0;
        while p < PACKETS.len() {
            ok &= matches!(
                reaction_at(v, Stage::Closed, PACKETS[p], IdState::None),
                Some(Reaction::Ignore)
            );
            if p > 0 {
                // `Engine::handle_bytes` judges the first packet from its first byte.
                ok &= matches!(
                    reaction_at(v, Stage::BeforeConnect, PACKETS[p], IdState::None),
                    Some(Reaction::Violation(Rule::FirstPacketNotConnect))
                );
            }
            p += 1;
        }
        v += 1;
    }
    ok
};

/// Every row that accepts a packet names one with a handler (`Engine::handle_packet`), and
/// only packets between CONNECT and CONNACK are deferred.
pub const ACCEPT_ROWS_HAVE_HANDLERS: bool = {
    let mut ok = true;
    let mut r = 0;
    while r < ROWS.len() {
        let row = &ROWS[r];
        let mut p = 0;
        while p < row.packets.len() {
            let handled = matches!(
                row.packets[p],
                Inbound::Connect
                    | Inbound::Publish0
                    | Inbound::Publish1
                    | Inbound::Publish2
                    | Inbound::Subscribe
                    | Inbound::Unsubscribe
                    | Inbound::PingReq
                    | Inbound::Disconnect
            );
            if matches!(row.reaction, Reaction::Accept | Reaction::ReleaseHeldAccept) && !handled {
                ok = false;
            }
            p += 1;
        }
        let mut s = 0;
        while s < row.stages.len() {
            if matches!(row.reaction, Reaction::Defer)
                && !matches!(row.stages[s], Stage::Connecting)
            {
                ok = false;
            }
            s += 1;
        }
        r += 1;
    }
    ok
};
const _: () = assert!(
    ACCEPT_ROWS_HAVE_HANDLERS,
    "a protocol table row accepts a packet the engine has no handler for, or defers outside CONNECT..CONNACK"
);
const _: () = assert!(
    HOT_PATH_ROWS,
    "the protocol table changed a row the engine's hot paths implement without a lookup (PUBLISH when connected, input after close): change those paths too"
);

/// How a violation reaches the client in `stage` on `version`.
fn violation_wire(version: ProtocolVersion, stage: Stage, code: u8) -> String {
    match (version.is_v5(), stage) {
        (true, Stage::BeforeConnect) | (false, _) => "close".to_string(),
        (true, Stage::Connecting) => format!("CONNACK 0x{code:02X}, close"),
        (true, _) => format!("DISCONNECT 0x{code:02X}, close"),
    }
}

impl Rule {
    /// The v5 Reason Code of the violation (`Violation::reason_code`, the one mapping).
    pub fn reason_code(self) -> u8 {
        crate::dispatch::violation_of(self, Inbound::Connect, IdState::None, None)
            .reason_code()
            .0
    }

    pub fn name(self) -> &'static str {
        match self {
            Rule::FirstPacketNotConnect => "first packet not CONNECT",
            Rule::SecondConnect => "second CONNECT",
            Rule::ServerOnlyPacket => "a packet only a Server sends",
            Rule::AckOfOtherFlow => "acknowledges a flow of another kind or stage",
            Rule::PacketIdInUse => "identifier held by the client's QoS 2 flow",
            Rule::AuthNotSupported => "AUTH without an Authentication Method",
        }
    }
}

impl Reaction {
    /// What goes on the wire, per version: for docs/conformance.md.
    pub fn describe(self, version: ProtocolVersion, stage: Stage, packet: Inbound) -> String {
        let v5 = version.is_v5();
        match self {
            Reaction::Accept => match packet {
                Inbound::Connect => "CONNACK".into(),
                Inbound::Publish0 => "routed".into(),
                Inbound::Publish1 => "routed, PUBACK".into(),
                Inbound::Publish2 => "routed, PUBREC".into(),
                Inbound::Subscribe => "SUBACK".into(),
                Inbound::Unsubscribe => "UNSUBACK".into(),
                Inbound::PingReq => "PINGRESP".into(),
                Inbound::Disconnect => "close".into(),
                _ => "handled".into(),
            },
            Reaction::Defer => "after CONNACK, as when connected".into(),
            Reaction::PubRecAgain => "PUBREC, not routed again".into(),
            Reaction::EndFlow => "flow ends".into(),
            Reaction::Release => "PUBREL (flow ends on a Reason Code ≥ 0x80)".into(),
            Reaction::ReleaseAgain => "PUBREL again (flow ends on a Reason Code ≥ 0x80)".into(),
            Reaction::Complete => "PUBCOMP, flow ends".into(),
            Reaction::ReleaseHeldAccept => {
                format!(
                    "held flow ended, then {}",
                    Reaction::Accept.describe(version, stage, packet)
                )
            }
            Reaction::IgnoreUnknownId => "ignored, counted".into(),
            Reaction::PubRelUnknownId if v5 => "PUBREL 0x92, counted".into(),
            Reaction::PubRelUnknownId => "PUBREL, counted".into(),
            Reaction::PubCompUnknownId if v5 => "PUBCOMP 0x92, counted".into(),
            Reaction::PubCompUnknownId => "PUBCOMP, counted".into(),
            Reaction::Violation(rule) => format!(
                "{}: {}",
                rule.name(),
                violation_wire(version, stage, rule.reason_code())
            ),
            Reaction::Malformed => violation_wire(version, stage, 0x81),
            Reaction::Ignore => "discarded".into(),
        }
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::BeforeConnect => "before CONNECT",
        Stage::Connecting => "CONNECT sent, no CONNACK yet",
        Stage::Connected => "connected",
        Stage::Closed => "after DISCONNECT / close",
    }
}

fn id_name(id: IdState) -> &'static str {
    match id {
        IdState::None => "—",
        IdState::Free => "not in use",
        IdState::AwaitPubAck => "broker's QoS 1 PUBLISH awaits PUBACK",
        IdState::AwaitPubRec => "broker's QoS 2 PUBLISH awaits PUBREC",
        IdState::AwaitPubComp => "broker's PUBREL awaits PUBCOMP",
        IdState::AwaitPubRel => "client's QoS 2 PUBLISH awaits PUBREL",
        IdState::AwaitPubRelEarlier => {
            "client's QoS 2 PUBLISH of an earlier connection awaits PUBREL"
        }
    }
}

/// The number of (version, stage, packet, identifier state) combinations the rows cover.
pub fn combinations() -> usize {
    let mut n = 0;
    for _ in VERSIONS {
        for s in STAGES {
            for p in PACKETS {
                n += id_states(s, p).len();
            }
        }
    }
    n
}

/// The table as Markdown, row by row (docs/spec/protocol-table.md).
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} rows cover all {} combinations of protocol version (3.1, 3.1.1, 5.0), connection stage, packet and the state of the Packet Identifier it names. Generated from `dataplane/engine/src/protocol.rs` by `TACHYON_BLESS=1 cargo test -p tachyon-engine --test protocol_table`; `tests/protocol_table.rs` drives the engine through every combination.\n\n",
        ROWS.len(),
        combinations()
    ));
    out.push_str("| # | versions | stage | packet | Packet Identifier | reaction (v5) | reaction (3.1, 3.1.1) | statements | choice (Mosquitto, EMQX) |\n");
    out.push_str("|---:|---|---|---|---|---|---|---|---|\n");
    for (i, row) in ROWS.iter().enumerate() {
        let versions = match row.versions {
            Versions::All => "all",
            Versions::V3 => "3.1, 3.1.1",
            Versions::V5 => "5.0",
        };
        let stages: Vec<&str> = row.stages.iter().map(|s| stage_name(*s)).collect();
        let packets: Vec<&str> = if row.packets == ALL_PACKETS {
            vec!["any"]
        } else if row.packets == NOT_CONNECT {
            vec!["any but CONNECT"]
        } else if row.packets == NOT_CONNECT_AUTH {
            vec!["any but CONNECT and AUTH"]
        } else {
            row.packets.iter().map(|p| p.name()).collect()
        };
        let ids: Vec<&str> = row.ids.iter().map(|i| id_name(*i)).collect();
        let stage = row.stages[0];
        let packet = row.packets[0];
        let wire = |v: ProtocolVersion| {
            if versions_have(row.versions, version_index(v)) {
                row.reaction.describe(v, stage, packet)
            } else {
                "(other row)".into()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            versions,
            stages.join(", "),
            packets.join(", "),
            ids.join("; "),
            wire(ProtocolVersion::V5),
            wire(ProtocolVersion::V311),
            row.spec,
            row.choice.unwrap_or("required by the statements"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key has exactly one row (the release build checks the same at compile time;
    /// this names the defect).
    #[test]
    fn table_is_complete() {
        assert_eq!(DEFECT, None);
        assert!(HOT_PATH_ROWS);
    }

    #[test]
    fn lookup_finds_the_rows() {
        let r = lookup(
            ProtocolVersion::V5,
            Stage::Connected,
            Inbound::PubComp,
            IdState::AwaitPubAck,
        );
        assert_eq!(r.reaction, Reaction::Violation(Rule::AckOfOtherFlow));
        let r = lookup(
            ProtocolVersion::V311,
            Stage::Connected,
            Inbound::Auth,
            IdState::None,
        );
        assert_eq!(r.reaction, Reaction::Malformed);
        let r = lookup(
            ProtocolVersion::V31,
            Stage::Connecting,
            Inbound::PubAck,
            IdState::None,
        );
        assert_eq!(r.reaction, Reaction::Defer);
    }

    #[test]
    fn first_bytes_name_their_packets() {
        assert_eq!(Inbound::of_first_byte(0x30), Some(Inbound::Publish0));
        assert_eq!(Inbound::of_first_byte(0x3B), Some(Inbound::Publish1));
        assert_eq!(Inbound::of_first_byte(0x34), Some(Inbound::Publish2));
        assert_eq!(Inbound::of_first_byte(0xF0), Some(Inbound::Auth));
        assert_eq!(Inbound::of_first_byte(0x00), None);
    }
}
