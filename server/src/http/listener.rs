//! The HTTP listener: plain TCP or TLS, each connection holding one of the
//! server's connection permits for as long as it lives (a WebSocket session
//! keeps the permit of the connection it was upgraded from).
//!
//! axum's `serve` calls [`axum::serve::Listener::accept`] in a loop and
//! expects it never to fail, so the accepting and the TLS handshakes happen
//! in a task of ours ([`accept_loop`]) that hands finished connections over
//! a channel: a slow handshake never holds up the next accept.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::listen;
use crate::server::Shared;

/// A byte stream of either kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An accepted connection and the permit it holds.
pub struct Conn {
    io: Box<dyn Io>,
    _admission: listen::Admission,
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The peer's address, as handlers see it (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, HttpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, HttpListener>) -> Self {
        *stream.remote_addr()
    }
}

/// What axum's `serve` accepts from.
pub struct HttpListener {
    ready: mpsc::Receiver<(Conn, PeerAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Conn, PeerAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop stopped (shutdown): nothing more will come,
            // and axum's graceful shutdown stops calling us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr(self.local))
    }
}

/// Starts accepting on `listener` (TLS when `tls` is given) and returns
/// what axum serves from.
pub fn start(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> io::Result<HttpListener> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(64);
    shared.tracker.spawn(accept_loop(Arc::clone(&shared), listener, tls, tx, shutdown));
    Ok(HttpListener { ready, local })
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ready: mpsc::Sender<(Conn, PeerAddr)>,
    shutdown: CancellationToken,
) {
    while let Some((socket, peer, admission)) = listen::accept_tcp(&shared, &listener, &shutdown, "HTTP").await {
        match &tls {
            None => {
                let conn = Conn { io: Box::new(socket), _admission: admission };
                if ready.send((conn, PeerAddr(peer))).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let (tls, ready, deadline) = (tls.clone(), ready.clone(), shared.handshake_timeout);
                shared.tracker.spawn(async move {
                    let stream = match tokio::time::timeout(deadline, tls.accept(socket)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "HTTPS handshake timed out"),
                    };
                    let conn = Conn { io: Box::new(stream), _admission: admission };
                    let _ = ready.send((conn, PeerAddr(peer))).await;
                });
            }
        }
    }
}
