//! The `flotilla` broker binary: CLI -> config -> tracing -> `node::node::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use node::config::NodeConfig;
use tracing_subscriber::EnvFilter;

mod ops_cli;
use ops_cli::{ClientAction, PublishArgs, RetainedAction};

/// Flotilla: a clustered MQTT broker. With no arguments it serves MQTT on 0.0.0.0:1883
/// with data under ./data. Each option can also come from its FLOTILLA_... environment
/// variable (e.g. FLOTILLA_ADMIN_LISTEN); precedence: flag, environment, file, default.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version)]
struct Cli {
    /// TOML configuration file (see flotilla.example.toml); flags override it.
    #[arg(long, value_name = "FILE", env = "FLOTILLA_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT listen address, e.g. 127.0.0.1:1883.
    #[arg(long, value_name = "ADDR:PORT", env = "FLOTILLA_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for persistent data.
    #[arg(long, value_name = "DIR", env = "FLOTILLA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. "debug".
    #[arg(long, value_name = "FILTER", env = "FLOTILLA_LOG")]
    log: Option<String>,
    /// Log line format (`log-format`): text or json.
    #[arg(long, value_name = "FORMAT", env = "FLOTILLA_LOG_FORMAT")]
    log_format: Option<node::config::LogFormat>,
    /// Start even if the journal is damaged: cut it at the first bad record (everything
    /// after it is lost) instead of refusing to start.
    #[arg(long)]
    repair: bool,
    /// Run as cluster node N (positive; `cluster.node-id`); without it the broker runs as a
    /// single node.
    #[arg(long, value_name = "N", env = "FLOTILLA_NODE_ID")]
    node_id: Option<u64>,
    /// UDP address of the cluster transport (QUIC), e.g. 127.0.0.1:7946 (`cluster.listen`).
    #[arg(long, value_name = "ADDR:PORT", env = "FLOTILLA_CLUSTER_LISTEN")]
    cluster_listen: Option<SocketAddr>,
    /// Cluster addresses of existing nodes to join, comma-separated (`cluster.join`).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',', env = "FLOTILLA_JOIN")]
    join: Vec<SocketAddr>,
    /// Admin HTTP endpoint address (/metrics, /healthz, /readyz and the JSON API), e.g.
    /// 127.0.0.1:9946 (`admin.listen`).
    #[arg(long, value_name = "ADDR:PORT", env = "FLOTILLA_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// The admin bearer token's file (`admin.token-file`; default data-dir/admin.token).
    /// The admin commands read their token from it too, unless FLOTILLA_ADMIN_TOKEN is set.
    #[arg(long, value_name = "FILE", global = true, env = "FLOTILLA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Nodes hosting the placement driver's raft group, comma-separated (e.g. 1,2,3;
    /// `pd.voters`).
    #[arg(long, value_name = "N,...", value_delimiter = ',', env = "FLOTILLA_PD_VOTERS")]
    pd_voters: Vec<u64>,
    /// Split ranges with more keys than this (`pd.split-keys`).
    #[arg(long, value_name = "N", env = "FLOTILLA_PD_SPLIT_KEYS")]
    pd_split_keys: Option<u64>,
    /// Whether the placement driver creates the MQTT key families' ranges
    /// (`cluster.mqtt-bootstrap`, default true).
    #[arg(long, value_name = "BOOL", env = "FLOTILLA_MQTT_BOOTSTRAP")]
    mqtt_bootstrap: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a development cluster CA (reused if present) and node certificates: keys with
    /// mode 0600 (a reused CA key others may read is refused), node certificates valid for
    /// one year, the CA for ten.
    Cert {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Node ids to make certificates for, comma-separated.
        #[arg(long, value_name = "N,...", value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
    /// Node admin commands, sent to the placement driver through any node's admin endpoint.
    Node {
        #[command(subcommand)]
        action: NodeAction,
        /// Admin endpoint of any cluster node.
        #[arg(long, value_name = "ADDR:PORT", global = true, default_value = "127.0.0.1:9946")]
        admin: SocketAddr,
    },
    /// Cluster-wide views.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        /// Admin endpoint of any cluster node.
        #[arg(long, value_name = "ADDR:PORT", global = true, default_value = "127.0.0.1:9946")]
        admin: SocketAddr,
    },
    /// Connected MQTT clients of one node: list, show, kick, ban.
    Client {
        #[command(subcommand)]
        action: ClientAction,
        /// Admin endpoint of the node.
        #[arg(long, value_name = "ADDR:PORT", global = true, default_value = "127.0.0.1:9946")]
        admin: SocketAddr,
    },
    /// Retained messages of one node: list, delete.
    Retained {
        #[command(subcommand)]
        action: RetainedAction,
        /// Admin endpoint of the node.
        #[arg(long, value_name = "ADDR:PORT", global = true, default_value = "127.0.0.1:9946")]
        admin: SocketAddr,
    },
    /// Publishes a message as the broker, through one node's admin endpoint.
    Publish {
        #[command(flatten)]
        args: PublishArgs,
        /// Admin endpoint of the node.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9946")]
        admin: SocketAddr,
    },
    /// Checks a configuration file (parse, every value, the command-line flags given with
    /// it) without starting anything; prints "FILE: ok" or the error and exits non-zero.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Prints the placement driver's report (nodes, pending and finished operators) as JSON.
    Pd {
        /// Admin endpoint of any cluster node.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9946")]
        admin: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// The MQTT keyspace bootstrap's state, the PD leader and the number of ranges (JSON).
    Status,
}

#[derive(Debug, Subcommand)]
enum NodeAction {
    /// Moves every leader and replica off node N; it receives none until `resume`.
    Drain {
        /// The node.
        id: u64,
    },
    /// Drains node N, then removes it from the cluster for good once it is empty.
    Remove {
        /// The node.
        id: u64,
    },
    /// Ends a drain of node N.
    Resume {
        /// The node.
        id: u64,
    },
    /// Lists the nodes as the placement driver sees them.
    List,
}

/// The token the admin commands send: FLOTILLA_ADMIN_TOKEN, else the token file
/// (`--admin-token-file`, else `admin.token` in `--data-dir`, else in ./data).
fn client_token(cli: &Cli) -> anyhow::Result<Option<String>> {
    if let Ok(token) = std::env::var("FLOTILLA_ADMIN_TOKEN") {
        return Ok(Some(token));
    }
    let path = match (&cli.admin_token_file, &cli.data_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => dir.join("admin.token"),
        (None, None) => PathBuf::from("./data/admin.token"),
    };
    match node::admin::token::read(&path) {
        Ok(token) => Ok(Some(token)),
        Err(node::admin::token::TokenError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && cli.admin_token_file.is_none() =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs a `node` or `pd` subcommand against a running cluster.
fn admin_command(cli: &Cli, command: &Command) -> anyhow::Result<()> {
    use hyper::Method;
    use node::admin::client::pd_call;
    use node::pd::PdReport;
    if let Some(token) = client_token(cli)? {
        node::admin::client::set_token(token);
    }
    let deadline = std::time::Duration::from_secs(30);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = runtime.block_on(async {
        match command {
            Command::Node { action: NodeAction::List, admin } => {
                let report: PdReport = pd_call(*admin, Method::GET, "/v1/pd/report", deadline).await?;
                serde_json::to_string_pretty(&report.nodes).map_err(anyhow::Error::from)
            }
            Command::Node { action, admin } => {
                let (id, op) = match action {
                    NodeAction::Drain { id } => (id, "drain"),
                    NodeAction::Remove { id } => (id, "remove"),
                    NodeAction::Resume { id } => (id, "resume"),
                    NodeAction::List => unreachable!("handled above"),
                };
                let path = format!("/v1/pd/nodes/{id}/{op}");
                let status: node::admin::types::PdStatus =
                    pd_call(*admin, Method::POST, &path, deadline).await?;
                Ok(format!("node {id}: {op} recorded by the placement driver (leader {:?})", status.leader))
            }
            Command::Cluster { action: ClusterAction::Status, admin } => {
                let report: PdReport = pd_call(*admin, Method::GET, "/v1/pd/report", deadline).await?;
                let status = serde_json::json!({
                    "pd_leader": report.leader,
                    "mqtt_bootstrap": report.mqtt_bootstrap,
                    "ranges": report.ranges,
                    "nodes": report.nodes.len(),
                });
                serde_json::to_string_pretty(&status).map_err(anyhow::Error::from)
            }
            Command::Pd { admin } => {
                let report: PdReport = pd_call(*admin, Method::GET, "/v1/pd/report", deadline).await?;
                serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)
            }
            Command::Client { action, admin } => ops_cli::client(*admin, action, deadline).await,
            Command::Retained { action, admin } => ops_cli::retained(*admin, action, deadline).await,
            Command::Publish { args, admin } => ops_cli::publish(*admin, args, deadline).await,
            Command::Cert { .. } | Command::CheckConfig { .. } => Ok(String::new()),
        }
    })?;
    println!("{out}");
    Ok(())
}

fn load(cli: &Cli) -> anyhow::Result<NodeConfig> {
    let mut config = match &cli.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(log) = &cli.log {
        config.log = log.clone();
    }
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    config.storage.repair = cli.repair;
    if let Some(id) = cli.node_id {
        config.cluster.node_id = id;
    }
    if let Some(addr) = cli.cluster_listen {
        config.cluster.listen = addr;
    }
    if !cli.join.is_empty() {
        config.cluster.join = cli.join.clone();
    }
    if let Some(addr) = cli.admin_listen {
        config.admin.listen = Some(addr);
    }
    if let Some(file) = &cli.admin_token_file {
        config.admin.token_file = Some(file.clone());
    }
    if !cli.pd_voters.is_empty() {
        config.pd.voters = cli.pd_voters.clone();
    }
    if let Some(keys) = cli.pd_split_keys {
        config.pd.split_keys = keys;
    }
    if let Some(on) = cli.mqtt_bootstrap {
        config.cluster.mqtt_bootstrap = on;
    }
    config.validate()?;
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    node::process::abort_on_panic();
    let cli = Cli::parse();
    if let Some(Command::Cert { dir, nodes }) = &cli.command {
        if nodes.contains(&0) {
            anyhow::bail!("node ids must be positive");
        }
        for path in node::transport::certgen::generate(dir, nodes)? {
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    if let Some(
        command @ (Command::Node { .. }
        | Command::Pd { .. }
        | Command::Cluster { .. }
        | Command::Client { .. }
        | Command::Retained { .. }
        | Command::Publish { .. }),
    ) = &cli.command
    {
        return admin_command(&cli, command);
    }
    if let Some(Command::CheckConfig { file }) = &cli.command {
        let file = file.clone();
        let cli = Cli { config: Some(file.clone()), ..cli };
        load(&cli)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    let config = load(&cli)?;
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.log_format {
        node::config::LogFormat::Text => logs.init(),
        node::config::LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The handlers are installed before anything starts: a SIGHUP during startup must not
    // kill the broker either.
    let stop = {
        let _entered = runtime.enter();
        wait_for_signal()?
    };
    runtime.block_on(node::node::run(config, stop))?;
    Ok(())
}

/// Installs the signal handlers now; the future resolves on SIGTERM or SIGINT. SIGHUP (a
/// closed terminal, or an operator asking for a reload) is logged and otherwise ignored:
/// there is nothing to reload yet, and its default action would kill the broker.
fn wait_for_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => tracing::info!("SIGHUP: reload not yet supported; ignored"),
            }
        }
    })
}
