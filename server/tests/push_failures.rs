//! Receivers that fail: a 410 removes the target and the device is told on
//! its next session; a receiver that hangs does not slow message delivery
//! (the attempt times out and is retried).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod push_support;

use std::time::Duration;

use confab_client::Event;
use confab_protocol::pb;
use push_support::*;

const WITHIN: Duration = Duration::from_secs(5);

fn is_message(e: &pb::InboxEvent, seq: u64) -> bool {
    matches!(&e.event, Some(pb::inbox_event::Event::Message(m)) if m.seq == seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_target_is_removed_and_the_device_is_told() {
    let mut receiver = Receiver::http().await;
    receiver.answer(Answer::Status(410));
    let server = PushServer::start(|_| {}).await;
    let alice = server.connect().await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect().await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    register_webhook(&bob, &receiver.url("/expired")).await;
    drop(bob);
    let dm = alice.open_direct("bob").await.unwrap();
    alice.send(dm.conversation_id, "m1", "hello?").await.unwrap();
    assert_eq!(receiver.next(WITHIN).await.path, "/expired");

    // On its next session the device learns that its target is gone.
    let dropped = eventually(WITHIN, || async {
        let bob = server.connect().await;
        bob.resume(&b.token).await.unwrap().push_dropped
    })
    .await;
    assert_eq!(dropped.http_status, 410);
    assert!(dropped.dropped_at_ms > 0);
    assert_eq!(server.metrics().targets_removed.load(std::sync::atomic::Ordering::Relaxed), 1);

    // Nothing goes to the old target any more: m2 queues no job.
    let queued = server.metrics().queued.load(std::sync::atomic::Ordering::Relaxed);
    alice.send(dm.conversation_id, "m2", "hello??").await.unwrap();
    assert_eq!(server.metrics().queued.load(std::sync::atomic::Ordering::Relaxed), queued, "a job for a gone target");

    // Registering again clears the flag and notifications flow again.
    receiver.answer(Answer::Status(200));
    let bob = server.connect().await;
    bob.resume(&b.token).await.unwrap();
    let secret = register_webhook(&bob, &receiver.url("/fresh")).await;
    drop(bob);
    let bob = server.connect().await;
    assert_eq!(bob.resume(&b.token).await.unwrap().push_dropped, None);
    drop(bob);
    alice.send(dm.conversation_id, "m3", "there you are").await.unwrap();
    let r = receiver.next(WITHIN).await;
    assert_eq!(r.path, "/fresh");
    assert_eq!(verified_webhook(&r, &secret)["seq"], "3");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_slow_message_delivery() {
    let mut receiver = Receiver::http().await;
    receiver.answer(Answer::Hang);
    // One delivery at a time, so the hanging one holds the whole worker.
    let server = PushServer::start(|c| {
        c.push.concurrency = 1;
        c.push.timeout_ms = 1500;
    })
    .await;
    let alice = server.connect().await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let phone = server.connect().await;
    phone.signup("bob", "bob-password", "phone").await.unwrap();
    register_webhook(&phone, &receiver.url("/hangs")).await;
    drop(phone);
    let mut desktop = server.connect().await;
    desktop.login("bob", "bob-password", "desktop").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();

    alice.send(dm.conversation_id, "m0", "first").await.unwrap();
    let first = receiver.next(WITHIN).await;
    // The push is now hanging. Messages still go through at full speed,
    // stored and delivered live.
    let mut slowest = Duration::ZERO;
    for i in 1..=20 {
        let started = tokio::time::Instant::now();
        let sent = alice.send(dm.conversation_id, &format!("m{i}"), "still fast?").await.unwrap();
        let seq = sent.message.unwrap().seq;
        loop {
            match tokio::time::timeout(WITHIN, desktop.next_event()).await.unwrap() {
                Some(Event::Inbox(e)) if is_message(&e, seq) => break,
                Some(Event::Closed(e)) => panic!("desktop closed: {e}"),
                Some(_) => {}
                None => panic!("desktop event stream ended"),
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest send + live delivery while the push hangs: {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "message handling waited on the push: {slowest:?}");
    assert!(receiver.try_next().is_none(), "one attempt in flight at a time");

    // The hanging attempt times out and is retried.
    let second = receiver.next(WITHIN).await;
    assert!(second.at - first.at >= Duration::from_millis(1400), "retried before the timeout");
    eventually(WITHIN, || async { (server.metrics().failed_count("timeout") >= 1).then_some(()) }).await;
    server.stop().await;
}
