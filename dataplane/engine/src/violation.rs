//! Rules a client can break after its packets decode, and the one mapping from a broken rule
//! to what the client gets: a v5 Reason Code (CONNACK or DISCONNECT) or, for v3.1.1, a close.

use tachyon_codec::{DecodeError, ReasonCode};

/// The peer broke a rule. After a violation the connection only gets its close.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The bytes did not decode; the codec error names the rule.
    Decode(DecodeError),
    /// v5 [MQTT-3.1.0-1], v3.1.1 [MQTT-3.1.0-1]: the first packet must be CONNECT.
    FirstPacketNotConnect,
    /// v5 [MQTT-3.1.0-2], v3.1.1 [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error.
    SecondConnect,
    /// A Topic Alias of 0 or above our Topic Alias Maximum: Topic Alias invalid
    /// (v5 [MQTT-3.3.2-12] bounds what we must accept).
    TopicAliasOutOfRange { alias: u16, max: u16 },
    /// v5 3.3.2.3.4: an empty Topic Name with an alias we have no mapping for.
    TopicAliasUnknown { alias: u16 },
    /// v5 3.3.2.1: an empty Topic Name without a Topic Alias.
    EmptyTopicWithoutAlias,
    /// More unacknowledged QoS 2 PUBLISHes than our Receive Maximum (the client broke
    /// v5 [MQTT-3.3.4-7]; 3.3.4 names the reaction, DISCONNECT 0x93).
    ReceiveMaximumExceeded { max: u16 },
    /// v5 [MQTT-3.1.2-22], v3.1.1 [MQTT-3.1.2-24]: nothing received for 1.5 x Keep Alive.
    KeepAliveTimeout,
    /// A packet only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    ServerOnlyPacket { packet: &'static str },
    /// v5 3.14.2.2.2: DISCONNECT sets a Session Expiry Interval after CONNECT set 0.
    SessionExpiryAfterZero,
    /// More topic levels than `topic_levels_max` in a Topic Name.
    TopicTooDeep { levels: usize, max: usize },
    /// AUTH received but no extended authentication is configured (v5 4.12).
    AuthNotSupported,
    /// No CONNECT arrived within the connect timeout.
    ConnectTimeout,
    /// v5 [MQTT-3.8.3-4]: No Local set on a Shared Subscription.
    NoLocalOnSharedSubscription,
    /// More packets sent ahead of CONNACK than the broker buffers.
    TooManyPacketsBeforeConnack { max: usize },
    /// An acknowledgement naming a Packet Identifier that is in flight in another kind or
    /// stage of flow (a PUBREC or PUBCOMP for a QoS 1 PUBLISH, a PUBACK for a QoS 2 one, a
    /// PUBCOMP before PUBREC): inconsistent with the state, a Protocol Error (v5 1.2,
    /// [MQTT-4.13.1-1]; v3.1.1 [MQTT-4.8.0-1]).
    AckOfOtherFlow {
        packet: &'static str,
        id: u16,
        awaiting: &'static str,
    },
    /// A new PUBLISH (QoS 1), SUBSCRIBE or UNSUBSCRIBE with a Packet Identifier the client's
    /// QoS 2 PUBLISH still holds (no PUBREL yet): v5 [MQTT-2.2.1-3]; v3.1.1 [MQTT-2.3.1-2].
    PacketIdInUse { packet: &'static str, id: u16 },
}

impl Violation {
    /// The v5 Reason Code for the DISCONNECT (or CONNACK) that reports this violation.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Violation::Decode(e) => e.reason_code(),
            Violation::FirstPacketNotConnect
            | Violation::SecondConnect
            | Violation::EmptyTopicWithoutAlias
            | Violation::ServerOnlyPacket { .. }
            | Violation::SessionExpiryAfterZero
            | Violation::AuthNotSupported
            | Violation::TopicAliasUnknown { .. } => ReasonCode::PROTOCOL_ERROR,
            Violation::TopicAliasOutOfRange { .. } => ReasonCode::TOPIC_ALIAS_INVALID,
            Violation::ReceiveMaximumExceeded { .. } => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            Violation::KeepAliveTimeout => ReasonCode::KEEP_ALIVE_TIMEOUT,
            Violation::TopicTooDeep { .. } => ReasonCode::TOPIC_NAME_INVALID,
            Violation::ConnectTimeout => ReasonCode::MAXIMUM_CONNECT_TIME,
            Violation::NoLocalOnSharedSubscription => ReasonCode::PROTOCOL_ERROR,
            Violation::TooManyPacketsBeforeConnack { .. } => ReasonCode::QUOTA_EXCEEDED,
            Violation::AckOfOtherFlow { .. } | Violation::PacketIdInUse { .. } => {
                ReasonCode::PROTOCOL_ERROR
            }
        }
    }

    /// Short stable name used as the counter label and in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Decode(_) => "decode",
            Violation::FirstPacketNotConnect => "first_packet_not_connect",
            Violation::SecondConnect => "second_connect",
            Violation::TopicAliasOutOfRange { .. } => "topic_alias_out_of_range",
            Violation::TopicAliasUnknown { .. } => "topic_alias_unknown",
            Violation::EmptyTopicWithoutAlias => "empty_topic_without_alias",
            Violation::ReceiveMaximumExceeded { .. } => "receive_maximum_exceeded",
            Violation::KeepAliveTimeout => "keep_alive_timeout",
            Violation::ServerOnlyPacket { .. } => "server_only_packet",
            Violation::SessionExpiryAfterZero => "session_expiry_after_zero",
            Violation::TopicTooDeep { .. } => "topic_too_deep",
            Violation::AuthNotSupported => "auth_not_supported",
            Violation::ConnectTimeout => "connect_timeout",
            Violation::NoLocalOnSharedSubscription => "no_local_on_shared_subscription",
            Violation::TooManyPacketsBeforeConnack { .. } => "too_many_packets_before_connack",
            Violation::AckOfOtherFlow { .. } => "ack_of_other_flow",
            Violation::PacketIdInUse { .. } => "packet_id_in_use",
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Decode(e) => write!(f, "{e}"),
            Violation::FirstPacketNotConnect => f.write_str("first packet was not CONNECT"),
            Violation::SecondConnect => f.write_str("second CONNECT on one connection"),
            Violation::TopicAliasOutOfRange { alias, max } => {
                write!(f, "topic alias {alias} outside 1..={max}")
            }
            Violation::TopicAliasUnknown { alias } => {
                write!(f, "topic alias {alias} used before it was set")
            }
            Violation::EmptyTopicWithoutAlias => {
                f.write_str("empty topic name without topic alias")
            }
            Violation::ReceiveMaximumExceeded { max } => {
                write!(
                    f,
                    "more than {max} unacknowledged QoS 2 PUBLISHes (receive maximum)"
                )
            }
            Violation::KeepAliveTimeout => f.write_str("no packet within 1.5 x keep alive"),
            Violation::ServerOnlyPacket { packet } => {
                write!(f, "client sent {packet}, which only a server sends")
            }
            Violation::SessionExpiryAfterZero => {
                f.write_str("DISCONNECT set a session expiry after CONNECT set 0")
            }
            Violation::TopicTooDeep { levels, max } => {
                write!(f, "topic has {levels} levels, more than the {max} allowed")
            }
            Violation::AuthNotSupported => {
                f.write_str("AUTH packet but no authentication method is configured")
            }
            Violation::ConnectTimeout => f.write_str("no CONNECT within the connect timeout"),
            Violation::NoLocalOnSharedSubscription => {
                f.write_str("No Local set on a shared subscription")
            }
            Violation::TooManyPacketsBeforeConnack { max } => {
                write!(f, "more than {max} packets sent before CONNACK")
            }
            Violation::AckOfOtherFlow {
                packet,
                id,
                awaiting,
            } => write!(f, "{packet} for packet id {id}, whose flow awaits {awaiting}"),
            Violation::PacketIdInUse { packet, id } => write!(
                f,
                "{packet} with packet id {id}, which the client's QoS 2 PUBLISH still holds (no PUBREL yet)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_codes() {
        let cases = [
            (
                Violation::SecondConnect,
                "second CONNECT on one connection",
                0x82,
            ),
            (
                Violation::TopicAliasOutOfRange { alias: 20, max: 16 },
                "topic alias 20 outside 1..=16",
                0x94,
            ),
            (
                Violation::ReceiveMaximumExceeded { max: 2 },
                "more than 2 unacknowledged QoS 2 PUBLISHes (receive maximum)",
                0x93,
            ),
            (
                Violation::KeepAliveTimeout,
                "no packet within 1.5 x keep alive",
                0x8D,
            ),
            (
                Violation::FirstPacketNotConnect,
                "first packet was not CONNECT",
                0x82,
            ),
            (
                Violation::TopicAliasUnknown { alias: 3 },
                "topic alias 3 used before it was set",
                0x82,
            ),
            (
                Violation::EmptyTopicWithoutAlias,
                "empty topic name without topic alias",
                0x82,
            ),
            (
                Violation::ServerOnlyPacket { packet: "CONNACK" },
                "client sent CONNACK, which only a server sends",
                0x82,
            ),
            (
                Violation::SessionExpiryAfterZero,
                "DISCONNECT set a session expiry after CONNECT set 0",
                0x82,
            ),
            (
                Violation::TopicTooDeep {
                    levels: 200,
                    max: 128,
                },
                "topic has 200 levels, more than the 128 allowed",
                0x90,
            ),
            (
                Violation::AuthNotSupported,
                "AUTH packet but no authentication method is configured",
                0x82,
            ),
            (
                Violation::ConnectTimeout,
                "no CONNECT within the connect timeout",
                0xA0,
            ),
            (
                Violation::NoLocalOnSharedSubscription,
                "No Local set on a shared subscription",
                0x82,
            ),
            (
                Violation::TooManyPacketsBeforeConnack { max: 9 },
                "more than 9 packets sent before CONNACK",
                0x97,
            ),
            (
                Violation::AckOfOtherFlow {
                    packet: "PUBCOMP",
                    id: 7,
                    awaiting: "PUBACK",
                },
                "PUBCOMP for packet id 7, whose flow awaits PUBACK",
                0x82,
            ),
            (
                Violation::PacketIdInUse {
                    packet: "SUBSCRIBE",
                    id: 3,
                },
                "SUBSCRIBE with packet id 3, which the client's QoS 2 PUBLISH still holds (no PUBREL yet)",
                0x82,
            ),
        ];
        for (v, text, code) in cases {
            assert_eq!(v.to_string(), text);
            assert_eq!(v.reason_code().0, code, "{v}");
        }
    }
}
