//! Crash consistency: 20 rounds of SIGKILL at varying moments under mixed
//! load (DMs, group sends, membership changes, read markers), each followed
//! by a restart on the same data dir and a check of the invariants:
//! - every acknowledged message is in history exactly once, and retrying
//!   the sends whose outcome was unknown never duplicates anything;
//! - seqs are contiguous from 1 in every conversation;
//! - every inbox entry points at a stored message with the same content;
//! - every device's cursor is at most its user's inbox head;
//! - unread counts are `last_seq - read_seq` and read markers never pass
//!   `last_seq`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::Daemon;
use confab_client::{Connection, TransportKind};
use confab_protocol::pb::{self, inbox_event::Event as Ev};

const ROUNDS: u32 = 20;

#[derive(Default)]
struct Ledger {
    /// client_msg_id → (conversation, seq), for every acknowledged send.
    acked: HashMap<String, (u64, u64)>,
    /// Sends whose outcome is unknown (no ack before the kill), with their
    /// conversation.
    unknown: HashMap<String, u64>,
}

struct Account {
    name: &'static str,
    token: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_mixed_load_loses_and_breaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--durability", "fsync", "--send-rate", "100000", "--request-rate", "100000"];
    let mut daemon = Daemon::start(dir.path(), &flags).await;
    let mut accounts = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let c = daemon.connect(TransportKind::Tcp).await;
        let ok = c.signup(name, &format!("{name}-password"), "main").await.unwrap();
        accounts.push(Account { name, token: ok.token });
    }
    let alice = daemon.resume(TransportKind::Tcp, &accounts[0].token).await;
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    let group = alice.create_group("crash test", &["bob", "carol"]).await.unwrap().conversation_id;
    let churn = alice.create_group("churn", &["bob"]).await.unwrap().conversation_id;
    drop(alice);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut total_acked_before_kills = 0;
    for round in 0..ROUNDS {
        let mut load = tokio::task::JoinSet::new();
        // Senders: alice in the DM over TCP, bob in the group over QUIC,
        // carol in the group over WebSocket; 8 in flight each.
        let senders =
            [(0usize, dm, TransportKind::Tcp), (1, group, TransportKind::Quic), (2, group, TransportKind::Ws)];
        for (who, conv, transport) in senders {
            let conn = Arc::new(daemon.resume(transport, &accounts[who].token).await);
            let ledger = Arc::clone(&ledger);
            load.spawn(send_loop(conn, ledger, conv, format!("r{round}-{}", accounts[who].name)));
        }
        // Membership churn: alice adds and removes dave.
        let owner = Arc::new(daemon.resume(TransportKind::Tcp, &accounts[0].token).await);
        load.spawn(async move {
            // After a kill dave may already be in (or out): a refusal from
            // the server is fine, a lost connection ends the churn.
            let gone = |r: &Result<(), confab_client::ClientError>| r.as_ref().is_err_and(|e| e.code().is_none());
            loop {
                if gone(&owner.add_members(churn, &["dave"]).await) || gone(&owner.remove_member(churn, "dave").await) {
                    return;
                }
            }
        });
        // Read markers: bob marks both conversations read as far as he sees.
        let reader = Arc::new(daemon.resume(TransportKind::Quic, &accounts[1].token).await);
        load.spawn(async move {
            loop {
                let Ok(list) = reader.list_conversations(100).await else { return };
                for c in list.conversations {
                    if reader.mark_read(c.conversation_id, c.last_seq).await.is_err() {
                        return;
                    }
                }
            }
        });

        // Kill at a moment that varies by round, mid-stream.
        tokio::time::sleep(Duration::from_millis(150 + 37 * u64::from(round % 9))).await;
        daemon.kill().await;
        // TCP and WebSocket see the reset at once; QUIC would wait for its
        // idle timeout. In-flight sends stay "unknown" either way.
        tokio::time::sleep(Duration::from_millis(200)).await;
        load.abort_all();
        while load.join_next().await.is_some() {}
        let acked = ledger.lock().unwrap().acked.len();
        assert!(acked > total_acked_before_kills, "round {round}: sends were acknowledged before the kill");
        total_acked_before_kills = acked;

        daemon = Daemon::start(dir.path(), &flags).await;
        let acked = ledger.lock().unwrap().acked.clone();
        check_invariants(&daemon, &accounts, &acked, &[dm, group, churn]).await;

        // Retrying the unknown sends stores each at most once.
        let unknown: Vec<(String, u64)> = ledger.lock().unwrap().unknown.drain().collect();
        let retry = daemon.resume(TransportKind::Tcp, &accounts[0].token).await;
        let carol_retry = daemon.resume(TransportKind::Tcp, &accounts[2].token).await;
        let bob_retry = daemon.resume(TransportKind::Tcp, &accounts[1].token).await;
        for (id, conv) in unknown {
            let conn = if id.ends_with_sender("alice") {
                &retry
            } else if id.ends_with_sender("bob") {
                &bob_retry
            } else {
                &carol_retry
            };
            let sent = conn.send(conv, &id, &payload(&id)).await.unwrap().message.unwrap();
            ledger.lock().unwrap().acked.insert(id, (sent.conversation_id, sent.seq));
        }
        let acked = ledger.lock().unwrap().acked.clone();
        check_invariants(&daemon, &accounts, &acked, &[dm, group, churn]).await;
    }
    let n = ledger.lock().unwrap().acked.len();
    eprintln!("{ROUNDS} SIGKILL rounds survived; {n} acknowledged messages, none lost or doubled");
    daemon.kill().await;
}

trait SenderOf {
    fn ends_with_sender(&self, name: &str) -> bool;
}

impl SenderOf for String {
    /// Ids are `r{round}-{sender}-{i}`.
    fn ends_with_sender(&self, name: &str) -> bool {
        self.split('-').nth(1) == Some(name)
    }
}

fn payload(id: &str) -> String {
    format!("payload {id}")
}

async fn send_loop(conn: Arc<Connection>, ledger: Arc<Mutex<Ledger>>, conv: u64, prefix: String) {
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0u32.. {
        let id = format!("{prefix}-{i}");
        ledger.lock().unwrap().unknown.insert(id.clone(), conv);
        let (conn, ledger) = (Arc::clone(&conn), Arc::clone(&ledger));
        inflight.spawn(async move {
            let Ok(sent) = conn.send(conv, &id, &payload(&id)).await else { return false };
            let m = sent.message.unwrap();
            let mut l = ledger.lock().unwrap();
            l.unknown.remove(&id);
            l.acked.insert(id, (m.conversation_id, m.seq));
            true
        });
        if inflight.len() >= 8 && !inflight.join_next().await.unwrap().unwrap() {
            return;
        }
    }
}

async fn full_history(conn: &Connection, conv: u64) -> Vec<pb::Message> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let req =
            pb::HistoryRequest { conversation_id: conv, after_seq: after, oldest_first: true, ..Default::default() };
        let page = conn.history_request(req).await.unwrap();
        after = page.messages.last().map_or(after, |m| m.seq);
        all.extend(page.messages);
        if !page.has_more {
            return all;
        }
    }
}

async fn check_invariants(daemon: &Daemon, accounts: &[Account], acked: &HashMap<String, (u64, u64)>, convs: &[u64]) {
    // alice is in every conversation (she created them all).
    let alice = daemon.resume(TransportKind::Tcp, &accounts[0].token).await;
    let mut stored: HashMap<(u64, u64), pb::Message> = HashMap::new();
    for &conv in convs {
        let all = full_history(&alice, conv).await;
        let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "conversation {conv}: seqs contiguous from 1");
        let mut ids = HashSet::new();
        for m in &all {
            assert!(
                m.client_msg_id.is_empty() || ids.insert(m.client_msg_id.clone()),
                "{} stored twice",
                m.client_msg_id
            );
            stored.insert((conv, m.seq), m.clone());
        }
    }
    for (id, key) in acked {
        let m = stored.get(key).unwrap_or_else(|| panic!("acknowledged {id} at {key:?} is missing"));
        assert_eq!(&m.client_msg_id, id, "acknowledged {id} is at the seq its ack named");
        assert_eq!(m.content, Some(pb::message::Content::Text(payload(id))));
    }
    for account in accounts {
        let conn = daemon.connect(TransportKind::Tcp).await;
        let auth = conn.resume(&account.token).await.unwrap();
        assert!(
            auth.cursor <= auth.inbox_head,
            "{}: cursor {} > inbox head {}",
            account.name,
            auth.cursor,
            auth.inbox_head
        );
        // Every inbox entry points at a stored message with that content.
        let mut after = 0;
        let mut expected_seq = 1;
        loop {
            let page = conn.sync(after, 100).await.unwrap();
            for e in &page.events {
                assert_eq!(e.inbox_seq, expected_seq, "{}: inbox seqs contiguous", account.name);
                expected_seq += 1;
                if let Some(Ev::Message(m)) = &e.event {
                    let s = stored.get(&(m.conversation_id, m.seq));
                    assert_eq!(
                        s,
                        Some(m),
                        "{}: inbox entry {} points at the stored message",
                        account.name,
                        e.inbox_seq
                    );
                }
            }
            after = page.events.last().map_or(after, |e| e.inbox_seq);
            if !page.has_more {
                break;
            }
        }
        assert_eq!(after, auth.inbox_head, "{}: sync reaches the inbox head", account.name);
        for c in conn.list_conversations(100).await.unwrap().conversations {
            assert!(c.read_seq <= c.last_seq, "{}: read marker past the end of {}", account.name, c.conversation_id);
            assert_eq!(
                c.unread_count,
                c.last_seq - c.read_seq,
                "{}: unread count of {}",
                account.name,
                c.conversation_id
            );
        }
    }
}
