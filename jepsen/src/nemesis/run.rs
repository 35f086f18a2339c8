//! The nemesis executor: applies each scheduled fault at its time, heals it after its
//! duration, records `start-<kind>` / `stop-<kind>` with whether it really ran, and heals
//! everything when the main phase ends.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::partition;
use super::{Fault, FaultKind};
use crate::cluster::{Cluster, NetMode};
use crate::history::{Kind, Recorder};
use crate::workload::Phase;

const READY: Duration = Duration::from_secs(30);

/// Runs `schedule` from `t0` until it is done or the phase leaves `Main`, then heals.
pub async fn execute(
    schedule: Vec<Fault>,
    cluster: Arc<Mutex<Cluster>>,
    rec: Recorder,
    mut phase: watch::Receiver<Phase>,
    t0: Instant,
) {
    for (idx, fault) in schedule.iter().enumerate() {
        let at = t0 + Duration::from_millis(fault.at_ms);
        if !sleep_in_main(&mut phase, at).await {
            break;
        }
        let name = fault.kind.name();
        let started = {
            let mut c = cluster.lock().await;
            start(&mut c, fault).await
        };
        let (ran, detail) = match started {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        rec.nemesis(
            Kind::Info,
            &format!("start-{name}"),
            Some(fault.node),
            json!({"fault": idx, "ran": ran, "detail": detail}),
        );
        let until = Instant::now() + Duration::from_millis(fault.duration_ms);
        sleep_in_main(&mut phase, until).await;
        let stopped = {
            let mut c = cluster.lock().await;
            stop(&mut c, fault).await
        };
        let (ran, detail) = match stopped {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        rec.nemesis(
            Kind::Info,
            &format!("stop-{name}"),
            Some(fault.node),
            json!({"fault": idx, "ran": ran, "detail": detail}),
        );
    }
    let mut c = cluster.lock().await;
    let healed = heal_all(&mut c).await;
    rec.nemesis(Kind::Info, "heal", None, json!({"ok": healed.is_ok(), "detail": healed.err()}));
}

/// Sleeps until `at`; false if the phase left `Main` first.
async fn sleep_in_main(phase: &mut watch::Receiver<Phase>, at: Instant) -> bool {
    loop {
        if *phase.borrow() != Phase::Main {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => return true,
            r = phase.changed() => if r.is_err() { return false; },
        }
    }
}

async fn start(c: &mut Cluster, f: &Fault) -> Result<String, String> {
    let node = c.nodes.get_mut(f.node).ok_or("no such node")?;
    match f.kind {
        FaultKind::Kill => {
            let pid = node.pid();
            match node.kill().map_err(|e| e.to_string())? {
                true => Ok(format!("SIGKILL pid {}", pid.unwrap_or(0))),
                false => Err("process was not running".into()),
            }
        }
        FaultKind::Pause => {
            let pid = node.pid();
            match node.pause().await.map_err(|e| e.to_string())? {
                true => Ok(format!("SIGSTOP pid {}, state T", pid.unwrap_or(0))),
                false => Err("process did not stop".into()),
            }
        }
        FaultKind::Clock => match node.set_clock_offset(f.skew_s).map_err(|e| e.to_string())? {
            true => Ok(format!("clock {:+} s", f.skew_s)),
            false => Err("offset not observed (is faketime installed?)".into()),
        },
        FaultKind::DiskFull => match node.fill_disk().map_err(|e| e.to_string())? {
            true => Ok("data filesystem full (ENOSPC)".into()),
            false => Err("could not fill the data filesystem".into()),
        },
        FaultKind::Partition => {
            if c.net.mode != NetMode::Namespaces || c.nodes.len() < 2 {
                return Err("partitions need namespaces and 2+ nodes".into());
            }
            let shape = f.shape.ok_or("no shape")?;
            let g = partition::grudge(shape, c.nodes.len(), f.node);
            for (i, peers) in g.iter().enumerate() {
                let ips: Vec<_> = peers.iter().map(|&j| c.net.ip(j)).collect();
                let script = partition::nft_script(&ips);
                if !script.is_empty() {
                    partition::apply(&c.net.namespace(i), &script)?;
                }
            }
            Ok(format!("{shape:?}: {g:?}"))
        }
    }
}

async fn stop(c: &mut Cluster, f: &Fault) -> Result<String, String> {
    let node = c.nodes.get_mut(f.node).ok_or("no such node")?;
    match f.kind {
        FaultKind::Kill => {
            node.start(READY).await.map_err(|e| e.to_string())?;
            Ok(format!("restarted pid {}", node.pid().unwrap_or(0)))
        }
        FaultKind::Pause => {
            node.resume().map_err(|e| e.to_string())?;
            Ok("SIGCONT".into())
        }
        FaultKind::Clock => match node.set_clock_offset(0).map_err(|e| e.to_string())? {
            true => Ok("clock +0".into()),
            false => Err("offset reset not observed".into()),
        },
        FaultKind::DiskFull => {
            if !node.free_disk() {
                return Err("no ballast to remove".into());
            }
            node.kill().map_err(|e| e.to_string())?;
            node.start(READY).await.map_err(|e| e.to_string())?;
            Ok(format!("space freed, restarted pid {}", node.pid().unwrap_or(0)))
        }
        FaultKind::Partition => {
            for i in 0..c.nodes.len() {
                partition::heal(&c.net.namespace(i));
            }
            Ok("tables deleted".into())
        }
    }
}

/// Resumes paused nodes, resets clocks, removes partitions and restarts dead nodes.
pub async fn heal_all(c: &mut Cluster) -> Result<(), String> {
    let mut errors = Vec::new();
    if c.net.mode == NetMode::Namespaces {
        for i in 0..c.nodes.len() {
            partition::heal(&c.net.namespace(i));
        }
    }
    for node in &mut c.nodes {
        if let Err(e) = node.resume() {
            errors.push(e.to_string());
        }
        let _ = node.set_clock_offset(0);
        if node.free_disk() {
            let _ = node.kill();
        }
        if !node.is_running()
            && let Err(e) = node.start(READY).await
        {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}
