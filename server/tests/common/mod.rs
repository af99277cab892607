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

/// A raw TCP+TLS connection speaking frames byte by byte, for tests that
/// send what a well-behaved client never would.
pub struct Raw {
    pub stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    pub buf: bytes::BytesMut,
}

impl Raw {
    pub async fn connect(server: &TestServer) -> Raw {
        let s = server.server();
        let config = confab_client::tls::rustls_config(Trust::Fingerprint(s.fingerprint().to_string())).unwrap();
        let tcp = tokio::net::TcpStream::connect(s.tcp_addr().unwrap()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        Raw { stream, buf: bytes::BytesMut::new() }
    }

    /// Connects and completes the handshake.
    pub async fn hello(server: &TestServer) -> Raw {
        let mut raw = Raw::connect(server).await;
        let hello = pb::client_frame::Body::Hello(pb::Hello { versions: vec![1], ..Default::default() });
        raw.send(1, hello).await;
        assert!(matches!(raw.recv().await.body, Some(pb::server_frame::Body::Welcome(_))));
        raw
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn send(&mut self, request_id: u64, body: pb::client_frame::Body) {
        let frame = confab_protocol::framing::frame_bytes(&pb::ClientFrame { request_id, body: Some(body) });
        self.send_bytes(&frame).await;
    }

    /// The next frame, failing after 5 s.
    pub async fn recv(&mut self) -> pb::ServerFrame {
        self.try_recv().await.expect("connection closed")
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn try_recv(&mut self) -> Option<pb::ServerFrame> {
        use tokio::io::AsyncReadExt;
        let decoder = confab_protocol::FrameDecoder::new(confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES);
        loop {
            if let Some(f) = decoder.next_frame(&mut self.buf).unwrap() {
                return Some(confab_protocol::framing::decode_server_frame(&f).unwrap());
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                .await
                .expect("no frame within 5 s");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame must be an Error with this code; returns it.
    pub async fn expect_error(&mut self, code: confab_protocol::ErrorCode) -> (u64, pb::Error) {
        let f = self.recv().await;
        match f.body {
            Some(pb::server_frame::Body::Error(e)) if e.code == code.0 => (f.request_id, e),
            other => panic!("expected {code}, got {other:?}"),
        }
    }
}

/// The error code of a failed client call.
pub fn code<T: std::fmt::Debug>(r: Result<T, confab_client::ClientError>) -> confab_protocol::ErrorCode {
    r.expect_err("expected an error").code().expect("expected a server error")
}
pub mod daemon;
