//! The TCP+TLS accept loop. It takes a connection permit before accepting
//! (so a flood waits in the kernel's backlog, not in our memory), backs off
//! on accept errors, bounds the TLS handshake by the handshake deadline,
//! and hands the byte stream to [`connection::serve`]. The HTTP listener
//! accepts with the same [`accept_tcp`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{Ingress, connection, tls_stream};
use crate::admission::AddressSlot;
use crate::link::Transport;

const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What an accepted TCP connection holds for as long as it lives: one of
/// the server's connection permits and its address's slot.
pub type Admission = (OwnedSemaphorePermit, AddressSlot);

/// Waits for the next TCP connection the limits admit: the accept (backing
/// off on errors), the per-address check (refused connections are closed at
/// once), then a connection permit. Until the permit comes this loop
/// accepts nothing more, so past `max_connections` a flood waits in the
/// kernel's backlog, not in our memory (one accepted connection per
/// listener waits here). Taking the permit before the accept would let an
/// idle listener hold a freed permit while connections wait on another.
/// `None` once shutting down.
pub async fn accept_tcp(
    ingress: &Ingress,
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr, Admission)> {
    let mut backoff = Duration::from_millis(10);
    loop {
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
        let Some(slot) = ingress.per_address.admit(peer.ip()) else {
            refuse_per_address(ingress, peer);
            continue;
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return None,
            p = Arc::clone(&ingress.connections).acquire_owned() => p.ok()?,
        };
        let _ = socket.set_nodelay(true);
        if ingress.tcp_send_buffer_bytes > 0
            && let Err(e) = socket2::SockRef::from(&socket).set_send_buffer_size(ingress.tcp_send_buffer_bytes)
        {
            tracing::debug!(%peer, error = %e, "cannot set the send buffer size");
        }
        return Some((socket, peer, (permit, slot)));
    }
}

/// Accepts TCP connections, completes TLS and serves sessions.
pub async fn serve(
    ingress: Arc<Ingress>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    while let Some((socket, peer, admission)) = accept_tcp(&ingress, &listener, &shutdown, "TCP").await {
        let (ingress, tls, shutdown) = (Arc::clone(&ingress), Arc::clone(&tls), shutdown.clone());
        ingress.tracker.clone().spawn(async move {
            let _admission = admission;
            let stream = match tokio::time::timeout(ingress.handshake_timeout, tls_stream::accept(socket, tls)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let code = connection::serve(ingress, stream, peer, Transport::Tcp, None, shutdown).await;
            tracing::debug!(%peer, %code, "TCP session ended");
        });
    }
}

/// Counts and logs a connection refused for its address's open count.
pub fn refuse_per_address(ingress: &Ingress, peer: SocketAddr) {
    ingress.core.metrics.refused_per_address.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(%peer, "connection refused: too many from this address");
}
