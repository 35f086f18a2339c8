//! CORE. What a replica hands back for a request: [`Response`] = request id + outcome.

use super::error::RequestError;
use super::range::RangeDescriptor;

/// The successful result of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put or delete was applied.
    Written,
    /// A compare-and-set was applied; `previous` is the value it compared against.
    Cas {
        /// Whether the swap happened.
        succeeded: bool,
        /// The value before the command.
        previous: Option<Vec<u8>>,
    },
    /// A point read.
    Value(Option<Vec<u8>>),
    /// A scan, in key order.
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
    /// A match: per topic of the query, in order, the matching `(key, value)` rows.
    Matched(Vec<Vec<(Vec<u8>, Vec<u8>)>>),
    /// A membership change was applied; the descriptor after it.
    ConfChanged(RangeDescriptor),
    /// An empty entry (a new leader's no-op); never the answer to a request.
    Noop,
    /// A split was applied; the new group's descriptor.
    Split(RangeDescriptor),
    /// A batch was not applied: the guard on `key` did not hold.
    GuardFailed {
        /// The guarded key.
        key: Vec<u8>,
        /// The epoch the key holds (`None`: absent or not a fenced record).
        current: Option<u64>,
    },
    /// A fence was applied.
    Fenced {
        /// The record's epoch now.
        epoch: u64,
        /// Its generation now.
        generation: u64,
        /// The value before the fence.
        previous: Option<Vec<u8>>,
    },
}

/// The answer to the request the shell tagged with `request_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The id the shell passed in with the request.
    pub request_id: u64,
    /// What happened.
    pub result: Result<Outcome, RequestError>,
}
