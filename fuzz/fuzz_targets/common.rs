//! What the session targets share: the input format and output checks.
//!
//! A session target's input is two header bytes, then the byte stream the
//! peer sends:
//! - byte 0 seeds the chunk sizes (1 to 64 bytes) the stream is cut into;
//!   its top bit selects the message transport (each chunk is one
//!   unprefixed frame, as on WebSocket) for the server target;
//! - byte 1 is the time step: the clock advances `byte × 100 ms` before each
//!   chunk, so deadlines (10 s handshake, 50 s heartbeat) can fire.
//!
//! The seeds `gen_vectors` writes use `[0x2a, 0x01]`: small chunks and
//! 100 ms steps.

#![allow(dead_code)] // each target uses part of this

use bytes::BytesMut;
use confab_protocol::{
    FrameDecoder,
    framing::{decode_client_frame, decode_server_frame},
    pb,
};
use prost::Message;

/// The header and the stream, or `None` when the input is too short.
pub fn split_input(data: &[u8]) -> Option<(u8, u8, &[u8])> {
    match data {
        [seed, step, stream @ ..] => Some((*seed, *step, stream)),
        _ => None,
    }
}

/// Deterministic chunk sizes from a one-byte seed (xorshift32).
pub struct Chunker(u32);

impl Chunker {
    pub fn new(seed: u8) -> Self {
        Chunker(u32::from(seed).wrapping_mul(0x9e37_79b9) | 1)
    }

    /// The next chunk size, 1 to 64.
    pub fn next_len(&mut self) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        1 + (x % 64) as usize
    }

    /// Another pseudo-random bit, for choices along the way.
    pub fn flip(&mut self) -> bool {
        self.next_len().is_multiple_of(2)
    }
}

/// Complete frames in `stream` before the first framing error.
pub fn count_frames(stream: &[u8], max: u32) -> usize {
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::from(stream);
    let mut n = 0;
    while let Ok(Some(_)) = dec.next_frame(&mut buf) {
        n += 1;
    }
    n
}

/// Parses what a server session wrote; every frame must be a whole,
/// well-formed `ServerFrame`.
pub fn server_frames(bytes: &[u8]) -> Vec<pb::ServerFrame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(frame) = FrameDecoder::new(u32::MAX).next_frame(&mut buf).expect("a valid length prefix") {
        let f = decode_server_frame(&frame).expect("the server session wrote a malformed frame");
        // Encoding is a function of the value: what the session wrote is
        // exactly what re-encoding the decoded frame gives.
        assert_eq!(f.encode_to_vec(), &frame[..], "the server session wrote a non-canonical frame: {f:?}");
        out.push(f);
    }
    assert!(buf.is_empty(), "the server session wrote a partial frame");
    out
}

/// Parses what a client session wrote.
pub fn client_frames(bytes: &[u8]) -> Vec<pb::ClientFrame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(frame) = FrameDecoder::new(u32::MAX).next_frame(&mut buf).expect("a valid length prefix") {
        let f = decode_client_frame(&frame).expect("the client session wrote a malformed frame");
        assert_eq!(f.encode_to_vec(), &frame[..], "the client session wrote a non-canonical frame: {f:?}");
        out.push(f);
    }
    assert!(buf.is_empty(), "the client session wrote a partial frame");
    out
}
