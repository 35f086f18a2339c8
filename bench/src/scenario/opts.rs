//! CORE. Options every scenario shares: the broker, protocol, load shape, timing, scale-out
//! and output. Parsed by clap in the binary; plain values in the library.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::engine::proto::MqttVersion;
use crate::tls::{TlsError, TlsSpec};

/// A duration written as `500ms`, `10s`, `2m`, `1h` or plain seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
        let secs = match unit {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("unknown duration unit {unit:?} (use ms, s, m or h)")),
        };
        if !secs.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&secs) {
            return Err(format!("duration out of range: {s:?}"));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) { write!(f, "{}s", ms / 1000) } else { write!(f, "{ms}ms") }
    }
}

impl Dur {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

/// The broker addresses of a run: one broker, or the nodes of a cluster. Written as
/// `IP:PORT` or `IP:PORT,IP:PORT,...`; never empty.
///
/// Clients are spread over the addresses round robin by their group-relative index `k`:
/// members of groups that only subscribe go to address `k mod n`, members of groups that
/// publish to `(k + 1) mod n` (see [`crate::scenario::layout::broker_slot`]), so a publisher and
/// the subscriber with the same index are on different nodes, and with one address nothing
/// changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerList(Vec<SocketAddr>);

impl BrokerList {
    /// A list; `None` if empty.
    pub fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Self(addrs))
    }

    /// Every address, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// The first address (the only one of a single broker).
    pub fn first(&self) -> SocketAddr {
        self.0[0]
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list has at least one address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<SocketAddr> for BrokerList {
    fn from(a: SocketAddr) -> Self {
        Self(vec![a])
    }
}

impl FromStr for BrokerList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addrs = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<SocketAddr>().map_err(|e| format!("bad broker address {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(addrs).ok_or_else(|| "no broker address".to_string())
    }
}

impl fmt::Display for BrokerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Parses the MQTT version flag.
pub fn parse_mqtt(s: &str) -> Result<MqttVersion, String> {
    match s {
        "3.1.1" | "311" | "4" => Ok(MqttVersion::V311),
        "5" | "5.0" => Ok(MqttVersion::V5),
        _ => Err(format!("unsupported MQTT version {s:?} (use 3.1.1 or 5)")),
    }
}

/// Options shared by every scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOpts {
    /// Broker address, or the addresses of a cluster's nodes, comma separated: clients are
    /// spread over them round robin (see [`BrokerList`]). Only 127.0.0.0/8 unless
    /// --allow-remote.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "IP:PORT,...")]
    pub broker: BrokerList,
    /// Broker process ids, comma separated: sample their CPU time and RSS from /proc (summed
    /// over the processes).
    #[arg(long, value_name = "PID,...", value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Name of the broker in reports (e.g. flotilla, mosquitto).
    #[arg(long, default_value = "broker")]
    pub label: String,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1", value_parser = parse_mqtt)]
    pub mqtt: MqttVersion,
    /// QoS of published messages and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes (at least 24: the stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: u32,
    /// Open loop: total messages per second over all publishers.
    #[arg(long, value_name = "MSG_PER_SEC")]
    pub rate: Option<f64>,
    /// Closed loop: publish as fast as the broker confirms (see --window).
    #[arg(long, conflicts_with = "rate")]
    pub max: bool,
    /// Closed loop: unconfirmed messages per publisher.
    #[arg(long, default_value_t = 32)]
    pub window: u32,
    /// Warm-up before the measurement window.
    #[arg(long, default_value = "2s")]
    pub warmup: Dur,
    /// Measurement window.
    #[arg(long, default_value = "10s")]
    pub measure: Dur,
    /// Longest drain after publishing stops.
    #[arg(long, default_value = "10s")]
    pub drain: Dur,
    /// The drain ends after this long without deliveries or unacked messages.
    #[arg(long, default_value = "1s")]
    pub quiet: Dur,
    /// Worker processes (default: enough for --conns-per-worker).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Connections per worker process when --workers is not given.
    #[arg(long, default_value_t = 15_000)]
    pub conns_per_worker: u64,
    /// Run workers as threads of this process instead of subprocesses.
    #[arg(long)]
    pub in_process: bool,
    /// Source addresses to bind, comma separated (default: 127.0.0.1..127.0.0.N when a run
    /// needs more than one address's ephemeral ports, else the OS's choice).
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    pub source_addrs: Vec<IpAddr>,
    /// Connection attempts per second over all workers (0: as fast as possible).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Connection attempts in progress at once per worker.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: u32,
    /// Keep alive in CONNECT, seconds (0: none).
    #[arg(long, default_value_t = 0)]
    pub keep_alive: u16,
    /// Bound on one connect, and on waiting for an ack.
    #[arg(long, default_value = "10s")]
    pub op_timeout: Dur,
    /// Bound on a whole step (connect all, subscribe all, ...).
    #[arg(long, default_value = "10m")]
    pub step_timeout: Dur,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Append the result as one JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write an HTML report (SVG charts, no network needed) to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No live progress display.
    #[arg(long)]
    pub no_progress: bool,
    /// Allow a broker outside 127.0.0.0/8.
    #[arg(long)]
    pub allow_remote: bool,
    /// Run id (prefix of client ids); random by default.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Binary to start worker processes from (default: this executable).
    #[arg(long, hide = true)]
    pub worker_exe: Option<PathBuf>,
    /// Connect over TLS (rustls, ring provider). Needs --ca or --tls-insecure.
    #[arg(long)]
    pub tls: bool,
    /// PEM bundle of the CA certificates to trust (with --tls).
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with = "tls_insecure")]
    pub ca: Option<PathBuf>,
    /// Skip verification of the broker's certificate (with --tls). For testing only: the
    /// connection is encrypted but the broker is not authenticated.
    #[arg(long, requires = "tls")]
    pub tls_insecure: bool,
    /// Name the broker's certificate must be valid for (DNS name or IP; default: the
    /// broker's IP).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,
}

impl Default for RunOpts {
    fn default() -> Self {
        Self {
            broker: BrokerList::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 1883))),
            broker_pid: Vec::new(),
            label: "broker".into(),
            mqtt: MqttVersion::V311,
            qos: 0,
            payload: 64,
            rate: None,
            max: false,
            window: 32,
            warmup: Dur(Duration::from_secs(2)),
            measure: Dur(Duration::from_secs(10)),
            drain: Dur(Duration::from_secs(10)),
            quiet: Dur(Duration::from_secs(1)),
            workers: None,
            conns_per_worker: 15_000,
            in_process: false,
            source_addrs: Vec::new(),
            connect_rate: 2000.0,
            connect_concurrency: 256,
            keep_alive: 0,
            op_timeout: Dur(Duration::from_secs(10)),
            step_timeout: Dur(Duration::from_secs(600)),
            json: false,
            out: None,
            html: None,
            no_progress: false,
            allow_remote: false,
            run_id: None,
            worker_exe: None,
            tls: false,
            ca: None,
            tls_insecure: false,
            tls_server_name: None,
        }
    }
}

/// Options that cannot work together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptsError {
    /// The broker is not on the loopback network.
    #[error("broker {0} is outside 127.0.0.0/8; pass --allow-remote to load a remote broker")]
    Remote(SocketAddr),
    /// A source address is not local.
    #[error("source address {0} is outside 127.0.0.0/8")]
    Source(IpAddr),
    /// A value is out of range.
    #[error("{0}")]
    Range(&'static str),
    /// A TLS option without `--tls`.
    #[error("{0} needs --tls")]
    TlsOff(&'static str),
}

impl RunOpts {
    /// Checks the options before anything runs.
    pub fn validate(&self) -> Result<(), OptsError> {
        if let Some(a) = self.broker.addrs().iter().find(|a| !self.allow_remote && !a.ip().is_loopback()) {
            return Err(OptsError::Remote(*a));
        }
        if let Some(ip) = self.source_addrs.iter().find(|ip| !ip.is_loopback() && !self.allow_remote) {
            return Err(OptsError::Source(*ip));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(OptsError::Range("--rate must be a positive number"));
        }
        if self.window == 0 {
            return Err(OptsError::Range("--window must be at least 1"));
        }
        if self.conns_per_worker == 0 || self.conns_per_worker > 19_000 {
            return Err(OptsError::Range(
                "--conns-per-worker must be 1..=19000 (20,000 open files per process)",
            ));
        }
        if self.measure.0.is_zero() {
            return Err(OptsError::Range("--measure must be positive"));
        }
        if self.connect_rate < 0.0 || !self.connect_rate.is_finite() {
            return Err(OptsError::Range("--connect-rate must be 0 or positive"));
        }
        if !self.tls {
            if self.ca.is_some() {
                return Err(OptsError::TlsOff("--ca"));
            }
            if self.tls_insecure {
                return Err(OptsError::TlsOff("--tls-insecure"));
            }
            if self.tls_server_name.is_some() {
                return Err(OptsError::TlsOff("--tls-server-name"));
            }
        }
        Ok(())
    }

    /// The TLS settings for the workers (`None` without `--tls`): reads the CA file and
    /// checks the whole configuration, so a bad file or name fails before anything starts.
    pub fn tls_spec(&self) -> Result<Option<TlsSpec>, TlsError> {
        if !self.tls {
            return Ok(None);
        }
        TlsSpec::load(
            self.ca.as_deref(),
            self.tls_insecure,
            self.tls_server_name.as_deref(),
            self.broker.first().ip(),
        )
        .map(Some)
    }

    /// Worker count for a run of `conns` connections.
    pub fn worker_count(&self, conns: u64) -> u32 {
        self.workers.unwrap_or_else(|| conns.div_ceil(self.conns_per_worker).max(1) as u32).max(1)
    }

    /// Source addresses for a run of `conns` connections: the given ones, or enough
    /// 127.0.0.x addresses to stay within each one's ~28,000 ephemeral ports.
    pub fn sources(&self, conns: u64) -> Vec<IpAddr> {
        if !self.source_addrs.is_empty() {
            return self.source_addrs.clone();
        }
        let needed = conns.div_ceil(25_000);
        if needed <= 1 || !self.broker.first().ip().is_loopback() {
            return Vec::new();
        }
        (1..=needed.min(254)).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("500ms".parse::<Dur>().map(|d| d.ms()), Ok(500));
        assert_eq!("10".parse::<Dur>().map(|d| d.ms()), Ok(10_000));
        assert_eq!("1.5s".parse::<Dur>().map(|d| d.ms()), Ok(1_500));
        assert_eq!("2m".parse::<Dur>().map(|d| d.ms()), Ok(120_000));
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert!("-1s".parse::<Dur>().is_err());
        assert_eq!(Dur(Duration::from_millis(2500)).to_string(), "2500ms");
    }

    #[test]
    fn remote_brokers_need_an_explicit_flag() {
        let mut o =
            RunOpts { broker: "127.0.0.1:1883,10.1.2.3:1883".parse().expect("addr"), ..RunOpts::default() };
        assert!(matches!(o.validate(), Err(OptsError::Remote(_))));
        o.allow_remote = true;
        assert_eq!(o.validate(), Ok(()));
    }

    #[test]
    fn broker_lists_parse_and_print() {
        let b: BrokerList = "127.0.0.1:1883, 127.0.0.1:1884".parse().expect("list");
        assert_eq!(b.len(), 2);
        assert_eq!(b.to_string(), "127.0.0.1:1883,127.0.0.1:1884");
        assert_eq!(b.first().port(), 1883);
        assert!("".parse::<BrokerList>().is_err());
        assert!("127.0.0.1:1883,nope".parse::<BrokerList>().is_err());
    }

    #[test]
    fn tls_options_need_tls() {
        let mut o = RunOpts { tls_insecure: true, ..RunOpts::default() };
        assert_eq!(o.validate(), Err(OptsError::TlsOff("--tls-insecure")));
        o.tls = true;
        assert_eq!(o.validate(), Ok(()));
        let spec = o.tls_spec().expect("insecure spec").expect("tls on");
        assert_eq!(spec.server_name, "127.0.0.1");
        let o = RunOpts { tls: true, ..RunOpts::default() };
        assert!(matches!(o.tls_spec(), Err(TlsError::NoCa)));
        assert!(RunOpts::default().tls_spec().expect("off").is_none());
    }

    #[test]
    fn scale_out_defaults() {
        let o = RunOpts::default();
        assert_eq!(o.worker_count(1000), 1);
        assert_eq!(o.worker_count(40_000), 3);
        assert!(o.sources(20_000).is_empty());
        assert_eq!(o.sources(60_000).len(), 3);
    }
}
