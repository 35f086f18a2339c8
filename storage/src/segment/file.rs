//! SHELL. One segment: its four files, their maps, and, while it is the active segment, the
//! writer that appends to them.
//!
//! Invariants:
//! - `log` maps at least `[0, data_end)` of the `.log`; the active segment's `offsets`/`times`
//!   entries live in memory and reach their (preallocated) files when it seals, a sealed
//!   segment's are mapped;
//! - a segment has a `writer` iff it is active; the active `.log` is preallocated to
//!   `writer.log_capacity` and the index files to `writer.index_capacity` entries, so appends
//!   that passed [`Segment::fits`] never extend a file;
//! - maps are dropped before their file is truncated ([`Segment::seal`], [`Segment::trim`]) or
//!   deleted ([`Segment::delete`]);
//! - in-memory state (`data_end`, `next_offset`, counts) only advances after the writes it
//!   describes succeeded.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::LogConfig;
use crate::env::{File, FileSystem, Map};
use crate::error::{Error, Reason, Result};
use crate::segment::Record;
use crate::segment::format::{
    FILE_HEADER_LEN, FLAG_RECYCLED, FileHeader, FileKind, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN, encode_record,
    record_len, u32_at,
};
use crate::segment::index::{IndexFile, IndexPoints};
use crate::segment::recovery::Scan;
use crate::segment::topic_index::{ActiveTopics, SealedTopics, TopicHeader};

/// The paths of a segment's files.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub(crate) log: PathBuf,
    pub(crate) offsets: PathBuf,
    pub(crate) times: PathBuf,
    pub(crate) topics: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(dir: &Path, base_offset: u64) -> Self {
        let path = |kind| dir.join(file_name(base_offset, kind));
        Self {
            log: path(FileKind::Log),
            offsets: path(FileKind::OffsetIndex),
            times: path(FileKind::TimeIndex),
            topics: path(FileKind::TopicIndex),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.log, &self.offsets, &self.times, &self.topics]
    }
}

/// `{base:020}.{ext}`.
pub(crate) fn file_name(base_offset: u64, kind: FileKind) -> String {
    format!("{base_offset:020}.{}", kind.extension())
}

/// Extension of a spare file: a deleted segment's `.log` kept for reuse.
pub(crate) const SPARE_EXTENSION: &str = "spare";

/// `{base:020}.spare`, for the `.log` of the deleted segment `base_offset`.
pub(crate) fn spare_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.{SPARE_EXTENSION}"))
}

/// The base offset and kind of a segment file name.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, ext) = name.split_once('.')?;
    let kind = [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex, FileKind::TopicIndex]
        .into_iter()
        .find(|k| k.extension() == ext)?;
    parse_base(stem).map(|base| (base, kind))
}

/// The base offset of a 20-digit file stem.
pub(crate) fn parse_base(stem: &str) -> Option<u64> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The temporary name a file is written under before it is renamed into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    s.into()
}

/// Preallocated room of an active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    /// Length of the `.log`, header included.
    pub(crate) log_bytes: u64,
    /// Entries of `.idx` and of `.tidx`.
    pub(crate) index_entries: u32,
}

impl Capacity {
    /// Room for a segment whose first batch has `batch_bytes` bytes and up to `points_max`
    /// index points: the configured sizes, or more for a batch that needs more.
    pub(crate) fn for_batch(config: &LogConfig, batch_bytes: u64, points_max: u64) -> Self {
        let configured = (config.index_bytes_max as usize - FILE_HEADER_LEN) / OFFSET_ENTRY_LEN;
        Self {
            log_bytes: u64::from(config.segment_bytes_max).max(FILE_HEADER_LEN as u64 + batch_bytes),
            index_entries: (configured as u64).max(points_max).min(u64::from(u32::MAX)) as u32,
        }
    }
}

/// The files and write state of the active segment.
#[derive(Debug)]
pub(crate) struct Writer<Fl> {
    log: Fl,
    offsets: Fl,
    times: Fl,
    capacity: Capacity,
    points: IndexPoints,
    offsets_crc: u32,
    times_crc: u32,
    /// Scratch for the index entries of one batch.
    offset_entries: Vec<u8>,
    time_entries: Vec<u8>,
    /// The `.log`'s blocks below this position have been written (records, or a recycled
    /// file's old bytes, or zeros); above it they are only reserved (`fallocate`d, unwritten).
    written_end: u64,
}

/// How far past a small batch the `.log`'s reserved blocks are zeroed, in the batch's own
/// `pwrite`. On ext4 (and XFS) an `fdatasync` that covers reserved ("unwritten") blocks must
/// also convert them and commit that to the file system journal; zeroing ahead converts a
/// megabyte at a time, so the next syncs are plain data flushes, as in a recycled segment.
pub(crate) const ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// The topic index, in memory while active, mapped once sealed.
#[derive(Debug)]
pub(crate) enum Topics {
    Active(ActiveTopics),
    Sealed(SealedTopics),
}

/// One segment; see the module doc.
#[derive(Debug)]
pub(crate) struct Segment<Fl> {
    pub(crate) base_offset: u64,
    /// One past the last record's offset.
    pub(crate) next_offset: u64,
    /// Position just after the last record.
    pub(crate) data_end: u64,
    /// Timestamp of the first record, known for segments opened as active (age roll).
    pub(crate) ts_first_ms: Option<u64>,
    pub(crate) ts_max_ms: Option<u64>,
    pub(crate) paths: SegmentPaths,
    pub(crate) log: Map,
    pub(crate) offsets: IndexFile,
    pub(crate) times: IndexFile,
    pub(crate) topics: Topics,
    writer: Option<Writer<Fl>>,
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    Error::io(op, path)
}

/// Creates an index file holding `entries` after an active header, with room for `capacity`
/// entries in total.
fn create_index<F: FileSystem>(
    fs: &F,
    path: &Path,
    kind: FileKind,
    base_offset: u64,
    entries: &[u8],
    capacity: u32,
) -> Result<F::File> {
    let file = fs.create(path).map_err(io_at("create", path))?;
    let header = FileHeader::active(kind, base_offset).encode();
    file.write_all_at(&header, 0).map_err(io_at("pwrite", path))?;
    file.write_all_at(entries, FILE_HEADER_LEN as u64).map_err(io_at("pwrite", path))?;
    let len = FILE_HEADER_LEN as u64 + u64::from(capacity) * kind.entry_len() as u64;
    file.allocate(len).map_err(io_at("fallocate", path))?;
    Ok(file)
}

impl<Fl: File> Segment<Fl> {
    /// Creates the files of a new, empty active segment at `base_offset` and makes them
    /// durable, reusing the `spare` file (a deleted segment's `.log`) if given. On failure,
    /// removes what it created; nothing else changed (a spare may be gone).
    pub(crate) fn create<F: FileSystem<File = Fl>>(
        fs: &F,
        dir: &Path,
        base_offset: u64,
        capacity: Capacity,
        config: &LogConfig,
        spare: Option<&Path>,
    ) -> Result<Self> {
        let paths = SegmentPaths::new(dir, base_offset);
        let created = Self::create_files(fs, dir, &paths, base_offset, capacity, config, spare);
        if created.is_err() {
            for path in paths.all().into_iter().map(Path::to_owned).chain([tmp_path(&paths.log)]) {
                let _ = fs.remove_file(&path);
            }
        }
        created
    }

    fn create_files<F: FileSystem<File = Fl>>(
        fs: &F,
        dir: &Path,
        paths: &SegmentPaths,
        base_offset: u64,
        mut capacity: Capacity,
        config: &LogConfig,
        spare: Option<&Path>,
    ) -> Result<Self> {
        // A `.tpx` left at this base (a repair cut here) would mark the new segment sealed.
        match fs.remove_file(&paths.topics) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("unlink", &paths.topics)(e));
            }
            _ => {}
        }
        // The `.log` appears under its name only complete: header written, space reserved.
        let mut written_end = FILE_HEADER_LEN as u64;
        let (from, log, header) = match spare {
            Some(spare) => {
                let log = fs.open(spare).map_err(io_at("open", spare))?;
                written_end = log.len_bytes().map_err(io_at("stat", spare))?;
                capacity.log_bytes = capacity.log_bytes.max(written_end);
                let header =
                    FileHeader { flags: FLAG_RECYCLED, ..FileHeader::active(FileKind::Log, base_offset) };
                (spare.to_owned(), log, header)
            }
            None => {
                let tmp = tmp_path(&paths.log);
                let log = fs.create(&tmp).map_err(io_at("create", &tmp))?;
                (tmp, log, FileHeader::active(FileKind::Log, base_offset))
            }
        };
        log.write_all_at(&header.encode(), 0).map_err(io_at("pwrite", &from))?;
        log.allocate(capacity.log_bytes).map_err(io_at("fallocate", &from))?;
        log.sync_all().map_err(io_at("fsync", &from))?;
        fs.rename(&from, &paths.log).map_err(io_at("rename", &from))?;
        let offsets = create_index(
            fs,
            &paths.offsets,
            FileKind::OffsetIndex,
            base_offset,
            &[],
            capacity.index_entries,
        )?;
        let times =
            create_index(fs, &paths.times, FileKind::TimeIndex, base_offset, &[], capacity.index_entries)?;
        fs.sync_dir(dir).map_err(io_at("fsync", dir))?;
        let writer = Writer {
            capacity,
            points: IndexPoints::new(config.index_interval_bytes),
            offsets_crc: 0,
            times_crc: 0,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            written_end,
            log,
            offsets,
            times,
        };
        Self::with_writer(paths.clone(), base_offset, writer, Vec::new(), Vec::new())
    }

    fn with_writer(
        paths: SegmentPaths,
        base_offset: u64,
        writer: Writer<Fl>,
        offset_entries: Vec<u8>,
        time_entries: Vec<u8>,
    ) -> Result<Self> {
        let log = writer.log.map().map_err(io_at("mmap", &paths.log))?;
        Ok(Self {
            base_offset,
            next_offset: base_offset,
            data_end: FILE_HEADER_LEN as u64,
            ts_first_ms: None,
            ts_max_ms: None,
            paths,
            log,
            offsets: IndexFile::active(FileKind::OffsetIndex, offset_entries),
            times: IndexFile::active(FileKind::TimeIndex, time_entries),
            topics: Topics::Active(ActiveTopics::default()),
            writer: Some(writer),
        })
    }

    /// Makes the segment whose `.log` was scanned into `scan` the active segment: cuts the
    /// `.log` at the scan's end (removing any torn bytes), reserves `capacity`, rebuilds the
    /// index files from the scan, and drops a stale `.tpx`. No map of `log` may be alive.
    pub(crate) fn recover<F: FileSystem<File = Fl>>(
        fs: &F,
        paths: SegmentPaths,
        base_offset: u64,
        log: Fl,
        scan: Scan,
        capacity: Capacity,
    ) -> Result<Self> {
        let Scan { end, next_offset, offset_entries, time_entries, points, topics, ts_first_ms, .. } = scan;
        let count = (offset_entries.len() / OFFSET_ENTRY_LEN) as u32;
        let capacity = Capacity {
            log_bytes: capacity.log_bytes.max(end),
            index_entries: capacity.index_entries.max(count),
        };
        log.set_len(end).map_err(io_at("ftruncate", &paths.log))?;
        log.allocate(capacity.log_bytes).map_err(io_at("fallocate", &paths.log))?;
        log.sync_all().map_err(io_at("fsync", &paths.log))?;
        match fs.remove_file(&paths.topics) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("unlink", &paths.topics)(e));
            }
            _ => {}
        }
        let offsets = create_index(
            fs,
            &paths.offsets,
            FileKind::OffsetIndex,
            base_offset,
            &[],
            capacity.index_entries,
        )?;
        let times =
            create_index(fs, &paths.times, FileKind::TimeIndex, base_offset, &[], capacity.index_entries)?;
        let ts_max_ms = points.ts_max_ms();
        let writer = Writer {
            capacity,
            points,
            offsets_crc: crc32c::crc32c(&offset_entries),
            times_crc: crc32c::crc32c(&time_entries),
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            written_end: end,
            log,
            offsets,
            times,
        };
        let mut seg = Self::with_writer(paths, base_offset, writer, offset_entries, time_entries)?;
        debug_assert_eq!(seg.offsets.count(), count);
        seg.next_offset = next_offset;
        seg.data_end = end;
        seg.ts_first_ms = ts_first_ms;
        seg.ts_max_ms = ts_max_ms;
        seg.topics = Topics::Active(topics);
        Ok(seg)
    }

    /// Opens a sealed segment whose `.log` (already checked: header, base) is `log`, if its
    /// seal and indexes are consistent (FORMAT.md section 8); `Ok(None)` means "rebuild".
    pub(crate) fn open_sealed<F: FileSystem<File = Fl>>(
        fs: &F,
        paths: SegmentPaths,
        base_offset: u64,
        log: &Fl,
    ) -> Result<Option<Self>> {
        let tpx = match fs.open(&paths.topics) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &paths.topics)(e)),
        };
        let tpx_len = tpx.len_bytes().map_err(io_at("stat", &paths.topics))?;
        let tpx_map = tpx.map().map_err(io_at("mmap", &paths.topics))?;
        let Ok(header) = TopicHeader::decode(base_offset, &tpx_map, tpx_len) else { return Ok(None) };
        let log_len = log.len_bytes().map_err(io_at("stat", &paths.log))?;
        if log_len != header.log_bytes {
            return Ok(None);
        }
        let Some(offsets) =
            open_sealed_index(fs, &paths.offsets, FileKind::OffsetIndex, base_offset, &header)?
        else {
            return Ok(None);
        };
        let Some(times) = open_sealed_index(fs, &paths.times, FileKind::TimeIndex, base_offset, &header)?
        else {
            return Ok(None);
        };
        if offsets.count() != times.count() {
            return Ok(None);
        }
        let log_map = log.map().map_err(io_at("mmap", &paths.log))?;
        Ok(Some(Self {
            base_offset,
            next_offset: header.next_offset,
            data_end: log_len,
            ts_first_ms: None,
            ts_max_ms: Some(header.ts_max_ms),
            paths,
            log: log_map,
            offsets,
            times,
            topics: Topics::Sealed(SealedTopics::new(tpx_map, header, false)),
            writer: None,
        }))
    }

    pub(crate) fn is_active(&self) -> bool {
        self.writer.is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    /// The bytes of the `.log` up to the end of the last record.
    pub(crate) fn log_bytes(&self) -> &[u8] {
        self.log.get(..self.data_end as usize).unwrap_or(&self.log)
    }

    fn writer(&mut self) -> &mut Writer<Fl> {
        self.writer.as_mut().expect("only the active segment is written")
    }

    /// True if a batch of `records` records and `bytes` bytes fits without growing files.
    pub(crate) fn fits(&self, records: usize, bytes: u64) -> bool {
        let w = self.writer.as_ref().expect("only the active segment is written");
        let points = u64::from(self.offsets.count()) + w.points.points_max(records, bytes);
        self.data_end + bytes <= w.capacity.log_bytes && points <= u64::from(w.capacity.index_entries)
    }

    /// Grows the (active) files to `capacity`: extending a mapped file is safe, and the map
    /// is replaced only once the space is reserved, so a failure changes nothing.
    pub(crate) fn grow(&mut self, capacity: Capacity) -> Result<()> {
        let paths = self.paths.clone();
        let w = self.writer();
        let capacity = Capacity {
            log_bytes: capacity.log_bytes.max(w.capacity.log_bytes),
            index_entries: capacity.index_entries.max(w.capacity.index_entries),
        };
        let index_len = |kind: FileKind| {
            FILE_HEADER_LEN as u64 + u64::from(capacity.index_entries) * kind.entry_len() as u64
        };
        w.log.allocate(capacity.log_bytes).map_err(io_at("fallocate", &paths.log))?;
        w.offsets.allocate(index_len(FileKind::OffsetIndex)).map_err(io_at("fallocate", &paths.offsets))?;
        w.times.allocate(index_len(FileKind::TimeIndex)).map_err(io_at("fallocate", &paths.times))?;
        let log = w.log.map().map_err(io_at("mmap", &paths.log))?;
        w.capacity = capacity;
        self.log = log;
        Ok(())
    }

    /// Appends `records` as one `pwrite` (the caller checked [`Self::fits`]); their index
    /// entries and topics are kept in memory until the seal. `buf` is scratch. On error the in-memory state is unchanged, but the
    /// files may hold part of the batch: the caller must poison the log.
    pub(crate) fn write_batch(&mut self, records: &[Record<'_>], buf: &mut Vec<u8>) -> Result<()> {
        let (base, data_end, next_offset) = (self.base_offset, self.data_end, self.next_offset);
        let paths = &self.paths;
        let w = self.writer.as_mut().expect("only the active segment is written");
        buf.clear();
        w.offset_entries.clear();
        w.time_entries.clear();
        let mut points = w.points.clone();
        buf.reserve(records.iter().map(|r| record_len(r.topic, r.payload) as usize).sum());
        for (i, r) in records.iter().enumerate() {
            let offset = next_offset + i as u64;
            let position = data_end + buf.len() as u64;
            if let Some((o, t)) = points.observe((offset - base) as u32, position, r.timestamp_ms) {
                w.offset_entries.extend_from_slice(&o);
                w.time_entries.extend_from_slice(&t);
            }
            encode_record(buf, offset, r.timestamp_ms, r.topic, r.payload);
        }
        let records_len = buf.len() as u64;
        let batch_end = data_end + records_len;
        debug_assert!(batch_end <= w.capacity.log_bytes);
        if batch_end > w.written_end && records_len < ZERO_AHEAD_BYTES {
            let zero_to = (batch_end + ZERO_AHEAD_BYTES).min(w.capacity.log_bytes);
            buf.resize((zero_to - data_end) as usize, 0);
        }
        w.log.write_all_at(buf, data_end).map_err(io_at("pwrite", &paths.log))?;
        w.written_end = w.written_end.max(data_end + buf.len() as u64);
        // Everything is written: publish it.
        debug_assert_eq!(w.time_entries.len() / TIME_ENTRY_LEN, w.offset_entries.len() / OFFSET_ENTRY_LEN);
        w.offsets_crc = crc32c::crc32c_append(w.offsets_crc, &w.offset_entries);
        w.times_crc = crc32c::crc32c_append(w.times_crc, &w.time_entries);
        w.points = points;
        let ts_max = w.points.ts_max_ms();
        self.offsets.push(&w.offset_entries);
        self.times.push(&w.time_entries);
        let Topics::Active(topics) = &mut self.topics else {
            unreachable!("an active segment has active topics")
        };
        topics.push_batch(records.iter().map(|r| r.topic), (next_offset - base) as u32);
        self.ts_first_ms = self.ts_first_ms.or(records.first().map(|r| r.timestamp_ms));
        self.ts_max_ms = ts_max;
        self.data_end = batch_end;
        self.next_offset += records.len() as u64;
        Ok(())
    }

    /// `fdatasync` of the active `.log`.
    pub(crate) fn sync(&self) -> Result<()> {
        let w = self.writer.as_ref().expect("only the active segment is synced");
        w.log.sync_data().map_err(io_at("fdatasync", &self.paths.log))
    }

    /// Seals the active segment (FORMAT.md section 7, roll step 3): indexes truncated to their
    /// entries with a sealed header, `.log` truncated to its records, `.tpx` written. The
    /// caller synced the `.log` and poisons the log if this fails.
    pub(crate) fn seal<F: FileSystem<File = Fl>>(&mut self, fs: &F, dir: &Path) -> Result<()> {
        debug_assert!(!self.is_empty(), "an empty segment is never sealed");
        let w = self.writer.take().expect("only the active segment seals");
        debug_assert_eq!(self.offsets.count(), self.times.count());
        let map = seal_index(
            &w.offsets,
            &self.paths.offsets,
            FileKind::OffsetIndex,
            self.base_offset,
            self.offsets.entries(),
            w.offsets_crc,
        )?;
        self.offsets.seal_written(map, w.offsets_crc);
        let map = seal_index(
            &w.times,
            &self.paths.times,
            FileKind::TimeIndex,
            self.base_offset,
            self.times.entries(),
            w.times_crc,
        )?;
        self.times.seal_written(map, w.times_crc);

        drop(std::mem::replace(&mut self.log, Map::empty()));
        w.log.set_len(self.data_end).map_err(io_at("ftruncate", &self.paths.log))?;
        w.log.sync_all().map_err(io_at("fsync", &self.paths.log))?;
        self.log = w.log.map().map_err(io_at("mmap", &self.paths.log))?;

        let Topics::Active(topics) = &self.topics else {
            unreachable!("an active segment has active topics")
        };
        let bytes = topics.encode(TopicHeader {
            topic_count: 0,
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            log_bytes: self.data_end,
            ts_max_ms: self.ts_max_ms.unwrap_or(0),
            body_bytes: 0,
            body_crc: 0,
        });
        let tmp = tmp_path(&self.paths.topics);
        let file = fs.create(&tmp).map_err(io_at("create", &tmp))?;
        file.write_all_at(&bytes, 0).map_err(io_at("pwrite", &tmp))?;
        file.sync_all().map_err(io_at("fsync", &tmp))?;
        fs.rename(&tmp, &self.paths.topics).map_err(io_at("rename", &tmp))?;
        let header = TopicHeader::decode(self.base_offset, &bytes, bytes.len() as u64)
            .expect("the topic index just encoded decodes");
        let map = file.map().map_err(io_at("mmap", &self.paths.topics))?;
        self.topics = Topics::Sealed(SealedTopics::new(map, header, true));
        fs.sync_dir(dir).map_err(io_at("fsync", dir))
    }

    /// Unmaps the active `.log` and cuts it to its records, so the next open does not scan the
    /// preallocated zeros. Ends the segment's life: only for `close`.
    pub(crate) fn trim(mut self) -> Result<()> {
        let Some(w) = self.writer.take() else { return Ok(()) };
        drop(std::mem::replace(&mut self.log, Map::empty()));
        w.log.set_len(self.data_end).map_err(io_at("ftruncate", &self.paths.log))?;
        w.log.sync_all().map_err(io_at("fsync", &self.paths.log))
    }

    /// Unmaps the segment and removes its files, `.log` first (which ends its existence).
    pub(crate) fn delete<F: FileSystem<File = Fl>>(self, fs: &F) -> Result<()> {
        let paths = self.paths.clone();
        drop(self);
        remove_files(fs, &paths)
    }

    /// Unmaps the segment, renames its `.log` to `spare` (which ends its existence) and
    /// removes its other files.
    pub(crate) fn recycle<F: FileSystem<File = Fl>>(self, fs: &F, spare: &Path) -> Result<()> {
        let paths = self.paths.clone();
        drop(self);
        fs.rename(&paths.log, spare).map_err(io_at("rename", &paths.log))?;
        remove_files(fs, &paths)
    }
}

/// Removes a segment's files, `.log` first; missing files are fine.
pub(crate) fn remove_files<F: FileSystem>(fs: &F, paths: &SegmentPaths) -> Result<()> {
    for path in paths.all() {
        match fs.remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("unlink", path)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Writes an index file's `entries` (into its preallocated room), truncates it to them, writes
/// its sealed header, syncs, maps.
fn seal_index<Fl: File>(
    file: &Fl,
    path: &Path,
    kind: FileKind,
    base: u64,
    entries: &[u8],
    crc: u32,
) -> Result<Map> {
    let count = (entries.len() / kind.entry_len()) as u32;
    let len = FILE_HEADER_LEN as u64 + entries.len() as u64;
    file.write_all_at(entries, FILE_HEADER_LEN as u64).map_err(io_at("pwrite", path))?;
    file.set_len(len).map_err(io_at("ftruncate", path))?;
    let header = FileHeader {
        kind,
        flags: crate::segment::format::FLAG_SEALED,
        entry_count: count,
        base_offset: base,
        entries_crc: crc,
    };
    file.write_all_at(&header.encode(), 0).map_err(io_at("pwrite", path))?;
    file.sync_all().map_err(io_at("fsync", path))?;
    file.map().map_err(io_at("mmap", path))
}

/// Opens a sealed index file if its header and size agree with the segment's `.tpx`.
fn open_sealed_index<F: FileSystem>(
    fs: &F,
    path: &Path,
    kind: FileKind,
    base: u64,
    seal: &TopicHeader,
) -> Result<Option<IndexFile>> {
    let file = match fs.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path)(e)),
    };
    let map = file.map().map_err(io_at("mmap", path))?;
    let Ok(header) = FileHeader::decode(kind, base, &map) else { return Ok(None) };
    let expected_len = FILE_HEADER_LEN as u64 + u64::from(header.entry_count) * kind.entry_len() as u64;
    if !header.sealed() || header.entry_count == 0 || map.len() as u64 != expected_len {
        return Ok(None);
    }
    let index = IndexFile::sealed(kind, map, header.entry_count, header.entries_crc);
    let first = index.first().expect("count > 0");
    let first_ok = match kind {
        FileKind::OffsetIndex => u32_at(first, 0) == 0 && u32_at(first, 4) == FILE_HEADER_LEN as u32,
        _ => u32_at(first, 8) == 0,
    };
    let fits = u64::from(header.entry_count) <= seal.record_count();
    Ok((first_ok && fits).then_some(index))
}

/// Corruption at `position` of `path`.
pub(crate) fn corrupt(path: &Path, position: u64, offset: Option<u64>, reason: Reason) -> Error {
    Error::Corruption { file: path.to_owned(), position, offset, reason }
}
