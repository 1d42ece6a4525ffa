//! Byte-exact vectors in both directions, incomplete input at every split point, streams of
//! several packets, and the maximum packet size checked from the fixed header alone.

mod common;

use bytes::BytesMut;
use common::*;
use tachyon_codec::*;

#[test]
fn vectors_decode_to_their_packets() {
    for v in vectors() {
        let got = dec(&v.bytes, Some(v.version));
        assert_eq!(got, Ok(Some(v.packet.clone())), "{}", v.name);
    }
}

#[test]
fn vectors_encode_to_their_bytes() {
    for v in vectors() {
        assert_eq!(enc(&v.packet, v.version), v.bytes, "{}", v.name);
    }
}

/// Before CONNECT (`version` None) a CONNECT decodes per its own Protocol Level and every other
/// packet with the v5 rules.
#[test]
fn before_connect_uses_connect_level_then_v5() {
    for v in vectors() {
        if matches!(v.packet, Packet::Connect(_)) || v.version == ProtocolVersion::V5 {
            assert_eq!(
                dec(&v.bytes, None),
                Ok(Some(v.packet.clone())),
                "{}",
                v.name
            );
        }
    }
}

/// Incomplete input is not an error: `Ok(None)` and the buffer untouched, at every split point.
#[test]
fn every_split_point_is_incomplete_and_untouched() {
    for v in vectors() {
        for k in 0..v.bytes.len() {
            let mut b = BytesMut::from(&v.bytes[..k]);
            assert_eq!(
                decode(&mut b, Some(v.version), MAX),
                Ok(None),
                "{} at {k}",
                v.name
            );
            assert_eq!(&b[..], &v.bytes[..k], "{} buffer untouched at {k}", v.name);
        }
    }
}

#[test]
fn a_stream_of_packets_decodes_one_at_a_time() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let vs: Vec<_> = vectors()
            .into_iter()
            .filter(|v| v.version == version && !matches!(v.packet, Packet::Connect(_)))
            .collect();
        let mut stream = BytesMut::new();
        for v in &vs {
            stream.extend_from_slice(&v.bytes);
        }
        for v in &vs {
            assert_eq!(
                decode(&mut stream, Some(version), MAX),
                Ok(Some(v.packet.clone()))
            );
        }
        assert!(stream.is_empty());
        assert_eq!(decode(&mut stream, Some(version), MAX), Ok(None));
    }
}

/// The maximum packet size (v5 3.1.2.11.4, Reason Code 0x95) is enforced from the fixed header,
/// before the body is buffered.
#[test]
fn oversize_is_refused_from_the_fixed_header_alone() {
    // PUBLISH with Remaining Length 2,097,151: only four bytes are buffered.
    let mut b = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
    let e = decode(&mut b, Some(ProtocolVersion::V5), 1000).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 2_097_155,
            max: 1000
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PACKET_TOO_LARGE);

    // The limit counts the fixed header: a 10-byte packet passes at 10, fails at 9.
    let publish = [0x30, 0x08, 0x00, 0x01, b't', b'p', b'a', b'y', b'l', b'd'];
    let mut b = BytesMut::from(&publish[..]);
    assert!(matches!(
        decode(&mut b, Some(ProtocolVersion::V311), 10),
        Ok(Some(Packet::Publish(_)))
    ));
    let mut b = BytesMut::from(&publish[..2]);
    assert_eq!(
        decode(&mut b, Some(ProtocolVersion::V311), 9),
        Err(DecodeError::PacketTooLarge { size: 10, max: 9 })
    );
}

#[test]
fn incomplete_remaining_length_waits_for_more() {
    let mut b = BytesMut::from(&[0x30, 0x80, 0x80][..]);
    assert_eq!(decode(&mut b, None, 10), Ok(None));
    assert_eq!(b.len(), 3);
}

/// An unsupported CONNECT can still be answered in the client's version.
#[test]
fn peek_connect_level_of_vectors() {
    for v in vectors() {
        if matches!(v.packet, Packet::Connect(_)) {
            assert_eq!(
                peek_connect_level(&v.bytes),
                Some(v.version.level()),
                "{}",
                v.name
            );
        }
    }
}
