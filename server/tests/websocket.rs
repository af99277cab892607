//! The WebSocket bridge: a WebSocket client and a QUIC client share a DM
//! and a group, messages flow both ways; bad input over WebSocket gets the
//! spec'd error and close status (spec §2.3) and leaves the server serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use confab_client::TransportKind::{Quic, Tcp, Ws};
use confab_protocol::{ErrorCode, pb};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

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
    // Membership events first, then messages, on the WebSocket side too.
    let mut joined = 0;
    while joined < 1 {
        if let Some(pb::inbox_event::Event::Joined(_)) = next_inbox(&mut web).await.event {
            joined += 1;
        }
    }
    // Drain what the group's creation produced, then exchange messages.
    drain(&mut quic).await;
    drain(&mut web).await;
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

/// Consumes events until none arrives for 200 ms.
async fn drain(conn: &mut confab_client::Connection) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), conn.next_event()).await {}
}

/// A raw WebSocket, for sending what a well-behaved client never would.
type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn raw_ws(
    server: &TestServer,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<RawWs, tungstenite::Error> {
    let addr = server.server().http_addr().unwrap();
    let mut req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
}

fn frame(request_id: u64, body: pb::client_frame::Body) -> Message {
    Message::Binary(pb::ClientFrame { request_id, body: Some(body) }.encode_to_vec().into())
}

async fn hello(ws: &mut RawWs) {
    ws.send(frame(1, pb::client_frame::Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })))
        .await
        .unwrap();
    let f = next_frame(ws).await.expect("welcome");
    assert!(matches!(f.body, Some(pb::server_frame::Body::Welcome(_))), "{f:?}");
}

/// The next Confab frame, or `None` at the close (whose status is returned
/// through `closed`).
async fn next_frame(ws: &mut RawWs) -> Option<pb::ServerFrame> {
    next_or_close(ws).await.ok()
}

async fn next_or_close(ws: &mut RawWs) -> Result<pb::ServerFrame, Option<(u16, String)>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("nothing within 5 s") {
            Some(Ok(Message::Binary(b))) => return Ok(pb::ServerFrame::decode(b).unwrap()),
            Some(Ok(Message::Close(c))) => return Err(c.map(|c| (u16::from(c.code), c.reason.to_string()))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// The session's last frame is a fatal Error with `code`, then a close
/// with `status` and the error's name.
async fn expect_fatal(ws: &mut RawWs, code: ErrorCode, status: u16) {
    let f = next_frame(ws).await.expect("an Error frame");
    match f.body {
        Some(pb::server_frame::Body::Error(e)) => {
            assert_eq!(e.code, code.0, "{e:?}");
            assert!(e.fatal);
        }
        other => panic!("expected {code}, got {other:?}"),
    }
    let close = next_or_close(ws).await.expect_err("the close follows the fatal Error");
    assert_eq!(close, Some((status, code.name().unwrap().to_string())));
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
    hello(&mut ws).await;

    // A text message: PROTOCOL_VIOLATION, close 1008.
    ws.send(Message::Text("{\"hello\":1}".into())).await.unwrap();
    expect_fatal(&mut ws, ErrorCode::PROTOCOL_VIOLATION, 1008).await;

    // Over the frame limit: FRAME_TOO_LARGE, close 1009, without the
    // server buffering the whole message first.
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    hello(&mut ws).await;
    let _ = ws.send(Message::Binary(vec![0u8; (1 << 20) + 1].into())).await;
    expect_fatal(&mut ws, ErrorCode::FRAME_TOO_LARGE, 1009).await;

    // Garbage that is not a ClientFrame: MALFORMED_FRAME, not fatal at once.
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    hello(&mut ws).await;
    ws.send(Message::Binary(vec![0xff, 0xff, 0xff, 0xff].into())).await.unwrap();
    let f = next_frame(&mut ws).await.unwrap();
    assert!(
        matches!(&f.body, Some(pb::server_frame::Body::Error(e)) if e.code == ErrorCode::MALFORMED_FRAME.0),
        "{f:?}"
    );
    // The session still answers.
    ws.send(frame(7, pb::client_frame::Body::Ping(pb::PingRequest { nonce: 42 }))).await.unwrap();
    let f = next_frame(&mut ws).await.unwrap();
    assert_eq!(f.request_id, 7);
    assert!(matches!(f.body, Some(pb::server_frame::Body::Pong(pb::Pong { nonce: 42, .. }))), "{f:?}");

    // A request before Hello: the handshake is required on WebSocket too.
    let mut ws = raw_ws(&server, Some("confab.v1"), None).await.unwrap();
    ws.send(frame(1, pb::client_frame::Body::Ping(pb::PingRequest { nonce: 1 }))).await.unwrap();
    let f = next_frame(&mut ws).await.unwrap();
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
    hello(&mut ws).await;
    let s = server.server.take().unwrap();
    let stopping = tokio::spawn(s.shutdown());
    let f = next_frame(&mut ws).await.unwrap();
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
