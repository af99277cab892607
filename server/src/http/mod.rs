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
pub mod starting;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::transport::Ingress;
use assets::Assets;

/// What the HTTP handlers share.
pub struct App {
    /// What serving connections needs (the core included).
    pub ingress: Arc<Ingress>,
    /// Stops everything.
    pub shutdown: CancellationToken,
    /// Which `Origin`s may open WebSockets.
    pub origins: Origins,
    /// The browser client.
    pub assets: Assets,
    /// What `/v1/discover` names.
    pub endpoints: Endpoints,
    /// In cluster mode: the other nodes, for `/v1/discover` and
    /// `/v1/cluster`.
    pub cluster: Option<Arc<crate::cluster::ClusterView>>,
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

/// The WebSocket `Origin` policy. Browsers send `Origin` with every
/// WebSocket handshake; a page may open this server's WebSocket when its
/// origin is one of the server's public origins (`--public-origin`, the
/// addresses users open), one of the allowed others (`--allow-origin`), or
/// — when no public origin is configured — the very address the request
/// was sent to, scheme included, and that address is a loopback name or an
/// IP literal. A DNS name is never trusted from the `Host` header alone: a
/// page on an attacker's name that resolves to this server (DNS rebinding)
/// sends matching `Origin` and `Host` headers.
#[derive(Debug, Clone)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
    public_set: bool,
    /// The scheme pages served by this listener have (`http` or `https`).
    scheme: &'static str,
}

fn normalized(origin: &str) -> String {
    origin.trim_end_matches('/').to_ascii_lowercase()
}

impl Origins {
    /// From the config's public and allowed origins (`*` among the allowed:
    /// any), for a listener serving `https` when `tls`.
    pub fn from_config(public: &[String], allowed: &[String], tls: bool) -> Self {
        Origins {
            any: allowed.iter().any(|o| o == "*"),
            listed: public.iter().chain(allowed).filter(|o| *o != "*").map(|o| normalized(o)).collect(),
            public_set: !public.is_empty(),
            scheme: if tls { "https" } else { "http" },
        }
    }

    /// Whether a request with these headers may upgrade. Requests without
    /// `Origin` come from non-browser clients, which origin checks do not
    /// concern.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let origin = normalized(origin.to_str().map_err(|_| "unreadable Origin header")?);
        if self.any || self.listed.contains(&origin) {
            return Ok(());
        }
        if self.public_set {
            return Err(
                "this page's origin is not a public origin of this server (see --public-origin, --allow-origin)",
            );
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        let same = match (origin.split_once("://"), &host) {
            (Some((scheme, rest)), Some(h)) => scheme == self.scheme && rest == h,
            _ => false,
        };
        if !same {
            return Err("this page's origin may not open WebSockets here (see --public-origin, --allow-origin)");
        }
        if !literal_or_loopback(host_of(host.as_deref().unwrap_or(""))) {
            return Err("pages on a DNS name may open WebSockets only when it is a public origin: \
                        start confabd with --public-origin SCHEME://NAME[:PORT]");
        }
        Ok(())
    }
}

/// An IP literal (`127.0.0.1`, `[::1]`) or `localhost`: names no other
/// site can make a browser send.
fn literal_or_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok() || bare == "localhost" || bare.ends_with(".localhost")
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/discover", get(discover))
        .route("/v1/cluster", get(cluster_status))
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
    match app.ingress.core.store.check().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let core = &app.ingress.core;
    let body = core.metrics.render(crate::metrics::Live {
        sessions: core.hub.sessions(),
        users_online: core.hub.users_online(),
        queued_bytes: core.hub.queued_bytes(),
    });
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `GET /v1/discover`: where a client should connect. One node names
/// itself; a cluster lists its live nodes that are not draining, least
/// loaded first (spec §2.5).
async fn discover(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // A wildcard bind is reachable under whatever name the client used.
    let host_asked = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| host_of(h).to_string());
    let nodes: Vec<serde_json::Value> = match &app.cluster {
        Some(view) => {
            let me = view.nodes.me();
            view.discover()
                .iter()
                .map(|c| node_json(c, (c.node == me).then_some(host_asked.as_deref()).flatten()))
                .collect()
        }
        None => {
            let e = &app.endpoints;
            let ingress = &app.ingress;
            let card = crate::cluster::nodes::Card {
                node: "local".into(),
                quic: e.quic.map(|a| a.to_string()),
                tcp: e.tcp.map(|a| a.to_string()),
                http: e.http.map(|a| a.to_string()),
                http_tls: e.http_tls,
                fingerprint: e.fingerprint.clone(),
                load: crate::cluster::nodes::Load {
                    sessions: ingress.core.hub.sessions() as u64,
                    connections_free: ingress.connections.available_permits() as u64,
                    queued_bytes: ingress.core.hub.queued_bytes(),
                    ..Default::default()
                },
                ..Default::default()
            };
            vec![node_json(&card, host_asked.as_deref())]
        }
    };
    let body = serde_json::json!({ "protocol": ws::SUBPROTOCOL, "nodes": nodes });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Public by design (addresses, fingerprint, load): a page served by one
    // node may ask another where to go when its own node is gone.
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

/// One node of `/v1/discover`. `host_asked` names a wildcard address (the
/// answering node's own: the host the client used to reach it).
fn node_json(card: &crate::cluster::nodes::Card, host_asked: Option<&str>) -> serde_json::Value {
    let name = |a: &String| -> String {
        match (a.parse::<SocketAddr>(), host_asked) {
            (Ok(s), Some(h)) if s.ip().is_unspecified() => format!("{h}:{}", s.port()),
            _ => a.clone(),
        }
    };
    let ws = card.http.as_ref().map(|a| format!("{}://{}/v1/ws", if card.http_tls { "wss" } else { "ws" }, name(a)));
    let mut load = serde_json::json!({
        "sessions": card.load.sessions,
        "connections_free": card.load.connections_free,
        "queued_bytes": card.load.queued_bytes,
    });
    if card.node != "local" {
        load["cpu"] = serde_json::json!((card.load.cpu * 100.0).round() / 100.0);
    }
    serde_json::json!({
        "node": card.node,
        "quic": card.quic.as_ref().map(name),
        "tcp": card.tcp.as_ref().map(name),
        "ws": ws,
        "fingerprint": format!("sha256:{}", card.fingerprint),
        "load": load,
    })
}

/// `GET /v1/cluster`: the cluster as an operator sees it (nodes, owners,
/// streams), read from NATS at most every 2 s; 404 on a single node.
async fn cluster_status(State(app): State<Arc<App>>) -> Response {
    let Some(view) = &app.cluster else {
        return (StatusCode::NOT_FOUND, "not a cluster node (see docs/CLUSTER.md)\n").into_response();
    };
    let mut resp = view.status_json().await.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
        let same = Origins::from_config(&[], &[], false);
        assert!(same.check(&headers(None, "127.0.0.1:7080")).is_ok());
        assert!(same.check(&headers(Some("http://127.0.0.1:7080"), "127.0.0.1:7080")).is_ok());
        assert!(same.check(&headers(Some("http://localhost:7080"), "localhost:7080")).is_ok());
        assert!(same.check(&headers(Some("http://[::1]:7080"), "[::1]:7080")).is_ok());
        assert!(same.check(&headers(Some("http://evil.example"), "127.0.0.1:7080")).is_err());
        assert!(same.check(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:7080")).is_err());
        // The scheme counts: an https page is not this plain-HTTP listener's.
        assert!(same.check(&headers(Some("https://127.0.0.1:7080"), "127.0.0.1:7080")).is_err());
        // DNS rebinding: an attacker's name resolving here sends matching
        // Origin and Host headers; a name is trusted only as a public origin.
        assert!(same.check(&headers(Some("http://rebind.evil.example:7080"), "rebind.evil.example:7080")).is_err());
        let public = Origins::from_config(&["https://chat.example/".into()], &[], true);
        assert!(public.check(&headers(Some("https://chat.example"), "chat.example")).is_ok());
        assert!(public.check(&headers(Some("http://chat.example"), "chat.example")).is_err());
        // With public origins set, Host is not consulted at all.
        assert!(public.check(&headers(Some("https://127.0.0.1:7443"), "127.0.0.1:7443")).is_err());
        let list = Origins::from_config(&[], &["https://chat.example/".into()], false);
        assert!(list.check(&headers(Some("https://chat.example"), "10.0.0.1:7080")).is_ok());
        assert!(list.check(&headers(Some("https://other.example"), "10.0.0.1:7080")).is_err());
        assert!(Origins::from_config(&[], &["*".into()], false).check(&headers(Some("null"), "x")).is_ok());
    }
}
