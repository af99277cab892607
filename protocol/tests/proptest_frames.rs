//! Property tests for framing and the session machines: arbitrary frames
//! round-trip through encode → `FrameDecoder` → decode however the bytes are
//! split; arbitrary bytes never panic the decoder, never make it hold more
//! than a frame, and never panic a session, whose every output parses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use confab_protocol::{
    ErrorCode, FrameDecoder,
    framing::{MAX_VARINT_LEN, decode_client_frame, decode_server_frame, frame_bytes},
    pb::{self, client_frame::Body, server_frame::Body as Reply},
    session::{ClientConfig, ClientEvent, ClientSession, Now, ServerConfig, ServerEvent, ServerSession},
};
use proptest::{collection::vec, option, prelude::*};

// ----- strategies ------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, controls and astral characters included.
    any::<String>().prop_map(|s| s.chars().take(24).collect())
}

fn names() -> impl Strategy<Value = Vec<String>> {
    vec("[a-z0-9_.-]{0,12}", 0..5)
}

fn client_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (vec(any::<u32>(), 0..4), vec(text(), 0..3), text()).prop_map(|(versions, capabilities, client_name)| {
            Body::Hello(pb::Hello { versions, capabilities, client_name })
        }),
        (text(), text(), text()).prop_map(|(username, password, device_name)| Body::Login(pb::LoginRequest {
            username,
            password,
            device_name
        })),
        (text(), text(), text()).prop_map(|(username, password, device_name)| Body::Signup(pb::SignupRequest {
            username,
            password,
            device_name
        })),
        text().prop_map(|token| Body::Resume(pb::ResumeRequest { token })),
        (any::<u64>(), text(), text()).prop_map(|(conversation_id, client_msg_id, text)| Body::Send(pb::SendRequest {
            conversation_id,
            client_msg_id,
            text
        })),
        (any::<u64>(), any::<u32>()).prop_map(|(after, limit)| Body::Sync(pb::SyncRequest { after, limit })),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>()).prop_map(
            |(conversation_id, before_seq, after_seq, limit, oldest_first)| Body::History(pb::HistoryRequest {
                conversation_id,
                before_seq,
                after_seq,
                limit,
                oldest_first
            })
        ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(conversation_id, seq)| Body::MarkRead(pb::MarkReadRequest { conversation_id, seq })),
        names().prop_map(|usernames| Body::SubscribePresence(pb::SubscribePresenceRequest { usernames })),
        (text(), names()).prop_map(|(title, usernames)| Body::CreateGroup(pb::CreateGroupRequest { title, usernames })),
        any::<i32>().prop_map(|status| Body::SetStatus(pb::SetStatusRequest { status })),
        any::<u64>().prop_map(|conversation_id| Body::Typing(pb::TypingNotice { conversation_id })),
        (text(), vec(any::<u8>(), 0..70), vec(any::<u8>(), 0..20)).prop_map(|(endpoint, p256dh, auth)| {
            Body::RegisterPush(pb::RegisterPushRequest {
                target: Some(pb::register_push_request::Target::WebPush(pb::WebPushTarget {
                    endpoint,
                    p256dh: p256dh.into(),
                    auth: auth.into(),
                })),
            })
        }),
        any::<u64>().prop_map(|nonce| Body::Ping(pb::PingRequest { nonce })),
        Just(Body::Logout(pb::LogoutRequest {})),
    ]
}

fn client_frame() -> impl Strategy<Value = pb::ClientFrame> {
    (any::<u64>(), option::weighted(0.95, client_body()))
        .prop_map(|(request_id, body)| pb::ClientFrame { request_id, body })
}

fn message() -> impl Strategy<Value = pb::Message> {
    (any::<u64>(), any::<u64>(), any::<u64>(), text(), any::<i64>(), text(), text(), any::<bool>()).prop_map(
        |(conversation_id, seq, sender_id, sender_username, sent_at_ms, client_msg_id, text, membership)| {
            let content = if membership {
                pb::message::Content::Membership(pb::MembershipChange {
                    action: (seq % 7) as i32,
                    users: vec![pb::UserRef { user_id: sender_id, username: sender_username.clone() }],
                    title: text,
                    role: (seq % 4) as i32,
                })
            } else {
                pb::message::Content::Text(text)
            };
            pb::Message {
                conversation_id,
                seq,
                sender_id,
                sender_username,
                sent_at_ms,
                client_msg_id,
                content: Some(content),
            }
        },
    )
}

fn limits() -> impl Strategy<Value = pb::Limits> {
    vec(any::<u32>(), 13).prop_map(|v| pb::Limits {
        max_frame_bytes: v[0],
        max_message_chars: v[1],
        max_group_members: v[2],
        max_page_size: v[3],
        max_in_flight: v[4],
        send_rate_per_sec: v[5],
        send_burst: v[6],
        request_rate_per_sec: v[7],
        request_burst: v[8],
        max_presence_subscriptions: v[9],
        max_list_items: v[10],
        max_devices: v[11],
        max_blocked: v[12],
    })
}

fn server_body() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (message(), any::<bool>()).prop_map(|(m, duplicate)| Reply::Sent(pb::Sent { message: Some(m), duplicate })),
        (any::<u64>(), message()).prop_map(|(inbox_seq, m)| Reply::Event(pb::InboxEvent {
            inbox_seq,
            event: Some(pb::inbox_event::Event::Message(m))
        })),
        (any::<u32>(), text(), any::<u64>(), any::<bool>()).prop_map(|(code, message, retry_after_ms, fatal)| {
            Reply::Error(pb::Error { code, message, retry_after_ms, fatal })
        }),
        (any::<u32>(), vec(text(), 0..3), option::of(limits()), any::<u32>(), any::<i64>(), text(), text()).prop_map(
            |(version, capabilities, limits, heartbeat_interval_ms, server_time_ms, server_name, vapid_public_key)| {
                Reply::Welcome(pb::Welcome {
                    version,
                    capabilities,
                    limits,
                    heartbeat_interval_ms,
                    server_time_ms,
                    server_name,
                    vapid_public_key,
                })
            }
        ),
        (any::<u64>(), vec(message(), 0..4), any::<bool>()).prop_map(|(conversation_id, messages, has_more)| {
            Reply::HistoryPage(pb::HistoryPage { conversation_id, messages, has_more })
        }),
        (any::<u64>(), any::<i64>())
            .prop_map(|(nonce, server_time_ms)| Reply::Pong(pb::Pong { nonce, server_time_ms })),
        (any::<u64>(), text(), any::<i32>(), any::<i64>()).prop_map(|(user_id, username, state, last_seen_ms)| {
            Reply::Presence(pb::Presence { user_id, username, state, last_seen_ms })
        }),
        Just(Reply::Done(pb::Done {})),
    ]
}

fn server_frame() -> impl Strategy<Value = pb::ServerFrame> {
    (any::<u64>(), option::weighted(0.95, server_body()))
        .prop_map(|(request_id, body)| pb::ServerFrame { request_id, body })
}

/// Cuts `bytes` into pieces at the given fractions of its length.
fn split_at_fractions(bytes: &[u8], cuts: &[f64]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|f| (f * bytes.len() as f64) as usize).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// Feeds `chunks` to a decoder one at a time, collecting whole frames.
fn reassemble(chunks: &[Vec<u8>], max: u32) -> Vec<Bytes> {
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(f) = dec.next_frame(&mut buf).unwrap() {
            frames.push(f);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

const MAX: u32 = confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_frames_round_trip_however_split(
        frames in vec(client_frame(), 1..5),
        cuts in vec(0.0..1.0f64, 0..8),
    ) {
        let wire: Vec<u8> = frames.iter().flat_map(|f| frame_bytes(f).to_vec()).collect();
        let decoded: Vec<pb::ClientFrame> = reassemble(&split_at_fractions(&wire, &cuts), MAX)
            .iter()
            .map(|b| decode_client_frame(b).unwrap())
            .collect();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn server_frames_round_trip_however_split(
        frames in vec(server_frame(), 1..5),
        cuts in vec(0.0..1.0f64, 0..8),
    ) {
        let wire: Vec<u8> = frames.iter().flat_map(|f| frame_bytes(f).to_vec()).collect();
        let decoded: Vec<pb::ServerFrame> = reassemble(&split_at_fractions(&wire, &cuts), MAX)
            .iter()
            .map(|b| decode_server_frame(b).unwrap())
            .collect();
        prop_assert_eq!(decoded, frames);
    }

    /// Arbitrary bytes: no panic, and the decoder never leaves more than
    /// one frame's worth pending, nor reserves beyond the limit.
    #[test]
    fn arbitrary_bytes_never_panic_or_overgrow_the_decoder(
        max in 1u32..600,
        chunks in vec(vec(any::<u8>(), 0..64), 0..40),
    ) {
        let dec = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        'feed: for chunk in &chunks {
            buf.extend_from_slice(chunk);
            loop {
                match dec.next_frame(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.len() <= max as usize);
                        // Either parse may fail; neither may panic.
                        let _ = decode_client_frame(&frame);
                        let _ = decode_server_frame(&frame);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert_eq!(e.code(), ErrorCode::FRAME_TOO_LARGE);
                        break 'feed;
                    }
                }
            }
            prop_assert!(buf.len() <= max as usize + 16, "{} bytes pending, limit {}", buf.len(), max);
            // Growth comes only from our appends and a reservation of at
            // most one frame: with amortized doubling, below twice that.
            let bound = 2 * (max as usize + 16 + 64);
            prop_assert!(buf.capacity() <= bound, "capacity {} > {}", buf.capacity(), bound);
        }
    }

    /// Arbitrary bytes parse or fail cleanly, and whatever parses
    /// re-encodes to something that decodes to the same frame.
    #[test]
    fn whatever_decodes_re_encodes_stably(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(f) = decode_client_frame(&bytes) {
            prop_assert_eq!(decode_client_frame(&prost::Message::encode_to_vec(&f)).unwrap(), f);
        }
        if let Ok(f) = decode_server_frame(&bytes) {
            prop_assert_eq!(decode_server_frame(&prost::Message::encode_to_vec(&f)).unwrap(), f);
        }
    }
}

// ----- sessions fed arbitrary streams ----------------------------------------

/// A stream segment: a well-formed frame or raw bytes.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => client_frame().prop_map(|f| frame_bytes(&f).to_vec()),
        1 => vec(any::<u8>(), 0..24),
    ]
}

/// A stream that mostly starts with a Hello and often a login, so sessions
/// get past the handshake and into the authenticated phase.
fn client_stream() -> impl Strategy<Value = Vec<u8>> {
    (proptest::bool::weighted(0.9), any::<bool>(), vec(segment(), 0..24)).prop_map(
        |(with_hello, with_login, segments)| {
            let mut out = Vec::new();
            if with_hello {
                let hello = pb::Hello { versions: vec![1], ..Default::default() };
                out.extend_from_slice(&frame_bytes(&pb::ClientFrame { request_id: 1, body: Some(Body::Hello(hello)) }));
            }
            if with_login {
                let login =
                    pb::LoginRequest { username: "alice".into(), password: "pw".into(), device_name: "d".into() };
                out.extend_from_slice(&frame_bytes(&pb::ClientFrame { request_id: 2, body: Some(Body::Login(login)) }));
            }
            segments.into_iter().for_each(|s| out.extend(s));
            out
        },
    )
}

/// Time between chunks: mostly short, sometimes past a deadline.
fn step_ms() -> impl Strategy<Value = u64> {
    prop_oneof![9 => 0u64..2_000, 1 => 0u64..60_000]
}

/// How many complete frames an independent decoder splits from `stream`
/// before the first framing error.
fn frames_in(stream: &[u8], max: u32) -> usize {
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::from(stream);
    let mut n = 0;
    while let Ok(Some(_)) = dec.next_frame(&mut buf) {
        n += 1;
    }
    n
}

fn parse_server_output(bytes: &[u8]) -> Vec<pb::ServerFrame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = FrameDecoder::new(u32::MAX).next_frame(&mut buf).unwrap() {
        out.push(decode_server_frame(&f).expect("the session wrote an unparsable frame"));
    }
    assert!(buf.is_empty(), "the session wrote a partial frame");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_server_session_survives_any_stream(
        stream in client_stream(),
        chunk_sizes in vec(1usize..96, 1..16),
        steps_ms in vec(step_ms(), 1..16),
    ) {
        let t0 = Instant::now();
        let config = ServerConfig::default();
        let max = config.limits.max_frame_bytes;
        let mut s = ServerSession::new(Arc::new(config), t0);
        let mut elapsed = 0u64;
        let (mut requests, mut closed, mut outputs) = (0usize, 0usize, Vec::new());
        let mut buf = BytesMut::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() || !buf.is_empty() {
            let n = chunk_sizes[i % chunk_sizes.len()].min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            elapsed += steps_ms[i % steps_ms.len()];
            i += 1;
            let now = Now { instant: t0 + Duration::from_millis(elapsed), unix_ms: elapsed as i64 };
            s.handle_timeout(now.instant);
            // Answer every request at once, so barriers release and the
            // in-flight count drains; go on reading until nothing moves.
            loop {
                s.handle_input(&mut buf, now);
                let mut answered = false;
                while let Some(event) = s.poll_event() {
                    match event {
                        ServerEvent::Request { request_id, body } => {
                            requests += 1;
                            answered = true;
                            match body {
                                Body::Login(_) | Body::Signup(_) | Body::Resume(_) => s.respond(
                                    request_id,
                                    Reply::AuthOk(pb::AuthOk { user_id: 1, device_id: 2, ..Default::default() }),
                                ),
                                _ => s.fail(request_id, ErrorCode::INTERNAL, "test", 0),
                            }
                        }
                        ServerEvent::Closed { .. } => closed += 1,
                        ServerEvent::Handshaken { .. } | ServerEvent::Notification(_) => {}
                        ServerEvent::StreamRequest { .. } => panic!("no request streams were given"),
                    }
                }
                while let Some(out) = s.poll_transmit() {
                    outputs.extend(parse_server_output(&out));
                }
                if !answered {
                    break;
                }
            }
            if s.is_closed() {
                break;
            }
            if rest.is_empty() {
                // What is left is an incomplete frame.
                break;
            }
        }
        prop_assert!(requests <= frames_in(&stream, max), "{} requests from {} frames", requests, frames_in(&stream, max));
        prop_assert!(closed <= 1);
        prop_assert_eq!(s.in_flight(), 0);
        if closed == 1 {
            let Some(Reply::Error(last)) = outputs.last().and_then(|f| f.body.clone()) else {
                panic!("a closed session's last frame is its fatal Error: {outputs:?}")
            };
            prop_assert!(last.fatal);
            let fatal_errors = outputs.iter().filter(|f| matches!(&f.body, Some(Reply::Error(e)) if e.fatal)).count();
            prop_assert_eq!(fatal_errors, 1);
        }
    }

    #[test]
    fn a_client_session_survives_any_stream(
        frames in vec(prop_oneof![
            4 => server_frame().prop_map(|f| frame_bytes(&f).to_vec()),
            1 => vec(any::<u8>(), 0..24),
        ], 0..16),
        chunk_sizes in vec(1usize..96, 1..16),
        steps_ms in vec(step_ms(), 1..16),
    ) {
        let t0 = Instant::now();
        let mut c = ClientSession::new(&ClientConfig::default(), t0);
        let stream: Vec<u8> = frames.concat();
        let mut buf = BytesMut::new();
        let mut rest = &stream[..];
        let (mut elapsed, mut i, mut closed, mut responses) = (0u64, 0usize, 0usize, 0usize);
        let mut sent = BytesMut::new();
        while !rest.is_empty() && !c.is_closed() {
            let n = chunk_sizes[i % chunk_sizes.len()].min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            elapsed += steps_ms[i % steps_ms.len()];
            i += 1;
            let now = t0 + Duration::from_millis(elapsed);
            let _ = c.send_request(Body::Ping(pb::PingRequest { nonce: i as u64 }), now);
            c.handle_input(&mut buf, now);
            c.handle_timeout(now);
            while let Some(event) = c.poll_event() {
                match event {
                    ClientEvent::Closed { .. } => closed += 1,
                    ClientEvent::Response { .. } | ClientEvent::Welcome(_) => responses += 1,
                    ClientEvent::Event(_) => {}
                }
            }
            while let Some(out) = c.poll_transmit() {
                sent.extend_from_slice(&out);
            }
        }
        prop_assert!(closed <= 1);
        prop_assert!(responses <= frames_in(&stream, u32::MAX));
        // Everything the client wrote is a well-formed ClientFrame.
        let dec = FrameDecoder::new(u32::MAX);
        while let Some(f) = dec.next_frame(&mut sent).unwrap() {
            prop_assert!(decode_client_frame(&f).is_ok());
        }
        prop_assert!(sent.is_empty());
    }
}

#[test]
fn the_pending_bound_is_one_frame_plus_its_prefix() {
    // The bound the properties above rely on, at its edge: a prefix of
    // MAX_VARINT_LEN bytes announcing exactly the limit, one byte short.
    let max = 300u32;
    let mut wire = Vec::new();
    prost::encoding::encode_varint(u64::from(max), &mut wire);
    wire.extend(std::iter::repeat_n(0u8, max as usize - 1));
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(FrameDecoder::new(max).next_frame(&mut buf), Ok(None));
    assert!(buf.len() < max as usize + MAX_VARINT_LEN);
}
