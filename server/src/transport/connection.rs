//! The task that owns one session: it reads the transport, feeds the
//! session machine, starts handlers for admitted requests, writes
//! responses and live events (batched: everything ready goes out in one
//! write), and applies deadlines, kills and shutdown. The same code serves
//! the QUIC session stream, TCP+TLS and WebSocket; only the [`Link`]
//! differs. A QUIC session's request streams come in here too
//! ([`Streams`]): the session machine checks and admits them, and their
//! answers go back to their streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use confab_protocol::pb::server_frame::Body as Reply;
use confab_protocol::session::{Phase, ServerEvent, ServerSession, StreamOutcome};
use confab_protocol::{ErrorCode, Now};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Ingress;
use super::streams::{StreamRequest, Streams};
use crate::api::{self, ApiError, SessionCtx};
use crate::hub::{Kill, Registration};
use crate::link::{Input, Link, Transport};
use crate::state::{Auth, Core, SessionLink};
use crate::store::UserRef;

/// Most bytes of queued events gathered into one write.
const MAX_WRITE_BATCH: usize = 256 * 1024;
/// A write that makes no progress for this long ends the session.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final frames of a closed session (its fatal Error) may take.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one session until it ends. Returns the code it ended with
/// (`ErrorCode(0)` when the peer simply went away). `streams` carries a
/// QUIC session's request streams.
pub async fn serve<L: Link>(
    ingress: Arc<Ingress>,
    mut link: L,
    peer: SocketAddr,
    transport: Transport,
    streams: Option<Streams>,
    shutdown: CancellationToken,
) -> ErrorCode {
    let config = match transport {
        Transport::Quic => Arc::clone(&ingress.quic_session),
        Transport::Tcp | Transport::WebSocket => Arc::clone(&ingress.tcp_session),
    };
    let mut c = Conn {
        core: Arc::clone(&ingress.core),
        session: ServerSession::new(config, Instant::now()),
        ctx: SessionCtx { peer, session: 0, auth: None },
        kill: Arc::new(Kill::default()),
        registration: None,
        handlers: FuturesUnordered::new(),
        transport,
        streams,
        answers: HashMap::new(),
        next_stream: 0,
        datagrams: link.datagrams(),
    };
    c.core.metrics.connection_opened(transport);
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
                ServerEvent::Request { request_id, body } => c.start(Target::Session(request_id), body),
                ServerEvent::StreamRequest { stream, body, .. } => c.start(Target::Stream(stream), body),
                ServerEvent::Notification(body) => {
                    c.core.metrics.frame_in(&body);
                    api::notify(&c.core, &c.ctx, body)
                }
                ServerEvent::Handshaken { version, client_name, .. } => {
                    tracing::debug!(%peer, version, client = %client_name, "handshake");
                    if let Some(s) = &mut c.streams {
                        s.welcome(c.session.request_streams());
                    }
                }
                ServerEvent::Closed { code } => close_code = code,
            }
        }
        if let Some(bytes) = c.session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        if !out.is_empty() {
            // The last frames of a closed session are a best effort: the
            // peer may be the reason it was closed (it stopped reading).
            let write_timeout = if c.session.is_closed() { FINAL_WRITE_TIMEOUT } else { WRITE_TIMEOUT };
            let written = tokio::select! {
                // A write that can finish now goes out before a kill ends
                // the session: a self-revoke's Done, then its fatal Error.
                biased;
                r = link.write(&mut out) => r,
                // A kill (the queue overflowed, the device was revoked) must
                // end the session even while a peer that stopped reading
                // blocks this write. The write is cancel-safe (Link::write),
                // so the session closes and the loop goes on with what is
                // left of the frame, then the fatal Error, under the final
                // write's bound: a peer that reads gets whole frames and
                // the reason; one that does not is cut off after
                // FINAL_WRITE_TIMEOUT.
                code = c.kill.killed(), if !c.session.is_closed() => {
                    c.session.close(code, kill_reason(code));
                    continue;
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
                drain_deadline = tokio::time::Instant::now() + ingress.shutdown_grace;
                c.session.go_away(ErrorCode::SHUTTING_DOWN, "the server is shutting down", 1000);
            }
            code = c.kill.killed() => c.session.close(code, kill_reason(code)),
            Some((target, result)) = c.handlers.next(), if !c.handlers.is_empty() => {
                c.on_response(target, result);
                // Every other answer ready now goes into the same write: a
                // group commit finishes a pipelined client's sends at once,
                // and one write per answer cost a syscall and a TLS record
                // each. (Polling without this task's waker is harmless: the
                // select above polls `handlers` with it again before the
                // task sleeps.)
                while let Some(Some((target, result))) = c.handlers.next().now_or_never() {
                    c.on_response(target, result);
                }
                // And the events already delivered: the group commit that
                // answered a send also delivered its event to the sender's
                // own session, and a write of its own cost a syscall and a
                // TLS record per message at W = 1.
                if let Some(reg) = &c.registration {
                    reg.drain_into(&mut out, MAX_WRITE_BATCH);
                }
                if c.session.wants_input() && !inbuf.is_empty() {
                    c.session.handle_input(&mut inbuf, Now::system());
                    release_if_empty(&mut inbuf);
                }
            }
            // Everything queued goes into one write (up to the cap).
            () = next_events(c.registration.as_ref(), &mut out) => {}
            Some(request) = next_stream(c.streams.as_mut()), if !draining => c.on_stream(*request),
            input = link.read(&mut inbuf), if c.session.wants_input() && !draining => match input {
                Input::Bytes => {
                    c.session.handle_input(&mut inbuf, Now::system());
                    release_if_empty(&mut inbuf);
                }
                Input::Message(frame) => c.session.handle_message(&frame, Now::system()),
                Input::Datagram(d) => {
                    c.core.metrics.typing_datagrams_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    c.leave_hub();
    c.core.metrics.connection_closed(transport);
    if close_code.0 != 0 {
        c.core.metrics.error(close_code.0);
    }
    link.close(close_code).await;
    close_code
}

/// What the fatal Error of a session ended by a [`Kill`] says.
fn kill_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::RESYNC_REQUIRED => "outbound queue overflowed: reconnect and sync",
        ErrorCode::DEVICE_REVOKED => "this device was revoked",
        _ => "session ended by the server",
    }
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

async fn next_stream(streams: Option<&mut Streams>) -> Option<Box<StreamRequest>> {
    match streams {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Where a request came from, and so where its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The session stream, with the request's id.
    Session(u64),
    /// A QUIC request stream, by the name this task gave it.
    Stream(u64),
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
    target: Target,
    pending: api::Pending,
}

impl Future for Handler {
    type Output = (Target, Result<Reply, ApiError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let target = self.target;
        self.pending.as_mut().poll(cx).map(|r| (target, r))
    }
}

struct Conn {
    core: Arc<Core>,
    session: ServerSession,
    ctx: SessionCtx,
    kill: Arc<Kill>,
    registration: Option<Registration>,
    /// Requests in progress. Unbounded here, but the session machine admits
    /// at most `max_in_flight` requests.
    handlers: FuturesUnordered<Handler>,
    transport: Transport,
    /// A QUIC session's request streams; `None` on other transports.
    streams: Option<Streams>,
    /// Where the answers of admitted request-stream requests go.
    answers: HashMap<u64, oneshot::Sender<Bytes>>,
    /// The name of the next request stream.
    next_stream: u64,
    /// Where typing events may go as datagrams (QUIC only).
    datagrams: Option<quinn::Connection>,
}

impl Conn {
    fn start(&mut self, target: Target, body: confab_protocol::pb::client_frame::Body) {
        self.core.metrics.frame_in(&body);
        let pending = api::dispatch(&self.core, &self.ctx, body);
        self.handlers.push(Handler { target, pending });
    }

    /// A request stream's bytes: the session machine checks them; what it
    /// answers at once goes straight back.
    fn on_stream(&mut self, request: StreamRequest) {
        let stream = self.next_stream;
        self.next_stream += 1;
        match self.session.handle_request_stream(stream, request.bytes.as_deref(), Now::system()) {
            StreamOutcome::Answer(bytes) => {
                let _ = request.answer.send(bytes);
            }
            StreamOutcome::Admitted => {
                self.answers.insert(stream, request.answer);
            }
        }
    }

    fn on_response(&mut self, target: Target, result: Result<Reply, ApiError>) {
        match target {
            Target::Session(id) => self.on_session_response(id, result),
            Target::Stream(stream) => {
                let bytes = match result {
                    Ok(reply) => {
                        self.core.metrics.frame_out(&reply);
                        self.session.respond_stream(stream, reply)
                    }
                    Err(e) => {
                        self.core.metrics.error(e.code.0);
                        self.session.fail_stream(stream, e.code, &e.message, e.retry_after_ms)
                    }
                };
                if let (Some(bytes), Some(answer)) = (bytes, self.answers.remove(&stream)) {
                    let _ = answer.send(bytes);
                }
            }
        }
    }

    fn on_session_response(&mut self, id: u64, result: Result<Reply, ApiError>) {
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                self.core.metrics.error(e.code.0);
                return self.session.fail(id, e.code, &e.message, e.retry_after_ms);
            }
        };
        self.core.metrics.frame_out(&reply);
        let auth_ok = match &reply {
            Reply::AuthOk(ok) => Some(ok.clone()),
            _ => None,
        };
        let was_authenticated = self.ctx.auth.is_some();
        self.session.respond(id, reply);
        match (self.session.phase(), auth_ok) {
            (Phase::Authenticated { .. }, Some(ok)) if !was_authenticated => {
                let auth =
                    Auth { user: UserRef { user_id: ok.user_id, username: ok.username }, device_id: ok.device_id };
                let link = SessionLink {
                    peer: self.ctx.peer,
                    transport: self.transport,
                    kill: Arc::clone(&self.kill),
                    datagrams: self.datagrams.clone().filter(|_| self.session.datagrams()),
                };
                let reg = self.core.session_started(&auth, link);
                self.ctx.session = reg.session;
                self.ctx.auth = Some(auth);
                self.registration = Some(reg);
            }
            (Phase::Unauthenticated, _) if was_authenticated => self.leave_hub(),
            _ => {}
        }
    }

    fn leave_hub(&mut self) {
        if let (Some(auth), Some(reg)) = (self.ctx.auth.take(), self.registration.take()) {
            self.core.session_ended(&auth, reg.session);
        }
        self.ctx.session = 0;
    }
}
