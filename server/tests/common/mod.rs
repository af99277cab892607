//! Test support: a real server on 127.0.0.1 (port 0) over a real fjall
//! store in a temp dir, and connected clients.
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
    Config { data_dir: dir.to_path_buf(), quic: Some(local), tcp: Some(local), ..Config::default() }
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

/// Asserts that no inbox event arrives within `ms`.
pub async fn no_inbox(conn: &mut Connection, ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await {
            Ok(Some(Event::Inbox(e))) => panic!("unexpected inbox event {e:?}"),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        }
    }
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
