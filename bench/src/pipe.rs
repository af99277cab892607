//! A lean, pipelined session for load generation, built directly on the
//! sans-IO `ClientSession` from `confab-protocol`.
//!
//! Why not `confab_client::Connection`? Its requests borrow the connection
//! (`&self`) for as long as they are in flight while `next_event` needs
//! `&mut self`, so one task cannot keep W sends in flight *and* drain the
//! InboxEvents the server echoes to the sender's own session. Left
//! undrained, those echoes pile up in an unbounded channel for the whole
//! run. Here one task owns the session: it queues W requests, writes them
//! in one go, and reads responses and events from the same loop, so every
//! read and every write carries as many frames as are ready (batching, like
//! a well-behaved client would).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use confab_client::TransportKind;
use confab_client::tls::Trust;
use confab_protocol::pb::{client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::{ClientConfig, ClientEvent, ClientSession};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// TCP+TLS address.
    pub tcp: Option<SocketAddr>,
    /// QUIC address.
    pub quic: Option<SocketAddr>,
    /// Pinned certificate fingerprint (hex).
    pub fingerprint: String,
    /// Transport to use.
    pub transport: TransportKind,
}

/// One connected, handshaken session.
pub struct Pipe {
    session: ClientSession,
    reader: Reader,
    writer: Writer,
    buf: BytesMut,
    /// Keeps the QUIC endpoint and connection alive.
    quic: Option<(quinn::Endpoint, quinn::Connection)>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let Some((endpoint, conn)) = self.quic.take() {
            conn.close(0u32.into(), b"bye");
            drop(endpoint);
        }
    }
}

impl Pipe {
    /// Connects, completes TLS and the Confab handshake.
    pub async fn connect(target: &Target) -> anyhow::Result<Pipe> {
        let tls = confab_client::tls::rustls_config(Trust::Fingerprint(target.fingerprint.clone()))
            .context("TLS settings")?;
        let name = rustls::pki_types::ServerName::try_from("localhost").context("server name")?;
        let mut quic = None;
        let (reader, writer): (Reader, Writer) = match target.transport {
            TransportKind::Tcp => {
                let addr = target.tcp.ok_or_else(|| anyhow!("the server has no TCP listener"))?;
                let tcp =
                    tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
                tcp.set_nodelay(true)?;
                let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?;
                let (r, w) = tokio::io::split(stream);
                (Box::new(r), Box::new(w))
            }
            TransportKind::Quic => {
                let addr = target.quic.ok_or_else(|| anyhow!("the server has no QUIC listener"))?;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).context("QUIC TLS settings")?;
                let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse()?;
                let mut endpoint = quinn::Endpoint::client(bind).context("QUIC endpoint")?;
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                let conn = endpoint.connect(addr, "localhost")?.await.with_context(|| format!("QUIC to {addr}"))?;
                let (send, recv) = conn.open_bi().await.context("opening the session stream")?;
                quic = Some((endpoint, conn));
                (Box::new(recv), Box::new(send))
            }
        };
        let config = ClientConfig {
            client_name: concat!("confab-bench/", env!("CARGO_PKG_VERSION")).into(),
            capabilities: vec![],
        };
        let session = ClientSession::new(&config, Instant::now());
        let mut pipe = Pipe { session, reader, writer, buf: BytesMut::with_capacity(64 * 1024), quic };
        loop {
            pipe.pump().await?;
            while let Some(ev) = pipe.session.poll_event() {
                match ev {
                    ClientEvent::Welcome(_) => return Ok(pipe),
                    ClientEvent::Closed { code, message } => bail!("handshake refused: {code}: {message}"),
                    _ => {}
                }
            }
        }
    }

    /// Queues a request; returns its request id. Nothing is written until
    /// [`Pipe::flush`] (or [`Pipe::pump`]).
    pub fn queue(&mut self, body: Body) -> anyhow::Result<u64> {
        Ok(self.session.send_request(body, Instant::now())?)
    }

    /// Writes everything queued, as one write.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(bytes) = self.session.poll_transmit() {
            self.writer.write_all(&bytes).await.context("write")?;
            self.writer.flush().await.context("flush")?;
        }
        Ok(())
    }

    /// Writes what is queued, then waits for input (or the heartbeat timer)
    /// and handles it; read what it produced with [`Pipe::poll_event`].
    /// Cancel-safe once the flush is done (a cancelled read consumes
    /// nothing).
    pub async fn pump(&mut self) -> anyhow::Result<()> {
        self.flush().await?;
        let deadline = self.session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            read = self.reader.read_buf(&mut self.buf) => match read.context("read")? {
                0 => bail!("the server closed the connection"),
                _ => self.session.handle_input(&mut self.buf, Instant::now()),
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                self.session.handle_timeout(Instant::now());
            }
        }
        Ok(())
    }

    /// The server's limits (from its Welcome).
    pub fn limits(&self) -> confab_protocol::Limits {
        self.session.limits()
    }

    /// The next thing the session has for us.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.session.poll_event()
    }

    /// One request, waiting for its response (events that arrive meanwhile
    /// are dropped). For setup only.
    pub async fn call(&mut self, body: Body) -> anyhow::Result<Reply> {
        let id = self.queue(body)?;
        loop {
            self.pump().await?;
            while let Some(ev) = self.session.poll_event() {
                match ev {
                    ClientEvent::Response { request_id, body } if request_id == id => {
                        return match body {
                            Reply::Error(e) => {
                                bail!("server error {}: {}", confab_protocol::ErrorCode(e.code), e.message)
                            }
                            other => Ok(other),
                        };
                    }
                    ClientEvent::Closed { code, message } => bail!("session closed: {code}: {message}"),
                    _ => {}
                }
            }
        }
    }
}
