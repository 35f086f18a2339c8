//! Faults: the seeded schedule ([`schedule`]), partition rules ([`partition`]) and the
//! executor that applies and heals them while recording every step.

pub mod partition;
pub mod run;
pub mod schedule;

pub use run::execute;
pub use schedule::{Fault, FaultKind, schedule};
