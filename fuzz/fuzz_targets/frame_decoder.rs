//! Arbitrary bytes through both decoding steps. Must not panic; a frame that
//! decodes must re-encode to bytes that decode to the same frame (and
//! re-encode identically: encoding is a function of the value), and the
//! decoder must never leave more than one frame's worth of bytes pending.
#![no_main]

use bytes::BytesMut;
use confab_protocol::{
    FrameDecoder,
    framing::{MAX_VARINT_LEN, decode_client_frame, decode_server_frame, scan_request_id},
    limits::DEFAULT_MAX_FRAME_BYTES,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // A small limit reaches the limit paths; the default is what servers use.
    for max in [64, DEFAULT_MAX_FRAME_BYTES] {
        let dec = FrameDecoder::new(max);
        let mut buf = BytesMut::from(data);
        loop {
            match dec.next_frame(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max as usize);
                    check(&frame);
                }
                Ok(None) => {
                    assert!(buf.len() < max as usize + MAX_VARINT_LEN, "more than a frame pending");
                    break;
                }
                Err(_) => break,
            }
        }
    }
    // The whole input as one unprefixed frame (WebSocket, datagrams).
    check(data);
});

fn check(bytes: &[u8]) {
    let _ = scan_request_id(bytes);
    if let Ok(frame) = decode_client_frame(bytes) {
        let encoded = frame.encode_to_vec();
        let again = decode_client_frame(&encoded).expect("a re-encoded ClientFrame decodes");
        assert_eq!(again, frame);
        assert_eq!(again.encode_to_vec(), encoded);
    }
    if let Ok(frame) = decode_server_frame(bytes) {
        let encoded = frame.encode_to_vec();
        let again = decode_server_frame(&encoded).expect("a re-encoded ServerFrame decodes");
        assert_eq!(again, frame);
        assert_eq!(again.encode_to_vec(), encoded);
    }
}
