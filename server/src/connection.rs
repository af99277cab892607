//! The task that owns one session: it reads the transport, feeds the
//! session machine, starts handlers for admitted requests, writes
//! responses and live events (batched: everything ready goes out in one
//! write), and applies deadlines, kills and shutdown. The same code serves
//! the QUIC session stream, TCP+TLS and WebSocket; only the [`Link`]
//! differs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use confab_protocol::pb::server_frame::Body as Reply;
use confab_protocol::session::{Phase, ServerEvent, ServerSession};
use confab_protocol::{ErrorCode, Now};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiError, Auth, SessionCtx};
use crate::hub::{Kill, Registration, Transport};
use crate::link::{Input, Link};
use crate::server::Shared;
use crate::store::UserRef;

/// Most bytes of queued events gathered into one write.
const MAX_WRITE_BATCH: usize = 256 * 1024;
/// A write that makes no progress for this long ends the session.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final frames of a closed session (its fatal Error) may take.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a session publishes its identity for its QUIC request streams.
pub type AuthWatch = watch::Sender<Option<SessionCtx>>;

/// Serves one session until it ends. Returns the code it ended with
/// (`ErrorCode(0)` when the peer simply went away). `auth_watch` is a
/// sender (QUIC, whose request streams need the identity) or `None`.
pub async fn serve<L: Link>(
    shared: Arc<Shared>,
    mut link: L,
    peer: SocketAddr,
    transport: Transport,
    auth_watch: impl Into<Option<AuthWatch>>,
    shutdown: CancellationToken,
) -> ErrorCode {
    let auth_watch = auth_watch.into();
    let config = match transport {
        Transport::Quic => Arc::clone(&shared.quic_session_config),
        Transport::Tcp | Transport::WebSocket => Arc::clone(&shared.tcp_session_config),
    };
    let mut c = Conn {
        shared,
        session: ServerSession::new(config, Instant::now()),
        ctx: SessionCtx { peer, session: 0, auth: None },
        kill: Arc::new(Kill::default()),
        registration: None,
        handlers: FuturesUnordered::new(),
        transport,
        auth_watch,
        datagrams: link.datagrams(),
    };
    c.shared.metrics.connection_opened(transport);
    // Allocated by the link when input arrives, given back once every
    // frame in it was taken, so an idle session holds no read buffer.
    let mut inbuf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut draining = false;
    let mut drain_deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut close_code = ErrorCode(0);

    loop {
        while let Some(event) = c.session.poll_event() {
            match event {
                ServerEvent::Request { request_id, body } => c.start(request_id, body),
                ServerEvent::Notification(body) => {
                    c.shared.metrics.frame_in(&body);
                    api::notify(&c.shared, &c.ctx, body)
                }
                ServerEvent::Handshaken { version, client_name, .. } => {
                    tracing::debug!(%peer, version, client = %client_name, "handshake");
                }
                ServerEvent::Closed { code } => close_code = code,
            }
        }
        if let Some(bytes) = c.session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        if !out.is_empty() {
            // A peer that stops reading blocks this write: a kill (its queue
            // overflowed, its device was revoked) or the write timeout must
            // still end the session, even mid-frame.
            // The last frames of a closed session are a best effort: the
            // peer may be the reason it was closed (it stopped reading).
            let write_timeout = if c.session.is_closed() { FINAL_WRITE_TIMEOUT } else { WRITE_TIMEOUT };
            let written = tokio::select! {
                // A write that can finish now goes out before a kill ends
                // the session: a self-revoke's Done, then its fatal Error.
                biased;
                r = link.write(&mut out) => r,
                // Once the session is closed the kill has been handled: the
                // final fatal Error must get its chance to go out.
                code = c.kill.killed(), if !c.session.is_closed() => {
                    // The Error cannot go out (the peer is not reading), but
                    // the close says why (WebSocket close status, metrics).
                    close_code = code;
                    Err(std::io::Error::other(format!("closed while writing: {code}")))
                }
                _ = tokio::time::sleep(write_timeout) => Err(std::io::Error::other("write timed out")),
            };
            if let Err(e) = written {
                tracing::debug!(%peer, error = %e, "write failed");
                break;
            }
            // Written (the link emptied it): given back, so an idle session
            // holds no write buffer.
            release_if_empty(&mut out);
        }
        if c.session.is_closed() {
            break;
        }
        if draining && c.session.in_flight() == 0 {
            c.session.close(ErrorCode::SHUTTING_DOWN, "the server is shutting down");
            continue;
        }
        let deadline = c.session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                drain_deadline = tokio::time::Instant::now() + c.shared.shutdown_grace;
                c.session.go_away(ErrorCode::SHUTTING_DOWN, "the server is shutting down", 1000);
            }
            code = c.kill.killed() => {
                let why = match code {
                    ErrorCode::RESYNC_REQUIRED => "outbound queue overflowed: reconnect and sync",
                    ErrorCode::DEVICE_REVOKED => "this device was revoked",
                    _ => "session ended by the server",
                };
                c.session.close(code, why);
            }
            Some((id, result)) = c.handlers.next(), if !c.handlers.is_empty() => {
                c.on_response(id, result);
                if c.session.wants_input() && !inbuf.is_empty() {
                    c.session.handle_input(&mut inbuf, Now::system());
                    release_if_empty(&mut inbuf);
                }
            }
            // Everything queued goes into one write (up to the cap).
            () = next_events(c.registration.as_ref(), &mut out) => {}
            input = link.read(&mut inbuf), if c.session.wants_input() && !draining => match input {
                Input::Bytes => {
                    c.session.handle_input(&mut inbuf, Now::system());
                    release_if_empty(&mut inbuf);
                }
                Input::Message(frame) => c.session.handle_message(&frame, Now::system()),
                Input::Datagram(d) => {
                    c.shared.metrics.typing_datagrams_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    c.session.handle_datagram(&d, Now::system())
                }
                Input::Violation(code, why) => c.session.close(code, why),
                Input::Closed => break,
            },
            _ = sleep_until(deadline) => c.session.handle_timeout(Instant::now()),
            _ = tokio::time::sleep_until(drain_deadline), if draining => {
                c.session.close(ErrorCode::SHUTTING_DOWN, "the server is shutting down");
            }
        }
    }
    c.finish();
    c.shared.metrics.connection_closed(transport);
    if close_code.0 != 0 {
        c.shared.metrics.error(close_code.0);
    }
    link.close(close_code).await;
    close_code
}

fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn next_events(registration: Option<&Registration>, out: &mut BytesMut) {
    match registration {
        Some(reg) => reg.recv_into(out, MAX_WRITE_BATCH).await,
        None => std::future::pending().await,
    }
}

/// A request's handler, tagged with its request id.
///
/// Handlers run inside the connection task rather than each in a spawned
/// task: a spawn plus a channel send back per request was a visible part
/// of the tokio workers' profile at dm W = 64, and a channel of results
/// allocated its first block (~1 KiB) for every idle connection. A
/// handler only awaits (the writer, a blocking read, the password gate),
/// so polling it here holds nothing up. Writes are queued to the writer
/// before the handler is returned, so a session that ends with requests
/// in flight still gets them stored (it just never sees the answers).
struct Handler {
    request_id: u64,
    pending: api::Pending,
}

impl Future for Handler {
    type Output = (u64, Result<Reply, ApiError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.request_id;
        self.pending.as_mut().poll(cx).map(|r| (id, r))
    }
}

struct Conn {
    shared: Arc<Shared>,
    session: ServerSession,
    ctx: SessionCtx,
    kill: Arc<Kill>,
    registration: Option<Registration>,
    /// Requests in progress. Unbounded here, but the session machine admits
    /// at most `max_in_flight` requests.
    handlers: FuturesUnordered<Handler>,
    transport: Transport,
    /// Where the session's identity is published for its QUIC request
    /// streams; `None` on transports without them (a watch channel costs
    /// an idle connection ~0.4 KiB).
    auth_watch: Option<AuthWatch>,
    /// Where typing events may go as datagrams (QUIC only).
    datagrams: Option<quinn::Connection>,
}

impl Conn {
    fn start(&mut self, request_id: u64, body: confab_protocol::pb::client_frame::Body) {
        self.shared.metrics.frame_in(&body);
        let pending = api::dispatch(&self.shared, &self.ctx, body);
        self.handlers.push(Handler { request_id, pending });
    }

    fn on_response(&mut self, id: u64, result: Result<Reply, ApiError>) {
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                self.shared.metrics.error(e.code.0);
                return self.session.fail(id, e.code, &e.message, e.retry_after_ms);
            }
        };
        self.shared.metrics.frame_out(&reply);
        let auth_ok = match &reply {
            Reply::AuthOk(ok) => Some(ok.clone()),
            _ => None,
        };
        let was_authenticated = self.ctx.auth.is_some();
        self.session.respond(id, reply);
        match (self.session.phase(), auth_ok) {
            (Phase::Authenticated { .. }, Some(ok)) if !was_authenticated => {
                let reg = self.shared.hub.register(
                    ok.user_id,
                    ok.device_id,
                    Arc::clone(&self.kill),
                    self.ctx.peer,
                    self.transport,
                    self.datagrams.clone().filter(|_| self.session.datagrams()),
                );
                self.ctx.session = reg.session;
                self.shared.presence.session_up(ok.user_id, &ok.username, reg.session, Instant::now());
                self.ctx.auth = Some(Auth {
                    user: UserRef { user_id: ok.user_id, username: ok.username },
                    device_id: ok.device_id,
                });
                self.registration = Some(reg);
                if let Some(w) = &self.auth_watch {
                    w.send_replace(Some(self.ctx.clone()));
                }
            }
            (Phase::Unauthenticated, _) if was_authenticated => self.leave_hub(),
            _ => {}
        }
    }

    fn leave_hub(&mut self) {
        if let (Some(auth), Some(reg)) = (self.ctx.auth.take(), self.registration.take()) {
            self.shared.hub.unregister(auth.user.user_id, reg.session);
            let device = auth.device_id;
            let now = Now::system().unix_ms;
            self.shared.presence.session_down(auth.user.user_id, reg.session, Instant::now(), now);
            // Last-seen is best effort: a full writer queue skips it.
            if let Ok(done) = self.shared.writer.submit(move |tx| tx.touch_device(device, now)) {
                self.shared.tracker.spawn(async move {
                    let _ = done.await;
                });
            }
        }
        self.ctx.session = 0;
        if let Some(w) = &self.auth_watch {
            w.send_replace(None);
        }
    }

    fn finish(&mut self) {
        self.leave_hub();
    }
}
