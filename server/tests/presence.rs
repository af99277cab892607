//! Presence and typing: subscribers see online/away/offline; a client that
//! vanishes without closing turns offline within 2.5 heartbeat intervals
//! plus the grace period; a reconnect inside the grace period is not
//! reported; updates are coalesced; typing reaches the other members only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use confab_client::TransportKind::{Quic, Tcp};
use confab_client::{Connection, Event};
use confab_protocol::pb::{self, PresenceState, client_frame::Body};

const HEARTBEAT_MS: u64 = 1000;
const GRACE_MS: u64 = 1000;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.heartbeat_interval_ms = HEARTBEAT_MS;
        c.presence_grace_ms = GRACE_MS;
    })
    .await
}

/// The next presence event, within `ms`.
async fn next_presence(conn: &mut Connection, ms: u64) -> Option<pb::Presence> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await {
            Ok(Some(Event::Presence(p))) => return Some(p),
            Ok(Some(Event::Closed(e))) => panic!("closed: {e}"),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

fn state(p: &pb::Presence) -> PresenceState {
    PresenceState::try_from(p.state).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_client_goes_offline_within_the_bound() {
    let server = server().await;
    let mut watcher = server.connect(Quic).await;
    watcher.signup("watcher", "watcher-password", "w").await.unwrap();
    let bob = server.connect(Tcp).await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    drop(bob);
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 300)).await;

    let now = watcher.subscribe_presence(&["bob"]).await.unwrap();
    assert_eq!(state(&now[0]), PresenceState::Offline);
    assert!(now[0].last_seen_ms > 0, "last-seen is known");

    // Bob comes back on a raw connection, then goes silent without closing:
    // no FIN, no heartbeats, as when a phone loses its network.
    let mut raw = Raw::hello(&server).await;
    raw.send(2, Body::Resume(pb::ResumeRequest { token: b.token.clone() })).await;
    assert!(matches!(raw.recv().await.body, Some(pb::server_frame::Body::AuthOk(_))));
    let silent_since = Instant::now();
    // (Coalesced: the subscription just answered, so this may wait up to 1 s.)
    let online = next_presence(&mut watcher, 2000).await.expect("online");
    assert_eq!(state(&online), PresenceState::Online);

    let bound = (HEARTBEAT_MS as f64 * 2.5) as u64 + GRACE_MS;
    let offline = next_presence(&mut watcher, bound + 1500).await.expect("offline within the bound");
    let took = silent_since.elapsed();
    assert_eq!(state(&offline), PresenceState::Offline);
    assert!(offline.last_seen_ms > 0);
    assert!(took >= Duration::from_millis(bound - 200), "not before heartbeat timeout + grace ({took:?})");
    drop(raw);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_inside_grace_does_not_flap() {
    let server = server().await;
    let mut watcher = server.connect(Quic).await;
    watcher.signup("watcher", "watcher-password", "w").await.unwrap();
    let bob = server.connect(Tcp).await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    let now = watcher.subscribe_presence(&["bob"]).await.unwrap();
    assert_eq!(state(&now[0]), PresenceState::Online);

    drop(bob);
    tokio::time::sleep(Duration::from_millis(GRACE_MS / 4)).await;
    let bob = server.connect(Quic).await;
    bob.resume(&b.token).await.unwrap();
    assert!(next_presence(&mut watcher, 2 * GRACE_MS).await.is_none(), "no offline/online flap");

    // Away is reported (the only device), and back again, coalesced: a
    // burst of flips yields few updates and ends on the latest state.
    bob.set_status(PresenceState::Away).await.unwrap();
    assert_eq!(state(&next_presence(&mut watcher, 2000).await.unwrap()), PresenceState::Away);
    for i in 0..10 {
        let s = if i % 2 == 0 { PresenceState::Online } else { PresenceState::Away };
        bob.set_status(s).await.unwrap();
    }
    bob.set_status(PresenceState::Online).await.unwrap();
    let mut seen = Vec::new();
    while let Some(p) = next_presence(&mut watcher, 1500).await {
        seen.push(state(&p));
    }
    assert!(!seen.is_empty() && seen.len() <= 3, "coalesced to {} updates: {seen:?}", seen.len());
    assert_eq!(*seen.last().unwrap(), PresenceState::Online, "latest state wins");

    // Unsubscribed (or never subscribed) sessions hear nothing.
    let mut other = server.connect(Tcp).await;
    other.signup("other", "other-password", "o").await.unwrap();
    watcher.unsubscribe_presence(&["bob"]).await.unwrap();
    bob.set_status(PresenceState::Away).await.unwrap();
    assert!(next_presence(&mut watcher, 1500).await.is_none());
    assert!(next_presence(&mut other, 100).await.is_none());
    assert_eq!(code(watcher.subscribe_presence(&["nobody"]).await), confab_protocol::ErrorCode::USER_NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_other_members_only() {
    let server = server().await;
    let alice = server.connect(Quic).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let mut bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "b").await.unwrap();
    let mut carol = server.connect(Tcp).await;
    carol.signup("carol", "carol-password", "c").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;

    alice.typing(dm).unwrap();
    let typing = loop {
        match tokio::time::timeout(Duration::from_secs(3), bob.next_event()).await.unwrap().unwrap() {
            Event::Typing(t) => break t,
            _ => continue,
        }
    };
    assert_eq!((typing.conversation_id, typing.username.as_str()), (dm, "alice"));
    assert_eq!(typing.expires_in_ms, 6000);
    // A non-member's notice goes nowhere.
    carol.typing(dm).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, bob.next_event()).await {
        assert!(!matches!(ev, Event::Typing(_)), "unexpected {ev:?}");
    }
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), carol.next_event()).await {
        assert!(!matches!(ev, Event::Typing(_)), "unexpected {ev:?}");
    }
    server.stop().await;
}
