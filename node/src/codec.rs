//! CORE. The one binary codec of the node: LEB128 varints and length-prefixed byte strings,
//! written into a `Vec<u8>` and read by [`Reader`]; used by transport frames, raft commands,
//! placement-driver messages and keyspace records.
//!
//! Invariants: every encoder has a decoder that accepts exactly its output; a decoder never
//! panics on hostile input, it returns [`CodecError`]; [`Reader::finish`] rejects trailing
//! bytes so one value cannot hide another.

/// A value that did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a value.
    #[error("truncated input")]
    Truncated,
    /// A varint was longer than 10 bytes or overflowed 64 bits.
    #[error("varint overflow")]
    VarintOverflow,
    /// A length or count exceeds what the input can hold.
    #[error("length {0} exceeds the remaining input")]
    LengthTooLarge(u64),
    /// An enum tag this version does not know.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// A format version this build does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Bytes were left after the value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `bytes` with a varint length prefix.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Appends an optional byte string: a presence byte, then the string if present.
pub(crate) fn put_opt_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => buf.push(0),
        Some(b) => {
            buf.push(1);
            put_bytes(buf, b);
        }
    }
}

/// A cursor over an encoded value.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Takes everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.buf.split_first().ok_or(CodecError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    /// Reads an unsigned LEB128 varint.
    pub(crate) fn uvarint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && low > 1 {
                return Err(CodecError::VarintOverflow);
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintOverflow)
    }

    /// Reads a count that must fit in the remaining input at `min_item_bytes` per item.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, CodecError> {
        let n = self.uvarint()?;
        if n.saturating_mul(min_item_bytes.max(1) as u64) > self.buf.len() as u64 {
            return Err(CodecError::LengthTooLarge(n));
        }
        Ok(n as usize)
    }

    /// Reads a length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.uvarint()?;
        if len > self.buf.len() as u64 {
            return Err(CodecError::LengthTooLarge(len));
        }
        let (head, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(head)
    }

    /// Reads an optional byte string written by [`put_opt_bytes`].
    pub(crate) fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            t => Err(CodecError::UnknownTag(t)),
        }
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(self) -> Result<(), CodecError> {
        if self.buf.is_empty() { Ok(()) } else { Err(CodecError::TrailingBytes(self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.uvarint(), Ok(v));
            r.finish().unwrap();
        }
    }

    #[test]
    fn varint_rejects_overflow_and_truncation() {
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.uvarint(), Err(CodecError::VarintOverflow));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert_eq!(r.uvarint(), Err(CodecError::VarintOverflow));
        let mut r = Reader::new(&[0x80]);
        assert_eq!(r.uvarint(), Err(CodecError::Truncated));
    }

    #[test]
    fn bytes_reject_oversized_length() {
        let mut buf = Vec::new();
        put_uvarint(&mut buf, 5);
        buf.extend_from_slice(b"abc");
        assert_eq!(Reader::new(&buf).bytes(), Err(CodecError::LengthTooLarge(5)));
    }
}
