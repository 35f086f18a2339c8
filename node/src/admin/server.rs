//! SHELL. The admin HTTP/1.1 server (hyper 1): bounded connections, a header read timeout,
//! a request body limit, JSON answers and JSON errors with matching status codes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::api::Api;
use super::metrics;
use super::types::{ApiError, ErrorBody};
use crate::pd::PdHandle;
use crate::raftstore::Store;
use crate::server::OpsHandle;
use crate::transport::QuicTransport;
use crate::transport::quic::stopped;

/// Largest request body, bytes.
pub const BODY_BYTES_MAX: usize = 4 << 20;
/// Most concurrent admin connections; more wait in the accept backlog.
const CONNECTIONS_MAX: usize = 256;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its group.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The bearer token could not be read or made.
    #[error(transparent)]
    Token(#[from] super::token::TokenError),
    /// The address could not be bound.
    #[error("cannot bind admin address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// A running admin endpoint; stops on [`AdminServer::shutdown`].
pub struct AdminServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    state: Arc<State>,
}

/// What the handlers serve from.
struct State {
    /// The cluster API; `None` on a single node.
    api: Option<Api>,
    /// The MQTT server, once it is bound.
    ops: OnceLock<OpsHandle>,
    /// The placement driver, when clustered: ready needs a PD leader.
    pd: Option<PdHandle>,
    /// The bearer token every other endpoint needs.
    token: String,
    /// The bound address (a `Host` naming it is accepted).
    local: SocketAddr,
}

impl AdminServer {
    /// Binds `addr` and serves the cluster API in the background; requests need `token`.
    pub async fn bind(
        addr: SocketAddr,
        token: String,
        store: Arc<Store>,
        transport: QuicTransport,
        pd: Option<PdHandle>,
        client: Option<crate::cluster::KvClient>,
    ) -> Result<Self, AdminError> {
        let api = Api::new(store, transport, pd.clone(), client, REQUEST_TIMEOUT);
        Self::bind_state(addr, token, Some(api), pd).await
    }

    /// Binds `addr` with only the MQTT server's endpoints (a single node).
    pub async fn bind_single(addr: SocketAddr, token: String) -> Result<Self, AdminError> {
        Self::bind_state(addr, token, None, None).await
    }

    async fn bind_state(
        addr: SocketAddr,
        token: String,
        api: Option<Api>,
        pd: Option<PdHandle>,
    ) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        let state = Arc::new(State { api, ops: OnceLock::new(), pd, token, local });
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::clone(&state), rx));
        tracing::info!(addr = %local, "admin endpoint listening");
        Ok(Self { addr: local, shutdown, state })
    }

    /// Serves `ops` (the MQTT server's view) from now on; a second call is ignored.
    pub fn attach(&self, ops: OpsHandle) {
        let _ = self.state.ops.set(ops);
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; connections in progress finish their request.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, api: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let service = service_fn(move |req| serve(Arc::clone(&api), req));
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
            drop(permit);
        });
    }
}

/// `/metrics`, `/healthz` and `/readyz`, or `None` for other requests.
fn serve_ops(state: &State, method: &hyper::Method, path: &str) -> Option<Response<Full<Bytes>>> {
    if method != hyper::Method::GET {
        return None;
    }
    let ops = state.ops.get();
    match path {
        "/metrics" => Some(match metrics::render(ops) {
            Ok(text) => respond_as(StatusCode::OK, text, metrics::CONTENT_TYPE),
            Err(e) => error(&ApiError::Unavailable { message: format!("metrics: {e}") }),
        }),
        "/healthz" => Some(respond_as(StatusCode::OK, b"ok\n".to_vec(), "text/plain")),
        "/openapi.json" => Some(respond(StatusCode::OK, super::ops_api::OPENAPI.as_bytes().to_vec())),
        "/readyz" => {
            let serving = ops.is_some_and(OpsHandle::ready);
            let quorum = state.pd.as_ref().is_none_or(|pd| pd.leader().0.is_some());
            Some(match (serving, quorum) {
                (true, true) => respond_as(StatusCode::OK, b"ready\n".to_vec(), "text/plain"),
                (false, _) => {
                    respond_as(StatusCode::SERVICE_UNAVAILABLE, b"MQTT not serving\n".to_vec(), "text/plain")
                }
                (true, false) => respond_as(
                    StatusCode::SERVICE_UNAVAILABLE,
                    b"no placement driver leader\n".to_vec(),
                    "text/plain",
                ),
            })
        }
        _ => None,
    }
}

async fn serve(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(resp) = serve_ops(&state, req.method(), req.uri().path()) {
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    if let Err(e) = super::token::check(&parts.method, &parts.headers, state.local, &state.token) {
        let mut resp = error(&e);
        if e == ApiError::Unauthorized {
            resp.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return Ok(resp);
    }
    let body = match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Ok(error(&ApiError::TooLarge { limit: BODY_BYTES_MAX }));
        }
        Err(e) => return Ok(error(&ApiError::BadRequest { message: format!("cannot read body: {e}") })),
    };
    let method = parts.method;
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let result = tokio::task::spawn_blocking(move || {
        let ops = state.ops.get();
        if let Some(answer) = super::ops_api::handle(ops, &method, &path, query.as_deref(), &body) {
            return answer;
        }
        match &state.api {
            Some(api) => api.handle(&method, &path, &body),
            None => Err(ApiError::NotFound),
        }
    })
    .await;
    Ok(match result {
        Ok(Ok(json)) => respond(StatusCode::OK, json),
        Ok(Err(e)) => error(&e),
        Err(e) => error(&ApiError::Unavailable { message: format!("handler failed: {e}") }),
    })
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    respond_as(status, body, "application/json")
}

fn respond_as(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&ErrorBody { error: e.clone() }).unwrap_or_default();
    respond(status, body)
}
