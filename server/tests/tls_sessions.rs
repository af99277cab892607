//! TLS under the sessions (the server's own stream on rustls' unbuffered
//! API): WebSocket over TLS and TCP+TLS carry max-length messages both ways
//! and bursts of small ones; a client's KeyUpdate mid-session is answered
//! and the session goes on; a client that closes with close_notify ends
//! its session cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::{Tcp, Wss};
use confab_protocol::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_tcp_sessions_carry_big_messages_and_bursts() {
    let server = TestServer::start_with(|c| {
        c.http_tls = true;
        c.limits.send_rate_per_sec = 10_000;
        c.limits.send_burst = 10_000;
    })
    .await;
    let mut web = server.connect(Wss).await;
    web.signup("wendy", "wendy-password", "browser").await.unwrap();
    let mut tcp = server.connect(Tcp).await;
    tcp.signup("ted", "ted-password", "desktop").await.unwrap();
    let dm = web.open_direct("ted").await.unwrap();
    for c in [&mut web, &mut tcp] {
        assert!(matches!(next_inbox(c).await.event, Some(pb::inbox_event::Event::Joined(_))));
    }

    // Max-length messages, many TLS records each, both ways.
    let big: String = "é".repeat(100_000);
    web.send(dm.conversation_id, "w-big", &big).await.unwrap();
    for c in [&mut web, &mut tcp] {
        let e = next_inbox(c).await;
        assert_eq!(text(message(&e)).chars().count(), 100_000);
        assert_eq!(message(&e).seq, 1);
    }
    tcp.send(dm.conversation_id, "t-big", &big).await.unwrap();
    for c in [&mut web, &mut tcp] {
        let e = next_inbox(c).await;
        assert_eq!(text(message(&e)), big, "a max-length message arrives whole over {c:?}");
    }

    // A burst of small ones: every one arrives, in order.
    for i in 0..300 {
        web.send(dm.conversation_id, &format!("w-{i}"), &format!("small {i}")).await.unwrap();
    }
    for c in [&mut tcp, &mut web] {
        for i in 0..300u64 {
            let e = next_inbox(c).await;
            assert_eq!(message(&e).seq, 3 + i);
            assert_eq!(text(message(&e)), format!("small {i}"));
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_mid_session_is_answered_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut raw = Raw::hello(&server).await;
    for round in 0..3u64 {
        // KeyUpdate with update_requested: the server must answer with its
        // own before its next record, or the client cannot read it.
        raw.tls().get_mut().1.refresh_traffic_keys().unwrap();
        let nonce = 100 + round;
        raw.send(10 + round, pb::client_frame::Body::Ping(pb::PingRequest { nonce })).await;
        let f = raw.recv().await;
        assert_eq!(f.request_id, 10 + round);
        assert!(matches!(f.body, Some(pb::server_frame::Body::Pong(ref p)) if p.nonce == nonce), "{f:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_notify_from_the_client_ends_the_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut raw = Raw::hello(&server).await;
    raw.tls().shutdown().await.unwrap();
    // The server closes its side in turn: the read ends (EOF or an error
    // once the server is gone), well within the linger bound.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), raw.tls().read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server did not close within 5 s");
    server.stop().await;
}

/// Plain HTTP to the TLS port: one fatal alert (a plaintext alert record,
/// 5-byte header and 2-byte body), then the connection ends, and the
/// server goes on serving others. rustls' unbuffered API does not drop
/// the bytes that failed: processing them again would queue a second alert
/// (and, with debug assertions, panic the session task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_tls_gets_one_fatal_alert_and_the_server_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let addr = server.server().tcp_addr().unwrap();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: confab\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server did not close within 5 s");
        assert_eq!(answer.len(), 7, "exactly one alert record: {answer:02x?}");
        assert_eq!(answer[0], 0x15, "an alert record: {answer:02x?}");
        assert_eq!(&answer[3..5], &[0, 2], "{answer:02x?}");
        assert_eq!(answer[5], 2, "a fatal alert: {answer:02x?}");
    }
    let mut raw = Raw::hello(&server).await;
    raw.send(1, pb::client_frame::Body::Ping(pb::PingRequest { nonce: 7 })).await;
    assert_eq!(raw.recv().await.request_id, 1);
    server.stop().await;
}
