//! Deterministic simulations of `node::group` replicas: raft safety under message loss,
//! reordering, duplication, partitions and crashes, then convergence after healing;
//! linearizable reads; recovery from disk; hibernation. Each run prints its seed; rerun one
//! with `RAFT_SIM_SEED=<seed> cargo test -p node --test raft_group_sim <name>`.

#[path = "raft_sim_harness.rs"]
mod harness;

use harness::{NetFaults, Sim, groups, peer_config, seeds};
use node::group::ReadPolicy;

const NODES: [u64; 3] = [1, 2, 3];

/// Random faults for `ms` of virtual time while a client writes and reads.
fn chaos_phase(sim: &mut Sim, group_ids: &[u64], ms: u64) {
    let end = sim.now_ms + ms;
    while sim.now_ms < end {
        let g = group_ids[sim.rand(0..group_ids.len() as u64) as usize];
        match sim.rand(0..100) {
            0..40 => {
                let _ = sim.write(g);
            }
            40..50 => sim.read(g, ReadPolicy::Lease),
            50..55 => sim.read(g, ReadPolicy::ReadIndex),
            55 => {
                let victim = NODES[sim.rand(0..3) as usize];
                sim.crash(victim);
            }
            56..60 => {
                let down: Vec<u64> = NODES.iter().copied().filter(|n| !sim.nodes[n].up).collect();
                if !down.is_empty() {
                    let id = down[sim.rand(0..down.len() as u64) as usize];
                    sim.restart(id);
                }
            }
            60 => {
                let lone = NODES[sim.rand(0..3) as usize];
                let rest: Vec<u64> = NODES.iter().copied().filter(|&n| n != lone).collect();
                sim.partition(&[lone], &rest);
            }
            61..64 => {
                sim.blocked.clear();
            }
            _ => {}
        }
        let ms = sim.rand(1..40) * harness::STEP_MS;
        sim.run_for(ms);
    }
}

#[test]
fn raft_safety_under_loss_reordering_partitions_and_crashes() {
    for seed in seeds(0x5afe, 6) {
        eprintln!("seed {seed}");
        let descs = groups(3, &NODES);
        let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
        let mut sim = Sim::new(seed, &NODES, &descs, peer_config(50));
        sim.faults = NetFaults::chaos();
        sim.crash_in_ready_permille = 2;
        chaos_phase(&mut sim, &ids, 60_000);
        sim.crash_in_ready_permille = 0;
        sim.check_final(&ids);
        let s = &sim.checker.stats;
        eprintln!(
            "seed {seed}: acked {} failed {} reads {} elections {} crashes {} msgs {} dropped {}",
            s.writes_acked, s.writes_failed, s.reads_ok, s.elections, s.crashes, s.messages, s.dropped
        );
        assert!(s.writes_acked > 30, "seed {seed}: too few writes acknowledged ({})", s.writes_acked);
    }
}

#[test]
fn reads_see_every_acknowledged_write_with_lease_and_read_index() {
    for seed in seeds(0x4ead, 4) {
        eprintln!("seed {seed}");
        let descs = groups(2, &NODES);
        let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
        let mut sim = Sim::new(seed, &NODES, &descs, peer_config(0));
        sim.faults = NetFaults { drop_permille: 20, dup_permille: 10, delay_ms: (1, 30) };
        let end = sim.now_ms + 30_000;
        while sim.now_ms < end {
            let g = ids[sim.rand(0..2) as usize];
            let _ = sim.write(g);
            let policy = if sim.rand(0..2) == 0 { ReadPolicy::Lease } else { ReadPolicy::ReadIndex };
            sim.read(g, policy);
            if sim.rand(0..200) == 0 {
                let lone = NODES[sim.rand(0..3) as usize];
                let rest: Vec<u64> = NODES.iter().copied().filter(|&n| n != lone).collect();
                sim.partition(&[lone], &rest);
            }
            if sim.rand(0..150) == 0 {
                sim.blocked.clear();
            }
            let ms = sim.rand(1..10) * harness::STEP_MS;
            sim.run_for(ms);
        }
        sim.check_final(&ids);
        eprintln!("seed {seed}: reads checked {}", sim.checker.stats.reads_ok);
        assert!(sim.checker.stats.reads_ok > 100, "seed {seed}: too few reads");
    }
}

#[test]
fn full_cluster_restart_recovers_checkpoints_and_logs() {
    for seed in seeds(0xd15c, 3) {
        eprintln!("seed {seed}");
        let descs = groups(2, &NODES);
        let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
        let mut sim = Sim::new(seed, &NODES, &descs, peer_config(0));
        // More than two checkpoint intervals (64 entries) of writes.
        let mut acked_target = 0;
        for round in 0..3 {
            acked_target += 150;
            let ok = sim.run_until(120_000, |s| {
                s.checker.stats.writes_acked >= acked_target || s.leader(1).is_none()
            });
            assert!(ok);
            while sim.checker.stats.writes_acked < acked_target {
                for &g in &ids {
                    let _ = sim.write(g);
                }
                sim.run_for(20);
            }
            for n in NODES {
                sim.crash(n);
            }
            sim.run_for(1_000);
            for n in NODES {
                sim.restart(n);
            }
            eprintln!("seed {seed}: round {round} restarted with {} acked", sim.checker.stats.writes_acked);
        }
        for n in NODES {
            let node = &sim.nodes[&n];
            let truncated = node.peers[&1].storage().truncated_index();
            assert!(truncated > node::group::INIT_INDEX, "node {n}: no checkpoint taken");
        }
        sim.check_final(&ids);
    }
}

#[test]
fn idle_groups_hibernate_and_wake_on_write() {
    let seed = seeds(0x1d1e, 1)[0];
    eprintln!("seed {seed}");
    let descs = groups(20, &NODES);
    let ids: Vec<u64> = descs.iter().map(|d| d.id).collect();
    let mut sim = Sim::new(seed, &NODES, &descs, peer_config(50));
    for &g in &ids {
        assert!(sim.run_until(10_000, |s| s.leader(g).is_some()), "group {g} elected no leader");
        let _ = sim.write(g);
    }
    let all_hibernated =
        |s: &Sim| s.nodes.values().all(|n| n.peers.values().all(node::group::GroupPeer::is_hibernated));
    if !sim.run_until(30_000, all_hibernated) {
        for n in sim.nodes.values() {
            for p in n.peers.values().filter(|p| !p.is_hibernated()) {
                eprintln!("awake: {:?} pending {}", p.status(), p.pending_requests());
            }
        }
        panic!("groups did not hibernate");
    }
    let (ticks, msgs) = (sim.checker.stats.ticks, sim.checker.stats.messages);
    sim.run_for(20_000);
    let idle_ticks = sim.checker.stats.ticks - ticks;
    let idle_msgs = sim.checker.stats.messages - msgs;
    eprintln!("20 hibernated groups x 3 replicas over 20 s: {idle_ticks} ticks, {idle_msgs} messages");
    assert_eq!((idle_ticks, idle_msgs), (0, 0));
    let acked_in_7 = |s: &Sim| s.checker.acked.keys().filter(|k| k.0 == 7).count();
    let before = acked_in_7(&sim);
    sim.write(7).expect("the leader accepts a write");
    assert!(sim.run_until(5_000, |s| acked_in_7(s) == before + 1), "woken group commits");
    let awake = sim.nodes.values().flat_map(|n| n.peers.values()).filter(|p| !p.is_hibernated()).count();
    eprintln!("after one write: {awake} awake replicas");
    assert!(awake <= 3, "only group 7 wakes");
    sim.check_final(&ids);
}
