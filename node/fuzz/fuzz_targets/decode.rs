//! Fuzzes `node::mqtt::codec::decode` with arbitrary bytes under every starting protocol.
//!
//! Each input is decoded as a connection would: packets one after another until the decoder
//! wants more bytes or fails, switching to the protocol a CONNECT names. Every decoded packet is
//! re-encoded and decoded again; the second decode must give the same packet (catches encoder /
//! decoder mismatches), and `encoded_len` must match what `encode` wrote.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use node::mqtt::codec::{decode, encode, encoded_len};
use node::mqtt::packet::{Packet, Protocol};

/// Large enough never to bind; oversize handling has its own property tests.
const LIMIT: usize = 1 << 20;

fn run(data: &[u8], start: Option<Protocol>) {
    let mut buf = BytesMut::from(data);
    let mut protocol = start;
    loop {
        let before = buf.len();
        let packet = match decode(&mut buf, protocol, LIMIT) {
            Ok(Some(packet)) => packet,
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return;
            }
            Err(_) => return,
        };
        assert!(buf.len() < before, "a packet was decoded from no bytes");
        if let Packet::Connect(c) = &packet {
            protocol = c.protocol;
        }
        let version = protocol.expect("only CONNECT decodes before the protocol is known");

        let mut again = BytesMut::new();
        encode(&packet, version, &mut again);
        assert_eq!(again.len(), encoded_len(&packet, version), "encoded_len disagrees with encode");
        let first_protocol = if matches!(packet, Packet::Connect(_)) { None } else { Some(version) };
        match decode(&mut again, first_protocol, usize::MAX) {
            Ok(Some(second)) => assert_eq!(second, packet, "re-encoded packet decodes differently"),
            other => panic!("re-encoded {packet:?} does not decode: {other:?}"),
        }
        assert!(again.is_empty(), "re-encoding left {} stray bytes", again.len());
    }
}

fuzz_target!(|data: &[u8]| {
    for start in [None, Some(Protocol::V3_1), Some(Protocol::V3_1_1), Some(Protocol::V5)] {
        run(data, start);
    }
});
