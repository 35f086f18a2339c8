//! Model test: the segment log against an in-memory `Vec` of records under random appends
//! (random topics, sizes and non-monotonic timestamps), rolls (explicit, by size, by full
//! index, by age), syncs, retention and reopens (clean or not), with random small segment and
//! index sizes, with and without recycling of deleted segments' files. After every operation the log's offsets, reads by offset, by topic and by time,
//! and segment summaries must agree with the model.

use proptest::prelude::*;
use storage::env::faulty::FaultyFs;
use storage::{LogConfig, Record, RecordRef, Retention, SegmentInfo, SegmentLog, SyncPolicy};

const TOPICS: usize = 6;
const TS_BASE: u64 = 100_000;
/// Prefixes for `read_matching`: all topics, one topic's, a prefix of several, none.
const PREFIXES: [&[u8]; 5] = [b"", b"fleet/", b"fleet/1", b"fleet/3/t", b"fleet/9"];

#[derive(Debug, Clone)]
enum Op {
    /// (topic index, payload length, timestamp step) per record.
    Append(Vec<(usize, usize, i64)>),
    Roll,
    Sync,
    Retain {
        advance_ms: u64,
        needed_back: u64,
    },
    Reopen {
        clean: bool,
    },
    ReadFrom {
        at: u64,
        bytes_max: u64,
    },
    ReadTopics {
        mask: u8,
        at: u64,
        bytes_max: u64,
    },
    /// Topics starting with `PREFIXES[prefix]` whose index is in `mask`.
    ReadMatching {
        prefix: usize,
        mask: u8,
        at: u64,
        bytes_max: u64,
    },
    OffsetForTime {
        t: u64,
    },
    /// The timestamp of record `pick` (modulo the length), plus `delta`.
    OffsetForRecordTime {
        pick: u64,
        delta: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((0..TOPICS, 0usize..300, -40i64..120), 1..12).prop_map(Op::Append),
        1 => Just(Op::Roll),
        1 => Just(Op::Sync),
        2 => (0u64..3000, 0u64..60).prop_map(|(advance_ms, needed_back)| Op::Retain { advance_ms, needed_back }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        2 => (0u64..400, 1u64..3000).prop_map(|(at, bytes_max)| Op::ReadFrom { at, bytes_max }),
        2 => (any::<u8>(), 0u64..400, 1u64..3000).prop_map(|(mask, at, bytes_max)| Op::ReadTopics { mask, at, bytes_max }),
        2 => (0..PREFIXES.len(), any::<u8>(), 0u64..400, 1u64..3000)
            .prop_map(|(prefix, mask, at, bytes_max)| Op::ReadMatching { prefix, mask, at, bytes_max }),
        1 => (0u64..6000).prop_map(|t| Op::OffsetForTime { t }),
        2 => (any::<u64>(), -1i64..=1).prop_map(|(pick, delta)| Op::OffsetForRecordTime { pick, delta }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(300u32), Just(1024), Just(8192)],
        prop_oneof![Just(1u32), Just(100), Just(1000)],
        prop_oneof![Just(64u32), Just(4096)],
        prop_oneof![Just(None), Just(Some(2000u64))],
        prop_oneof![Just(SyncPolicy::EveryBatch), Just(SyncPolicy::Interval { interval_ms: 50 })],
        prop::option::of(2000u64..20_000),
        prop::option::of(prop_oneof![Just(0u64), Just(500), Just(5000)]),
        0usize..3,
    )
        .prop_map(|(segment, interval, index, age, sync, bytes_max, age_ms_max, recycle)| LogConfig {
            segment_bytes_max: segment,
            segment_age_ms_max: age,
            index_interval_bytes: interval,
            index_bytes_max: index,
            record_bytes_max: 4096,
            recycle_segments_max: recycle,
            sync,
            retention: Retention { bytes_max, age_ms_max },
            ..LogConfig::default()
        })
}

fn topic_name(k: usize) -> Vec<u8> {
    format!("fleet/{k}/t").into_bytes()
}

fn payload(offset: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (offset as usize * 31 + j) as u8).collect()
}

#[derive(Debug, Default)]
struct Model {
    /// Offset = index: (timestamp, topic index, payload).
    records: Vec<(u64, usize, Vec<u8>)>,
    start: u64,
    now_ms: u64,
    last_ts: u64,
}

impl Model {
    fn len(&self) -> u64 {
        self.records.len() as u64
    }

    fn encoded_len(&self, offset: u64) -> u64 {
        let (_, k, p) = &self.records[offset as usize];
        28 + topic_name(*k).len() as u64 + p.len() as u64
    }

    /// What a bounded read returns: matching records from `from`, at least one, within
    /// `bytes_max`.
    fn read(&self, from: u64, bytes_max: u64, matches: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for o in from.max(self.start)..self.len() {
            if !matches(self.records[o as usize].1) {
                continue;
            }
            let len = self.encoded_len(o);
            if !out.is_empty() && bytes + len > bytes_max {
                break;
            }
            bytes += len;
            out.push(o);
        }
        out
    }
}

fn check_records(model: &Model, got: &[RecordRef<'_>], expected: &[u64]) {
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, expected);
    for r in got {
        let (ts, k, p) = &model.records[r.offset as usize];
        assert_eq!((r.timestamp_ms, r.topic, r.payload), (*ts, &topic_name(*k)[..], &p[..]));
    }
}

/// Segment summaries agree with the model, and cover `[start, len)` contiguously.
fn check_segments(model: &Model, segments: &[SegmentInfo]) {
    assert_eq!(segments[0].base_offset, model.start);
    assert_eq!(segments.last().unwrap().next_offset, model.len());
    assert!(!segments.last().unwrap().sealed);
    for (i, s) in segments.iter().enumerate() {
        if i + 1 < segments.len() {
            assert!(s.sealed);
            assert_eq!(s.next_offset, segments[i + 1].base_offset);
            assert!(s.next_offset > s.base_offset, "sealed segments are not empty");
        }
        let bytes: u64 = 32 + (s.base_offset..s.next_offset).map(|o| model.encoded_len(o)).sum::<u64>();
        assert_eq!(s.bytes, bytes);
        let ts_max = (s.base_offset..s.next_offset).map(|o| model.records[o as usize].0).max();
        assert_eq!(s.timestamp_max_ms, ts_max);
    }
}

/// The retention rule, applied to summaries already checked against the model.
fn expected_deletions(policy: Retention, segments: &[SegmentInfo], now_ms: u64, needed: u64) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut count = 0;
    for s in &segments[..segments.len() - 1] {
        let over_cap = policy.bytes_max.is_some_and(|max| total > max);
        let expired = policy
            .age_ms_max
            .is_some_and(|age| s.timestamp_max_ms.is_none_or(|ts| now_ms.saturating_sub(ts) > age));
        if !(over_cap || (s.next_offset <= needed && expired)) {
            break;
        }
        total -= s.bytes;
        count += 1;
    }
    count
}

fn check_time(log: &SegmentLog<FaultyFs>, model: &Model, t: u64) {
    let expected = (model.start..model.len()).find(|&o| model.records[o as usize].0 >= t);
    assert_eq!(log.offset_for_time(t).unwrap(), expected, "t = {t}");
}

fn run(config: LogConfig, short_writes: bool, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    fs.set(|f| {
        f.short_writes = short_writes;
        f.skip_syncs = true; // no power loss here: the model is about contents, not the device
    });
    let open = || SegmentLog::open(fs.clone(), dir.path(), config.clone()).unwrap();
    let mut log = open();
    let mut model = Model { now_ms: TS_BASE, last_ts: TS_BASE, ..Model::default() };
    for op in ops {
        match op {
            Op::Append(batch) => {
                model.now_ms += 7;
                let first = model.len();
                let mut owned = Vec::new();
                for (i, &(k, len, step)) in batch.iter().enumerate() {
                    model.last_ts = model.last_ts.saturating_add_signed(step);
                    owned.push((model.last_ts, topic_name(k), payload(first + i as u64, len), k));
                }
                let records: Vec<Record<'_>> = owned
                    .iter()
                    .map(|(ts, t, p, _)| Record { timestamp_ms: *ts, topic: t, payload: p })
                    .collect();
                assert_eq!(log.append(model.now_ms, &records).unwrap(), first..first + batch.len() as u64);
                model.records.extend(owned.into_iter().map(|(ts, _, p, k)| (ts, k, p)));
            }
            Op::Roll => log.roll().unwrap(),
            Op::Sync => {
                log.sync().unwrap();
                assert_eq!(log.durable_offset(), model.len());
            }
            Op::Retain { advance_ms, needed_back } => {
                model.now_ms += advance_ms;
                let needed =
                    if needed_back == 0 { u64::MAX } else { model.len().saturating_sub(needed_back) };
                let segments = log.segments();
                let expected = expected_deletions(config.retention, &segments, model.now_ms, needed);
                let report = log.retain(model.now_ms, needed).unwrap();
                assert_eq!(report.segments_deleted, expected);
                model.start = segments[expected].base_offset;
                assert_eq!(report.start_offset, model.start);
                if config.retention.bytes_max.is_none() {
                    assert!(model.start <= needed.max(segments[0].base_offset), "deleted a needed record");
                }
            }
            Op::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                log = open();
                let report = log.recovery_report();
                assert!(report.torn_tails.is_empty() && report.repairs.is_empty(), "{report:?}");
            }
            Op::ReadFrom { at, bytes_max } => {
                let got = log.read_from(at, bytes_max).unwrap();
                check_records(&model, &got, &model.read(at, bytes_max, |_| true));
            }
            Op::ReadTopics { mask, at, bytes_max } => {
                let wanted: Vec<usize> = (0..8).filter(|b| mask & (1 << b) != 0).collect();
                let names: Vec<Vec<u8>> = wanted.iter().map(|&k| topic_name(k)).collect();
                let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                let got = log.read_topics(&refs, at, bytes_max).unwrap();
                check_records(&model, &got, &model.read(at, bytes_max, |k| wanted.contains(&k)));
            }
            Op::ReadMatching { prefix, mask, at, bytes_max } => {
                let prefix = PREFIXES[prefix];
                let wanted = |k: usize| mask & (1 << k) != 0 && topic_name(k).starts_with(prefix);
                let matches = |t: &[u8]| (0..TOPICS).any(|k| mask & (1 << k) != 0 && topic_name(k) == t);
                let got = log.read_matching(prefix, &matches, at, bytes_max).unwrap();
                check_records(&model, &got, &model.read(at, bytes_max, wanted));
            }
            Op::OffsetForTime { t } => check_time(&log, &model, TS_BASE - 200 + t),
            Op::OffsetForRecordTime { pick, delta } => {
                if let Some(len) = model.len().checked_sub(model.start).filter(|&n| n > 0) {
                    let ts = model.records[(model.start + pick % len) as usize].0;
                    check_time(&log, &model, ts.saturating_add_signed(delta));
                }
            }
        }
        assert_eq!((log.start_offset(), log.next_offset()), (model.start, model.len()));
        assert!(log.durable_offset() <= log.next_offset());
        if config.sync == SyncPolicy::EveryBatch {
            assert_eq!(log.durable_offset(), log.next_offset());
        }
        check_segments(&model, &log.segments());
    }
    let all = log.read_from(0, u64::MAX).unwrap();
    check_records(&model, &all, &(model.start..model.len()).collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_an_in_memory_model(
        config in config(),
        short_writes in any::<bool>(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        run(config, short_writes, ops);
    }
}
