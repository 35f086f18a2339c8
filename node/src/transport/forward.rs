//! CORE. Forwarded MQTT publishes: a node that matched a publish against another node's
//! subscribers sends it there in a [`ForwardBatch`] (frame kind 7 `Forward`, on one of the
//! peer's data streams), and the receiver acknowledges batch ids in kind 8 `ForwardAck`
//! frames on its control stream (see `frame`).
//!
//! ```text
//! batch   := id count msg*                  (id 0: no ack wanted)
//! msg     := topic:bytes (UTF-8) payload:bytes flags:u8 properties:bytes
//!            [count share*]              (if flags has bit 4)
//! share   := group:bytes filter:bytes   (UTF-8 each)
//! flags   := qos (bits 0-1, at most 2) | retain (bit 2) | not plain (bit 3: deliver only
//!            to the shares) | shares follow (bit 4); the other bits are zero
//! acks    := count id*
//! ```
//!
//! Integers are LEB128 varints. Decoding is total: hostile input gives a
//! [`ForwardError`], never a panic, and every count is checked against the remaining input
//! before anything is allocated.

use bytes::Bytes;

use crate::codec::{CodecError, Reader, put_bytes, put_uvarint};

/// Smallest encoded message: three empty strings and the flags byte.
const MSG_BYTES_MIN: usize = 4;
const FLAG_QOS: u8 = 0b0_0011;
const FLAG_RETAIN: u8 = 0b0_0100;
const FLAG_NOT_PLAIN: u8 = 0b0_1000;
const FLAG_SHARES: u8 = 0b1_0000;
const FLAGS_KNOWN: u8 = FLAG_QOS | FLAG_RETAIN | FLAG_NOT_PLAIN | FLAG_SHARES;

/// One forwarded publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardMsg {
    /// The topic name it was published to.
    pub topic: String,
    /// The application message.
    pub payload: Bytes,
    /// Its QoS (0, 1 or 2).
    pub qos: u8,
    /// The RETAIN flag.
    pub retain: bool,
    /// MQTT 5 properties, encoded by the broker; opaque to the transport.
    pub properties: Vec<u8>,
    /// Deliver to the receiver's subscriptions that are not shared (a node row of the
    /// receiver matched).
    pub plain: bool,
    /// Shared subscriptions `(group, filter)` the receiver delivers to one member each of.
    pub shares: Vec<(String, String)>,
}

/// Publishes forwarded together; the receiver acknowledges `id` once it queued them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardBatch {
    /// Chosen by the sender; 0 means no ack is wanted.
    pub id: u64,
    /// The publishes, in order.
    pub messages: Vec<ForwardMsg>,
}

/// Why a forward frame body was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The bytes did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A topic, group or filter is not UTF-8.
    #[error("forwarded topic, group or filter is not UTF-8")]
    Topic,
    /// A flags byte with a QoS above 2 or unknown bits set.
    #[error("forwarded message flags {0:#x} are invalid")]
    Flags(u8),
}

impl ForwardBatch {
    /// Payload bytes of all messages (for metrics).
    pub fn payload_bytes(&self) -> u64 {
        self.messages.iter().map(|m| m.payload.len() as u64).sum()
    }

    /// Appends the batch's encoding to `buf`.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_uvarint(buf, self.id);
        put_uvarint(buf, self.messages.len() as u64);
        for m in &self.messages {
            put_bytes(buf, m.topic.as_bytes());
            put_bytes(buf, &m.payload);
            let mut flags = m.qos & FLAG_QOS;
            if m.retain {
                flags |= FLAG_RETAIN;
            }
            if !m.plain {
                flags |= FLAG_NOT_PLAIN;
            }
            if !m.shares.is_empty() {
                flags |= FLAG_SHARES;
            }
            buf.push(flags);
            put_bytes(buf, &m.properties);
            if !m.shares.is_empty() {
                put_uvarint(buf, m.shares.len() as u64);
                for (group, filter) in &m.shares {
                    put_bytes(buf, group.as_bytes());
                    put_bytes(buf, filter.as_bytes());
                }
            }
        }
    }

    /// Reads a batch written by [`Self::encode`].
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ForwardError> {
        let id = r.uvarint()?;
        let n = r.count(MSG_BYTES_MIN)?;
        let mut messages = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = std::str::from_utf8(r.bytes()?).map_err(|_| ForwardError::Topic)?.to_owned();
            let payload = Bytes::copy_from_slice(r.bytes()?);
            let flags = r.u8()?;
            if flags & !FLAGS_KNOWN != 0 || flags & FLAG_QOS == FLAG_QOS {
                return Err(ForwardError::Flags(flags));
            }
            let properties = r.bytes()?.to_vec();
            let mut shares = Vec::new();
            if flags & FLAG_SHARES != 0 {
                let n = r.count(2)?;
                shares.reserve(n);
                for _ in 0..n {
                    let group = std::str::from_utf8(r.bytes()?).map_err(|_| ForwardError::Topic)?.to_owned();
                    let filter = std::str::from_utf8(r.bytes()?).map_err(|_| ForwardError::Topic)?.to_owned();
                    shares.push((group, filter));
                }
            }
            messages.push(ForwardMsg {
                topic,
                payload,
                qos: flags & FLAG_QOS,
                retain: flags & FLAG_RETAIN != 0,
                properties,
                plain: flags & FLAG_NOT_PLAIN == 0,
                shares,
            });
        }
        Ok(Self { id, messages })
    }
}

/// Appends acknowledged batch ids.
pub(crate) fn encode_acks(buf: &mut Vec<u8>, ids: &[u64]) {
    put_uvarint(buf, ids.len() as u64);
    for id in ids {
        put_uvarint(buf, *id);
    }
}

/// Reads ids written by [`encode_acks`].
pub(crate) fn decode_acks(r: &mut Reader<'_>) -> Result<Vec<u64>, CodecError> {
    let n = r.count(1)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(r.uvarint()?);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::transport::frame::{Frame, LEN_PREFIX_BYTES};

    fn msg() -> impl Strategy<Value = ForwardMsg> {
        (
            ".{0,24}",
            proptest::collection::vec(any::<u8>(), 0..64),
            0u8..=2,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..16),
            any::<bool>(),
            proptest::collection::vec((".{0,8}", ".{0,12}"), 0..3),
        )
            .prop_map(|(topic, payload, qos, retain, properties, plain, shares)| ForwardMsg {
                topic,
                payload: payload.into(),
                qos,
                retain,
                properties,
                plain,
                shares,
            })
    }

    fn batch() -> impl Strategy<Value = ForwardBatch> {
        (any::<u64>(), proptest::collection::vec(msg(), 0..8))
            .prop_map(|(id, messages)| ForwardBatch { id, messages })
    }

    fn frame_round_trip(frame: &Frame) -> Frame {
        let mut buf = Vec::new();
        frame.encode(&mut buf, 1 << 20).expect("encodes");
        Frame::decode(&buf[LEN_PREFIX_BYTES..]).expect("decodes")
    }

    #[test]
    fn bad_flags_topics_and_counts_are_errors() {
        let one = |flags: u8, topic: &[u8]| {
            let mut buf = vec![0, 1];
            put_bytes(&mut buf, topic);
            put_bytes(&mut buf, b"p");
            buf.push(flags);
            buf.push(0);
            ForwardBatch::decode(&mut Reader::new(&buf))
        };
        assert_eq!(one(0b101, b"t").expect("qos 1 retained").messages[0].qos, 1);
        assert_eq!(one(3, b"t"), Err(ForwardError::Flags(3)), "qos 3");
        assert_eq!(one(0x20, b"t"), Err(ForwardError::Flags(0x20)), "unknown bit");
        assert!(!one(0b1000, b"t").expect("not plain").messages[0].plain);
        assert!(one(0b1_0000, b"t").is_err(), "shares announced, none follow");
        assert_eq!(one(0, &[0xff, 0xfe]), Err(ForwardError::Topic));
        // A message count far beyond the input: refused before allocating.
        let huge = [0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            ForwardBatch::decode(&mut Reader::new(&huge)),
            Err(ForwardError::Codec(CodecError::LengthTooLarge(_)))
        ));
        assert!(decode_acks(&mut Reader::new(&[0xff, 0xff, 0x03, 1])).is_err());
    }

    proptest! {
        #[test]
        fn batches_and_acks_round_trip_as_frames(
            b in batch(),
            ids in proptest::collection::vec(any::<u64>(), 0..32),
        ) {
            let payload = b.payload_bytes();
            let f = Frame::Forward(b);
            let back = frame_round_trip(&f);
            prop_assert_eq!(&back, &f);
            if let Frame::Forward(b) = back {
                prop_assert_eq!(b.payload_bytes(), payload);
            }
            let f = Frame::ForwardAck(ids);
            prop_assert_eq!(frame_round_trip(&f), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ForwardBatch::decode(&mut Reader::new(&data));
            let _ = decode_acks(&mut Reader::new(&data));
            let mut framed = vec![1, 7];
            framed.extend_from_slice(&data);
            let _ = Frame::decode(&framed);
            framed[1] = 8;
            let _ = Frame::decode(&framed);
        }

        #[test]
        fn truncated_batches_are_errors(b in batch(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            b.encode(&mut buf);
            let cut = cut.index(buf.len());
            let mut r = Reader::new(&buf[..cut]);
            let whole = ForwardBatch::decode(&mut r).and_then(|_| r.finish().map_err(Into::into));
            prop_assert!(whole.is_err());
        }
    }
}
