//! Property tests of the eraftpb wire scan: every message rust-protobuf serializes is
//! accepted, a group wire type at any level the parser reaches is refused, garbage never
//! panics, and deep group nesting is refused without recursion.

use proptest::prelude::*;
use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, Message, MessageType, Snapshot,
};

use super::*;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn tag(field: u32, wire_type: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    put_varint(&mut buf, u64::from(field) << 3 | u64::from(wire_type));
    buf
}

/// A length-delimited field.
fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
    let mut buf = tag(field, WIRE_LEN);
    put_varint(&mut buf, body.len() as u64);
    buf.extend_from_slice(body);
    buf
}

fn varint_field(field: u32, v: u64) -> Vec<u8> {
    let mut buf = tag(field, WIRE_VARINT);
    put_varint(&mut buf, v);
    buf
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..24)
}

fn change_type() -> impl Strategy<Value = ConfChangeType> {
    prop_oneof![
        Just(ConfChangeType::AddNode),
        Just(ConfChangeType::RemoveNode),
        Just(ConfChangeType::AddLearnerNode)
    ]
}

fn conf_change() -> impl Strategy<Value = ConfChange> {
    (any::<u64>(), change_type(), any::<u64>(), bytes()).prop_map(|(id, t, node_id, context)| {
        let mut cc = ConfChange { id, node_id, context: context.into(), ..ConfChange::default() };
        cc.set_change_type(t);
        cc
    })
}

fn conf_change_v2() -> impl Strategy<Value = ConfChangeV2> {
    let single = (change_type(), any::<u64>()).prop_map(|(t, node_id)| {
        let mut s = ConfChangeSingle { node_id, ..ConfChangeSingle::default() };
        s.set_change_type(t);
        s
    });
    let transition = prop_oneof![
        Just(ConfChangeTransition::Auto),
        Just(ConfChangeTransition::Implicit),
        Just(ConfChangeTransition::Explicit)
    ];
    (transition, proptest::collection::vec(single, 0..4), bytes()).prop_map(|(t, changes, context)| {
        let mut cc =
            ConfChangeV2 { changes: changes.into(), context: context.into(), ..ConfChangeV2::default() };
        cc.set_transition(t);
        cc
    })
}

/// Entries of every type; a conf-change entry's data is the serialized conf change, a
/// normal entry's any bytes (group-looking bytes included: they are opaque).
fn entry() -> impl Strategy<Value = Entry> {
    let data = prop_oneof![
        bytes().prop_map(|d| (EntryType::EntryNormal, d)),
        conf_change().prop_map(|cc| (EntryType::EntryConfChange, cc.write_to_bytes().expect("cc"))),
        conf_change_v2().prop_map(|cc| (EntryType::EntryConfChangeV2, cc.write_to_bytes().expect("cc"))),
    ];
    (data, any::<u64>(), any::<u64>(), bytes(), any::<bool>()).prop_map(
        |((t, data), term, index, context, sync_log)| {
            let mut e = Entry {
                term,
                index,
                data: data.into(),
                context: context.into(),
                sync_log,
                ..Entry::default()
            };
            e.set_entry_type(t);
            e
        },
    )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    let ids = || proptest::collection::vec(any::<u64>(), 0..5);
    (bytes(), any::<u64>(), any::<u64>(), ids(), ids(), ids(), ids(), any::<bool>()).prop_map(
        |(data, index, term, voters, learners, voters_outgoing, learners_next, auto_leave)| {
            let conf_state = ConfState {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
                ..ConfState::default()
            };
            let mut s = Snapshot { data: data.into(), ..Snapshot::default() };
            s.mut_metadata().index = index;
            s.mut_metadata().term = term;
            s.mut_metadata().set_conf_state(conf_state);
            s
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    let header = (0..19i32, any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>());
    let rest = (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>(), bytes(), any::<u64>(), any::<i64>());
    let body = (proptest::collection::vec(entry(), 0..4), proptest::option::of(snapshot()));
    (header, rest, body).prop_map(|(h, r, (entries, snapshot))| {
        let mut m = Message {
            to: h.1,
            from: h.2,
            term: h.3,
            log_term: h.4,
            index: h.5,
            commit: r.0,
            commit_term: r.1,
            reject: r.2,
            reject_hint: r.3,
            context: r.4.into(),
            request_snapshot: r.5,
            priority: r.6,
            entries: entries.into(),
            ..Message::default()
        };
        m.set_msg_type(MessageType::from_i32(h.0).expect("message type"));
        if let Some(s) = snapshot {
            m.set_snapshot(s);
        }
        m
    })
}

/// Where a group tag is planted: the level of the message it lands in.
#[derive(Clone, Copy, Debug)]
enum Site {
    Message,
    Entry,
    Snapshot,
    SnapshotMetadata,
    ConfState,
    ConfChange,
    ConfChangeV2,
    ConfChangeSingle,
}

fn site() -> impl Strategy<Value = Site> {
    prop_oneof![
        Just(Site::Message),
        Just(Site::Entry),
        Just(Site::Snapshot),
        Just(Site::SnapshotMetadata),
        Just(Site::ConfState),
        Just(Site::ConfChange),
        Just(Site::ConfChangeV2),
        Just(Site::ConfChangeSingle),
    ]
}

/// A group tag (START or END, any field number) followed by `tail` (for START, a matching
/// END makes a well-formed group that rust-protobuf 2 would skip and accept).
fn poison() -> impl Strategy<Value = Vec<u8>> {
    (1u32..1 << 29, prop_oneof![Just(WIRE_START_GROUP), Just(WIRE_END_GROUP)], any::<bool>()).prop_map(
        |(field, wire_type, close)| {
            let mut p = tag(field, wire_type);
            if close && wire_type == WIRE_START_GROUP {
                p.extend(tag(field, WIRE_END_GROUP));
            }
            p
        },
    )
}

/// `body` with `poison` before or after it.
fn plant(body: &[u8], poison: &[u8], first: bool) -> Vec<u8> {
    if first { [poison, body].concat() } else { [body, poison].concat() }
}

/// An entry of type `t` whose data is `data`, with the type before or after the data.
fn entry_bytes(t: EntryType, data: &[u8], type_first: bool) -> Vec<u8> {
    let (t, d) = (varint_field(1, t as u64), len_field(4, data));
    if type_first { [t, d].concat() } else { [d, t].concat() }
}

/// `base` serialized with one more field appended that carries `poison` at `site`
/// (protobuf appends repeated fields and merges singular messages, so the parser reads
/// the planted bytes at that level).
fn poisoned(base: &Message, site: Site, poison: &[u8], first: bool) -> Vec<u8> {
    let mut out = base.write_to_bytes().expect("serializes");
    if let (Site::Message, true) = (site, first) {
        return [poison, &out].concat();
    }
    let single = ConfChangeSingle { node_id: 4, ..ConfChangeSingle::default() };
    let extra = match site {
        Site::Message => poison.to_vec(),
        Site::Entry => len_field(7, &plant(&entry_bytes(EntryType::EntryNormal, b"x", true), poison, first)),
        Site::Snapshot => len_field(9, &plant(&len_field(1, b"data"), poison, first)),
        Site::SnapshotMetadata => len_field(9, &len_field(2, &plant(&varint_field(2, 5), poison, first))),
        Site::ConfState => {
            let cs =
                ConfState { voters: vec![1, 2, 3], ..ConfState::default() }.write_to_bytes().expect("cs");
            len_field(9, &len_field(2, &len_field(1, &plant(&cs, poison, first))))
        }
        Site::ConfChange => {
            let cc = ConfChange { node_id: 4, ..ConfChange::default() }.write_to_bytes().expect("cc");
            len_field(7, &entry_bytes(EntryType::EntryConfChange, &plant(&cc, poison, first), first))
        }
        Site::ConfChangeV2 => {
            let cc = ConfChangeV2 { changes: vec![single].into(), ..ConfChangeV2::default() };
            let cc = cc.write_to_bytes().expect("cc");
            len_field(7, &entry_bytes(EntryType::EntryConfChangeV2, &plant(&cc, poison, first), first))
        }
        Site::ConfChangeSingle => {
            let s = single.write_to_bytes().expect("single");
            let cc = len_field(2, &plant(&s, poison, first));
            len_field(7, &entry_bytes(EntryType::EntryConfChangeV2, &cc, first))
        }
    };
    out.extend(extra);
    out
}

proptest! {
    #[test]
    fn every_serialized_message_is_accepted(m in message()) {
        let bytes = m.write_to_bytes().expect("serializes");
        prop_assert_eq!(scan_raft_message(&bytes), Ok(()));
        for e in m.entries.iter() {
            let schema = match e.get_entry_type() {
                EntryType::EntryConfChange => Schema::ConfChange,
                EntryType::EntryConfChangeV2 => Schema::ConfChangeV2,
                EntryType::EntryNormal => continue,
            };
            prop_assert_eq!(scan(schema, &e.data), Ok(()));
        }
    }

    #[test]
    fn a_group_wire_type_at_any_level_is_refused(
        m in message(),
        site in site(),
        poison in poison(),
        first in any::<bool>(),
    ) {
        let bytes = poisoned(&m, site, &poison, first);
        let refused = scan_raft_message(&bytes);
        prop_assert!(matches!(refused, Err(ScanError::Group { .. })), "{:?} at {:?}", refused, site);
    }

    #[test]
    fn garbage_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        m in message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for schema in [Schema::Message, Schema::Entry, Schema::Snapshot, Schema::ConfState, Schema::ConfChangeV2] {
            let _ = scan(schema, &data);
        }
        let mut bytes = m.write_to_bytes().expect("serializes");
        if !bytes.is_empty() {
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= b;
            }
        }
        let _ = scan_raft_message(&bytes);
        for cut in 0..bytes.len() {
            let _ = scan_raft_message(&bytes[..cut]);
        }
    }
}

/// Read as rust-protobuf reads them: a tag above 32 bits keeps its low 32 (here field 7,
/// `entries`), and an enum is an int32 (here `entry_type` 2^32 + 2 is a `ConfChangeV2`),
/// so the scan must descend exactly where the parser does.
#[test]
fn tags_and_enums_are_read_as_rust_protobuf_reads_them() {
    let mut wide_tag = Vec::new();
    put_varint(&mut wide_tag, 1 << 32 | 7 << 3 | u64::from(WIRE_LEN));
    let entry = plant(b"", &tag(100, WIRE_START_GROUP), false);
    let mut bytes = wide_tag;
    put_varint(&mut bytes, entry.len() as u64);
    bytes.extend(&entry);
    assert!(matches!(scan_raft_message(&bytes), Err(ScanError::Group { schema: Schema::Entry, .. })));

    let cc = plant(b"", &tag(100, WIRE_START_GROUP), false);
    let entry = [len_field(4, &cc), varint_field(1, 1 << 32 | 2)].concat();
    let bytes = len_field(7, &entry);
    let parsed = Message::parse_from_bytes(&bytes).expect("parses");
    assert_eq!(parsed.entries[0].get_entry_type(), EntryType::EntryConfChangeV2);
    assert!(matches!(scan_raft_message(&bytes), Err(ScanError::Group { schema: Schema::ConfChangeV2, .. })));
}

#[test]
fn invalid_tags_and_truncation_are_refused() {
    assert_eq!(scan_raft_message(&[0x06]), Err(ScanError::BadTag(6)));
    assert_eq!(scan_raft_message(&[0x0f]), Err(ScanError::BadTag(0x0f)));
    assert_eq!(scan_raft_message(&[0x3a, 5, 1]), Err(ScanError::Truncated));
    assert_eq!(scan_raft_message(&[0x08; 1]), Err(ScanError::Truncated));
    assert_eq!(
        scan_raft_message(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(ScanError::BadVarint)
    );
    assert_eq!(scan_raft_message(&[]), Ok(()));
}

/// 100,000 nested START_GROUP tags, at the top and inside an entry, are refused at the
/// first one. rust-protobuf 2.28 itself does not recurse on them either (its group skip is
/// a loop that errors on a nested START_GROUP), which this also checks; the advisory covers
/// every release before 3.7.2, and the scan keeps groups from any parser.
#[test]
fn deeply_nested_groups_are_refused_without_recursion() {
    let start = tag(100, WIRE_START_GROUP);
    let nested: Vec<u8> = start.iter().copied().cycle().take(start.len() * 100_000).collect();
    let refused = scan_raft_message(&nested);
    assert!(matches!(refused, Err(ScanError::Group { schema: Schema::Message, field: 100, wire_type: 3 })));
    let in_entry = len_field(7, &nested);
    assert!(matches!(scan_raft_message(&in_entry), Err(ScanError::Group { schema: Schema::Entry, .. })));
    assert!(Message::parse_from_bytes(&nested).is_err());
    assert!(Message::parse_from_bytes(&in_entry).is_err());
}
