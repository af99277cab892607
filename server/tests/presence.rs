//! Presence and typing: subscribers see online/away/offline; a client that
//! vanishes without closing turns offline within 2.5 heartbeat intervals
//! plus the grace period; a reconnect inside the grace period is not
//! reported; updates are coalesced; unsubscribed sessions hear nothing;
//! typing reaches the other members only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use confab_client::TransportKind::{Quic, Tcp};
use confab_client::{Connection, Event};
use confab_protocol::pb::{self, PresenceState, client_frame::Body};

const HEARTBEAT_MS: u64 = 1000;
const GRACE_MS: u64 = 1000;
/// How long the tests wait for something that must happen.
const WITHIN: Duration = Duration::from_secs(10);

async fn server(coalesce_ms: u64) -> TestServer {
    TestServer::start_with(|c| {
        c.heartbeat_interval_ms = HEARTBEAT_MS;
        c.presence_grace_ms = GRACE_MS;
        c.presence_coalesce_ms = coalesce_ms;
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

/// The next presence event, which must come.
async fn expect_presence(conn: &mut Connection, what: &str) -> pb::Presence {
    let ms = WITHIN.as_millis() as u64;
    next_presence(conn, ms).await.unwrap_or_else(|| panic!("{what}: no presence event within {WITHIN:?}"))
}

/// The next typing event, which must come.
async fn next_typing(conn: &mut Connection) -> pb::TypingEvent {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await.expect("no typing event in time") {
            Some(Event::Typing(t)) => return t,
            Some(_) => continue,
            None => panic!("event stream ended"),
        }
    }
}

fn state(p: &pb::Presence) -> PresenceState {
    PresenceState::try_from(p.state).unwrap()
}

/// Asks on `probe`'s own subscription (so the watcher under test gets no
/// extra events) until `user` shows as `want`.
async fn until_presence(probe: &Connection, user: &str, want: PresenceState) {
    eventually(&format!("{user} {want:?}"), WITHIN, || async {
        let now = probe.subscribe_presence(&[user]).await.unwrap();
        (state(&now[0]) == want).then_some(())
    })
    .await;
}

/// Waits until the server has seen a session end: `online` users left.
async fn until_users_online(server: &TestServer, online: f64) {
    eventually(&format!("{online} users online"), WITHIN, || async {
        (metric(server, "confab_users_online").await == online).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_client_goes_offline_within_the_bound() {
    let server = server(1000).await;
    let mut watcher = server.connect(Quic).await;
    watcher.signup("watcher", "watcher-password", "w").await.unwrap();
    let probe = server.connect(Tcp).await;
    probe.signup("probe", "probe-password", "p").await.unwrap();
    let bob = server.connect(Tcp).await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    drop(bob);
    // Past the grace period, as the probe sees it.
    until_presence(&probe, "bob", PresenceState::Offline).await;

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

/// No coalescing here, so that any update is sent the moment it happens
/// and a later update proves an earlier one was never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_inside_grace_does_not_flap() {
    let server = server(0).await;
    let mut watcher = server.connect(Quic).await;
    watcher.signup("watcher", "watcher-password", "w").await.unwrap();
    let bob = server.connect(Tcp).await;
    let b = bob.signup("bob", "bob-password", "phone").await.unwrap();
    let now = watcher.subscribe_presence(&["bob"]).await.unwrap();
    assert_eq!(state(&now[0]), PresenceState::Online);

    let dropped_at = Instant::now();
    drop(bob);
    // The server has seen the session end (so its grace period runs)
    // before bob is back.
    until_users_online(&server, 1.0).await;
    let seen_down = Instant::now();
    let bob = server.connect(Quic).await;
    bob.resume(&b.token).await.unwrap();
    assert!(
        dropped_at.elapsed() < Duration::from_millis(GRACE_MS),
        "the reconnect took {:?}, past the grace period: this run shows nothing",
        dropped_at.elapsed()
    );
    // Past the end of the grace period (the server's clock is this one), so
    // an offline the reconnect failed to cancel would have been sent by
    // now; then a status change, which must be the first thing the watcher
    // hears: a flap would have come first.
    tokio::time::sleep_until((seen_down + Duration::from_millis(GRACE_MS + 300)).into()).await;
    bob.set_status(PresenceState::Away).await.unwrap();
    let first = expect_presence(&mut watcher, "away").await;
    assert_eq!(state(&first), PresenceState::Away, "no offline/online flap before it: {first:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_coalesced_to_the_latest_state() {
    let server = server(1000).await;
    let mut watcher = server.connect(Quic).await;
    watcher.signup("watcher", "watcher-password", "w").await.unwrap();
    let bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let now = watcher.subscribe_presence(&["bob"]).await.unwrap();
    assert_eq!(state(&now[0]), PresenceState::Online);

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
    while seen.last() != Some(&PresenceState::Online) {
        seen.push(state(&expect_presence(&mut watcher, "the burst's latest state").await));
    }
    // Then bob goes away for good: offline (never part of the burst) ends
    // the updates, so whatever came before it was the burst's.
    drop(bob);
    loop {
        match state(&expect_presence(&mut watcher, "offline").await) {
            PresenceState::Offline => break,
            s => seen.push(s),
        }
    }
    assert!(seen.len() <= 3, "coalesced to {} updates: {seen:?}", seen.len());
    assert_eq!(*seen.last().unwrap(), PresenceState::Online, "latest state wins: {seen:?}");
    server.stop().await;
}

/// No coalescing here, so that any update is sent the moment it happens
/// and a later update proves an earlier one was never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_sessions_hear_nothing() {
    let server = server(0).await;
    let mut watcher = server.connect(Quic).await;
    watcher.signup("watcher", "watcher-password", "w").await.unwrap();
    let mut other = server.connect(Tcp).await;
    other.signup("other", "other-password", "o").await.unwrap();
    let bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let carol = server.connect(Tcp).await;
    carol.signup("carol", "carol-password", "c").await.unwrap();
    watcher.subscribe_presence(&["bob", "carol"]).await.unwrap();
    other.subscribe_presence(&["carol"]).await.unwrap();

    // The watcher unsubscribes from bob, and `other` never subscribed: bob
    // going away reaches neither. Carol going away after it reaches both,
    // and is the first thing they hear.
    watcher.unsubscribe_presence(&["bob"]).await.unwrap();
    bob.set_status(PresenceState::Away).await.unwrap();
    carol.set_status(PresenceState::Away).await.unwrap();
    for (who, conn) in [("watcher", &mut watcher), ("other", &mut other)] {
        let first = expect_presence(conn, who).await;
        assert_eq!((first.username.as_str(), state(&first)), ("carol", PresenceState::Away), "{who}: {first:?}");
    }
    assert_eq!(code(watcher.subscribe_presence(&["nobody"]).await), confab_protocol::ErrorCode::USER_NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_other_members_only() {
    let server = server(1000).await;
    let alice = server.connect(Quic).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let mut bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "b").await.unwrap();
    let mut carol = server.connect(Tcp).await;
    carol.signup("carol", "carol-password", "c").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    let carols = alice.open_direct("carol").await.unwrap().conversation_id;

    alice.typing(dm).unwrap();
    let typing = next_typing(&mut bob).await;
    assert_eq!((typing.conversation_id, typing.username.as_str()), (dm, "alice"));
    assert_eq!(typing.expires_in_ms, 6000);
    // A non-member's notice goes nowhere. A ping round trip on carol's
    // (TCP) session has the server take her notice in hand before alice's
    // next ones are sent: those must be the first typing bob and carol see.
    carol.typing(dm).unwrap();
    carol.ping(1).await.unwrap();
    alice.typing(dm).unwrap();
    alice.typing(carols).unwrap();
    let t = next_typing(&mut bob).await;
    assert_eq!((t.conversation_id, t.username.as_str()), (dm, "alice"), "bob got {t:?}");
    let t = next_typing(&mut carol).await;
    assert_eq!((t.conversation_id, t.username.as_str()), (carols, "alice"), "carol got {t:?}");
    server.stop().await;
}

/// §9.2: a subscription lists each requested user once, in request order,
/// however often the name is repeated.
#[tokio::test]
async fn a_repeated_name_is_listed_once() {
    let server = server(1000).await;
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    for name in ["bob", "carol"] {
        let c = server.connect(Tcp).await;
        c.signup(name, &format!("{name}-password"), "x").await.unwrap();
    }
    let list = alice.subscribe_presence(&["carol", "bob", "carol", "bob", "carol"]).await.unwrap();
    let names: Vec<&str> = list.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(names, ["carol", "bob"]);
}

/// A session subscribes to at most `max_presence_subscriptions` users, all
/// requests together: the one that would pass it is refused whole with
/// TOO_MANY_ITEMS, and names already held do not count twice.
#[tokio::test]
async fn presence_subscriptions_stop_at_the_advertised_limit() {
    let server = TestServer::start_with(|c| c.limits.max_presence_subscriptions = 3).await;
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    assert_eq!(alice.limits().max_presence_subscriptions, 3, "the limit is advertised in Welcome");
    for name in ["bob", "carol", "dave", "erin"] {
        let c = server.connect(Tcp).await;
        c.signup(name, &format!("{name}-password"), "x").await.unwrap();
    }
    assert_eq!(alice.subscribe_presence(&["bob", "carol"]).await.unwrap().len(), 2);
    assert_eq!(code(alice.subscribe_presence(&["dave", "erin"]).await), confab_protocol::ErrorCode::TOO_MANY_ITEMS);
    // Nothing of the refused request was taken: one more still fits, and a
    // name already held is not counted again.
    assert_eq!(alice.subscribe_presence(&["bob", "dave"]).await.unwrap().len(), 2);
    assert_eq!(code(alice.subscribe_presence(&["erin"]).await), confab_protocol::ErrorCode::TOO_MANY_ITEMS);
}
