//! Durable storage for Flotilla: the append-only, offset-indexed, memory-mapped segment log
//! that every message-log raft group uses for QoS replay (ARCHITECTURE.md sections 9 and 11).
//!
//! Crate map (CORE = pure, over byte slices; SHELL = does IO):
//! - [`SegmentLog`] SHELL: open (with recovery), [`append`](SegmentLog::append) with group
//!   commit, reads by offset, topic and time, retention, close;
//! - the on-disk format (records with length, CRC32C, offset, timestamp and topic; sparse
//!   offset index; time index; per-segment topic index) is CORE, specified in
//!   `storage/FORMAT.md`;
//! - [`env`](mod@env) SHELL: the [`FileSystem`](env::FileSystem) trait every file access goes
//!   through, [`OsFs`], and (feature `fault`) the fault-injecting `FaultyFs`;
//! - [`LogConfig`]: sizes, sync policy, retention and recovery mode;
//! - [`Error`]: what a caller can act on; [`Error::Poisoned`] after a failed write or sync.
//!
//! Synchronous, no tokio, and no clock: operations that depend on time take `now_ms` (the
//! caller's milliseconds). One `SegmentLog` owns its directory (`flock`); reads take `&self`
//! and return records borrowed from the maps, appends take `&mut self`.
//!
//! Disk: segments are preallocated with `fallocate` (a full disk is an `ENOSPC` error when a
//! segment is created, never a SIGBUS), and the files of segments deleted by retention are
//! reused for new ones ([`LogConfig::recycle_segments_max`]) so that, in steady state, each
//! `fdatasync` overwrites blocks that are already allocated.
//!
//! Durability contract: a record is acknowledged once its offset is below
//! [`SegmentLog::durable_offset`]. After a crash, open keeps every complete record (synced or
//! not), truncates a torn tail, and reports any other damage as [`Error::Corruption`] naming
//! the file and byte position.
#![deny(missing_docs)]

mod config;
pub mod env;
mod error;
mod segment;

pub use config::{LogConfig, RecoveryMode, Retention, SyncPolicy};
pub use env::OsFs;
pub use error::{Error, Reason, Result};
pub use segment::format::RecordRef;
pub use segment::recovery::{Cut, RecoveryReport};
pub use segment::{Record, RetainReport, SegmentInfo, SegmentLog, TOPIC_BYTES_MAX};
