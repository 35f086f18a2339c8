//! SHELL. Every file access of the crate goes through [`FileSystem`] and [`File`], as in
//! raft-engine's `env`, so tests can inject disk faults (`faulty`, feature `fault`).
//!
//! [`OsFs`] is the real implementation: `pwrite`/`pread`, `fdatasync`, `fallocate`, `flock`
//! through rustix (safe wrappers, no `unsafe` here), and read-only memory maps through
//! `map`, the crate's only module with `unsafe`.
//!
//! Invariants the rest of the crate relies on:
//! - [`File::allocate`] reserves real blocks (never a sparse hole), so a later write into the
//!   reserved range cannot fail for lack of space and a map over it cannot SIGBUS on a full
//!   disk;
//! - [`File::set_len`] panics if a [`Map`] of the file is alive: truncating a mapped file
//!   would turn reads through the map into SIGBUS. This is a programmer error, not an
//!   operating one.

#[cfg(feature = "fault")]
pub mod faulty;
mod map;

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

pub use map::Map;

/// A directory tree of files, as the log sees it.
pub trait FileSystem: Send + Sync + 'static {
    /// An open file.
    type File: File;
    /// Held while a directory is locked.
    type Lock: Send + Sync + 'static;

    /// Creates `dir` and its parents if needed.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if needed) without blocking; an error of
    /// kind `WouldBlock` means someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<Self::Lock>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates a file for reading and writing, truncating it if it exists. The caller
    /// guarantees no map of an existing file at `path` is alive.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` atomically, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Positions are absolute; there is no cursor.
pub trait File: Send + Sync + 'static {
    /// Current length in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Reads at most `buf.len()` bytes at `pos`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes at most `buf.len()` bytes at `pos` (`pwrite`); returns how many were written.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize>;
    /// `fdatasync`: makes written data, and the metadata needed to read it, durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: makes data and all metadata durable.
    fn sync_all(&self) -> io::Result<()>;
    /// Reserves real blocks for `[0, len)`, extending the file to `len` if it is shorter;
    /// never shrinks it. The new bytes read as zeros.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len`.
    ///
    /// # Panics
    /// If a [`Map`] of this file is alive.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Maps the whole file (its current length) read-only.
    fn map(&self) -> io::Result<Map>;

    /// Writes all of `buf` at `pos`, retrying short writes and `EINTR`.
    fn write_all_at(&self, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, pos) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes")),
                Ok(n) => {
                    buf = &buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `pos`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

/// A file of [`OsFs`].
#[derive(Debug)]
pub struct OsFile {
    file: fs::File,
    /// One strong count per live [`Map`] of this file, plus this one.
    maps: Arc<()>,
}

/// The lock of [`OsFs::lock`]: the `flock` is released when this is dropped (file closed).
#[derive(Debug)]
pub struct OsLock {
    _file: fs::File,
}

impl FileSystem for OsFs {
    type File = OsFile;
    type Lock = OsLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn lock(&self, path: &Path) -> io::Result<OsLock> {
        let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(OsLock { _file: file })
    }

    fn open(&self, path: &Path) -> io::Result<OsFile> {
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        Ok(OsFile { file, maps: Arc::new(()) })
    }

    fn create(&self, path: &Path) -> io::Result<OsFile> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)?;
        Ok(OsFile { file, maps: Arc::new(()) })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

impl File for OsFile {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        Ok(rustix::io::pread(&self.file, buf, pos)?)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        Ok(rustix::io::pwrite(&self.file, buf, pos)?)
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(rustix::fs::fdatasync(&self.file)?)
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.file)?)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len_bytes()?;
        if len <= current {
            return Ok(());
        }
        allocate(&self.file, current, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        assert_eq!(Arc::strong_count(&self.maps), 1, "set_len on a mapped file would turn reads into SIGBUS");
        Ok(rustix::fs::ftruncate(&self.file, len)?)
    }

    fn map(&self) -> io::Result<Map> {
        let len = self.len_bytes()?;
        map::map_file(&self.file, len, Arc::clone(&self.maps))
    }
}

/// Reserves blocks for `[from, to)` of a file of length `from`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn allocate(file: &fs::File, from: u64, to: u64) -> io::Result<()> {
    loop {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), from, to - from) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            // Some file systems (old NFS, FUSE) cannot preallocate: write the zeros ourselves,
            // which reserves the blocks just as well.
            Err(rustix::io::Errno::OPNOTSUPP) => return write_zeros(file, from, to),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn allocate(file: &fs::File, from: u64, to: u64) -> io::Result<()> {
    write_zeros(file, from, to)
}

fn write_zeros(file: &fs::File, mut from: u64, to: u64) -> io::Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES as usize];
    while from < to {
        let n = (to - from).min(CHUNK_BYTES) as usize;
        let written = rustix::io::pwrite(file, &zeros[..n], from)?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        from += written as u64;
    }
    Ok(())
}
