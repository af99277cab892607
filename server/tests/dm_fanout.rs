//! Two users with two devices each (QUIC and TCP): a DM reaches all four
//! sessions once, in order, with the (conversation, seq) the sender's ack
//! carries, and nothing else comes before the next message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::{Quic, Tcp};
use confab_protocol::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_reaches_every_device_once_in_order() {
    let server = TestServer::start().await;
    let a1 = server.connect(Quic).await;
    let alice = a1.signup("alice", "alice-password", "laptop").await.unwrap();
    assert_ne!(alice.token, "");
    let b1 = server.connect(Tcp).await;
    b1.signup("bob", "bob-password", "desktop").await.unwrap();
    let mut a2 = server.connect(Tcp).await;
    a2.login("alice", "alice-password", "phone").await.unwrap();
    let mut b2 = server.connect(Quic).await;
    b2.login("bob", "bob-password", "phone").await.unwrap();
    let mut a1 = a1;
    let mut b1 = b1;

    let dm = a1.open_direct("bob").await.unwrap();
    assert_eq!(dm.kind, pb::ConversationKind::Direct as i32);
    assert_eq!(dm.peer_username, "bob");
    let dm_b = b1.open_direct("alice").await.unwrap();
    assert_eq!(dm.conversation_id, dm_b.conversation_id, "both sides get the same conversation");

    // The `joined` events: one per user, seen by each of their sessions.
    for conn in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let e = next_inbox(conn).await;
        assert!(matches!(e.event, Some(pb::inbox_event::Event::Joined(_))), "{e:?}");
    }

    let mut acks = Vec::new();
    for i in 0..5 {
        let sent = a1.send(dm.conversation_id, &format!("m{i}"), &format!("hello {i}")).await.unwrap();
        assert!(!sent.duplicate);
        acks.push(sent.message.unwrap());
    }
    assert_eq!(acks.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    // A later message from bob: after the five, it is the next thing every
    // session gets (a duplicate or a stray event would come before it).
    let marker = b2.send(dm.conversation_id, "marker", "and a reply").await.unwrap().message.unwrap();
    assert_eq!(marker.seq, 6);

    for conn in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let mut last_inbox = 0;
        for ack in &acks {
            let e = next_inbox(conn).await;
            assert!(e.inbox_seq > last_inbox, "inbox_seq increases");
            last_inbox = e.inbox_seq;
            let m = message(&e);
            assert_eq!((m.conversation_id, m.seq), (ack.conversation_id, ack.seq));
            assert_eq!(text(m), text(ack));
            assert_eq!(m.sender_username, "alice");
        }
        let next = next_inbox(conn).await;
        assert_eq!(next.inbox_seq, last_inbox + 1, "nothing between the five and the next message: {next:?}");
        assert_eq!((message(&next).seq, message(&next).sender_username.as_str()), (6, "bob"), "{next:?}");
    }
    server.stop().await;
}
