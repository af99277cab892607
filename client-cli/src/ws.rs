//! The WebSocket binding (spec §2.3) as a byte stream, so the session code
//! is the same on every transport: a bridge task turns each binary message
//! into a length-delimited frame and each outgoing frame into a message.

use bytes::{BufMut, BytesMut};
use confab_protocol::FrameDecoder;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::ClientError;

/// The subprotocol of Confab v1.
pub const SUBPROTOCOL: &str = "confab.v1";

/// Outgoing frames are our own session's; this only guards the bridge.
const MAX_FRAME: u32 = 64 << 20;
/// Bytes buffered between the bridge and the session.
const PIPE: usize = 64 * 1024;

/// Completes the WebSocket handshake for `url` over `stream` and returns
/// the session's side of the bridge.
pub async fn connect<S>(url: &str, stream: S) -> Result<tokio::io::DuplexStream, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut request = url.into_client_request().map_err(|e| ClientError::Connect(format!("{url}: {e}")))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    let config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME as usize));
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(|e| {
            let e = e.to_string();
            if e.contains("httparse") || e.contains("HTTP version") {
                // A TLS or QUIC port answers a plain HTTP request with a
                // TLS alert or nothing: not HTTP at all.
                ClientError::Connect(format!(
                    "{url}: the server did not answer in HTTP ({e}). This port speaks TCP+TLS (or QUIC), not \
                     WebSocket: use --transport tcp (or quic) here, or the server's HTTP port for ws"
                ))
            } else {
                ClientError::Connect(format!("WebSocket {url}: {e}"))
            }
        })?;
    let chosen = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
    if chosen != Some(SUBPROTOCOL) {
        return Err(ClientError::Connect(format!("WebSocket {url}: the server did not select {SUBPROTOCOL}")));
    }
    let (session_side, bridge_side) = tokio::io::duplex(PIPE);
    tokio::spawn(bridge(ws, bridge_side));
    Ok(session_side)
}

/// Two halves polled together, one per direction, so a large message
/// arriving never waits for a large one leaving (or the other way round):
/// done one after the other, both ends of a big exchange would block each
/// other for good.
async fn bridge<S>(ws: tokio_tungstenite::WebSocketStream<S>, pipe: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    let inbound = async move {
        let mut incoming = BytesMut::new();
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(frame)) => {
                    incoming.clear();
                    prost::encoding::encode_varint(frame.len() as u64, &mut incoming);
                    incoming.put_slice(&frame);
                    if to_session.write_all(&incoming).await.is_err() {
                        break;
                    }
                }
                // tungstenite answers pings itself, with the next write.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                // A text message breaks the binding; the session ends.
                Ok(Message::Text(_) | Message::Close(_)) | Err(_) => break,
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let decoder = FrameDecoder::new(MAX_FRAME);
        let mut outgoing = BytesMut::with_capacity(8 * 1024);
        loop {
            match from_session.read_buf(&mut outgoing).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    loop {
                        match decoder.next_frame(&mut outgoing) {
                            Ok(Some(frame)) => {
                                if sink.feed(Message::Binary(frame)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    // When either direction ends the connection is over: the other is
    // dropped with it (the session sees its pipe close).
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}
