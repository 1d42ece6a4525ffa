//! Variable Byte Integer (v5 1.5.5; v3.1.1 2.2.3 "Remaining Length"): 7 bits per byte, least
//! significant group first, the high bit says "more bytes follow", at most four bytes.
//!
//! ```text
//!   0 ..= 127               1 byte    0x00 ..= 0x7F
//!   128 ..= 16_383          2 bytes   0x80 0x01 ..= 0xFF 0x7F
//!   16_384 ..= 2_097_151    3 bytes
//!   2_097_152 ..= 268_435_455  4 bytes   (VARINT_MAX = 0xFF 0xFF 0xFF 0x7F)
//! ```
//!
//! Non-minimal encodings (for example `0x80 0x00` for 0) are refused as malformed: v5
//! [MQTT-1.5.5-1] says the encoded value MUST use the minimum number of bytes. v3.1.1 has no
//! such statement, but its encoding algorithm (2.2.3) only produces minimal forms and no known
//! client sends anything else. policy: refusing them in both versions keeps every accepted packet
//! canonical, so decode → encode gives back the same bytes (the fuzz target relies on it).

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;

/// Largest value a Variable Byte Integer can hold (four bytes, v5 1.5.5).
pub const VARINT_MAX: u32 = 268_435_455;

/// Number of bytes `v` takes as a Variable Byte Integer (1 to 4).
///
/// # Panics
/// If `v` > [`VARINT_MAX`]: such a value has no encoding, so asking for its length is a bug.
pub fn varint_len(v: u32) -> usize {
    assert!(v <= VARINT_MAX, "varint value {v} exceeds VARINT_MAX");
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads a Variable Byte Integer from the front of `buf`.
///
/// Returns `Ok(Some((value, bytes_used)))`, or `Ok(None)` when `buf` ends before the last byte
/// of the integer.
///
/// # Errors
/// [`DecodeError::VarIntTooLong`] when the first four bytes all have the continuation bit set
/// (a fifth byte would be needed; v5 1.5.5 allows four), [`DecodeError::VarIntNotMinimal`] for a
/// multi-byte encoding whose last byte is zero (v5 [MQTT-1.5.5-1]).
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // v5 [MQTT-1.5.5-1]: a trailing zero group means fewer bytes would have done.
            if i > 0 && byte == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        // Four bytes seen, all with the continuation bit: v5 1.5.5 allows at most four.
        return Err(DecodeError::VarIntTooLong);
    }
    Ok(None)
}

/// Appends `v` as a Variable Byte Integer.
///
/// # Panics
/// If `v` > [`VARINT_MAX`] (a caller bug: lengths are checked before encoding).
pub(crate) fn write_varint(mut v: u32, out: &mut BytesMut) {
    assert!(v <= VARINT_MAX, "varint value {v} exceeds VARINT_MAX");
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_varint(v, &mut b);
        b.to_vec()
    }

    /// Boundary values from the table in v5 1.5.5 (and v3.1.1 Table 2.4).
    #[test]
    fn spec_table_boundaries_encode_and_decode() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (VARINT_MAX, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(v, bytes) in cases {
            assert_eq!(enc(v), bytes, "encode {v}");
            assert_eq!(varint_len(v), bytes.len(), "len {v}");
            assert_eq!(read_varint(bytes), Ok(Some((v, bytes.len()))), "decode {v}");
        }
    }

    #[test]
    fn trailing_bytes_are_not_consumed() {
        assert_eq!(read_varint(&[0x80, 0x01, 0xFF]), Ok(Some((128, 2))));
    }

    #[test]
    fn incomplete_returns_none() {
        assert_eq!(read_varint(&[]), Ok(None));
        assert_eq!(read_varint(&[0x80]), Ok(None));
        assert_eq!(read_varint(&[0x80, 0x80]), Ok(None));
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }

    /// v5 1.5.5: at most four bytes.
    #[test]
    fn five_bytes_is_too_long() {
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::VarIntTooLong)
        );
    }

    /// v5 [MQTT-1.5.5-1]
    #[test]
    fn non_minimal_is_refused() {
        assert_eq!(
            read_varint(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            read_varint(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            read_varint(&[0x81, 0x80, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
    }

    #[test]
    fn every_length_round_trips() {
        for v in (0..=VARINT_MAX).step_by(9_973).chain([VARINT_MAX]) {
            let b = enc(v);
            assert_eq!(read_varint(&b), Ok(Some((v, b.len()))));
            assert_eq!(varint_len(v), b.len());
        }
    }
}
