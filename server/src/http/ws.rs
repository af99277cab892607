//! The WebSocket bridge (spec §2.3): `GET /v1/ws` with subprotocol
//! `confab.v1`, one binary message per frame without the length prefix.
//! After the upgrade the session runs in [`connection::serve`], exactly as
//! on QUIC and TCP+TLS; this module only translates between messages and
//! the session's frames.
//!
//! [`connection::serve`]: crate::connection::serve

use std::future::poll_fn;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use confab_protocol::ErrorCode;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite;

use super::App;
use super::listener::PeerAddr;
use crate::link::{Input, Link, Transport};
use crate::transport::connection;

/// The one subprotocol v1 speaks.
pub const SUBPROTOCOL: &str = "confab.v1";

/// How long a close may take to go out.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// tungstenite's read buffer, allocated (and zero-filled) for the whole
/// session, so it is small: 1 KiB is 3 KiB less per idle session than
/// tungstenite's 4 KiB chunk. A larger frame still arrives whole (the
/// buffer grows to its length); it is copied out of the TLS stream's
/// plaintext 1 KiB at a time, with no extra system call.
const READ_BUFFER: usize = 1024;
/// Bytes of queued messages gathered before a write (flush writes sooner).
const WRITE_BUFFER: usize = 16 * 1024;

/// `GET /v1/ws`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(PeerAddr { addr: peer, .. }): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !ws.requested_protocols().any(|p| p.as_bytes() == SUBPROTOCOL.as_bytes()) {
        return (StatusCode::BAD_REQUEST, "offer the WebSocket subprotocol confab.v1 (Sec-WebSocket-Protocol)\n")
            .into_response();
    }
    if let Err(why) = app.origins.check(&headers) {
        tracing::debug!(%peer, why, "WebSocket origin refused");
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "shutting down\n").into_response();
    }
    let ingress = Arc::clone(&app.ingress);
    let shutdown = app.shutdown.clone();
    // The limit is enforced while the message arrives: tungstenite stops
    // buffering as soon as a message or frame exceeds it.
    let max = ingress.core.limits.max_frame_bytes as usize;
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            // Counted by the tracker, so shutdown waits for this session's
            // GoAway and drain like any other.
            let token = ingress.tracker.token();
            async move {
                let link = WsLink { socket };
                let code = connection::serve(ingress, link, peer, Transport::WebSocket, None, shutdown).await;
                tracing::debug!(%peer, %code, "WebSocket session ended");
                drop(token);
            }
        })
}

/// A WebSocket as a session transport.
pub struct WsLink {
    socket: WebSocket,
}

impl Link for WsLink {
    async fn read(&mut self, _buf: &mut BytesMut) -> Input {
        loop {
            // recv is cancel-safe: tungstenite keeps a partial message in
            // its own buffer.
            match self.socket.recv().await {
                Some(Ok(Message::Binary(frame))) => return Input::Message(frame),
                Some(Ok(Message::Text(_))) => {
                    return Input::Violation(ErrorCode::PROTOCOL_VIOLATION, "text message: Confab frames are binary");
                }
                // Control frames: tungstenite answers pings itself; they
                // are not Confab heartbeats (spec §2.3).
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return Input::Closed,
                Some(Err(e)) => return read_error(e),
            }
        }
    }

    async fn write(&mut self, frames: &mut BytesMut) -> std::io::Result<()> {
        // The session hands over length-delimited frames (encoded once for
        // every recipient); each becomes one message, sliced without a copy.
        // Cancel-safe (see Link::write): a frame leaves `frames` only once
        // the socket is ready and takes it whole (start_send is not async).
        while frames.has_remaining() {
            let mut peek = &frames[..];
            let len = prost::encoding::decode_varint(&mut peek)
                .map_err(|e| std::io::Error::other(format!("bad outgoing frame: {e}")))?;
            let prefix = frames.len() - peek.len();
            let len = usize::try_from(len).map_err(std::io::Error::other)?;
            if len > peek.len() {
                return Err(std::io::Error::other("truncated outgoing frame"));
            }
            poll_fn(|cx| self.socket.poll_ready_unpin(cx)).await.map_err(std::io::Error::other)?;
            frames.advance(prefix);
            let frame = frames.split_to(len).freeze();
            self.socket.start_send_unpin(Message::Binary(frame)).map_err(std::io::Error::other)?;
        }
        self.socket.flush().await.map_err(std::io::Error::other)
    }

    async fn close(&mut self, code: ErrorCode) {
        let (status, reason) = close_status(code);
        let frame = CloseFrame { code: status, reason: Utf8Bytes::from_static(reason) };
        // Bounded, like every close: a peer that stopped reading must not
        // hold this task (and its connection permit) forever.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
        // Lingering, as on streams: read (and drop) until the peer's Close
        // or EOF, briefly, so unread input does not make the kernel reset
        // the connection and lose the Error and Close just sent.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

fn read_error(e: axum::Error) -> Input {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => {
            Input::Violation(ErrorCode::FRAME_TOO_LARGE, "message exceeds max_frame_bytes")
        }
        Ok(e) => {
            tracing::debug!(error = %e, "WebSocket read failed");
            Input::Closed
        }
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket read failed");
            Input::Closed
        }
    }
}

/// The close status and reason after a session ended with `code`
/// (spec §2.3).
pub fn close_status(code: ErrorCode) -> (u16, &'static str) {
    let status = match code {
        ErrorCode(0) => 1000,
        ErrorCode::FRAME_TOO_LARGE => 1009,
        ErrorCode::SHUTTING_DOWN => 1001,
        ErrorCode(c) if (500..600).contains(&c) => 1011,
        _ => 1008,
    };
    (status, code.name().unwrap_or(if code.0 == 0 { "" } else { "ERROR" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_statuses_follow_the_spec() {
        assert_eq!(close_status(ErrorCode::FRAME_TOO_LARGE), (1009, "FRAME_TOO_LARGE"));
        assert_eq!(close_status(ErrorCode::SHUTTING_DOWN).0, 1001);
        assert_eq!(close_status(ErrorCode::RESYNC_REQUIRED), (1011, "RESYNC_REQUIRED"));
        assert_eq!(close_status(ErrorCode::PROTOCOL_VIOLATION), (1008, "PROTOCOL_VIOLATION"));
        assert_eq!(close_status(ErrorCode::INTERNAL).0, 1011);
        assert_eq!(close_status(ErrorCode(0)), (1000, ""));
    }
}
