//! Codec micro-benchmarks: encode and decode a PUBLISH with a 64-byte payload, alone and as a
//! buffer of 1,000 back-to-back frames (what one socket read hands the decoder under load).
//!
//! `cargo bench -p bench --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use node::mqtt::codec::{decode, encode};
use node::mqtt::packet::{Packet, Protocol, Publish, QoS};

const MAX_PACKET: usize = 1 << 20;

fn publish() -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "fleet/123456/cmd".into(),
        packet_id: 42,
        payload: Bytes::from(vec![7u8; 64]),
        ..Publish::default()
    })
}

fn codec(c: &mut Criterion) {
    for (name, proto) in [("3.1.1", Protocol::V3_1_1), ("5", Protocol::V5)] {
        let p = publish();
        let mut one = BytesMut::new();
        encode(&p, proto, &mut one);
        let one = one.freeze();
        let mut many = BytesMut::new();
        for _ in 0..1000 {
            encode(&p, proto, &mut many);
        }
        let many = many.freeze();

        let mut g = c.benchmark_group(format!("publish_64B/mqtt{name}"));
        g.throughput(Throughput::Elements(1));
        let mut buf = BytesMut::with_capacity(4096);
        g.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(&p), proto, &mut buf);
                black_box(buf.len())
            })
        });
        g.bench_function("decode", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&one[..]),
                |buf| black_box(decode(buf, Some(proto), MAX_PACKET)),
                BatchSize::SmallInput,
            )
        });
        g.finish();

        let mut g = c.benchmark_group(format!("publish_64B_x1000/mqtt{name}"));
        g.throughput(Throughput::Elements(1000));
        g.bench_function("decode", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&many[..]),
                |buf| {
                    let mut n = 0;
                    while let Ok(Some(p)) = decode(buf, Some(proto), MAX_PACKET) {
                        black_box(&p);
                        n += 1;
                    }
                    assert_eq!(n, 1000);
                },
                BatchSize::SmallInput,
            )
        });
        let mut buf = BytesMut::with_capacity(many.len());
        g.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..1000 {
                    encode(black_box(&p), proto, &mut buf);
                }
                black_box(buf.len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
