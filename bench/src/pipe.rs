//! A lean, pipelined Confab session for load generation, built directly on
//! the sans-IO `ClientSession` from `confab-protocol` over a [`Wire`].
//!
//! Why not `confab_client::Connection`? Its requests borrow the connection
//! (`&self`) for as long as they are in flight while `next_event` needs
//! `&mut self`, so one task cannot keep W sends in flight *and* drain the
//! InboxEvents the server echoes to the sender's own session. Here one task
//! owns the session: it queues requests, and every pump writes everything
//! queued and reads everything ready, so each read and each write carries
//! as many frames as there are (batching, like a well-behaved client).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::{ClientConfig, ClientEvent, ClientSession};
use confab_protocol::{ErrorCode, FrameDecoder};

use crate::wire::{Connector, Transport, Wire};

/// Where a Confab server listens.
#[derive(Debug, Clone)]
pub struct Target {
    /// TCP+TLS address.
    pub tcp: Option<SocketAddr>,
    /// QUIC address.
    pub quic: Option<SocketAddr>,
    /// HTTPS address (the WebSocket bridge).
    pub http: Option<SocketAddr>,
    /// Pinned certificate fingerprint (hex).
    pub fingerprint: String,
}

impl Target {
    /// The address for a transport.
    pub fn addr(&self, transport: Transport) -> anyhow::Result<SocketAddr> {
        match transport {
            Transport::Tcp => self.tcp,
            Transport::Quic => self.quic,
            Transport::Ws => self.http,
        }
        .with_context(|| format!("the server has no {} listener", transport.name()))
    }
}

/// One connected, handshaken session.
pub struct Pipe {
    session: ClientSession,
    /// The transport.
    pub wire: Wire,
    /// On WebSocket: the mask counter (frames are re-framed as messages).
    ws: Option<u64>,
}

/// Splits the session's outgoing length-delimited frames.
const OUT_DECODER_MAX: u32 = 1 << 26;

impl Pipe {
    /// Connects and completes TLS and the Confab handshake.
    pub async fn connect(connector: &Connector, transport: Transport, addr: SocketAddr) -> anyhow::Result<Pipe> {
        let wire = connector.connect(transport, addr).await?;
        Pipe::handshake(wire, transport).await
    }

    /// Completes the Confab handshake on a connected `wire`.
    pub async fn handshake(wire: Wire, transport: Transport) -> anyhow::Result<Pipe> {
        let config = ClientConfig {
            client_name: concat!("confab-bench/", env!("CARGO_PKG_VERSION")).into(),
            capabilities: vec![],
        };
        let session = ClientSession::new(&config, Instant::now());
        let ws = (transport == Transport::Ws).then_some(0x9e37_79b9_7f4a_7c15);
        let mut pipe = Pipe { session, wire, ws };
        loop {
            pipe.pump(None).await?;
            while let Some(ev) = pipe.session.poll_event() {
                match ev {
                    ClientEvent::Welcome(_) => return Ok(pipe),
                    ClientEvent::Closed { code, message } => bail!("handshake refused: {code}: {message}"),
                    _ => {}
                }
            }
        }
    }

    /// Queues a request; returns its request id. It is written by the next
    /// [`Pipe::pump`].
    pub fn queue(&mut self, body: Body) -> anyhow::Result<u64> {
        Ok(self.session.send_request(body, Instant::now())?)
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.wire.out.len()
    }

    /// Writes what is queued, waits for input (or the heartbeat timer, or
    /// `deadline`) and handles it; read the results with
    /// [`Pipe::poll_event`]. Cancel-safe.
    pub async fn pump(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        if let Some(bytes) = self.session.poll_transmit() {
            match self.ws.as_mut() {
                None => self.wire.out.extend_from_slice(&bytes),
                Some(counter) => {
                    // One binary message per frame, without the varint.
                    let mut bytes = BytesMut::from(&bytes[..]);
                    let decoder = FrameDecoder::new(OUT_DECODER_MAX);
                    while let Some(frame) = decoder.next_frame(&mut bytes)? {
                        crate::ws::encode(crate::ws::BINARY, &frame, crate::ws::mask_key(counter), &mut self.wire.out);
                    }
                }
            }
        }
        let timer = self.session.poll_timeout();
        let wake = match (timer, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let n = self.wire.pump(wake).await?;
        let now = Instant::now();
        if n > 0 {
            match self.ws.as_mut() {
                None => self.session.handle_input(&mut self.wire.inbuf, now),
                Some(counter) => {
                    let max = self.session.limits().max_frame_bytes as usize + 16;
                    while let Some(f) = crate::ws::decode(&mut self.wire.inbuf, max)? {
                        match f.opcode {
                            crate::ws::BINARY if f.fin => self.session.handle_frame(&f.payload, now),
                            crate::ws::PING => crate::ws::encode(
                                crate::ws::PONG,
                                &f.payload,
                                crate::ws::mask_key(counter),
                                &mut self.wire.out,
                            ),
                            crate::ws::PONG => {}
                            crate::ws::CLOSE => bail!("the server closed the WebSocket"),
                            other => bail!("unexpected WebSocket frame (opcode {other}, fin {})", f.fin),
                        }
                    }
                }
            }
        }
        if timer.is_some_and(|t| now >= t) {
            self.session.handle_timeout(now);
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
        match self.request(body).await? {
            Reply::Error(e) => bail!("server error {}: {}", ErrorCode(e.code), e.message),
            other => Ok(other),
        }
    }

    /// [`Pipe::call`], retried while the server answers `UNAVAILABLE`
    /// (a cluster whose partitions are still being taken over, right after
    /// it started), for at most [`SETTLE`].
    pub async fn call_settled(&mut self, body: Body) -> anyhow::Result<Reply> {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.request(body.clone()).await? {
                Reply::Error(e) if ErrorCode(e.code) == ErrorCode::UNAVAILABLE && Instant::now() < deadline => {
                    let wait = Duration::from_millis(e.retry_after_ms.clamp(50, 1000));
                    tokio::time::sleep(wait).await;
                }
                Reply::Error(e) => bail!("server error {}: {}", ErrorCode(e.code), e.message),
                other => return Ok(other),
            }
        }
    }

    /// One request, waiting for its response, errors included.
    pub async fn request(&mut self, body: Body) -> anyhow::Result<Reply> {
        let id = self.queue(body)?;
        loop {
            self.pump(None).await?;
            while let Some(ev) = self.session.poll_event() {
                match ev {
                    ClientEvent::Response { request_id, body } if request_id == id => return Ok(body),
                    ClientEvent::Closed { code, message } => bail!("session closed: {code}: {message}"),
                    _ => {}
                }
            }
        }
    }

    /// Signs up `username` (retried while a cluster is settling); returns
    /// (user id, token).
    pub async fn signup(&mut self, username: &str) -> anyhow::Result<(u64, String)> {
        let body = Body::Signup(pb::SignupRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device_name: "bench".into(),
        });
        match self.call_settled(body).await.with_context(|| format!("signup {username}"))? {
            Reply::AuthOk(ok) => Ok((ok.user_id, ok.token)),
            other => bail!("signup {username}: unexpected {other:?}"),
        }
    }

    /// Resumes a device by token; returns its AuthOk.
    pub async fn resume(&mut self, token: &str) -> anyhow::Result<pb::AuthOk> {
        match self.call(Body::Resume(pb::ResumeRequest { token: token.into() })).await.context("resume")? {
            Reply::AuthOk(ok) => Ok(ok),
            other => bail!("resume: unexpected {other:?}"),
        }
    }
}

/// How long setup requests are retried while a cluster answers
/// `UNAVAILABLE`.
pub const SETTLE: Duration = Duration::from_secs(30);

/// The password of every bench account.
pub const PASSWORD: &str = "bench-password";

/// A tag making usernames unique per run, so an external server can be
/// benchmarked repeatedly.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut n = (nanos / 1000) as u64 % 36u64.pow(6);
    let mut tag = String::new();
    for _ in 0..6 {
        let d = (n % 36) as u32;
        tag.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    tag
}
