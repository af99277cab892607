//! A minimal WebSocket client (RFC 6455) for the bench: the upgrade
//! request, masked binary messages out, unmasked frames in. Just what the
//! Confab binding needs (spec §2.3: one binary message per frame, no
//! varint prefix), written here so the generator adds no bridge task and
//! no extra buffers per connection.

use anyhow::bail;
use bytes::{Buf, BufMut, Bytes, BytesMut};

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

/// The upgrade request for `/v1/ws` with subprotocol `confab.v1`.
pub fn upgrade_request(host: &str) -> String {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: confab.v1\r\n\r\n"
    )
}

/// Takes the answer to [`upgrade_request`] off the front of `buf` once its
/// headers are complete (`Ok(false)`: not yet) and checks that it is a 101
/// selecting `confab.v1`. Bytes after the response stay in `buf`.
pub fn take_upgrade_response(buf: &mut BytesMut) -> anyhow::Result<bool> {
    let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            bail!("WebSocket upgrade: response headers too long");
        }
        return Ok(false);
    };
    let head = buf.split_to(i + 4);
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !text.starts_with("http/1.1 101") {
        bail!("WebSocket upgrade refused: {}", text.lines().next().unwrap_or_default());
    }
    if !text.contains("sec-websocket-protocol: confab.v1") {
        bail!("WebSocket upgrade: the server did not select confab.v1");
    }
    Ok(true)
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

    #[test]
    fn the_upgrade_response_is_taken_whole_and_checked() {
        assert!(upgrade_request("127.0.0.1:7080").contains("Sec-WebSocket-Protocol: confab.v1\r\n\r\n"));
        let ok = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: confab.v1\r\n\r\n";
        let mut buf = BytesMut::from(&ok.as_bytes()[..ok.len() - 1]);
        assert!(!take_upgrade_response(&mut buf).unwrap(), "incomplete headers: not yet");
        let mut buf = BytesMut::from(ok.as_bytes());
        buf.extend_from_slice(&[0x82, 0x00]);
        assert!(take_upgrade_response(&mut buf).unwrap());
        assert_eq!(&buf[..], &[0x82, 0x00], "bytes after the response stay");
        let mut refused = BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]);
        assert!(take_upgrade_response(&mut refused).is_err());
        let mut other = BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]);
        assert!(take_upgrade_response(&mut other).is_err(), "confab.v1 not selected");
        let mut long = BytesMut::from(&vec![b'x'; 16 * 1024 + 1][..]);
        assert!(take_upgrade_response(&mut long).is_err());
    }
}
