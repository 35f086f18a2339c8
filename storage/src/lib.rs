//! Durable storage for Flotilla.
//!
//! This crate will own the offset-indexed, memory-mapped segment log that every message-log
//! raft group uses for QoS replay (records with length, CRC32C and offset; sparse offset,
//! time and topic indexes; group commit; recovery of torn tails), plus the `FileSystem` trait
//! through which every file access goes so tests can inject disk faults. Synchronous, no
//! tokio. Nothing is implemented yet; see the storage issue.
#![deny(missing_docs)]
