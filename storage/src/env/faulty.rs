//! Test support (feature `fault`): [`FaultyFs`], the real file system with faults injected
//! on demand: short writes, failing syncs, a full disk, and crashes after a budget of bytes or
//! operations (which leaves torn writes behind).
//!
//! A "crash" models the process dying: the write that crosses the budget is cut at the
//! budget, and it and every later mutating operation fail, so nothing else reaches the files.
//! Data already written stays (it is in the page cache); the test then drops the log and
//! reopens the directory with a fresh file system. It does not model the loss of unsynced
//! page cache on power failure, beyond the torn tail the byte budget leaves.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{File, FileSystem, Map, OsFile, OsFs, OsLock};

/// Which faults are armed. Change them with [`FaultyFs::set`] at any time.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Every `sync_data`, `sync_all` and `sync_dir` fails with EIO.
    pub sync_fails: bool,
    /// Syncs succeed without reaching the disk (like eatmydata), for tests that never simulate
    /// a power loss and should not wait for the device.
    pub skip_syncs: bool,
    /// The disk is full: `allocate`, and writes past a file's end, fail with ENOSPC.
    pub no_space: bool,
    /// Each `write_at` writes at most half of its buffer (at least one byte).
    pub short_writes: bool,
    /// Crash once this many more bytes have been written; see the module doc.
    pub crash_after_write_bytes: Option<u64>,
    /// Crash before the mutating operation after this many more (writes, syncs, allocations,
    /// truncations, creations, renames, removals).
    pub crash_after_ops: Option<u64>,
    crashed: bool,
    syncs: u64,
}

impl Faults {
    /// True once a crash budget ran out.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// Number of successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }
}

/// [`OsFs`] with injectable faults. Clones share the same [`Faults`].
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    faults: Arc<Mutex<Faults>>,
}

/// A file of [`FaultyFs`].
#[derive(Debug)]
pub struct FaultyFile {
    inner: OsFile,
    path: PathBuf,
    faults: Arc<Mutex<Faults>>,
}

impl FaultyFs {
    /// A file system with no fault armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms or disarms faults.
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut lock(&self.faults));
    }

    /// A copy of the current faults and counters.
    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    fn mutation(&self, what: &str) -> io::Result<()> {
        mutation(&self.faults, what)
    }
}

fn lock(faults: &Mutex<Faults>) -> MutexGuard<'_, Faults> {
    faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn crash_error(what: &str) -> io::Error {
    io::Error::other(format!("injected crash: {what} not performed"))
}

/// Counts one mutating operation against the op budget.
fn mutation(faults: &Mutex<Faults>, what: &str) -> io::Result<()> {
    let mut f = lock(faults);
    if f.crashed {
        return Err(crash_error(what));
    }
    if let Some(ops) = f.crash_after_ops.as_mut() {
        if *ops == 0 {
            f.crashed = true;
            return Err(crash_error(what));
        }
        *ops -= 1;
    }
    Ok(())
}

impl FileSystem for FaultyFs {
    type File = FaultyFile;
    type Lock = OsLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsFs.create_dir_all(dir)
    }

    fn lock(&self, path: &Path) -> io::Result<OsLock> {
        OsFs.lock(path)
    }

    fn open(&self, path: &Path) -> io::Result<FaultyFile> {
        let inner = OsFs.open(path)?;
        Ok(FaultyFile { inner, path: path.to_owned(), faults: Arc::clone(&self.faults) })
    }

    fn create(&self, path: &Path) -> io::Result<FaultyFile> {
        self.mutation("create")?;
        let inner = OsFs.create(path)?;
        Ok(FaultyFile { inner, path: path.to_owned(), faults: Arc::clone(&self.faults) })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.mutation("remove")?;
        OsFs.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutation("rename")?;
        OsFs.rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        OsFs.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutation("sync_dir")?;
        let mut f = lock(&self.faults);
        if f.sync_fails {
            return Err(io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()));
        }
        f.syncs += 1;
        if f.skip_syncs {
            return Ok(());
        }
        drop(f);
        OsFs.sync_dir(dir)
    }
}

impl FaultyFile {
    fn sync(&self, what: &str, op: impl FnOnce(&OsFile) -> io::Result<()>) -> io::Result<()> {
        mutation(&self.faults, what)?;
        let mut f = lock(&self.faults);
        if f.sync_fails {
            return Err(io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()));
        }
        f.syncs += 1;
        if f.skip_syncs {
            return Ok(());
        }
        drop(f);
        op(&self.inner)
    }
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

impl File for FaultyFile {
    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        mutation(&self.faults, "write")?;
        let mut f = lock(&self.faults);
        if f.no_space && pos + buf.len() as u64 > self.inner.len_bytes()? {
            return Err(no_space());
        }
        let mut n = buf.len();
        if f.short_writes && n > 1 {
            n /= 2;
        }
        if let Some(budget) = f.crash_after_write_bytes.as_mut() {
            if (n as u64) >= *budget {
                let cut = *budget as usize;
                f.crashed = true;
                drop(f);
                if cut > 0 {
                    self.inner.write_all_at(&buf[..cut], pos)?;
                }
                return Err(crash_error(&format!("write to {} cut after {cut} bytes", self.path.display())));
            }
            *budget -= n as u64;
        }
        drop(f);
        self.inner.write_at(&buf[..n], pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync("sync_data", OsFile::sync_data)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync("sync_all", OsFile::sync_all)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        mutation(&self.faults, "allocate")?;
        if lock(&self.faults).no_space && len > self.inner.len_bytes()? {
            return Err(no_space());
        }
        self.inner.allocate(len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        mutation(&self.faults, "set_len")?;
        self.inner.set_len(len)
    }

    fn map(&self) -> io::Result<Map> {
        self.inner.map()
    }
}
