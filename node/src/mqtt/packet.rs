//! CORE. The MQTT control packets of versions 3.1, 3.1.1 and 5.0 as plain values.
//!
//! Strings and binary fields are `ByteString`/`Bytes` slices of the buffer a packet was
//! decoded from, so decoding copies no topic or payload. One [`Packet`] type serves every
//! protocol version: fields a version lacks (properties, reason codes in 3.1.1 acks) are left
//! at their defaults and ignored by the encoder for that version.

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::Properties;

/// The protocol level carried in CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl Protocol {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// True for MQTT 5.0, the only version with properties and reason codes everywhere.
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service of a message or subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two-bit QoS value; 3 is not a QoS.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Any MQTT control packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// CONNECT (boxed: large and rare).
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubResp),
    /// PUBREC.
    PubRec(PubResp),
    /// PUBREL.
    PubRel(PubResp),
    /// PUBCOMP.
    PubComp(PubResp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet type number of the fixed header (1..=15).
    pub fn type_id(&self) -> u8 {
        match self {
            Self::Connect(_) => 1,
            Self::ConnAck(_) => 2,
            Self::Publish(_) => 3,
            Self::PubAck(_) => 4,
            Self::PubRec(_) => 5,
            Self::PubRel(_) => 6,
            Self::PubComp(_) => 7,
            Self::Subscribe(_) => 8,
            Self::SubAck(_) => 9,
            Self::Unsubscribe(_) => 10,
            Self::UnsubAck(_) => 11,
            Self::PingReq => 12,
            Self::PingResp => 13,
            Self::Disconnect(_) => 14,
            Self::Auth(_) => 15,
        }
    }
}

/// CONNECT: the first packet of every connection.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Connect {
    /// Protocol version the client speaks.
    pub protocol: Option<Protocol>,
    /// Clean session (3.1.1) or clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive_secs: u16,
    /// CONNECT properties (5.0).
    pub properties: Properties,
    /// Client identifier; may be empty.
    pub client_id: ByteString,
    /// The will message, if the will flag is set.
    pub will: Option<Will>,
    /// User name, if the flag is set.
    pub username: Option<ByteString>,
    /// Password, if the flag is set.
    pub password: Option<Bytes>,
}

/// A will message carried in CONNECT.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Will {
    /// Will topic.
    pub topic: ByteString,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties,
}

/// CONNACK.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// Reason code (5.0) or return code (3.x; the encoder maps it).
    pub reason_code: u8,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Publish {
    /// Duplicate delivery flag.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; may be empty in 5.0 when a topic alias is present.
    pub topic: ByteString,
    /// Packet identifier; 0 for QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PubResp {
    /// Packet identifier of the flow.
    pub packet_id: u16,
    /// Reason code (5.0); 0 is success.
    pub reason_code: u8,
    /// Properties (5.0).
    pub properties: Properties,
}

impl PubResp {
    /// A success response with no properties.
    pub fn new(packet_id: u16) -> Self {
        Self { packet_id, reason_code: 0, properties: Properties::default() }
    }

    /// A response with a reason code.
    pub fn with_reason(packet_id: u16, reason_code: u8) -> Self {
        Self { packet_id, reason_code, properties: Properties::default() }
    }
}

/// Subscription options of one SUBSCRIBE entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Maximum QoS requested.
    pub qos: QoS,
    /// No local (5.0): never deliver this client's own publications.
    pub no_local: bool,
    /// Retain as published (5.0): keep the retain flag when forwarding.
    pub retain_as_published: bool,
    /// Retain handling (5.0): 0 send retained, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (5.0): subscription identifier and user properties.
    pub properties: Properties,
    /// Topic filters with their options, in packet order.
    pub filters: Vec<(ByteString, SubOptions)>,
}

/// SUBACK.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One reason code per filter (granted QoS, or an error code >= 0x80).
    pub reason_codes: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// Topic filters to remove.
    pub filters: Vec<ByteString>,
}

/// UNSUBACK.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UnsubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One reason code per filter (5.0 only; empty for 3.x).
    pub reason_codes: Vec<u8>,
}

/// DISCONNECT.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Disconnect {
    /// Reason code (5.0); 0 is a normal disconnection.
    pub reason_code: u8,
    /// Properties (5.0).
    pub properties: Properties,
}

/// AUTH (5.0).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Auth {
    /// Reason code: 0x00 success, 0x18 continue, 0x19 re-authenticate.
    pub reason_code: u8,
    /// Properties: authentication method and data.
    pub properties: Properties,
}
