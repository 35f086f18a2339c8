//! CORE. [`GroupPeer`]: one replica of one range-partitioned raft group — its state and
//! accessors. Each operation lives in its own file under `op/` (TiKV raftstore-v2 layering).
//!
//! Call order, as in raft-rs's `RawNode` and quinn-proto:
//! 1. inputs, in any order: [`step`](GroupPeer::step) for messages from other replicas,
//!    [`tick`](GroupPeer::tick) every `tick_interval` unless [`is_hibernated`]
//!    (GroupPeer::is_hibernated), and requests: [`propose`](GroupPeer::propose),
//!    [`read`](GroupPeer::read), [`propose_conf_change`](GroupPeer::propose_conf_change),
//!    [`transfer_leader`](GroupPeer::transfer_leader);
//! 2. [`ready`](GroupPeer::ready) hands over a [`WriteTask`](super::WriteTask) to make
//!    durable (and applies whatever is committed and durable);
//! 3. once the task is durable, [`on_persisted`](GroupPeer::on_persisted);
//! 4. after any call, drain [`take_messages`](GroupPeer::take_messages) (to the transport),
//!    [`take_responses`](GroupPeer::take_responses) and [`take_events`]
//!    (GroupPeer::take_events); call `ready` again while [`has_ready`](GroupPeer::has_ready).
//!
//! Invariants:
//! - no IO, no clock, no ambient randomness: `now` is passed in, and raft's election timeout
//!   is re-drawn from a seeded rng whenever raft resets it (on every term or role change),
//!   so a run is a function of its inputs and seed;
//! - at most one write task is in flight; `ready` hands out nothing until `on_persisted`;
//! - a removed replica does nothing but report [`PeerEvent::Removed`] and destroy its data.

use std::collections::BTreeMap;

use raft::eraftpb::Message;
use raft::{RawNode, StateRole};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::PeerConfig;
use super::error::GroupError;
use super::event::{PeerEvent, Role};
use super::kv::KvState;
use super::message::{GroupMessage, MessageBody};
use super::op::hibernate::Hibernation;
use super::op::propose::PendingProposal;
use super::op::read::{Lease, PendingRead};
use super::range::{GroupId, NodeId, RangeDescriptor};
use super::response::Response;
use super::sm::StateMachine;
use super::storage::{LogStore, PeerStorage};
use super::write_task::PersistedState;

/// Most events kept between drains; older ones are dropped (the shell drains every round).
const EVENTS_MAX: usize = 1024;

/// A snapshot of a replica's state for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The group.
    pub group_id: GroupId,
    /// This replica's node.
    pub node_id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this replica knows.
    pub leader: Option<NodeId>,
    /// Highest committed index known.
    pub commit: u64,
    /// Highest applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Index of the checkpoint the log starts after.
    pub truncated_index: u64,
    /// Whether the replica stopped ticking.
    pub hibernated: bool,
    /// The applied descriptor.
    pub desc: RangeDescriptor,
    /// Content hash of the state machine.
    pub digest: u64,
    /// Keys in the state machine.
    pub keys: u64,
    /// Bytes of keys and values in the state machine.
    pub size_bytes: u64,
    /// Writes applied by this replica since it started (for write rates).
    pub written_keys: u64,
    /// Bytes of the writes applied by this replica since it started.
    pub written_bytes: u64,
    /// On a leader: replicas still catching up (in snapshot state, or more than
    /// [`PENDING_LAG_ENTRIES`] entries behind the commit index). Empty on followers.
    pub pending: Vec<NodeId>,
}

/// A replica further behind the leader's commit index than this counts as pending.
pub const PENDING_LAG_ENTRIES: u64 = 64;

/// The unpersisted write task and the messages that must wait for it.
pub(super) struct InFlight {
    /// The raft ready number; 0 for tasks that are not a raft ready (destroy, checkpoint).
    pub(super) number: u64,
    pub(super) messages: Vec<Message>,
    /// The index of a snapshot the task installs: raft may count it applied once durable.
    pub(super) snapshot_index: Option<u64>,
}

/// One replica of one raft group over the durable log `L`, applying to the state machine
/// `S` (the key-value map unless a keyspace brings its own).
pub struct GroupPeer<L: LogStore, S: StateMachine = KvState> {
    pub(super) cfg: PeerConfig,
    pub(super) node_id: NodeId,
    pub(super) group_id: GroupId,
    pub(super) raw: RawNode<PeerStorage<L, S>>,
    pub(super) rng: SmallRng,
    /// (term, role, leader) after the last raft call, to detect resets and role changes.
    pub(super) last_role: (u64, StateRole, u64),
    pub(super) in_flight: Option<InFlight>,
    /// Proposals awaiting apply, by log index.
    pub(super) proposals: BTreeMap<u64, PendingProposal>,
    /// Reads awaiting a read index or apply, by read sequence number.
    pub(super) reads: BTreeMap<u64, PendingRead>,
    pub(super) next_read_seq: u64,
    pub(super) lease: Lease,
    pub(super) hibernation: Hibernation,
    pub(super) removed: bool,
    /// The destroy write has not been handed out yet.
    pub(super) destroy_pending: bool,
    /// The shell asked for a checkpoint (to let the shared log drop old files).
    pub(super) checkpoint_requested: bool,
    pub(super) outbox: Vec<GroupMessage>,
    pub(super) responses: Vec<Response>,
    pub(super) events: Vec<PeerEvent>,
    /// Writes applied since start: (commands, bytes of keys and values).
    pub(super) written: (u64, u64),
    /// Groups this replica's applied splits created, for the shell to host (never dropped).
    pub(super) splits: Vec<SplitChild<S>>,
    /// Whether this replica may vote before a snapshot initializes it (false for a replica
    /// re-created on a node it was removed from; see `op::step`).
    pub(super) votes_uninitialized: bool,
}

/// A group created by an applied split, for the shell to create a replica of on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitChild<S = KvState> {
    /// The new group's descriptor.
    pub desc: RangeDescriptor,
    /// Its state machine (the parent's pairs at or after the split key).
    pub kv: S,
    /// The parent's replica here led when it applied the split: the child campaigns at once.
    pub campaign: bool,
}

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Builds (or rebuilds after a restart) the replica of `group_id` on `node_id` from its
    /// durable `log` and `state`. `seed` drives every random choice (election timeouts).
    pub fn new(
        cfg: &PeerConfig,
        node_id: NodeId,
        group_id: GroupId,
        log: L,
        state: PersistedState,
        seed: u64,
        logger: &slog::Logger,
    ) -> Result<Self, GroupError> {
        cfg.validate()?;
        let storage = PeerStorage::recover(log, state)?;
        if storage.applied().0 > 0 && storage.desc().id != group_id {
            return Err(GroupError::Corrupt(format!(
                "checkpoint of group {} under {group_id}",
                storage.desc().id
            )));
        }
        let raft_cfg = cfg.raft_config(node_id, storage.applied().0);
        let logger = logger.new(slog::o!("group" => group_id, "node" => node_id));
        let raw = RawNode::new(&raft_cfg, storage, &logger)?;
        let mut peer = Self {
            cfg: cfg.clone(),
            node_id,
            group_id,
            raw,
            rng: SmallRng::seed_from_u64(seed),
            last_role: (0, StateRole::Follower, 0),
            in_flight: None,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_seq: 1,
            lease: Lease::default(),
            hibernation: Hibernation::default(),
            removed: false,
            destroy_pending: false,
            checkpoint_requested: false,
            outbox: Vec::new(),
            responses: Vec::new(),
            events: Vec::new(),
            written: (0, 0),
            splits: Vec::new(),
            votes_uninitialized: true,
        };
        peer.redraw_election_timeout();
        let r = &peer.raw.raft;
        peer.last_role = (r.term, r.state, r.leader_id);
        Ok(peer)
    }

    /// The group.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// This replica's node (its raft id).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The applied range descriptor (default until an uninitialized replica gets a snapshot).
    pub fn desc(&self) -> &RangeDescriptor {
        self.raw.store().desc()
    }

    /// The applied state machine.
    pub fn kv(&self) -> &S {
        self.raw.store().kv()
    }

    /// The storage (applied state, log bounds).
    pub fn storage(&self) -> &PeerStorage<L, S> {
        self.raw.store()
    }

    /// The durable log.
    pub fn log(&self) -> &L {
        self.raw.store().log()
    }

    /// The durable log, for shells that persist through it (simulations).
    pub fn log_mut(&mut self) -> &mut L {
        self.raw.mut_store().log_mut()
    }

    /// The raft-rs node, read-only, for inspection.
    pub fn raw_node(&self) -> &RawNode<PeerStorage<L, S>> {
        &self.raw
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.raw.raft.state.into()
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this replica knows.
    pub fn leader(&self) -> Option<NodeId> {
        Some(self.raw.raft.leader_id).filter(|&l| l != raft::INVALID_ID)
    }

    /// Whether the replica was removed from its group (the shell should drop it).
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Whether the replica has a snapshot or checkpoint (is not waiting for its first one).
    pub fn is_initialized(&self) -> bool {
        self.raw.store().applied().0 > 0
    }

    /// Requests (proposals plus reads) waiting for an outcome.
    pub fn pending_requests(&self) -> usize {
        self.proposals.len() + self.reads.len()
    }

    /// A status snapshot.
    pub fn status(&self) -> PeerStatus {
        let r = &self.raw.raft;
        PeerStatus {
            group_id: self.group_id,
            node_id: self.node_id,
            role: self.role(),
            term: r.term,
            leader: self.leader(),
            commit: r.raft_log.committed,
            applied: self.raw.store().applied().0,
            last_index: r.raft_log.last_index(),
            truncated_index: self.raw.store().truncated_index(),
            hibernated: self.is_hibernated(),
            desc: self.desc().clone(),
            digest: self.kv().digest(),
            keys: self.kv().len() as u64,
            size_bytes: self.kv().bytes() as u64,
            written_keys: self.written.0,
            written_bytes: self.written.1,
            pending: self.pending_replicas(),
        }
    }

    /// Replicas the leader sees catching up; empty unless this replica leads.
    fn pending_replicas(&self) -> Vec<NodeId> {
        if !self.is_leader() {
            return Vec::new();
        }
        let r = &self.raw.raft;
        let commit = r.raft_log.committed;
        let mut out: Vec<NodeId> = r
            .prs()
            .iter()
            .filter(|&(&id, pr)| {
                id != self.node_id
                    && (pr.state == raft::ProgressState::Snapshot
                        || pr.matched.saturating_add(PENDING_LAG_ENTRIES) < commit)
            })
            .map(|(&id, _)| id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Moves out the messages to send.
    pub fn take_messages(&mut self) -> Vec<GroupMessage> {
        std::mem::take(&mut self.outbox)
    }

    /// Forbids votes until a snapshot initializes this replica: its node was removed from
    /// the group before, and a candidate with an old configuration may still count it.
    pub fn forbid_votes_until_initialized(&mut self) {
        self.votes_uninitialized = false;
    }

    /// Moves out the groups created by applied splits.
    pub fn take_splits(&mut self) -> Vec<SplitChild<S>> {
        std::mem::take(&mut self.splits)
    }

    /// Moves out the answers to requests.
    pub fn take_responses(&mut self) -> Vec<Response> {
        std::mem::take(&mut self.responses)
    }

    /// Moves out the events.
    pub fn take_events(&mut self) -> Vec<PeerEvent> {
        std::mem::take(&mut self.events)
    }

    pub(super) fn push_event(&mut self, event: PeerEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.remove(0);
        }
        self.events.push(event);
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.outbox.push(GroupMessage { group_id: self.group_id, from: self.node_id, to, body });
    }

    pub(super) fn send_raft(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            self.check_outgoing(&m);
            let to = m.to;
            self.send(to, MessageBody::Raft(m));
        }
    }

    /// Pairs the receiver's assumptions: appends carry entries right after `index`, and an
    /// accepted append is only acknowledged up to what this replica's log holds.
    fn check_outgoing(&self, m: &Message) {
        use raft::eraftpb::MessageType;
        match m.get_msg_type() {
            MessageType::MsgAppend => {
                if let Some(first) = m.entries.first() {
                    debug_assert_eq!(
                        first.index,
                        m.index + 1,
                        "group {}: append entries not after index",
                        self.group_id
                    );
                }
            }
            MessageType::MsgAppendResponse if !m.reject => {
                let last = self.raw.raft.raft_log.last_index();
                debug_assert!(
                    m.index <= last,
                    "group {} node {}: acknowledging {} beyond last index {last} (term {})",
                    self.group_id,
                    self.node_id,
                    m.index,
                    m.term
                );
            }
            _ => {}
        }
    }

    /// Bookkeeping after every call into raft-rs: re-draw the election timeout raft just
    /// reset (from our seeded rng instead of raft's thread rng), and react to role changes.
    pub(super) fn after_raft(&mut self) {
        let r = &self.raw.raft;
        let now = (r.term, r.state, r.leader_id);
        let before = self.last_role;
        if now == before {
            return;
        }
        self.last_role = now;
        if (now.0, now.1) != (before.0, before.1) {
            self.redraw_election_timeout();
        }
        let lost = before.1 == StateRole::Leader && (now.1 != StateRole::Leader || now.0 != before.0);
        if lost {
            self.on_lost_leadership();
        }
        if now.1 == StateRole::Leader && (before.1 != StateRole::Leader || before.0 != now.0) {
            self.lease.on_new_term();
        }
        self.wake();
        let leader = self.leader();
        self.push_event(PeerEvent::RoleChanged { role: now.1.into(), term: now.0, leader });
    }

    fn redraw_election_timeout(&mut self) {
        let (lo, hi) = (self.cfg.election_ticks, 2 * self.cfg.election_ticks);
        let t = self.rng.random_range(lo..hi);
        self.raw.raft.set_randomized_election_timeout(t);
    }
}
