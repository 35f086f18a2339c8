//! The scenarios operators size a fleet with, each a sequence of worker steps plus the
//! figures computed from their results.
//!
//! - `conn`: N idle connections at a target rate (connect rate, failures, broker bytes per
//!   connection).
//! - `p2p`: the fleet pattern; each vehicle subscribes to `fleet/{k}/cmd`, backends publish to
//!   random vehicles.
//! - `fanin`: vehicles publish telemetry, backends subscribe with a wildcard or `$share`.
//! - `fanout`: a broadcast to every vehicle of a region.
//! - `subs`: many distinct subscriptions (subscribe rate, broker bytes per subscription).
//! - `persist`: offline persistent sessions accumulate QoS 1 messages, then reconnect and
//!   replay.
//! - `storm`: a fraction of the fleet drops and reconnects at once while commands flow.
//!
//! Shared pieces: [`opts`] (CLI options), [`layout`] (splitting groups over workers),
//! [`driver`] (the coordinator's side of a run), `traffic` (the connect / warm-up /
//! measure / drain sequence of the traffic scenarios).

pub mod conn;
pub mod driver;
pub mod fanin;
pub mod fanout;
pub mod layout;
pub mod opts;
pub mod p2p;
pub mod persist;
pub mod storm;
pub mod subs;
mod traffic;

use std::collections::BTreeMap;

use crate::engine::proto::Load;
use crate::result::RunResult;
use opts::RunOpts;

/// A scenario with its options.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Scenario {
    /// N idle connections at a target rate: connect rate, failures, broker bytes per
    /// connection.
    Conn(conn::ConnArgs),
    /// Point to point: vehicles subscribe to fleet/{k}/cmd, backends publish to random
    /// vehicles.
    P2p(p2p::P2pArgs),
    /// Fan-in: vehicles publish fleet/{k}/telemetry, backends subscribe with a wildcard or
    /// $share.
    Fanin(fanin::FaninArgs),
    /// Fan-out: broadcasts to every vehicle of a region.
    Fanout(fanout::FanoutArgs),
    /// Millions of distinct subscriptions: subscribe rate and broker bytes per subscription.
    Subs(subs::SubsArgs),
    /// Offline persistent sessions accumulate QoS 1 messages, then reconnect and replay.
    Persist(persist::PersistArgs),
    /// A fraction of the fleet disconnects and reconnects at once while commands flow.
    Storm(storm::StormArgs),
}

impl Scenario {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Conn(_) => "conn",
            Self::P2p(_) => "p2p",
            Self::Fanin(_) => "fanin",
            Self::Fanout(_) => "fanout",
            Self::Subs(_) => "subs",
            Self::Persist(_) => "persist",
            Self::Storm(_) => "storm",
        }
    }

    /// The shared options.
    pub fn opts(&self) -> &RunOpts {
        match self {
            Self::Conn(a) => &a.opts,
            Self::P2p(a) => &a.opts,
            Self::Fanin(a) => &a.opts,
            Self::Fanout(a) => &a.opts,
            Self::Subs(a) => &a.opts,
            Self::Persist(a) => &a.opts,
            Self::Storm(a) => &a.opts,
        }
    }

    /// The shared options, to change (`compare` points them at each broker in turn).
    pub fn opts_mut(&mut self) -> &mut RunOpts {
        match self {
            Self::Conn(a) => &mut a.opts,
            Self::P2p(a) => &mut a.opts,
            Self::Fanin(a) => &mut a.opts,
            Self::Fanout(a) => &mut a.opts,
            Self::Subs(a) => &mut a.opts,
            Self::Persist(a) => &mut a.opts,
            Self::Storm(a) => &mut a.opts,
        }
    }

    /// Runs the scenario once.
    pub async fn run(&self) -> anyhow::Result<RunResult> {
        self.opts().validate()?;
        match self {
            Self::Conn(a) => conn::run(a).await,
            Self::P2p(a) => p2p::run(a).await,
            Self::Fanin(a) => fanin::run(a).await,
            Self::Fanout(a) => fanout::run(a).await,
            Self::Subs(a) => subs::run(a).await,
            Self::Persist(a) => persist::run(a).await,
            Self::Storm(a) => storm::run(a).await,
        }
    }
}

/// The run id: given, or 6 random hex digits.
pub fn run_id(opts: &RunOpts) -> String {
    opts.run_id.clone().unwrap_or_else(|| format!("{:06x}", crate::clock::now_ns() / 1000 % 0xFF_FFFF))
}

/// The publishing discipline for `publishers` clients: closed loop with `--max`, else the
/// `--rate` (or `default_rate`) spread evenly.
pub fn load(opts: &RunOpts, publishers: u64, default_rate: f64) -> Load {
    if opts.max {
        Load::Window { inflight: opts.window }
    } else {
        Load::Rate { per_client_per_sec: opts.rate.unwrap_or(default_rate) / publishers.max(1) as f64 }
    }
}

/// Parameters every result shows.
pub fn base_params(opts: &RunOpts) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let mqtt = match opts.mqtt {
        crate::engine::proto::MqttVersion::V311 => "3.1.1",
        crate::engine::proto::MqttVersion::V5 => "5",
    };
    p.insert("mqtt".into(), mqtt.into());
    p.insert("qos".into(), opts.qos.to_string());
    p.insert("payload".into(), opts.payload.to_string());
    let mode = if opts.max { format!("closed loop, window {}", opts.window) } else { "open loop".into() };
    p.insert("load".into(), mode);
    if opts.tls {
        let tls = if opts.tls_insecure { "on, unverified (--tls-insecure)" } else { "on" };
        p.insert("tls".into(), tls.into());
    }
    p
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    crate::clock::now_ns() / 1_000_000
}
