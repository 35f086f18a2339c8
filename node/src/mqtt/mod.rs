//! CORE. The MQTT wire protocol: packets, properties, reason codes, the codec and topics.
//! No IO, no clock.

pub mod codec;
pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
pub mod user_properties;
pub mod wire;
