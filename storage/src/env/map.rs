//! SHELL. Read-only memory maps: the only `unsafe` in the crate.
//!
//! memmap2's constructors are `unsafe` because the bytes behind a map can change or vanish
//! under it: another writer makes `&[u8]` alias mutable memory, and a file truncated below a
//! mapped page turns every access to that page into SIGBUS. The crate upholds, and this
//! module relies on, these invariants:
//! - **Only this process writes the files.** A log directory is `flock`ed by the open log
//!   (`LOCK`), and the log is the only writer inside the process. Appends only write bytes
//!   past the end of what any reader was handed (positions are published after the `pwrite`),
//!   so no byte a `&[u8]` from a map points at ever changes.
//! - **No mapped file is ever truncated.** [`Map`] holds a clone of its file's `maps` counter
//!   and `File::set_len` asserts that no map is alive; the log drops a file's maps before it
//!   seals (truncates) or deletes it.
//! - **Everything mapped is backed by real blocks.** Files are extended with `fallocate`
//!   (never a sparse `set_len` extension) before they are mapped, and a map never covers more
//!   than the file's length at mapping time, so a full disk cannot turn a read into SIGBUS.
//!
//! Media errors (EIO on a page fault) still raise SIGBUS; that is inherent to mmap reads and
//! is the reason writes go through `pwrite`, where EIO is an error value.

#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::ops::Deref;
use std::sync::Arc;

/// A read-only map of a whole file, as long as the file was when mapped. Derefs to the bytes.
pub struct Map {
    mmap: Option<memmap2::Mmap>,
    /// Keeps the file's live-map count up while this map exists.
    _pin: Option<Arc<()>>,
}

impl Map {
    /// A map of nothing, for a file that has no bytes (or no file yet).
    pub fn empty() -> Self {
        Self { mmap: None, _pin: None }
    }
}

impl Deref for Map {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.mmap.as_deref().unwrap_or(&[])
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map").field("len", &self.len()).finish()
    }
}

/// Maps `[0, len)` of `file`; `pin` is the file's live-map counter.
pub(super) fn map_file(file: &fs::File, len: u64, pin: Arc<()>) -> io::Result<Map> {
    if len == 0 {
        return Ok(Map::empty());
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
    // SAFETY: see the module invariants: the file is written only by this process, and only
    // past the bytes readers hold; it is never truncated while `pin` (carried by the returned
    // map) is alive; and its `len` bytes are allocated blocks, so no access can fault for lack
    // of space.
    let mmap = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Map { mmap: Some(mmap), _pin: Some(pin) })
}
