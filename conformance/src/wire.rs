//! A raw peer: Confab frames over TCP+TLS, QUIC or WebSocket, with nothing
//! checked beyond decoding, so that a scenario can send what a
//! well-behaved client never would and see exactly what comes back.
//!
//! Every method returns an error instead of panicking: a server under test
//! may do anything, and the suite reports it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use confab_protocol::framing::{decode_server_frame, frame_bytes};
use confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, FrameDecoder};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

/// The ALPN protocol of QUIC and TCP+TLS (spec §2.1, §2.2).
pub const ALPN: &[u8] = b"confab/1";

/// A failed step, as the report shows it.
pub type Fallible<T> = Result<T, String>;

/// Which binding of spec §2 a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP+TLS (§2.2).
    Tcp,
    /// QUIC (§2.1): the first bidirectional stream is the session stream.
    Quic,
    /// WebSocket (§2.3): one binary message per frame, no length prefix.
    Ws,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Ws => "ws",
        }
    }
}

/// How the suite trusts the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only the certificate with this SHA-256 fingerprint.
    Fingerprint(String),
    /// Certificates that chain to the roots in this PEM file.
    Ca(std::path::PathBuf),
}

/// Where and how to reach the server under test.
#[derive(Clone)]
pub struct Target {
    /// `host:port` (QUIC, TCP+TLS, and WebSocket without a path), or a
    /// `ws://` / `wss://` URL.
    pub addr: String,
    /// The binding.
    pub transport: Transport,
    /// The TLS name to verify (SNI when it is not an IP address, §2.4).
    pub server_name: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    /// A target; fails when the trust cannot be set up (a bad CA file).
    pub fn new(addr: &str, transport: Transport, trust: &Trust, server_name: Option<&str>) -> Fallible<Target> {
        let mut config = match trust {
            Trust::Fingerprint(f) => {
                let f = confab_client::tls::normalize_fingerprint(f);
                let c = confab_client::tls::rustls_config(confab_client::tls::Trust::Fingerprint(f))
                    .map_err(|e| format!("TLS set-up: {e}"))?;
                (*c).clone()
            }
            Trust::Ca(path) => ca_config(path)?,
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        let host = addr
            .trim_start_matches("wss://")
            .trim_start_matches("ws://")
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = server_name.map_or(host, str::to_string);
        Ok(Target { addr: addr.to_string(), transport, server_name, tls: Arc::new(config) })
    }

    /// The same server over another binding at another address.
    pub fn with(&self, addr: &str, transport: Transport) -> Target {
        Target { addr: addr.to_string(), transport, ..self.clone() }
    }

    /// The rustls configuration (ALPN `confab/1`).
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// `host:port` of the target.
    pub fn host_port(&self) -> &str {
        let s = self.addr.trim_start_matches("wss://").trim_start_matches("ws://");
        s.split(['/', '?']).next().unwrap_or(s)
    }

    async fn socket_addr(&self) -> Fallible<SocketAddr> {
        let hp = self.host_port();
        tokio::net::lookup_host(hp)
            .await
            .map_err(|e| format!("cannot resolve {hp}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hp} resolves to nothing"))
    }
}

fn ca_config(path: &Path) -> Fallible<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificates in it", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Link {
    /// A byte stream (TCP+TLS, or a QUIC stream) carrying length-prefixed
    /// frames.
    Stream { reader: Box<dyn AsyncRead + Unpin + Send>, writer: Box<dyn AsyncWrite + Unpin + Send> },
    /// WebSocket over plain TCP or TLS.
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

/// What `recv` saw.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per frame, never stored
pub enum Recv {
    /// A frame.
    Frame(pb::ServerFrame),
    /// The server closed the connection (or the stream); on WebSocket,
    /// with this close status.
    Closed(Option<u16>),
    /// The connection ended in the middle of a frame, with this many bytes
    /// of it received: allowed only when the client stopped reading (§8.9).
    Cut(usize),
}

impl Recv {
    /// Fails on anything but a frame, saying how the connection ended.
    pub fn into_frame(self) -> Fallible<pb::ServerFrame> {
        match self {
            Recv::Frame(f) => Ok(f),
            Recv::Closed(_) => Err("the server closed the connection".into()),
            Recv::Cut(n) => Err(format!("the server closed the connection mid-frame ({n} bytes of it received)")),
        }
    }
}

/// One raw session.
pub struct Peer {
    link: Link,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// Frames read while waiting for a response to another request.
    stashed: VecDeque<pb::ServerFrame>,
    next_id: u64,
    /// The Welcome, once the handshake is done.
    pub welcome: Option<pb::Welcome>,
    /// Kept so the connection lives as long as the peer.
    quic: Option<(quinn::Endpoint, quinn::Connection)>,
}

/// How long one frame may take to arrive unless a scenario says otherwise.
pub const RECV_WITHIN: Duration = Duration::from_secs(10);

impl Peer {
    /// Connects (TLS or QUIC handshake done; nothing sent yet).
    pub async fn connect(target: &Target) -> Fallible<Peer> {
        tokio::time::timeout(Duration::from_secs(15), Peer::connect_inner(target))
            .await
            .map_err(|_| format!("connecting to {} ({}) timed out after 15 s", target.addr, target.transport.name()))?
    }

    async fn connect_inner(target: &Target) -> Fallible<Peer> {
        let server_name = rustls::pki_types::ServerName::try_from(target.server_name.clone())
            .map_err(|e| format!("bad server name {:?}: {e}", target.server_name))?;
        let (link, quic) = match target.transport {
            Transport::Tcp => {
                let addr = target.socket_addr().await?;
                let tcp = TcpStream::connect(addr).await.map_err(|e| format!("TCP connect to {addr}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let tls = tokio_rustls::TlsConnector::from(target.tls())
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                let (r, w) = tokio::io::split(tls);
                (Link::Stream { reader: Box::new(r), writer: Box::new(w) }, None)
            }
            Transport::Quic => {
                let addr = target.socket_addr().await?;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(target.tls())
                    .map_err(|e| format!("QUIC TLS set-up: {e}"))?;
                let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| format!("QUIC endpoint: {e}"))?;
                let mut config = quinn::ClientConfig::new(Arc::new(crypto));
                // The server's liveness rules are under test, not quinn's
                // default 30 s idle timeout on this side.
                let mut transport = quinn::TransportConfig::default();
                transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(300_000))));
                config.transport_config(Arc::new(transport));
                endpoint.set_default_client_config(config);
                let conn = endpoint
                    .connect(addr, &target.server_name)
                    .map_err(|e| format!("QUIC connect to {addr}: {e}"))?
                    .await
                    .map_err(|e| format!("QUIC handshake with {addr}: {e}"))?;
                let (send, recv) = conn.open_bi().await.map_err(|e| format!("QUIC session stream: {e}"))?;
                (Link::Stream { reader: Box::new(recv), writer: Box::new(send) }, Some((endpoint, conn)))
            }
            Transport::Ws => {
                let tls = target.addr.starts_with("wss://");
                let url = if target.addr.contains("://") {
                    target.addr.clone()
                } else {
                    format!("ws://{}/v1/ws", target.addr)
                };
                let mut req =
                    url.as_str().into_client_request().map_err(|e| format!("bad WebSocket URL {url}: {e}"))?;
                req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("confab.v1"));
                let addr = target.socket_addr().await?;
                let tcp = TcpStream::connect(addr).await.map_err(|e| format!("TCP connect to {addr}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let io: Box<dyn Io> = if tls {
                    let mut c = (*target.tls()).clone();
                    c.alpn_protocols = vec![b"http/1.1".to_vec()];
                    Box::new(
                        tokio_rustls::TlsConnector::from(Arc::new(c))
                            .connect(server_name, tcp)
                            .await
                            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?,
                    )
                } else {
                    Box::new(tcp)
                };
                let (ws, resp) = tokio_tungstenite::client_async(req, io)
                    .await
                    .map_err(|e| format!("WebSocket upgrade at {url}: {e}"))?;
                let proto = resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
                if proto != Some("confab.v1") {
                    return Err(format!("the server chose subprotocol {proto:?}, not confab.v1 (§2.3)"));
                }
                (Link::Ws(Box::new(ws)), None)
            }
        };
        Ok(Peer {
            link,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES),
            stashed: VecDeque::new(),
            next_id: 1,
            welcome: None,
            quic,
        })
    }

    /// The QUIC connection, on QUIC.
    pub fn quic(&self) -> Option<&quinn::Connection> {
        self.quic.as_ref().map(|(_, c)| c)
    }

    /// Whether this peer speaks WebSocket.
    pub fn is_ws(&self) -> bool {
        matches!(self.link, Link::Ws(_))
    }

    // ----- sending ---------------------------------------------------------------

    /// Sends `bytes` as the transport carries frames: on a byte stream as
    /// they are (prefix included), on WebSocket as one binary message.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Fallible<()> {
        let r = match &mut self.link {
            Link::Stream { writer, .. } => match writer.write_all(bytes).await {
                Ok(()) => writer.flush().await,
                Err(e) => Err(e),
            },
            Link::Ws(ws) => ws.send(Message::Binary(bytes.to_vec().into())).await.map_err(std::io::Error::other),
        };
        r.map_err(|e| format!("sending: {e}"))
    }

    /// Sends a WebSocket text message (which the binding forbids, §2.3).
    pub async fn send_text(&mut self, text: &str) -> Fallible<()> {
        match &mut self.link {
            Link::Ws(ws) => ws.send(Message::Text(text.into())).await.map_err(|e| format!("sending: {e}")),
            Link::Stream { .. } => Err("text messages are WebSocket only".into()),
        }
    }

    /// Sends `payload` (the bytes of a `ClientFrame`, well-formed or not)
    /// as one frame: with its length prefix on a byte stream, as one binary
    /// message on WebSocket.
    pub async fn send_payload(&mut self, payload: &[u8]) -> Fallible<()> {
        if self.is_ws() {
            return self.send_bytes(payload).await;
        }
        let mut bytes = BytesMut::new();
        prost::encoding::encode_varint(payload.len() as u64, &mut bytes);
        bytes.extend_from_slice(payload);
        self.send_bytes(&bytes).await
    }

    /// Sends one frame with this request id.
    pub async fn send(&mut self, request_id: u64, body: Body) -> Fallible<()> {
        let frame = pb::ClientFrame { request_id, body: Some(body) };
        let bytes = if self.is_ws() { prost::Message::encode_to_vec(&frame) } else { frame_bytes(&frame).to_vec() };
        self.send_bytes(&bytes).await
    }

    /// A fresh request id (never reused on this peer).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Ends the sending side (QUIC FIN, TLS close_notify, WebSocket close).
    pub async fn finish(&mut self) -> Fallible<()> {
        let r = match &mut self.link {
            Link::Stream { writer, .. } => writer.shutdown().await,
            Link::Ws(ws) => SinkExt::close(ws).await.map_err(std::io::Error::other),
        };
        r.map_err(|e| format!("closing: {e}"))
    }

    // ----- receiving -------------------------------------------------------------

    /// The next frame from the wire (stashed ones first), or the close;
    /// fails when nothing comes `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Fallible<Recv> {
        if let Some(f) = self.stashed.pop_front() {
            return Ok(Recv::Frame(f));
        }
        tokio::time::timeout(within, self.read_frame())
            .await
            .map_err(|_| format!("nothing from the server within {} ms", within.as_millis()))?
    }

    /// [`Peer::recv_within`] with the default wait.
    pub async fn recv(&mut self) -> Fallible<Recv> {
        self.recv_within(RECV_WITHIN).await
    }

    /// The next frame; the connection must not close.
    pub async fn frame(&mut self) -> Fallible<pb::ServerFrame> {
        self.recv().await?.into_frame()
    }

    async fn read_frame(&mut self) -> Fallible<Recv> {
        let bytes = match &mut self.link {
            Link::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => break b.to_vec(),
                    Some(Ok(Message::Close(c))) => return Ok(Recv::Closed(c.map(|c| u16::from(c.code)))),
                    Some(Ok(Message::Text(_))) => return Err("the server sent a text message (§2.3)".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Ok(Recv::Closed(None)),
                }
            },
            Link::Stream { reader, .. } => loop {
                match self.decoder.next_frame(&mut self.buf) {
                    Ok(Some(f)) => break f.to_vec(),
                    Ok(None) => {}
                    Err(e) => return Err(format!("the server sent a bad frame length: {e} (§3)")),
                }
                match reader.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) if self.buf.is_empty() => return Ok(Recv::Closed(None)),
                    Ok(0) | Err(_) => return Ok(Recv::Cut(self.buf.len())),
                    Ok(_) => {}
                }
            },
        };
        decode_server_frame(&bytes)
            .map(Recv::Frame)
            .map_err(|e| format!("the server sent a frame that does not decode: {e:?}"))
    }

    /// Sends `body` with a fresh id and waits for the frame answering it;
    /// other frames that arrive meanwhile are kept for [`Peer::event`].
    pub async fn request(&mut self, body: Body) -> Fallible<Reply> {
        let id = self.next_id();
        self.request_with_id(id, body).await
    }

    /// [`Peer::request`] with a chosen request id.
    pub async fn request_with_id(&mut self, id: u64, body: Body) -> Fallible<Reply> {
        self.send(id, body).await?;
        self.answer(id).await
    }

    /// Waits for the frame answering request `id`.
    pub async fn answer(&mut self, id: u64) -> Fallible<Reply> {
        let deadline = tokio::time::Instant::now() + RECV_WITHIN;
        let mut held = VecDeque::new();
        let r = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let got = match tokio::time::timeout(left, self.read_frame()).await {
                Ok(r) => r,
                Err(_) => break Err(format!("no answer to request {id} within {} s", RECV_WITHIN.as_secs())),
            };
            match got {
                Ok(Recv::Frame(f)) if f.request_id == id => match f.body {
                    Some(b) => break Ok(b),
                    None => break Err(format!("the answer to request {id} has no body")),
                },
                Ok(Recv::Frame(f)) => held.push_back(f),
                Ok(other) => {
                    break Err(format!(
                        "request {id} was not answered: {}",
                        other.into_frame().err().unwrap_or_default()
                    ));
                }
                Err(e) => break Err(e),
            }
        };
        self.stashed.extend(held);
        r
    }

    /// The next frame that is not an answer (request_id 0), skipping
    /// nothing: answers to other requests come back as they are.
    pub async fn event_within(&mut self, within: Duration) -> Fallible<pb::ServerFrame> {
        self.recv_within(within).await?.into_frame()
    }

    /// Reads until `pred` matches a frame (others are dropped); fails after
    /// `within`.
    pub async fn until(
        &mut self,
        within: Duration,
        what: &str,
        mut pred: impl FnMut(&pb::ServerFrame) -> bool,
    ) -> Fallible<pb::ServerFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!("no {what} within {} ms", within.as_millis()));
            }
            match self.recv_within(left).await {
                Ok(Recv::Frame(f)) if pred(&f) => return Ok(f),
                Ok(Recv::Frame(_)) => {}
                Ok(other) => {
                    return Err(format!("waiting for {what}: {}", other.into_frame().err().unwrap_or_default()));
                }
                Err(_) => return Err(format!("no {what} within {} ms", within.as_millis())),
            }
        }
    }

    /// Reads (skipping other frames) until the fatal Error and the close
    /// after it; returns the Error.
    pub async fn until_fatal(&mut self, within: Duration) -> Fallible<pb::Error> {
        self.until_fatal_close(within).await.map(|(e, _)| e)
    }

    /// [`Peer::until_fatal`], also returning the WebSocket close status
    /// (None on the other transports, or when the close had no status).
    pub async fn until_fatal_close(&mut self, within: Duration) -> Fallible<(pb::Error, Option<u16>)> {
        let f = self.until(within, "fatal Error", |f| matches!(&f.body, Some(Reply::Error(e)) if e.fatal)).await?;
        let Some(Reply::Error(e)) = f.body else { return Err("unreachable: not an Error".into()) };
        let status = self.closed_after_fatal().await?;
        Ok((e, status))
    }

    /// After a fatal Error has been read: the close must come next, with
    /// no frame before it. Returns the WebSocket close status (None on the
    /// other transports, or when the close had no status).
    pub async fn closed_after_fatal(&mut self) -> Fallible<Option<u16>> {
        match self.recv_within(Duration::from_secs(5)).await {
            Ok(Recv::Closed(status)) => Ok(status),
            Ok(Recv::Cut(n)) => Err(format!("{n} bytes of a frame followed the fatal Error (§4.1)")),
            Ok(Recv::Frame(f)) => Err(format!("a frame followed the fatal Error (§4.1): {f:?}")),
            Err(_) => Err("the connection stayed open 5 s after the fatal Error (§4.1)".into()),
        }
    }

    // ----- sessions --------------------------------------------------------------

    /// Hello (versions [1]); the answer must be Welcome.
    pub async fn hello(&mut self) -> Fallible<pb::Welcome> {
        self.hello_offering(&[]).await
    }

    /// Hello (versions [1]) offering `capabilities`; the answer must be
    /// Welcome.
    pub async fn hello_offering(&mut self, capabilities: &[&str]) -> Fallible<pb::Welcome> {
        let body = Body::Hello(pb::Hello {
            versions: vec![1],
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            client_name: "confab-conformance".into(),
        });
        match self.request(body).await? {
            Reply::Welcome(w) => {
                if let Some(l) = w.limits.as_ref().filter(|l| l.max_frame_bytes > 0) {
                    self.decoder = FrameDecoder::new(l.max_frame_bytes);
                }
                self.welcome = Some(w.clone());
                Ok(w)
            }
            other => Err(format!("Hello answered with {other:?}, not Welcome (§4.2)")),
        }
    }

    /// Resume with `token`; the answer must be AuthOk.
    pub async fn resume(&mut self, token: &str) -> Fallible<pb::AuthOk> {
        auth_ok(self.request(Body::Resume(pb::ResumeRequest { token: token.into() })).await?, "resume")
    }

    /// Sign up; the answer must be AuthOk.
    pub async fn signup(&mut self, username: &str, password: &str, device: &str) -> Fallible<pb::AuthOk> {
        let body = Body::Signup(pb::SignupRequest {
            username: username.into(),
            password: password.into(),
            device_name: device.into(),
        });
        auth_ok(self.request(body).await?, "signup")
    }

    /// Log in as a new device; the answer must be AuthOk.
    pub async fn login(&mut self, username: &str, password: &str, device: &str) -> Fallible<pb::AuthOk> {
        let body = Body::Login(pb::LoginRequest {
            username: username.into(),
            password: password.into(),
            device_name: device.into(),
        });
        auth_ok(self.request(body).await?, "login")
    }
}

fn auth_ok(r: Reply, what: &str) -> Fallible<pb::AuthOk> {
    match r {
        Reply::AuthOk(a) => Ok(a),
        Reply::Error(e) => Err(format!("{what} refused: {} ({}) {:?}", ErrorCode(e.code), e.code, e.message)),
        other => Err(format!("{what} answered with {other:?}, not AuthOk")),
    }
}

/// The error code of a reply, or a description of what it was instead.
pub fn error_code(r: &Reply) -> Fallible<(ErrorCode, bool)> {
    match r {
        Reply::Error(e) => Ok((ErrorCode(e.code), e.fatal)),
        other => Err(format!("expected an Error, got {}", describe(other))),
    }
}

/// A short description of a reply for failure messages.
pub fn describe(r: &Reply) -> String {
    match r {
        Reply::Error(e) => {
            format!("Error {} ({}) {:?}{}", e.code, ErrorCode(e.code), e.message, if e.fatal { " fatal" } else { "" })
        }
        other => {
            let s = format!("{other:?}");
            if s.chars().count() > 200 { format!("{}…", s.chars().take(200).collect::<String>()) } else { s }
        }
    }
}
