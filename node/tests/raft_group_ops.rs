//! Deterministic simulations of the admin operations of `node::group` under write load and
//! a lossy, reordering network: add a learner, promote it, remove a voter, replace a voter
//! through joint consensus, and transfer leadership repeatedly. The harness checks election
//! and state-machine safety throughout and convergence at the end. Rerun one seed with
//! `RAFT_SIM_SEED=<seed> cargo test -p node --test raft_group_ops <name>`.

#[path = "raft_sim_harness.rs"]
mod harness;

use harness::{NetFaults, Sim, groups, peer_config, seeds};
use node::group::{NodeId, PeerChange, RangeDescriptor, ReadPolicy, RequestError};

/// Writes to every group (and reads some back) for `ms` of virtual time.
fn load(sim: &mut Sim, group_ids: &[u64], ms: u64) {
    let end = sim.now_ms + ms;
    while sim.now_ms < end {
        for &g in group_ids {
            let _ = sim.write(g);
            if sim.rand(0..4) == 0 {
                sim.read(g, ReadPolicy::Lease);
            }
        }
        let ms = sim.rand(2..8) * harness::STEP_MS;
        sim.run_for(ms);
    }
}

/// Proposes `changes` until the leader's descriptor satisfies `done`, under load.
fn change(
    sim: &mut Sim,
    g: u64,
    ids: &[u64],
    changes: &[PeerChange],
    done: impl Fn(&RangeDescriptor) -> bool,
) {
    for _ in 0..40 {
        if sim.desc(g).is_some_and(|d| done(&d)) {
            return;
        }
        let _ = sim.conf_change(g, changes);
        load(sim, ids, 1_000);
    }
    sim.dump(g);
    panic!("seed {}: group {g} never applied {changes:?}", sim.seed);
}

/// Moves leadership of `g` away from `node` (so it can be removed), under load.
fn lead_elsewhere(sim: &mut Sim, g: u64, ids: &[u64], node: NodeId, to: NodeId) {
    for _ in 0..40 {
        match sim.leader(g) {
            Some(l) if l != node => return,
            _ => {
                let _ = sim.transfer_leader(g, to);
                load(sim, ids, 1_000);
            }
        }
    }
    panic!("seed {}: leadership of group {g} never left node {node}", sim.seed);
}

fn wait_caught_up(sim: &mut Sim, g: u64, ids: &[u64], node: NodeId) {
    for _ in 0..60 {
        let leader_applied = sim.leader(g).map(|l| sim.nodes[&l].peers[&g].storage().applied().0);
        let node_applied = sim.nodes[&node].peers.get(&g).map(|p| p.storage().applied().0);
        if let (Some(a), Some(b)) = (leader_applied, node_applied)
            && b + 20 >= a
            && b > node::group::INIT_INDEX
        {
            return;
        }
        load(sim, ids, 500);
    }
    sim.dump(g);
    panic!("seed {}: node {node} never caught up in group {g}", sim.seed);
}

#[test]
fn add_learner_promote_and_remove_voter_under_load() {
    for seed in seeds(0xc0f1, 4) {
        eprintln!("seed {seed}");
        let descs = groups(2, &[1, 2, 3]);
        let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
        let mut sim = Sim::new(seed, &[1, 2, 3, 4], &descs, peer_config(50));
        sim.faults = NetFaults { drop_permille: 20, dup_permille: 10, delay_ms: (1, 25) };
        load(&mut sim, &ids, 5_000);
        for &g in &ids {
            change(&mut sim, g, &ids, &[PeerChange::AddLearner(4)], |d| d.learners.contains(&4));
            wait_caught_up(&mut sim, g, &ids, 4);
            change(&mut sim, g, &ids, &[PeerChange::AddVoter(4)], |d| {
                d.voters.contains(&4) && d.learners.is_empty()
            });
            // Restarts replay the applied conf changes from checkpoint and log.
            for n in [4, 1] {
                sim.crash(n);
                load(&mut sim, &ids, 2_000);
                sim.restart(n);
                load(&mut sim, &ids, 3_000);
            }
            // The leader refuses to remove itself; move leadership off node 3, then remove it.
            if sim.leader(g) == Some(3) {
                let refused = sim.conf_change(g, &[PeerChange::Remove(3)]);
                assert!(matches!(refused, Err(RequestError::AdminRejected(_))), "{refused:?}");
            }
            lead_elsewhere(&mut sim, g, &ids, 3, 4);
            change(&mut sim, g, &ids, &[PeerChange::Remove(3)], |d| !d.has_member(3));
            let desc = sim.desc(g).expect("leader");
            assert_eq!(desc.voters, vec![1, 2, 4], "seed {seed}");
            assert_eq!(desc.epoch.conf_ver, 4, "seed {seed}: three applied changes");
        }
        sim.heal();
        let gone = sim.run_until(30_000, |s| ids.iter().all(|g| !s.nodes[&3].peers.contains_key(g)));
        assert!(gone, "seed {seed}: node 3 kept a replica after its removal");
        sim.check_final(&ids);
        let s = &sim.checker.stats;
        eprintln!("seed {seed}: acked {} admin ok {} elections {}", s.writes_acked, s.admin_ok, s.elections);
    }
}

#[test]
fn joint_consensus_replaces_a_voter_under_load() {
    for seed in seeds(0x1017, 4) {
        eprintln!("seed {seed}");
        let descs = groups(2, &[1, 2, 3]);
        let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
        let mut sim = Sim::new(seed, &[1, 2, 3, 4], &descs, peer_config(50));
        sim.faults = NetFaults { drop_permille: 20, dup_permille: 10, delay_ms: (1, 25) };
        load(&mut sim, &ids, 5_000);
        for &g in &ids {
            lead_elsewhere(&mut sim, g, &ids, 3, 1);
            // Two changes at once: raft enters the joint configuration {1,2,3} & {1,2,4}
            // and leaves it by itself once that is applied.
            change(&mut sim, g, &ids, &[PeerChange::AddVoter(4), PeerChange::Remove(3)], |d| {
                d.voters == [1, 2, 4] && !d.is_joint()
            });
            let desc = sim.desc(g).expect("leader");
            assert_eq!(desc.epoch.conf_ver, 3, "seed {seed}: enter joint + leave joint");
        }
        load(&mut sim, &ids, 5_000);
        sim.check_final(&ids);
        eprintln!("seed {seed}: acked {}", sim.checker.stats.writes_acked);
    }
}

#[test]
fn leader_transfer_under_load_keeps_reads_linearizable() {
    for seed in seeds(0x7a7a, 4) {
        eprintln!("seed {seed}");
        let descs = groups(2, &[1, 2, 3]);
        let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
        let mut sim = Sim::new(seed, &[1, 2, 3], &descs, peer_config(0));
        sim.faults = NetFaults { drop_permille: 10, dup_permille: 10, delay_ms: (1, 15) };
        load(&mut sim, &ids, 4_000);
        let (mut asked, mut moved) = (0, 0);
        for _ in 0..20 {
            for &g in &ids {
                let Some(leader) = sim.leader(g) else { continue };
                let to = [1, 2, 3]
                    .into_iter()
                    .filter(|&n| n != leader)
                    .nth(sim.rand(0..2) as usize)
                    .expect("voter");
                if sim.transfer_leader(g, to).is_ok() {
                    asked += 1;
                    let ok = sim.run_until(3_000, |s| s.leader(g) == Some(to));
                    moved += u32::from(ok);
                }
            }
            load(&mut sim, &ids, 500);
        }
        eprintln!(
            "seed {seed}: {moved}/{asked} transfers completed, acked {}",
            sim.checker.stats.writes_acked
        );
        assert!(moved * 10 >= asked * 8, "seed {seed}: only {moved}/{asked} transfers completed");
        sim.check_final(&ids);
    }
}
