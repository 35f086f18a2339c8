//! The `flotilla client`, `retained` and `publish` commands: one request each to a node's
//! admin endpoint (see `node::admin::ops_api`), answers printed as JSON or one line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use hyper::Method;
use node::admin::client::call;
use node::admin::ops_api::{Applied, BanRequest, ClientList, PublishRequest, Published, RetainedList};
use node::server::{BanTarget, ClientView};

/// Percent-encodes every byte (a path segment that may hold anything).
fn escape(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientAction {
    /// Lists the connected clients (JSON).
    List,
    /// Shows one connected client (JSON).
    Show {
        /// Its client id.
        id: String,
    },
    /// Disconnects a client (5.0 clients see DISCONNECT 0x98 Administrative action).
    Kick {
        /// Its client id.
        id: String,
    },
    /// Refuses CONNECTs (0x8A Banned) from a client id or user, or closes sockets from an
    /// address, for a while.
    Ban {
        /// The client id to ban.
        #[arg(long, group = "target", required_unless_present_any = ["user", "address"])]
        client_id: Option<String>,
        /// The user name to ban.
        #[arg(long, group = "target")]
        user: Option<String>,
        /// The address to ban.
        #[arg(long, group = "target")]
        address: Option<std::net::IpAddr>,
        /// How long, seconds.
        #[arg(long, default_value_t = 3600)]
        secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RetainedAction {
    /// Lists retained messages (topic, size, QoS) as JSON.
    List {
        /// Topic filter.
        #[arg(long, default_value = "#")]
        filter: String,
    },
    /// Deletes the retained message of a topic (nothing is delivered).
    Delete {
        /// The topic.
        topic: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Payload (UTF-8).
    #[arg(long, default_value = "")]
    payload: String,
    /// QoS: 0, 1 or 2.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Keep it as the topic's retained message.
    #[arg(long)]
    retain: bool,
}

/// Runs a `client` subcommand against one node.
pub(crate) async fn client(
    admin: SocketAddr,
    action: &ClientAction,
    deadline: Duration,
) -> anyhow::Result<String> {
    let out = match action {
        ClientAction::List => {
            let list: ClientList = call::<(), _>(admin, Method::GET, "/v1/clients", None, deadline).await?;
            serde_json::to_string_pretty(&list.clients)?
        }
        ClientAction::Show { id } => {
            let path = format!("/v1/clients/{}", escape(id));
            let c: ClientView = call::<(), _>(admin, Method::GET, &path, None, deadline).await?;
            serde_json::to_string_pretty(&c)?
        }
        ClientAction::Kick { id } => {
            let path = format!("/v1/clients/{}/kick", escape(id));
            call::<(), Applied>(admin, Method::POST, &path, None, deadline).await?.done
        }
        ClientAction::Ban { client_id, user, address, secs } => {
            let target = match (client_id, user, address) {
                (Some(id), _, _) => BanTarget::ClientId(id.clone()),
                (_, Some(user), _) => BanTarget::User(user.clone()),
                (_, _, Some(ip)) => BanTarget::Address(*ip),
                _ => anyhow::bail!("name a --client-id, --user or --address"),
            };
            let req = BanRequest { target, secs: *secs };
            call::<_, Applied>(admin, Method::POST, "/v1/bans", Some(&req), deadline).await?.done
        }
    };
    Ok(out)
}

/// Runs a `retained` subcommand against one node.
pub(crate) async fn retained(
    admin: SocketAddr,
    action: &RetainedAction,
    deadline: Duration,
) -> anyhow::Result<String> {
    Ok(match action {
        RetainedAction::List { filter } => {
            let path = format!("/v1/retained?filter={}", escape(filter));
            let list: RetainedList = call::<(), _>(admin, Method::GET, &path, None, deadline).await?;
            serde_json::to_string_pretty(&list.retained)?
        }
        RetainedAction::Delete { topic } => {
            let path = format!("/v1/retained/{}", escape(topic));
            call::<(), Applied>(admin, Method::DELETE, &path, None, deadline).await?.done
        }
    })
}

/// Runs `publish` against one node.
pub(crate) async fn publish(
    admin: SocketAddr,
    args: &PublishArgs,
    deadline: Duration,
) -> anyhow::Result<String> {
    let req = PublishRequest {
        topic: args.topic.clone(),
        payload: args.payload.clone(),
        qos: args.qos,
        retain: args.retain,
    };
    let done: Published = call(admin, Method::POST, "/v1/publish", Some(&req), deadline).await?;
    Ok(format!("published to {} (delivered to {} sessions here)", args.topic, done.delivered))
}
