//! Recovery on open (FORMAT.md section 8): the record scan (CORE, a pure function over the
//! mapped bytes of a `.log`) and the SHELL that applies its verdicts to the directory.
//!
//! Invariants:
//! - a record is dropped only if no valid record with a larger offset follows it in its
//!   segment (a torn tail), or in repair mode; anything else is `Error::Corruption`;
//! - a scanned segment is cut at the end of its last valid record before it is mapped again,
//!   so torn bytes never survive to be mistaken for records later;
//! - the segments returned cover one contiguous range of offsets, and only the last is active.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{LogConfig, RecoveryMode};
use crate::env::{File, FileSystem};
use crate::error::{Error, Reason, Result};
use crate::segment::file::{
    Capacity, SPARE_EXTENSION, Segment, SegmentPaths, corrupt, parse_base, parse_file_name, remove_files,
};
use crate::segment::format::{
    FILE_HEADER_LEN, FileHeader, FileKind, RECORD_HEADER_LEN, RECORD_MAGIC, decode_record, u32_at, u64_at,
};
use crate::segment::index::IndexPoints;
use crate::segment::topic_index::ActiveTopics;

/// What recovery did on open; log it. Empty after a clean shutdown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Torn tails cut off: writes that never completed.
    pub torn_tails: Vec<Cut>,
    /// Repair mode only: where the log was cut because of corruption. Everything from there
    /// on was deleted.
    pub repairs: Vec<Cut>,
    /// `.log` files whose indexes were rebuilt (the active segment's always are).
    pub indexes_rebuilt: Vec<PathBuf>,
    /// Files deleted: leftovers of interrupted operations, or segments after a repair cut.
    pub files_removed: Vec<PathBuf>,
}

/// A place where recovery cut a `.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The `.log` file.
    pub file: PathBuf,
    /// The first byte removed.
    pub position: u64,
    /// The first offset that is no longer in the log.
    pub offset: u64,
    /// Why the bytes at `position` are not a record.
    pub reason: Reason,
}

/// Why a scan stopped at [`Scan::end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The end of the file, or zeros with nothing valid after them.
    Clean,
    /// Bytes that are not a record, with nothing valid after them.
    Torn(Reason),
    /// Bytes that are not a record, followed by a valid record.
    Corrupt(Reason),
}

/// The result of scanning a `.log`: everything needed to rebuild its indexes.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Position after the last valid record.
    pub(crate) end: u64,
    pub(crate) next_offset: u64,
    pub(crate) offset_entries: Vec<u8>,
    pub(crate) time_entries: Vec<u8>,
    pub(crate) points: IndexPoints,
    pub(crate) topics: ActiveTopics,
    pub(crate) ts_first_ms: Option<u64>,
    pub(crate) stop: Stop,
}

/// Scans the records of a `.log` (`bytes` is the whole file, header included and checked).
/// In a `recycled` file, the bytes after the last record are the former segment's, so
/// non-zero bytes there are not reported as torn.
pub(crate) fn scan(bytes: &[u8], base_offset: u64, index_interval_bytes: u32, recycled: bool) -> Scan {
    let mut s = Scan {
        end: FILE_HEADER_LEN as u64,
        next_offset: base_offset,
        offset_entries: Vec::new(),
        time_entries: Vec::new(),
        points: IndexPoints::new(index_interval_bytes),
        topics: ActiveTopics::default(),
        ts_first_ms: None,
        stop: Stop::Clean,
    };
    let mut pos = FILE_HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let r = match decode_record(rest, s.next_offset) {
            Ok(r) => r,
            Err(reason) => {
                let zeros = rest[..rest.len().min(RECORD_HEADER_LEN)].iter().all(|&b| b == 0);
                s.stop = if find_valid_record(bytes, pos, s.next_offset).is_some() {
                    Stop::Corrupt(reason)
                } else if zeros || recycled {
                    Stop::Clean
                } else {
                    Stop::Torn(reason)
                };
                break;
            }
        };
        let rel = (s.next_offset - base_offset) as u32;
        if let Some((o, t)) = s.points.observe(rel, pos as u64, r.timestamp_ms) {
            s.offset_entries.extend_from_slice(&o);
            s.time_entries.extend_from_slice(&t);
        }
        s.topics.push(r.topic, rel);
        s.ts_first_ms = s.ts_first_ms.or(Some(r.timestamp_ms));
        pos += r.encoded_len() as usize;
        s.end = pos as u64;
        s.next_offset += 1;
    }
    s
}

/// The position of a valid record after `from` whose offset is at least `next_offset` (and
/// not more than could fit in between), if there is one. Candidates are found by their magic
/// byte, then checked by length, offset range and checksum.
fn find_valid_record(bytes: &[u8], from: usize, next_offset: u64) -> Option<usize> {
    let mut magic_at = from + 9; // the candidate at `from` itself already failed
    while magic_at < bytes.len() {
        let q = magic_at + find_byte(&bytes[magic_at..], RECORD_MAGIC)? - 8;
        magic_at = q + 9;
        if q + RECORD_HEADER_LEN > bytes.len() {
            return None;
        }
        let length = u32_at(bytes, q) as usize;
        let offset = u64_at(bytes, q + 12);
        let skipped_max = ((q - from) / RECORD_HEADER_LEN) as u64;
        let plausible = length >= RECORD_HEADER_LEN
            && q + length <= bytes.len()
            && offset >= next_offset
            && offset - next_offset <= skipped_max;
        if plausible && decode_record(&bytes[q..], offset).is_ok() {
            return Some(q);
        }
    }
    None
}

/// Index of the first `needle` in `hay`; checks 64-byte chunks at a time so long runs of
/// zeros (a preallocated tail) go fast.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const CHUNK_BYTES: usize = 64;
    let mut base = 0;
    for chunk in hay.chunks(CHUNK_BYTES) {
        if chunk.iter().fold(false, |found, &b| found | (b == needle)) {
            return chunk.iter().position(|&b| b == needle).map(|i| base + i);
        }
        base += chunk.len();
    }
    None
}

/// What opening one segment came to.
enum Opened<Fl> {
    Keep(Segment<Fl>),
    /// An empty segment that is not the last: dropped.
    Skip,
    /// Repair: the log ends in this segment; later segments go.
    CutAfter(Segment<Fl>),
    /// Repair: the log ends before this segment; it and later segments go.
    CutBefore,
}

struct Recovery<'a, F: FileSystem> {
    fs: &'a F,
    dir: &'a Path,
    config: &'a LogConfig,
    report: RecoveryReport,
}

/// What [`open_segments`] found.
pub(crate) struct OpenedLog<Fl> {
    /// The segments; the last one is active.
    pub(crate) segments: Vec<Segment<Fl>>,
    /// Spare files for new segments, at most `recycle_segments_max`.
    pub(crate) spares: Vec<PathBuf>,
    pub(crate) report: RecoveryReport,
}

/// Opens (and recovers) the segments of `dir`.
pub(crate) fn open_segments<F: FileSystem>(
    fs: &F,
    dir: &Path,
    config: &LogConfig,
) -> Result<OpenedLog<F::File>> {
    let mut r = Recovery { fs, dir, config, report: RecoveryReport::default() };
    let (bases, mut spares) = r.list()?;
    let mut segments: Vec<Segment<F::File>> = Vec::new();
    let mut cut_from = None;
    for (i, &base) in bases.iter().enumerate() {
        let expected = segments.last().map(|s| s.next_offset);
        match r.open_one(base, i + 1 == bases.len(), expected)? {
            Opened::Keep(seg) => segments.push(seg),
            Opened::Skip => {}
            Opened::CutAfter(seg) => {
                segments.push(seg);
                cut_from = Some(i + 1);
                break;
            }
            Opened::CutBefore => {
                cut_from = Some(i);
                break;
            }
        }
    }
    for &base in &bases[cut_from.unwrap_or(bases.len())..] {
        let paths = SegmentPaths::new(dir, base);
        remove_files(fs, &paths)?;
        r.report.files_removed.push(paths.log);
    }
    let next = segments.last().map_or_else(|| bases.first().copied().unwrap_or(0), |s| s.next_offset);
    if segments.last().is_none_or(|s| !s.is_active()) {
        let spare = spares.pop();
        let capacity = Capacity::for_batch(config, 0, 0);
        segments.push(Segment::create(fs, dir, next, capacity, config, spare.as_deref())?);
    }
    fs.sync_dir(dir).map_err(Error::io("fsync", dir))?;
    Ok(OpenedLog { segments, spares, report: r.report })
}

impl<F: FileSystem> Recovery<'_, F> {
    /// Cleans up leftovers and returns the base offsets of the segments, ascending, and the
    /// spare files to keep.
    fn list(&mut self) -> Result<(Vec<u64>, Vec<PathBuf>)> {
        let names = self.fs.list(self.dir).map_err(Error::io("readdir", self.dir))?;
        let mut bases = BTreeSet::new();
        let mut others = Vec::new();
        let mut spares = Vec::new();
        for name in names {
            if name.ends_with(".tmp") {
                self.remove(self.dir.join(name))?;
            } else if let Some(stem) = name.strip_suffix(&format!(".{SPARE_EXTENSION}"))
                && parse_base(stem).is_some()
            {
                spares.push(self.dir.join(name));
            } else if let Some((base, kind)) = parse_file_name(&name) {
                if kind == FileKind::Log {
                    bases.insert(base);
                } else {
                    others.push((base, name));
                }
            }
        }
        for (base, name) in others {
            if !bases.contains(&base) {
                self.remove(self.dir.join(name))?;
            }
        }
        spares.sort();
        while spares.len() > self.config.recycle_segments_max {
            let spare = spares.remove(0);
            self.remove(spare)?;
        }
        Ok((bases.into_iter().collect(), spares))
    }

    fn remove(&mut self, path: PathBuf) -> Result<()> {
        self.fs.remove_file(&path).map_err(Error::io("unlink", &path))?;
        self.report.files_removed.push(path);
        Ok(())
    }

    fn repair(&self) -> bool {
        self.config.recovery == RecoveryMode::Repair
    }

    /// Corruption at `position` of the `.log`: an error, or in repair mode a cut there.
    fn corruption(&mut self, paths: &SegmentPaths, position: u64, offset: u64, reason: Reason) -> Result<()> {
        if !self.repair() {
            return Err(corrupt(&paths.log, position, Some(offset), reason));
        }
        self.report.repairs.push(Cut { file: paths.log.clone(), position, offset, reason });
        Ok(())
    }

    fn open_one(&mut self, base: u64, last: bool, expected: Option<u64>) -> Result<Opened<F::File>> {
        let paths = SegmentPaths::new(self.dir, base);
        let log = self.fs.open(&paths.log).map_err(Error::io("open", &paths.log))?;
        let mut head = [0u8; FILE_HEADER_LEN];
        let header = match log.read_exact_at(&mut head, 0) {
            Ok(()) => FileHeader::decode(FileKind::Log, base, &head),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Reason::Truncated),
            Err(e) => return Err(Error::io("pread", &paths.log)(e)),
        };
        let header = match header {
            Ok(header) => header,
            Err(reason) => {
                self.corruption(&paths, 0, base, reason)?;
                return Ok(Opened::CutBefore);
            }
        };
        if let Some(expected) = expected.filter(|&e| e != base) {
            self.corruption(&paths, 0, expected, Reason::Gap { expected, found: base })?;
            return Ok(Opened::CutBefore);
        }
        if !self.repair()
            && let Some(seg) = Segment::open_sealed(self.fs, paths.clone(), base, &log)?
        {
            return Ok(Opened::Keep(seg));
        }
        let map = log.map().map_err(Error::io("mmap", &paths.log))?;
        let scan = scan(&map, base, self.config.index_interval_bytes, header.recycled());
        drop(map);
        let mut cut_after = false;
        match scan.stop.clone() {
            Stop::Clean => {}
            Stop::Torn(reason) => self.report.torn_tails.push(Cut {
                file: paths.log.clone(),
                position: scan.end,
                offset: scan.next_offset,
                reason,
            }),
            Stop::Corrupt(reason) => {
                self.corruption(&paths, scan.end, scan.next_offset, reason)?;
                cut_after = true;
            }
        }
        let becomes_last = last || cut_after;
        if scan.next_offset == base && !becomes_last {
            remove_files(self.fs, &paths)?;
            self.report.files_removed.push(paths.log);
            return Ok(Opened::Skip);
        }
        self.report.indexes_rebuilt.push(paths.log.clone());
        let capacity = if becomes_last {
            Capacity::for_batch(self.config, 0, 0)
        } else {
            Capacity { log_bytes: scan.end, index_entries: 0 }
        };
        let mut seg = Segment::recover(self.fs, paths, base, log, scan, capacity)?;
        if !becomes_last {
            seg.seal(self.fs, self.dir)?;
        }
        Ok(if cut_after { Opened::CutAfter(seg) } else { Opened::Keep(seg) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::format::encode_record;

    fn log_bytes(records: &[(&[u8], &[u8])], tail_zeros: usize) -> Vec<u8> {
        let mut b = FileHeader::active(FileKind::Log, 100).encode().to_vec();
        for (i, (topic, payload)) in records.iter().enumerate() {
            encode_record(&mut b, 100 + i as u64, 1000 + i as u64, topic, payload);
        }
        b.resize(b.len() + tail_zeros, 0);
        b
    }

    #[test]
    fn scan_stops_cleanly_at_preallocated_zeros() {
        let b = log_bytes(&[(b"a", b"1"), (b"b", b"22")], 4096);
        let s = scan(&b, 100, 4096, false);
        assert_eq!(s.stop, Stop::Clean);
        assert_eq!(s.next_offset, 102);
        assert_eq!(s.end as usize, b.len() - 4096);
        assert_eq!(s.topics.get(b"b"), Some(&[1u32][..]));
    }

    #[test]
    fn scan_calls_a_bad_last_record_torn_and_a_bad_middle_record_corrupt() {
        let clean = log_bytes(&[(b"a", b"1"), (b"b", b"22"), (b"c", b"333")], 100);
        let second = FILE_HEADER_LEN + RECORD_HEADER_LEN + 2;
        let third = second + RECORD_HEADER_LEN + 3;
        let mut torn = clean.clone();
        torn[third + RECORD_HEADER_LEN + 1] ^= 0xFF;
        let s = scan(&torn, 100, 4096, false);
        assert_eq!((s.stop, s.end as usize, s.next_offset), (Stop::Torn(Reason::RecordChecksum), third, 102));
        let mut middle = clean;
        middle[second + 30] ^= 0xFF;
        let s = scan(&middle, 100, 4096, false);
        assert_eq!(
            (s.stop, s.end as usize, s.next_offset),
            (Stop::Corrupt(Reason::RecordChecksum), second, 101)
        );
    }

    #[test]
    fn scan_finds_valid_records_behind_a_zeroed_hole() {
        let mut b = log_bytes(&[(b"a", b"1"), (b"b", b"22"), (b"c", b"333")], 0);
        let second = FILE_HEADER_LEN + RECORD_HEADER_LEN + 2;
        b[second..second + 10].fill(0);
        assert_eq!(scan(&b, 100, 4096, false).stop, Stop::Corrupt(Reason::RecordLength(0)));
    }

    #[test]
    fn scan_of_a_recycled_file_ignores_the_former_segments_bytes() {
        let mut b = log_bytes(&[(b"a", b"1"), (b"b", b"22")], 0);
        let end = b.len();
        // The former segment's records: valid, but with older offsets.
        for i in 0..5 {
            encode_record(&mut b, 10 + i, 0, b"old", b"stale");
        }
        b[end + 3] ^= 0xFF; // and mid-record garbage right after the end
        let s = scan(&b, 100, 4096, true);
        assert_eq!((s.stop, s.end as usize, s.next_offset), (Stop::Clean, end, 102));
        assert!(matches!(scan(&b, 100, 4096, false).stop, Stop::Torn(_)));
    }

    #[test]
    fn find_byte_matches_position() {
        let mut hay = vec![0u8; 300];
        for at in [0, 63, 64, 200, 299] {
            hay.fill(0);
            hay[at] = 7;
            assert_eq!(find_byte(&hay, 7), Some(at));
        }
        assert_eq!(find_byte(&[0; 10], 7), None);
    }
}
