//! Typing over QUIC datagrams (capability `typing-datagram`, spec §2.1):
//! a QUIC client's typing notice goes out as a datagram, reaches a QUIC
//! member as a datagram and a TCP member as a frame, and nobody else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use confab_client::TransportKind::{Quic, Tcp};
use confab_client::{Connection, Event};
use confab_protocol::pb;

async fn next_typing(conn: &mut Connection) -> pb::TypingEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await.expect("no typing event within 5 s") {
            Some(Event::Typing(t)) => return t,
            Some(_) => continue,
            None => panic!("event stream ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_travels_as_datagrams_between_quic_clients() {
    let server = TestServer::start().await;
    let alice = server.connect(Quic).await;
    assert!(alice.welcome().capabilities.iter().any(|c| c == "typing-datagram"), "offered on QUIC");
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let mut bob = server.connect(Quic).await;
    bob.signup("bob", "bob-password", "b").await.unwrap();
    let mut carol = server.connect(Tcp).await;
    assert!(carol.welcome().capabilities.is_empty(), "no datagrams on TCP");
    carol.signup("carol", "carol-password", "c").await.unwrap();
    let group = alice.create_group("typists", &["bob", "carol"]).await.unwrap().conversation_id;

    let metrics = &server.server().core().metrics;
    // Datagrams may be lost; a few notices (within the typing rate) make
    // the test independent of one loss on loopback.
    let mut got = None;
    for _ in 0..3 {
        alice.typing(group).unwrap();
        if let Ok(t) = tokio::time::timeout(Duration::from_secs(2), next_typing(&mut bob)).await {
            got = Some(t);
            break;
        }
    }
    let t = got.expect("bob saw alice typing");
    assert_eq!((t.conversation_id, t.username.as_str()), (group, "alice"));
    assert!(t.expires_in_ms > 0);
    let t = next_typing(&mut carol).await;
    assert_eq!(t.username, "alice", "the TCP member gets it as a frame");
    assert!(metrics.typing_datagrams_in.load(Relaxed) >= 1, "alice's notice came as a datagram");
    assert!(metrics.typing_datagrams_out.load(Relaxed) >= 1, "bob's event went as a datagram");
    // Typing is still never stored.
    let history = bob.history(group, 0, 0, 100).await.unwrap();
    assert!(history.messages.iter().all(|m| !matches!(m.content, Some(pb::message::Content::Text(_)))));
    server.stop().await;
}
