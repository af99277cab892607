//! Test support for the push tests: real HTTP and HTTPS receivers on
//! 127.0.0.1 that play a push service or a webhook endpoint (answering as
//! each test scripts, hanging included), and a server set up to deliver to
//! them with short delays.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use confab_client::tls::Trust;
use confab_client::{ConnectOptions, Connection, TransportKind};
use confab_protocol::pb;
use confab_protocol::pb::client_frame::Body;
use confab_protocol::pb::server_frame::Body as Reply;
use confab_server::config::Config;
use confab_server::server::Server;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;

// ----- receivers -------------------------------------------------------------------

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Read the request, never answer.
    Hang,
}

struct Script {
    next: VecDeque<Answer>,
    default: Answer,
}

/// An HTTP(S) server on 127.0.0.1 that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    https: bool,
    script: Arc<Mutex<Script>>,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    /// A plain-HTTP receiver (webhooks, with push.allow_http).
    pub async fn http() -> Receiver {
        Receiver::start(None).await
    }

    /// An HTTPS receiver whose certificate is issued by a test CA; returns
    /// the CA's PEM file (for push.ca_file), written into `dir`.
    pub async fn https(dir: &Path) -> (Receiver, PathBuf) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "confab test push CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let ca_path = dir.join("push-ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Receiver::start(Some(acceptor)).await, ca_path)
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script { next: VecDeque::new(), default: Answer::Status(201) }));
        let (tx, rx) = mpsc::unbounded_channel();
        let https = tls.is_some();
        let s = Arc::clone(&script);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (tls, script, tx) = (tls.clone(), Arc::clone(&s), tx.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&script), tx.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Receiver { addr, https, script, rx }
    }

    /// A URL on this receiver.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// How requests are answered from now on (after any scripted ones).
    pub fn answer(&self, a: Answer) {
        self.script.lock().unwrap().default = a;
    }

    /// Answers for the next requests, in order.
    pub fn then(&self, answers: &[Answer]) {
        self.script.lock().unwrap().next.extend(answers.iter().copied());
    }

    /// The next request, failing after `within`.
    pub async fn next(&mut self, within: Duration) -> Received {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("receiver stopped"),
            Err(_) => panic!("no push request within {within:?}"),
        }
    }

    /// A request already received, if any.
    pub fn try_next(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }
}

async fn handle(
    req: Request<Incoming>,
    script: Arc<Mutex<Script>>,
    tx: mpsc::UnboundedSender<Received>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let answer = {
        let mut s = script.lock().unwrap();
        let default = s.default;
        s.next.pop_front().unwrap_or(default)
    };
    let _ = tx.send(Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        at: Instant::now(),
    });
    let (status, retry_after) = match answer {
        Answer::Status(s) => (s, None),
        Answer::RetryAfter(s, secs) => (s, Some(secs)),
        Answer::Hang => std::future::pending().await,
    };
    let mut response = Response::builder().status(status);
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    Ok(response.body(Full::new(Bytes::new())).unwrap())
}

// ----- the server ----------------------------------------------------------------------

/// Push settings for tests: loopback and http receivers allowed, short
/// delays and timeouts.
pub fn push_config(dir: &Path) -> Config {
    let local = "127.0.0.1:0".parse().unwrap();
    let mut c = Config { data_dir: dir.to_path_buf(), quic: None, tcp: Some(local), http: None, ..Config::default() };
    c.shutdown_grace_ms = 500;
    c.push.allow_http = true;
    c.push.allow_private_addresses = true;
    c.push.delay_ms = 300;
    c.push.coalesce_ms = 1000;
    c.push.timeout_ms = 1000;
    c.push.retry_base_ms = 100;
    c.push.retry_max_ms = 1000;
    c
}

/// A server over a temp dir that can be restarted with the same settings.
pub struct PushServer {
    pub server: Option<Server>,
    pub config: Config,
    pub dir: tempfile::TempDir,
}

impl PushServer {
    pub async fn start(f: impl FnOnce(&mut Config)) -> PushServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = push_config(dir.path());
        f(&mut config);
        let server = Server::start(config.clone()).await.unwrap();
        PushServer { server: Some(server), config, dir }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn metrics(&self) -> &confab_server::metrics::PushMetrics {
        &self.server().core().metrics.push
    }

    pub async fn connect(&self) -> Connection {
        let s = self.server();
        let mut o =
            ConnectOptions::new(s.tcp_addr().unwrap().to_string(), Trust::Fingerprint(s.fingerprint().to_string()));
        o.transport = TransportKind::Tcp;
        Connection::connect(&o).await.unwrap()
    }

    /// Shuts down and starts again on the same data dir and settings.
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await;
        self.server = Some(Server::start(self.config.clone()).await.unwrap());
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

// ----- requests -------------------------------------------------------------------------

/// Registers a webhook; returns its secret.
pub async fn register_webhook(conn: &Connection, url: &str) -> Vec<u8> {
    let target = pb::register_push_request::Target::Webhook(pb::WebhookTarget { url: url.to_string() });
    match conn.request(Body::RegisterPush(pb::RegisterPushRequest { target: Some(target) })).await.unwrap() {
        Reply::PushRegistered(r) => r.webhook_secret.to_vec(),
        other => panic!("expected PushRegistered, got {other:?}"),
    }
}

/// Polls `f` until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The payload of a webhook request, checked against its signature the
/// way a receiver must (PROTOCOL.md §10.5), with ring's HMAC directly.
pub fn verified_webhook(r: &Received, secret: &[u8]) -> serde_json::Value {
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), "application/json");
    let sig = r.header("confab-signature");
    let (t, v1) = sig.split_once(',').expect("t=…,v1=…");
    let t: u64 = t.strip_prefix("t=").expect("t=").parse().unwrap();
    let v1 = hex::decode(v1.strip_prefix("v1=").expect("v1=")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(t.abs_diff(now) <= 300, "timestamp {t} is not within 5 minutes of {now}");
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, &signed, &v1).expect("the HMAC matches");
    serde_json::from_slice(&r.body).unwrap()
}
