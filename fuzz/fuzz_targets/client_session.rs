//! An arbitrary server byte stream into a `ClientSession`, in chunks, with
//! time advancing (input format: `common.rs`); along the way the client
//! sends requests and typing notices, as an application would.
//!
//! Checks: no panic; every output is a well-formed `ClientFrame` with a
//! request_id the session owns (0 only for typing); each request gets at
//! most one response, and only requests the application sent (or the
//! Hello) get any; at most one `Closed`, after which nothing happens.
#![no_main]

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use common::{Chunker, client_frames, split_input};
use confab_protocol::{
    pb::{self, client_frame::Body},
    session::{ClientConfig, ClientEvent, ClientSession},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((seed, step, stream)) = split_input(data) else { return };
    let t0 = Instant::now();
    let mut client = ClientSession::new(&ClientConfig::default(), t0);
    let mut chunker = Chunker::new(seed);

    // Request ids the application may see answered: its own and the Hello.
    let mut ours: HashSet<u64> = HashSet::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let mut sent_ids: HashSet<u64> = HashSet::new();
    let mut closed = 0usize;
    let hello = client_frames(&client.poll_transmit().expect("the Hello is queued"));
    assert!(matches!(&hello[..], [pb::ClientFrame { body: Some(Body::Hello(_)), .. }]));
    ours.insert(hello[0].request_id);
    sent_ids.insert(hello[0].request_id);

    let mut buf = BytesMut::new();
    let (mut rest, mut elapsed) = (stream, 0u64);
    while !rest.is_empty() {
        let n = chunker.next_len().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        elapsed += u64::from(step) * 100;
        let now = t0 + Duration::from_millis(elapsed);
        if chunker.flip() {
            let body = Body::Sync(pb::SyncRequest { after: elapsed, limit: 0 });
            if let Ok(id) = client.send_request(body, now) {
                assert!(ours.insert(id), "request_id {id} handed out twice");
            }
        }
        if chunker.flip() {
            let _ = client.send_typing(12, now);
        }
        buf.extend_from_slice(chunk);
        client.handle_input(&mut buf, now);
        client.handle_timeout(now);
        while let Some(event) = client.poll_event() {
            assert_eq!(closed, 0, "an event after Closed: {event:?}");
            match event {
                ClientEvent::Response { request_id, .. } => {
                    assert!(ours.contains(&request_id), "a response to {request_id}, which nobody sent");
                    assert!(answered.insert(request_id), "two responses to {request_id}");
                }
                ClientEvent::Welcome(_) => {
                    assert!(answered.insert(hello[0].request_id), "two Welcomes");
                }
                ClientEvent::Closed { .. } => closed += 1,
                ClientEvent::Event(_) => {}
            }
        }
        while let Some(bytes) = client.poll_transmit() {
            for frame in client_frames(&bytes) {
                match frame.body {
                    Some(Body::Typing(_)) => assert_eq!(frame.request_id, 0),
                    _ => {
                        assert_ne!(frame.request_id, 0, "a request with id 0: {frame:?}");
                        // Pings are the session's own; every id is fresh.
                        assert!(sent_ids.insert(frame.request_id), "request_id {} reused", frame.request_id);
                    }
                }
            }
        }
        if client.is_closed() {
            assert_eq!(closed, 1);
            break;
        }
    }
});
