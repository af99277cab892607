//! A send retried with the same client_msg_id after the connection dropped
//! returns the original message; history holds it once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::{Quic, Tcp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_drop_returns_the_original() {
    let server = TestServer::start().await;
    let alice = server.connect(Tcp).await;
    let auth = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();

    // Fire the send and drop the connection without waiting for the ack:
    // the frame goes out (the driver writes queued commands before it sees
    // the handle dropped), the server stores it, and the ack is lost.
    {
        let req = alice.send(dm.conversation_id, "retry-me", "only once please");
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), req).await;
    }
    drop(alice);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let h = bob.history(dm.conversation_id, 0, 0, 0).await.unwrap();
        if !h.messages.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the unacknowledged send was not stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Retry on a new connection (another transport, even) with the same id.
    let alice = server.connect(Quic).await;
    alice.resume(&auth.token).await.unwrap();
    let first = alice.send(dm.conversation_id, "retry-me", "only once please").await.unwrap();
    assert!(first.duplicate, "the retry finds the message stored before the drop");
    let again = alice.send(dm.conversation_id, "retry-me", "only once please").await.unwrap();
    assert!(again.duplicate, "the second send is recognised as a duplicate");
    let (m1, m2) = (first.message.unwrap(), again.message.unwrap());
    assert_eq!((m1.conversation_id, m1.seq, m1.sent_at_ms), (m2.conversation_id, m2.seq, m2.sent_at_ms));

    // A duplicate from another device of the same user is caught too.
    let phone = server.connect(Tcp).await;
    phone.login("alice", "alice-password", "phone").await.unwrap();
    let third = phone.send(dm.conversation_id, "retry-me", "only once please").await.unwrap();
    assert!(third.duplicate);

    let history = bob.history(dm.conversation_id, 0, 0, 0).await.unwrap();
    let copies = history.messages.iter().filter(|m| m.client_msg_id == "retry-me").count();
    assert_eq!(copies, 1, "stored exactly once");
    assert_eq!(history.messages.len(), 1);
    // A different id is a different message.
    let other = alice.send(dm.conversation_id, "retry-me-2", "only once please").await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.message.unwrap().seq, m1.seq + 1);
    server.stop().await;
}
