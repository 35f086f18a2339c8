//! CORE. Zero-copy MQTT 3.1 / 3.1.1 / 5.0 codec.
//!
//! Decoding is check-then-parse: the fixed header is read first and the packet's whole size is
//! compared with the maximum packet size *before* any of its body is buffered, so a hostile
//! length costs nothing. A complete packet is split off the read buffer as one `Bytes`, and
//! every topic, string and payload of the decoded packet is a slice of it.
//!
//! The protocol version is unknown until CONNECT: [`decode`] with `protocol = None` accepts
//! only a CONNECT and takes the version from its protocol level.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::DecodeError;
use super::packet::*;
use super::properties::{Properties, PropertyContext as Ctx};
use super::reason;
use super::wire::{
    read_binary, read_string, read_u8, read_u16, to_string, varint_len, write_binary, write_varint,
};

/// `(fixed header length, whole packet length)` of the first packet in `buf`, if enough bytes
/// are there to tell.
fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, 2 + i + remaining)));
        }
    }
    Err(DecodeError::Malformed("remaining length longer than four bytes"))
}

/// Decodes the first complete packet in `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; then `buf` is untouched. `protocol` is the
/// version negotiated by CONNECT, or `None` before it. `max_packet_size` bounds the whole
/// packet; a larger one fails as soon as its fixed header is read.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Option<Protocol>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if protocol.is_none() && first >> 4 != 1 {
        // Known from the first byte: do not wait for (or buffer) the rest (MQTT-3.1.0-1).
        return Err(DecodeError::Protocol("first packet is not CONNECT"));
    }
    let Some((header_len, size)) = frame_len(buf)? else {
        return Ok(None);
    };
    if size > max_packet_size {
        return Err(DecodeError::TooLarge { size, max: max_packet_size });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header_len);
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    let Some(protocol) = protocol else {
        return decode_connect(frame, flags).map(Some);
    };
    decode_body(packet_type, flags, frame, protocol).map(Some)
}

fn expect_flags(flags: u8, want: u8) -> Result<(), DecodeError> {
    if flags != want {
        return Err(DecodeError::Malformed("reserved fixed header flags are wrong"));
    }
    Ok(())
}

fn nonzero_id(id: u16) -> Result<u16, DecodeError> {
    if id == 0 {
        return Err(DecodeError::Protocol("packet identifier of 0"));
    }
    Ok(id)
}

fn decode_body(packet_type: u8, flags: u8, mut b: Bytes, protocol: Protocol) -> Result<Packet, DecodeError> {
    let v5 = protocol.is_v5();
    let packet = match packet_type {
        1 => return Err(DecodeError::Protocol("second CONNECT on a connection")),
        2 => {
            expect_flags(flags, 0)?;
            Packet::ConnAck(decode_connack(&mut b, v5)?)
        }
        3 => Packet::Publish(decode_publish(flags, &mut b, v5)?),
        4 => Packet::PubAck(decode_pub_resp(flags, 0, &mut b, v5)?),
        5 => Packet::PubRec(decode_pub_resp(flags, 0, &mut b, v5)?),
        6 => Packet::PubRel(decode_pub_resp(flags, 2, &mut b, v5)?),
        7 => Packet::PubComp(decode_pub_resp(flags, 0, &mut b, v5)?),
        8 => {
            expect_flags(flags, 2)?;
            Packet::Subscribe(decode_subscribe(&mut b, v5)?)
        }
        9 => {
            expect_flags(flags, 0)?;
            let packet_id = read_u16(&mut b)?;
            let properties = props(&mut b, v5, Ctx::SubAck)?;
            let reason_codes = b.split_to(b.len()).to_vec();
            Packet::SubAck(SubAck { packet_id, properties, reason_codes })
        }
        10 => {
            expect_flags(flags, 2)?;
            Packet::Unsubscribe(decode_unsubscribe(&mut b, v5)?)
        }
        11 => {
            expect_flags(flags, 0)?;
            let packet_id = read_u16(&mut b)?;
            let properties = props(&mut b, v5, Ctx::UnsubAck)?;
            let reason_codes = if v5 { b.split_to(b.len()).to_vec() } else { Vec::new() };
            Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })
        }
        12 => {
            expect_flags(flags, 0)?;
            Packet::PingReq
        }
        13 => {
            expect_flags(flags, 0)?;
            Packet::PingResp
        }
        14 => {
            expect_flags(flags, 0)?;
            let (reason_code, properties) = reason_and_props(&mut b, v5, Ctx::Disconnect)?;
            Packet::Disconnect(Disconnect { reason_code, properties })
        }
        15 if v5 => {
            expect_flags(flags, 0)?;
            let (reason_code, properties) = reason_and_props(&mut b, v5, Ctx::Auth)?;
            Packet::Auth(Auth { reason_code, properties })
        }
        _ => return Err(DecodeError::Malformed("reserved packet type")),
    };
    if !b.is_empty() {
        return Err(DecodeError::Malformed("bytes left over after the packet"));
    }
    Ok(packet)
}

fn props(b: &mut Bytes, v5: bool, ctx: Ctx) -> Result<Properties, DecodeError> {
    if v5 { Properties::decode(b, ctx) } else { Ok(Properties::default()) }
}

/// DISCONNECT and AUTH: an absent reason code means 0, absent properties mean none.
fn reason_and_props(b: &mut Bytes, v5: bool, ctx: Ctx) -> Result<(u8, Properties), DecodeError> {
    if !v5 || b.is_empty() {
        return Ok((0, Properties::default()));
    }
    let code = read_u8(b)?;
    let properties = if b.is_empty() { Properties::default() } else { Properties::decode(b, ctx)? };
    Ok((code, properties))
}

fn decode_connect(mut b: Bytes, flags: u8) -> Result<Packet, DecodeError> {
    expect_flags(flags, 0)?;
    let name = read_binary(&mut b)?;
    let level = read_u8(&mut b)?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V3_1_1,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V3_1,
        (b"MQTT" | b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocol(l)),
        _ => return Err(DecodeError::Malformed("unknown protocol name")),
    };
    let v5 = protocol.is_v5();
    let connect_flags = read_u8(&mut b)?;
    if connect_flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let clean_start = connect_flags & 0x02 != 0;
    let will_flag = connect_flags & 0x04 != 0;
    let will_qos = (connect_flags >> 3) & 0x03;
    let will_retain = connect_flags & 0x20 != 0;
    let has_password = connect_flags & 0x40 != 0;
    let has_username = connect_flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS or retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS of 3"))?;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive_secs = read_u16(&mut b)?;
    let properties = props(&mut b, v5, Ctx::Connect)?;
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::Protocol("authentication data without a method"));
    }
    let client_id = read_string(&mut b)?;
    let will = if will_flag {
        let properties = props(&mut b, v5, Ctx::Will)?;
        let topic = read_string(&mut b)?;
        let payload = read_binary(&mut b)?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if has_username { Some(read_string(&mut b)?) } else { None };
    let password = if has_password { Some(read_binary(&mut b)?) } else { None };
    if !b.is_empty() {
        return Err(DecodeError::Malformed("bytes left over after CONNECT"));
    }
    Ok(Packet::Connect(Box::new(Connect {
        protocol: Some(protocol),
        clean_start,
        keep_alive_secs,
        properties,
        client_id,
        will,
        username,
        password,
    })))
}

fn decode_connack(b: &mut Bytes, v5: bool) -> Result<ConnAck, DecodeError> {
    let ack_flags = read_u8(b)?;
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags set"));
    }
    let code = read_u8(b)?;
    let reason_code = if v5 { code } else { reason::connack_from_v3(code) };
    let properties = props(b, v5, Ctx::ConnAck)?;
    Ok(ConnAck { session_present: ack_flags & 1 == 1, reason_code, properties })
}

fn decode_publish(flags: u8, b: &mut Bytes, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS of 3"))?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = read_string(b)?;
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { nonzero_id(read_u16(b)?)? };
    let properties = props(b, v5, Ctx::Publish)?;
    let payload = b.split_to(b.len());
    Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
}

fn decode_pub_resp(flags: u8, want: u8, b: &mut Bytes, v5: bool) -> Result<PubResp, DecodeError> {
    expect_flags(flags, want)?;
    let packet_id = read_u16(b)?;
    let (reason_code, properties) = reason_and_props(b, v5, Ctx::PubResp)?;
    Ok(PubResp { packet_id, reason_code, properties })
}

fn decode_subscribe(b: &mut Bytes, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = nonzero_id(read_u16(b)?)?;
    let properties = props(b, v5, Ctx::Subscribe)?;
    let mut filters = Vec::new();
    while !b.is_empty() {
        let filter = read_string(b)?;
        let o = read_u8(b)?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if o & reserved != 0 {
            return Err(DecodeError::Malformed("reserved subscription option bits set"));
        }
        let qos = QoS::from_u8(o & 0x03).ok_or(DecodeError::Malformed("subscription QoS of 3"))?;
        let retain_handling = (o >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling of 3"));
        }
        let opts =
            SubOptions { qos, no_local: o & 0x04 != 0, retain_as_published: o & 0x08 != 0, retain_handling };
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe { packet_id, properties, filters })
}

fn decode_unsubscribe(b: &mut Bytes, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = nonzero_id(read_u16(b)?)?;
    let properties = props(b, v5, Ctx::Unsubscribe)?;
    let mut filters = Vec::new();
    while !b.is_empty() {
        filters.push(read_string(b)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe { packet_id, properties, filters })
}

/// Validates a `Bytes` as a topic string, for callers building packets from raw input.
pub fn topic_from_bytes(raw: Bytes) -> Result<ByteString, DecodeError> {
    to_string(raw)
}

// ---------------------------------------------------------------------------------------
// Encoding

fn props_len(p: &Properties, v5: bool) -> usize {
    if v5 { p.encoded_len() } else { 0 }
}

fn str_len(s: &str) -> usize {
    2 + s.len()
}

/// Remaining length of `packet` encoded for `protocol`.
fn remaining_len(packet: &Packet, protocol: Protocol) -> usize {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Connect(c) => {
            // CONNECT is written in its own protocol (see `encode_connect`), not `protocol`.
            let own = c.protocol.unwrap_or(Protocol::V3_1_1);
            let v5 = own.is_v5();
            let name = if own == Protocol::V3_1 { 6 } else { 4 };
            let mut n = 2 + name + 1 + 1 + 2 + props_len(&c.properties, v5) + str_len(&c.client_id);
            if let Some(w) = &c.will {
                n += props_len(&w.properties, v5) + str_len(&w.topic) + 2 + w.payload.len();
            }
            n += c.username.as_ref().map_or(0, |u| str_len(u));
            n += c.password.as_ref().map_or(0, |p| 2 + p.len());
            n
        }
        Packet::ConnAck(a) => 2 + props_len(&a.properties, v5),
        Packet::Publish(p) => {
            let id = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
            str_len(&p.topic) + id + props_len(&p.properties, v5) + p.payload.len()
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => pub_resp_len(r, v5),
        Packet::Subscribe(s) => {
            2 + props_len(&s.properties, v5) + s.filters.iter().map(|(f, _)| str_len(f) + 1).sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props_len(&s.properties, v5) + s.reason_codes.len(),
        Packet::Unsubscribe(u) => {
            2 + props_len(&u.properties, v5) + u.filters.iter().map(|f| str_len(f)).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            if v5 {
                2 + props_len(&u.properties, v5) + u.reason_codes.len()
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(Disconnect { reason_code, properties })
        | Packet::Auth(Auth { reason_code, properties }) => {
            if !v5 || (*reason_code == 0 && properties.is_empty()) {
                0
            } else if properties.is_empty() {
                1
            } else {
                1 + properties.encoded_len()
            }
        }
    }
}

fn pub_resp_len(r: &PubResp, v5: bool) -> usize {
    if !v5 || (r.reason_code == 0 && r.properties.is_empty()) {
        2
    } else if r.properties.is_empty() {
        3
    } else {
        3 + r.properties.encoded_len()
    }
}

/// Size in bytes of `packet` once encoded for `protocol`, fixed header included.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    let rem = remaining_len(packet, protocol);
    1 + varint_len(rem) + rem
}

fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0x02,
        _ => 0,
    };
    (packet.type_id() << 4) | flags
}

/// Appends `packet` encoded for `protocol` to `buf`.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) {
    let v5 = protocol.is_v5();
    let rem = remaining_len(packet, protocol);
    buf.reserve(1 + varint_len(rem) + rem);
    buf.put_u8(first_byte(packet));
    write_varint(buf, rem);
    match packet {
        Packet::Connect(c) => encode_connect(c, buf),
        Packet::ConnAck(a) => {
            buf.put_u8(u8::from(a.session_present));
            buf.put_u8(if v5 { a.reason_code } else { reason::connack_v3(a.reason_code) });
            if v5 {
                a.properties.encode(buf);
            }
        }
        Packet::Publish(p) => {
            write_binary(buf, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                buf.put_u16(p.packet_id);
            }
            if v5 {
                p.properties.encode(buf);
            }
            buf.put_slice(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            buf.put_u16(r.packet_id);
            let len = pub_resp_len(r, v5);
            if len >= 3 {
                buf.put_u8(r.reason_code);
            }
            if len > 3 {
                r.properties.encode(buf);
            }
        }
        Packet::Subscribe(s) => {
            buf.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(buf);
            }
            for (f, o) in &s.filters {
                write_binary(buf, f.as_bytes());
                let byte = (o.qos as u8)
                    | (u8::from(o.no_local) << 2)
                    | (u8::from(o.retain_as_published) << 3)
                    | (o.retain_handling << 4);
                buf.put_u8(byte);
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(buf);
            }
            buf.put_slice(&s.reason_codes);
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(buf);
            }
            for f in &u.filters {
                write_binary(buf, f.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(buf);
                buf.put_slice(&u.reason_codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { reason_code, properties })
        | Packet::Auth(Auth { reason_code, properties }) => {
            if rem >= 1 {
                buf.put_u8(*reason_code);
            }
            if rem > 1 {
                properties.encode(buf);
            }
        }
    }
}

fn encode_connect(c: &Connect, buf: &mut BytesMut) {
    let protocol = c.protocol.unwrap_or(Protocol::V3_1_1);
    let v5 = protocol.is_v5();
    let name: &[u8] = if protocol == Protocol::V3_1 { b"MQIsdp" } else { b"MQTT" };
    write_binary(buf, name);
    buf.put_u8(protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive_secs);
    if v5 {
        c.properties.encode(buf);
    }
    write_binary(buf, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            w.properties.encode(buf);
        }
        write_binary(buf, w.topic.as_bytes());
        write_binary(buf, &w.payload);
    }
    if let Some(u) = &c.username {
        write_binary(buf, u.as_bytes());
    }
    if let Some(p) = &c.password {
        write_binary(buf, p);
    }
}
