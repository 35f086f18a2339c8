//! CORE. The header every bench payload starts with: who published it, its sequence number and
//! when it was sent. Receivers use it for latency and for loss/duplicate accounting by
//! `(publisher, seq)`; payloads without it (other clients' traffic) are counted as foreign.
//!
//! Layout, big-endian: magic `FLB1` (4 bytes), publisher (u32), seq (u64), sent time in
//! nanoseconds on the harness clock (u64); the rest of the payload is zero padding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the header; the smallest payload the harness sends.
pub const HEADER_LEN: usize = 24;

const MAGIC: [u8; 4] = *b"FLB1";

/// The identity and send time of one bench message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Global index of the publishing client.
    pub publisher: u32,
    /// Sequence number of the message within its publisher, from 0.
    pub seq: u64,
    /// Harness-clock nanoseconds when the message was encoded for sending.
    pub sent_ns: u64,
}

impl Stamp {
    /// Appends a payload of `len` bytes (at least [`HEADER_LEN`]) carrying this stamp to
    /// `scratch` and splits it off, so consecutive payloads share one allocation.
    pub fn payload(&self, len: usize, scratch: &mut BytesMut) -> Bytes {
        let len = len.max(HEADER_LEN);
        if scratch.capacity() - scratch.len() < len {
            scratch.reserve(len.max(64 * 1024));
        }
        scratch.put_slice(&MAGIC);
        scratch.put_u32(self.publisher);
        scratch.put_u64(self.seq);
        scratch.put_u64(self.sent_ns);
        scratch.put_bytes(0, len - HEADER_LEN);
        scratch.split().freeze()
    }

    /// Reads the stamp at the start of `payload`, if it has one.
    pub fn read(mut payload: &[u8]) -> Option<Self> {
        if payload.len() < HEADER_LEN || payload[..4] != MAGIC {
            return None;
        }
        payload.advance(4);
        let publisher = payload.get_u32();
        let seq = payload.get_u64();
        let sent_ns = payload.get_u64();
        Some(Self { publisher, seq, sent_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_pads() {
        let mut scratch = BytesMut::new();
        let s = Stamp { publisher: 7, seq: 1 << 40, sent_ns: 123_456_789 };
        let p = s.payload(64, &mut scratch);
        assert_eq!(p.len(), 64);
        assert_eq!(Stamp::read(&p), Some(s));
        let short = s.payload(3, &mut scratch);
        assert_eq!(short.len(), HEADER_LEN);
        assert_eq!(Stamp::read(&short), Some(s));
    }

    #[test]
    fn foreign_payloads_have_no_stamp() {
        assert_eq!(Stamp::read(b"hello"), None);
        assert_eq!(Stamp::read(&[0u8; 40]), None);
    }
}
