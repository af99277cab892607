//! The client session machine, in memory, with time passed in: the Hello it
//! queues, Welcome, correlation of responses, heartbeats and a dead server
//! (PROTOCOL.md §4). The last test runs a client and a server session
//! against each other through memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use confab_protocol::{
    ErrorCode, FrameDecoder, Limits,
    framing::{decode_client_frame, frame_bytes},
    pb::{self, client_frame::Body, server_frame::Body as Reply},
    session::{ClientConfig, ClientEvent, ClientSession, Now, ServerConfig, ServerEvent, ServerSession},
};

/// One client session and a simulated clock.
struct Client {
    c: ClientSession,
    t0: Instant,
    elapsed: Duration,
}

impl Client {
    fn new() -> Self {
        let t0 = Instant::now();
        let config = ClientConfig { client_name: "test/1".into(), capabilities: vec!["typing".into()] };
        Client { c: ClientSession::new(&config, t0), t0, elapsed: Duration::ZERO }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn advance(&mut self, ms: u64) {
        self.elapsed += Duration::from_millis(ms);
    }

    fn timeout(&mut self) {
        let now = self.now();
        self.c.handle_timeout(now);
    }

    fn receive(&mut self, request_id: u64, body: Reply) {
        let now = self.now();
        self.c.handle_input(
            &mut BytesMut::from(&frame_bytes(&pb::ServerFrame { request_id, body: Some(body) })[..]),
            now,
        );
    }

    fn request(&mut self, body: Body) -> u64 {
        let now = self.now();
        self.c.send_request(body, now).unwrap()
    }

    /// Every frame the client queued, parsed.
    fn sent(&mut self) -> Vec<pb::ClientFrame> {
        let mut frames = Vec::new();
        while let Some(bytes) = self.c.poll_transmit() {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Some(f) = FrameDecoder::new(u32::MAX).next_frame(&mut buf).unwrap() {
                frames.push(decode_client_frame(&f).unwrap());
            }
            assert!(buf.is_empty(), "the client wrote a partial frame");
        }
        frames
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    /// Drains the Hello and answers it with `welcome`.
    fn welcome(&mut self, welcome: pb::Welcome) {
        let hello = self.sent();
        assert_eq!(hello.len(), 1);
        self.receive(hello[0].request_id, Reply::Welcome(welcome.clone()));
        assert_eq!(self.events(), vec![ClientEvent::Welcome(welcome)]);
    }
}

fn welcome() -> pb::Welcome {
    pb::Welcome {
        version: 1,
        limits: Some((&Limits::default()).into()),
        heartbeat_interval_ms: 20_000,
        server_time_ms: 1_700_000_000_000,
        server_name: "confabd/test".into(),
        ..Default::default()
    }
}

fn list() -> Body {
    Body::ListConversations(pb::ListConversationsRequest::default())
}

fn error(code: ErrorCode, fatal: bool) -> Reply {
    Reply::Error(pb::Error { code: code.0, message: "x".into(), retry_after_ms: 0, fatal })
}

fn pings(frames: &[pb::ClientFrame]) -> Vec<u64> {
    frames.iter().filter(|f| matches!(f.body, Some(Body::Ping(_)))).map(|f| f.request_id).collect()
}

#[test]
fn the_session_starts_with_a_hello() {
    let mut cl = Client::new();
    let sent = cl.sent();
    assert_eq!(
        sent,
        vec![pb::ClientFrame {
            request_id: 1,
            body: Some(Body::Hello(pb::Hello {
                versions: vec![1],
                capabilities: vec!["typing".into()],
                client_name: "test/1".into()
            }))
        }]
    );
    assert_eq!(cl.c.in_flight(), 1);
    assert!(cl.c.welcome().is_none());
    assert_eq!(cl.c.limits(), Limits::default(), "defaults before Welcome");
}

#[test]
fn welcome_sets_the_limits_and_the_heartbeat() {
    let mut cl = Client::new();
    let w = pb::Welcome {
        heartbeat_interval_ms: 5_000,
        limits: Some(pb::Limits { max_frame_bytes: 1024, max_in_flight: 8, ..Default::default() }),
        ..welcome()
    };
    cl.welcome(w.clone());
    assert_eq!(cl.c.welcome(), Some(&w));
    assert_eq!(cl.c.in_flight(), 0);
    let limits = cl.c.limits();
    assert_eq!((limits.max_frame_bytes, limits.max_in_flight), (1024, 8));
    assert_eq!(limits.max_message_chars, 100_000, "absent fields fall back to the defaults");
    assert_eq!(
        cl.c.poll_timeout(),
        Some(cl.t0 + Duration::from_millis(2500)),
        "the next ping is due after half of 5 s"
    );
    // The advertised max_frame_bytes now applies to what the server sends.
    let now = cl.now();
    cl.c.handle_input(&mut BytesMut::from(&[0x81, 0x08][..]), now); // length 1025
    assert!(matches!(&cl.events()[..], [ClientEvent::Closed { code: ErrorCode::FRAME_TOO_LARGE, .. }]));
}

#[test]
fn a_heartbeat_of_zero_means_the_default() {
    // PROTOCOL.md §4.2: "a client that reads 0 uses 20,000".
    let mut cl = Client::new();
    cl.welcome(pb::Welcome { heartbeat_interval_ms: 0, ..welcome() });
    // Next ping after half of it (§4.6).
    assert_eq!(cl.c.poll_timeout(), Some(cl.t0 + Duration::from_secs(10)));
}

#[test]
fn a_welcome_trickled_one_byte_at_a_time_arrives_when_complete() {
    let mut cl = Client::new();
    cl.sent();
    let bytes = frame_bytes(&pb::ServerFrame { request_id: 1, body: Some(Reply::Welcome(welcome())) });
    let mut buf = BytesMut::new();
    for b in bytes.iter() {
        assert!(cl.events().is_empty());
        buf.extend_from_slice(&[*b]);
        let now = cl.now();
        cl.c.handle_input(&mut buf, now);
    }
    assert_eq!(cl.events(), vec![ClientEvent::Welcome(welcome())]);
}

#[test]
fn responses_are_correlated_by_request_id_in_any_order() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let a = cl.request(list());
    let b = cl.request(Body::Sync(pb::SyncRequest { after: 5, limit: 0 }));
    assert_ne!(a, b);
    assert!(a != 0 && b != 0);
    let sent = cl.sent();
    assert_eq!(sent.iter().map(|f| f.request_id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(cl.c.in_flight(), 2);

    let page = Reply::SyncPage(pb::SyncPage { inbox_head: 5, ..Default::default() });
    cl.receive(b, page.clone());
    cl.receive(a, error(ErrorCode::INTERNAL, false));
    assert_eq!(
        cl.events(),
        vec![
            ClientEvent::Response { request_id: b, body: page },
            ClientEvent::Response { request_id: a, body: error(ErrorCode::INTERNAL, false) },
        ]
    );
    assert_eq!(cl.c.in_flight(), 0);
    assert!(!cl.c.is_closed(), "a non-fatal error does not end the session");
}

#[test]
fn responses_to_unknown_or_answered_ids_are_ignored() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let id = cl.request(list());
    cl.receive(id + 100, Reply::Done(pb::Done {}));
    assert!(cl.events().is_empty(), "nobody asked for id {}", id + 100);
    cl.receive(id, Reply::Done(pb::Done {}));
    assert_eq!(cl.events().len(), 1);
    cl.receive(id, Reply::Done(pb::Done {}));
    assert!(cl.events().is_empty(), "a second answer to {id} is dropped");
    assert!(!cl.c.is_closed());
}

#[test]
fn events_with_request_id_zero_are_passed_on() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let typing =
        Reply::Typing(pb::TypingEvent { conversation_id: 12, user_id: 2, username: "bob".into(), expires_in_ms: 6000 });
    cl.receive(0, typing.clone());
    assert_eq!(cl.events(), vec![ClientEvent::Event(typing)]);
}

#[test]
fn a_fatal_error_closes_the_session() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let id = cl.request(list());
    cl.receive(0, error(ErrorCode::RESYNC_REQUIRED, true));
    assert_eq!(cl.events(), vec![ClientEvent::Closed { code: ErrorCode::RESYNC_REQUIRED, message: "x".into() }]);
    assert!(cl.c.is_closed());
    assert_eq!(cl.c.poll_timeout(), None);
    let now = cl.now();
    assert!(cl.c.send_request(list(), now).is_err(), "a closed session sends nothing");
    // Whatever arrives afterwards is ignored.
    cl.receive(id, Reply::Done(pb::Done {}));
    assert!(cl.events().is_empty());
}

#[test]
fn a_fatal_error_answering_a_request_is_also_its_response() {
    let mut cl = Client::new();
    let hello_id = cl.sent()[0].request_id;
    cl.receive(hello_id, error(ErrorCode::UNSUPPORTED_VERSION, true));
    assert_eq!(
        cl.events(),
        vec![
            ClientEvent::Response { request_id: hello_id, body: error(ErrorCode::UNSUPPORTED_VERSION, true) },
            ClientEvent::Closed { code: ErrorCode::UNSUPPORTED_VERSION, message: "x".into() },
        ]
    );
}

#[test]
fn a_malformed_server_frame_closes_the_session() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let now = cl.now();
    cl.c.handle_input(&mut BytesMut::from(&[0x05, 0x08, 0x2a, 0x52, 0x05, 0x00][..]), now);
    assert!(matches!(&cl.events()[..], [ClientEvent::Closed { code: ErrorCode::MALFORMED_FRAME, .. }]));
}

#[test]
fn typing_is_sent_with_request_id_zero_and_is_not_a_request() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let now = cl.now();
    cl.c.send_typing(12, now).unwrap();
    assert_eq!(
        cl.sent(),
        vec![pb::ClientFrame { request_id: 0, body: Some(Body::Typing(pb::TypingNotice { conversation_id: 12 })) }]
    );
    assert_eq!(cl.c.in_flight(), 0);
    assert!(cl.c.send_request(Body::Typing(pb::TypingNotice { conversation_id: 12 }), now).is_err());
}

#[test]
fn a_quiet_client_pings_every_half_interval() {
    // §4.6: "A client that has sent nothing for half an interval sends a
    // PingRequest", so the server hears something well within each one.
    let mut cl = Client::new();
    cl.welcome(welcome());
    cl.advance(9_999);
    cl.timeout();
    assert!(cl.sent().is_empty(), "no ping before half the interval");
    cl.advance(1);
    cl.timeout();
    let sent = cl.sent();
    let ids = pings(&sent);
    assert_eq!(ids.len(), 1, "{sent:?}");
    cl.timeout();
    assert!(cl.sent().is_empty(), "one ping per quiet half interval");
    // The Pong is the machine's business, not the application's.
    cl.receive(ids[0], Reply::Pong(pb::Pong { nonce: 0, server_time_ms: 0 }));
    assert!(cl.events().is_empty());
    assert_eq!(cl.c.in_flight(), 0);
    cl.advance(10_000);
    cl.timeout();
    assert_eq!(pings(&cl.sent()).len(), 1, "the next half interval");
}

#[test]
fn sending_anything_postpones_the_ping() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    cl.advance(9_000);
    cl.receive(0, Reply::Presence(pb::Presence { user_id: 2, ..Default::default() }));
    cl.events();
    cl.request(list());
    cl.sent();
    cl.advance(9_999);
    cl.timeout();
    assert!(pings(&cl.sent()).is_empty(), "a request went out and an event came 9.999 s ago");
    cl.advance(1);
    cl.timeout();
    assert_eq!(pings(&cl.sent()).len(), 1, "quiet both ways for half the interval");
}

#[test]
fn a_client_that_only_sends_still_pings_when_it_hears_nothing() {
    // §4.6: its own frames say nothing about the way back.
    let mut cl = Client::new();
    cl.welcome(welcome());
    let mut pinged = 0;
    for _ in 0..12 {
        cl.advance(1000);
        cl.c.send_typing(7, cl.now()).unwrap();
        cl.timeout();
        pinged += pings(&cl.sent()).len();
    }
    assert_eq!(pinged, 1, "one ping for the silence, not one per timeout");
}

#[test]
fn a_silent_server_is_declared_dead_after_two_and_a_half_intervals() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    let mut pinged = 0;
    for _ in 0..49 {
        cl.advance(1000);
        cl.timeout();
        pinged += pings(&cl.sent()).len();
    }
    // Every 10 s of quiet: the first for the silence both ways, the others
    // because nothing was sent for half an interval.
    assert_eq!(pinged, 4, "pings at 10, 20, 30 and 40 s");
    assert!(cl.events().is_empty(), "alive at 49 s");
    assert_eq!(cl.c.poll_timeout(), Some(cl.t0 + Duration::from_secs(50)));
    cl.advance(1000);
    cl.timeout();
    assert!(matches!(&cl.events()[..], [ClientEvent::Closed { code: ErrorCode::HEARTBEAT_TIMEOUT, .. }]));
    assert!(cl.c.is_closed());
}

#[test]
fn anything_from_the_server_proves_it_alive() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    cl.advance(45_000);
    cl.receive(0, Reply::Presence(pb::Presence { user_id: 2, ..Default::default() }));
    cl.events();
    cl.advance(45_000);
    cl.timeout();
    assert!(!cl.c.is_closed(), "heard from 45 s ago");
}

/// A client and a server session wired through memory, with a shared clock
/// and the application played by the test.
#[test]
fn client_and_server_sessions_talk() {
    let t0 = Instant::now();
    let at = |ms: u64| Now { instant: t0 + Duration::from_millis(ms), unix_ms: 1_700_000_000_000 + ms as i64 };
    let mut client = ClientSession::new(&ClientConfig::default(), t0);
    let mut server = ServerSession::new(Arc::new(ServerConfig::default()), t0);
    let login = Body::Login(pb::LoginRequest {
        username: "alice".into(),
        password: "correct horse battery staple".into(),
        device_name: "phone".into(),
    });
    // Pipelined: Hello, login and a request before any answer (§4.2).
    let login_id = client.send_request(login, t0).unwrap();
    let list_id = client.send_request(list(), t0).unwrap();

    let mut to_server = BytesMut::new();
    let mut to_client = BytesMut::new();
    let mut client_events = Vec::new();
    for step in 0..10u64 {
        let now = at(step * 10);
        while let Some(b) = client.poll_transmit() {
            to_server.extend_from_slice(&b);
        }
        server.handle_input(&mut to_server, now);
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Request { request_id, body: Body::Login(_) } => server.respond(
                    request_id,
                    Reply::AuthOk(pb::AuthOk {
                        user_id: 17,
                        username: "alice".into(),
                        device_id: 42,
                        ..Default::default()
                    }),
                ),
                ServerEvent::Request { request_id, body: Body::ListConversations(_) } => {
                    server.respond(request_id, Reply::ConversationList(pb::ConversationList::default()))
                }
                ServerEvent::Handshaken { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(b) = server.poll_transmit() {
            to_client.extend_from_slice(&b);
        }
        client.handle_input(&mut to_client, now.instant);
        client_events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    assert!(matches!(client_events[0], ClientEvent::Welcome(_)), "{client_events:?}");
    assert!(matches!(
        &client_events[1..],
        [
            ClientEvent::Response { request_id: l, body: Reply::AuthOk(_) },
            ClientEvent::Response { request_id: c, body: Reply::ConversationList(_) },
        ] if *l == login_id && *c == list_id
    ));
    assert_eq!((client.in_flight(), server.in_flight()), (0, 0));
    assert!(!client.is_closed() && !server.is_closed());
}

#[test]
fn typing_goes_as_a_datagram_once_negotiated() {
    let mut cl = Client::new();
    cl.welcome(welcome());
    // Not negotiated: a frame on the session stream; datagrams are ignored.
    let now = cl.now();
    cl.c.send_typing(12, now).unwrap();
    assert_eq!(cl.sent().len(), 1);
    assert!(cl.c.poll_datagram().is_none());
    let event = pb::ServerFrame {
        request_id: 0,
        body: Some(Reply::Typing(pb::TypingEvent {
            conversation_id: 12,
            user_id: 2,
            username: "bob".into(),
            expires_in_ms: 6000,
        })),
    };
    let bytes = prost::Message::encode_to_vec(&event);
    cl.c.handle_datagram(&bytes, now);
    assert!(cl.events().is_empty());

    let mut cl = Client::new();
    cl.welcome(pb::Welcome { capabilities: vec!["typing-datagram".into()], ..welcome() });
    assert!(cl.c.datagrams());
    let now = cl.now();
    cl.c.send_typing(12, now).unwrap();
    assert!(cl.sent().is_empty(), "typing does not use the stream");
    let d = cl.c.poll_datagram().expect("a datagram");
    let frame = decode_client_frame(&d).unwrap();
    assert_eq!(frame.body, Some(Body::Typing(pb::TypingNotice { conversation_id: 12 })));
    cl.c.handle_datagram(&bytes, now);
    assert_eq!(cl.events(), vec![ClientEvent::Event(event.body.unwrap())]);
    // Other datagram content is dropped.
    let pong = pb::ServerFrame { request_id: 0, body: Some(Reply::Pong(pb::Pong::default())) };
    cl.c.handle_datagram(&prost::Message::encode_to_vec(&pong), now);
    cl.c.handle_datagram(&[0xff, 0x01], now);
    assert!(cl.events().is_empty());
    assert!(!cl.c.is_closed(), "a bad datagram never ends the session");
}
