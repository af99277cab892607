//! An arbitrary client byte stream into a `ServerSession`, in chunks, with
//! time advancing (input format: `common.rs`). The application answers every
//! request at once (auth requests with `AuthOk`, to reach the authenticated
//! phase; the rest with an error), so barriers release and in-flight drains.
//!
//! Checks: no panic; every output is a well-formed `ServerFrame`; no more
//! requests reach the application than frames were given; at most one
//! `Closed`, and after it nothing is written; nothing is left in flight.
#![no_main]

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use common::{Chunker, count_frames, server_frames, split_input};
use confab_protocol::{
    ErrorCode,
    pb::{self, client_frame::Body, server_frame::Body as Reply},
    session::{Now, ServerConfig, ServerEvent, ServerSession},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((seed, step, stream)) = split_input(data) else { return };
    let message_transport = seed & 0x80 != 0;
    let config = ServerConfig::default();
    let max = config.limits.max_frame_bytes;
    let t0 = Instant::now();
    let mut session = ServerSession::new(Arc::new(config), t0);
    let mut run = Run { session: &mut session, requests: 0, closed: 0 };

    let mut chunker = Chunker::new(seed);
    let mut buf = BytesMut::new();
    let (mut rest, mut elapsed, mut messages) = (stream, 0u64, 0usize);
    while !rest.is_empty() && !run.session.is_closed() {
        let n = chunker.next_len().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        elapsed += u64::from(step) * 100;
        let now = Now { instant: t0 + Duration::from_millis(elapsed), unix_ms: elapsed as i64 };
        run.session.handle_timeout(now.instant);
        if message_transport {
            messages += 1;
            run.session.handle_message(chunk, now);
            run.drain();
        } else {
            buf.extend_from_slice(chunk);
            // Answering a barrier request lets the session read on.
            loop {
                run.session.handle_input(&mut buf, now);
                if !run.drain() {
                    break;
                }
            }
        }
    }
    let given = if message_transport { messages } else { count_frames(stream, max) };
    assert!(run.requests <= given, "{} requests from {given} frames", run.requests);
    assert!(run.closed <= 1);
    assert_eq!(run.session.in_flight(), 0);
});

struct Run<'a> {
    session: &'a mut ServerSession,
    requests: usize,
    closed: usize,
}

impl Run<'_> {
    /// Answers every event and checks the output; true if a request was
    /// answered.
    fn drain(&mut self) -> bool {
        let (mut answered, mut closed_now) = (false, false);
        while let Some(event) = self.session.poll_event() {
            match event {
                ServerEvent::Request { request_id, body } => {
                    self.requests += 1;
                    answered = true;
                    match body {
                        Body::Signup(_) | Body::Login(_) | Body::Resume(_) => {
                            let ok = pb::AuthOk { user_id: 1, device_id: 2, ..Default::default() };
                            self.session.respond(request_id, Reply::AuthOk(ok));
                        }
                        Body::Logout(_) => self.session.respond(request_id, Reply::Done(pb::Done {})),
                        _ => self.session.fail(request_id, ErrorCode::INTERNAL, "fuzz", 0),
                    }
                }
                ServerEvent::Closed { .. } => {
                    assert!(!closed_now && self.closed == 0, "closed twice");
                    closed_now = true;
                }
                ServerEvent::Handshaken { .. } | ServerEvent::Notification(_) => {}
                ServerEvent::StreamRequest { .. } => panic!("a request-stream event from session-stream input"),
            }
        }
        let mut frames = Vec::new();
        while let Some(bytes) = self.session.poll_transmit() {
            frames.extend(server_frames(&bytes));
        }
        let fatal = |f: &pb::ServerFrame| matches!(&f.body, Some(Reply::Error(e)) if e.fatal);
        if closed_now {
            // The fatal Error ends the output, and it is written once.
            assert!(frames.last().is_some_and(fatal), "the last frame is the fatal Error: {frames:?}");
            assert_eq!(frames.iter().filter(|f| fatal(f)).count(), 1);
        } else if self.closed > 0 {
            assert!(frames.is_empty(), "frames after the fatal Error: {frames:?}");
        } else {
            assert!(!frames.iter().any(fatal), "a fatal Error without Closed: {frames:?}");
        }
        self.closed += usize::from(closed_now);
        answered
    }
}
