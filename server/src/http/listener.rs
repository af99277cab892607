//! The HTTP listener: plain TCP or TLS, each connection holding one of the
//! server's connection permits for as long as it lives (a WebSocket session
//! keeps the permit of the connection it was upgraded from).
//!
//! axum's `serve` calls [`axum::serve::Listener::accept`] in a loop and
//! expects it never to fail, so the accepting and the TLS handshakes happen
//! in a task of ours ([`accept_loop`]) that hands finished connections over
//! a channel: a slow handshake never holds up the next accept.
//!
//! axum's `serve` sets no timeouts, so [`Conn`] keeps its own: a connection
//! that has not sent a complete first request within the handshake
//! deadline (a slowloris, or one that never sends anything), or that stays
//! silent both ways for the idle limit afterwards (keep-alive, or a
//! WebSocket whose client stopped heartbeating), is closed, and its permit
//! freed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::transport::{Ingress, tcp, tls_stream};

/// A byte stream of either kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An accepted connection, the permit it holds, and its deadlines.
pub struct Conn {
    io: Box<dyn Io>,
    _admission: tcp::Admission,
    /// Set by the router when the first request arrived.
    served: Arc<AtomicBool>,
    first_request_by: Instant,
    idle: Duration,
    last_activity: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    fn new(io: Box<dyn Io>, admission: tcp::Admission, served: Arc<AtomicBool>, limits: Deadlines) -> Conn {
        let now = Instant::now();
        let first_request_by = now + limits.first_request;
        Conn {
            io,
            _admission: admission,
            served,
            first_request_by,
            idle: limits.idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(first_request_by.into())),
        }
    }

    fn due(&self) -> Instant {
        if self.served.load(Ordering::Relaxed) { self.last_activity + self.idle } else { self.first_request_by }
    }

    /// Whether the connection has outlived its deadline; otherwise the
    /// timer is armed to wake this task when it would.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let due = self.due();
            if Instant::now() >= due {
                return true;
            }
            if self.timer.deadline() != due.into() {
                self.timer.as_mut().reset(due.into());
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "HTTP connection deadline passed")
    }
}

/// The deadlines of HTTP connections.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the first complete request (after TLS).
    pub first_request: Duration,
    /// For silence in both directions afterwards.
    pub idle: Duration,
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Conn::timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Conn::timed_out())),
            other => other,
        }
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

/// The peer's address, as handlers see it (`ConnectInfo<PeerAddr>`), and
/// the connection's "a request arrived" flag.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    /// The peer.
    pub addr: SocketAddr,
    served: Arc<AtomicBool>,
}

impl PeerAddr {
    /// Marks the connection as having sent a complete request: from now on
    /// only the idle limit applies.
    pub fn served(&self) {
        self.served.store(true, Ordering::Relaxed);
    }
}

impl Connected<IncomingStream<'_, HttpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, HttpListener>) -> Self {
        stream.remote_addr().clone()
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
        Ok(PeerAddr { addr: self.local, served: Arc::new(AtomicBool::new(true)) })
    }
}

/// Starts accepting on `listener` (TLS when `tls` is given) and returns
/// what axum serves from.
pub fn start(
    ingress: Arc<Ingress>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    deadlines: Deadlines,
    shutdown: CancellationToken,
) -> io::Result<HttpListener> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(64);
    ingress.tracker.spawn(accept_loop(Arc::clone(&ingress), listener, tls, deadlines, tx, shutdown));
    Ok(HttpListener { ready, local })
}

async fn accept_loop(
    ingress: Arc<Ingress>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    deadlines: Deadlines,
    ready: mpsc::Sender<(Conn, PeerAddr)>,
    shutdown: CancellationToken,
) {
    while let Some((socket, peer, admission)) = tcp::accept_tcp(&ingress, &listener, &shutdown, "HTTP").await {
        match &tls {
            None => {
                let served = Arc::new(AtomicBool::new(false));
                let conn = Conn::new(Box::new(socket), admission, Arc::clone(&served), deadlines);
                if ready.send((conn, PeerAddr { addr: peer, served })).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let (tls, ready, deadline) = (Arc::clone(tls), ready.clone(), ingress.handshake_timeout);
                ingress.tracker.spawn(async move {
                    let stream = match tokio::time::timeout(deadline, tls_stream::accept(socket, tls)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "HTTPS handshake timed out"),
                    };
                    let served = Arc::new(AtomicBool::new(false));
                    let conn = Conn::new(Box::new(stream), admission, Arc::clone(&served), deadlines);
                    let _ = ready.send((conn, PeerAddr { addr: peer, served })).await;
                });
            }
        }
    }
}
