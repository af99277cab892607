//! QUIC request streams in the server session machine (PROTOCOL.md §2.1):
//! the order of checks and their codes, the in-flight limit and request
//! rate they share with the session stream, heartbeat credit, and the
//! capability that must be negotiated first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use confab_protocol::{
    ErrorCode, FrameDecoder, Limits,
    framing::{decode_server_frame, frame_bytes},
    pb::{self, client_frame::Body, server_frame::Body as Reply},
    session::{Now, REQUEST_STREAMS, ServerConfig, ServerEvent, ServerSession, StreamOutcome},
};

struct Session {
    s: ServerSession,
    t0: Instant,
    elapsed: Duration,
}

impl Session {
    /// A session past Hello (offering `capabilities`) and, when `login`,
    /// authenticated.
    fn new(limits: Limits, capabilities: &[&str], login: bool) -> Session {
        let config = ServerConfig {
            limits,
            capabilities: vec![REQUEST_STREAMS.into()],
            heartbeat_interval: Duration::from_secs(10),
            ..ServerConfig::default()
        };
        let t0 = Instant::now();
        let mut s = Session { s: ServerSession::new(Arc::new(config), t0), t0, elapsed: Duration::ZERO };
        let hello = pb::Hello {
            versions: vec![1],
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        s.frame(1, Body::Hello(hello));
        if login {
            s.frame(2, Body::Resume(pb::ResumeRequest { token: "t".into() }));
            assert!(matches!(s.s.poll_event(), Some(ServerEvent::Handshaken { .. })));
            match s.s.poll_event() {
                Some(ServerEvent::Request { request_id: 2, .. }) => {}
                other => panic!("expected the resume, got {other:?}"),
            }
            let ok = pb::AuthOk { user_id: 7, device_id: 9, username: "alice".into(), ..Default::default() };
            s.s.respond(2, Reply::AuthOk(ok));
        }
        while s.s.poll_event().is_some() {}
        while s.s.poll_transmit().is_some() {}
        s
    }

    fn now(&self) -> Now {
        Now { instant: self.t0 + self.elapsed, unix_ms: 1_700_000_000_000 + self.elapsed.as_millis() as i64 }
    }

    fn frame(&mut self, id: u64, body: Body) {
        let now = self.now();
        self.s.handle_input(
            &mut BytesMut::from(&frame_bytes(&pb::ClientFrame { request_id: id, body: Some(body) })[..]),
            now,
        );
    }

    fn stream(&mut self, stream: u64, bytes: Option<&[u8]>) -> StreamOutcome {
        let now = self.now();
        self.s.handle_request_stream(stream, bytes, now)
    }
}

fn request(id: u64, body: Body) -> Bytes {
    frame_bytes(&pb::ClientFrame { request_id: id, body: Some(body) })
}

fn history() -> Body {
    Body::History(pb::HistoryRequest { conversation_id: 1, limit: 10, ..Default::default() })
}

/// The one frame of an answer.
fn answer(outcome: StreamOutcome) -> pb::ServerFrame {
    let StreamOutcome::Answer(bytes) = outcome else { panic!("expected an answer, got {outcome:?}") };
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = FrameDecoder::new(u32::MAX).next_frame(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "one frame per answer");
    decode_server_frame(&frame).unwrap()
}

/// The answer's (request_id, code), which must be a non-fatal Error.
fn error(outcome: StreamOutcome) -> (u64, ErrorCode) {
    let f = answer(outcome);
    match f.body {
        Some(Reply::Error(e)) => {
            assert!(!e.fatal, "request-stream errors are stream-level");
            (f.request_id, ErrorCode(e.code))
        }
        other => panic!("expected an Error, got {other:?}"),
    }
}

#[test]
fn an_incomplete_frame_or_trailing_bytes_is_a_protocol_violation_not_malformed() {
    let mut s = Session::new(Limits::default(), &[REQUEST_STREAMS], true);
    let whole = request(5, history());
    // FIN before the frame is complete.
    assert_eq!(error(s.stream(1, Some(&whole[..whole.len() - 1]))), (0, ErrorCode::PROTOCOL_VIOLATION));
    // A bare length prefix, nothing after it.
    assert_eq!(error(s.stream(2, Some(&[0x05]))), (0, ErrorCode::PROTOCOL_VIOLATION));
    // Bytes after the first frame.
    let mut two = whole.to_vec();
    two.extend_from_slice(&whole);
    assert_eq!(error(s.stream(3, Some(&two))), (0, ErrorCode::PROTOCOL_VIOLATION));
    // The session goes on.
    assert!(!s.s.is_closed());
    assert_eq!(s.stream(4, Some(&whole)), StreamOutcome::Admitted);
}

#[test]
fn the_checks_come_in_the_order_of_section_2_1() {
    let limits = Limits { max_frame_bytes: 64, ..Limits::default() };
    let mut s = Session::new(limits, &[REQUEST_STREAMS], false);
    // Longer than a frame can be: FRAME_TOO_LARGE, whatever else is wrong.
    assert_eq!(error(s.stream(1, None)), (0, ErrorCode::FRAME_TOO_LARGE));
    assert_eq!(error(s.stream(1, Some(&[0x7f]))), (0, ErrorCode::FRAME_TOO_LARGE), "a length prefix over the limit");
    // Unparsable (a field with a wrong wire type).
    assert_eq!(error(s.stream(2, Some(&[0x02, 0x0a, 0x01]))).1, ErrorCode::MALFORMED_FRAME);
    // No body.
    let empty = frame_bytes(&pb::ClientFrame { request_id: 3, body: None });
    assert_eq!(error(s.stream(3, Some(&empty))), (3, ErrorCode::UNKNOWN_REQUEST));
    // Not allowed on a request stream, even unauthenticated and with id 0.
    let send = Body::Send(pb::SendRequest { conversation_id: 1, client_msg_id: "x".into(), text: "hi".into() });
    assert_eq!(error(s.stream(4, Some(&request(0, send)))), (0, ErrorCode::PROTOCOL_VIOLATION));
    // Allowed, id 0.
    assert_eq!(error(s.stream(5, Some(&request(0, history())))), (0, ErrorCode::INVALID_REQUEST_ID));
    // Not authenticated: for every body, ping included.
    assert_eq!(error(s.stream(6, Some(&request(6, history())))), (6, ErrorCode::UNAUTHENTICATED));
    let ping = Body::Ping(pb::PingRequest { nonce: 1 });
    assert_eq!(error(s.stream(7, Some(&request(7, ping)))), (7, ErrorCode::UNAUTHENTICATED));
    assert!(!s.s.is_closed(), "stream errors never end the session");
}

#[test]
fn stream_requests_count_against_the_in_flight_limit() {
    let limits = Limits { max_in_flight: 2, ..Limits::default() };
    let mut s = Session::new(limits, &[REQUEST_STREAMS], true);
    assert_eq!(s.stream(1, Some(&request(1, history()))), StreamOutcome::Admitted);
    assert!(matches!(s.s.poll_event(), Some(ServerEvent::StreamRequest { stream: 1, request_id: 1, .. })));
    // One on the session stream: the limit of 2 is reached.
    s.frame(9, history());
    assert!(matches!(s.s.poll_event(), Some(ServerEvent::Request { request_id: 9, .. })));
    assert_eq!(s.s.in_flight(), 2);
    assert_eq!(error(s.stream(2, Some(&request(1, history())))), (1, ErrorCode::TOO_MANY_IN_FLIGHT));
    s.frame(10, history());
    let session_refusal = s.s.poll_transmit().expect("an Error on the session stream");
    assert!(!session_refusal.is_empty(), "the session stream's requests see the stream's in flight too");
    // Answering frees a place; the answer goes to its stream with its id.
    let page = pb::HistoryPage { conversation_id: 1, ..Default::default() };
    let f = answer(StreamOutcome::Answer(s.s.respond_stream(1, Reply::HistoryPage(page)).unwrap()));
    assert_eq!(f.request_id, 1);
    assert!(matches!(f.body, Some(Reply::HistoryPage(_))));
    assert_eq!(s.s.respond_stream(1, Reply::Done(pb::Done {})), None, "answered once");
    assert_eq!(s.stream(3, Some(&request(1, history()))), StreamOutcome::Admitted);
}

#[test]
fn stream_requests_take_from_the_request_rate() {
    // The resume took one token of the burst of 3.
    let limits = Limits { request_rate_per_sec: 1, request_burst: 3, ..Limits::default() };
    let mut s = Session::new(limits, &[REQUEST_STREAMS], true);
    assert_eq!(s.stream(1, Some(&request(1, history()))), StreamOutcome::Admitted);
    assert_eq!(s.stream(2, Some(&request(1, history()))), StreamOutcome::Admitted);
    let StreamOutcome::Answer(bytes) = s.stream(3, Some(&request(7, history()))) else { panic!("expected a refusal") };
    let f = answer(StreamOutcome::Answer(bytes));
    assert_eq!(f.request_id, 7);
    match f.body {
        Some(Reply::Error(e)) => {
            assert_eq!(ErrorCode(e.code), ErrorCode::RATE_LIMITED);
            assert!(e.retry_after_ms > 0 && !e.fatal);
        }
        other => panic!("{other:?}"),
    }
    s.elapsed += Duration::from_secs(1);
    assert_eq!(s.stream(4, Some(&request(1, history()))), StreamOutcome::Admitted);
}

#[test]
fn a_request_stream_earns_heartbeat_credit() {
    let mut s = Session::new(Limits::default(), &[REQUEST_STREAMS], true);
    // 2.5 intervals of 10 s: the deadline would pass at 25 s.
    s.elapsed = Duration::from_secs(20);
    let ping = Body::Ping(pb::PingRequest { nonce: 4 });
    let f = answer(s.stream(1, Some(&request(3, ping))));
    assert!(matches!(f.body, Some(Reply::Pong(p)) if p.nonce == 4));
    s.elapsed = Duration::from_secs(30);
    let now = s.now().instant;
    s.s.handle_timeout(now);
    assert!(!s.s.is_closed(), "the request stream at 20 s moved the deadline to 45 s");
    s.elapsed = Duration::from_secs(46);
    let now = s.now().instant;
    s.s.handle_timeout(now);
    assert!(s.s.is_closed());
}

#[test]
fn request_streams_need_the_capability() {
    let without = Session::new(Limits::default(), &[], true);
    assert!(!without.s.request_streams(), "not offered by the client: not negotiated");
    let with = Session::new(Limits::default(), &[REQUEST_STREAMS], true);
    assert!(with.s.request_streams());
    let config = Arc::new(ServerConfig { capabilities: vec![REQUEST_STREAMS.into()], ..ServerConfig::default() });
    let before_hello = ServerSession::new(config, Instant::now());
    assert!(!before_hello.request_streams(), "nothing is read from a request stream before the Welcome");
}
