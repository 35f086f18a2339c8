//! CORE. Why a byte stream is not a valid MQTT packet, with the reason code the spec names.

use super::reason;

/// A decoding failure. Needing more bytes is not an error (`Ok(None)` from the decoder).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes violate the packet grammar (reason code 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule (reason code 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The whole packet exceeds the maximum packet size (reason code 0x95).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    TooLarge {
        /// Size of the whole packet, fixed header included.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// CONNECT names a protocol level or name this broker does not speak (reason code 0x84).
    #[error("unsupported protocol name or level {0}")]
    UnsupportedProtocol(u8),
}

impl DecodeError {
    /// The MQTT 5.0 reason code to send in CONNACK or DISCONNECT.
    pub fn reason_code(&self) -> u8 {
        match self {
            Self::Malformed(_) => reason::MALFORMED_PACKET,
            Self::Protocol(_) => reason::PROTOCOL_ERROR,
            Self::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            Self::UnsupportedProtocol(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}
