//! Session handling micro-benchmarks: the `node::broker::Broker` core driven in-process (no
//! sockets, no tokio), with 10,000 connected vehicles each subscribed to `fleet/{v}/cmd`.
//!
//! - `p2p_publish_qos0` / `p2p_publish_qos1`: a backend publishes to one vehicle; the
//!   delivery is pulled with `poll_woken` / `poll_transmit` (and PUBACKed at QoS 1).
//! - `connect_subscribe_disconnect`: a clean session's whole life.
//! - `persistent_reconnect`: a persistent session detaches and resumes.
//!
//! `cargo bench -p bench --bench session`

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use node::broker::Broker;
use node::broker::auth::StaticUsers;
use node::broker::config::BrokerConfig;
use node::broker::session::ConnId;
use node::mqtt::packet::{
    Connect, Disconnect, Packet, Protocol, PubResp, Publish, QoS, SubOptions, Subscribe,
};

const VEHICLES: u64 = 10_000;

struct Core {
    broker: Broker,
    now: Instant,
    out: Vec<Packet>,
}

impl Core {
    fn new() -> Self {
        let config = BrokerConfig { sys_interval_secs: 0, ..BrokerConfig::default() };
        let now = Instant::now();
        let broker = Broker::new(config, Box::new(StaticUsers::new(true, Vec::new())), now, 1);
        Self { broker, now, out: Vec::new() }
    }

    /// Delivers everything the core wants to send; returns the packets sent.
    fn pump(&mut self) -> usize {
        let mut n = 0;
        while let Some(id) = self.broker.poll_woken() {
            self.out.clear();
            self.broker.poll_transmit(self.now, id, 64, &mut self.out);
            n += self.out.len();
        }
        n
    }

    fn connect(&mut self, client_id: &str, clean: bool) -> ConnId {
        let c = self.broker.open(self.now);
        let connect = Connect {
            protocol: Some(Protocol::V3_1_1),
            clean_start: clean,
            client_id: ByteString::from(client_id),
            ..Connect::default()
        };
        self.broker.handle_packet(self.now, c, Packet::Connect(Box::new(connect)));
        c
    }

    fn subscribe(&mut self, c: ConnId, filter: &str, qos: QoS) {
        let s = Subscribe {
            packet_id: 1,
            filters: vec![(ByteString::from(filter), SubOptions { qos, ..SubOptions::default() })],
            ..Subscribe::default()
        };
        self.broker.handle_packet(self.now, c, Packet::Subscribe(s));
    }

    fn fleet(qos: QoS) -> (Self, Vec<ConnId>, ConnId) {
        let mut core = Self::new();
        let vehicles: Vec<ConnId> = (0..VEHICLES)
            .map(|v| {
                let c = core.connect(&format!("v{v}"), true);
                core.subscribe(c, &format!("fleet/{v}/cmd"), qos);
                c
            })
            .collect();
        let backend = core.connect("backend", true);
        core.pump();
        (core, vehicles, backend)
    }
}

fn p2p(c: &mut Criterion, qos: QoS, name: &str) {
    let (mut core, vehicles, backend) = Core::fleet(qos);
    let topics: Vec<ByteString> = (0..VEHICLES).map(|v| ByteString::from(format!("fleet/{v}/cmd"))).collect();
    let payload = Bytes::from(vec![0u8; 64]);
    let mut g = c.benchmark_group("session_core_10k_vehicles");
    g.throughput(Throughput::Elements(1));
    let mut v = 0usize;
    let mut id = 0u16;
    g.bench_function(name, |b| {
        b.iter(|| {
            v = (v + 7919) % VEHICLES as usize;
            id = id % 60_000 + 1;
            let p = Publish {
                qos,
                topic: topics[v].clone(),
                packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
                payload: payload.clone(),
                ..Publish::default()
            };
            core.broker.handle_packet(core.now, backend, Packet::Publish(p));
            let mut sent = 0;
            while let Some(conn) = core.broker.poll_woken() {
                core.out.clear();
                core.broker.poll_transmit(core.now, conn, 64, &mut core.out);
                for p in core.out.drain(..) {
                    if let Packet::Publish(d) = p {
                        sent += 1;
                        if d.qos == QoS::AtLeastOnce {
                            core.broker.handle_packet(
                                core.now,
                                vehicles[v],
                                Packet::PubAck(PubResp::new(d.packet_id)),
                            );
                        }
                    }
                }
            }
            assert_eq!(sent, 1, "one delivery per publish");
            black_box(sent)
        })
    });
    g.finish();
}

fn sessions(c: &mut Criterion) {
    p2p(c, QoS::AtMostOnce, "p2p_publish_qos0");
    p2p(c, QoS::AtLeastOnce, "p2p_publish_qos1");
    let (mut core, _vehicles, _backend) = Core::fleet(QoS::AtLeastOnce);
    let mut g = c.benchmark_group("session_core_10k_vehicles");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    g.bench_function("connect_subscribe_disconnect", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("x{n}");
            let c = core.connect(&id, true);
            core.subscribe(c, &format!("fleet/{id}/cmd"), QoS::AtLeastOnce);
            core.broker.handle_packet(core.now, c, Packet::Disconnect(Disconnect::default()));
            core.broker.close(core.now, c);
            black_box(core.pump())
        })
    });
    let c0 = core.connect("persistent", false);
    core.subscribe(c0, "fleet/persistent/cmd", QoS::AtLeastOnce);
    core.broker.handle_packet(core.now, c0, Packet::Disconnect(Disconnect::default()));
    core.broker.close(core.now, c0);
    core.pump();
    g.bench_function("persistent_reconnect", |b| {
        b.iter(|| {
            let c = core.connect("persistent", false);
            core.broker.handle_packet(core.now, c, Packet::Disconnect(Disconnect::default()));
            core.broker.close(core.now, c);
            black_box(core.pump())
        })
    });
    g.finish();
}

criterion_group!(benches, sessions);
criterion_main!(benches);
