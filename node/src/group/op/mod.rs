//! CORE. The operations of [`GroupPeer`](super::GroupPeer), one file each; every file is an
//! `impl GroupPeer` block plus the request types it takes.

pub(crate) mod apply;
pub mod conf_change;
pub(crate) mod hibernate;
pub mod propose;
pub mod read;
pub(crate) mod ready;
pub mod split;
pub(crate) mod step;
pub mod transfer_leader;
