//! The rules of QUIC request streams (PROTOCOL.md §2.1) against a real
//! server, each of which the server once broke:
//! - a stream that ends inside its frame, or carries bytes after it, is a
//!   PROTOCOL_VIOLATION (109), not MALFORMED_FRAME (100);
//! - a request on a request stream takes from the session's request rate
//!   and counts as a sign of life for the heartbeat rule (§4.6);
//! - without `request-streams` negotiated, every further stream is stopped
//!   and reset with 109 and nothing is served on it;
//! - streams are read side by side: one whose frame is still coming holds
//!   up no other, and many at once are each answered on their own stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use confab_protocol::ErrorCode;
use confab_protocol::framing::frame_bytes;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};

/// A QUIC session that offered `capabilities` and signed up as `name`.
async fn session(server: &TestServer, name: &str, capabilities: &[&str]) -> Raw {
    let s = server.server();
    let mut raw = Raw::quic(s.quic_addr().unwrap(), s.fingerprint()).await;
    let caps = capabilities.iter().map(|c| c.to_string()).collect();
    raw.send(1, Body::Hello(pb::Hello { versions: vec![1], capabilities: caps, ..Default::default() })).await;
    assert!(matches!(raw.recv().await.body, Some(Reply::Welcome(_))));
    let signup =
        pb::SignupRequest { username: name.into(), password: format!("{name}-password"), device_name: "raw".into() };
    raw.send(2, Body::Signup(signup)).await;
    assert!(matches!(raw.recv().await.body, Some(Reply::AuthOk(_))));
    raw
}

fn frame(id: u64, body: Body) -> Vec<u8> {
    frame_bytes(&pb::ClientFrame { request_id: id, body: Some(body) }).to_vec()
}

fn ping(nonce: u64) -> Body {
    Body::Ping(pb::PingRequest { nonce })
}

/// Writes `bytes` on a new request stream, finishes it, and reads the one
/// answer.
async fn on_stream(raw: &Raw, bytes: &[u8]) -> pb::ServerFrame {
    let mut stream = raw.open_request_stream().await;
    stream.send_bytes(bytes).await;
    stream.finish().await.unwrap();
    let answer = stream.recv().await;
    assert!(stream.try_recv().await.is_none(), "one frame, then the stream ends");
    answer
}

fn error_code(f: &pb::ServerFrame) -> ErrorCode {
    match &f.body {
        Some(Reply::Error(e)) => {
            assert!(!e.fatal, "request-stream errors are stream-level");
            ErrorCode(e.code)
        }
        other => panic!("expected an Error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_frames_and_trailing_bytes_are_protocol_violations() {
    let server = TestServer::start().await;
    let mut alice = session(&server, "alice", &["request-streams"]).await;
    let whole = frame(7, ping(1));
    let cut = on_stream(&alice, &whole[..whole.len() - 1]).await;
    assert_eq!(error_code(&cut), ErrorCode::PROTOCOL_VIOLATION, "FIN inside the frame");
    let mut two = whole.clone();
    two.extend_from_slice(&whole);
    assert_eq!(error_code(&on_stream(&alice, &two).await), ErrorCode::PROTOCOL_VIOLATION, "bytes after the frame");
    // A whole frame is served, and the session carries on.
    assert!(matches!(on_stream(&alice, &whole).await.body, Some(Reply::Pong(p)) if p.nonce == 1));
    alice.send(3, ping(2)).await;
    assert!(matches!(alice.recv().await.body, Some(Reply::Pong(p)) if p.nonce == 2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_requests_take_from_the_session_request_rate() {
    // A burst of 4: the signup takes one.
    let server = TestServer::start_with(|c| {
        c.limits.request_rate_per_sec = 1;
        c.limits.request_burst = 4;
    })
    .await;
    let alice = session(&server, "alice", &["request-streams"]).await;
    let list = Body::ListConversations(pb::ListConversationsRequest::default());
    for _ in 0..3 {
        assert!(matches!(on_stream(&alice, &frame(5, list.clone())).await.body, Some(Reply::ConversationList(_))));
    }
    let refused = on_stream(&alice, &frame(6, list)).await;
    assert_eq!(refused.request_id, 6);
    assert_eq!(error_code(&refused), ErrorCode::RATE_LIMITED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_streams_count_as_signs_of_life() {
    // 2.5 intervals of 1 s: a session stream silent for 2.5 s is dead
    // unless something else is heard.
    let server = TestServer::start_with(|c| c.heartbeat_interval_ms = 1000).await;
    let mut alice = session(&server, "alice", &["request-streams"]).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut nonce = 10;
    while tokio::time::Instant::now() < until {
        nonce += 1;
        assert!(matches!(on_stream(&alice, &frame(1, ping(nonce))).await.body, Some(Reply::Pong(_))));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Five seconds without a frame on the session stream, and it lives.
    alice.send(3, ping(99)).await;
    assert!(matches!(alice.recv().await.body, Some(Reply::Pong(p)) if p.nonce == 99));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_capability_every_request_stream_is_refused_with_109() {
    let server = TestServer::start().await;
    let mut alice = session(&server, "alice", &[]).await;
    let conn = alice.quic_connection().clone();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(&frame(4, ping(4))).await;
    let _ = send.finish();
    let read = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16)).await.expect("no answer");
    match read {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), u64::from(ErrorCode::PROTOCOL_VIOLATION.0));
        }
        other => panic!("expected a reset with 109, got {other:?}"),
    }
    // The session itself goes on.
    alice.send(3, ping(5)).await;
    assert!(matches!(alice.recv().await.body, Some(Reply::Pong(p)) if p.nonce == 5));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_streams_are_read_side_by_side() {
    let server = TestServer::start().await;
    let mut alice = session(&server, "alice", &["request-streams"]).await;
    // A stream whose frame is half written...
    let slow_frame = frame(40, ping(40));
    let (head, tail) = slow_frame.split_at(3);
    let mut slow = alice.open_request_stream().await;
    slow.send_bytes(head).await;
    // ...holds up none of the streams opened after it.
    let mut streams = Vec::new();
    for nonce in 0..12u64 {
        let mut s = alice.open_request_stream().await;
        s.send_bytes(&frame(100 + nonce, ping(nonce))).await;
        s.finish().await.unwrap();
        streams.push((nonce, s));
    }
    for (nonce, mut s) in streams {
        let answer = tokio::time::timeout(Duration::from_secs(5), s.recv()).await.expect("a stream went unanswered");
        assert_eq!(answer.request_id, 100 + nonce);
        assert!(matches!(answer.body, Some(Reply::Pong(p)) if p.nonce == nonce), "{answer:?}");
    }
    slow.send_bytes(tail).await;
    slow.finish().await.unwrap();
    let answer = slow.recv().await;
    assert!(matches!(answer.body, Some(Reply::Pong(p)) if p.nonce == 40), "{answer:?}");
    // And the session stream is served all along.
    alice.send(3, ping(5)).await;
    assert!(matches!(alice.recv().await.body, Some(Reply::Pong(p)) if p.nonce == 5));
    server.stop().await;
}
