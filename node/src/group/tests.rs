//! Unit tests of the group core through a tiny synchronous three-replica network: routing
//! errors as values, the state machine through raft, lease and ReadIndex reads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

struct Net {
    peers: BTreeMap<NodeId, GroupPeer<MemLog>>,
    responses: Vec<Response>,
    now: Instant,
    sent: usize,
}

impl Net {
    fn new(desc: &RangeDescriptor) -> Self {
        let logger = raft_logger();
        let cfg = PeerConfig { hibernate_after_ticks: 0, ..PeerConfig::default() };
        let peers = desc
            .voters
            .iter()
            .map(|&n| {
                let state = PersistedState::bootstrap(desc);
                let peer = GroupPeer::new(&cfg, n, desc.id, MemLog::new(state.clone()), state, n, &logger);
                (n, peer.expect("peer"))
            })
            .collect();
        Self { peers, responses: Vec::new(), now: Instant::now(), sent: 0 }
    }

    /// Runs readies and delivers messages until quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for p in self.peers.values_mut() {
                while let Some(task) = p.ready() {
                    p.log_mut().apply(&task);
                    p.on_persisted(task.ready_number);
                }
                msgs.extend(p.take_messages());
                self.responses.extend(p.take_responses());
            }
            if msgs.is_empty() {
                return;
            }
            self.sent += msgs.len();
            for m in msgs {
                let to = m.to;
                let _ = self.peers.get_mut(&to).expect("peer").step(m);
            }
        }
        panic!("network did not settle");
    }

    fn elect(&mut self, n: NodeId) {
        self.peers.get_mut(&n).expect("peer").campaign().expect("campaign");
        self.settle();
        assert!(self.peers[&n].is_leader());
    }

    fn peer(&mut self, n: NodeId) -> &mut GroupPeer<MemLog> {
        self.peers.get_mut(&n).expect("peer")
    }

    fn take(&mut self, request_id: u64) -> Result<Outcome, RequestError> {
        let i = self.responses.iter().position(|r| r.request_id == request_id).expect("response");
        self.responses.remove(i).result
    }
}

fn desc() -> RangeDescriptor {
    RangeDescriptor::new(9, b"b".to_vec(), b"m".to_vec(), &[1, 2, 3])
}

fn write(request_id: u64, epoch: Epoch, key: &str, value: &str) -> WriteRequest {
    WriteRequest { request_id, epoch, command: Command::Put { key: key.into(), value: value.into() } }
}

#[test]
fn routing_errors_are_values() {
    let d = desc();
    let mut net = Net::new(&d);
    net.elect(2);
    let now = net.now;
    assert_eq!(
        net.peer(1).propose(now, write(1, d.epoch, "c", "x")),
        Err(RequestError::NotLeader { leader_hint: Some(2) })
    );
    let stale = Epoch { version: 0, conf_ver: 1 };
    assert_eq!(
        net.peer(2).propose(now, write(2, stale, "c", "x")),
        Err(RequestError::EpochNotMatch { current: vec![d.clone()] })
    );
    assert!(matches!(
        net.peer(2).propose(now, write(3, d.epoch, "z", "x")),
        Err(RequestError::KeyNotInRange { group: 9, .. })
    ));
    // conf_ver is not checked for writes.
    let other_conf = Epoch { version: 1, conf_ver: 7 };
    net.peer(2).propose(now, write(4, other_conf, "c", "x")).expect("propose");
    net.settle();
    assert_eq!(net.take(4), Ok(Outcome::Written));
}

#[test]
fn state_machine_applies_identically_and_scans_the_range() {
    let d = desc();
    let mut net = Net::new(&d);
    net.elect(1);
    let now = net.now;
    for (i, k) in ["c", "d", "e"].iter().enumerate() {
        net.peer(1).propose(now, write(i as u64, d.epoch, k, k)).expect("propose");
    }
    let cas = Command::CompareAndSet { key: b"d".to_vec(), expected: Some(b"d".to_vec()), new: None };
    net.peer(1).propose(now, WriteRequest { request_id: 10, epoch: d.epoch, command: cas }).expect("cas");
    net.settle();
    assert_eq!(net.take(10), Ok(Outcome::Cas { succeeded: true, previous: Some(b"d".to_vec()) }));
    let digests: Vec<u64> = net.peers.values().map(|p| p.kv().digest()).collect();
    assert!(digests.iter().all(|&x| x == digests[0]));
    let scan = Query::Scan { start: b"b".to_vec(), end: Vec::new(), limit: 10 };
    let req = ReadRequest { request_id: 11, epoch: d.epoch, query: scan, policy: ReadPolicy::ReadIndex };
    net.peer(1).read(now, req).expect("read");
    net.settle();
    let rows = vec![(b"c".to_vec(), b"c".to_vec()), (b"e".to_vec(), b"e".to_vec())];
    assert_eq!(net.take(11), Ok(Outcome::Rows(rows)));
    let outside = Query::Scan { start: b"a".to_vec(), end: b"c".to_vec(), limit: 10 };
    let req = ReadRequest { request_id: 12, epoch: d.epoch, query: outside, policy: ReadPolicy::Lease };
    assert!(matches!(net.peer(1).read(now, req), Err(RequestError::KeyNotInRange { .. })));
}

#[test]
fn lease_reads_are_local_until_the_lease_ends_or_a_transfer_starts() {
    let d = desc();
    let mut net = Net::new(&d);
    net.elect(1);
    let now = net.now;
    net.peer(1).propose(now, write(1, d.epoch, "c", "1")).expect("propose");
    net.settle();
    assert!(net.peer(1).lease_valid(now), "a committed proposal renews the lease");
    let get = |id| ReadRequest {
        request_id: id,
        epoch: d.epoch,
        query: Query::Get { key: b"c".to_vec() },
        policy: ReadPolicy::Lease,
    };
    let sent = net.sent;
    net.peer(1).read(now, get(2)).expect("read");
    net.settle();
    assert_eq!(net.take(2), Ok(Outcome::Value(Some(b"1".to_vec()))));
    assert_eq!(net.sent, sent, "a lease read sends nothing");
    let later = now + Duration::from_secs(2);
    assert!(!net.peer(1).lease_valid(later), "the lease is shorter than an election timeout");
    net.peer(1).read(later, get(3)).expect("read");
    net.settle();
    assert_eq!(net.take(3), Ok(Outcome::Value(Some(b"1".to_vec()))));
    assert!(net.sent > sent, "an expired lease falls back to ReadIndex");
    assert!(net.peer(1).lease_valid(later), "which renews the lease");
    net.peer(1).transfer_leader(d.epoch, 2).expect("transfer");
    assert!(!net.peer(1).lease_valid(later), "no lease once a transfer started");
    net.settle();
    assert!(net.peers[&2].is_leader());
}

#[test]
fn removed_replica_destroys_its_data() {
    let d = desc();
    let mut net = Net::new(&d);
    net.elect(1);
    let now = net.now;
    assert!(matches!(
        net.peer(1).propose_conf_change(now, 1, d.epoch, &[PeerChange::Remove(1)]),
        Err(RequestError::AdminRejected(_))
    ));
    net.peer(1).propose_conf_change(now, 2, d.epoch, &[PeerChange::Remove(3)]).expect("remove");
    net.settle();
    let after = match net.take(2) {
        Ok(Outcome::ConfChanged(desc)) => desc,
        other => panic!("{other:?}"),
    };
    assert_eq!(after.voters, vec![1, 2]);
    assert_eq!(after.epoch.conf_ver, 2);
    assert!(net.peers[&3].is_removed());
    assert!(net.peers[&3].log().is_destroyed());
    // A second change with the old epoch is refused.
    assert!(matches!(
        net.peer(1).propose_conf_change(now, 3, d.epoch, &[PeerChange::AddLearner(4)]),
        Err(RequestError::EpochNotMatch { .. })
    ));
}

#[test]
fn requested_checkpoint_compacts_an_idle_log() {
    let d = desc();
    let mut net = Net::new(&d);
    net.elect(1);
    let now = net.now;
    for i in 0..5 {
        net.peer(1).propose(now, write(i, d.epoch, "c", "v")).expect("propose");
    }
    net.settle();
    let p = net.peer(2);
    assert!(!p.has_ready());
    let (applied, _) = p.storage().applied();
    assert_eq!(p.storage().truncated_index(), INIT_INDEX);
    p.request_checkpoint();
    assert!(p.has_ready());
    let task = p.ready().expect("a checkpoint-only task");
    assert!(task.entries.is_empty() && task.hard_state.is_none());
    assert_eq!(task.checkpoint.as_ref().map(|c| c.get_metadata().index), Some(applied));
    p.log_mut().apply(&task);
    p.on_persisted(task.ready_number);
    assert_eq!(p.storage().truncated_index(), applied);
    assert_eq!(raft::Storage::first_index(p.storage()).expect("first"), applied + 1);
    assert!(!p.has_ready());
}

/// A snapshot whose data does not decode (a corrupt or hostile peer) is refused with an
/// error before raft accepts it: no panic, and the replica keeps its state.
#[test]
fn undecodable_snapshot_is_refused_before_raft_sees_it() {
    let d = desc();
    let mut net = Net::new(&d);
    net.elect(1);
    let applied_before = net.peer(2).status().applied;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    m.from = 1;
    m.to = 2;
    m.term = net.peer(1).status().term;
    let mut snap = raft::eraftpb::Snapshot::default();
    snap.mut_metadata().index = applied_before + 100;
    snap.mut_metadata().term = m.term;
    snap.mut_metadata().mut_conf_state().voters = d.voters.clone();
    snap.data = vec![0xff, 1, 2, 3].into();
    m.set_snapshot(snap);
    let msg = GroupMessage { group_id: d.id, from: 1, to: 2, body: MessageBody::Raft(m) };
    assert!(matches!(net.peer(2).step(msg), Err(GroupError::Codec(_))));
    while let Some(task) = net.peer(2).ready() {
        let n = task.ready_number;
        net.peer(2).log_mut().apply(&task);
        net.peer(2).on_persisted(n);
    }
    assert_eq!(net.peer(2).status().applied, applied_before);
}

/// A committed conf-change entry whose data holds a protobuf group (which rust-protobuf 2
/// would skip, applying the change) is refused at apply, before the parser sees it.
#[test]
fn conf_change_entry_with_a_group_wire_type_is_refused_at_apply() {
    use protobuf::Message as _;
    use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};

    let d = desc();
    let mut net = Net::new(&d);
    net.elect(1);
    let mut v1 = ConfChange { node_id: 4, ..ConfChange::default() };
    v1.set_change_type(ConfChangeType::AddLearnerNode);
    let mut single = ConfChangeSingle { node_id: 4, ..ConfChangeSingle::default() };
    single.set_change_type(ConfChangeType::AddLearnerNode);
    let v2 = ConfChangeV2 { changes: vec![single].into(), ..ConfChangeV2::default() };
    let empty_group = [0xa3, 0x06, 0xa4, 0x06]; // field 100: START_GROUP, END_GROUP
    for (entry_type, mut data) in [
        (EntryType::EntryConfChange, v1.write_to_bytes().expect("v1")),
        (EntryType::EntryConfChangeV2, v2.write_to_bytes().expect("v2")),
    ] {
        data.extend(empty_group);
        let parses = match entry_type {
            EntryType::EntryConfChange => ConfChange::parse_from_bytes(&data).is_ok(),
            _ => ConfChangeV2::parse_from_bytes(&data).is_ok(),
        };
        assert!(parses, "the parser alone accepts it");
        let mut entry = Entry { data: data.into(), ..Entry::default() };
        entry.set_entry_type(entry_type);
        let refused = net.peer(1).apply_conf_change_entry(&entry);
        assert!(matches!(refused, Err(RequestError::AdminRejected(_))), "{entry_type:?}: {refused:?}");
        assert!(!net.peer(1).desc().has_member(4));
    }
}

#[test]
fn match_queries_return_route_rows_written_with_put() {
    use crate::cluster::keys::{FAMILY_ROUTES, prefix};
    use crate::cluster::route_keys::{NodeRow, node_row_key};
    let d = RangeDescriptor::new(7, vec![FAMILY_ROUTES], vec![FAMILY_ROUTES + 1], &[1, 2, 3]);
    let mut net = Net::new(&d);
    net.elect(1);
    let now = net.now;
    let row = |f: &str, node| {
        (node_row_key(b"t", f, node).unwrap(), NodeRow { incarnation: 1, max_qos: 1 }.encode())
    };
    let rows = [row("a/+", 2), row("a/#", 3), row("b", 2), row("#", 1)];
    for (i, (key, value)) in rows.iter().enumerate() {
        let command = Command::Put { key: key.clone(), value: value.clone() };
        net.peer(1)
            .propose(now, WriteRequest { request_id: i as u64, epoch: d.epoch, command })
            .expect("put");
    }
    net.settle();
    let query = Query::Match {
        prefix: prefix(FAMILY_ROUTES, b"t").unwrap(),
        topics: vec!["a/x".into(), "b".into(), "$x".into()],
        limit: 10,
    };
    let mut want = vec![
        vec![rows[0].clone(), rows[1].clone(), rows[3].clone()],
        vec![rows[2].clone(), rows[3].clone()],
        vec![],
    ];
    for (id, policy) in [(10, ReadPolicy::Lease), (11, ReadPolicy::ReadIndex)] {
        let req = ReadRequest { request_id: id, epoch: d.epoch, query: query.clone(), policy };
        net.peer(1).read(now, req).expect("read");
        net.settle();
        let Ok(Outcome::Matched(mut got)) = net.take(id) else { panic!("a match answer") };
        for (g, w) in got.iter_mut().zip(&mut want) {
            g.sort();
            w.sort();
        }
        assert_eq!(got, want);
    }
    let req = ReadRequest { request_id: 12, epoch: d.epoch, query: query.clone(), policy: ReadPolicy::Lease };
    assert_eq!(net.peer(2).read(now, req), Err(RequestError::NotLeader { leader_hint: Some(1) }));
    let many =
        Query::Match { prefix: Vec::new(), topics: vec![String::new(); MATCH_TOPICS_MAX + 1], limit: 1 };
    let req = ReadRequest { request_id: 13, epoch: d.epoch, query: many, policy: ReadPolicy::Lease };
    assert!(matches!(net.peer(1).read(now, req), Err(RequestError::Malformed(_))));
    // A range never answers with keys outside itself. Key order: `#`, `a/#`, `a/+`, `b`;
    // cut between `a/#` and `a/+`.
    let kv = net.peers[&1].kv();
    let cut = node_row_key(b"t", "a/#", 4).unwrap();
    let Outcome::Matched(left) = kv.query(&query, &d.start, &cut) else { panic!("a match answer") };
    let Outcome::Matched(right) = kv.query(&query, &cut, &d.end) else { panic!("a match answer") };
    assert_eq!(left, vec![vec![rows[3].clone(), rows[1].clone()], vec![rows[3].clone()], vec![]]);
    assert_eq!(right, vec![vec![rows[0].clone()], vec![rows[2].clone()], vec![]]);
}
