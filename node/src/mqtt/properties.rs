//! CORE. MQTT 5.0 properties (section 2.2.2): one struct for every packet type, decoded
//! with the per-packet allow list and the no-duplicates rule enforced.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::DecodeError;
pub use super::user_properties::{UserProperties, UserProperty};
use super::wire::{
    read_binary, read_string, read_u8, read_u16, read_u32, read_varint, varint_len, write_binary,
    write_varint,
};

/// Property identifiers (section 2.2.2.2).
pub mod id {
    /// Payload format indicator.
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Message expiry interval.
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// Content type.
    pub const CONTENT_TYPE: u8 = 0x03;
    /// Response topic.
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Correlation data.
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Subscription identifier.
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Session expiry interval.
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// Assigned client identifier.
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Server keep alive.
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication method.
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Authentication data.
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Request problem information.
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Will delay interval.
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Request response information.
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// Response information.
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// Server reference.
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// Reason string.
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive maximum.
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic alias maximum.
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Topic alias.
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Maximum QoS.
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Retain available.
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// User property.
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum packet size.
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Wildcard subscription available.
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Subscription identifier available.
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Shared subscription available.
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Which packet (or will) a property block belongs to; decides the allowed identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// The will properties inside CONNECT.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResp,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl PropertyContext {
    fn allows(self, pid: u8) -> bool {
        use id::*;
        let list: &[u8] = match self {
            Self::Connect => &[
                SESSION_EXPIRY_INTERVAL,
                RECEIVE_MAXIMUM,
                MAXIMUM_PACKET_SIZE,
                TOPIC_ALIAS_MAXIMUM,
                REQUEST_RESPONSE_INFORMATION,
                REQUEST_PROBLEM_INFORMATION,
                USER_PROPERTY,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
            ],
            Self::Will => &[
                WILL_DELAY_INTERVAL,
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                USER_PROPERTY,
            ],
            Self::ConnAck => &[
                SESSION_EXPIRY_INTERVAL,
                RECEIVE_MAXIMUM,
                MAXIMUM_QOS,
                RETAIN_AVAILABLE,
                MAXIMUM_PACKET_SIZE,
                ASSIGNED_CLIENT_IDENTIFIER,
                TOPIC_ALIAS_MAXIMUM,
                REASON_STRING,
                USER_PROPERTY,
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                SHARED_SUBSCRIPTION_AVAILABLE,
                SERVER_KEEP_ALIVE,
                RESPONSE_INFORMATION,
                SERVER_REFERENCE,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
            ],
            Self::Publish => &[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                TOPIC_ALIAS,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                USER_PROPERTY,
                SUBSCRIPTION_IDENTIFIER,
                CONTENT_TYPE,
            ],
            Self::PubResp | Self::SubAck | Self::UnsubAck => &[REASON_STRING, USER_PROPERTY],
            Self::Subscribe => &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY],
            Self::Unsubscribe => &[USER_PROPERTY],
            Self::Disconnect => &[SESSION_EXPIRY_INTERVAL, REASON_STRING, USER_PROPERTY, SERVER_REFERENCE],
            Self::Auth => &[AUTHENTICATION_METHOD, AUTHENTICATION_DATA, REASON_STRING, USER_PROPERTY],
        };
        list.contains(&pid)
    }
}

/// Every MQTT 5.0 property. Absent properties are `None` (or empty lists).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    /// 0x01: 0 unspecified bytes, 1 UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02: seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: content type.
    pub content_type: Option<ByteString>,
    /// 0x08: response topic.
    pub response_topic: Option<ByteString>,
    /// 0x09: correlation data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: subscription identifiers (several in a PUBLISH to a client, one in SUBSCRIBE).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: session expiry interval in seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: client identifier assigned by the server.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13: keep alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// 0x15: authentication method.
    pub authentication_method: Option<ByteString>,
    /// 0x16: authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17: request problem information (0 or 1).
    pub request_problem_information: Option<u8>,
    /// 0x18: will delay interval in seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19: request response information (0 or 1).
    pub request_response_information: Option<u8>,
    /// 0x1A: response information.
    pub response_information: Option<ByteString>,
    /// 0x1C: server reference.
    pub server_reference: Option<ByteString>,
    /// 0x1F: reason string.
    pub reason_string: Option<ByteString>,
    /// 0x21: receive maximum.
    pub receive_maximum: Option<u16>,
    /// 0x22: topic alias maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: topic alias.
    pub topic_alias: Option<u16>,
    /// 0x24: maximum QoS (0 or 1).
    pub maximum_qos: Option<u8>,
    /// 0x25: retain available (0 or 1).
    pub retain_available: Option<u8>,
    /// 0x26: user properties, in order; the same name may repeat.
    pub user_properties: UserProperties,
    /// 0x27: maximum packet size.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: wildcard subscription available.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: subscription identifiers available.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: shared subscription available.
    pub shared_subscription_available: Option<u8>,
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(value);
    Ok(())
}

fn read_flag(buf: &mut Bytes) -> Result<u8, DecodeError> {
    let v = read_u8(buf)?;
    if v > 1 {
        return Err(DecodeError::Protocol("boolean property other than 0 or 1"));
    }
    Ok(v)
}

impl Properties {
    /// Decodes a property block (length prefix included) for the given packet.
    pub fn decode(buf: &mut Bytes, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = read_varint(buf)? as usize;
        if buf.len() < len {
            return Err(DecodeError::Malformed("property length exceeds the packet"));
        }
        let mut block = buf.split_to(len);
        let mut p = Self::default();
        let mut user = Vec::new();
        while !block.is_empty() {
            let pid = read_varint(&mut block)?;
            let pid = u8::try_from(pid).map_err(|_| DecodeError::Malformed("unknown property"))?;
            if !ctx.allows(pid) {
                return Err(DecodeError::Malformed("property not allowed in this packet"));
            }
            p.decode_one(pid, &mut block, ctx, &mut user)?;
        }
        p.user_properties = user.into();
        Ok(p)
    }

    fn decode_one(
        &mut self,
        pid: u8,
        b: &mut Bytes,
        ctx: PropertyContext,
        user: &mut Vec<UserProperty>,
    ) -> Result<(), DecodeError> {
        use id::*;
        match pid {
            PAYLOAD_FORMAT_INDICATOR => set_once(&mut self.payload_format_indicator, read_flag(b)?),
            MESSAGE_EXPIRY_INTERVAL => set_once(&mut self.message_expiry_interval, read_u32(b)?),
            CONTENT_TYPE => set_once(&mut self.content_type, read_string(b)?),
            RESPONSE_TOPIC => set_once(&mut self.response_topic, read_string(b)?),
            CORRELATION_DATA => set_once(&mut self.correlation_data, read_binary(b)?),
            SUBSCRIPTION_IDENTIFIER => {
                let v = read_varint(b)?;
                if v == 0 {
                    return Err(DecodeError::Protocol("subscription identifier of 0"));
                }
                if ctx == PropertyContext::Subscribe && !self.subscription_identifiers.is_empty() {
                    return Err(DecodeError::Protocol("more than one subscription identifier"));
                }
                self.subscription_identifiers.push(v);
                Ok(())
            }
            SESSION_EXPIRY_INTERVAL => set_once(&mut self.session_expiry_interval, read_u32(b)?),
            ASSIGNED_CLIENT_IDENTIFIER => set_once(&mut self.assigned_client_identifier, read_string(b)?),
            SERVER_KEEP_ALIVE => set_once(&mut self.server_keep_alive, read_u16(b)?),
            AUTHENTICATION_METHOD => set_once(&mut self.authentication_method, read_string(b)?),
            AUTHENTICATION_DATA => set_once(&mut self.authentication_data, read_binary(b)?),
            REQUEST_PROBLEM_INFORMATION => set_once(&mut self.request_problem_information, read_flag(b)?),
            WILL_DELAY_INTERVAL => set_once(&mut self.will_delay_interval, read_u32(b)?),
            REQUEST_RESPONSE_INFORMATION => set_once(&mut self.request_response_information, read_flag(b)?),
            RESPONSE_INFORMATION => set_once(&mut self.response_information, read_string(b)?),
            SERVER_REFERENCE => set_once(&mut self.server_reference, read_string(b)?),
            REASON_STRING => set_once(&mut self.reason_string, read_string(b)?),
            RECEIVE_MAXIMUM => {
                let v = read_u16(b)?;
                if v == 0 {
                    return Err(DecodeError::Protocol("receive maximum of 0"));
                }
                set_once(&mut self.receive_maximum, v)
            }
            TOPIC_ALIAS_MAXIMUM => set_once(&mut self.topic_alias_maximum, read_u16(b)?),
            TOPIC_ALIAS => set_once(&mut self.topic_alias, read_u16(b)?),
            MAXIMUM_QOS => set_once(&mut self.maximum_qos, read_flag(b)?),
            RETAIN_AVAILABLE => set_once(&mut self.retain_available, read_flag(b)?),
            USER_PROPERTY => {
                let k = read_string(b)?;
                let v = read_string(b)?;
                user.push((k, v));
                Ok(())
            }
            MAXIMUM_PACKET_SIZE => {
                let v = read_u32(b)?;
                if v == 0 {
                    return Err(DecodeError::Protocol("maximum packet size of 0"));
                }
                set_once(&mut self.maximum_packet_size, v)
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                set_once(&mut self.wildcard_subscription_available, read_flag(b)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                set_once(&mut self.subscription_identifier_available, read_flag(b)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => set_once(&mut self.shared_subscription_available, read_flag(b)?),
            _ => Err(DecodeError::Malformed("unknown property identifier")),
        }
    }

    /// Length of the property block without its length prefix.
    pub fn body_len(&self) -> usize {
        let s = |o: &Option<ByteString>| o.as_ref().map_or(0, |v| 3 + v.len());
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 3 + v.len());
        let n = |o: bool, w: usize| if o { 1 + w } else { 0 };
        n(self.payload_format_indicator.is_some(), 1)
            + n(self.message_expiry_interval.is_some(), 4)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self.subscription_identifiers.iter().map(|v| 1 + varint_len(*v as usize)).sum::<usize>()
            + n(self.session_expiry_interval.is_some(), 4)
            + s(&self.assigned_client_identifier)
            + n(self.server_keep_alive.is_some(), 2)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + n(self.request_problem_information.is_some(), 1)
            + n(self.will_delay_interval.is_some(), 4)
            + n(self.request_response_information.is_some(), 1)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + n(self.receive_maximum.is_some(), 2)
            + n(self.topic_alias_maximum.is_some(), 2)
            + n(self.topic_alias.is_some(), 2)
            + n(self.maximum_qos.is_some(), 1)
            + n(self.retain_available.is_some(), 1)
            + self.user_properties.iter().map(|(k, v)| 5 + k.len() + v.len()).sum::<usize>()
            + n(self.maximum_packet_size.is_some(), 4)
            + n(self.wildcard_subscription_available.is_some(), 1)
            + n(self.subscription_identifier_available.is_some(), 1)
            + n(self.shared_subscription_available.is_some(), 1)
    }

    /// Length of the block including its variable byte integer length prefix.
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        varint_len(body) + body
    }

    /// Writes the property block, length prefix included.
    pub fn encode(&self, buf: &mut BytesMut) {
        use id::*;
        write_varint(buf, self.body_len());
        let u8p = |buf: &mut BytesMut, pid: u8, v: Option<u8>| {
            if let Some(v) = v {
                buf.put_u8(pid);
                buf.put_u8(v);
            }
        };
        let u16p = |buf: &mut BytesMut, pid: u8, v: Option<u16>| {
            if let Some(v) = v {
                buf.put_u8(pid);
                buf.put_u16(v);
            }
        };
        let u32p = |buf: &mut BytesMut, pid: u8, v: Option<u32>| {
            if let Some(v) = v {
                buf.put_u8(pid);
                buf.put_u32(v);
            }
        };
        let binp = |buf: &mut BytesMut, pid: u8, v: Option<&[u8]>| {
            if let Some(v) = v {
                buf.put_u8(pid);
                write_binary(buf, v);
            }
        };
        u8p(buf, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        u32p(buf, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        binp(buf, CONTENT_TYPE, sp(&self.content_type));
        binp(buf, RESPONSE_TOPIC, sp(&self.response_topic));
        binp(buf, CORRELATION_DATA, self.correlation_data.as_deref());
        for v in &self.subscription_identifiers {
            buf.put_u8(SUBSCRIPTION_IDENTIFIER);
            write_varint(buf, *v as usize);
        }
        u32p(buf, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        binp(buf, ASSIGNED_CLIENT_IDENTIFIER, sp(&self.assigned_client_identifier));
        u16p(buf, SERVER_KEEP_ALIVE, self.server_keep_alive);
        binp(buf, AUTHENTICATION_METHOD, sp(&self.authentication_method));
        binp(buf, AUTHENTICATION_DATA, self.authentication_data.as_deref());
        u8p(buf, REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        u32p(buf, WILL_DELAY_INTERVAL, self.will_delay_interval);
        u8p(buf, REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        binp(buf, RESPONSE_INFORMATION, sp(&self.response_information));
        binp(buf, SERVER_REFERENCE, sp(&self.server_reference));
        binp(buf, REASON_STRING, sp(&self.reason_string));
        u16p(buf, RECEIVE_MAXIMUM, self.receive_maximum);
        u16p(buf, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        u16p(buf, TOPIC_ALIAS, self.topic_alias);
        u8p(buf, MAXIMUM_QOS, self.maximum_qos);
        u8p(buf, RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            buf.put_u8(USER_PROPERTY);
            write_binary(buf, k.as_bytes());
            write_binary(buf, v.as_bytes());
        }
        u32p(buf, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        u8p(buf, WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        u8p(buf, SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifier_available);
        u8p(buf, SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
    }

    /// Drops the properties a receiver may lose when a packet would exceed its maximum
    /// packet size (reason string and user properties, MQTT-3.1.2-25 and friends).
    pub fn strip_diagnostics(&mut self) {
        self.reason_string = None;
        self.user_properties.clear();
    }

    /// A copy whose strings and binary fields own their bytes instead of slicing the
    /// buffer the packet was decoded from.
    pub fn detached(&self) -> Self {
        let s = |o: &Option<ByteString>| o.as_deref().map(ByteString::from);
        let b = |o: &Option<Bytes>| o.as_deref().map(Bytes::copy_from_slice);
        Self {
            content_type: s(&self.content_type),
            response_topic: s(&self.response_topic),
            correlation_data: b(&self.correlation_data),
            assigned_client_identifier: s(&self.assigned_client_identifier),
            authentication_method: s(&self.authentication_method),
            authentication_data: b(&self.authentication_data),
            response_information: s(&self.response_information),
            server_reference: s(&self.server_reference),
            reason_string: s(&self.reason_string),
            user_properties: self
                .user_properties
                .iter()
                .map(|(k, v)| (ByteString::from(&**k), ByteString::from(&**v)))
                .collect(),
            subscription_identifiers: self.subscription_identifiers.clone(),
            ..*self.scalars()
        }
    }

    /// The fixed-size properties only (helper for `detached`).
    fn scalars(&self) -> Box<Self> {
        Box::new(Self {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            session_expiry_interval: self.session_expiry_interval,
            server_keep_alive: self.server_keep_alive,
            request_problem_information: self.request_problem_information,
            will_delay_interval: self.will_delay_interval,
            request_response_information: self.request_response_information,
            receive_maximum: self.receive_maximum,
            topic_alias_maximum: self.topic_alias_maximum,
            topic_alias: self.topic_alias,
            maximum_qos: self.maximum_qos,
            retain_available: self.retain_available,
            maximum_packet_size: self.maximum_packet_size,
            wildcard_subscription_available: self.wildcard_subscription_available,
            subscription_identifier_available: self.subscription_identifier_available,
            shared_subscription_available: self.shared_subscription_available,
            ..Self::default()
        })
    }

    /// True when no property is present.
    pub fn is_empty(&self) -> bool {
        self.body_len() == 0
    }
}

fn sp(o: &Option<ByteString>) -> Option<&[u8]> {
    o.as_deref().map(str::as_bytes)
}
