//! A slow consumer in a 100-member group: one member's session stops
//! reading while messages keep coming. It is cut off with RESYNC_REQUIRED
//! (never stalling the room), the other 98 readers get every message, and
//! their send → delivery latency with the stalled member present is printed
//! beside the same run without it. (A figure, not an assertion: timing
//! targets are the benchmarks' job.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use confab_client::{Connection, Event, TransportKind::Tcp};
use confab_protocol::pb::{self, client_frame::Body};

const MEMBERS: usize = 100;
const MESSAGES: usize = 300;

/// Receives until `MESSAGES` texts starting with `tag` arrived; returns
/// each one's latency (the body carries the send time, in µs since `t0`).
async fn collect(mut conn: Connection, tag: String, t0: Instant) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(MESSAGES);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while lat.len() < MESSAGES {
        match tokio::time::timeout_at(deadline, conn.next_event()).await.expect("every message arrives") {
            Some(Event::Inbox(e)) => {
                if let Some(pb::inbox_event::Event::Message(m)) = e.event
                    && let Some(pb::message::Content::Text(t)) = m.content
                    && let Some(rest) = t.strip_prefix(&tag)
                {
                    let sent_us: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                    lat.push(t0.elapsed().saturating_sub(Duration::from_micros(sent_us)));
                }
            }
            Some(Event::Closed(e)) => panic!("a reading member was cut off: {e}"),
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
    lat
}

/// A raw session whose socket has a tiny receive buffer, so that once it
/// stops reading the server's queue for it fills up after a few frames
/// instead of after megabytes of kernel buffers.
async fn stalled_session(server: &TestServer) -> Raw {
    let s = server.server();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    let tcp = socket.connect(s.tcp_addr().unwrap()).await.unwrap();
    let mut raw = Raw::tls_over(tcp, s.fingerprint()).await.unwrap();
    raw.handshake().await;
    raw
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_is_cut_off_and_the_room_keeps_its_pace() {
    let server = TestServer::start_with(|c| {
        c.outbound_queue = 64;
        c.outbound_queue_bytes = 1 << 20;
        // Without a bound, the kernel parks megabytes for a peer that
        // stopped reading before the server's own queue sees any of it.
        c.tcp_send_buffer_bytes = 64 * 1024;
        c.limits.send_rate_per_sec = 100_000;
        c.limits.send_burst = 100_000;
        // The owner sends 1,000 requests/s over three runs: the general
        // request bucket (200/s, burst 400 by default) would refuse some.
        c.limits.request_rate_per_sec = 100_000;
        c.limits.request_burst = 100_000;
    })
    .await;
    let owner = server.connect(Tcp).await;
    owner.signup("owner", "owner-password", "o").await.unwrap();
    let mut names = Vec::new();
    let mut tokens = Vec::new();
    for i in 1..MEMBERS {
        let c = server.connect(Tcp).await;
        let name = format!("member{i:03}");
        tokens.push(c.signup(&name, "member-password", "m").await.unwrap().token);
        names.push(name);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let group = owner.create_group("busy room", &refs[..50]).await.unwrap().conversation_id;
    owner.add_members(group, &refs[50..]).await.unwrap();
    let owner = Arc::new(owner);
    let body_pad = "x".repeat(8_000);

    let mut results = Vec::new();
    // Clean, stalled, clean again: the stalled run is compared with both.
    for (run, stalled) in [false, true, false].into_iter().enumerate() {
        // Distinct ids per run: the same client_msg_id would be a retry.
        let tag = format!("run{run}-{}-", if stalled { "stalled" } else { "clean" });
        // Member 1 is the stalled one: a raw session that authenticates and
        // never reads again.
        let mut slow = None;
        if stalled {
            let mut raw = stalled_session(&server).await;
            raw.send(2, Body::Resume(pb::ResumeRequest { token: tokens[0].clone() })).await;
            assert!(matches!(raw.recv().await.body, Some(pb::server_frame::Body::AuthOk(_))));
            slow = Some(raw);
        }
        let t0 = Instant::now();
        let mut readers = tokio::task::JoinSet::new();
        for token in &tokens[1..] {
            let conn = server.connect(Tcp).await;
            conn.resume(token).await.unwrap();
            readers.spawn(collect(conn, tag.clone(), t0));
        }
        // A steady 1,000 messages/s of 8 KB: ~800 KB/s to each member.
        let sender = Arc::clone(&owner);
        let tag_s = tag.clone();
        let pad = body_pad.clone();
        let sending = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for i in 0..MESSAGES {
                tick.tick().await;
                let body = format!("{tag_s}{} {pad}", t0.elapsed().as_micros());
                sender.send(group, &format!("{tag_s}{i}"), &body).await.unwrap();
            }
        });
        let mut all = Vec::new();
        while let Some(r) = readers.join_next().await {
            all.extend(r.unwrap());
        }
        sending.await.unwrap();
        all.sort();
        eprintln!(
            "100-member group, {} deliveries to 98 readers, {}: p50 {:?}, p99 {:?}, max {:?}",
            all.len(),
            if stalled { "one member stalled" } else { "nobody stalled" },
            p(&all, 0.5),
            p(&all, 0.99),
            all[all.len() - 1]
        );
        assert_eq!(all.len(), 98 * MESSAGES, "every reader got every message");
        results.push(p(&all, 0.99));

        if let Some(mut raw) = slow {
            // The stalled session was cut off: its stream ends (with
            // RESYNC_REQUIRED when the socket had room for it).
            let overflows =
                server.server().core().metrics.overflow_disconnects.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(overflows, 1, "the stalled session's queue overflowed");
            let mut resync = false;
            while let Some(f) = tokio::time::timeout(Duration::from_secs(20), raw.try_recv()).await.expect("closed") {
                if let Some(pb::server_frame::Body::Error(e)) = f.body {
                    assert_eq!(e.code, confab_protocol::ErrorCode::RESYNC_REQUIRED.0);
                    resync = true;
                }
            }
            eprintln!("the stalled member was disconnected (RESYNC_REQUIRED frame seen: {resync})");
            // And it catches up fully from the store.
            let back = server.connect(Tcp).await;
            let auth = back.resume(&tokens[0]).await.unwrap();
            let mut got = 0;
            let mut after = 0;
            loop {
                let page = back.sync(after, 0).await.unwrap();
                for e in &page.events {
                    if let Some(pb::inbox_event::Event::Message(m)) = &e.event
                        && m.client_msg_id.starts_with(&tag)
                    {
                        got += 1;
                    }
                }
                after = page.events.last().map_or(after, |e| e.inbox_seq);
                if !page.has_more {
                    break;
                }
            }
            assert_eq!(after, auth.inbox_head);
            assert_eq!(got, MESSAGES, "the stalled member catches up on every message");
        }
    }
    let clean = (results[0] + results[2]) / 2;
    eprintln!(
        "p99 with a stalled member is {:.0}% of the p99 without (mean of the two clean runs)",
        results[1].as_secs_f64() / clean.as_secs_f64().max(1e-9) * 100.0
    );
    server.stop().await;
}
