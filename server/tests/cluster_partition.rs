//! Cluster mode, scenario 6: a network partition made by the test itself.
//! Node c runs in a network namespace of its own with two links to the
//! host: one to NATS, one for its clients. Under load the NATS link is
//! cut: c's clients get retryable errors and c acknowledges nothing; its
//! partitions move to a and b, which go on serving; after the heal c is
//! fenced out of what it owned, rejoins, and nothing acknowledged is lost
//! or doubled.
//!
//! Needs root and iproute2 (`ip netns`, veth): skipped without them, or
//! failed under `CONFAB_REQUIRE_E2E=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::chaos::{Directory, Ledger, check_history, check_inbox, sender};
use common::cluster::{Nats, nats_server, node_flags, start_node};
use common::daemon::Daemon;
use confab_client::TransportKind;

const PARTITIONS: u32 = 8;
const PER_SENDER: usize = 100;
const DAVE: usize = 1000;

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// A network namespace with two veth links to the host: `nats` (host
/// 10.213.x.1, namespace 10.213.x.2) and `clients` (10.213.y.1/.2).
struct Netns {
    name: String,
    nats_host_if: String,
    nats_host: String,
    client_ns: String,
}

impl Netns {
    fn create() -> Option<Netns> {
        let id = std::process::id() % 200 + 20;
        let name = format!("confab-cut-{id}");
        let (nats_if, client_if) = (format!("cfn{id}"), format!("cfc{id}"));
        let (nats_net, client_net) = (format!("10.213.{id}"), format!("10.214.{id}"));
        let _ = ip(&["netns", "del", &name]);
        let ok = ip(&["netns", "add", &name])
            && ip(&["link", "add", &nats_if, "type", "veth", "peer", "name", "n0", "netns", &name])
            && ip(&["link", "add", &client_if, "type", "veth", "peer", "name", "c0", "netns", &name])
            && ip(&["addr", "add", &format!("{nats_net}.1/30"), "dev", &nats_if])
            && ip(&["addr", "add", &format!("{client_net}.1/30"), "dev", &client_if])
            && ip(&["link", "set", &nats_if, "up"])
            && ip(&["link", "set", &client_if, "up"])
            && ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{nats_net}.2/30"), "dev", "n0"])
            && ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{client_net}.2/30"), "dev", "c0"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "n0", "up"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "c0", "up"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let ns = Netns {
            name,
            nats_host_if: nats_if,
            nats_host: format!("{nats_net}.1"),
            client_ns: format!("{client_net}.2"),
        };
        ok.then_some(ns)
    }

    fn cut(&self) {
        assert!(ip(&["link", "set", &self.nats_host_if, "down"]), "cutting the NATS link");
    }

    fn heal(&self) {
        assert!(ip(&["link", "set", &self.nats_host_if, "up"]), "healing the NATS link");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The partitions whose lease `node` holds.
async fn owned_by(nats: &Nats, node: &str) -> Vec<u32> {
    let urls: Vec<async_nats::ServerAddr> = nats.urls().split(',').filter_map(|u| u.parse().ok()).collect();
    let Ok(client) = async_nats::connect(urls).await else { return Vec::new() };
    let Ok(kv) = async_nats::jetstream::new(client).get_key_value("confab_owners").await else { return Vec::new() };
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        if let Ok(Some(v)) = kv.get(format!("p{p}")).await
            && v.as_ref() == node.as_bytes()
        {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_acks_nothing_and_loses_its_partitions() {
    let test = "cluster network partition (server/tests/cluster_partition.rs)";
    let Some(binary) = nats_server(test) else { return };
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let netns = if root { Netns::create() } else { None };
    let Some(netns) = netns else {
        common::e2e::require_tools_or_skip(test, &["root and iproute2 (ip netns, veth)".to_string()]);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start_on(binary, dir.path(), "0.0.0.0").await;
    let a = start_node(&nats, &dir.path().join("a"), "a", PARTITIONS).await;
    let b = start_node(&nats, &dir.path().join("b"), "b", PARTITIONS).await;
    let flags = node_flags(&nats.urls_at(&netns.nats_host), "c", PARTITIONS);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Daemon::start_in_netns(&netns.name, &netns.client_ns, &dir.path().join("c"), &flags).await;
    let directory = Directory::new(&[&a, &b, &c]);

    // Users and conversations, and senders on every node (dave on c).
    let mut users = Vec::new();
    for (i, name) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
        let node = [&a, &b, &a, &c][i];
        let conn = node.connect(TransportKind::Tcp).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let ok = loop {
            match conn.signup(name, &format!("{name}-password"), "main").await {
                Ok(ok) => break ok,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("signup {name}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                Err(e) => panic!("signup {name}: {e}"),
            }
        };
        users.push(ok.token);
    }
    let (alice, _) = directory.session(0, &users[0]).await;
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    let group = alice.create_group("cut", &["bob", "carol", "dave"]).await.unwrap().conversation_id;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut load = tokio::task::JoinSet::new();
    // dave (through c) sends more, so he is still sending when c is cut off.
    let plan = [(0, dm, 0, "alice", PER_SENDER), (1, group, 1, "bob", PER_SENDER), (3, group, 2, "dave", DAVE)];
    for (user, conversation, node, prefix, count) in plan {
        let (dir, token, ledger) = (directory.clone(), users[user].clone(), Arc::clone(&ledger));
        load.spawn(sender(dir, node, token, conversation, prefix.to_string(), count, ledger));
    }
    let acked_by = |prefix: &str| ledger.lock().unwrap().acked.keys().filter(|k| k.starts_with(prefix)).count();
    // Acknowledged through c (node 2): dave's sender moves to another node
    // when c keeps it waiting, and what a or b acknowledge is fine.
    let acked_via_c = || ledger.lock().unwrap().via.values().filter(|n| **n == 2).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_by("dave") < PER_SENDER / 4 {
        assert!(Instant::now() < deadline, "dave's sends through c did not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // c owns some partitions before the cut (its share, once rebalanced).
    let deadline = Instant::now() + Duration::from_secs(30);
    while owned_by(&nats, "c").await.is_empty() {
        assert!(Instant::now() < deadline, "c never got a share of the partitions");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c_owned = owned_by(&nats, "c").await;
    eprintln!("c owns partitions {c_owned:?} before the cut");

    netns.cut();
    // Whatever c was doing when the link went down settles within a
    // publish timeout (1.5 s); from then on it acknowledges nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let via_c_at_cut = acked_via_c();
    let others_at_cut = acked_by("alice") + acked_by("bob");
    // a and b take c's partitions over (leases of 3 s) and go on serving.
    let want = (others_at_cut + 40).min(2 * PER_SENDER);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_by("alice") + acked_by("bob") < want {
        assert!(Instant::now() < deadline, "a and b stopped serving while c was cut off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its partitions move to a and b once its leases run out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !owned_by(&nats, "c").await.is_empty() {
        assert!(Instant::now() < deadline, "c's partitions never moved while it was cut off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(acked_via_c(), via_c_at_cut, "c acknowledged sends while it could not reach NATS");
    let retries = ledger.lock().unwrap().retries;
    assert!(retries > 0, "c's client never got a retryable error");

    netns.heal();
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert_eq!(ledger.acked.len(), 2 * PER_SENDER + DAVE);
    eprintln!("{} acknowledged, {} retries", ledger.acked.len(), ledger.retries);
    let mut sessions = Vec::new();
    for (i, token) in users.iter().enumerate() {
        sessions.push(directory.session(i, token).await.0);
    }
    let history = check_history(&sessions[0], dm, &ledger).await;
    for session in &sessions[..2] {
        check_inbox(session, dm, &history).await;
    }
    let history = check_history(&sessions[1], group, &ledger).await;
    for session in &sessions {
        check_inbox(session, group, &history).await;
    }
}
