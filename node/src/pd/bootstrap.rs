//! CORE. The MQTT keyspace bootstrap, run by the PD leader once it has a quorum: the ranges
//! of the key families (`cluster::keys::bootstrap_plan`) are created once, automatically.
//!
//! The plan is recorded in the PD group under [`BOOTSTRAP_KEY`] before any range exists
//! (compare-and-set from absent, so two leaders cannot record two plans), then every voter of
//! every planned range is asked to create its initial replica (`PdMessage::Create`, repeated
//! each second until the range's leader reports it), then the record is marked done. A new
//! PD leader reads the record and carries on where the last one stopped; creating a replica
//! that exists is a no-op on the node, so nothing runs twice.
//!
//! ```text
//! record := state:u8 (1 planned | 2 done) count desc*
//! ```

use crate::codec::{CodecError, Reader, put_uvarint};
use crate::group::{GroupId, NodeId, RangeDescriptor};

/// The PD group key of the bootstrap record.
pub const BOOTSTRAP_KEY: &[u8] = b"bootstrap/mqtt";
/// How often missing ranges are asked for again.
pub const CREATE_EVERY_MS: u64 = 1000;

/// Where the bootstrap stands, as the PD leader knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapState {
    /// Not read from the PD group yet (a new leader).
    Unknown,
    /// Nothing recorded: no bootstrap has started.
    Absent,
    /// Recorded; some ranges may not exist yet.
    Planned(Vec<RangeDescriptor>),
    /// Every range exists.
    Done(Vec<RangeDescriptor>),
}

impl BootstrapState {
    /// Short name for reports: `unknown`, `absent`, `planned`, `done`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Absent => "absent",
            Self::Planned(_) => "planned",
            Self::Done(_) => "done",
        }
    }

    /// The record's encoding (planned or done; others have none).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (tag, ranges) = match self {
            Self::Planned(r) => (1, r),
            Self::Done(r) => (2, r),
            Self::Unknown | Self::Absent => return None,
        };
        let mut buf = vec![tag];
        put_uvarint(&mut buf, ranges.len() as u64);
        for d in ranges {
            d.encode(&mut buf);
        }
        Some(buf)
    }

    /// Reads a record (`None`: the key is absent).
    pub fn decode(value: Option<&[u8]>) -> Result<Self, CodecError> {
        let Some(value) = value else { return Ok(Self::Absent) };
        let mut r = Reader::new(value);
        let tag = r.u8()?;
        let n = r.count(8)?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            ranges.push(RangeDescriptor::decode(&mut r)?);
        }
        r.finish()?;
        match tag {
            1 => Ok(Self::Planned(ranges)),
            2 => Ok(Self::Done(ranges)),
            t => Err(CodecError::UnknownTag(t)),
        }
    }
}

/// What the PD leader does next about the bootstrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapAction {
    /// Nothing now.
    Wait,
    /// Read the record.
    Read,
    /// Record `plan` (compare-and-set from absent).
    Record(Vec<RangeDescriptor>),
    /// Ask these voters to create these ranges.
    Create(Vec<(NodeId, RangeDescriptor)>),
    /// Every range exists: mark the record done.
    Finish(Vec<RangeDescriptor>),
}

/// Decides the next bootstrap action.
///
/// `ready` says the nodes the plan needs are up; `plan` builds it; `exists` says whether the
/// PD view has a range; `since_create_ms` is the time since the last `Create` round.
pub fn next_action(
    state: &BootstrapState,
    ready: bool,
    plan: impl FnOnce() -> Vec<RangeDescriptor>,
    exists: impl Fn(GroupId) -> bool,
    since_create_ms: u64,
) -> BootstrapAction {
    match state {
        BootstrapState::Unknown => BootstrapAction::Read,
        BootstrapState::Absent if ready => BootstrapAction::Record(plan()),
        BootstrapState::Absent | BootstrapState::Done(_) => BootstrapAction::Wait,
        BootstrapState::Planned(ranges) => {
            let missing: Vec<&RangeDescriptor> = ranges.iter().filter(|d| !exists(d.id)).collect();
            if missing.is_empty() {
                return BootstrapAction::Finish(ranges.clone());
            }
            if since_create_ms < CREATE_EVERY_MS {
                return BootstrapAction::Wait;
            }
            BootstrapAction::Create(
                missing.into_iter().flat_map(|d| d.voters.iter().map(move |&v| (v, d.clone()))).collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<RangeDescriptor> {
        crate::cluster::keys::bootstrap_plan(&[1, 2, 3], 3, 2).ranges
    }

    #[test]
    fn record_round_trips_and_garbage_is_an_error() {
        for s in [BootstrapState::Planned(plan()), BootstrapState::Done(plan())] {
            let bytes = s.encode().expect("encodes");
            assert_eq!(BootstrapState::decode(Some(&bytes)), Ok(s));
        }
        assert_eq!(BootstrapState::decode(None), Ok(BootstrapState::Absent));
        assert!(BootstrapState::decode(Some(&[9, 0])).is_err());
        assert!(BootstrapState::decode(Some(&[1, 200])).is_err());
    }

    #[test]
    fn bootstrap_runs_read_record_create_finish_once() {
        let st = BootstrapState::Unknown;
        assert_eq!(next_action(&st, true, plan, |_| false, 0), BootstrapAction::Read);
        assert_eq!(next_action(&BootstrapState::Absent, false, plan, |_| false, 0), BootstrapAction::Wait);
        assert_eq!(
            next_action(&BootstrapState::Absent, true, plan, |_| false, 0),
            BootstrapAction::Record(plan())
        );
        let planned = BootstrapState::Planned(plan());
        let first = plan()[0].id;
        assert_eq!(next_action(&planned, true, plan, |_| false, 10), BootstrapAction::Wait, "paced");
        let BootstrapAction::Create(asks) = next_action(&planned, true, plan, |id| id != first, 5000) else {
            panic!("creates the missing range")
        };
        assert_eq!(asks.len(), 3, "each voter of the one missing range");
        assert!(asks.iter().all(|(_, d)| d.id == first));
        assert_eq!(next_action(&planned, true, plan, |_| true, 0), BootstrapAction::Finish(plan()));
        assert_eq!(
            next_action(&BootstrapState::Done(plan()), true, plan, |_| false, 9999),
            BootstrapAction::Wait
        );
    }
}
