//! `storm`: while backends send commands to vehicles (the `p2p` pattern), a fraction of the
//! vehicles drops at once (a TCP reset, as when a cell tower fails) and reconnects as fast as
//! the connect rate allows. Reports the recovery time and reconnect rate, and whether any
//! command was lost or duplicated across the storm (none should be with persistent sessions
//! and QoS 1).

use super::base_params;
use super::opts::RunOpts;
use super::p2p::{backend_count, backends, expect_p2p, vehicles};
use super::traffic::{self, Plan, Storm};
use crate::result::{Headline, RunResult, figure};

/// Options of `storm`.
#[derive(Clone, Debug, clap::Args)]
pub struct StormArgs {
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
    /// Vehicles.
    #[arg(long, default_value_t = 2000)]
    pub vehicles: u64,
    /// Backend publishers (raised to one per worker).
    #[arg(long, default_value_t = 4)]
    pub backends: u64,
    /// Fraction of the vehicles that drop.
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
    /// Vehicles use clean sessions (commands to dropped vehicles are then lost).
    #[arg(long)]
    pub clean: bool,
    /// Drop with DISCONNECT instead of a TCP reset.
    #[arg(long)]
    pub graceful: bool,
}

/// Runs `storm`.
pub async fn run(a: &StormArgs) -> anyhow::Result<RunResult> {
    let opts = &a.opts;
    let mut notes = Vec::new();
    if opts.qos == 0 {
        notes.push("QoS 0: commands sent to vehicles while they are offline are lost by design".into());
    }
    let backend_n = backend_count(opts, a.vehicles, a.backends, &mut notes);
    let mut params = base_params(opts);
    params.insert("vehicles".into(), a.vehicles.to_string());
    params.insert("backends".into(), backend_n.to_string());
    params.insert("fraction".into(), a.fraction.to_string());
    params.insert("sessions".into(), if a.clean { "clean" } else { "persistent" }.into());
    params.insert("drop".into(), if a.graceful { "DISCONNECT" } else { "TCP reset" }.into());
    params.insert("connect_rate".into(), opts.connect_rate.to_string());
    if !opts.max {
        params.insert("rate".into(), format!("{}", opts.rate.unwrap_or(2000.0)));
    }
    let mut r = traffic::run(Plan {
        scenario: "storm",
        opts,
        params,
        groups: vec![vehicles(opts, a.vehicles, !a.clean), backends(opts, backend_n, 2000.0)],
        expect: expect_p2p,
        storm: Some(Storm {
            group: "vehicles".into(),
            fraction: a.fraction.clamp(0.0, 1.0),
            abrupt: !a.graceful,
            at: 0.3,
        }),
        notes,
    })
    .await?;
    let by_cpu = r.figures.contains_key(figure::RECONNECTS_PER_CPU_SEC);
    r.headline = Some(Headline {
        figure: if by_cpu { figure::RECONNECTS_PER_CPU_SEC } else { figure::RECONNECTS_PER_SEC }.into(),
        higher_is_better: true,
    });
    Ok(r)
}
