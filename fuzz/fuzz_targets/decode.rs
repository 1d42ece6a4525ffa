//! Fuzz target for the packet decoder (STYLE.md §6): arbitrary bytes, decoded as a stream with
//! each protocol version and before CONNECT.
//!
//! Checks: no panic; `decode` never consumes more than one packet from the front of what it was
//! given, and leaves the buffer untouched when it reports incomplete input; a decoded packet
//! re-encodes, the encoding decodes to the same packet and re-encodes to the same bytes; where
//! the wire form is unique (MQTT 3.1.1, and v5 packets without properties or short forms) the
//! encoding equals the input bytes, and elsewhere it is never longer (AUTH excepted: a Reason
//! Code without Property Length is accepted but encoded with one).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tachyon_codec::{decode, encode, encoded_len, Packet, Properties, ProtocolVersion};

/// Small enough that oversize input is exercised, large enough for any fuzz input.
const MAX_PACKET_SIZE: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    for version in [
        None,
        Some(ProtocolVersion::V31),
        Some(ProtocolVersion::V311),
        Some(ProtocolVersion::V5),
    ] {
        decode_stream(data, version);
    }
});

fn decode_stream(data: &[u8], version: Option<ProtocolVersion>) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decode(&mut buf, version, MAX_PACKET_SIZE) {
            Ok(Some(packet)) => {
                let used = before.len() - buf.len();
                assert!(used >= 2, "a packet has at least a fixed header");
                assert!(used <= MAX_PACKET_SIZE);
                assert_eq!(
                    &before[used..],
                    &buf[..],
                    "only the front packet is consumed"
                );
                check_reencode(&packet, version, &before[..used]);
            }
            Ok(None) => {
                assert_eq!(buf, before, "incomplete input leaves the buffer untouched");
                return;
            }
            Err(e) => {
                // Both are used in logs and replies; they must not panic either.
                let _ = e.reason_code();
                let _ = e.to_string();
                return;
            }
        }
    }
}

/// The version the packet was decoded in: a CONNECT by its own level, others by `version`
/// (v5 rules before CONNECT).
fn effective_version(p: &Packet, version: Option<ProtocolVersion>) -> ProtocolVersion {
    match (p, version) {
        (Packet::Connect(c), _) => c.version,
        (_, Some(v)) => v,
        (_, None) => ProtocolVersion::V5,
    }
}

fn no_properties(p: &Packet) -> bool {
    let empty = |props: &Properties| props.is_empty();
    match p {
        Packet::Connect(c) => {
            empty(&c.properties) && c.will.as_ref().map_or(true, |w| empty(&w.properties))
        }
        Packet::ConnAck(c) => empty(&c.properties),
        Packet::Publish(x) => empty(&x.properties),
        Packet::Subscribe(x) => empty(&x.properties),
        Packet::SubAck(x) => empty(&x.properties),
        Packet::Unsubscribe(x) => empty(&x.properties),
        Packet::UnsubAck(x) => empty(&x.properties),
        Packet::PingReq | Packet::PingResp => true,
        // The v5 short forms make these non-unique (for example PUBACK Success with Remaining
        // Length 2, 3 or 4); they are only compared by length.
        Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::Disconnect(_)
        | Packet::Auth(_) => false,
    }
}

fn check_reencode(p: &Packet, version: Option<ProtocolVersion>, input: &[u8]) {
    let v = effective_version(p, version);
    let mut out = BytesMut::new();
    let n = encode(p, v, &mut out).expect("a decoded packet encodes");
    assert_eq!(n, out.len());
    assert_eq!(n, encoded_len(p, v));

    let mut again = out.clone();
    let decoded = decode(&mut again, Some(v), usize::MAX).expect("our encoding decodes");
    assert_eq!(
        decoded.as_ref(),
        Some(p),
        "encode then decode gives the packet back"
    );
    assert!(again.is_empty());

    let mut out2 = BytesMut::new();
    encode(p, v, &mut out2).expect("encodes again");
    assert_eq!(out2, out, "encoding is deterministic");

    if v == ProtocolVersion::V311 || no_properties(p) {
        assert_eq!(
            &out[..],
            input,
            "canonical input re-encodes to the same bytes"
        );
    } else if !matches!(p, Packet::Auth(_)) {
        assert!(
            out.len() <= input.len(),
            "the encoder uses the shortest form"
        );
    }
}
