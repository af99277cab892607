//! The WebSocket bridge: a WebSocket client and a QUIC client share a DM
//! and a group, messages flow both ways; bad input over WebSocket gets the
//! spec'd error and close status (spec §2.3) and leaves the server serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use confab_client::TransportKind::{Quic, Tcp, Ws};
use confab_protocol::{ErrorCode, pb};
use tokio_tungstenite::tungstenite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_quic_clients_chat_in_a_dm_and_a_group() {
    let server = TestServer::start().await;
    let mut web = server.connect(Ws).await;
    web.signup("wanda", "wanda-password", "browser").await.unwrap();
    let mut quic = server.connect(Quic).await;
    quic.signup("quentin", "quentin-password", "laptop").await.unwrap();
    let tcp = server.connect(Tcp).await;
    tcp.signup("tess", "tess-password", "desktop").await.unwrap();

    let dm = web.open_direct("quentin").await.unwrap();
    for c in [&mut web, &mut quic] {
        assert!(matches!(next_inbox(c).await.event, Some(pb::inbox_event::Event::Joined(_))));
    }
    let sent = web.send(dm.conversation_id, "w-1", "hi from the browser side").await.unwrap();
    let got = next_inbox(&mut quic).await;
    assert_eq!((message(&got).conversation_id, message(&got).seq), (dm.conversation_id, 1));
    assert_eq!(text(message(&got)), "hi from the browser side");
    assert_eq!(sent.message.unwrap().seq, 1);
    next_inbox(&mut web).await; // its own message, as every device sees it
    quic.send(dm.conversation_id, "q-1", "hello over QUIC ✓").await.unwrap();
    for c in [&mut web, &mut quic] {
        let e = next_inbox(c).await;
        assert_eq!(message(&e).seq, 2);
        assert_eq!(text(message(&e)), "hello over QUIC ✓");
    }

    let group = quic.create_group("three transports", &["wanda", "tess"]).await.unwrap();
    // Membership events first, then messages, on the WebSocket side too:
    // what the group's creation produced, before the messages exchanged.
    for c in [&mut web, &mut quic] {
        let e = next_inbox(c).await;
        assert!(matches!(e.event, Some(pb::inbox_event::Event::Joined(_))), "{e:?}");
        let e = next_inbox(c).await;
        assert_eq!((message(&e).conversation_id, message(&e).seq), (group.conversation_id, 1), "CREATED");
    }
    let big: String = "é".repeat(100_000);
    web.send(group.conversation_id, "w-2", &big).await.unwrap();
    let e = next_inbox(&mut quic).await;
    assert_eq!(text(message(&e)).chars().count(), 100_000, "a max-length message crosses the bridge whole");
    quic.send(group.conversation_id, "q-2", "group reply").await.unwrap();
    let e = loop {
        let e = next_inbox(&mut web).await;
        if text(message(&e)) == "group reply" {
            break e;
        }
    };
    assert_eq!(message(&e).sender_username, "quentin");
    let history = web.history(group.conversation_id, 0, 0, 10).await.unwrap();
    assert!(history.messages.iter().any(|m| m.sender_username == "wanda"));
    server.stop().await;
}

/// A raw WebSocket peer to the test server.
async fn raw_ws(server: &TestServer, protocol: Option<&str>, origin: Option<&str>) -> Result<Raw, tungstenite::Error> {
    Raw::ws(server.server().http_addr().unwrap(), protocol, origin).await
}

/// The session's last frame is a fatal Error with `code`, then a close
/// with `status` and the error's name.
async fn expect_fatal(ws: &mut Raw, code: ErrorCode, status: u16) {
    let (_, e) = ws.expect_error(code).await;
    assert!(e.fatal, "{e:?}");
    assert!(ws.try_recv().await.is_none(), "the close follows the fatal Error");
    assert_eq!(ws.close_status(), Some((status, code.name().unwrap().to_string())));
}

fn refused(r: Result<Raw, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

/// The security review: the Origin check ignored the scheme and trusted
/// the Host header, so a page on an attacker's DNS name that resolves to
/// this server (DNS rebinding) passed as "same origin".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_resist_dns_rebinding_and_follow_public_origins() {
    let server = TestServer::start().await;
    let addr = server.server().http_addr().unwrap();
    let port = addr.port();
    let rebound = format!("rebind.evil.example:{port}");
    let attempt = Raw::ws_as(addr, Some(&rebound), Some("confab.v1"), Some(&format!("http://{rebound}"))).await;
    assert_eq!(refused(attempt), 403, "a DNS name is not trusted from Host");
    let https = Raw::ws(addr, Some("confab.v1"), Some(&format!("https://{addr}"))).await;
    assert_eq!(refused(https), 403, "the scheme is part of the origin");
    let localhost = format!("localhost:{port}");
    let mut ok =
        Raw::ws_as(addr, Some(&localhost), Some("confab.v1"), Some(&format!("http://{localhost}"))).await.unwrap();
    ok.handshake().await;
    server.stop().await;

    let server = TestServer::start_with(|c| c.public_origins = vec!["https://chat.example.com".into()]).await;
    let addr = server.server().http_addr().unwrap();
    let mut ok =
        Raw::ws_as(addr, Some("chat.example.com"), Some("confab.v1"), Some("https://chat.example.com")).await.unwrap();
    ok.handshake().await;
    // With public origins set, the address the request came to is no
    // origin of its own.
    assert_eq!(refused(Raw::ws(addr, Some("confab.v1"), Some(&format!("http://{addr}"))).await), 403);
    // Clients without Origin (not browsers) are not concerned.
    Raw::ws(addr, Some("confab.v1"), None).await.unwrap().handshake().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_input_gets_clear_errors_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|c| c.limits.max_frame_bytes = 1 << 20).await;

    // Wrong or missing subprotocol: HTTP 400, no upgrade.
    for p in [None, Some("chat"), Some("confab.v2")] {
        match raw_ws(&server, p, None).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400, "{p:?}"),
            other => panic!("{p:?}: expected HTTP 400, got {:?}", other.map(|_| ())),
        }
    }
    // A page from another origin: 403.
    match raw_ws(&server, Some("confab.v1"), Some("http://evil.example")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected HTTP 403, got {:?}", other.map(|_| ())),
    }
    // The same origin is fine.
    let addr = server.server().http_addr().unwrap();
    let mut ws = raw_ws(&server, Some("confab.v1"), Some(&format!("http://{addr}"))).await.unwrap();
    ws.handshake().await;

    // A text message: PROTOCOL_VIOLATION, close 1008.
    ws.send_text("{\"hello\":1}").await;
    expect_fatal(&mut ws, ErrorCode::PROTOCOL_VIOLATION, 1008).await;

    // Over the frame limit: FRAME_TOO_LARGE, close 1009, without the
    // server buffering the whole message first.
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    ws.handshake().await;
    let _ = ws.try_send_bytes(&vec![0u8; (1 << 20) + 1]).await;
    expect_fatal(&mut ws, ErrorCode::FRAME_TOO_LARGE, 1009).await;

    // Garbage that is not a ClientFrame: MALFORMED_FRAME, not fatal at once.
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    ws.handshake().await;
    ws.send_bytes(&[0xff, 0xff, 0xff, 0xff]).await;
    let f = ws.recv().await;
    assert!(
        matches!(&f.body, Some(pb::server_frame::Body::Error(e)) if e.code == ErrorCode::MALFORMED_FRAME.0),
        "{f:?}"
    );
    // The session still answers.
    ws.send(7, pb::client_frame::Body::Ping(pb::PingRequest { nonce: 42 })).await;
    let f = ws.recv().await;
    assert_eq!(f.request_id, 7);
    assert!(matches!(f.body, Some(pb::server_frame::Body::Pong(pb::Pong { nonce: 42, .. }))), "{f:?}");

    // A request before Hello: the handshake is required on WebSocket too.
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    ws.send(1, pb::client_frame::Body::Ping(pb::PingRequest { nonce: 1 })).await;
    let f = ws.recv().await;
    assert!(
        matches!(&f.body, Some(pb::server_frame::Body::Error(e)) if e.fatal && e.code == ErrorCode::HANDSHAKE_REQUIRED.0),
        "{f:?}"
    );

    // After all that, a well-behaved client is served normally.
    let ok = server.connect(Ws).await;
    ok.signup("after", "after-password", "browser").await.unwrap();
    let pong = ok.ping(9).await.unwrap();
    assert_eq!(pong.nonce, 9);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_go_away_over_websocket() {
    let mut server = TestServer::start().await;
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    ws.handshake().await;
    let s = server.server.take().unwrap();
    let stopping = tokio::spawn(s.shutdown());
    let f = ws.recv().await;
    assert!(matches!(f.body, Some(pb::server_frame::Body::GoAway(_))), "{f:?}");
    expect_fatal(&mut ws, ErrorCode::SHUTTING_DOWN, 1001).await;
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_both_ways_at_once_never_deadlock() {
    let server = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 10_000;
        c.limits.send_burst = 10_000;
    })
    .await;
    let web = std::sync::Arc::new(server.connect(Ws).await);
    web.signup("wendy", "wendy-password", "browser").await.unwrap();
    let quic = std::sync::Arc::new(server.connect(Quic).await);
    quic.signup("quincy", "quincy-password", "laptop").await.unwrap();
    let dm = web.open_direct("quincy").await.unwrap().conversation_id;
    // 20 messages of 100,000 four-byte characters each way, concurrently:
    // 8 MB crossing in both directions through the WebSocket bridges.
    let big: String = "😀".repeat(100_000);
    let mut sends = tokio::task::JoinSet::new();
    for (who, conn) in [("w", std::sync::Arc::clone(&web)), ("q", std::sync::Arc::clone(&quic))] {
        let big = big.clone();
        sends.spawn(async move {
            for i in 0..20 {
                conn.send(dm, &format!("{who}-{i}"), &big).await.unwrap();
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = sends.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("both directions finished");
    // Pages hold what fits in a frame: about one such message each.
    let (mut big_ones, mut after) = (0, 0);
    loop {
        let req =
            pb::HistoryRequest { conversation_id: dm, after_seq: after, oldest_first: true, ..Default::default() };
        let page = web.history_request(req).await.unwrap();
        big_ones += page.messages.iter().filter(|m| text(m).chars().count() == 100_000).count();
        after = page.messages.last().map_or(after, |m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(big_ones, 40);
    server.stop().await;
}
