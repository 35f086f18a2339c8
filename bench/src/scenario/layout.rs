//! CORE. Splits a scenario's client groups over workers: each worker gets a contiguous,
//! near-equal share of every group, and the per-worker connect rate is the total divided
//! by the workers.

pub use crate::engine::proto::broker_slot;
use crate::engine::proto::{GroupSpec, PubSpec, SubSpec, WorkerSpec};
use crate::tls::TlsSpec;

use super::opts::RunOpts;

/// A client group of the whole run, before it is split.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// Group name.
    pub name: String,
    /// Members over all workers.
    pub total: u64,
    /// Client id pattern.
    pub client_id: String,
    /// Clean session / clean start.
    pub clean_start: bool,
    /// MQTT 5 session expiry, seconds.
    pub session_expiry_secs: u32,
    /// Many mostly idle clients.
    pub lean: bool,
    /// Regions (`{r}` = `k % regions`).
    pub regions: u64,
    /// Subscriptions of each member.
    pub subscribe: Option<SubSpec>,
    /// Publishing of each member.
    pub publish: Option<PubSpec>,
}

impl GroupPlan {
    /// A group of `total` clean-session clients named `{run}-{prefix}{k}`.
    pub fn new(name: &str, prefix: &str, total: u64) -> Self {
        Self {
            name: name.into(),
            total,
            client_id: format!("{{run}}-{prefix}{{k}}"),
            clean_start: true,
            session_expiry_secs: 0,
            lean: false,
            regions: 0,
            subscribe: None,
            publish: None,
        }
    }
}

/// The share `[start, end)` of `total` members that worker `w` of `workers` gets.
pub fn share(total: u64, workers: u32, w: u32) -> (u64, u64) {
    let n = u64::from(workers.max(1));
    (total * u64::from(w) / n, total * (u64::from(w) + 1) / n)
}

/// The broker shift of a group (see [`broker_slot`]): 1 if it publishes, else 0.
pub fn broker_shift(g: &GroupPlan) -> u64 {
    u64::from(g.publish.is_some())
}

/// One spec per worker.
pub fn specs(
    opts: &RunOpts,
    run_id: &str,
    groups: &[GroupPlan],
    workers: u32,
    tls: Option<&TlsSpec>,
) -> Vec<WorkerSpec> {
    let conns: u64 = groups.iter().map(|g| g.total).sum();
    let sources = opts.sources(conns);
    (0..workers.max(1))
        .map(|w| WorkerSpec {
            worker: w,
            run_id: run_id.to_string(),
            brokers: opts.broker.addrs().to_vec(),
            sources: sources.clone(),
            protocol: opts.mqtt,
            keep_alive_secs: opts.keep_alive,
            connect_rate: opts.connect_rate / f64::from(workers.max(1)),
            connect_concurrency: opts.connect_concurrency,
            op_timeout_ms: opts.op_timeout.ms(),
            step_timeout_ms: opts.step_timeout.ms(),
            tls: tls.cloned(),
            groups: groups
                .iter()
                .enumerate()
                .map(|(id, g)| {
                    let (start, end) = share(g.total, workers, w);
                    GroupSpec {
                        name: g.name.clone(),
                        id: id as u32,
                        offset: start,
                        count: end - start,
                        client_id: g.client_id.clone(),
                        clean_start: g.clean_start,
                        session_expiry_secs: g.session_expiry_secs,
                        lean: g.lean,
                        regions: g.regions,
                        subscribe: g.subscribe.clone(),
                        publish: g.publish.clone(),
                        broker_shift: broker_shift(g),
                    }
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_group_exactly_once() {
        for (total, workers) in [(10u64, 3u32), (4, 2), (1, 4), (15_000, 1), (100_001, 7)] {
            let mut next = 0;
            for w in 0..workers {
                let (s, e) = share(total, workers, w);
                assert_eq!(s, next);
                assert!(e >= s);
                next = e;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn specs_split_groups_and_rates() {
        let opts = RunOpts { connect_rate: 1000.0, ..RunOpts::default() };
        let groups = [GroupPlan::new("vehicles", "v", 10), GroupPlan::new("backends", "b", 3)];
        let specs = specs(&opts, "r1", &groups, 2, None);
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].groups[0].offset, 5);
        assert_eq!(specs[0].groups[1].count + specs[1].groups[1].count, 3);
        assert!((specs[0].connect_rate - 500.0).abs() < 1e-9);
        assert_eq!(specs[1].groups[1].id, 1);
    }
}
