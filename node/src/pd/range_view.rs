//! CORE. The two conversions between the node's range vocabulary ([`RangeDescriptor`], and
//! a leader's [`RangeReport`] = descriptor + load) and the scheduler core's
//! [`placement::RangeInfo`]: reports go in as [`range_info`]; the PD's range table comes
//! back out for routers as [`routing_descriptor`]. No other code maps one to the other.

use placement::RangeInfo;

use super::message::RangeReport;
use crate::group::{NodeId, RangeDescriptor};

/// The scheduler core's view of a leader's range report: the one place a
/// [`RangeDescriptor`] plus load becomes a [`placement::RangeInfo`].
pub(super) fn range_info(r: &RangeReport, leader: NodeId) -> RangeInfo {
    use placement::{Replica, Role};
    let d = &r.desc;
    let mut replicas = Vec::new();
    for &n in &d.voters {
        let role = if !d.is_joint() || d.outgoing.contains(&n) { Role::Voter } else { Role::IncomingVoter };
        replicas.push(Replica { node: placement::NodeId(n), role });
    }
    for &n in d.outgoing.iter().filter(|n| !d.voters.contains(n)) {
        replicas.push(Replica { node: placement::NodeId(n), role: Role::DemotingVoter });
    }
    for &n in d.learners.iter().filter(|n| !d.voters.contains(n) && !d.outgoing.contains(n)) {
        replicas.push(Replica { node: placement::NodeId(n), role: Role::Learner });
    }
    RangeInfo {
        id: placement::RangeId(d.id),
        start_key: d.start.clone(),
        end_key: d.end.clone(),
        epoch: d.epoch,
        replicas,
        leader: Some(placement::NodeId(leader)),
        pending: r.pending.iter().map(|&n| placement::NodeId(n)).collect(),
        size_bytes: r.size_bytes,
        keys: r.keys,
        write_bytes_per_sec: r.write_bytes_per_sec,
        write_keys_per_sec: r.write_keys_per_sec,
        split_key_hint: None,
    }
}

/// The way back, for the range table pushed to routers: who may lead (incoming and
/// outgoing voters alike) and the learners; the router needs no joint detail.
pub(super) fn routing_descriptor(r: &RangeInfo) -> RangeDescriptor {
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    for rep in &r.replicas {
        match rep.role {
            placement::Role::Learner => learners.push(rep.node.0),
            _ => voters.push(rep.node.0),
        }
    }
    voters.sort_unstable();
    learners.sort_unstable();
    RangeDescriptor {
        id: r.id.0,
        start: r.start_key.clone(),
        end: r.end_key.clone(),
        epoch: r.epoch,
        voters,
        outgoing: Vec::new(),
        learners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u64, voters: &[NodeId]) -> RangeReport {
        let desc = RangeDescriptor::new(id, b"a".to_vec(), b"b".to_vec(), voters);
        RangeReport { desc, ..RangeReport::default() }
    }

    #[test]
    fn joint_and_learner_roles_map_to_the_view() {
        let mut r = report(7, &[1, 2, 4]);
        r.desc.outgoing = vec![1, 2, 3];
        r.desc.learners = vec![5];
        r.pending = vec![5];
        r.keys = 9;
        let info = range_info(&r, 1);
        let role = |n| info.replicas.iter().find(|x| x.node == placement::NodeId(n)).map(|x| x.role);
        assert_eq!(role(1), Some(placement::Role::Voter));
        assert_eq!(role(4), Some(placement::Role::IncomingVoter));
        assert_eq!(role(3), Some(placement::Role::DemotingVoter));
        assert_eq!(role(5), Some(placement::Role::Learner));
        assert_eq!(info.leader, Some(placement::NodeId(1)));
        assert_eq!((info.id, info.epoch, info.keys), (placement::RangeId(7), r.desc.epoch, 9));
        assert_eq!(info.pending, vec![placement::NodeId(5)]);
    }

    #[test]
    fn a_routing_descriptor_keeps_bounds_epoch_and_who_may_lead() {
        let mut r = report(9, &[1, 2, 4]);
        r.desc.outgoing = vec![1, 2, 3];
        r.desc.learners = vec![5];
        let desc = routing_descriptor(&range_info(&r, 1));
        assert_eq!(
            (desc.id, &desc.start, &desc.end, desc.epoch),
            (9, &r.desc.start, &r.desc.end, r.desc.epoch)
        );
        assert_eq!(desc.voters, vec![1, 2, 3, 4], "incoming and outgoing voters may lead");
        assert!(desc.outgoing.is_empty());
        assert_eq!(desc.learners, vec![5]);
    }
}
