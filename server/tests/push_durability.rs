//! The push outbox is durable: a job queued before a restart is delivered
//! after it, and a retry scheduled before a restart (honouring
//! Retry-After) is delivered by the new process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod push_support;

use std::time::Duration;

use push_support::*;

const WITHIN: Duration = Duration::from_secs(8);

/// After the one notification for m1: alice sends again, which queues a new
/// job (m1's is done, not pending), and that notification (seq 2) is the
/// next request the receiver gets, so m1's was not sent twice.
async fn next_is_a_new_notification(server: &PushServer, receiver: &mut Receiver, secret: &[u8], alice: &str) {
    let conn = server.connect().await;
    conn.resume(alice).await.unwrap();
    let dm = conn.open_direct("bob").await.unwrap().conversation_id;
    let queued = server.metrics().queued.load(std::sync::atomic::Ordering::Relaxed);
    conn.send(dm, "m2", "pong?").await.unwrap();
    assert_eq!(server.metrics().queued.load(std::sync::atomic::Ordering::Relaxed), queued + 1, "a new job for m2");
    let p = verified_webhook(&receiver.next(WITHIN).await, secret);
    assert_eq!(p["seq"], "2", "the next request is m2's: {p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_enqueue_and_delivery_still_delivers() {
    let mut receiver = Receiver::http().await;
    let mut server = PushServer::start(|c| c.push.delay_ms = 2500).await;
    let alice = server.connect().await;
    let a = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect().await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let secret = register_webhook(&bob, &receiver.url("/phone")).await;
    drop(bob);
    let dm = alice.open_direct("bob").await.unwrap();
    alice.send(dm.conversation_id, "m1", "ping").await.unwrap();
    drop(alice);

    // The job is in the store, not yet due: stop the server now.
    server.restart().await;
    assert!(receiver.try_next().is_none(), "delivered before the restart: the test proves nothing");

    let p = verified_webhook(&receiver.next(WITHIN).await, &secret);
    assert_eq!((p["seq"].as_str(), p["unread_count"].as_str()), (Some("1"), Some("1")));
    // The receiver answers after recording the request: wait for the
    // server to see the answer.
    eventually(WITHIN, || async { (server.metrics().sent_total() == 1).then_some(()) }).await;
    next_is_a_new_notification(&server, &mut receiver, &secret, &a.token).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_survives_a_restart_and_honours_retry_after() {
    let mut receiver = Receiver::http().await;
    // The push service is briefly unavailable and says when to come back.
    receiver.then(&[Answer::RetryAfter(503, 2)]);
    let mut server = PushServer::start(|_| {}).await;
    let alice = server.connect().await;
    let a = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect().await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let secret = register_webhook(&bob, &receiver.url("/phone")).await;
    drop(bob);
    let dm = alice.open_direct("bob").await.unwrap();
    alice.send(dm.conversation_id, "m1", "ping").await.unwrap();
    drop(alice);

    let first = receiver.next(WITHIN).await;
    let p1 = verified_webhook(&first, &secret);
    eventually(WITHIN, || async { (server.metrics().failed_count("http_5xx") == 1).then_some(()) }).await;
    server.restart().await;

    let second = receiver.next(WITHIN).await;
    let p2 = verified_webhook(&second, &secret);
    assert_eq!(p1["id"], p2["id"], "the same notification, retried");
    let gap = second.at - first.at;
    assert!(gap >= Duration::from_millis(1900), "Retry-After: 2 was not honoured ({gap:?})");
    eventually(WITHIN, || async { (server.metrics().sent_total() == 1).then_some(()) }).await;
    next_is_a_new_notification(&server, &mut receiver, &secret, &a.token).await;
    server.stop().await;
}
