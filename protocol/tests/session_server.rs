//! The server session machine, in memory, with time passed in: handshake,
//! phases, request admission, limits, deadlines and notifications
//! (PROTOCOL.md §3, §4, §9.4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use confab_protocol::{
    ErrorCode, FrameDecoder, Limits,
    framing::{decode_server_frame, frame_bytes},
    pb::{self, client_frame::Body, server_frame::Body as Reply},
    session::{Now, Phase, ServerConfig, ServerEvent, ServerSession},
};

const UNIX_T0: i64 = 1_700_000_000_000;

/// One server session and a simulated clock.
struct Server {
    s: ServerSession,
    t0: Instant,
    elapsed: Duration,
}

impl Server {
    fn new() -> Self {
        Self::with(ServerConfig::default())
    }

    fn with(config: ServerConfig) -> Self {
        let t0 = Instant::now();
        Server { s: ServerSession::new(Arc::new(config), t0), t0, elapsed: Duration::ZERO }
    }

    fn now(&self) -> Now {
        Now { instant: self.t0 + self.elapsed, unix_ms: UNIX_T0 + self.elapsed.as_millis() as i64 }
    }

    fn advance(&mut self, ms: u64) {
        self.elapsed += Duration::from_millis(ms);
    }

    fn input(&mut self, bytes: &[u8]) {
        let now = self.now();
        self.s.handle_input(&mut BytesMut::from(bytes), now);
    }

    fn send(&mut self, request_id: u64, body: Body) {
        self.input(&frame_bytes(&pb::ClientFrame { request_id, body: Some(body) }));
    }

    fn timeout(&mut self) {
        let now = self.now().instant;
        self.s.handle_timeout(now);
    }

    /// Every frame queued for the client, parsed.
    fn out(&mut self) -> Vec<pb::ServerFrame> {
        let mut frames = Vec::new();
        while let Some(bytes) = self.s.poll_transmit() {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Some(f) = FrameDecoder::new(u32::MAX).next_frame(&mut buf).unwrap() {
                frames.push(decode_server_frame(&f).unwrap());
            }
            assert!(buf.is_empty(), "the session wrote a partial frame");
        }
        frames
    }

    /// The one frame queued, which must be an Error: (request_id, Error).
    fn one_error(&mut self) -> (u64, pb::Error) {
        let out = self.out();
        assert_eq!(out.len(), 1, "expected one frame, got {out:?}");
        match &out[0].body {
            Some(Reply::Error(e)) => (out[0].request_id, e.clone()),
            other => panic!("expected an Error, got {other:?}"),
        }
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    /// Hello → Welcome, events and output drained.
    fn handshake(&mut self) {
        self.send(1, hello(vec![1]));
        assert!(matches!(self.out()[0].body, Some(Reply::Welcome(_))));
        assert!(matches!(self.events()[..], [ServerEvent::Handshaken { version: 1, .. }]));
    }

    /// Handshake, then a login answered with AuthOk.
    fn authenticate(&mut self) {
        self.handshake();
        self.send(2, login());
        let events = self.events();
        assert_eq!(events, vec![ServerEvent::Request { request_id: 2, body: login() }]);
        self.s.respond(2, auth_ok());
        assert!(matches!(self.out()[..], [pb::ServerFrame { request_id: 2, body: Some(Reply::AuthOk(_)) }]));
        assert_eq!(self.s.phase(), Phase::Authenticated { user_id: 1001, device_id: 7 });
    }
}

fn hello(versions: Vec<u32>) -> Body {
    Body::Hello(pb::Hello { versions, capabilities: vec!["typing".into()], client_name: "test/1".into() })
}

fn login() -> Body {
    Body::Login(pb::LoginRequest {
        username: "alice".into(),
        password: "correct horse battery staple".into(),
        device_name: "phone".into(),
    })
}

fn auth_ok() -> Reply {
    Reply::AuthOk(pb::AuthOk { user_id: 1001, username: "alice".into(), device_id: 7, ..Default::default() })
}

fn ping(nonce: u64) -> Body {
    Body::Ping(pb::PingRequest { nonce })
}

fn list() -> Body {
    Body::ListConversations(pb::ListConversationsRequest::default())
}

fn typing() -> Body {
    Body::Typing(pb::TypingNotice { conversation_id: 12 })
}

fn send_text(text: &str) -> Body {
    Body::Send(pb::SendRequest { conversation_id: 12, client_msg_id: "m-1".into(), text: text.into() })
}

fn assert_error(got: (u64, pb::Error), request_id: u64, code: ErrorCode, fatal: bool) {
    assert_eq!(got.0, request_id, "request_id of {got:?}");
    assert_eq!(ErrorCode(got.1.code), code, "code of {got:?}");
    assert_eq!(got.1.fatal, fatal, "fatal flag of {got:?}");
}

fn assert_closed(srv: &mut Server, code: ErrorCode) {
    assert_eq!(srv.events(), vec![ServerEvent::Closed { code }]);
    assert!(srv.s.is_closed());
    assert_eq!(srv.s.poll_timeout(), None, "a closed session has no deadline");
    // Nothing more is read or answered.
    srv.send(99, ping(1));
    assert!(srv.out().is_empty());
    assert!(srv.events().is_empty());
}

// ----- handshake ------------------------------------------------------------

#[test]
fn hello_gets_welcome_with_the_limits() {
    let limits = Limits { max_in_flight: 32, ..Limits::default() };
    let mut srv = Server::with(ServerConfig {
        limits: limits.clone(),
        capabilities: vec!["typing".into(), "request-streams".into()],
        server_name: "confabd/test".into(),
        ..ServerConfig::default()
    });
    srv.advance(1500);
    srv.send(1, hello(vec![3, 1, 7]));
    let out = srv.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request_id, 1);
    let Some(Reply::Welcome(w)) = &out[0].body else { panic!("{out:?}") };
    assert_eq!(w.version, 1);
    assert_eq!(w.limits, Some(pb::Limits::from(&limits)));
    assert_eq!(w.heartbeat_interval_ms, 20_000);
    assert_eq!(w.server_time_ms, UNIX_T0 + 1500);
    assert_eq!(w.server_name, "confabd/test");
    // The intersection of what both sides offered.
    assert_eq!(w.capabilities, vec!["typing".to_string()]);
    assert_eq!(
        srv.events(),
        vec![ServerEvent::Handshaken { version: 1, client_name: "test/1".into(), capabilities: vec!["typing".into()] }]
    );
    assert_eq!(srv.s.phase(), Phase::Unauthenticated);
}

#[test]
fn a_first_frame_other_than_hello_is_fatal() {
    let mut srv = Server::new();
    srv.send(4, ping(1));
    assert_error(srv.one_error(), 4, ErrorCode::HANDSHAKE_REQUIRED, true);
    assert_closed(&mut srv, ErrorCode::HANDSHAKE_REQUIRED);
}

#[test]
fn unsupported_versions_are_fatal() {
    let mut srv = Server::new();
    srv.send(1, hello(vec![2, 3]));
    assert_error(srv.one_error(), 1, ErrorCode::UNSUPPORTED_VERSION, true);
    assert_closed(&mut srv, ErrorCode::UNSUPPORTED_VERSION);

    let mut empty = Server::new();
    empty.send(1, hello(vec![]));
    assert_error(empty.one_error(), 1, ErrorCode::UNSUPPORTED_VERSION, true);
}

#[test]
fn hello_with_request_id_zero_is_refused_but_not_fatal() {
    let mut srv = Server::new();
    srv.send(0, hello(vec![1]));
    assert_error(srv.one_error(), 0, ErrorCode::INVALID_REQUEST_ID, false);
    assert_eq!(srv.s.phase(), Phase::AwaitingHello);
    srv.handshake();
}

#[test]
fn a_second_hello_is_invalid_state() {
    let mut srv = Server::new();
    srv.handshake();
    srv.send(2, hello(vec![1]));
    assert_error(srv.one_error(), 2, ErrorCode::INVALID_STATE, false);
    assert_eq!(srv.s.phase(), Phase::Unauthenticated);
}

#[test]
fn a_hello_trickled_one_byte_at_a_time_completes() {
    let mut srv = Server::new();
    let bytes = frame_bytes(&pb::ClientFrame { request_id: 1, body: Some(hello(vec![1])) });
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        srv.advance(10);
        let now = srv.now();
        srv.s.handle_input(&mut buf, now);
        if i + 1 < bytes.len() {
            assert!(srv.out().is_empty(), "answered after {} of {} bytes", i + 1, bytes.len());
            assert_eq!(srv.s.phase(), Phase::AwaitingHello);
        }
    }
    assert!(buf.is_empty(), "the frame was consumed");
    assert!(matches!(srv.out()[..], [pb::ServerFrame { request_id: 1, body: Some(Reply::Welcome(_)) }]));
    assert_eq!(srv.s.phase(), Phase::Unauthenticated);
}

#[test]
fn the_handshake_deadline_closes_a_silent_or_trickling_session() {
    let mut srv = Server::new();
    assert_eq!(srv.s.poll_timeout(), Some(srv.t0 + Duration::from_secs(10)));
    // Part of a Hello does not move the deadline: it is for the whole frame.
    let bytes = frame_bytes(&pb::ClientFrame { request_id: 1, body: Some(hello(vec![1])) });
    let mut buf = BytesMut::from(&bytes[..5]);
    srv.advance(9_000);
    let now = srv.now();
    srv.s.handle_input(&mut buf, now);
    srv.advance(999);
    srv.timeout();
    assert!(srv.out().is_empty(), "closed before the deadline");
    srv.advance(1);
    srv.timeout();
    assert_error(srv.one_error(), 0, ErrorCode::HANDSHAKE_TIMEOUT, true);
    assert_closed(&mut srv, ErrorCode::HANDSHAKE_TIMEOUT);
}

// ----- phases ----------------------------------------------------------------

#[test]
fn requests_before_authentication_are_unauthenticated() {
    let mut srv = Server::new();
    srv.handshake();
    srv.send(5, list());
    assert_error(srv.one_error(), 5, ErrorCode::UNAUTHENTICATED, false);
    assert!(srv.events().is_empty(), "no request reaches the application");
    assert_eq!(srv.s.in_flight(), 0);
}

#[test]
fn auth_ok_authenticates_and_a_failed_login_does_not() {
    let mut srv = Server::new();
    srv.handshake();
    srv.send(2, login());
    assert_eq!(srv.events().len(), 1);
    srv.s.fail(2, ErrorCode::INVALID_CREDENTIALS, "no", 0);
    assert_error(srv.one_error(), 2, ErrorCode::INVALID_CREDENTIALS, false);
    assert_eq!(srv.s.phase(), Phase::Unauthenticated);

    srv.send(3, login());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 3, body: login() }]);
    srv.s.respond(3, auth_ok());
    assert_eq!(srv.s.phase(), Phase::Authenticated { user_id: 1001, device_id: 7 });
    srv.send(4, list());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 4, body: list() }]);
}

#[test]
fn login_while_authenticated_is_invalid_state() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(3, login());
    assert_error(srv.one_error(), 3, ErrorCode::INVALID_STATE, false);
    assert!(srv.events().is_empty());
}

#[test]
fn logout_answered_with_done_returns_to_unauthenticated() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(3, Body::Logout(pb::LogoutRequest {}));
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 3, body: Body::Logout(pb::LogoutRequest {}) }]);
    srv.s.respond(3, Reply::Done(pb::Done {}));
    assert!(matches!(srv.out()[..], [pb::ServerFrame { request_id: 3, body: Some(Reply::Done(_)) }]));
    assert_eq!(srv.s.phase(), Phase::Unauthenticated);
    srv.send(4, list());
    assert_error(srv.one_error(), 4, ErrorCode::UNAUTHENTICATED, false);
}

#[test]
fn frames_behind_a_login_wait_for_its_answer() {
    // PROTOCOL.md §4.4: a pipelined request after a login is checked
    // against the state the login produced.
    let mut srv = Server::new();
    srv.handshake();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&frame_bytes(&pb::ClientFrame { request_id: 2, body: Some(login()) }));
    buf.extend_from_slice(&frame_bytes(&pb::ClientFrame { request_id: 3, body: Some(list()) }));
    let now = srv.now();
    srv.s.handle_input(&mut buf, now);
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 2, body: login() }]);
    assert!(!srv.s.wants_input());
    assert!(!buf.is_empty(), "the list request was not read");
    srv.s.respond(2, auth_ok());
    assert!(srv.s.wants_input());
    srv.s.handle_input(&mut buf, now);
    assert!(buf.is_empty());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 3, body: list() }]);
}

// ----- request ids and limits -----------------------------------------------

#[test]
fn a_request_id_in_flight_cannot_be_reused_until_answered() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(5, list());
    assert_eq!(srv.events().len(), 1);
    srv.send(5, list());
    assert_error(srv.one_error(), 5, ErrorCode::INVALID_REQUEST_ID, false);
    assert!(srv.events().is_empty());
    assert_eq!(srv.s.in_flight(), 1);
    srv.s.respond(5, Reply::ConversationList(pb::ConversationList::default()));
    srv.out();
    srv.send(5, list());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 5, body: list() }]);
}

#[test]
fn request_id_zero_is_refused() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(0, list());
    assert_error(srv.one_error(), 0, ErrorCode::INVALID_REQUEST_ID, false);
    assert!(srv.events().is_empty());
}

#[test]
fn past_max_in_flight_requests_are_refused() {
    let limits = Limits { max_in_flight: 4, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.authenticate();
    for id in 10..14 {
        srv.send(id, list());
    }
    assert_eq!(srv.events().len(), 4);
    assert_eq!(srv.s.in_flight(), 4);
    srv.send(14, list());
    assert_error(srv.one_error(), 14, ErrorCode::TOO_MANY_IN_FLIGHT, false);
    assert_eq!(srv.s.in_flight(), 4);
    srv.s.fail(10, ErrorCode::INTERNAL, "x", 0);
    srv.out();
    srv.send(14, list());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 14, body: list() }]);
}

#[test]
fn the_request_bucket_rate_limits_with_retry_advice() {
    let limits = Limits { request_rate_per_sec: 10, request_burst: 3, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.handshake();
    for id in 2..5 {
        srv.send(id, ping(id));
        assert!(matches!(srv.out()[..], [pb::ServerFrame { body: Some(Reply::Pong(_)), .. }]), "ping {id}");
    }
    srv.send(5, ping(5));
    let (id, err) = srv.one_error();
    assert_error((id, err.clone()), 5, ErrorCode::RATE_LIMITED, false);
    assert!(err.retry_after_ms > 0 && err.retry_after_ms <= 100, "retry_after_ms {}", err.retry_after_ms);
    srv.advance(err.retry_after_ms);
    srv.send(6, ping(6));
    assert!(matches!(srv.out()[..], [pb::ServerFrame { request_id: 6, body: Some(Reply::Pong(_)) }]));
}

#[test]
fn sends_have_their_own_bucket() {
    let limits = Limits { send_rate_per_sec: 1, send_burst: 2, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.authenticate();
    srv.send(10, send_text("a"));
    srv.send(11, send_text("b"));
    assert_eq!(srv.events().len(), 2);
    srv.send(12, send_text("c"));
    let (id, err) = srv.one_error();
    assert_error((id, err.clone()), 12, ErrorCode::RATE_LIMITED, false);
    assert!(err.retry_after_ms > 0);
    // Other requests are not held back by the send bucket.
    srv.send(13, list());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 13, body: list() }]);
}

#[test]
fn a_send_refused_by_the_send_bucket_takes_no_request_token() {
    // PROTOCOL.md §4.7: "A rejected request takes no token."
    let limits =
        Limits { request_rate_per_sec: 1, request_burst: 3, send_rate_per_sec: 1, send_burst: 1, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.authenticate(); // the login takes one request token: 2 left
    srv.send(10, send_text("a")); // 1 left, send bucket empty
    assert_eq!(srv.events().len(), 1);
    srv.send(11, send_text("b"));
    assert_error(srv.one_error(), 11, ErrorCode::RATE_LIMITED, false);
    srv.send(12, list());
    assert_eq!(srv.events(), vec![ServerEvent::Request { request_id: 12, body: list() }], "the last request token");
    srv.send(13, list());
    assert_error(srv.one_error(), 13, ErrorCode::RATE_LIMITED, false);
}

#[test]
fn persistent_rate_limit_abuse_ends_the_session() {
    let limits = Limits { request_rate_per_sec: 1, request_burst: 1, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.handshake();
    srv.send(2, ping(0));
    assert!(matches!(srv.out()[..], [pb::ServerFrame { body: Some(Reply::Pong(_)), .. }]));
    // 64 rejections in a row are answered; the 65th ends the session.
    for id in 100..164 {
        srv.send(id, ping(0));
        assert_error(srv.one_error(), id, ErrorCode::RATE_LIMITED, false);
    }
    assert!(!srv.s.is_closed());
    srv.send(164, ping(0));
    assert_error(srv.one_error(), 0, ErrorCode::RATE_LIMITED, true);
    assert_closed(&mut srv, ErrorCode::RATE_LIMITED);
}

#[test]
fn an_accepted_request_resets_the_abuse_count() {
    let limits = Limits { request_rate_per_sec: 1, request_burst: 1, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.handshake();
    for round in 0..3u64 {
        srv.advance(1000);
        srv.send(2, ping(round));
        assert!(matches!(srv.out()[..], [pb::ServerFrame { body: Some(Reply::Pong(_)), .. }]));
        for id in 100..150 {
            srv.send(id, ping(0));
            assert_error(srv.one_error(), id, ErrorCode::RATE_LIMITED, false);
        }
    }
    assert!(!srv.s.is_closed(), "150 rejections, but never 65 in a row");
}

// ----- malformed frames -------------------------------------------------------

/// request_id 42, then a hello field announcing 5 bytes but holding 1.
const MALFORMED: [u8; 6] = [0x05, 0x08, 0x2a, 0x52, 0x05, 0x00];

#[test]
fn malformed_frames_are_answered_with_the_recovered_request_id() {
    let mut srv = Server::new();
    srv.handshake();
    srv.input(&MALFORMED);
    assert_error(srv.one_error(), 42, ErrorCode::MALFORMED_FRAME, false);
    assert!(srv.events().is_empty());
}

#[test]
fn eight_malformed_frames_in_a_row_end_the_session() {
    let mut srv = Server::new();
    srv.handshake();
    for _ in 0..7 {
        srv.input(&MALFORMED);
        assert_error(srv.one_error(), 42, ErrorCode::MALFORMED_FRAME, false);
    }
    srv.input(&MALFORMED);
    assert_error(srv.one_error(), 0, ErrorCode::PROTOCOL_VIOLATION, true);
    assert_closed(&mut srv, ErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn a_well_formed_frame_resets_the_malformed_count() {
    let mut srv = Server::new();
    srv.handshake();
    for round in 0..3 {
        for _ in 0..7 {
            srv.input(&MALFORMED);
            assert_error(srv.one_error(), 42, ErrorCode::MALFORMED_FRAME, false);
        }
        srv.send(100 + round, ping(0));
        assert!(matches!(srv.out()[..], [pb::ServerFrame { body: Some(Reply::Pong(_)), .. }]));
    }
    assert!(!srv.s.is_closed());
}

#[test]
fn a_frame_over_the_limit_is_fatal() {
    let mut srv = Server::new();
    srv.handshake();
    // Length 524,289: one byte over the default limit.
    srv.input(&[0x81, 0x80, 0x20]);
    assert_error(srv.one_error(), 0, ErrorCode::FRAME_TOO_LARGE, true);
    assert_closed(&mut srv, ErrorCode::FRAME_TOO_LARGE);
}

// ----- liveness ---------------------------------------------------------------

#[test]
fn ping_is_answered_by_the_machine() {
    let mut srv = Server::new();
    srv.handshake();
    srv.advance(2500);
    srv.send(7, ping(0xdead_beef));
    let out = srv.out();
    assert_eq!(
        out,
        vec![pb::ServerFrame {
            request_id: 7,
            body: Some(Reply::Pong(pb::Pong { nonce: 0xdead_beef, server_time_ms: UNIX_T0 + 2500 }))
        }]
    );
    assert!(srv.events().is_empty(), "the application never sees pings");
    assert_eq!(srv.s.in_flight(), 0);
}

#[test]
fn silence_for_two_and_a_half_heartbeats_ends_the_session() {
    let mut srv = Server::new();
    srv.authenticate();
    // Any frame counts as a sign of life, a malformed one included.
    srv.advance(40_000);
    srv.input(&MALFORMED);
    srv.out();
    let heard = srv.now().instant;
    assert_eq!(srv.s.poll_timeout(), Some(heard + Duration::from_millis(50_000)));
    srv.advance(49_999);
    srv.timeout();
    assert!(srv.out().is_empty());
    srv.advance(1);
    srv.timeout();
    assert_error(srv.one_error(), 0, ErrorCode::HEARTBEAT_TIMEOUT, true);
    assert_closed(&mut srv, ErrorCode::HEARTBEAT_TIMEOUT);
}

#[test]
fn an_unauthenticated_session_ends_at_the_auth_deadline() {
    let mut srv = Server::new();
    srv.handshake();
    // Pings keep the session alive for heartbeats, not for authentication.
    srv.advance(15_000);
    srv.send(3, Body::Ping(pb::PingRequest { nonce: 1 }));
    srv.out();
    assert_eq!(srv.s.poll_timeout(), Some(srv.t0 + Duration::from_millis(30_000)));
    srv.advance(14_999);
    srv.timeout();
    assert!(srv.out().is_empty());
    srv.advance(1);
    srv.timeout();
    assert_error(srv.one_error(), 0, ErrorCode::AUTH_TIMEOUT, true);
    assert_closed(&mut srv, ErrorCode::AUTH_TIMEOUT);
}

#[test]
fn a_login_in_flight_at_the_auth_deadline_decides() {
    let mut srv = Server::new();
    srv.handshake();
    srv.advance(29_000);
    srv.send(2, login());
    srv.events();
    srv.advance(5_000);
    // Past the deadline, but the login's answer is pending: no busy loop
    // on an expired deadline, no close.
    assert!(srv.s.poll_timeout().unwrap() > srv.now().instant);
    srv.timeout();
    assert!(srv.out().is_empty());
    srv.s.respond(2, auth_ok());
    assert!(matches!(srv.out()[..], [pb::ServerFrame { request_id: 2, body: Some(Reply::AuthOk(_)) }]));
    srv.advance(60_000);
    srv.send(4, Body::Ping(pb::PingRequest { nonce: 1 }));
    assert!(
        matches!(srv.out()[..], [pb::ServerFrame { body: Some(Reply::Pong(_)), .. }]),
        "authenticated: no deadline"
    );

    // A failed login after the deadline ends the session at once.
    let mut srv = Server::new();
    srv.handshake();
    srv.advance(29_000);
    srv.send(2, login());
    srv.events();
    srv.advance(5_000);
    srv.s.fail(2, ErrorCode::INVALID_CREDENTIALS, "no", 0);
    srv.out();
    srv.timeout();
    assert_error(srv.one_error(), 0, ErrorCode::AUTH_TIMEOUT, true);
}

#[test]
fn logout_restarts_the_auth_deadline() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.advance(100_000);
    srv.send(5, Body::Logout(pb::LogoutRequest {}));
    srv.events();
    srv.s.respond(5, Reply::Done(pb::Done {}));
    srv.out();
    assert_eq!(srv.s.phase(), Phase::Unauthenticated);
    assert_eq!(srv.s.poll_timeout(), Some(srv.now().instant + Duration::from_millis(30_000)));
}

// ----- typing -----------------------------------------------------------------

#[test]
fn typing_is_a_notification_when_authenticated() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(0, typing());
    assert_eq!(srv.events(), vec![ServerEvent::Notification(typing())]);
    assert!(srv.out().is_empty(), "no response to a notification");
    assert_eq!(srv.s.in_flight(), 0);
}

#[test]
fn typing_is_dropped_silently_when_unauthenticated_invalid_or_too_fast() {
    let mut srv = Server::new();
    srv.handshake();
    srv.send(0, typing());
    assert!(srv.events().is_empty() && srv.out().is_empty(), "unauthenticated");

    let mut srv = Server::with(ServerConfig { typing_rate_per_sec: 1, ..ServerConfig::default() });
    srv.authenticate();
    srv.send(0, Body::Typing(pb::TypingNotice { conversation_id: 0 }));
    assert!(srv.events().is_empty() && srv.out().is_empty(), "conversation 0");
    // The typing bucket holds a burst of 3; the 4th at once is dropped.
    for _ in 0..4 {
        srv.send(0, typing());
    }
    assert_eq!(srv.events().len(), 3);
    assert!(srv.out().is_empty(), "dropped notices get no error");
    srv.advance(1000);
    srv.send(0, typing());
    assert_eq!(srv.events(), vec![ServerEvent::Notification(typing())]);
}

#[test]
fn typing_with_a_request_id_gets_no_response() {
    // PROTOCOL.md §9.4: "a typing frame with a non-zero request_id is
    // processed the same way and that id is not in flight".
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(9, typing());
    assert!(srv.out().is_empty(), "typing never gets a response");
    assert_eq!(srv.events(), vec![ServerEvent::Notification(typing())]);
    assert_eq!(srv.s.in_flight(), 0);
}

#[test]
fn typing_does_not_take_request_tokens() {
    let limits = Limits { request_rate_per_sec: 1, request_burst: 1, ..Limits::default() };
    let mut srv = Server::with(ServerConfig { limits, ..ServerConfig::default() });
    srv.authenticate(); // the login took the only token
    srv.advance(1000);
    srv.send(0, typing());
    srv.send(3, list());
    assert_eq!(
        srv.events(),
        vec![ServerEvent::Notification(typing()), ServerEvent::Request { request_id: 3, body: list() }]
    );
}

// ----- validation and shutdown ------------------------------------------------

#[test]
fn invalid_requests_get_their_codes_and_are_not_admitted() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(3, send_text(""));
    assert_error(srv.one_error(), 3, ErrorCode::EMPTY_MESSAGE, false);
    srv.send(4, send_text(&"x".repeat(100_001)));
    assert_error(srv.one_error(), 4, ErrorCode::MESSAGE_TOO_LONG, false);
    srv.send(
        5,
        Body::History(pb::HistoryRequest { conversation_id: 1, before_seq: 9, after_seq: 2, ..Default::default() }),
    );
    assert_error(srv.one_error(), 5, ErrorCode::INVALID_ARGUMENT, false);
    assert!(srv.events().is_empty());
    assert_eq!(srv.s.in_flight(), 0);
}

#[test]
fn go_away_then_close() {
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(3, list());
    srv.events();
    srv.s.go_away(ErrorCode::SHUTTING_DOWN, "restart", 5000);
    let out = srv.out();
    let Some(Reply::GoAway(g)) = &out[0].body else { panic!("{out:?}") };
    assert_eq!((out[0].request_id, g.code, g.reconnect_after_ms), (0, 502, 5000));
    srv.s.fail(3, ErrorCode::SHUTTING_DOWN, "draining", 0);
    assert_error(srv.one_error(), 3, ErrorCode::SHUTTING_DOWN, false);
    srv.s.close(ErrorCode::SHUTTING_DOWN, "bye");
    assert_error(srv.one_error(), 0, ErrorCode::SHUTTING_DOWN, true);
    assert_closed(&mut srv, ErrorCode::SHUTTING_DOWN);
}

#[test]
fn nothing_follows_the_fatal_error() {
    // PROTOCOL.md §4.1: requests still in flight when a session closes get
    // no response; the fatal Error is the last frame.
    let mut srv = Server::new();
    srv.authenticate();
    srv.send(3, list());
    srv.send(4, list());
    assert_eq!(srv.events().len(), 2);
    srv.input(&[0x81, 0x80, 0x20]); // a frame over the limit
    srv.s.respond(3, Reply::ConversationList(pb::ConversationList::default()));
    srv.s.fail(4, ErrorCode::INTERNAL, "late", 0);
    srv.s.go_away(ErrorCode::SHUTTING_DOWN, "late", 0);
    assert_error(srv.one_error(), 0, ErrorCode::FRAME_TOO_LARGE, true);
    assert_closed(&mut srv, ErrorCode::FRAME_TOO_LARGE);
}

// ----- datagrams ----------------------------------------------------------------

fn datagram(body: Body) -> Vec<u8> {
    prost::Message::encode_to_vec(&pb::ClientFrame { request_id: 0, body: Some(body) })
}

#[test]
fn typing_datagrams_need_the_capability_and_authentication() {
    let quic = || ServerConfig {
        capabilities: vec![confab_protocol::session::TYPING_DATAGRAM.into()],
        ..ServerConfig::default()
    };
    // Not offered by the client: dropped.
    let mut srv = Server::with(quic());
    srv.authenticate();
    assert!(!srv.s.datagrams());
    let now = srv.now();
    srv.s.handle_datagram(&datagram(typing()), now);
    assert!(srv.events().is_empty());

    // Offered and negotiated, but before authentication: dropped.
    let mut srv = Server::with(quic());
    srv.send(
        1,
        Body::Hello(pb::Hello {
            versions: vec![1],
            capabilities: vec!["typing-datagram".into()],
            ..Default::default()
        }),
    );
    let welcome = srv.out();
    assert!(matches!(&welcome[0].body, Some(Reply::Welcome(w)) if w.capabilities == ["typing-datagram"]));
    srv.events();
    let now = srv.now();
    srv.s.handle_datagram(&datagram(typing()), now);
    assert!(srv.events().is_empty());
    srv.send(2, login());
    srv.events();
    srv.s.respond(2, auth_ok());
    srv.out();
    assert!(srv.s.datagrams());

    // Authenticated: a typing datagram is a notification, and a sign of life.
    srv.advance(40_000);
    let now = srv.now();
    srv.s.handle_datagram(&datagram(typing()), now);
    assert_eq!(srv.events(), vec![ServerEvent::Notification(typing())]);
    assert_eq!(srv.s.poll_timeout(), Some(now.instant + Duration::from_millis(50_000)));
    // Anything else in a datagram is dropped without an answer.
    let now = srv.now();
    srv.s.handle_datagram(&datagram(Body::Ping(pb::PingRequest { nonce: 1 })), now);
    srv.s.handle_datagram(&[0xff, 0xff, 0xff], now);
    let with_id = prost::Message::encode_to_vec(&pb::ClientFrame { request_id: 9, body: Some(typing()) });
    srv.s.handle_datagram(&with_id, now);
    assert!(srv.events().is_empty());
    assert!(srv.out().is_empty());
    // The typing rate limit applies to datagrams too.
    let mut passed = 0;
    for _ in 0..10 {
        srv.s.handle_datagram(&datagram(typing()), now);
        passed += srv.events().len();
    }
    assert!(passed < 10, "typing datagrams are rate-limited");
}

#[test]
fn a_flood_of_refused_frames_ends_the_session() {
    let mut srv = Server::new();
    srv.authenticate();
    // Body-less frames (2 bytes each) earn an Error apiece, 64 times; an
    // admitted request in between starts the count again.
    let empty = frame_bytes(&pb::ClientFrame { request_id: 5, body: None });
    for _ in 0..64 {
        srv.input(&empty);
    }
    assert_eq!(srv.out().len(), 64);
    srv.send(6, Body::Ping(pb::PingRequest { nonce: 1 }));
    srv.out();
    for _ in 0..64 {
        srv.send(0, list());
    }
    assert_eq!(srv.out().len(), 64, "request_id 0 refusals: still answered");
    assert!(!srv.s.is_closed());
    srv.input(&empty);
    assert_error(srv.one_error(), 0, ErrorCode::PROTOCOL_VIOLATION, true);
    assert_closed(&mut srv, ErrorCode::PROTOCOL_VIOLATION);
}
