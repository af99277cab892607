//! Cluster mode, scenario 1: three NATS servers (JetStream, R3) and three
//! confabd nodes. Users on different nodes chat in a direct conversation
//! and in a group; every device receives every message once, in order,
//! wherever it is connected; seqs are contiguous; history, conversation
//! lists, read state and sync agree from every node. Everything is read
//! back over the protocol. A group of 100 with members on all three nodes:
//! every member's device gets every message once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::cluster::{Nats, nats_server, settled, start_node};
use common::daemon::Daemon;
use common::{message, text};
use confab_client::{Connection, Event, TransportKind};
use confab_protocol::ErrorCode;
use confab_protocol::pb;

const PARTITIONS: u32 = 8;

async fn signup(node: &Daemon, name: &str) -> Connection {
    let c = node.connect(TransportKind::Tcp).await;
    let password = format!("{name}-password");
    settled(|| c.signup(name, &password, "main")).await;
    c
}

/// The next inbox event of `conn` (other events skipped), within 10 s.
async fn next_inbox(conn: &mut Connection) -> pb::InboxEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await {
            Ok(Some(Event::Inbox(e))) => return e,
            Ok(Some(Event::Closed(e))) => panic!("session closed: {e}"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no inbox event within 10 s"),
        }
    }
}

/// Reads `conn`'s live events until it has seen `n` messages of
/// `conversation`; returns their (seq, text) in arrival order and checks
/// that inbox_seqs only grow.
async fn messages(conn: &mut Connection, conversation: u64, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut last_inbox = 0;
    while out.len() < n {
        let e = next_inbox(conn).await;
        assert!(e.inbox_seq > last_inbox, "inbox_seq went from {last_inbox} to {}", e.inbox_seq);
        last_inbox = e.inbox_seq;
        if let Some(pb::inbox_event::Event::Message(m)) = &e.event
            && m.conversation_id == conversation
            && matches!(m.content, Some(pb::message::Content::Text(_)))
        {
            out.push((m.seq, text(m).to_string()));
        }
    }
    out
}

/// Nodes a, b and c, each in its own directory under `dir`.
async fn three_nodes(nats: &Nats, dir: &std::path::Path) -> [Daemon; 3] {
    [
        start_node(nats, &dir.join("a"), "a", PARTITIONS).await,
        start_node(nats, &dir.join("b"), "b", PARTITIONS).await,
        start_node(nats, &dir.join("c"), "c", PARTITIONS).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_chat_in_dms_and_groups() {
    let Some(binary) = nats_server("cluster test (server/tests/cluster_basics.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let nodes = three_nodes(&nats, dir.path()).await;

    // Users on every node; usernames are unique cluster-wide.
    let mut alice = signup(&nodes[0], "alice").await;
    let mut bob = signup(&nodes[1], "bob").await;
    let mut carol = signup(&nodes[2], "carol").await;
    let again = nodes[2].connect(TransportKind::Tcp).await;
    let taken = settled(|| async { Ok(again.signup("alice", "another-password", "x").await) }).await;
    assert_eq!(taken.unwrap_err().code(), Some(ErrorCode::USERNAME_TAKEN));

    // A direct conversation across nodes: 20 messages, in order, once.
    let dm = settled(|| alice.open_direct("bob")).await.conversation_id;
    let dm_from_bob = settled(|| bob.open_direct("alice")).await.conversation_id;
    assert_eq!(dm, dm_from_bob, "one direct conversation per pair, whichever node opens it");
    for i in 0..20 {
        let (id, body) = (format!("dm-{i}"), format!("hello {i}"));
        let sent = settled(|| alice.send(dm, &id, &body)).await;
        assert_eq!(sent.message.unwrap().seq, i + 1);
    }
    let got = messages(&mut bob, dm, 20).await;
    let want: Vec<(u64, String)> = (0..20).map(|i| (i + 1, format!("hello {i}"))).collect();
    assert_eq!(got, want, "bob (node b) gets every message once, in order");
    let mine = messages(&mut alice, dm, 20).await;
    assert_eq!(mine, want, "alice's own inbox has them too");

    // A retry with the same client_msg_id from another node returns the
    // original.
    let alice_on_c = nodes[2].connect(TransportKind::Tcp).await;
    settled(|| alice_on_c.login("alice", "alice-password", "c")).await;
    let again = settled(|| alice_on_c.send(dm, "dm-3", "a different text")).await;
    assert!(again.duplicate);
    assert_eq!(again.message.unwrap().seq, 4);

    // A group with members on every node.
    let group = settled(|| alice.create_group("three nodes", &["bob", "carol"])).await.conversation_id;
    for (i, who) in [&alice, &bob, &carol].iter().enumerate() {
        let (id, body) = (format!("g-{i}"), format!("from {i}"));
        settled(|| who.send(group, &id, &body)).await;
    }
    for conn in [&mut alice, &mut bob, &mut carol] {
        let got = messages(conn, group, 3).await;
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "in seq order");
        assert_eq!(got.len(), 3);
    }
    // History and lists agree from every node; seqs are contiguous.
    let history = settled(|| carol.history(group, 0, 0, 50)).await;
    let seqs: Vec<u64> = history.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "contiguous seqs from 1");
    assert_eq!(history.messages.iter().filter(|m| matches!(m.content, Some(pb::message::Content::Text(_)))).count(), 3);
    let list = settled(|| bob.list_conversations(50)).await;
    let ids: Vec<u64> = list.conversations.iter().map(|c| c.conversation_id).collect();
    assert!(ids.contains(&dm) && ids.contains(&group), "bob's list: {ids:?}");
    let members = settled(|| carol.list_members(group)).await;
    let names: HashMap<String, i32> = members.iter().map(|m| (m.username.clone(), m.role)).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(names["alice"], pb::MemberRole::Owner as i32);

    // Read state is shared: bob reads on node b, alice sees his receipt.
    let state = settled(|| bob.mark_read(dm, 20)).await;
    assert_eq!((state.read_seq, state.unread_count), (20, 0));
    let view = settled(|| bob.get_conversation(dm)).await;
    assert_eq!(view.read_seq, 20);
    // Sync from scratch on another node gives bob the same messages.
    let bob_on_a = nodes[0].connect(TransportKind::Tcp).await;
    settled(|| bob_on_a.login("bob", "bob-password", "a")).await;
    let page = settled(|| bob_on_a.sync(0, 500)).await;
    let dm_texts: Vec<String> = page
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::inbox_event::Event::Message(m)) if m.conversation_id == dm => Some(text(m).to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(dm_texts, (0..20).map(|i| format!("hello {i}")).collect::<Vec<_>>());

    // Devices work the same from every node: alice logs in on b and c,
    // pages her device list from a, and revokes the others from a; their
    // sessions on b and c end.
    let mut others = Vec::new();
    for node in &nodes[1..] {
        let c = node.connect(TransportKind::Tcp).await;
        settled(|| c.login("alice", "alice-password", "elsewhere")).await;
        others.push(c);
    }
    let page = settled(|| alice.list_devices_page(0, 1)).await;
    assert_eq!((page.devices.len(), page.has_more), (1, true));
    let all = settled(|| alice.list_devices()).await;
    // main, the one logged in on c above, and these two.
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all.iter().filter(|d| d.current).count(), 1);
    settled(|| alice.revoke_other_devices()).await;
    for mut c in others {
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match c.next_event().await {
                    Some(Event::Closed(e)) => return e.code(),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await
        .expect("a revoked device's session on another node went on");
        assert_eq!(end, Some(ErrorCode::DEVICE_REVOKED));
    }
    assert_eq!(settled(|| alice.list_devices()).await.len(), 1);

    // Blocking and privacy across partitions: bob (node b) blocks alice
    // (node a); the block list is in bob's partition, the DM in the pair's.
    // Once bob has his Done, alice's next send in the DM is refused.
    settled(|| bob.set_blocked("alice", true)).await;
    let refused = settled(|| async { Ok(alice.send(dm, "blocked-1", "hello?").await) }).await;
    assert_eq!(refused.unwrap_err().code(), Some(ErrorCode::REFUSED_BY_USER));
    let reopen = settled(|| async { Ok(alice.open_direct("bob").await) }).await;
    assert_eq!(reopen.unwrap_err().code(), Some(ErrorCode::REFUSED_BY_USER));
    let trap = settled(|| async { Ok(alice.create_group("trap", &["bob"]).await) }).await;
    assert_eq!(trap.unwrap_err().code(), Some(ErrorCode::REFUSED_BY_USER));
    settled(|| bob.set_blocked("alice", false)).await;
    let after = settled(|| alice.send(dm, "unblocked-1", "hello again")).await;
    assert_eq!(after.message.unwrap().seq, 21, "the refused send used no seq");
    // Carol (node c) takes group invites from nobody.
    settled(|| carol.set_privacy(pb::Audience::Unspecified, pb::Audience::Nobody)).await;
    let spam = settled(|| async { Ok(alice.create_group("spam", &["carol"]).await) }).await;
    assert_eq!(spam.unwrap_err().code(), Some(ErrorCode::REFUSED_BY_USER));
    let _ = message;
}

/// Scenario 1, at the size the issue names: a group of 100 members spread
/// over three nodes, six senders (two per node) sending at once. Every
/// member's session receives every message exactly once, live, with
/// inbox_seqs that only grow; each sender's messages keep their order; the
/// group's history has seqs 1, 2, 3 … with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_100_across_three_nodes_gets_every_message_once() {
    const MEMBERS: usize = 100;
    const SENDERS: usize = 6;
    const EACH: usize = 10;
    let Some(binary) = nats_server("cluster test (server/tests/cluster_basics.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let nodes = three_nodes(&nats, dir.path()).await;
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:03}")).collect();
    // Member i on node i % 3, signed up three at a time (one per node).
    let mut conns: Vec<Connection> = Vec::with_capacity(MEMBERS);
    for chunk in names.chunks(3) {
        let batch = chunk.iter().enumerate().map(|(k, name)| signup(&nodes[k % 3], name));
        conns.extend(futures_util::future::join_all(batch).await);
    }
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    let group = settled(|| conns[0].create_group("one hundred", &others)).await;
    assert_eq!(group.member_count as usize, MEMBERS);
    let group = group.conversation_id;

    // Six senders, two on each node, all at once.
    let sends = (0..SENDERS).map(|s| {
        let conn = &conns[s];
        async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let (id, body) = (format!("s{s}-{i}"), format!("sender {s} message {i}"));
                seqs.push(settled(|| conn.send(group, &id, &body)).await.message.unwrap().seq);
            }
            seqs
        }
    });
    let acked: Vec<Vec<u64>> = futures_util::future::join_all(sends).await;
    for (s, seqs) in acked.iter().enumerate() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sender {s}'s seqs keep its order: {seqs:?}");
    }

    // Every member's session: each message once, in inbox order.
    let total = SENDERS * EACH;
    let reads = conns.iter_mut().enumerate().map(|(i, conn)| async move {
        let got = messages(conn, group, total).await;
        (i, got)
    });
    for (i, got) in futures_util::future::join_all(reads).await {
        let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "member {i}: in seq order, once each: {seqs:?}");
        seqs.dedup();
        assert_eq!(seqs.len(), total, "member {i}");
        for (s, want) in acked.iter().enumerate() {
            for (k, seq) in want.iter().enumerate() {
                let text = got.iter().find(|(q, _)| q == seq).map(|(_, t)| t.as_str());
                assert_eq!(text, Some(format!("sender {s} message {k}").as_str()), "member {i}, seq {seq}");
            }
        }
    }
    // And nothing more arrives for the group: a marker sent after
    // everything is the next group message each member sees.
    settled(|| conns[MEMBERS - 1].send(group, "marker", "marker")).await;
    for (i, conn) in conns.iter_mut().enumerate() {
        let next = messages(conn, group, 1).await;
        assert_eq!(next[0].1, "marker", "member {i}: a message arrived twice");
    }

    let history = settled(|| conns[50].history(group, 0, 0, 200)).await;
    let seqs: Vec<u64> = history.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=total as u64 + 2).collect::<Vec<_>>(), "CREATED, 60 messages, the marker: no gap");
}

/// Read markers and receipts cross nodes: bob reads on node b; his other
/// device, on node c, gets the new read state live, and alice, on node a,
/// gets his receipt live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_and_receipts_reach_every_device_on_every_node() {
    let Some(binary) = nats_server("cluster test (server/tests/cluster_basics.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let nodes = three_nodes(&nats, dir.path()).await;
    let mut alice = signup(&nodes[0], "alice").await;
    let bob = signup(&nodes[1], "bob").await;
    let mut bob_phone = nodes[2].connect(TransportKind::Tcp).await;
    settled(|| bob_phone.login("bob", "bob-password", "phone")).await;
    let dm = settled(|| alice.open_direct("bob")).await.conversation_id;
    for i in 0..3 {
        let (id, body) = (format!("m{i}"), format!("hello {i}"));
        settled(|| alice.send(dm, &id, &body)).await;
    }
    // The phone has seen the three messages live before bob reads.
    assert_eq!(messages(&mut bob_phone, dm, 3).await.len(), 3);

    let state = settled(|| bob.mark_read(dm, 3)).await;
    assert_eq!((state.read_seq, state.unread_count), (3, 0));

    // The phone (node c): the read state, live.
    loop {
        if let pb::inbox_event::Event::Read(r) = next_inbox(&mut bob_phone).await.event.unwrap() {
            assert_eq!((r.conversation_id, r.read_seq, r.unread_count), (dm, 3, 0));
            break;
        }
    }
    // Alice (node a): bob's receipt, live.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, alice.next_event()).await {
            Ok(Some(Event::ReadReceipt(r))) => {
                assert_eq!((r.conversation_id, r.username.as_str(), r.read_seq), (dm, "bob", 3));
                break;
            }
            Ok(Some(Event::Closed(e))) => panic!("session closed: {e}"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("alice got no read receipt within 10 s"),
        }
    }
}
