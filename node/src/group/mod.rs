//! CORE. One replica of one range-partitioned raft group, sans-IO and deterministic.
//!
//! [`GroupPeer`] wraps a raft-rs `RawNode` for the range `[start, end)` at epoch
//! `{version, conf_ver}` ([`RangeDescriptor`]) and a key-value state machine ([`KvState`]).
//! The shell feeds it messages, ticks and requests, persists the [`WriteTask`]s it hands
//! out, and ships its [`GroupMessage`]s; see [`peer`] for the call order.
//!
//! Layout (TiKV raftstore-v2): state in [`peer`], one file per operation in [`op`]
//! (propose, read, apply, ready, step, conf change, leader transfer, hibernation), the
//! command codec in [`command`], the raft `Storage` in [`storage`].
//!
//! Timing (ARCHITECTURE.md §15): tick 200 ms, heartbeat every tick, election timeout
//! randomized in [10, 20) ticks, pre-vote and check-quorum on, lease 1.6 s, hibernation
//! after 50 idle ticks (10 s).

pub mod command;
pub mod config;
pub mod error;
pub mod event;
pub mod kv;
pub mod logging;
pub mod mem_log;
pub mod message;
pub mod op;
pub mod peer;
pub mod proto_scan;
pub mod range;
pub mod response;
pub mod sm;
mod snapshot;
pub mod storage;
#[cfg(test)]
mod tests;
pub mod write_task;

pub use crate::codec::CodecError;
pub use command::Command;
pub use config::PeerConfig;
pub use error::{GroupError, RequestError};
pub use event::{PeerEvent, Role};
pub use kv::KvState;
pub use logging::{TracingDrain, raft_logger};
pub use mem_log::MemLog;
pub use message::{GroupMessage, MessageBody};
pub use op::conf_change::PeerChange;
pub use op::propose::WriteRequest;
pub use op::read::{MATCH_TOPICS_MAX, Query, ReadPolicy, ReadRequest};
pub use peer::{GroupPeer, PeerStatus, SplitChild};
pub use range::{Epoch, EpochCheck, GroupId, NodeId, RangeDescriptor};
pub use response::{Outcome, Response};
pub use sm::StateMachine;
pub use storage::{LogStore, PeerStorage};
pub use write_task::{INIT_INDEX, INIT_TERM, PersistedState, WriteTask};
