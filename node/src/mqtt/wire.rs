//! CORE. MQTT data representations (section 1.5): integers, variable byte integers, UTF-8
//! strings and binary data, read from a `Bytes` without copying and written to a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::DecodeError;

/// Largest value a variable byte integer can carry (four bytes).
pub const VARINT_MAX: u32 = 268_435_455;

/// Reads one byte.
pub fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Malformed("packet ends inside a byte field"));
    }
    Ok(buf.get_u8())
}

/// Reads a big-endian two-byte integer.
pub fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.len() < 2 {
        return Err(DecodeError::Malformed("packet ends inside a two-byte integer"));
    }
    Ok(buf.get_u16())
}

/// Reads a big-endian four-byte integer.
pub fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Malformed("packet ends inside a four-byte integer"));
    }
    Ok(buf.get_u32())
}

/// Reads a variable byte integer (at most four bytes, section 1.5.5).
pub fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let byte = read_u8(buf)?;
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed("variable byte integer longer than four bytes"))
}

/// Reads length-prefixed binary data as a slice of `buf`.
pub fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.len() < len {
        return Err(DecodeError::Malformed("packet ends inside a length-prefixed field"));
    }
    Ok(buf.split_to(len))
}

/// Reads a UTF-8 encoded string; rejects invalid UTF-8 and U+0000 (MQTT-1.5.4-1, -2).
pub fn read_string(buf: &mut Bytes) -> Result<ByteString, DecodeError> {
    let raw = read_binary(buf)?;
    to_string(raw)
}

/// Validates `raw` as an MQTT UTF-8 string without copying it.
pub fn to_string(raw: Bytes) -> Result<ByteString, DecodeError> {
    if raw.contains(&0) {
        return Err(DecodeError::Malformed("string contains U+0000"));
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))
}

/// Number of bytes `value` takes as a variable byte integer.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer; `value` must not exceed [`VARINT_MAX`].
pub fn write_varint(buf: &mut BytesMut, value: usize) {
    debug_assert!(value <= VARINT_MAX as usize);
    let mut v = value;
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Writes length-prefixed binary data (at most 65,535 bytes; longer is truncated by the
/// caller's validation, never here).
pub fn write_binary(buf: &mut BytesMut, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX));
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_boundary() {
        for v in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut out = BytesMut::new();
            write_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut b = out.freeze();
            assert_eq!(read_varint(&mut b).unwrap() as usize, v);
        }
    }

    #[test]
    fn mqtt_1_5_5_varint_of_five_bytes_is_malformed() {
        let mut b = Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert!(matches!(read_varint(&mut b), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn mqtt_1_5_4_2_string_with_null_is_malformed() {
        let mut b = Bytes::from_static(&[0, 3, b'a', 0, b'b']);
        assert!(read_string(&mut b).is_err());
    }

    #[test]
    fn mqtt_1_5_4_1_invalid_utf8_is_malformed() {
        let mut b = Bytes::from_static(&[0, 2, 0xC3, 0x28]);
        assert!(read_string(&mut b).is_err());
    }
}
