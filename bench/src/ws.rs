//! A minimal WebSocket client (RFC 6455) for the bench: the upgrade
//! request, masked binary messages out, unmasked frames in. Just what the
//! Confab binding needs (spec §2.3: one binary message per frame, no
//! varint prefix), written here so the generator adds no bridge task and
//! no extra buffers per connection.

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire::Wire;

/// Opcodes.
pub const BINARY: u8 = 2;
/// Close.
pub const CLOSE: u8 = 8;
/// Ping.
pub const PING: u8 = 9;
/// Pong.
pub const PONG: u8 = 10;

/// One frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (0 = continuation).
    pub opcode: u8,
    /// Payload (unmasked).
    pub payload: Bytes,
}

/// Appends one masked client frame.
pub fn encode(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut BytesMut) {
    out.reserve(payload.len() + 14);
    out.put_u8(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.put_u8(0x80 | len as u8);
    } else if len <= 0xffff {
        out.put_u8(0x80 | 126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0x80 | 127);
        out.put_u64(len as u64);
    }
    out.put_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut, max: usize) -> anyhow::Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut header) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > max as u64 {
        bail!("WebSocket frame of {len} bytes is over the limit");
    }
    let mask = if masked {
        header += 4;
        if buf.len() < header {
            return Ok(None);
        }
        Some([buf[header - 4], buf[header - 3], buf[header - 2], buf[header - 1]])
    } else {
        None
    };
    let len = len as usize;
    if buf.len() < header + len {
        return Ok(None);
    }
    buf.advance(header);
    let mut payload = buf.split_to(len);
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some(Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload: payload.freeze() }))
}

/// A mask key (the spec wants unpredictable keys against proxy cache
/// poisoning; a bench on loopback only needs them to vary).
pub fn mask_key(counter: &mut u64) -> [u8; 4] {
    *counter = counter.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*counter >> 32) as u32).to_be_bytes()
}

/// Sends the upgrade request for `/v1/ws` with subprotocol `confab.v1`
/// and checks the 101 answer. Bytes after the response stay in `inbuf`.
pub async fn handshake(wire: &mut Wire, host: &str) -> anyhow::Result<()> {
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: confab.v1\r\n\r\n"
    );
    wire.out.extend_from_slice(request.as_bytes());
    let end = loop {
        if let Some(i) = wire.inbuf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if wire.inbuf.len() > 16 * 1024 {
            bail!("WebSocket upgrade: response headers too long");
        }
        wire.pump(None).await.context("WebSocket upgrade")?;
    };
    let head = wire.inbuf.split_to(end);
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !text.starts_with("http/1.1 101") {
        bail!("WebSocket upgrade refused: {}", text.lines().next().unwrap_or_default());
    }
    if !text.contains("sec-websocket-protocol: confab.v1") {
        bail!("WebSocket upgrade: the server did not select confab.v1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_masked_and_unmasked_at_every_length_form() {
        for len in [0usize, 5, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = BytesMut::new();
            encode(BINARY, &payload, [1, 2, 3, 4], &mut buf);
            assert!(buf[1] & 0x80 != 0, "client frames are masked");
            let whole = buf.clone();
            // Incomplete prefixes decode to nothing.
            let mut part = BytesMut::from(&whole[..whole.len() - 1]);
            assert_eq!(decode(&mut part, 1 << 20).unwrap(), None);
            let f = decode(&mut buf, 1 << 20).unwrap().unwrap();
            assert!(f.fin);
            assert_eq!(f.opcode, BINARY);
            assert_eq!(&f.payload[..], &payload[..]);
            assert!(buf.is_empty());
        }
        // An unmasked server frame.
        let mut buf = BytesMut::from(&[0x82u8, 3, b'a', b'b', b'c', 0x89, 0][..]);
        assert_eq!(decode(&mut buf, 10).unwrap().unwrap().payload, Bytes::from_static(b"abc"));
        assert_eq!(decode(&mut buf, 10).unwrap().unwrap().opcode, PING);
        let mut big = BytesMut::from(&[0x82u8, 126, 0xff, 0xff][..]);
        assert!(decode(&mut big, 1000).is_err());
    }
}
