//! CORE. The routing indexes, shared by the single-node broker and (next) by the replicas of
//! the route and retained ranges: the subscription trie (topic filter -> subscribers), the
//! retained-message tree, shared-subscription groups, and the application message they hold.
//!
//! `broker` re-exports these modules under their old paths (`broker::trie`, ...). Still in
//! `broker/` and moving here with the broker seam: the delivery plan (match results -> one
//! delivery per session, grouped by owner node).

pub mod message;
pub mod retained;
pub mod shared;
pub mod trie;
