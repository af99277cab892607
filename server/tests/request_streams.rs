//! QUIC request streams: one request and its response per stream, only for
//! the reads the spec allows, only after the session authenticated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::{Quic, Tcp};
use confab_protocol::ErrorCode;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_its_own_stream() {
    let server = TestServer::start().await;
    let alice = server.connect(Quic).await;
    assert_eq!(alice.welcome().capabilities, vec!["request-streams".to_string(), "typing-datagram".to_string()]);
    let tcp = server.connect(Tcp).await;
    assert!(tcp.welcome().capabilities.is_empty(), "request streams are a QUIC capability");

    let ping = Body::Ping(pb::PingRequest { nonce: 1 });
    let err = alice.request_on_stream(ping.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNAUTHENTICATED));

    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    tcp.signup("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();
    for i in 0..5 {
        alice.send(dm.conversation_id, &format!("s{i}"), &format!("streamed {i}")).await.unwrap();
    }
    let on_stream = alice
        .request_on_stream(Body::History(pb::HistoryRequest {
            conversation_id: dm.conversation_id,
            ..Default::default()
        }))
        .await
        .unwrap();
    let on_session = alice.history(dm.conversation_id, 0, 0, 0).await.unwrap();
    assert!(matches!(on_stream, Reply::HistoryPage(p) if p == on_session));
    assert!(matches!(alice.request_on_stream(ping).await.unwrap(), Reply::Pong(p) if p.nonce == 1));

    // Writes are not allowed on request streams; the session carries on.
    let send = Body::Send(pb::SendRequest {
        conversation_id: dm.conversation_id,
        client_msg_id: "x".into(),
        text: "x".into(),
    });
    assert_eq!(alice.request_on_stream(send).await.unwrap_err().code(), Some(ErrorCode::PROTOCOL_VIOLATION));
    let other = Body::History(pb::HistoryRequest { conversation_id: 424_242, ..Default::default() });
    assert_eq!(alice.request_on_stream(other).await.unwrap_err().code(), Some(ErrorCode::CONVERSATION_NOT_FOUND));
    alice.ping(2).await.unwrap();
    server.stop().await;
}
