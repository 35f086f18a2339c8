//! CORE. The routing indexes, shared by the single-node broker and (next) by the replicas of
//! the route and retained ranges: the subscription trie (topic filter -> subscribers), the
//! retained-message tree, shared-subscription groups, and the application message they hold.
//!
//! `broker` re-exports these modules under their old paths (`broker::trie`, ...).  The delivery
//! plan ([`plan`]) folds match results into one delivery per session.

pub mod message;
pub mod plan;
pub mod retained;
pub mod shared;
pub mod trie;
