//! Server-side TLS over a TCP socket on rustls' unbuffered API, so that an
//! idle connection holds no TLS buffers.
//!
//! Why not tokio-rustls: a buffered rustls connection keeps a 4 KiB
//! incoming-record buffer for as long as a read is pending, which for a
//! chat session is its whole life; with 50,000 idle sessions that buffer
//! alone was about a third of their memory. Here the ciphertext buffer is
//! allocated when the socket is readable and given back as soon as it
//! holds no partial record, and so are the outgoing and plaintext buffers.
//!
//! One [`TlsStream`] serves both a TCP+TLS session (as a [`Link`], handing
//! decrypted bytes to the session's buffer without another copy when it
//! can) and HTTPS (as `AsyncRead` + `AsyncWrite`, under hyper and the
//! WebSocket bridge). Early data (0-RTT) is not enabled in the server's
//! config, so it never arrives.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use confab_protocol::ErrorCode;
use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::link::{Input, LINGER, LINGER_BYTES, Link};

/// What one read from the socket may take: a whole record of the largest
/// size (16 KiB of plaintext plus header, content type and tag) and more.
const READ_CHUNK: usize = 17 * 1024;
/// Ciphertext held while waiting for the rest of a record (or, in the
/// handshake, of a message spread over records). rustls refuses records
/// over 16 KiB + 2 KiB and handshake messages over 64 KiB, so this is only
/// reached by a peer that breaks those rules.
const MAX_INCOMING: usize = 96 * 1024;
/// Encrypted bytes `poll_write` queues before it waits for the socket.
const MAX_OUTGOING: usize = 256 * 1024;

/// A TLS connection on a TCP socket (server side).
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed: between reads at most a
    /// partial record. Empty (unallocated) while idle.
    incoming: Vec<u8>,
    /// Ciphertext not yet written; the first `sent` bytes are gone.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted and not yet taken.
    plain: BytesMut,
    /// The peer sent close_notify or closed its side of the socket.
    read_closed: bool,
    /// The peer sent close_notify (an end of stream without it may be a
    /// truncation).
    close_notified: bool,
    /// Our close_notify is queued: nothing more is processed or written.
    close_queued: bool,
    /// A TLS error ended the connection (its alert is queued). rustls'
    /// unbuffered API does not remember it: processing the same bytes again
    /// would queue a second fatal alert.
    failed: bool,
}

/// What [`TlsStream::process`] passes as the write of a `drive` call.
type NoWrite = fn(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>;

/// Completes the server side of a TLS handshake on `tcp`.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut s = TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        outgoing: Vec::new(),
        sent: 0,
        plain: BytesMut::new(),
        read_closed: false,
        close_notified: false,
        close_queued: false,
        failed: false,
    };
    poll_fn(|cx| s.poll_handshake(cx)).await?;
    Ok(s)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn encrypt_error(e: EncryptError) -> io::Error {
    io::Error::other(e.to_string())
}

impl TlsStream {
    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.process()?;
            ready!(self.poll_flush_out(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.read_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if !ready!(self.poll_fill(cx))? {
                self.read_closed = true;
            }
        }
    }

    /// Processes every complete record in `incoming`: application data goes
    /// to `plain`, handshake and alert records to `outgoing`.
    fn process(&mut self) -> io::Result<()> {
        self.drive(None::<NoWrite>)
    }

    /// Runs the connection until it waits for input: every complete record
    /// in `incoming` is processed (application data to `plain`, handshake
    /// and alert records to `outgoing`), and `write`, if given, runs once
    /// the connection can encrypt.
    fn drive<F>(&mut self, mut write: Option<F>) -> io::Result<()>
    where
        F: FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>,
    {
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the TLS connection failed"));
        }
        if self.close_queued {
            // Our close_notify is out: what the peer still sends is not read.
            self.read_closed = true;
            return match write {
                Some(_) => Err(io::ErrorKind::BrokenPipe.into()),
                None => Ok(()),
            };
        }
        loop {
            let Self { conn, incoming, outgoing, plain, read_closed, close_notified, .. } = self;
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
            let mut tls_failure = None;
            // `None`: call again; `Some`: done, with this result.
            let done = match state {
                Err(e) => {
                    tls_failure = Some(e);
                    None
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plain.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                tls_failure = Some(e);
                                break;
                            }
                        }
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => encode(&mut data, outgoing).err().map(Err),
                // Handed over: `outgoing` is written in order before
                // anything else, by whoever runs next (read, write, close).
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    *read_closed = true;
                    *close_notified = true;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    *read_closed = true;
                    Some(Ok(()))
                }
                Ok(ConnectionState::WriteTraffic(mut w)) => match write.take() {
                    Some(f) => Some(f(&mut w, outgoing)),
                    None => Some(Ok(())),
                },
                Ok(ConnectionState::BlockedHandshake) => Some(Ok(())),
                // Early data is not enabled in the server's config.
                Ok(_) => Some(Err(io::Error::other("unexpected TLS connection state"))),
            };
            consume(incoming, discard);
            if let Some(e) = tls_failure {
                return Err(self.fail(e));
            }
            match done {
                None => {}
                // Asked to write, and the connection cannot (closed, or
                // still in its handshake).
                Some(Ok(())) if write.is_some() => return Err(io::ErrorKind::NotConnected.into()),
                Some(result) => return result,
            }
        }
    }

    /// Encrypts `data` into `outgoing`.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        self.drive(Some(|w: &mut WriteTraffic<'_, ServerConnectionData>, outgoing: &mut Vec<u8>| {
            let need = match w.encrypt(data, &mut []) {
                Ok(_) => return Ok(()),
                Err(EncryptError::InsufficientSize(s)) => s.required_size,
                Err(e) => return Err(encrypt_error(e)),
            };
            fill(outgoing, need, |buf| w.encrypt(data, buf).map_err(encrypt_error))
        }))
    }

    /// Queues our close_notify in `outgoing` (once).
    fn queue_close_notify(&mut self) -> io::Result<()> {
        if self.close_queued {
            return Ok(());
        }
        let queued = self.drive(Some(|w: &mut WriteTraffic<'_, ServerConnectionData>, outgoing: &mut Vec<u8>| {
            let need = match w.queue_close_notify(&mut []) {
                Ok(_) => return Ok(()),
                Err(EncryptError::InsufficientSize(s)) => s.required_size,
                Err(e) => return Err(encrypt_error(e)),
            };
            fill(outgoing, need, |buf| w.queue_close_notify(buf).map_err(encrypt_error))
        }));
        self.close_queued = true;
        queued
    }

    /// After a TLS error: gets what rustls queued out (best effort, without
    /// waiting) and returns the error. rustls hands queued records out
    /// before it looks at input, one `EncodeTlsData` each, and the fatal
    /// alert may come after other records of the same flight (taking only
    /// the first sent `no_application_protocol` as a bare close), so this
    /// takes them until another state shows. It gives rustls no input:
    /// the bytes that failed are still in `incoming`, and a deframing error
    /// on them again would queue a second alert (a debug assertion in
    /// rustls).
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        if !self.failed {
            self.failed = true;
            for _ in 0..8 {
                let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
                let more = match state {
                    Ok(ConnectionState::EncodeTlsData(mut data)) => encode(&mut data, &mut self.outgoing).is_ok(),
                    _ => false,
                };
                if !more {
                    break;
                }
            }
            let _ = self.try_flush_out();
        }
        tls_error(e)
    }

    /// Reads more ciphertext. `false` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let room = MAX_INCOMING.saturating_sub(self.incoming.len());
        if room == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS record too large")));
        }
        loop {
            // Readiness first, the buffer after: an idle connection waits
            // here holding none.
            ready!(self.tcp.poll_read_ready(cx))?;
            let want = READ_CHUNK.min(room);
            if self.incoming.capacity() - self.incoming.len() < want / 4 {
                self.incoming.reserve_exact(want);
            }
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => return Poll::Ready(Ok(true)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes all of `outgoing`.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes what the socket takes now of `outgoing`, without waiting.
    fn try_flush_out(&mut self) -> io::Result<()> {
        while self.sent < self.outgoing.len() {
            match self.tcp.try_write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Waits until there is plaintext to take or the peer closed.
    fn poll_plain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.plain.is_empty() || self.read_closed {
                return Poll::Ready(Ok(()));
            }
            // Whatever processing produced (a KeyUpdate, session tickets)
            // goes out now if the socket takes it, else with the next write.
            let processed = self.process().and_then(|()| self.try_flush_out());
            // Plaintext that was authenticated is handed over before an
            // error; the error comes again on the next call.
            if !self.plain.is_empty() || self.read_closed {
                return Poll::Ready(Ok(()));
            }
            processed?;
            if !ready!(self.poll_fill(cx))? {
                self.read_closed = true;
            }
        }
    }
}

/// Appends `need` bytes to `outgoing` and lets `write` fill them; keeps
/// what it wrote, nothing more (and nothing on error).
fn fill(outgoing: &mut Vec<u8>, need: usize, write: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<()> {
    let start = outgoing.len();
    outgoing.resize(start + need, 0);
    match write(&mut outgoing[start..]) {
        Ok(n) => {
            outgoing.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            outgoing.truncate(start);
            Err(e)
        }
    }
}

/// Removes `n` processed bytes from the front of `incoming`; an emptied
/// buffer is given back.
fn consume(incoming: &mut Vec<u8>, n: usize) {
    if n >= incoming.len() {
        *incoming = Vec::new();
    } else if n > 0 {
        incoming.drain(..n);
    }
}

/// Encodes one handshake or alert record into `outgoing`.
fn encode(data: &mut EncodeTlsData<'_, ServerConnectionData>, outgoing: &mut Vec<u8>) -> io::Result<()> {
    let need = match data.encode(&mut []) {
        Ok(_) | Err(EncodeError::AlreadyEncoded) => return Ok(()),
        Err(EncodeError::InsufficientSize(s)) => s.required_size,
    };
    fill(outgoing, need, |buf| data.encode(buf).map_err(|e| io::Error::other(e.to_string())))
}

impl Link for TlsStream {
    async fn read(&mut self, buf: &mut BytesMut) -> Input {
        // Cancel-safe: everything read stays in `self` until handed over.
        match poll_fn(|cx| self.poll_plain(cx)).await {
            Err(_) => Input::Closed,
            Ok(()) if self.plain.is_empty() => Input::Closed,
            Ok(()) => {
                if buf.is_empty() {
                    std::mem::swap(buf, &mut self.plain);
                } else {
                    buf.extend_from_slice(&self.plain);
                }
                self.plain = BytesMut::new();
                Input::Bytes
            }
        }
    }

    async fn write(&mut self, frames: &mut BytesMut) -> io::Result<()> {
        let encrypted = self.encrypt(frames);
        frames.clear();
        encrypted?;
        poll_fn(|cx| self.poll_flush_out(cx)).await
    }

    async fn close(&mut self, _code: ErrorCode) {
        // Bounded like every close: a peer that stopped reading must not
        // hold this task (and its connection permit).
        let _ = tokio::time::timeout(LINGER, poll_fn(|cx| Pin::new(&mut *self).poll_shutdown(cx))).await;
        // Lingering close (see StreamLink::close): read and drop what the
        // peer still sends, so unread input does not make the kernel reset
        // the connection and lose the final frames. No need to decrypt it.
        let mut sink = vec![0u8; 4096];
        let mut left = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut self.tcp, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_plain(cx))?;
        if this.plain.is_empty() && !this.close_notified && !this.close_queued {
            // The socket ended without close_notify: maybe a truncation.
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        let n = this.plain.len().min(buf.remaining());
        buf.put_slice(&this.plain[..n]);
        this.plain.advance(n);
        if this.plain.is_empty() {
            this.plain = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() - this.sent >= MAX_OUTGOING {
            ready!(this.poll_flush_out(cx))?;
        }
        if this.sent > 0 && this.sent >= this.outgoing.len() / 2 {
            // What is written of a buffer that never drains is given back.
            this.outgoing.drain(..this.sent);
            this.sent = 0;
        }
        // At most MAX_OUTGOING queued: a large write is taken in parts.
        let take = buf.len().min(MAX_OUTGOING - (this.outgoing.len() - this.sent));
        this.encrypt(&buf[..take])?;
        // Out now if the socket takes it: a caller that writes and then
        // waits for an answer before flushing still gets its bytes sent.
        this.try_flush_out()?;
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.queue_close_notify() {
            tracing::debug!(error = %e, "no close_notify");
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
