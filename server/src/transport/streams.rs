//! A QUIC session's request streams (spec §2.1): accepted and read by the
//! session's own connection task ([`Streams::next`]), and answered on
//! their own stream.

use std::time::Duration;

use bytes::Bytes;
use confab_protocol::ErrorCode;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::oneshot;

/// One QUIC request stream's bytes (read to its FIN; `None` when longer
/// than a frame can be) and where its one answer goes.
pub struct StreamRequest {
    /// What the stream carried.
    pub bytes: Option<Vec<u8>>,
    /// Where the answer frame goes.
    pub answer: oneshot::Sender<Bytes>,
}

/// How much a request stream may carry, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// One frame of `max_frame_bytes` and its length prefix.
    pub max_bytes: usize,
    /// The handshake deadline.
    pub deadline: Duration,
}

/// The application error code that rejects a request stream.
fn stream_refused() -> quinn::VarInt {
    quinn::VarInt::from_u32(ErrorCode::PROTOCOL_VIOLATION.0)
}

/// A QUIC session's request streams (spec §2.1), as its connection task
/// sees them: the task polls [`Streams::next`] with the rest of its work.
/// Nothing is accepted before the session's Welcome
/// ([`Streams::welcome`]); when the handshake did not negotiate
/// `request-streams`, every stream is then rejected with STOP_SENDING and
/// RESET_STREAM (code 109). Otherwise each is read to its FIN (within the
/// handshake deadline, else it is reset with 109) and handed to the
/// session, whose answer is written back by a task of its own.
///
/// No task or channel of its own: a session that opens no request stream
/// (most) holds only the connection handle and the limits here. A task
/// with a channel and a watch cost every idle QUIC session about 1 KiB
/// (issue 16).
pub struct Streams {
    conn: quinn::Connection,
    limits: StreamLimits,
    /// `None` until the Welcome is out, then whether `request-streams` was
    /// negotiated.
    allowed: Option<bool>,
    /// Set once the connection is gone: nothing more to accept.
    closed: bool,
    /// Streams being read, made on the first.
    reading: Option<FuturesUnordered<BoxFuture<'static, Option<Box<StreamRequest>>>>>,
}

impl Streams {
    /// The request streams of `conn`, none accepted before [`Streams::welcome`].
    pub fn new(conn: quinn::Connection, limits: StreamLimits) -> Streams {
        Streams { conn, limits, allowed: None, closed: false, reading: None }
    }

    /// The Welcome is out: streams are accepted from now on (and read when
    /// `allowed`).
    pub fn welcome(&mut self, allowed: bool) {
        self.allowed = Some(allowed);
    }

    /// The next request read from a stream. Cancel-safe: what a call took
    /// (an accepted stream, a finished read) is dealt with before it
    /// returns or waits again.
    pub async fn next(&mut self) -> Option<Box<StreamRequest>> {
        let Some(allowed) = self.allowed else { return std::future::pending().await };
        loop {
            let reading = async {
                match self.reading.as_mut() {
                    Some(r) if !r.is_empty() => r.next().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                accepted = self.conn.accept_bi(), if !self.closed => match accepted {
                    Ok((mut send, mut recv)) if !allowed => {
                        let _ = recv.stop(stream_refused());
                        let _ = send.reset(stream_refused());
                    }
                    Ok((send, recv)) => self
                        .reading
                        .get_or_insert_with(FuturesUnordered::new)
                        .push(Box::pin(read_request(send, recv, self.limits))),
                    // The connection is gone; the session stream sees it too.
                    Err(_) => self.closed = true,
                },
                Some(read) = reading => {
                    if let Some(request) = read {
                        return Some(request);
                    }
                }
            }
        }
    }
}

/// Reads one request stream to its FIN; the request with where its answer
/// goes, or `None` when the stream failed or missed the deadline (then it
/// is reset). The answer is written by a task of its own.
async fn read_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    limits: StreamLimits,
) -> Option<Box<StreamRequest>> {
    let bytes = match tokio::time::timeout(limits.deadline, recv.read_to_end(limits.max_bytes)).await {
        Ok(Ok(b)) => Some(b),
        Ok(Err(quinn::ReadToEndError::TooLong)) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request stream read failed");
            return None;
        }
        Err(_) => {
            let _ = recv.stop(stream_refused());
            let _ = send.reset(stream_refused());
            tracing::debug!("request stream not complete within the deadline");
            return None;
        }
    };
    let (answer, answered) = oneshot::channel::<Bytes>();
    tokio::spawn(async move {
        // No answer: the session ended first.
        let Ok(frame) = answered.await else { return };
        if send.write_all(&frame).await.is_ok() {
            let _ = send.finish();
        }
    });
    Some(Box::new(StreamRequest { bytes, answer }))
}
