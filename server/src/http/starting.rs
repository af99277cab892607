//! What the HTTP port answers while the server starts (the store opening,
//! its journal replaying; in a cluster, joining NATS): `/healthz` 200
//! (the process is alive), everything else 503 with `Retry-After: 1` and
//! "starting" (so a readiness probe sees "not ready" instead of a refused
//! connection). A minimal HTTP/1.1 answer, one request per connection,
//! each bounded in time and size; the listener is handed to the real
//! router once the server is ready.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bytes of a request head read at most.
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection may take for its TLS handshake and request.
const DEADLINE: Duration = Duration::from_secs(2);
/// Connections answered at once at most (more wait in the backlog).
const MAX_CONCURRENT: usize = 64;

/// The starting-up responder on the HTTP listener.
pub struct Starting {
    stop: CancellationToken,
    task: JoinHandle<TcpListener>,
}

impl Starting {
    /// Answers on `listener` (over TLS with `tls`) until [`Starting::finish`].
    pub fn start(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Starting {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let permit = tokio::select! {
                    _ = token.cancelled() => break,
                    p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        // A failed accept (a reset connection, no fds):
                        // the next one may work.
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(DEADLINE, async move {
                        match acceptor {
                            Some(a) => {
                                if let Ok(tls) = a.accept(stream).await {
                                    answer(tls).await;
                                }
                            }
                            None => answer(stream).await,
                        }
                    })
                    .await;
                });
            }
            listener
        });
        Starting { stop, task }
    }

    /// Stops answering and hands the listener back (connections it has
    /// not accepted wait in the backlog for the real server).
    pub async fn finish(self) -> std::io::Result<TcpListener> {
        self.stop.cancel();
        self.task.await.map_err(std::io::Error::other)
    }
}

/// Reads one request head and answers it.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    let path = head.split(|b| *b == b' ').nth(1).unwrap_or_default();
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, body) = match path {
        b"/healthz" => ("200 OK", "ok\n"),
        _ => ("503 Service Unavailable", "starting\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n\
         cache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
