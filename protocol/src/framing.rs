//! Framing: protobuf's length-delimited form (a varint length, then the
//! message), decoded in two steps.
//!
//! 1. [`FrameDecoder::next_frame`] checks completeness and the length limit
//!    and splits one frame's bytes off the buffer. It never allocates from
//!    the announced length before checking it, and it rejects a length as
//!    soon as the varint read so far already exceeds the limit. Errors here
//!    are fatal: the stream can no longer be split into frames.
//! 2. [`decode_client_frame`] / [`decode_server_frame`] parse those bytes.
//!    Errors here are not fatal: the length prefix kept the stream in sync,
//!    so the session can answer `MALFORMED_FRAME` and carry on.
//!
//! WebSocket carries one frame per binary message without the length prefix:
//! skip step 1 and call step 2 after checking the message length with
//! [`check_frame_len`].

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::{ErrorCode, pb};

/// The longest a varint may be (a u64 in 7-bit groups).
pub const MAX_VARINT_LEN: usize = 10;

/// A framing error: the byte stream can no longer be split into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The length prefix announces more than the limit (or is not a valid
    /// varint at all, which can only mean an absurd length).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length, or the part of it read so far (saturated).
        len: u64,
        /// The limit in force.
        max: u32,
    },
}

impl FramingError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FramingError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
        }
    }
}

/// A frame whose bytes did not parse. Not fatal to the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {detail}")]
pub struct MalformedFrame {
    /// The frame's `request_id`, when it could be read from the damaged
    /// bytes, so the error can be correlated with the request.
    pub request_id: Option<u64>,
    /// What the parser said.
    pub detail: String,
}

impl MalformedFrame {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::MALFORMED_FRAME
    }
}

/// Splits length-delimited frames off a byte buffer (step 1).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: u32,
}

/// Result of reading a varint prefix from a possibly incomplete buffer.
enum Prefix {
    /// More bytes are needed.
    Incomplete,
    /// The value and how many bytes it took.
    Complete(u64, usize),
}

impl FrameDecoder {
    /// A decoder that accepts frames up to `max_frame_bytes` long.
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// The limit in force.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Changes the limit (a client learns the server's from `Welcome`).
    pub fn set_max_frame_bytes(&mut self, max: u32) {
        self.max_frame_bytes = max;
    }

    /// Takes the next complete frame's bytes off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed (not an error). On `Ok(Some)`
    /// the frame and its prefix have been consumed from `buf`.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        let (len, prefix_len) = match self.read_prefix(buf)? {
            Prefix::Incomplete => return Ok(None),
            Prefix::Complete(len, n) => (len, n),
        };
        // `len` is at most max_frame_bytes here, so the casts are lossless
        // and the reservation below is bounded by the limit, not the peer.
        let len = len as usize;
        let total = prefix_len + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(prefix_len);
        Ok(Some(buf.split_to(len).freeze()))
    }

    fn read_prefix(&self, buf: &[u8]) -> Result<Prefix, FramingError> {
        let max = u64::from(self.max_frame_bytes);
        let mut value: u64 = 0;
        for (i, &byte) in buf.iter().enumerate() {
            if i >= MAX_VARINT_LEN {
                return Err(FramingError::TooLarge { len: u64::MAX, max: self.max_frame_bytes });
            }
            let bits = u64::from(byte & 0x7f);
            // Past 63 bits the value cannot be represented: absurdly large.
            let shifted = bits.checked_shl(7 * i as u32).filter(|s| (s >> (7 * i as u32)) == bits);
            let Some(shifted) = shifted else {
                return Err(FramingError::TooLarge { len: u64::MAX, max: self.max_frame_bytes });
            };
            value |= shifted;
            if value > max {
                return Err(FramingError::TooLarge { len: value, max: self.max_frame_bytes });
            }
            if byte & 0x80 == 0 {
                return Ok(Prefix::Complete(value, i + 1));
            }
        }
        Ok(Prefix::Incomplete)
    }
}

/// Checks an unprefixed frame's length (WebSocket messages, QUIC datagrams).
pub fn check_frame_len(len: usize, max_frame_bytes: u32) -> Result<(), FramingError> {
    if len as u64 > u64::from(max_frame_bytes) {
        return Err(FramingError::TooLarge { len: len as u64, max: max_frame_bytes });
    }
    Ok(())
}

/// Parses a client frame's bytes (step 2).
pub fn decode_client_frame(bytes: &[u8]) -> Result<pb::ClientFrame, MalformedFrame> {
    pb::ClientFrame::decode(bytes).map_err(|e| malformed(bytes, e))
}

/// Parses a server frame's bytes (step 2).
pub fn decode_server_frame(bytes: &[u8]) -> Result<pb::ServerFrame, MalformedFrame> {
    pb::ServerFrame::decode(bytes).map_err(|e| malformed(bytes, e))
}

fn malformed(bytes: &[u8], err: prost::DecodeError) -> MalformedFrame {
    MalformedFrame { request_id: scan_request_id(bytes), detail: err.to_string() }
}

/// Appends `frame` with its length prefix to `out`.
pub fn encode_frame<M: Message>(frame: &M, out: &mut BytesMut) {
    let len = frame.encoded_len();
    out.reserve(len + MAX_VARINT_LEN);
    // Cannot fail: capacity was reserved above.
    let _ = frame.encode_length_delimited(out);
}

/// Encodes `frame` with its length prefix into its own buffer, ready to be
/// shared (the same `Bytes` goes to every recipient of a fan-out).
pub fn frame_bytes<M: Message>(frame: &M) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(frame, &mut out);
    out.freeze()
}

/// Encodes the live event `ServerFrame { request_id: 0, event: InboxEvent {
/// inbox_seq, message } }`, length prefix included, around a message that
/// was encoded once. Fan-out calls this per recipient (only `inbox_seq`
/// differs), so the message itself is never re-encoded.
pub fn message_event_frame(inbox_seq: u64, encoded_message: &[u8]) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    // Field numbers from spec/confab.proto: ServerFrame.event = 40,
    // InboxEvent.inbox_seq = 1, InboxEvent.message = 10.
    let msg_len = encoded_message.len();
    let seq_len = if inbox_seq == 0 { 0 } else { key_len(1) + encoded_len_varint(inbox_seq) };
    let event_len = seq_len + key_len(10) + encoded_len_varint(msg_len as u64) + msg_len;
    let frame_len = key_len(40) + encoded_len_varint(event_len as u64) + event_len;
    let mut out = BytesMut::with_capacity(encoded_len_varint(frame_len as u64) + frame_len);
    encode_varint(frame_len as u64, &mut out);
    encode_key(40, WireType::LengthDelimited, &mut out);
    encode_varint(event_len as u64, &mut out);
    if inbox_seq != 0 {
        encode_key(1, WireType::Varint, &mut out);
        encode_varint(inbox_seq, &mut out);
    }
    encode_key(10, WireType::LengthDelimited, &mut out);
    encode_varint(msg_len as u64, &mut out);
    out.extend_from_slice(encoded_message);
    out.freeze()
}

/// Reads field 1 (`request_id`, varint) from possibly damaged frame bytes by
/// walking the top-level fields: the last complete one before the walk
/// fails or ends (PROTOCOL.md §3: "the last one if several", as protobuf's
/// last-wins rule would have decoded it); `None` when there is none.
pub fn scan_request_id(mut bytes: &[u8]) -> Option<u64> {
    let mut found = None;
    while !bytes.is_empty() {
        let Some(tag) = read_varint(&mut bytes) else { break };
        let (field, wire_type) = (tag >> 3, tag & 7);
        let rest = match wire_type {
            0 => match read_varint(&mut bytes) {
                Some(v) => {
                    if field == 1 {
                        found = Some(v);
                    }
                    Some(bytes)
                }
                None => None,
            },
            1 => bytes.get(8..),
            2 => read_varint(&mut bytes).and_then(|len| usize::try_from(len).ok()).and_then(|len| bytes.get(len..)),
            5 => bytes.get(4..),
            _ => None,
        };
        let Some(rest) = rest else { break };
        bytes = rest;
    }
    found
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::client_frame::Body;

    fn ping(id: u64) -> pb::ClientFrame {
        pb::ClientFrame { request_id: id, body: Some(Body::Ping(pb::PingRequest { nonce: 9 })) }
    }

    #[test]
    fn incomplete_is_not_an_error_at_any_split() {
        let bytes = frame_bytes(&ping(300));
        let dec = FrameDecoder::new(1024);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(dec.next_frame(&mut buf), Ok(None), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = dec.next_frame(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(decode_client_frame(&frame).unwrap(), ping(300));
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        for id in 1..=3 {
            encode_frame(&ping(id), &mut buf);
        }
        let dec = FrameDecoder::new(1024);
        for id in 1..=3 {
            let f = dec.next_frame(&mut buf).unwrap().unwrap();
            assert_eq!(decode_client_frame(&f).unwrap().request_id, id);
        }
        assert_eq!(dec.next_frame(&mut buf), Ok(None));
    }

    #[test]
    fn one_byte_over_the_limit_is_rejected() {
        let dec = FrameDecoder::new(100);
        let mut ok = BytesMut::from(&[100u8][..]);
        assert_eq!(dec.next_frame(&mut ok), Ok(None));
        let mut over = BytesMut::from(&[101u8][..]);
        assert_eq!(dec.next_frame(&mut over), Err(FramingError::TooLarge { len: 101, max: 100 }));
    }

    #[test]
    fn huge_varint_lengths_are_rejected_without_allocation() {
        let dec = FrameDecoder::new(512 * 1024);
        // 2^63 as a 10-byte varint.
        let mut buf = BytesMut::from(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..]);
        assert!(matches!(dec.next_frame(&mut buf), Err(FramingError::TooLarge { .. })));
        assert!(buf.capacity() < 64, "no allocation from the announced length");
        // Rejected as soon as the partial prefix exceeds the limit.
        let mut partial = BytesMut::from(&[0xff, 0xff, 0xff][..]);
        assert!(matches!(dec.next_frame(&mut partial), Err(FramingError::TooLarge { .. })));
        // Eleven continuation bytes: not a varint at all.
        let mut long = BytesMut::from(&[0x80u8; 11][..]);
        assert!(matches!(FrameDecoder::new(u32::MAX).next_frame(&mut long), Err(FramingError::TooLarge { .. })));
    }

    #[test]
    fn malformed_body_keeps_request_id() {
        // request_id 42, then field 10 (LEN) announcing 5 bytes but giving 1.
        let bytes = [0x08, 42, 0x52, 0x05, 0x00];
        let err = decode_client_frame(&bytes).unwrap_err();
        assert_eq!(err.request_id, Some(42));
        assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME);
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        // request_id 1, open_direct (field 20) { username (1) = 0xff }
        let bytes = [0x08, 0x01, 0xa2, 0x01, 0x03, 0x0a, 0x01, 0xff];
        let err = decode_client_frame(&bytes).unwrap_err();
        assert_eq!(err.request_id, Some(1));
    }

    #[test]
    fn message_event_frame_matches_prost() {
        use crate::pb::{inbox_event, server_frame};
        let message = pb::Message {
            conversation_id: 7,
            seq: 300,
            sender_id: 2,
            sender_username: "alice".into(),
            sent_at_ms: 1_700_000_000_000,
            client_msg_id: "m-1".into(),
            content: Some(pb::message::Content::Text("x".repeat(200))),
        };
        for inbox_seq in [0, 1, 127, 128, u64::MAX] {
            let expected = frame_bytes(&pb::ServerFrame {
                request_id: 0,
                body: Some(server_frame::Body::Event(pb::InboxEvent {
                    inbox_seq,
                    event: Some(inbox_event::Event::Message(message.clone())),
                })),
            });
            assert_eq!(message_event_frame(inbox_seq, &message.encode_to_vec()), expected, "inbox_seq {inbox_seq}");
        }
    }

    #[test]
    fn check_frame_len_bounds() {
        assert!(check_frame_len(10, 10).is_ok());
        assert!(check_frame_len(11, 10).is_err());
    }
}
