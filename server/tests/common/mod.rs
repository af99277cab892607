//! Test support: a real server on 127.0.0.1 (port 0) over a real fjall
//! store in a temp dir, and connected clients; `daemon` runs `confabd` as a
//! child process, `raw` is a peer that speaks frames byte by byte (TCP+TLS,
//! QUIC, WebSocket), `e2e` decides about tests whose tool is missing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use confab_client::tls::Trust;
use confab_client::{ConnectOptions, Connection, Event, TransportKind};
use confab_protocol::pb;
use confab_server::config::Config;
use confab_server::server::Server;

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> Config {
    let local = "127.0.0.1:0".parse().unwrap();
    Config {
        data_dir: dir.to_path_buf(),
        quic: Some(local),
        tcp: Some(local),
        http: Some(local),
        // Every test client comes from 127.0.0.1.
        signups_per_address_per_hour: 100_000,
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(config(dir.path())).await.unwrap();
        TestServer { server: Some(server), dir }
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        f(&mut c);
        let server = Server::start(c).await.unwrap();
        TestServer { server: Some(server), dir }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn options(&self, transport: TransportKind) -> ConnectOptions {
        let s = self.server();
        let addr = match transport {
            TransportKind::Quic => s.quic_addr(),
            TransportKind::Tcp => s.tcp_addr(),
            TransportKind::Ws | TransportKind::Wss => s.http_addr(),
        };
        let mut o = ConnectOptions::new(addr.unwrap().to_string(), Trust::Fingerprint(s.fingerprint().to_string()));
        o.transport = transport;
        o
    }

    pub async fn connect(&self, transport: TransportKind) -> Connection {
        Connection::connect(&self.options(transport)).await.unwrap()
    }

    /// Restarts on the same data dir (new ports).
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await;
        self.server = Some(Server::start(config(self.dir.path())).await.unwrap());
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Waits for the next inbox event (skipping other events), failing after 5 s.
pub async fn next_inbox(conn: &mut Connection) -> pb::InboxEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await {
            Ok(Some(Event::Inbox(e))) => return e,
            Ok(Some(Event::Closed(e))) => panic!("session closed: {e}"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no inbox event within 5 s"),
        }
    }
}

/// Polls `check` every 10 ms until it returns `Some`, failing (naming
/// `what`) after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One unlabelled figure from the server's `/metrics` (on its HTTP
/// listener), e.g. `confab_users_online`.
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.server().http_addr().expect("the server has no HTTP listener");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await.unwrap().unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

pub fn text(m: &pb::Message) -> &str {
    match &m.content {
        Some(pb::message::Content::Text(t)) => t,
        _ => panic!("not a text message: {m:?}"),
    }
}

pub fn message(e: &pb::InboxEvent) -> &pb::Message {
    match &e.event {
        Some(pb::inbox_event::Event::Message(m)) => m,
        other => panic!("not a message event: {other:?}"),
    }
}

/// The error code of a failed client call.
pub fn code<T: std::fmt::Debug>(r: Result<T, confab_client::ClientError>) -> confab_protocol::ErrorCode {
    r.expect_err("expected an error").code().expect("expected a server error")
}
pub mod chaos;
pub mod cluster;
pub mod daemon;
pub mod e2e;
mod raw;

pub use raw::Raw;
