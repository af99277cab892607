//! Webhook push: a device that is away gets one signed, content-free
//! notification per burst; a device that acks in time gets none, even for
//! the same user; the sender is never notified; previews only on opt-in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod push_support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use confab_client::Event;
use push_support::*;

const WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_away_device_gets_one_signed_notification_per_burst() {
    let mut receiver = Receiver::http().await;
    let server = PushServer::start(|c| c.push.delay_ms = 800).await;
    let alice = server.connect().await;
    let a = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect().await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    let secret = register_webhook(&bob, &receiver.url("/hook/bob-phone")).await;
    assert_eq!(secret.len(), 32);
    let dm = alice.open_direct("bob").await.unwrap();
    drop(bob); // the phone goes away

    // A burst: five messages sent at once, inside the delay.
    let sent_at = tokio::time::Instant::now();
    let ids: Vec<String> = (0..5).map(|i| format!("burst-{i}")).collect();
    let sends = ids.iter().map(|id| alice.send(dm.conversation_id, id, "the code is 4711"));
    let results = futures_util::future::join_all(sends).await;
    let last_seq = results.into_iter().map(|r| r.unwrap().message.unwrap().seq).max().unwrap();
    assert_eq!(last_seq, 5);

    let r = receiver.next(WITHIN).await;
    let latency = r.at - sent_at;
    eprintln!("message → webhook push latency: {latency:?} (push.delay_ms = 800)");
    assert!(latency >= Duration::from_millis(700), "sent before the delay: {latency:?}");
    assert_eq!(r.path, "/hook/bob-phone");
    assert_eq!(r.header("urgency"), "high");
    assert_eq!(r.header("ttl"), "86400");
    assert_eq!(r.header("topic"), format!("c{:x}", dm.conversation_id));
    let p = verified_webhook(&r, &secret);
    assert_eq!(p["v"], 1);
    assert_eq!(p["type"], "message");
    assert_eq!(p["user_id"], b.user_id.to_string());
    assert_eq!(p["device_id"], b.device_id.to_string());
    assert_eq!(p["conversation_id"], dm.conversation_id.to_string());
    assert_eq!(p["seq"], "5");
    assert_eq!(p["unread_count"], "5");
    assert_eq!(p["sender_id"], a.user_id.to_string());
    assert_eq!(p["sender_username"], "alice");
    assert_eq!(p["id"], format!("{}-{}-5", b.device_id, dm.conversation_id));
    assert!(p.get("preview").is_none());
    assert!(!String::from_utf8_lossy(&r.body).contains("4711"), "no message text by default");

    // Exactly one for the burst: one job was queued for the five messages.
    assert_eq!(server.metrics().queued.load(Relaxed), 1);
    eventually(WITHIN, || async { (server.metrics().sent_total() == 1).then_some(()) }).await;

    // A later message is a new notification (a new job: the burst's is
    // done), sent after the window, and the next request the receiver gets:
    // nothing more came for the burst.
    alice.send(dm.conversation_id, "later", "still there?").await.unwrap();
    assert_eq!(server.metrics().queued.load(Relaxed), 2);
    let p = verified_webhook(&receiver.next(WITHIN).await, &secret);
    assert_eq!((p["seq"].as_str(), p["unread_count"].as_str()), (Some("6"), Some("6")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_is_decided_alone_and_the_sender_is_never_notified() {
    let mut receiver = Receiver::http().await;
    let server = PushServer::start(|_| {}).await;
    let alice = server.connect().await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    register_webhook(&alice, &receiver.url("/alice")).await;
    let desktop = server.connect().await;
    let d = desktop.signup("bob", "bob-password", "desktop").await.unwrap();
    register_webhook(&desktop, &receiver.url("/bob-desktop")).await;
    let phone = server.connect().await;
    phone.login("bob", "bob-password", "phone").await.unwrap();
    let phone_secret = register_webhook(&phone, &receiver.url("/bob-phone")).await;
    drop(phone);
    let dm = alice.open_direct("bob").await.unwrap();

    // The desktop is open and acks what it gets, as a client does.
    let acker = tokio::spawn(async move {
        let mut desktop = desktop;
        while let Some(ev) = desktop.next_event().await {
            if let Event::Inbox(e) = ev {
                desktop.ack_cursor(e.inbox_seq).await.unwrap();
            }
        }
    });

    alice.send(dm.conversation_id, "m1", "lunch?").await.unwrap();
    let r = receiver.next(WITHIN).await;
    assert_eq!(r.path, "/bob-phone", "only the phone, which is away, is notified");
    let p = verified_webhook(&r, &phone_secret);
    assert_eq!(p["sender_username"], "alice");
    // The desktop acked in time: its job was looked at and skipped (so it
    // sends nothing later; the next request below is alice's).
    eventually(WITHIN, || async { (server.metrics().skipped_total().0 == 1).then_some(()) }).await;
    eventually(WITHIN, || async { (server.metrics().sent_total() == 1).then_some(()) }).await;
    assert_eq!(server.metrics().queued.load(Relaxed), 2, "jobs for bob's phone and desktop");

    // Now bob answers from a third device while alice is away: her device
    // is notified; none of bob's (the sender's) devices is.
    drop(alice);
    let bob = server.connect().await;
    bob.login("bob", "bob-password", "tablet").await.unwrap();
    bob.send(dm.conversation_id, "r1", "sure").await.unwrap();
    assert_eq!(server.metrics().queued.load(Relaxed), 3, "one job, for alice's device: none for bob's");
    let r = receiver.next(WITHIN).await;
    assert_eq!(r.path, "/alice", "the next request after the phone's");
    acker.abort();
    let _ = d;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_elsewhere_cancels_and_previews_are_opt_in() {
    let mut receiver = Receiver::http().await;
    let server = PushServer::start(|c| {
        c.push.preview = true;
        c.push.preview_chars = 10;
    })
    .await;
    let alice = server.connect().await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let desktop = server.connect().await;
    desktop.signup("bob", "bob-password", "desktop").await.unwrap();
    let phone = server.connect().await;
    phone.login("bob", "bob-password", "phone").await.unwrap();
    let secret = register_webhook(&phone, &receiver.url("/bob-phone")).await;
    drop(phone);
    let dm = alice.open_direct("bob").await.unwrap();

    // Bob reads on the desktop right away (without acking there): the
    // phone's notification is moot and not sent.
    let sent = alice.send(dm.conversation_id, "m1", "are you coming tonight?").await.unwrap();
    desktop.mark_read(dm.conversation_id, sent.message.unwrap().seq).await.unwrap();
    eventually(WITHIN, || async { (server.metrics().skipped_total().1 == 1).then_some(()) }).await;

    // Unread: the preview (enabled here) carries the start of the text. It
    // is the first request the receiver gets: m1's was never sent.
    alice.send(dm.conversation_id, "m2", "bring the ünicode cake").await.unwrap();
    let p = verified_webhook(&receiver.next(WITHIN).await, &secret);
    assert_eq!(p["seq"], "2");
    assert_eq!(p["preview"], "bring the …");
    assert_eq!(p["unread_count"], "1");
    server.stop().await;
}

/// One URL, one notification per message: a target another device of the
/// same account registers moves to it (the security review's 41 devices on
/// one webhook URL made one message 40 POSTs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_registered_by_many_devices_of_one_account_is_posted_once() {
    let mut receiver = Receiver::http().await;
    let server = PushServer::start(|_| {}).await;
    let alice = server.connect().await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let first = server.connect().await;
    first.signup("bob", "bob-password", "d0").await.unwrap();
    let url = receiver.url("/one-place");
    register_webhook(&first, &url).await;
    let mut secret = Vec::new();
    for i in 1..8 {
        let device = server.connect().await;
        device.login("bob", "bob-password", &format!("d{i}")).await.unwrap();
        secret = register_webhook(&device, &url).await;
    }
    drop(first);
    let dm = alice.open_direct("bob").await.unwrap();
    alice.send(dm.conversation_id, "m1", "how many?").await.unwrap();
    let r = receiver.next(WITHIN).await;
    // Signed with the last registration's secret: the others are gone.
    let p = verified_webhook(&r, &secret);
    assert_eq!(p["seq"], "1");
    assert_eq!(server.metrics().queued.load(Relaxed), 1, "one job for the one registered device");
    // Nothing else arrives for that message.
    let more = tokio::time::timeout(Duration::from_secs(2), receiver.next(WITHIN)).await;
    assert!(more.is_err(), "a second POST to the same URL for one message");
    server.stop().await;
}
