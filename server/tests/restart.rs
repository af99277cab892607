//! After a server restart, history, accounts, tokens, cursors and unread
//! counts are all still there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::{Quic, Tcp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart() {
    let mut server = TestServer::start().await;
    let alice = server.connect(Quic).await;
    let a = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect(Tcp).await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();
    for i in 0..10 {
        alice.send(dm.conversation_id, &format!("r{i}"), &format!("before restart {i}")).await.unwrap();
    }
    bob.mark_read(dm.conversation_id, 4).await.unwrap();
    let page = bob.sync(b.cursor, 0).await.unwrap();
    let bob_cursor = page.events[5].inbox_seq;
    bob.ack_cursor(bob_cursor).await.unwrap();
    drop(alice);

    // Shutdown tells connected clients: GoAway, then the session closes
    // with SHUTTING_DOWN.
    let watch = tokio::spawn(async move {
        let mut bob = bob;
        let mut saw_go_away = false;
        while let Some(ev) = bob.next_event().await {
            match ev {
                confab_client::Event::GoAway(g) => {
                    assert_eq!(g.code, confab_protocol::ErrorCode::SHUTTING_DOWN.0);
                    saw_go_away = true;
                }
                confab_client::Event::Closed(e) => return (saw_go_away, e.code()),
                _ => {}
            }
        }
        (saw_go_away, None)
    });
    server.restart().await;
    let (go_away, closed) = watch.await.unwrap();
    assert!(go_away, "GoAway before the close");
    assert_eq!(closed, Some(confab_protocol::ErrorCode::SHUTTING_DOWN));

    // Tokens still work; cursors are where they were.
    let bob = server.connect(Quic).await;
    let resumed = bob.resume(&b.token).await.unwrap();
    assert_eq!(resumed.user_id, b.user_id);
    assert_eq!(resumed.cursor, bob_cursor);
    // Passwords too.
    let alice = server.connect(Tcp).await;
    let again = alice.login("alice", "alice-password", "desktop").await.unwrap();
    assert_eq!(again.user_id, a.user_id);
    assert_ne!(again.device_id, a.device_id);
    // History and unread counts.
    let h = bob.history(dm.conversation_id, 0, 0, 0).await.unwrap();
    assert_eq!(h.messages.len(), 10);
    assert_eq!(text(&h.messages[9]), "before restart 9");
    let list = bob.list_conversations(0).await.unwrap();
    assert_eq!(list.conversations.len(), 1);
    assert_eq!(list.conversations[0].read_seq, 4);
    assert_eq!(list.conversations[0].unread_count, 6);
    // New messages continue the sequence; ids continue too.
    let next = alice.send(dm.conversation_id, "r-after", "after restart").await.unwrap();
    assert_eq!(next.message.unwrap().seq, 11);
    let carol = server.connect(Tcp).await.signup("carol", "carol-password", "x").await.unwrap();
    assert!(carol.user_id > b.user_id, "user ids are not reused");
    // Dedupe memory is permanent.
    let dup = alice.send(dm.conversation_id, "r3", "before restart 3").await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.message.unwrap().seq, 4);
    server.stop().await;
}
