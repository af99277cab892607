//! A raw peer that speaks Confab frames byte by byte, for tests that send
//! what a well-behaved client never would: over TCP+TLS (from a chosen
//! source address if need be), over a QUIC session or request stream, or
//! over WebSocket (one binary message per frame, spec §2.3).
//!
//! It checks nothing it receives beyond decoding it; the tests do.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use confab_client::tls::Trust;
use confab_protocol::framing::{decode_server_frame, frame_bytes};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, FrameDecoder};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

use super::TestServer;

/// How long `recv` and `try_recv` wait for a frame.
const RECV_WITHIN: Duration = Duration::from_secs(5);

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

enum Link {
    /// TCP+TLS, whole, so that a test can reach the TLS session ([`Raw::tls`]).
    Tls(Box<TlsStream<TcpStream>>),
    /// A byte stream in halves: a QUIC stream, or TCP+TLS once a write went
    /// to the background (the writer is then `None`).
    Halves { reader: Reader, writer: Option<Writer> },
    /// A WebSocket: one binary message per frame, no length prefix.
    Ws(Box<WebSocketStream<TcpStream>>),
    /// Between two states (never seen outside a method).
    Gone,
}

/// One raw session (or QUIC request stream).
pub struct Raw {
    link: Link,
    /// Bytes read and not yet decoded (byte streams).
    buf: BytesMut,
    /// The WebSocket close status and reason, once the close arrived.
    close: Option<(u16, String)>,
    /// The QUIC connection, kept open (and for more request streams).
    quic: Option<quinn::Connection>,
}

fn tls_config(fingerprint: &str) -> Arc<rustls::ClientConfig> {
    confab_client::tls::rustls_config(Trust::Fingerprint(fingerprint.to_string())).unwrap()
}

fn hello() -> Body {
    Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })
}

impl Raw {
    fn new(link: Link) -> Raw {
        Raw { link, buf: BytesMut::new(), close: None, quic: None }
    }

    // ----- connecting ------------------------------------------------------------

    /// TCP+TLS to `addr` from 127.0.0.1, trusting the certificate with this
    /// `fingerprint`.
    pub async fn tcp(addr: SocketAddr, fingerprint: &str) -> std::io::Result<Raw> {
        Raw::tcp_from(addr, fingerprint, [127, 0, 0, 1].into()).await
    }

    /// TCP+TLS from the source address `src` (per-address limits count by it).
    pub async fn tcp_from(addr: SocketAddr, fingerprint: &str, src: IpAddr) -> std::io::Result<Raw> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(src, 0))?;
        Raw::tls_over(socket.connect(addr).await?, fingerprint).await
    }

    /// TLS over a TCP connection the test set up itself (socket options).
    pub async fn tls_over(tcp: TcpStream, fingerprint: &str) -> std::io::Result<Raw> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(tls_config(fingerprint)).connect(name, tcp).await?;
        Ok(Raw::new(Link::Tls(Box::new(tls))))
    }

    /// A QUIC connection to `addr` (ALPN confab/1), with no stream yet.
    pub async fn quic_connection_to(addr: SocketAddr, fingerprint: &str) -> quinn::Connection {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config(fingerprint)).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        endpoint.connect(addr, "localhost").unwrap().await.unwrap()
    }

    /// A QUIC connection to `addr` and its session stream (the first one).
    pub async fn quic(addr: SocketAddr, fingerprint: &str) -> Raw {
        let conn = Raw::quic_connection_to(addr, fingerprint).await;
        let mut raw = Raw::quic_stream(&conn).await;
        raw.quic = Some(conn);
        raw
    }

    async fn quic_stream(conn: &quinn::Connection) -> Raw {
        let (send, recv) = conn.open_bi().await.unwrap();
        Raw::new(Link::Halves { reader: Box::new(recv), writer: Some(Box::new(send)) })
    }

    /// The QUIC connection of a QUIC peer.
    pub fn quic_connection(&self) -> &quinn::Connection {
        self.quic.as_ref().expect("not a QUIC session")
    }

    /// Another stream on this QUIC connection: a request stream once the
    /// session negotiated `request-streams`.
    pub async fn open_request_stream(&self) -> Raw {
        let conn = self.quic.as_ref().expect("not a QUIC session");
        let mut raw = Raw::quic_stream(conn).await;
        raw.quic = Some(conn.clone());
        raw
    }

    /// A WebSocket upgrade on `addr` (plain HTTP), offering `protocol` and
    /// sending `origin` when given. A refused upgrade is the error (an
    /// HTTP status in `tungstenite::Error::Http`).
    pub async fn ws(addr: SocketAddr, protocol: Option<&str>, origin: Option<&str>) -> Result<Raw, tungstenite::Error> {
        Raw::ws_as(addr, None, protocol, origin).await
    }

    /// Like [`Raw::ws`], with the `Host` header set to `host` (as a
    /// browser sends it for a page on that name).
    pub async fn ws_as(
        addr: SocketAddr,
        host: Option<&str>,
        protocol: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Raw, tungstenite::Error> {
        let mut req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
        if let Some(h) = host {
            req.headers_mut().insert("Host", HeaderValue::from_str(h).unwrap());
        }
        if let Some(p) = protocol {
            req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", HeaderValue::from_str(o).unwrap());
        }
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
        Ok(Raw::new(Link::Ws(Box::new(ws))))
    }

    /// TCP+TLS to a test server.
    pub async fn connect(server: &TestServer) -> Raw {
        let s = server.server();
        Raw::tcp(s.tcp_addr().unwrap(), s.fingerprint()).await.unwrap()
    }

    /// TCP+TLS to a test server, with the handshake done.
    pub async fn hello(server: &TestServer) -> Raw {
        let mut raw = Raw::connect(server).await;
        raw.handshake().await;
        raw
    }

    /// The TLS session of a TCP+TLS peer (key updates, close_notify).
    pub fn tls(&mut self) -> &mut TlsStream<TcpStream> {
        match &mut self.link {
            Link::Tls(tls) => tls,
            _ => panic!("not a whole TCP+TLS connection"),
        }
    }

    // ----- sending ---------------------------------------------------------------

    /// Sends `bytes` as the transport carries frames: on a byte stream as
    /// they are (prefix included, if any), on WebSocket as one binary
    /// message.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.link {
            Link::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Link::Halves { writer, .. } => {
                let w = writer.as_mut().expect("the write half is busy in the background");
                w.write_all(bytes).await?;
                w.flush().await
            }
            Link::Ws(ws) => ws.send(Message::Binary(bytes.to_vec().into())).await.map_err(std::io::Error::other),
            Link::Gone => unreachable!(),
        }
    }

    /// [`Raw::try_send_bytes`], which must succeed.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.try_send_bytes(bytes).await.unwrap();
    }

    /// Sends one frame.
    pub async fn send(&mut self, request_id: u64, body: Body) {
        let frame = pb::ClientFrame { request_id, body: Some(body) };
        match self.link {
            Link::Ws(_) => self.send_bytes(&prost::Message::encode_to_vec(&frame)).await,
            _ => self.send_bytes(&frame_bytes(&frame)).await,
        }
    }

    /// Sends a WebSocket text message (which the binding forbids).
    pub async fn send_text(&mut self, text: &str) {
        match &mut self.link {
            Link::Ws(ws) => ws.send(Message::Text(text.into())).await.unwrap(),
            _ => panic!("text messages are WebSocket only"),
        }
    }

    /// Writes `bytes` from another task (so that a large burst never
    /// deadlocks against the server's answers) while this side keeps
    /// reading. Byte streams only; no other write until it is done.
    pub fn write_in_background(&mut self, bytes: BytesMut) -> tokio::task::JoinHandle<()> {
        let mut writer = match std::mem::replace(&mut self.link, Link::Gone) {
            Link::Tls(tls) => {
                let (reader, writer) = tokio::io::split(*tls);
                self.link = Link::Halves { reader: Box::new(reader), writer: None };
                Box::new(writer) as Writer
            }
            Link::Halves { reader, writer } => {
                self.link = Link::Halves { reader, writer: None };
                writer.expect("one background write at a time")
            }
            _ => panic!("background writes are for byte streams"),
        };
        tokio::spawn(async move {
            let _ = writer.write_all(&bytes).await;
            let _ = writer.flush().await;
        })
    }

    /// Ends the sending side: a QUIC stream's FIN, TLS close_notify, a
    /// WebSocket close.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        match &mut self.link {
            Link::Tls(tls) => tls.shutdown().await,
            Link::Halves { writer, .. } => writer.as_mut().expect("the write half is busy").shutdown().await,
            Link::Ws(ws) => SinkExt::close(ws).await.map_err(std::io::Error::other),
            Link::Gone => unreachable!(),
        }
    }

    // ----- receiving -------------------------------------------------------------

    /// The next frame, or `None` once the server closed the connection (or
    /// the stream); fails when nothing comes `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Option<pb::ServerFrame> {
        let deadline = tokio::time::Instant::now() + within;
        let read = match &mut self.link {
            Link::Ws(ws) => loop {
                let next = tokio::time::timeout_at(deadline, ws.next()).await;
                match next.unwrap_or_else(|_| panic!("nothing from the server within {within:?}")) {
                    Some(Ok(Message::Binary(b))) => break Some(b.to_vec()),
                    Some(Ok(Message::Close(c))) => {
                        self.close = c.map(|c| (u16::from(c.code), c.reason.to_string()));
                        break None;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break None,
                }
            },
            link => {
                let decoder = FrameDecoder::new(confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES);
                loop {
                    if let Some(f) = decoder.next_frame(&mut self.buf).unwrap() {
                        break Some(f.to_vec());
                    }
                    let n = match link {
                        Link::Tls(tls) => tokio::time::timeout_at(deadline, tls.read_buf(&mut self.buf)).await,
                        Link::Halves { reader, .. } => {
                            tokio::time::timeout_at(deadline, reader.read_buf(&mut self.buf)).await
                        }
                        _ => unreachable!(),
                    };
                    match n.unwrap_or_else(|_| panic!("nothing from the server within {within:?}")) {
                        Ok(0) | Err(_) => break None,
                        Ok(_) => {}
                    }
                }
            }
        };
        read.map(|f| decode_server_frame(&f).unwrap())
    }

    /// The next frame, or `None` once the server closed the connection;
    /// fails after 5 s.
    pub async fn try_recv(&mut self) -> Option<pb::ServerFrame> {
        self.recv_within(RECV_WITHIN).await
    }

    /// The next frame, which must come within 5 s.
    pub async fn recv(&mut self) -> pb::ServerFrame {
        self.try_recv().await.expect("connection closed")
    }

    /// The next frame must be an Error with this code; returns it.
    pub async fn expect_error(&mut self, code: ErrorCode) -> (u64, pb::Error) {
        let f = self.recv().await;
        match f.body {
            Some(Reply::Error(e)) if e.code == code.0 => (f.request_id, e),
            other => panic!("expected {code}, got {other:?}"),
        }
    }

    /// Reads (skipping anything else) until the session's fatal Error,
    /// which nothing may follow; returns its code.
    pub async fn until_fatal(&mut self, within: Duration) -> ErrorCode {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(pb::ServerFrame { body: Some(Reply::Error(e)), .. }) if e.fatal => {
                    assert!(self.try_recv().await.is_none(), "nothing follows the fatal Error");
                    return ErrorCode(e.code);
                }
                Some(_) => continue,
                None => panic!("closed without a fatal Error"),
            }
        }
    }

    /// The WebSocket close status and reason, once the close was read.
    pub fn close_status(&self) -> Option<(u16, String)> {
        self.close.clone()
    }

    // ----- sessions --------------------------------------------------------------

    /// Sends Hello (request 1); the answer must be Welcome.
    pub async fn handshake(&mut self) {
        self.send(1, hello()).await;
        let f = self.recv().await;
        assert!(matches!(f.body, Some(Reply::Welcome(_))), "{f:?}");
    }

    /// The handshake, then a signup (request 2) as `name` with the password
    /// "`name`-password"; the answer must be AuthOk.
    pub async fn signup(&mut self, name: &str) {
        self.handshake().await;
        let body = Body::Signup(pb::SignupRequest {
            username: name.into(),
            password: format!("{name}-password"),
            device_name: "raw".into(),
        });
        self.send(2, body).await;
        let f = self.recv_within(Duration::from_secs(10)).await.expect("connection closed");
        assert!(matches!(f.body, Some(Reply::AuthOk(_))), "{f:?}");
    }
}
