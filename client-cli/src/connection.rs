//! One live session with a server: connect over QUIC, TCP+TLS or
//! WebSocket, handshake,
//! then requests (correlated by the protocol crate's `ClientSession`) and
//! events. A background task owns the transport; it sends heartbeats and
//! notices a dead server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::{ClientConfig, ClientEvent, ClientSession};
use confab_protocol::{ErrorCode, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use crate::tls::{self, Trust};

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// QUIC (UDP), ALPN confab/1.
    Quic,
    /// TCP + TLS 1.3, ALPN confab/1.
    Tcp,
    /// WebSocket over plain HTTP (`ws://HOST:PORT/v1/ws`): for loopback,
    /// or behind a proxy that terminates TLS. No certificate to pin.
    Ws,
    /// WebSocket over TLS (`wss://HOST:PORT/v1/ws`), with the same
    /// certificate pinning as the other transports.
    Wss,
}

impl TransportKind {
    /// The port a server listens on for this transport by default.
    pub fn default_port(self) -> u16 {
        match self {
            TransportKind::Quic | TransportKind::Tcp => 7443,
            TransportKind::Ws | TransportKind::Wss => 7080,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`.
    pub server: String,
    /// Transport.
    pub transport: TransportKind,
    /// Certificate check.
    pub trust: Trust,
    /// Sent in Hello.
    pub client_name: String,
    /// Deadline for connecting plus the handshake.
    pub timeout: Duration,
}

impl ConnectOptions {
    /// Options with the defaults: QUIC, 10 s timeout.
    pub fn new(server: impl Into<String>, trust: Trust) -> Self {
        ConnectOptions {
            server: server.into(),
            transport: TransportKind::Quic,
            trust,
            client_name: concat!("confab/", env!("CARGO_PKG_VERSION")).into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Something the server sent on its own (request_id 0).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // events are moved once, not stored in bulk
pub enum Event {
    /// A new inbox event.
    Inbox(pb::InboxEvent),
    /// A subscribed user's presence.
    Presence(pb::Presence),
    /// Someone is typing.
    Typing(pb::TypingEvent),
    /// The other member of a DM read up to a seq.
    ReadReceipt(pb::ReadReceipt),
    /// The server will close the session.
    GoAway(pb::GoAway),
    /// A non-fatal error about the session.
    Error(pb::Error),
    /// The session ended; no more events follow.
    Closed(ClientError),
}

enum Command {
    Request(Body, oneshot::Sender<Result<Reply, ClientError>>),
    Typing(u64),
}

/// A connected, handshaken session.
pub struct Connection {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    welcome: pb::Welcome,
    fingerprint: String,
    closer: Option<Closer>,
    /// The QUIC connection, for request streams.
    quic: Option<quinn::Connection>,
    /// Why the session ended, once it has: requests made after it say so
    /// instead of a bare "session closed".
    ended: Arc<std::sync::Mutex<Option<ClientError>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;
type Closer = Box<dyn FnOnce() + Send + Sync>;

async fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| ClientError::Connect(format!("{server}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{server}: no address")))
}

/// A TCP connect that failed, with what to check.
fn tcp_failed(e: &std::io::Error, addr: SocketAddr) -> ClientError {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        ClientError::Connect(format!(
            "{addr}: connection refused: nothing listens there (is confabd running, on this port?)"
        ))
    } else {
        ClientError::Connect(format!("{addr}: {e}"))
    }
}

/// A TLS handshake that failed; a plain HTTP port answers TLS with bytes
/// that are not TLS records.
fn tls_failed(e: &std::io::Error, addr: SocketAddr, transport: &str) -> ClientError {
    let text = e.to_string();
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        let hint = if transport == "wss" {
            "this port speaks plain HTTP: use --transport ws here"
        } else {
            "this looks like the server's HTTP port (WebSocket bridge): use --transport ws here, or the TCP+TLS port (7443 by default) for tcp"
        };
        ClientError::Connect(format!("{addr}: the server did not answer in TLS ({text}); {hint}"))
    } else {
        ClientError::Connect(format!("TLS: {text}"))
    }
}

/// A QUIC handshake, failing fast when nothing listens: a server that is
/// not running answers UDP with ICMP port unreachable, which QUIC cannot
/// see, so after a moment a TCP connect to the same address asks the
/// question QUIC cannot (confabd serves QUIC and TCP+TLS on one port by
/// default). Refused there too, and still no QUIC answer: give up at once
/// instead of waiting out the timeout.
async fn quic_or_nothing(connecting: quinn::Connecting, addr: SocketAddr) -> Result<quinn::Connection, ClientError> {
    tokio::pin!(connecting);
    let probe = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(false),
            Ok(Ok(_)) => Some(true),
            _ => None,
        }
    };
    tokio::pin!(probe);
    let mut tcp_answers = None;
    loop {
        tokio::select! {
            r = &mut connecting => {
                return r.map_err(|e| match tcp_answers {
                    Some(true) => ClientError::Connect(format!(
                        "QUIC: {e}; {addr} accepts TCP, so UDP may be blocked on the way: try --transport tcp"
                    )),
                    _ => ClientError::Connect(format!("QUIC: {e}")),
                });
            }
            found = &mut probe, if tcp_answers.is_none() => match found {
                Some(false) => {
                    return Err(ClientError::Connect(format!(
                        "{addr}: no QUIC answer, and TCP to the same port was refused: nothing listens there \
                         (is confabd running, on this port?)"
                    )));
                }
                Some(true) => tcp_answers = Some(true),
                None => tcp_answers = Some(false),
            },
        }
    }
}

fn server_name(server: &str) -> Result<rustls::pki_types::ServerName<'static>, ClientError> {
    let host = match server.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => server,
    };
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ClientError::Connect(format!("bad host {host}: {e}")))
}

impl Connection {
    /// Connects, completes TLS and the Confab handshake.
    pub async fn connect(opts: &ConnectOptions) -> Result<Connection, ClientError> {
        tokio::time::timeout(opts.timeout, Self::connect_inner(opts))
            .await
            .map_err(|_| ClientError::Connect(format!("{}: timed out", opts.server)))?
    }

    async fn connect_inner(opts: &ConnectOptions) -> Result<Connection, ClientError> {
        let addr = resolve(&opts.server).await?;
        let name = server_name(&opts.server)?;
        let (tls_config, verifier) =
            tls::client_config(opts.trust.clone()).map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut quic = None;
        let connected = Self::transport(opts, addr, name, tls_config, &mut quic).await;
        let (reader, writer, closer) = match connected {
            Ok(c) => c,
            Err(e) => {
                // A pin that failed is not a network error: say which
                // certificate came and which was expected.
                if let (tls::Trust::Fingerprint(pinned), Some(seen)) = (&opts.trust, verifier.seen())
                    && *pinned != seen
                {
                    return Err(ClientError::CertificateChanged {
                        server: opts.server.clone(),
                        seen,
                        pinned: pinned.clone(),
                    });
                }
                return Err(e);
            }
        };
        let fingerprint = verifier.seen().unwrap_or_default();
        let capabilities = if quic.is_some() {
            vec![
                confab_protocol::session::REQUEST_STREAMS.to_string(),
                confab_protocol::session::TYPING_DATAGRAM.to_string(),
            ]
        } else {
            vec![]
        };
        let config = ClientConfig { client_name: opts.client_name.clone(), capabilities };
        let session = ClientSession::new(&config, Instant::now());
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (welcome_tx, welcome_rx) = oneshot::channel();
        let ended = Arc::new(std::sync::Mutex::new(None));
        let link = Link { events: events_tx, ended: Arc::clone(&ended) };
        tokio::spawn(drive(session, reader, writer, quic.clone(), commands_rx, link, welcome_tx));
        let welcome = match welcome_rx.await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Connect("the connection closed during the handshake".into())),
        };
        Ok(Connection { commands, events, welcome, fingerprint, closer, quic, ended })
    }

    /// The transport's byte stream (and, on QUIC, its connection).
    async fn transport(
        opts: &ConnectOptions,
        addr: SocketAddr,
        name: rustls::pki_types::ServerName<'static>,
        tls_config: Arc<rustls::ClientConfig>,
        quic: &mut Option<quinn::Connection>,
    ) -> Result<(Reader, Writer, Option<Closer>), ClientError> {
        Ok(match opts.transport {
            TransportKind::Ws => {
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| tcp_failed(&e, addr))?;
                let _ = tcp.set_nodelay(true);
                let pipe = crate::ws::connect(&format!("ws://{}/v1/ws", opts.server), tcp).await?;
                let (r, w) = tokio::io::split(pipe);
                (Box::new(r), Box::new(w), None)
            }
            TransportKind::Wss => {
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| tcp_failed(&e, addr))?;
                let _ = tcp.set_nodelay(true);
                // HTTPS offers ALPN http/1.1, not confab/1.
                let mut http_tls = (*tls_config).clone();
                http_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                let stream = tokio_rustls::TlsConnector::from(Arc::new(http_tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_failed(&e, addr, "wss"))?;
                let pipe = crate::ws::connect(&format!("wss://{}/v1/ws", opts.server), stream).await?;
                let (r, w) = tokio::io::split(pipe);
                (Box::new(r), Box::new(w), None)
            }
            TransportKind::Tcp => {
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| tcp_failed(&e, addr))?;
                let _ = tcp.set_nodelay(true);
                let stream = tokio_rustls::TlsConnector::from(tls_config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_failed(&e, addr, "tcp"))?;
                let (r, w) = tokio::io::split(stream);
                (Box::new(r), Box::new(w), None)
            }
            TransportKind::Quic => {
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config)
                    .map_err(|e| ClientError::Connect(e.to_string()))?;
                let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
                    .parse()
                    .map_err(|e| ClientError::Local(format!("{e}")))?;
                let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))?;
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                let host = match &name {
                    rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_string(),
                    rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                    _ => "localhost".to_string(),
                };
                let connecting = endpoint.connect(addr, &host).map_err(|e| ClientError::Connect(e.to_string()))?;
                let conn = quic_or_nothing(connecting, addr).await?;
                let (send, recv) = conn.open_bi().await.map_err(|e| ClientError::Connect(e.to_string()))?;
                *quic = Some(conn.clone());
                let closer = move || close_quic(conn, endpoint);
                (Box::new(recv), Box::new(send), Some(Box::new(closer) as Closer))
            }
        })
    }

    /// The server's Welcome.
    pub fn welcome(&self) -> &pb::Welcome {
        &self.welcome
    }

    /// The server's limits.
    pub fn limits(&self) -> Limits {
        self.welcome.limits.as_ref().map(Limits::from).unwrap_or_default()
    }

    /// SHA-256 fingerprint (hex) of the certificate the server presented.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Sends a request and waits for its final response. A server `Error`
    /// becomes [`ClientError::Server`].
    pub async fn request(&self, body: Body) -> Result<Reply, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Request(body, tx)).map_err(|_| self.ended())?;
        rx.await.map_err(|_| self.ended())?
    }

    /// Why the session ended (as a lost connection), or "session closed"
    /// before the reason is known.
    fn ended(&self) -> ClientError {
        let why = self.ended.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone());
        match why {
            Some(ClientError::Server { code, message, .. }) => ClientError::Disconnected(format!("{code}: {message}")),
            Some(e @ ClientError::Disconnected(_)) => e,
            Some(other) => ClientError::Disconnected(other.to_string()),
            None => ClientError::Disconnected("session closed".into()),
        }
    }

    /// Sends one request on its own QUIC request stream, so it never waits
    /// behind live events on the session stream. Allowed for history, sync,
    /// lists, read receipts and ping, once the session is authenticated.
    pub async fn request_on_stream(&self, body: Body) -> Result<Reply, ClientError> {
        let Some(conn) = &self.quic else {
            return Err(ClientError::Local("request streams need the QUIC transport".into()));
        };
        let lost = |e: &dyn std::fmt::Display| ClientError::Disconnected(e.to_string());
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
        let frame = confab_protocol::framing::frame_bytes(&pb::ClientFrame { request_id: 1, body: Some(body) });
        send.write_all(&frame).await.map_err(|e| lost(&e))?;
        send.finish().map_err(|e| lost(&e))?;
        let max = self.limits().max_frame_bytes;
        let bytes =
            recv.read_to_end(max as usize + confab_protocol::framing::MAX_VARINT_LEN).await.map_err(|e| lost(&e))?;
        let mut buf = BytesMut::from(&bytes[..]);
        let payload = match confab_protocol::FrameDecoder::new(max).next_frame(&mut buf) {
            Ok(Some(p)) => p,
            Ok(None) => return Err(ClientError::Disconnected("request stream ended early".into())),
            Err(e) => return Err(ClientError::Unexpected(e.to_string())),
        };
        let frame = confab_protocol::framing::decode_server_frame(&payload)
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        match frame.body {
            Some(Reply::Error(e)) => Err(ClientError::Server {
                code: ErrorCode(e.code),
                message: e.message,
                retry_after_ms: e.retry_after_ms,
            }),
            Some(other) => Ok(other),
            None => Err(ClientError::Unexpected("empty response".into())),
        }
    }

    /// Sends a typing notice (no response).
    pub fn typing(&self, conversation_id: u64) -> Result<(), ClientError> {
        self.commands.send(Command::Typing(conversation_id)).map_err(|_| self.ended())
    }

    /// The next server event; `None` after [`Event::Closed`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event if one is already waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Closes the connection.
    pub fn close(mut self) {
        if let Some(close) = self.closer.take() {
            close();
        }
    }
}

/// Closes of dropped QUIC connections still being sent: quinn sends them
/// from the endpoint's task, which would die with a process that exits at
/// once, leaving the server to find out by its heartbeat timeout (and show
/// the user online until then).
static CLOSING: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

fn close_quic(conn: quinn::Connection, endpoint: quinn::Endpoint) {
    conn.close(0u32.into(), b"bye");
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let waiting = runtime.spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    });
    // Only pushes and takes happen under the lock: a poisoned one is fine.
    let mut closing = CLOSING.lock().unwrap_or_else(|p| p.into_inner());
    closing.retain(|h| !h.is_finished());
    closing.push(waiting);
}

/// Waits until the closes of dropped or closed QUIC connections have gone
/// out (at most about a second). Call it before a short-lived program
/// exits.
pub async fn finish_closing() {
    let pending = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|p| p.into_inner()));
    for h in pending {
        let _ = h.await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(close) = self.closer.take() {
            close();
        }
    }
}

/// Where the session task reports to: events, and why it ended.
struct Link {
    events: mpsc::UnboundedSender<Event>,
    ended: Arc<std::sync::Mutex<Option<ClientError>>>,
}

async fn drive(
    mut session: ClientSession,
    mut reader: Reader,
    mut writer: Writer,
    datagrams: Option<quinn::Connection>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    link: Link,
    welcome: oneshot::Sender<Result<pb::Welcome, ClientError>>,
) {
    let Link { events, ended } = link;
    let mut welcome = Some(welcome);
    let mut incoming = datagrams.clone();
    let mut out = BytesMut::new();
    let mut unflushed = false;
    let mut pending: HashMap<u64, oneshot::Sender<Result<Reply, ClientError>>> = HashMap::new();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let closed = loop {
        let mut ended = None;
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Welcome(w) => {
                    if let Some(tx) = welcome.take() {
                        let _ = tx.send(Ok(w));
                    }
                }
                ClientEvent::Response { request_id, body } => {
                    if let Some(tx) = pending.remove(&request_id) {
                        let _ = tx.send(match body {
                            Reply::Error(e) => Err(ClientError::Server {
                                code: ErrorCode(e.code),
                                message: e.message,
                                retry_after_ms: e.retry_after_ms,
                            }),
                            other => Ok(other),
                        });
                    }
                }
                ClientEvent::Event(body) => {
                    let ev = match body {
                        Reply::Event(e) => Event::Inbox(e),
                        Reply::Presence(p) => Event::Presence(p),
                        Reply::Typing(t) => Event::Typing(t),
                        Reply::ReadReceipt(r) => Event::ReadReceipt(r),
                        Reply::GoAway(g) => Event::GoAway(g),
                        Reply::Error(e) => Event::Error(e),
                        _ => continue,
                    };
                    let _ = events.send(ev);
                }
                ClientEvent::Closed { code, message } => {
                    ended = Some(ClientError::Server { code, message, retry_after_ms: 0 });
                }
            }
        }
        // Writes happen inside the select, beside reads: a server that is
        // itself busy writing to us must be read from, or both would wait
        // for the other forever.
        if let Some(bytes) = session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        if let Some(e) = ended {
            break e;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            progress = write_some(&mut writer, &out), if !out.is_empty() || unflushed => match progress {
                Ok(Some(0)) => break ClientError::Disconnected("the connection closed while writing".into()),
                Ok(Some(n)) => {
                    out.advance(n);
                    unflushed = true;
                }
                Ok(None) => unflushed = false,
                Err(e) => break ClientError::Disconnected(format!("write failed: {}", with_causes(&e))),
            },
            cmd = commands.recv() => match cmd {
                None => break ClientError::Disconnected("closed by the client".into()),
                Some(Command::Request(body, reply)) => match session.send_request(body, Instant::now()) {
                    Ok(id) => { pending.insert(id, reply); }
                    Err(e) => { let _ = reply.send(Err(ClientError::Local(e.to_string()))); }
                },
                Some(Command::Typing(conversation)) => {
                    let _ = session.send_typing(conversation, Instant::now());
                    while let Some(d) = session.poll_datagram() {
                        // Typing is ephemeral: a datagram that cannot go is dropped.
                        if let Some(conn) = &datagrams {
                            let _ = conn.send_datagram(d);
                        }
                    }
                }
            },
            datagram = read_datagram(&incoming) => match datagram {
                Some(d) => session.handle_datagram(&d, Instant::now()),
                // The connection is closing; the session stream says why.
                None => incoming = None,
            },
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break ClientError::Disconnected("the server closed the connection".into()),
                Err(e) => break ClientError::Disconnected(with_causes(&e)),
                Ok(_) => session.handle_input(&mut buf, Instant::now()),
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                session.handle_timeout(Instant::now());
            }
        }
    };
    let fatal_before_welcome = match &closed {
        ClientError::Server { code, message, .. } => ClientError::Connect(format!("{code}: {message}")),
        other => ClientError::Connect(other.to_string()),
    };
    if let Some(tx) = welcome.take() {
        let _ = tx.send(Err(fatal_before_welcome));
    }
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(match &closed {
            ClientError::Server { code, message, .. } => ClientError::Disconnected(format!("{code}: {message}")),
            other => other.clone(),
        }));
    }
    if let Ok(mut slot) = ended.lock() {
        *slot = Some(closed.clone());
    }
    let _ = events.send(Event::Closed(closed));
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}

/// The next datagram, on QUIC; never resolves elsewhere.
async fn read_datagram(conn: &Option<quinn::Connection>) -> Option<bytes::Bytes> {
    match conn {
        Some(c) => c.read_datagram().await.ok(),
        None => std::future::pending().await,
    }
}

/// Writes some of `out` (`Some(bytes written)`), or flushes once it is all
/// written (`None`). Cancel-safe: a write either happened or did not, and a
/// flush keeps its progress in the stream (TLS buffers) to resume later.
async fn write_some(writer: &mut Writer, out: &[u8]) -> std::io::Result<Option<usize>> {
    if out.is_empty() { writer.flush().await.map(|()| None) } else { writer.write(out).await.map(Some) }
}

/// Unwraps the expected response variant.
macro_rules! expect {
    ($reply:expr, $variant:path) => {
        match $reply {
            $variant(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    };
}

impl Connection {
    /// Creates an account and logs this device in.
    pub async fn signup(&self, username: &str, password: &str, device: &str) -> Result<pb::AuthOk, ClientError> {
        let body = Body::Signup(pb::SignupRequest {
            username: username.into(),
            password: password.into(),
            device_name: device.into(),
        });
        expect!(self.request(body).await?, Reply::AuthOk)
    }

    /// Logs in with a password as a new device.
    pub async fn login(&self, username: &str, password: &str, device: &str) -> Result<pb::AuthOk, ClientError> {
        let body = Body::Login(pb::LoginRequest {
            username: username.into(),
            password: password.into(),
            device_name: device.into(),
        });
        expect!(self.request(body).await?, Reply::AuthOk)
    }

    /// Authenticates with a device token.
    pub async fn resume(&self, token: &str) -> Result<pb::AuthOk, ClientError> {
        expect!(self.request(Body::Resume(pb::ResumeRequest { token: token.into() })).await?, Reply::AuthOk)
    }

    /// Revokes this device's token.
    pub async fn logout(&self) -> Result<(), ClientError> {
        expect!(self.request(Body::Logout(pb::LogoutRequest {})).await?, Reply::Done).map(|_| ())
    }

    /// The user's devices, every page of them, oldest first.
    pub async fn list_devices(&self) -> Result<Vec<pb::Device>, ClientError> {
        let mut all: Vec<pb::Device> = Vec::new();
        loop {
            let after_device_id = all.last().map_or(0, |d| d.device_id);
            let page = self.list_devices_page(after_device_id, 0).await?;
            let last = page.devices.last().map(|d| d.device_id);
            all.extend(page.devices);
            // A page that says "more" but moved nowhere would loop forever.
            if !page.has_more || last.is_none_or(|l| l <= after_device_id) {
                return Ok(all);
            }
        }
    }

    /// One page of the user's devices: ids above `after_device_id`, at
    /// most `limit` (0: the server's page size).
    pub async fn list_devices_page(&self, after_device_id: u64, limit: u32) -> Result<pb::DeviceList, ClientError> {
        let req = pb::ListDevicesRequest { after_device_id, limit };
        expect!(self.request(Body::ListDevices(req)).await?, Reply::DeviceList)
    }

    /// Revokes every device of the account but this one.
    pub async fn revoke_other_devices(&self) -> Result<(), ClientError> {
        let req = pb::RevokeOtherDevicesRequest {};
        expect!(self.request(Body::RevokeOtherDevices(req)).await?, Reply::Done).map(|_| ())
    }

    /// Changes the account's password; with `revoke_others`, every other
    /// device is signed out in the same step.
    pub async fn change_password(&self, current: &str, new: &str, revoke_others: bool) -> Result<(), ClientError> {
        let req = pb::ChangePasswordRequest {
            current_password: current.into(),
            new_password: new.into(),
            revoke_other_devices: revoke_others,
        };
        expect!(self.request(Body::ChangePassword(req)).await?, Reply::Done).map(|_| ())
    }

    /// Blocks (or unblocks) a user.
    pub async fn set_blocked(&self, username: &str, blocked: bool) -> Result<(), ClientError> {
        let req = pb::SetBlockedRequest { username: username.into(), blocked };
        expect!(self.request(Body::SetBlocked(req)).await?, Reply::Done).map(|_| ())
    }

    /// The whole block list, every page of it.
    pub async fn list_blocked(&self) -> Result<Vec<pb::BlockedUser>, ClientError> {
        let mut all: Vec<pb::BlockedUser> = Vec::new();
        loop {
            let after_username = all.last().map(|u| u.username.clone()).unwrap_or_default();
            let req = pb::ListBlockedRequest { after_username: after_username.clone(), limit: 0 };
            let page = expect!(self.request(Body::ListBlocked(req)).await?, Reply::BlockedList)?;
            let moved = !page.users.is_empty();
            all.extend(page.users);
            // A page that says "more" but moved nowhere would loop forever.
            if !page.has_more || !moved {
                return Ok(all);
            }
        }
    }

    /// The account's privacy settings.
    pub async fn privacy(&self) -> Result<pb::PrivacySettings, ClientError> {
        expect!(self.request(Body::GetPrivacy(pb::GetPrivacyRequest {})).await?, Reply::PrivacySettings)
    }

    /// Changes privacy settings (UNSPECIFIED: unchanged); returns them all.
    pub async fn set_privacy(
        &self,
        direct_messages: pb::Audience,
        group_invites: pb::Audience,
    ) -> Result<pb::PrivacySettings, ClientError> {
        let req = pb::SetPrivacyRequest {
            direct_messages: direct_messages as i32,
            group_invites: group_invites as i32,
            ..Default::default()
        };
        self.set_privacy_with(req).await
    }

    /// Changes the privacy settings a request names (every field, search
    /// included; UNSPECIFIED: unchanged); returns them all.
    pub async fn set_privacy_with(&self, req: pb::SetPrivacyRequest) -> Result<pb::PrivacySettings, ClientError> {
        expect!(self.request(Body::SetPrivacy(req)).await?, Reply::PrivacySettings)
    }

    /// Users whose username starts with `prefix` (spec §6.9), in username
    /// order, at most `limit` (0: the server's page size).
    pub async fn search_users(&self, prefix: &str, limit: u32) -> Result<pb::UserList, ClientError> {
        let req = pb::SearchUsersRequest { prefix: prefix.into(), limit };
        expect!(self.request(Body::SearchUsers(req)).await?, Reply::UserList)
    }

    /// Revokes a device.
    pub async fn revoke_device(&self, device_id: u64) -> Result<(), ClientError> {
        expect!(self.request(Body::RevokeDevice(pb::RevokeDeviceRequest { device_id })).await?, Reply::Done).map(|_| ())
    }

    /// Opens (or finds) the DM with a user.
    pub async fn open_direct(&self, username: &str) -> Result<pb::Conversation, ClientError> {
        expect!(
            self.request(Body::OpenDirect(pb::OpenDirectRequest { username: username.into() })).await?,
            Reply::Conversation
        )
    }

    /// Lists conversations, most recent first.
    pub async fn list_conversations(&self, limit: u32) -> Result<pb::ConversationList, ClientError> {
        let body = Body::ListConversations(pb::ListConversationsRequest { limit, ..Default::default() });
        expect!(self.request(body).await?, Reply::ConversationList)
    }

    /// Sends a text message.
    pub async fn send(&self, conversation_id: u64, client_msg_id: &str, text: &str) -> Result<pb::Sent, ClientError> {
        let body =
            Body::Send(pb::SendRequest { conversation_id, client_msg_id: client_msg_id.into(), text: text.into() });
        expect!(self.request(body).await?, Reply::Sent)
    }

    /// Pages inbox events after `after`.
    pub async fn sync(&self, after: u64, limit: u32) -> Result<pb::SyncPage, ClientError> {
        expect!(self.request(Body::Sync(pb::SyncRequest { after, limit })).await?, Reply::SyncPage)
    }

    /// Stores the device's cursor.
    pub async fn ack_cursor(&self, inbox_seq: u64) -> Result<(), ClientError> {
        expect!(self.request(Body::AckCursor(pb::AckCursorRequest { inbox_seq })).await?, Reply::Done).map(|_| ())
    }

    /// Pages a conversation's history: the newest page when both bounds are
    /// 0 (see [`Connection::history_request`] to read from the start).
    pub async fn history(
        &self,
        conversation_id: u64,
        before_seq: u64,
        after_seq: u64,
        limit: u32,
    ) -> Result<pb::HistoryPage, ClientError> {
        let req = pb::HistoryRequest { conversation_id, before_seq, after_seq, limit, oldest_first: false };
        self.history_request(req).await
    }

    /// Sends any history request.
    pub async fn history_request(&self, req: pb::HistoryRequest) -> Result<pb::HistoryPage, ClientError> {
        expect!(self.request(Body::History(req)).await?, Reply::HistoryPage)
    }

    /// Moves the read marker.
    pub async fn mark_read(&self, conversation_id: u64, seq: u64) -> Result<pb::ReadState, ClientError> {
        expect!(self.request(Body::MarkRead(pb::MarkReadRequest { conversation_id, seq })).await?, Reply::ReadState)
    }

    /// Creates a group with initial members.
    pub async fn create_group(&self, title: &str, usernames: &[&str]) -> Result<pb::Conversation, ClientError> {
        let usernames = usernames.iter().map(|u| u.to_string()).collect();
        let body = Body::CreateGroup(pb::CreateGroupRequest { title: title.into(), usernames });
        expect!(self.request(body).await?, Reply::Conversation)
    }

    /// Adds members to a group (all or none).
    pub async fn add_members(&self, conversation_id: u64, usernames: &[&str]) -> Result<(), ClientError> {
        let usernames = usernames.iter().map(|u| u.to_string()).collect();
        let body = Body::AddMembers(pb::AddMembersRequest { conversation_id, usernames });
        expect!(self.request(body).await?, Reply::Done).map(|_| ())
    }

    /// Removes a member from a group.
    pub async fn remove_member(&self, conversation_id: u64, username: &str) -> Result<(), ClientError> {
        let body = Body::RemoveMember(pb::RemoveMemberRequest { conversation_id, username: username.into() });
        expect!(self.request(body).await?, Reply::Done).map(|_| ())
    }

    /// Leaves a group.
    pub async fn leave_group(&self, conversation_id: u64) -> Result<(), ClientError> {
        expect!(self.request(Body::LeaveGroup(pb::LeaveGroupRequest { conversation_id })).await?, Reply::Done)
            .map(|_| ())
    }

    /// Renames a group.
    pub async fn rename_group(&self, conversation_id: u64, title: &str) -> Result<(), ClientError> {
        let body = Body::RenameGroup(pb::RenameGroupRequest { conversation_id, title: title.into() });
        expect!(self.request(body).await?, Reply::Done).map(|_| ())
    }

    /// Sets a member's role (owners only).
    pub async fn set_role(
        &self,
        conversation_id: u64,
        username: &str,
        role: pb::MemberRole,
    ) -> Result<(), ClientError> {
        let body = Body::SetRole(pb::SetRoleRequest { conversation_id, username: username.into(), role: role as i32 });
        expect!(self.request(body).await?, Reply::Done).map(|_| ())
    }

    /// Lists a conversation's members.
    pub async fn list_members(&self, conversation_id: u64) -> Result<Vec<pb::Member>, ClientError> {
        let body = Body::ListMembers(pb::ListMembersRequest { conversation_id });
        expect!(self.request(body).await?, Reply::MemberList).map(|m| m.members)
    }

    /// One conversation as this user sees it.
    pub async fn get_conversation(&self, conversation_id: u64) -> Result<pb::Conversation, ClientError> {
        let body = Body::GetConversation(pb::GetConversationRequest { conversation_id });
        expect!(self.request(body).await?, Reply::Conversation)
    }

    /// How far each member has read.
    pub async fn read_receipts(&self, conversation_id: u64) -> Result<Vec<pb::ReadReceipt>, ClientError> {
        let body = Body::ReadReceipts(pb::ReadReceiptsRequest { conversation_id });
        expect!(self.request(body).await?, Reply::ReadReceiptList).map(|r| r.receipts)
    }

    /// Subscribes to users' presence; returns their current state.
    pub async fn subscribe_presence(&self, usernames: &[&str]) -> Result<Vec<pb::Presence>, ClientError> {
        let usernames = usernames.iter().map(|u| u.to_string()).collect();
        let body = Body::SubscribePresence(pb::SubscribePresenceRequest { usernames });
        expect!(self.request(body).await?, Reply::PresenceList).map(|p| p.presences)
    }

    /// Ends presence subscriptions.
    pub async fn unsubscribe_presence(&self, usernames: &[&str]) -> Result<(), ClientError> {
        let usernames = usernames.iter().map(|u| u.to_string()).collect();
        let body = Body::UnsubscribePresence(pb::UnsubscribePresenceRequest { usernames });
        expect!(self.request(body).await?, Reply::Done).map(|_| ())
    }

    /// Sets this device's status (ONLINE or AWAY).
    pub async fn set_status(&self, status: pb::PresenceState) -> Result<(), ClientError> {
        let body = Body::SetStatus(pb::SetStatusRequest { status: status as i32 });
        expect!(self.request(body).await?, Reply::Done).map(|_| ())
    }

    /// Round trip.
    pub async fn ping(&self, nonce: u64) -> Result<pb::Pong, ClientError> {
        expect!(self.request(Body::Ping(pb::PingRequest { nonce })).await?, Reply::Pong)
    }
}

/// An I/O error with the errors it wraps ("connection lost: reset by
/// peer" for a QUIC stateless reset, not only "connection lost").
fn with_causes(e: &std::io::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.get_ref().and_then(|inner| inner.source());
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out = format!("{out}: {text}");
        }
        cause = c.source();
    }
    out
}
