//! Accept loops. Each takes a connection permit before accepting (so a
//! flood waits in the kernel's backlog, not in our memory), backs off on
//! accept errors, bounds the TLS handshake by the handshake deadline, and
//! hands the byte stream to [`connection::serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, FrameDecoder, framing, validate};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admission::AddressSlot;
use crate::api::{self, SessionCtx};
use crate::connection;
use crate::hub::Transport;
use crate::link::QuicLink;
use crate::server::Shared;
use crate::tls_stream;

const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What an accepted TCP connection holds for as long as it lives: one of
/// the server's connection permits and its address's slot.
pub type Admission = (OwnedSemaphorePermit, AddressSlot);

/// Waits for the next TCP connection the limits admit: a connection permit
/// first (so a flood waits in the kernel's backlog, not in our memory),
/// then the accept (backing off on errors), then the per-address check
/// (refused connections are closed at once). `None` once shutting down.
pub async fn accept_tcp(
    shared: &Shared,
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr, Admission)> {
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return None,
            p = Arc::clone(&shared.connections).acquire_owned() => p.ok()?,
        };
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "{what} accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(10);
        let Some(slot) = shared.per_address.admit(peer.ip()) else {
            refuse_per_address(shared, peer);
            continue;
        };
        let _ = socket.set_nodelay(true);
        if shared.config.tcp_send_buffer_bytes > 0
            && let Err(e) = socket2::SockRef::from(&socket).set_send_buffer_size(shared.config.tcp_send_buffer_bytes)
        {
            tracing::debug!(%peer, error = %e, "cannot set the send buffer size");
        }
        return Some((socket, peer, (permit, slot)));
    }
}

/// Accepts TCP connections, completes TLS and serves sessions.
pub async fn tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    while let Some((socket, peer, admission)) = accept_tcp(&shared, &listener, &shutdown, "TCP").await {
        let (shared, tls, shutdown) = (Arc::clone(&shared), Arc::clone(&tls), shutdown.clone());
        shared.clone().tracker.spawn(async move {
            let _admission = admission;
            let stream = match tokio::time::timeout(shared.handshake_timeout, tls_stream::accept(socket, tls)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let code =
                connection::serve(shared, stream, peer, Transport::Tcp, None::<connection::AuthWatch>, shutdown).await;
            tracing::debug!(%peer, %code, "TCP session ended");
        });
    }
}

/// Accepts QUIC connections: the first bidirectional stream is the session
/// stream; later ones are request streams.
pub async fn quic(shared: Arc<Shared>, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = Arc::clone(&shared.connections).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let peer = incoming.remote_address();
        // An Initial's source address may be spoofed: once spoofed Initials
        // could do harm (take many permits through their handshakes, or half
        // of a victim address's slots), the peer proves its address first
        // with a Retry round trip.
        let retry = wants_retry(
            handshakes.load(Ordering::Relaxed),
            shared.per_address.open(peer.ip()),
            shared.per_address.max(),
        );
        if retry && !incoming.remote_address_validated() && incoming.may_retry() {
            match incoming.retry() {
                Ok(()) => continue,
                Err(e) => incoming = e.into_incoming(),
            }
        }
        let Some(slot) = shared.per_address.admit(peer.ip()) else {
            refuse_per_address(&shared, peer);
            incoming.refuse();
            continue;
        };
        let (shared, shutdown) = (Arc::clone(&shared), shutdown.clone());
        let in_handshake = Handshaking::new(&handshakes);
        shared.clone().tracker.spawn(async move {
            let _permit = (permit, slot);
            let deadline = shared.handshake_timeout;
            let handshake = tokio::time::timeout(deadline, async { incoming.accept()?.await }).await;
            drop(in_handshake);
            let conn = match handshake {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "QUIC handshake failed"),
                Err(_) => return tracing::debug!(%peer, "QUIC handshake timed out"),
            };
            let (send, recv) = match tokio::time::timeout(deadline, conn.accept_bi()).await {
                Ok(Ok(s)) => s,
                _ => return conn.close(quinn::VarInt::from_u32(ErrorCode::HANDSHAKE_TIMEOUT.0), b"no session stream"),
            };
            let (auth_tx, auth_rx) = watch::channel(None);
            let streams = shared.tracker.spawn(request_streams(Arc::clone(&shared), conn.clone(), auth_rx));
            let link = QuicLink::new(recv, send, conn.clone());
            let code = connection::serve(Arc::clone(&shared), link, peer, Transport::Quic, auth_tx, shutdown).await;
            streams.abort();
            let reason = code.name().unwrap_or("closed");
            // Give the final frames a moment to be acknowledged, then close.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.close(quinn::VarInt::from_u32(code.0), reason.as_bytes());
            tracing::debug!(%peer, %code, "QUIC session ended");
        });
    }
}

/// QUIC handshakes in progress from which on every new connection from an
/// address not yet validated gets a Retry first.
const RETRY_FROM_HANDSHAKES: usize = 128;

/// Whether a new QUIC connection from an unvalidated address must prove
/// its address (Retry) first: with `handshakes` in progress server-wide,
/// and `open` of its address's `max` slots taken. Asking always would
/// cost every connection a round trip. It would also slow connects down
/// badly under load: confab-bench's QUIC connects fell from ~600 to ~25
/// per second at 3,000 held sessions. So the Retry comes only where
/// spoofed Initials could hurt: many handshakes at once (each one holds a
/// permit until its deadline), or an address whose slots are half taken
/// (spoofing its address must not lock its owner out).
fn wants_retry(handshakes: usize, open: usize, max: usize) -> bool {
    handshakes >= RETRY_FROM_HANDSHAKES || open.saturating_mul(2) >= max
}

/// Counts one QUIC handshake in progress while it lives.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(Arc::clone(count))
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves QUIC request streams: one request and one response each.
async fn request_streams(shared: Arc<Shared>, conn: quinn::Connection, auth: watch::Receiver<Option<SessionCtx>>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (shared, auth) = (Arc::clone(&shared), auth.clone());
        shared.clone().tracker.spawn(request_stream(shared, send, recv, auth));
    }
}

async fn request_stream(
    shared: Arc<Shared>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    auth: watch::Receiver<Option<SessionCtx>>,
) {
    let max = shared.limits.max_frame_bytes;
    let (request_id, reply) = match recv.read_to_end(max as usize + framing::MAX_VARINT_LEN).await {
        Err(quinn::ReadToEndError::TooLong) => {
            (0, Err(err(ErrorCode::FRAME_TOO_LARGE, "frame exceeds max_frame_bytes")))
        }
        Err(e) => return tracing::debug!(error = %e, "request stream read failed"),
        // The session's identity as it is now that the request is read
        // (not when the stream was opened: a logout may have come between).
        Ok(bytes) => {
            let ctx = auth.borrow().clone();
            answer(&shared, bytes, max, ctx).await
        }
    };
    let body = match reply {
        Ok(r) => r,
        Err(e) => Reply::Error(pb::Error {
            code: e.code.0,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            fatal: false,
        }),
    };
    let frame = framing::frame_bytes(&pb::ServerFrame { request_id, body: Some(body) });
    if send.write_all(&frame).await.is_ok() {
        let _ = send.finish();
    }
}

fn err(code: ErrorCode, message: &str) -> api::ApiError {
    api::ApiError::new(code, message)
}

async fn answer(
    shared: &Arc<Shared>,
    bytes: Vec<u8>,
    max: u32,
    ctx: Option<SessionCtx>,
) -> (u64, Result<Reply, api::ApiError>) {
    let mut buf = BytesMut::from(&bytes[..]);
    let payload = match FrameDecoder::new(max).next_frame(&mut buf) {
        Ok(Some(p)) if buf.is_empty() => p,
        Ok(_) => return (0, Err(err(ErrorCode::MALFORMED_FRAME, "a request stream carries exactly one frame"))),
        Err(e) => return (0, Err(err(e.code(), &e.to_string()))),
    };
    let frame = match framing::decode_client_frame(&payload) {
        Ok(f) => f,
        Err(e) => return (e.request_id.unwrap_or(0), Err(err(e.code(), &e.detail))),
    };
    let id = frame.request_id;
    let Some(body) = frame.body else { return (id, Err(err(ErrorCode::UNKNOWN_REQUEST, "empty or unknown body"))) };
    let allowed = matches!(
        body,
        Body::History(_)
            | Body::Sync(_)
            | Body::ListConversations(_)
            | Body::GetConversation(_)
            | Body::ListMembers(_)
            | Body::ListDevices(_)
            | Body::ReadReceipts(_)
            | Body::Ping(_)
    );
    if !allowed {
        return (id, Err(err(ErrorCode::PROTOCOL_VIOLATION, "this request is not allowed on a request stream")));
    }
    if id == 0 {
        return (0, Err(err(ErrorCode::INVALID_REQUEST_ID, "request_id must be non-zero")));
    }
    let Some(ctx) = ctx.filter(|c| c.auth.is_some()) else {
        return (id, Err(err(ErrorCode::UNAUTHENTICATED, "authenticate on the session stream first")));
    };
    if let Err(v) = validate::validate_request(&body, &shared.limits) {
        return (id, Err(err(v.code(), &v.to_string())));
    }
    if let Body::Ping(p) = body {
        let now = confab_protocol::Now::system().unix_ms;
        return (id, Ok(Reply::Pong(pb::Pong { nonce: p.nonce, server_time_ms: now })));
    }
    (id, api::dispatch(shared, &ctx, body).await)
}

/// Counts and logs a connection refused for its address's open count.
pub fn refuse_per_address(shared: &Shared, peer: SocketAddr) {
    shared.metrics.refused_per_address.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(%peer, "connection refused: too many from this address");
}

/// The address a listener actually bound (port 0 resolved).
pub fn bound(addr: std::io::Result<SocketAddr>, what: &str) -> anyhow::Result<SocketAddr> {
    addr.map_err(|e| anyhow::anyhow!("{what}: cannot read the bound address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_only_where_spoofed_initials_could_hurt() {
        assert!(!wants_retry(0, 0, 16), "a quiet server with a fresh address: no round trip");
        assert!(!wants_retry(RETRY_FROM_HANDSHAKES - 1, 7, 16));
        assert!(wants_retry(RETRY_FROM_HANDSHAKES, 0, 16), "many handshakes at once");
        assert!(wants_retry(0, 8, 16), "half of the address's slots taken");
        assert!(wants_retry(0, 1, 1), "a one-slot address that has it taken");
        assert!(wants_retry(0, 0, 0), "no slots at all: validate before refusing");
    }

    #[test]
    fn handshakes_are_counted_while_they_last() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = Handshaking::new(&count);
        let b = Handshaking::new(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
