//! CORE. The broker's journal: every change to durable state as a [`Record`], in order.
//!
//! The core appends records as it changes state; the shell writes them to disk and reports
//! the durable watermark back with `Broker::handle_durable`. Packets that acknowledge a
//! change (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, CONNACK) are held until every record
//! emitted before them is durable, so nothing acknowledged can be lost by a crash.
//!
//! What is journaled: persistent sessions (expiry > 0) and their subscriptions; the queue of
//! QoS 1/2 messages of persistent sessions, where each message is stored once (`Message`,
//! identified by its position in the journal) and sessions hold ids (`Enqueue`, `Assign`,
//! `Released`, `Done`); inbound QoS 2 packet ids awaiting PUBREL; wills of connected
//! clients; when persistent sessions went offline (`Offline`); retained messages (one that
//! is also queued refers to the stored copy, `RetainStored`). Replaying the records in order rebuilds that state
//! (`Broker::restore`); `Broker::snapshot` writes the minimal records for the current state.
//!
//! Encoding: each record is `tag:u8` followed by its fields; strings and bytes are
//! length-prefixed (u16 strings as in MQTT, u32 payloads); messages reuse the MQTT 5
//! PUBLISH property encoding. Decoding validates everything and never panics.
//!
//! Time on disk is wall-clock milliseconds ([`WallClock`] converts from and to the core's
//! `Instant`s), so a message's expiry and an offline session's expiry count the time before
//! a crash and the downtime. Tags 6 and 7 (retained and stored messages with expiry as
//! seconds left at write time) are still read; writers use tags 14 and 15 (an absolute
//! wall-clock deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::message::Message;
use crate::mqtt::error::DecodeError;
use crate::mqtt::packet::{QoS, SubOptions, Will};
use crate::mqtt::properties::{Properties, PropertyContext};
use crate::mqtt::wire::{read_string, read_u8, read_u16, read_u32, write_binary};

/// Identifies a stored message: assigned by the core in journal order.
pub type MsgId = u64;

/// One moment on both clocks: the core's monotonic `now` and the wall clock (milliseconds
/// since the Unix epoch) at the same moment. Records hold `Instant`s; encoding and decoding
/// convert them through the wall clock so they mean the same moment after a restart.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// Monotonic now.
    pub now: Instant,
    /// Wall-clock milliseconds at `now`.
    pub wall_ms: u64,
}

impl WallClock {
    /// A moment on both clocks.
    pub fn new(now: Instant, wall_ms: u64) -> Self {
        Self { now, wall_ms }
    }

    /// Wall-clock milliseconds of `at`.
    pub fn wall_of(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.now) {
            Some(ahead) => self.wall_ms.saturating_add(ahead.as_millis() as u64),
            None => self.wall_ms.saturating_sub(self.now.duration_since(at).as_millis() as u64),
        }
    }

    /// The instant of wall-clock milliseconds `wall_ms` (`now` if it cannot be represented,
    /// which only shortens how long ago it looks).
    pub fn instant_of(&self, wall_ms: u64) -> Instant {
        if wall_ms >= self.wall_ms {
            self.now + Duration::from_millis(wall_ms - self.wall_ms)
        } else {
            self.now.checked_sub(Duration::from_millis(self.wall_ms - wall_ms)).unwrap_or(self.now)
        }
    }
}

/// One change to durable broker state.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A persistent session exists with this expiry (created, resumed or changed).
    Session {
        /// Client identifier.
        client_id: ByteString,
        /// Session Expiry Interval, seconds.
        expiry_secs: u32,
    },
    /// The session ended; everything recorded for it is void.
    SessionEnd {
        /// Client identifier.
        client_id: ByteString,
    },
    /// A subscription of a persistent session was added or replaced.
    Subscribe {
        /// Client identifier.
        client_id: ByteString,
        /// The filter as sent (including `$share/...`).
        filter: ByteString,
        /// Granted options.
        opts: SubOptions,
        /// Subscription identifier.
        sub_id: Option<u32>,
    },
    /// A subscription of a persistent session was removed.
    Unsubscribe {
        /// Client identifier.
        client_id: ByteString,
        /// The filter as sent.
        filter: ByteString,
    },
    /// The will of a client is set (`Some`) or gone (published or discarded).
    Will {
        /// Client identifier.
        client_id: ByteString,
        /// The will, if still pending.
        will: Option<Box<Will>>,
    },
    /// A retained message was set (an empty payload clears the topic).
    Retain {
        /// The message.
        message: Arc<Message>,
    },
    /// The stored message `id` (a `Message` record before this one) is also the retained
    /// message of its topic: one copy of a payload that is both retained and queued.
    RetainStored {
        /// The message.
        id: MsgId,
    },
    /// An application message, stored once for every persistent session it is queued on.
    Message {
        /// Its id.
        id: MsgId,
        /// The message.
        message: Arc<Message>,
    },
    /// A stored message was queued for a persistent session.
    Enqueue {
        /// Client identifier.
        client_id: ByteString,
        /// The message.
        id: MsgId,
        /// QoS of this delivery.
        qos: QoS,
        /// Retain flag to send.
        retain: bool,
        /// Subscription identifiers to send.
        sub_ids: Vec<u32>,
    },
    /// An outbound QoS 2 message got its packet id (recorded before its first send).
    Assign {
        /// Client identifier.
        client_id: ByteString,
        /// The message.
        id: MsgId,
        /// Packet identifier.
        packet_id: u16,
    },
    /// PUBREC arrived for an outbound QoS 2 message.
    Released {
        /// Client identifier.
        client_id: ByteString,
        /// The message.
        id: MsgId,
    },
    /// The session is done with a message (acknowledged, dropped or expired).
    Done {
        /// Client identifier.
        client_id: ByteString,
        /// The message.
        id: MsgId,
    },
    /// An inbound QoS 2 packet id awaits PUBREL (`present`) or was released.
    Qos2In {
        /// Client identifier.
        client_id: ByteString,
        /// Packet identifier.
        packet_id: u16,
        /// Whether it is now awaiting PUBREL.
        present: bool,
    },
    /// A checkpoint starts: everything before is superseded by the records that follow.
    Reset,
    /// A persistent session went offline at `since`: its expiry counts from then, across
    /// restarts. A later `Session` record (it reconnected) cancels it.
    Offline {
        /// Client identifier.
        client_id: ByteString,
        /// When its connection closed.
        since: Instant,
    },
}

mod tag {
    pub(super) const SESSION: u8 = 1;
    pub(super) const SESSION_END: u8 = 2;
    pub(super) const SUBSCRIBE: u8 = 3;
    pub(super) const UNSUBSCRIBE: u8 = 4;
    pub(super) const WILL: u8 = 5;
    pub(super) const RETAIN: u8 = 6;
    pub(super) const MESSAGE: u8 = 7;
    pub(super) const ENQUEUE: u8 = 8;
    pub(super) const ASSIGN: u8 = 9;
    pub(super) const RELEASED: u8 = 10;
    pub(super) const DONE: u8 = 11;
    pub(super) const QOS2_IN: u8 = 12;
    pub(super) const RESET: u8 = 13;
    /// Retained message with an absolute wall-clock expiry.
    pub(super) const RETAIN_AT: u8 = 14;
    /// Stored message with an absolute wall-clock expiry.
    pub(super) const MESSAGE_AT: u8 = 15;
    pub(super) const OFFLINE: u8 = 16;
    pub(super) const RETAIN_STORED: u8 = 17;
}

fn bad(what: &'static str) -> DecodeError {
    DecodeError::Malformed(what)
}

fn read_u64(b: &mut Bytes) -> Result<u64, DecodeError> {
    if b.len() < 8 {
        return Err(bad("record ends inside an eight-byte integer"));
    }
    Ok(b.get_u64())
}

fn read_payload(b: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = read_u32(b)? as usize;
    if b.len() < len {
        return Err(bad("record ends inside a payload"));
    }
    Ok(b.split_to(len))
}

fn put_opts(buf: &mut BytesMut, o: SubOptions) {
    let byte = (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | (o.retain_handling << 4);
    buf.put_u8(byte);
}

fn read_opts(b: &mut Bytes) -> Result<SubOptions, DecodeError> {
    let o = read_u8(b)?;
    Ok(SubOptions {
        qos: QoS::from_u8(o & 3).ok_or(bad("subscription QoS out of range"))?,
        no_local: o & 4 != 0,
        retain_as_published: o & 8 != 0,
        retain_handling: (o >> 4) & 3,
    })
}

/// The wall-clock deadline of an expiry instant, or `u64::MAX` for none.
fn expiry_wall(expires_at: Option<Instant>, clock: &WallClock) -> u64 {
    expires_at.map_or(u64::MAX, |at| clock.wall_of(at).min(u64::MAX - 1))
}

fn put_message(buf: &mut BytesMut, m: &Message, clock: &WallClock) {
    write_binary(buf, m.topic.as_bytes());
    buf.put_u8(m.qos as u8 | (u8::from(m.retain) << 2));
    buf.put_u64(expiry_wall(m.expires_at, clock));
    m.properties.encode(buf);
    buf.put_u32(m.payload.len() as u32);
    buf.put_slice(&m.payload);
}

/// How a message record states its expiry.
#[derive(Clone, Copy)]
enum Expiry {
    /// Tags 6/7 (older writers): `u32` seconds left when written (`u32::MAX`: none); read
    /// as counting from the replay.
    SecondsLeft,
    /// Tags 14/15: `u64` wall-clock deadline in milliseconds (`u64::MAX`: none).
    WallDeadline,
}

fn read_message(b: &mut Bytes, clock: &WallClock, form: Expiry) -> Result<Message, DecodeError> {
    let topic = read_string(b)?;
    let flags = read_u8(b)?;
    let qos = QoS::from_u8(flags & 3).ok_or(bad("message QoS out of range"))?;
    let expires_at = match form {
        Expiry::SecondsLeft => {
            let left = read_u32(b)?;
            (left != u32::MAX).then(|| clock.now + Duration::from_secs(u64::from(left)))
        }
        Expiry::WallDeadline => {
            let deadline = read_u64(b)?;
            (deadline != u64::MAX).then(|| clock.instant_of(deadline))
        }
    };
    let properties = Properties::decode(b, PropertyContext::Publish)?;
    let payload = read_payload(b)?;
    Ok(Message { topic, payload, qos, retain: flags & 4 != 0, properties, expires_at, publisher: None })
}

fn put_will(buf: &mut BytesMut, w: &Will) {
    write_binary(buf, w.topic.as_bytes());
    buf.put_u8(w.qos as u8 | (u8::from(w.retain) << 2));
    w.properties.encode(buf);
    buf.put_u32(w.payload.len() as u32);
    buf.put_slice(&w.payload);
}

fn read_will(b: &mut Bytes) -> Result<Will, DecodeError> {
    let topic = read_string(b)?;
    let flags = read_u8(b)?;
    let qos = QoS::from_u8(flags & 3).ok_or(bad("will QoS out of range"))?;
    let properties = Properties::decode(b, PropertyContext::Will)?;
    let payload = read_payload(b)?;
    Ok(Will { topic, payload, qos, retain: flags & 4 != 0, properties })
}

impl Record {
    /// Appends the encoded record to `buf`. `clock` converts instants to wall-clock time.
    pub fn encode(&self, clock: &WallClock, buf: &mut BytesMut) {
        let id_of = |buf: &mut BytesMut, c: &ByteString| write_binary(buf, c.as_bytes());
        match self {
            Self::Session { client_id, expiry_secs } => {
                buf.put_u8(tag::SESSION);
                id_of(buf, client_id);
                buf.put_u32(*expiry_secs);
            }
            Self::SessionEnd { client_id } => {
                buf.put_u8(tag::SESSION_END);
                id_of(buf, client_id);
            }
            Self::Subscribe { client_id, filter, opts, sub_id } => {
                buf.put_u8(tag::SUBSCRIBE);
                id_of(buf, client_id);
                write_binary(buf, filter.as_bytes());
                put_opts(buf, *opts);
                buf.put_u32(sub_id.unwrap_or(0));
            }
            Self::Unsubscribe { client_id, filter } => {
                buf.put_u8(tag::UNSUBSCRIBE);
                id_of(buf, client_id);
                write_binary(buf, filter.as_bytes());
            }
            Self::Will { client_id, will } => {
                buf.put_u8(tag::WILL);
                id_of(buf, client_id);
                match will {
                    Some(w) => {
                        buf.put_u8(1);
                        put_will(buf, w);
                    }
                    None => buf.put_u8(0),
                }
            }
            Self::Retain { message } => {
                buf.put_u8(tag::RETAIN_AT);
                put_message(buf, message, clock);
            }
            Self::Message { id, message } => {
                buf.put_u8(tag::MESSAGE_AT);
                buf.put_u64(*id);
                put_message(buf, message, clock);
            }
            Self::RetainStored { id } => {
                buf.put_u8(tag::RETAIN_STORED);
                buf.put_u64(*id);
            }
            Self::Offline { client_id, since } => {
                buf.put_u8(tag::OFFLINE);
                id_of(buf, client_id);
                buf.put_u64(clock.wall_of(*since));
            }
            Self::Enqueue { client_id, id, qos, retain, sub_ids } => {
                buf.put_u8(tag::ENQUEUE);
                id_of(buf, client_id);
                buf.put_u64(*id);
                buf.put_u8(*qos as u8 | (u8::from(*retain) << 2));
                buf.put_u16(sub_ids.len().min(usize::from(u16::MAX)) as u16);
                for s in sub_ids.iter().take(usize::from(u16::MAX)) {
                    buf.put_u32(*s);
                }
            }
            Self::Assign { client_id, id, packet_id } => {
                buf.put_u8(tag::ASSIGN);
                id_of(buf, client_id);
                buf.put_u64(*id);
                buf.put_u16(*packet_id);
            }
            Self::Released { client_id, id } | Self::Done { client_id, id } => {
                buf.put_u8(if matches!(self, Self::Released { .. }) { tag::RELEASED } else { tag::DONE });
                id_of(buf, client_id);
                buf.put_u64(*id);
            }
            Self::Reset => buf.put_u8(tag::RESET),
            Self::Qos2In { client_id, packet_id, present } => {
                buf.put_u8(tag::QOS2_IN);
                id_of(buf, client_id);
                buf.put_u16(*packet_id);
                buf.put_u8(u8::from(*present));
            }
        }
    }

    /// Decodes one record that fills `b` exactly. `clock` converts wall-clock time back to
    /// instants.
    pub fn decode(mut b: Bytes, clock: &WallClock) -> Result<Self, DecodeError> {
        let b = &mut b;
        let tag = read_u8(b)?;
        let record = match tag {
            tag::SESSION => Self::Session { client_id: read_string(b)?, expiry_secs: read_u32(b)? },
            tag::SESSION_END => Self::SessionEnd { client_id: read_string(b)? },
            tag::SUBSCRIBE => {
                let client_id = read_string(b)?;
                let filter = read_string(b)?;
                let opts = read_opts(b)?;
                let sub_id = Some(read_u32(b)?).filter(|v| *v != 0);
                Self::Subscribe { client_id, filter, opts, sub_id }
            }
            tag::UNSUBSCRIBE => Self::Unsubscribe { client_id: read_string(b)?, filter: read_string(b)? },
            tag::WILL => {
                let client_id = read_string(b)?;
                let will = match read_u8(b)? {
                    0 => None,
                    1 => Some(Box::new(read_will(b)?)),
                    _ => return Err(bad("will flag out of range")),
                };
                Self::Will { client_id, will }
            }
            tag::RETAIN => Self::Retain { message: Arc::new(read_message(b, clock, Expiry::SecondsLeft)?) },
            tag::RETAIN_AT => {
                Self::Retain { message: Arc::new(read_message(b, clock, Expiry::WallDeadline)?) }
            }
            tag::MESSAGE | tag::MESSAGE_AT => {
                let form = if tag == tag::MESSAGE { Expiry::SecondsLeft } else { Expiry::WallDeadline };
                let id = read_u64(b)?;
                Self::Message { id, message: Arc::new(read_message(b, clock, form)?) }
            }
            tag::RETAIN_STORED => Self::RetainStored { id: read_u64(b)? },
            tag::OFFLINE => {
                let client_id = read_string(b)?;
                Self::Offline { client_id, since: clock.instant_of(read_u64(b)?) }
            }
            tag::ENQUEUE => {
                let client_id = read_string(b)?;
                let id = read_u64(b)?;
                let flags = read_u8(b)?;
                let qos = QoS::from_u8(flags & 3).ok_or(bad("delivery QoS out of range"))?;
                let n = read_u16(b)?;
                let mut sub_ids = Vec::with_capacity(usize::from(n).min(b.len() / 4));
                for _ in 0..n {
                    sub_ids.push(read_u32(b)?);
                }
                Self::Enqueue { client_id, id, qos, retain: flags & 4 != 0, sub_ids }
            }
            tag::ASSIGN => {
                Self::Assign { client_id: read_string(b)?, id: read_u64(b)?, packet_id: read_u16(b)? }
            }
            tag::RELEASED => Self::Released { client_id: read_string(b)?, id: read_u64(b)? },
            tag::DONE => Self::Done { client_id: read_string(b)?, id: read_u64(b)? },
            tag::QOS2_IN => {
                let client_id = read_string(b)?;
                let packet_id = read_u16(b)?;
                let present = match read_u8(b)? {
                    0 => false,
                    1 => true,
                    _ => return Err(bad("QoS 2 flag out of range")),
                };
                Self::Qos2In { client_id, packet_id, present }
            }
            tag::RESET => Self::Reset,
            _ => return Err(bad("unknown journal record tag")),
        };
        if !b.is_empty() {
            return Err(bad("bytes left over after a journal record"));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(now: Instant) -> Arc<Message> {
        let props = Properties {
            user_properties: vec![("k".into(), "v".into())].into(),
            message_expiry_interval: Some(30),
            ..Properties::default()
        };
        Arc::new(Message::new(
            now,
            "a/b".into(),
            Bytes::from_static(b"payload"),
            QoS::ExactlyOnce,
            true,
            props,
            None,
        ))
    }

    #[test]
    fn every_record_round_trips() {
        let now = Instant::now();
        let c: ByteString = "car-1".into();
        let will = Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties { will_delay_interval: Some(5), ..Properties::default() },
        };
        let opts = SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
        };
        let records = vec![
            Record::Session { client_id: c.clone(), expiry_secs: 60 },
            Record::SessionEnd { client_id: c.clone() },
            Record::Subscribe { client_id: c.clone(), filter: "a/+".into(), opts, sub_id: Some(9) },
            Record::Subscribe { client_id: c.clone(), filter: "$share/g/x".into(), opts, sub_id: None },
            Record::Unsubscribe { client_id: c.clone(), filter: "a/+".into() },
            Record::Will { client_id: c.clone(), will: Some(Box::new(will)) },
            Record::Will { client_id: c.clone(), will: None },
            Record::Retain { message: msg(now) },
            Record::Message { id: 42, message: msg(now) },
            Record::Enqueue {
                client_id: c.clone(),
                id: 42,
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: vec![1, 7],
            },
            Record::Assign { client_id: c.clone(), id: 42, packet_id: 7 },
            Record::Released { client_id: c.clone(), id: 42 },
            Record::Done { client_id: c.clone(), id: 42 },
            Record::Qos2In { client_id: c.clone(), packet_id: 3, present: true },
            Record::Reset,
            Record::Offline { client_id: c.clone(), since: now },
            Record::RetainStored { id: 42 },
        ];
        let clock = WallClock::new(now, 1_700_000_000_000);
        for r in records {
            let mut buf = BytesMut::new();
            r.encode(&clock, &mut buf);
            let back = Record::decode(buf.freeze(), &clock).expect("decodes");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn times_on_disk_are_wall_clock_so_downtime_counts() {
        let t0 = Instant::now();
        let before = WallClock::new(t0, 1_700_000_000_000);
        let mut buf = BytesMut::new();
        Record::Message { id: 1, message: msg(t0) }.encode(&before, &mut buf); // expires in 30 s
        // Restarted 20 s of wall-clock time later, on a monotonic clock that started over.
        let t1 = t0 + Duration::from_secs(5);
        let after = WallClock::new(t1, before.wall_ms + 20_000);
        let Record::Message { message, .. } = Record::decode(buf.freeze(), &after).expect("decodes") else {
            panic!("not a message")
        };
        assert_eq!(message.expires_at, Some(t1 + Duration::from_secs(10)));
        let mut buf = BytesMut::new();
        Record::Offline { client_id: "c".into(), since: t0 }.encode(&before, &mut buf);
        let back = Record::decode(buf.freeze(), &after).expect("decodes");
        assert_eq!(back, Record::Offline { client_id: "c".into(), since: t1 - Duration::from_secs(20) });
    }

    #[test]
    fn records_of_the_older_relative_expiry_form_still_decode() {
        let now = Instant::now();
        let clock = WallClock::new(now, 1_700_000_000_000);
        let mut buf = BytesMut::new();
        buf.put_u8(tag::MESSAGE);
        buf.put_u64(7);
        write_binary(&mut buf, b"a/b");
        buf.put_u8(1);
        buf.put_u32(30); // seconds left when written
        Properties::default().encode(&mut buf);
        buf.put_u32(2);
        buf.put_slice(b"hi");
        let Record::Message { id, message } = Record::decode(buf.freeze(), &clock).expect("decodes") else {
            panic!("not a message")
        };
        assert_eq!((id, &message.payload[..]), (7, &b"hi"[..]));
        assert_eq!(message.expires_at, Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn truncated_or_garbage_records_are_errors_not_panics() {
        let now = Instant::now();
        let clock = WallClock::new(now, 1_700_000_000_000);
        let mut buf = BytesMut::new();
        Record::Message { id: 1, message: msg(now) }.encode(&clock, &mut buf);
        let full = buf.freeze();
        for cut in 0..full.len() {
            assert!(Record::decode(full.slice(..cut), &clock).is_err(), "cut at {cut}");
        }
        assert!(Record::decode(Bytes::from_static(&[99, 1, 2]), &clock).is_err());
    }
}
