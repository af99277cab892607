//! A device that is away misses nothing: everything sent meanwhile comes
//! back through sync after it reconnects, in order, none twice, and its
//! acknowledged cursor is stored server-side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::InboxTracker;
use confab_client::TransportKind::{Quic, Tcp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_catches_up_by_cursor() {
    // 250 sends in a burst: above the default send rate, which is not what
    // this test is about.
    let server = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 10_000;
        c.limits.send_burst = 10_000;
    })
    .await;
    let alice = server.connect(Quic).await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect(Tcp).await;
    let bob_auth = bob.signup("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();

    // Bob's phone reads what is there, acks, and goes away.
    let page = bob.sync(bob_auth.cursor, 0).await.unwrap();
    let mut tracker = InboxTracker::new(bob_auth.cursor);
    let first = tracker.apply_page(page.events);
    assert_eq!(first.len(), 1, "the DM's joined event");
    bob.ack_cursor(tracker.last()).await.unwrap();
    drop(bob);

    // 250 messages while he is away: more than two sync pages.
    for i in 0..250 {
        alice.send(dm.conversation_id, &format!("offline-{i}"), &format!("message {i}")).await.unwrap();
    }

    // Back again: the stored cursor says where he was.
    let bob = server.connect(Quic).await;
    let resumed = bob.resume(&bob_auth.token).await.unwrap();
    assert_eq!(resumed.cursor, tracker.last(), "cursor stored server-side");
    assert_eq!(resumed.inbox_head, resumed.cursor + 250);
    let mut tracker = InboxTracker::new(resumed.cursor);
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = bob.sync(tracker.last(), 0).await.unwrap();
        pages += 1;
        assert!(page.events.len() <= 100, "page size is capped at max_page_size");
        got.extend(tracker.apply_page(page.events));
        if !page.has_more {
            break;
        }
    }
    assert!(pages >= 3, "paged ({pages} pages)");
    let seqs: Vec<u64> = got.iter().map(|e| message(e).seq).collect();
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>(), "all, in order, once");
    for (i, e) in got.iter().enumerate() {
        assert_eq!(text(message(e)), format!("message {i}"));
    }
    // The inbox events are contiguous.
    for pair in got.windows(2) {
        assert_eq!(pair[1].inbox_seq, pair[0].inbox_seq + 1);
    }
    bob.ack_cursor(tracker.last()).await.unwrap();
    // Cursors never move backwards, and cannot pass the head.
    bob.ack_cursor(1).await.unwrap();
    let again = server.connect(Tcp).await.resume(&bob_auth.token).await.unwrap();
    assert_eq!(again.cursor, tracker.last());
    let err = bob.ack_cursor(tracker.last() + 1).await.unwrap_err();
    assert_eq!(err.code(), Some(confab_protocol::ErrorCode::INVALID_ARGUMENT));
    // Nothing after the head.
    let empty = bob.sync(tracker.last(), 0).await.unwrap();
    assert!(empty.events.is_empty() && !empty.has_more);
    server.stop().await;
}
