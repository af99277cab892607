//! What a session's transport must do for [`connection::serve`]: hand over
//! input and take batches of encoded frames. Byte streams (TCP+TLS, the
//! QUIC session stream) and message transports (WebSocket) differ only
//! here; the session code above them is one and the same.
//!
//! [`connection::serve`]: crate::connection::serve

use std::future::Future;

use bytes::{Bytes, BytesMut};
use confab_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a closing stream keeps reading (and discarding) input.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
/// How much input a closing stream discards at most.
pub(crate) const LINGER_BYTES: usize = 1 << 20;
/// What a stream read reserves in an empty read buffer.
const READ_RESERVE: usize = 1024;

/// Which transport a session uses (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC session stream.
    Quic,
    /// TCP+TLS.
    Tcp,
    /// WebSocket bridge.
    WebSocket,
}

/// What one read from the transport produced.
#[derive(Debug)]
pub enum Input {
    /// Bytes were appended to the read buffer (stream transports).
    Bytes,
    /// One whole frame, without its length prefix (message transports).
    Message(Bytes),
    /// A QUIC datagram (a frame without length prefix, spec §2.1).
    Datagram(Bytes),
    /// The peer broke a rule of the transport binding (spec §2): the
    /// session ends with this code.
    Violation(ErrorCode, &'static str),
    /// The peer closed, or the transport failed.
    Closed,
}

/// A session's transport, owned by its connection task.
///
/// `read` and `write` are awaited inside `select!`, so both must be
/// cancel-safe: a cancelled `read` loses no input, and a cancelled `write`
/// ends the session anyway.
pub trait Link: Send {
    /// Waits for input. Stream transports append to `buf`.
    fn read(&mut self, buf: &mut BytesMut) -> impl Future<Output = Input> + Send;

    /// Writes `frames` (complete length-delimited frames, back to back) and
    /// flushes. On return `frames` is empty.
    ///
    /// Cancel-safe: when the future is dropped before it completes, every
    /// byte already handed to the transport is gone from `frames` (or kept
    /// by the link and sent first by the next call), and the rest is still
    /// in `frames`, so a later call picks up exactly where this one
    /// stopped. The session relies on it to finish a frame it was cut off
    /// in (a kill, then the fatal Error) instead of stopping mid-frame.
    fn write(&mut self, frames: &mut BytesMut) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Closes the transport after the session ended with `code`
    /// (`ErrorCode(0)`: the peer went away).
    fn close(&mut self, code: ErrorCode) -> impl Future<Output = ()> + Send;

    /// Where datagrams to this peer go, on transports that have them.
    fn datagrams(&self) -> Option<quinn::Connection> {
        None
    }
}

/// The QUIC session stream plus the connection's datagrams.
pub struct QuicLink {
    stream: StreamLink<quinn::RecvStream, quinn::SendStream>,
    conn: quinn::Connection,
}

impl QuicLink {
    /// The session stream of `conn`.
    pub fn new(recv: quinn::RecvStream, send: quinn::SendStream, conn: quinn::Connection) -> Self {
        QuicLink { stream: StreamLink::new(recv, send), conn }
    }
}

impl Link for QuicLink {
    async fn read(&mut self, buf: &mut BytesMut) -> Input {
        // Both are cancel-safe: a datagram is only taken off quinn's queue
        // when this branch completes.
        tokio::select! {
            input = self.stream.read(buf) => input,
            datagram = self.conn.read_datagram() => match datagram {
                Ok(d) => Input::Datagram(d),
                Err(_) => Input::Closed,
            },
        }
    }

    async fn write(&mut self, frames: &mut BytesMut) -> std::io::Result<()> {
        self.stream.write(frames).await
    }

    async fn close(&mut self, code: ErrorCode) {
        self.stream.close(code).await
    }

    fn datagrams(&self) -> Option<quinn::Connection> {
        Some(self.conn.clone())
    }
}

/// A byte stream carrying length-delimited frames (spec §3).
pub struct StreamLink<R, W> {
    reader: R,
    writer: W,
}

impl<R, W> StreamLink<R, W> {
    /// Wraps the two halves of a stream.
    pub fn new(reader: R, writer: W) -> Self {
        StreamLink { reader, writer }
    }
}

impl<R, W> Link for StreamLink<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    async fn read(&mut self, buf: &mut BytesMut) -> Input {
        // The session gives back an emptied buffer (idle sessions hold
        // none); read_buf would read 64 bytes at a time into no capacity.
        if buf.capacity() == buf.len() {
            buf.reserve(READ_RESERVE);
        }
        // read_buf is cancel-safe: bytes are either in `buf` or still in
        // the socket.
        match self.reader.read_buf(buf).await {
            Ok(0) | Err(_) => Input::Closed,
            Ok(_) => Input::Bytes,
        }
    }

    async fn write(&mut self, frames: &mut BytesMut) -> std::io::Result<()> {
        // write_all_buf advances `frames` as bytes go out: cancel-safe.
        self.writer.write_all_buf(frames).await?;
        self.writer.flush().await
    }

    async fn close(&mut self, _code: ErrorCode) {
        // Bounded: a peer that stopped reading (the reason a session is cut
        // off) would otherwise hold this task, and its connection permit,
        // forever while TLS tries to flush its close_notify.
        let _ = tokio::time::timeout(LINGER, self.writer.shutdown()).await;
        // Lingering close: closing a TCP socket with unread input makes the
        // kernel send RST, and a peer's kernel that receives RST may drop
        // what it had not read yet: the final Error frame. So read and
        // discard what the peer still sends, briefly and boundedly, until
        // it closes its side.
        // On the heap, and only now: an array here would be part of every
        // connection task's state for the session's whole life (futures
        // hold what lives across an await), 4 KiB per idle connection.
        let mut sink = vec![0u8; 4096];
        let mut left = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while left > 0 {
                match self.reader.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}
