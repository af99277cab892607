//! The HTTP listener (axum): the WebSocket bridge for browsers, the
//! browser client itself, health and readiness, Prometheus metrics, and
//! discovery.
//!
//! ## Layout
//! - [`listener`]: accepting (plain or TLS), one connection permit each.
//! - [`ws`]: `GET /v1/ws`, the WebSocket binding of the protocol.
//! - [`assets`]: the browser client's files (embedded or from a directory).
//!
//! Routes: `GET /v1/ws`, `GET /v1/discover`, `GET /healthz`, `GET /readyz`,
//! `GET /metrics`, and everything else from the browser client's files.

pub mod assets;
pub mod listener;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;
use assets::Assets;

/// What the HTTP handlers share.
pub struct App {
    /// The server's shared state.
    pub shared: Arc<Shared>,
    /// Stops everything.
    pub shutdown: CancellationToken,
    /// Which `Origin`s may open WebSockets.
    pub origins: Origins,
    /// The browser client.
    pub assets: Assets,
    /// What `/v1/discover` names.
    pub endpoints: Endpoints,
}

/// The addresses this node serves, as bound.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// QUIC, if enabled.
    pub quic: Option<SocketAddr>,
    /// TCP+TLS, if enabled.
    pub tcp: Option<SocketAddr>,
    /// HTTP (and WebSocket).
    pub http: Option<SocketAddr>,
    /// Whether HTTP is behind TLS (wss://).
    pub http_tls: bool,
    /// Certificate fingerprint (hex).
    pub fingerprint: String,
}

/// The WebSocket `Origin` policy.
#[derive(Debug, Clone)]
pub enum Origins {
    /// Only pages served by this host (Origin's host:port equals Host).
    SameOrigin,
    /// Any origin.
    Any,
    /// Exactly these origins (`scheme://host[:port]`), plus same-origin.
    List(Vec<String>),
}

impl Origins {
    /// From the config's `allowed_origins` (empty: same-origin; `*`: any).
    pub fn from_config(list: &[String]) -> Self {
        if list.is_empty() {
            Origins::SameOrigin
        } else if list.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::List(list.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect())
        }
    }

    /// Whether a request with these headers may upgrade. Requests without
    /// `Origin` come from non-browser clients, which origin checks do not
    /// concern.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let origin = origin.to_str().map_err(|_| "unreadable Origin header")?.to_ascii_lowercase();
        if matches!(self, Origins::Any) {
            return Ok(());
        }
        if let Origins::List(list) = self
            && list.contains(&origin)
        {
            return Ok(());
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        match (origin_host, host) {
            (Some(o), Some(h)) if o == h => Ok(()),
            _ => Err("this Origin may not open WebSockets here (see --allow-origin)"),
        }
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/discover", get(discover))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(get(static_file))
        .layer(axum::middleware::from_fn(first_request))
        .with_state(app)
}

/// A complete request arrived: the connection's first-request deadline no
/// longer applies (see [`listener::Conn`]).
async fn first_request(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<listener::PeerAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    peer.served();
    next.run(request).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // A real read: the store is open and answers.
    let store = Arc::clone(&app.shared.store);
    match tokio::task::spawn_blocking(move || store.inbox_head(0)).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store check failed\n").into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let sh = &app.shared;
    let body = sh.metrics.render(sh.hub.sessions(), sh.hub.users_online());
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `GET /v1/discover`: where a client should connect. One node names
/// itself; a cluster lists its nodes, least loaded first.
async fn discover(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let e = &app.endpoints;
    // A wildcard bind is reachable under whatever name the client used.
    let host_asked = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| host_of(h).to_string());
    let name = |a: SocketAddr| -> String {
        if a.ip().is_unspecified()
            && let Some(h) = &host_asked
        {
            return format!("{h}:{}", a.port());
        }
        a.to_string()
    };
    let ws = e.http.map(|a| format!("{}://{}/v1/ws", if e.http_tls { "wss" } else { "ws" }, name(a)));
    let sh = &app.shared;
    let body = serde_json::json!({
        "protocol": ws::SUBPROTOCOL,
        "nodes": [{
            "node": "local",
            "quic": e.quic.map(name),
            "tcp": e.tcp.map(name),
            "ws": ws,
            "fingerprint": format!("sha256:{}", e.fingerprint),
            "load": {
                "sessions": sh.hub.sessions(),
                "connections_free": sh.connections.available_permits(),
            },
        }],
    });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The host part of a Host header: `name:port`, `[v6]:port`, `[v6]` or
/// `name`.
fn host_of(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

async fn static_file(State(app): State<Arc<App>>, uri: Uri) -> Response {
    if uri.path() == "/" && !app.assets.available() {
        return (
            StatusCode::NOT_FOUND,
            "this confabd was built without the browser client (web/ was empty); see README.md\n",
        )
            .into_response();
    }
    app.assets.serve(uri.path()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(host_of("chat.example:7080"), "chat.example");
        assert_eq!(host_of("chat.example"), "chat.example");
        assert_eq!(host_of("[::1]:7080"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
    }

    #[test]
    fn origin_policy() {
        let same = Origins::from_config(&[]);
        assert!(same.check(&headers(None, "127.0.0.1:7080")).is_ok());
        assert!(same.check(&headers(Some("http://127.0.0.1:7080"), "127.0.0.1:7080")).is_ok());
        assert!(same.check(&headers(Some("http://evil.example"), "127.0.0.1:7080")).is_err());
        assert!(same.check(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:7080")).is_err());
        let list = Origins::from_config(&["https://chat.example/".into()]);
        assert!(list.check(&headers(Some("https://chat.example"), "10.0.0.1:7080")).is_ok());
        assert!(list.check(&headers(Some("https://other.example"), "10.0.0.1:7080")).is_err());
        assert!(Origins::from_config(&["*".into()]).check(&headers(Some("null"), "x")).is_ok());
    }
}
