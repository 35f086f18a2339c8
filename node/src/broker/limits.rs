//! CORE. Per-packet limits checked before a packet is handled: MQTT 5 user properties,
//! whose count the codec bounds only by the packet size (a 1 MiB packet could carry
//! 200,000 of them, each kept with a stored message).

use crate::mqtt::packet::{Connect, Packet};
use crate::mqtt::properties::Properties;

/// The property blocks of a CONNECT: its own and its will's.
pub(super) fn connect_blocks(c: &Connect) -> [Option<&Properties>; 2] {
    [Some(&c.properties), c.will.as_ref().map(|w| &w.properties)]
}

/// The property blocks of `packet` that a client may fill with user properties.
pub(super) fn property_blocks(packet: &Packet) -> [Option<&Properties>; 2] {
    match packet {
        Packet::Connect(c) => connect_blocks(c),
        Packet::Publish(p) => [Some(&p.properties), None],
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            [Some(&r.properties), None]
        }
        Packet::Subscribe(s) => [Some(&s.properties), None],
        Packet::Unsubscribe(u) => [Some(&u.properties), None],
        Packet::Disconnect(d) => [Some(&d.properties), None],
        Packet::Auth(a) => [Some(&a.properties), None],
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingReq | Packet::PingResp => {
            [None, None]
        }
    }
}

/// Why the property `blocks` of one packet exceed the user property limits (`count_max`
/// properties, `bytes_max` bytes of names and values), or `None` if they do not.
pub(super) fn user_properties_excess(
    blocks: [Option<&Properties>; 2],
    count_max: usize,
    bytes_max: usize,
) -> Option<&'static str> {
    let (mut count, mut bytes) = (0usize, 0usize);
    for props in blocks.into_iter().flatten() {
        count += props.user_properties.len();
        bytes += props.user_properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    }
    if count > count_max {
        Some("too many user properties (max-user-properties)")
    } else if bytes > bytes_max {
        Some("user properties too large (max-user-property-bytes)")
    } else {
        None
    }
}
