//! Cluster mode, part 2: discovery and draining, with three nats-servers
//! and three confabd nodes as real processes. `/v1/discover` on any node
//! lists the live nodes least loaded first, so new clients are steered
//! away from a loaded node; a node sent SIGTERM drops out of the list at
//! once, its clients are told to go, and, reconnecting where discovery
//! sends them, they catch up with nothing lost or doubled. `/v1/cluster`
//! shows every node, every partition's owner and every stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Nats, http_get, metrics, nats_server, settled, settled_ownership, start_node_with_config};
use common::daemon::Daemon;
use confab_client::{Event, TransportKind};
use confab_protocol::ErrorCode;
use confab_protocol::pb;

const PARTITIONS: u32 = 8;

/// The nodes `/v1/discover` on `http` lists, in order (node ids).
async fn discovered(http: &str) -> Vec<serde_json::Value> {
    let (status, body) = http_get(http, "/v1/discover").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["protocol"], "confab.v1");
    v["nodes"].as_array().unwrap().clone()
}

/// Waits (up to 20 s) until `/v1/discover` on `http` answers what `ok`
/// accepts; the last answer is in the failure.
async fn discover_until(http: &str, what: &str, ok: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = discovered(http).await;
        if ok(&nodes) {
            return nodes;
        }
        assert!(Instant::now() < deadline, "{what}: /v1/discover on {http} still answers {nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node ids of a `/v1/discover` answer, in order.
fn ids(nodes: &[serde_json::Value]) -> Vec<&str> {
    nodes.iter().map(|n| n["node"].as_str().unwrap()).collect()
}

/// The texts of conversation `dm` in a sync page, in inbox order.
fn dm_texts(page: &pb::SyncPage, dm: u64) -> Vec<String> {
    page.events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::inbox_event::Event::Message(pb::Message {
                conversation_id,
                content: Some(pb::message::Content::Text(t)),
                ..
            })) if *conversation_id == dm => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// Sends until acknowledged, with the same `client_msg_id` every time:
/// UNAVAILABLE (nothing stored) and INTERNAL (outcome unknown, §8.2) are
/// retried, as a client does while a node drains.
async fn send(conn: &confab_client::Connection, conversation: u64, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match conn.send(conversation, id, text).await {
            Ok(_) => return,
            Err(e)
                if matches!(e.code(), Some(ErrorCode::UNAVAILABLE | ErrorCode::INTERNAL))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
}

async fn node(nats: &Nats, dir: &std::path::Path, id: &str, toml: &str) -> Daemon {
    start_node_with_config(nats, dir, id, PARTITIONS, toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_steers_clients_to_the_least_loaded_node_and_a_drained_nodes_clients_move_with_nothing_lost() {
    let Some(binary) = nats_server("cluster test (server/tests/cluster_discovery.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    // Node a accepts few connections, so a handful fill most of it.
    let a = node(&nats, &dir.path().join("a"), "a", "max_connections = 40\n").await;
    let mut b = node(&nats, &dir.path().join("b"), "b", "").await;
    let c = node(&nats, &dir.path().join("c"), "c", "").await;
    settled_ownership(&[&a, &b, &c], PARTITIONS).await;

    // Every node lists all three, each with its own addresses and
    // certificate.
    for d in [&a, &b, &c] {
        let nodes = discover_until(&d.http, "all three nodes", |n| n.len() == 3).await;
        for n in &nodes {
            let owner = [&a, &b, &c].into_iter().find(|x| n["tcp"] == x.tcp.as_str()).expect("a known node");
            assert_eq!(n["fingerprint"], format!("sha256:{}", owner.fingerprint));
            assert_eq!(n["quic"], owner.quic.as_str());
            assert_eq!(n["ws"], format!("ws://{}/v1/ws", owner.http));
        }
    }

    // Load node a: 30 of its 40 connections in use. Every node then sends
    // new clients elsewhere first, and a last.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(a.connect(TransportKind::Tcp).await);
    }
    for d in [&a, &b, &c] {
        discover_until(&d.http, "node a, with 30 of its 40 connections in use, last", |n| {
            ids(n) == ["b", "c", "a"]
                || ids(n) == ["c", "b", "a"] && n[2]["load"]["connections_free"].as_u64().is_some_and(|free| free <= 10)
        })
        .await;
    }
    drop(held);

    // Alice (on node b) and Bob (on node c) talk; then node b is drained.
    let alice = b.connect(TransportKind::Tcp).await;
    let auth = settled(|| alice.signup("alice", "alice-password", "laptop")).await;
    let bob = c.connect(TransportKind::Tcp).await;
    settled(|| bob.signup("bob", "bob-password", "phone")).await;
    let dm = settled(|| bob.open_direct("alice")).await.conversation_id;
    for i in 0..5 {
        let (id, text) = (format!("before-{i}"), format!("before {i}"));
        send(&bob, dm, &id, &text).await;
    }
    // Those crossed nodes: alice's copies went to node b, bob's to c, from
    // the owner of the conversation's partition (one of the three).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut received = 0;
        for d in [&b, &c] {
            received += metrics(&d.http).await.get("confab_cluster_live_received_total").copied().unwrap_or(0);
        }
        if received > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no live frame crossed nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice = alice;
    let pid = b.child.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();

    // Alice hears GoAway (or the close) at once; the others stop naming b.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, alice.next_event()).await {
            Ok(Some(Event::GoAway(g))) => {
                assert_eq!(g.code, ErrorCode::SHUTTING_DOWN.0);
                break;
            }
            Ok(Some(Event::Closed(_)) | None) => break,
            Ok(Some(_)) => continue,
            Err(_) => panic!("alice was not told to go within 10 s of SIGTERM"),
        }
    }
    for d in [&a, &c] {
        discover_until(&d.http, "b gone after SIGTERM", |n| ids(n).len() == 2 && !ids(n).contains(&"b")).await;
    }
    // Bob goes on writing while b stops.
    for i in 0..5 {
        let (id, text) = (format!("during-{i}"), format!("during {i}"));
        send(&bob, dm, &id, &text).await;
    }
    let exited = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await;
    assert!(exited.is_ok(), "node b did not stop within 30 s of SIGTERM");

    // Alice reconnects where discovery (asked of a node still up) sends
    // her, resumes with her token and catches up: ten messages, in order,
    // each once.
    let first = discovered(&c.http).await.remove(0);
    let target = [&a, &c].into_iter().find(|x| first["tcp"] == x.tcp.as_str()).expect("a live node");
    let alice = target.connect(TransportKind::Tcp).await;
    settled(|| alice.resume(&auth.token)).await;
    // The inbox entries of a message are applied in the reader's own
    // partition after the sender's acknowledgement, and that partition may
    // be the one moving off node b: read until all ten are there.
    let want: Vec<String> =
        (0..5).map(|i| format!("before {i}")).chain((0..5).map(|i| format!("during {i}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = settled(|| alice.sync(0, 100)).await;
        if dm_texts(&page, dm).len() >= want.len() || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dm_texts(&page, dm), want);
    let seqs: Vec<u64> = page.events.iter().map(|e| e.inbox_seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "inbox without gaps: {seqs:?}");

    // The operator's view: two live nodes, every partition owned by one of
    // them, every stream with its three replicas.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(&a.http, "/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let nodes: Vec<&str> = v["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
        let owned: u64 = v["nodes"].as_array().unwrap().iter().map(|n| n["owns"].as_u64().unwrap()).sum();
        let streams = v["streams"].as_array().unwrap();
        if nodes == ["a", "c"] && owned == u64::from(PARTITIONS) && v["unowned"].as_array().unwrap().is_empty() {
            assert_eq!(v["partitions"], PARTITIONS);
            assert_eq!(streams.len(), PARTITIONS as usize);
            for s in streams {
                assert!(["a", "c"].contains(&s["owner"].as_str().unwrap()), "{s}");
                assert!(s["leader"].is_string(), "{s}");
                assert_eq!(s["replicas"].as_array().unwrap().len(), 2, "R3: a leader and two followers: {s}");
            }
            assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the cluster view did not settle: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
