//! Never a silent gap: a session that stops reading is cut off once its
//! outbound queue overflows (it never stalls the sender or other members),
//! and catches up fully from the store when it comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use confab_client::InboxTracker;
use confab_client::TransportKind::{self, Quic, Tcp, Ws};
use confab_protocol::pb::{self, client_frame::Body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_catches_up() {
    let server = TestServer::start_with(|c| {
        c.outbound_queue = 16;
        c.limits.send_rate_per_sec = 10_000;
        c.limits.send_burst = 10_000;
    })
    .await;
    let alice = server.connect(Quic).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let bob_fast = server.connect(Tcp).await;
    let b = bob_fast.signup("bob", "bob-password", "fast").await.unwrap();
    let mut carol = server.connect(Tcp).await;
    carol.signup("carol", "carol-password", "c").await.unwrap();
    let g = alice.create_group("g", &["bob", "carol"]).await.unwrap().conversation_id;

    // Bob's second device authenticates and then never reads.
    let mut slow = Raw::hello(&server).await;
    slow.send(2, Body::Resume(pb::ResumeRequest { token: b.token.clone() })).await;
    assert!(matches!(slow.recv().await.body, Some(pb::server_frame::Body::AuthOk(_))));
    let start = bob_fast.sync(0, 0).await.unwrap().inbox_head;

    // 200 messages of 40 KB: far more than socket buffers plus 16 frames.
    let body = "z".repeat(40_000);
    for i in 0..200 {
        alice.send(g, &format!("big{i}"), &body).await.unwrap();
    }
    // Carol, who reads, got every one of them live.
    let mut n = 0;
    while n < 200 {
        let e = next_inbox(&mut carol).await;
        if matches!(&e.event, Some(pb::inbox_event::Event::Message(m)) if matches!(&m.content, Some(pb::message::Content::Text(t)) if *t == body))
        {
            n += 1;
        }
    }

    // The slow session was closed: reading what it has ends in EOF, and
    // nothing it got is out of order.
    let mut last_seq = 0;
    while let Some(frame) =
        tokio::time::timeout(Duration::from_secs(10), slow.try_recv()).await.expect("closed in time")
    {
        match frame.body {
            Some(pb::server_frame::Body::Event(e)) => {
                assert!(e.inbox_seq > last_seq);
                last_seq = e.inbox_seq;
            }
            Some(pb::server_frame::Body::Error(e)) => {
                // Sent only if the socket still had room; the close is what counts.
                assert_eq!(e.code, confab_protocol::ErrorCode::RESYNC_REQUIRED.0);
            }
            _ => {}
        }
    }
    let head = start + 200;
    assert!(last_seq < head, "cut off before receiving everything (got up to {last_seq} of {head})");

    // It comes back and catches up fully from where it got to.
    let back = server.connect(Tcp).await;
    back.resume(&b.token).await.unwrap();
    let mut tracker = InboxTracker::new(last_seq);
    loop {
        let page = back.sync(tracker.last(), 0).await.unwrap();
        tracker.apply_page(page.events);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(tracker.last(), head, "nothing lost");
    server.stop().await;
}

/// A kill that lands while the server is blocked writing a big frame to a
/// session does not stop mid-frame: once the peer reads again (within the
/// final write's bound) it gets the rest of that frame, whole, and then
/// the fatal Error that says why. Before the fix the session was dropped
/// mid-frame: the peer saw a truncated frame and no reason.
async fn revoked_mid_frame(kind: TransportKind) {
    let server = TestServer::start_with(|c| {
        c.outbound_queue = 1000;
        c.outbound_queue_bytes = 64 << 20;
        // A small kernel buffer: the server's write blocks early.
        c.tcp_send_buffer_bytes = 16 * 1024;
        c.limits.send_rate_per_sec = 10_000;
        c.limits.send_burst = 10_000;
    })
    .await;
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let mut bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "laptop").await.unwrap();
    let phone = server.connect(Tcp).await.login("bob", "bob-password", "phone").await.unwrap();

    // Bob's phone authenticates and then stops reading.
    let s = server.server();
    let mut slow = match kind {
        Tcp => Raw::connect(&server).await,
        Quic => Raw::quic(s.quic_addr().unwrap(), s.fingerprint()).await,
        _ => Raw::ws(s.http_addr().unwrap(), Some("confab.v1"), None).await.unwrap(),
    };
    slow.handshake().await;
    slow.send(2, Body::Resume(pb::ResumeRequest { token: phone.token.clone() })).await;
    assert!(matches!(slow.recv().await.body, Some(pb::server_frame::Body::AuthOk(_))));

    // 5.8 MB of messages: more than socket buffers and QUIC's windows
    // hold, so the server is blocked in a write to the phone.
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    let body = "z".repeat(96_000);
    for i in 0..60 {
        alice.send(dm, &format!("big{i}"), &body).await.unwrap();
    }
    // Bob's laptop, which reads, has them all: the fan-out is done.
    let mut n = 0;
    while n < 60 {
        let e = next_inbox(&mut bob).await;
        if matches!(&e.event, Some(pb::inbox_event::Event::Message(m)) if m.sender_username == "alice") {
            n += 1;
        }
    }

    // The laptop revokes the phone; the phone reads again at once.
    bob.revoke_device(phone.device_id).await.unwrap();
    // Every frame decodes (a truncated one fails), and the last is the
    // fatal DEVICE_REVOKED, followed by nothing.
    assert_eq!(slow.until_fatal(Duration::from_secs(10)).await, confab_protocol::ErrorCode::DEVICE_REVOKED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_mid_frame_gets_whole_frames_then_the_reason_tcp() {
    revoked_mid_frame(Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_mid_frame_gets_whole_frames_then_the_reason_quic() {
    revoked_mid_frame(Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_mid_frame_gets_whole_frames_then_the_reason_ws() {
    revoked_mid_frame(Ws).await;
}
