//! Cluster mode, part 2: push to a device that is away from every node.
//! The push outbox lives in the user's partition, so the job is decided
//! once, by that partition's owner, whichever node the sender used; and
//! when that owner is killed (-9) while the job waits for its delay, the
//! node that takes the partition over sends it: once, not twice, not
//! never. Every node advertises (and signs Web Push with) the same VAPID
//! key. Real processes: three nats-servers, three confabd nodes, and a
//! webhook receiver on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod push_support;

use std::time::{Duration, Instant};

use common::chaos::Directory;
use common::cluster::{Nats, metrics, nats_server, settled, settled_ownership, start_node_with_config};
use common::daemon::Daemon;
use confab_client::{Connection, TransportKind};
use push_support::{Receiver, register_webhook, verified_webhook};

const PARTITIONS: u32 = 8;
const WITHIN: Duration = Duration::from_secs(15);

/// Webhooks to loopback over plain HTTP; a delay long enough to kill the
/// job's owner before it is due.
const PUSH: &str = "[push]\nallow_http = true\nallow_private_addresses = true\ndelay_ms = 2500\n\
                    coalesce_ms = 500\ntimeout_ms = 1000\nretry_base_ms = 100\nretry_max_ms = 1000\n";

/// The node (index) whose writer queued a push job since `before`.
async fn queued_on(nodes: &[Option<Daemon>], before: &[u64]) -> Option<usize> {
    for (i, n) in nodes.iter().enumerate() {
        let Some(n) = n else { continue };
        let queued = metrics(&n.http).await.get("confab_push_queued_total").copied().unwrap_or(0);
        if queued > before[i] {
            return Some(i);
        }
    }
    None
}

async fn queued_counts(nodes: &[Option<Daemon>]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(match n {
            Some(n) => metrics(&n.http).await.get("confab_push_queued_total").copied().unwrap_or(0),
            None => 0,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_away_from_every_node_is_pushed_once_even_when_the_jobs_owner_dies() {
    let Some(binary) = nats_server("cluster test (server/tests/cluster_push.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(Some(start_node_with_config(&nats, &dir.path().join(id), id, PARTITIONS, PUSH).await));
    }
    // Spread the partitions first, so the job's owner is any node.
    settled_ownership(&nodes.iter().flatten().collect::<Vec<_>>(), PARTITIONS).await;
    let mut receiver = Receiver::http().await;

    let node = |i: usize| nodes[i].as_ref().unwrap();
    // Web Push: every node signs with the one VAPID key a browser was
    // given by whichever node it subscribed through.
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(node(i).connect(TransportKind::Tcp).await.welcome().vapid_public_key.clone());
    }
    assert!(!keys[0].is_empty(), "Web Push is on");
    assert!(keys.iter().all(|k| *k == keys[0]), "one VAPID key across the cluster: {keys:?}");
    let alice = node(0).connect(TransportKind::Tcp).await;
    let a = settled(|| alice.signup("alice", "alice-password", "laptop")).await;
    let bob = node(1).connect(TransportKind::Tcp).await;
    settled(|| bob.signup("bob", "bob-password", "phone")).await;
    let secret = register_webhook(&bob, &receiver.url("/bob-phone")).await;
    drop(bob);
    let dm = settled(|| alice.open_direct("bob")).await.conversation_id;

    // One job, on the owner of bob's partition, whichever node alice uses.
    let before = queued_counts(&nodes).await;
    settled(|| alice.send(dm, "m1", "are you there?")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let owner = loop {
        if let Some(i) = queued_on(&nodes, &before).await {
            break i;
        }
        assert!(Instant::now() < deadline, "no node queued a push job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = queued_counts(&nodes).await;
    let total: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    assert_eq!(total, 1, "the job was queued once in the cluster: {before:?} → {after:?}");

    // The job waits for its delay (2.5 s): kill its owner now.
    assert!(receiver.try_next().is_none(), "pushed before the kill: the test proves nothing");
    nodes[owner].as_mut().unwrap().kill().await;
    nodes[owner] = None;
    eprintln!("killed node {owner}, the owner of bob's partition, with the job pending");

    // The partition's new owner sends it, once.
    let first = receiver.next(WITHIN).await;
    let p = verified_webhook(&first, &secret);
    assert_eq!((p["seq"].as_str(), p["unread_count"].as_str()), (Some("1"), Some("1")), "{p}");

    // Not twice: the next notification bob's phone gets is for a new
    // message, sent after the first one arrived.
    let live = Directory::new(&nodes.iter().flatten().collect::<Vec<_>>());
    let (alice2, _) = live.session(0, &a.token).await;
    settled(|| alice2.send(dm, "m2", "hello?")).await;
    let second = receiver.next(WITHIN).await;
    let p2 = verified_webhook(&second, &secret);
    assert_eq!(p2["seq"], "2", "the next request is m2's, not m1's again: {p2}");
    assert!(receiver.try_next().is_none(), "a third request: {:?}", receiver.try_next().map(|r| r.path));
    let _: &Connection = &alice2;
}
