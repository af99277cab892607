//! Load and a checker for the cluster's failure tests.
//!
//! Senders send numbered messages, each until it is acknowledged: on an
//! error or a lost connection they reconnect (to the next live node) and
//! resend with the same `client_msg_id`, as a client must (§8.2). The
//! ledger keeps every acknowledged id with its seq. Afterwards the checker
//! reads everything back over the protocol: each conversation's history
//! must hold every acknowledged message exactly once at its acknowledged
//! seq, with seqs 1, 2, 3 … and no gap; each member's inbox must hold
//! each message exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_client::tls::Trust;
use confab_client::{ClientError, ConnectOptions, Connection, TransportKind};
use confab_protocol::ErrorCode;
use confab_protocol::pb;

use super::daemon::Daemon;

/// A live node's TCP address and certificate fingerprint.
type Address = (String, String);

/// Where the live nodes are now (tests update it as they kill and restart).
#[derive(Clone, Default)]
pub struct Directory {
    nodes: Arc<Mutex<Vec<Option<Address>>>>,
}

impl Directory {
    /// The nodes of `daemons`, all live.
    pub fn new(daemons: &[&Daemon]) -> Directory {
        let d = Directory::default();
        for (i, n) in daemons.iter().enumerate() {
            d.set(i, Some(n));
        }
        d
    }

    /// Node `i` is now `daemon` (or down).
    pub fn set(&self, i: usize, daemon: Option<&Daemon>) {
        let mut nodes = self.nodes.lock().unwrap();
        if nodes.len() <= i {
            nodes.resize(i + 1, None);
        }
        nodes[i] = daemon.map(|d| (d.tcp.clone(), d.fingerprint.clone()));
    }

    /// A live node's address, trying from `start`.
    fn pick(&self, start: usize) -> Option<(usize, String, String)> {
        let nodes = self.nodes.lock().unwrap();
        (0..nodes.len()).map(|k| (start + k) % nodes.len()).find_map(|i| nodes[i].clone().map(|(a, f)| (i, a, f)))
    }

    /// Connects to a live node (from `start`, moving on) and resumes
    /// `token`, retrying for up to 60 s. Returns the session and the
    /// node's index.
    pub async fn session(&self, start: usize, token: &str) -> (Connection, usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut at = start;
        loop {
            if let Some((node, addr, fingerprint)) = self.pick(at) {
                let mut o = ConnectOptions::new(addr, Trust::Fingerprint(fingerprint));
                o.transport = TransportKind::Tcp;
                if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), Connection::connect(&o)).await
                    && let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), c.resume(token)).await
                {
                    return (c, node);
                }
            }
            assert!(Instant::now() < deadline, "no node took a session within 60 s");
            at += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What was acknowledged.
#[derive(Default)]
pub struct Ledger {
    /// client_msg_id → (conversation, seq).
    pub acked: HashMap<String, (u64, u64)>,
    /// Sends retried after an error or a lost connection.
    pub retries: u64,
    /// client_msg_id → the node (its index in the directory) whose
    /// session acknowledged it.
    pub via: HashMap<String, usize>,
}

/// Sends `count` messages `<prefix>-<i>` to `conversation` as the owner of
/// `token`, each until acknowledged.
pub async fn sender(
    dir: Directory,
    start: usize,
    token: String,
    conversation: u64,
    prefix: String,
    count: usize,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut conn: Option<Connection> = None;
    let mut at = start;
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    // What the last attempt met, for the failure message.
    let mut last = String::new();
    while i < count {
        assert!(
            Instant::now() < deadline,
            "{prefix}: sending did not finish within 240 s ({i} of {count}; last on node {at}: {last})"
        );
        if conn.is_none() {
            let (c, node) = dir.session(at, &token).await;
            conn = Some(c);
            at = node;
        }
        let id = format!("{prefix}-{i}");
        let text = format!("{prefix} message {i}");
        let Some(c) = conn.as_ref() else { continue };
        let result = tokio::time::timeout(Duration::from_secs(10), c.send(conversation, &id, &text)).await;
        match result {
            Ok(Ok(sent)) => {
                let seq = sent.message.map_or(0, |m| m.seq);
                let mut l = ledger.lock().unwrap();
                if let Some(&(_, before)) = l.acked.get(&id) {
                    assert_eq!(before, seq, "{id} acknowledged twice with different seqs");
                }
                l.via.insert(id.clone(), at);
                l.acked.insert(id, (conversation, seq));
                i += 1;
            }
            // INTERNAL: the outcome is unknown (§8.2); the same id again
            // is safe and must not store it twice.
            Ok(Err(e)) if retryable(&e) || e.code() == Some(ErrorCode::INTERNAL) => {
                last = e.to_string();
                ledger.lock().unwrap().retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) if e.code().is_some() => panic!("{id}: refused: {e}"),
            // Lost, timed out: the outcome is unknown; resend elsewhere.
            other => {
                last = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 10 s".into(),
                };
                ledger.lock().unwrap().retries += 1;
                conn = None;
                at += 1;
            }
        }
    }
}

fn retryable(e: &ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::UNAVAILABLE | ErrorCode::SERVER_BUSY | ErrorCode::SHUTTING_DOWN))
}

/// Retries a read while the cluster answers UNAVAILABLE, up to 60 s.
async fn read<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Checks one conversation's history against the ledger: every
/// acknowledged message once, at its seq; seqs contiguous from 1; no
/// client_msg_id twice. Returns the messages by seq.
pub async fn check_history(conn: &Connection, conversation: u64, ledger: &Ledger) -> Vec<pb::Message> {
    let mut all: Vec<pb::Message> = Vec::new();
    let mut after = 0;
    loop {
        let req = pb::HistoryRequest {
            conversation_id: conversation,
            after_seq: after,
            limit: 100,
            oldest_first: true,
            ..Default::default()
        };
        let page = read(|| conn.history_request(req)).await;
        if page.messages.is_empty() {
            break;
        }
        after = page.messages.last().map_or(after, |m| m.seq);
        all.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1, "conversation {conversation}: a gap or a duplicate seq at {i}");
    }
    let mut ids = HashSet::new();
    for m in all.iter().filter(|m| !m.client_msg_id.is_empty()) {
        assert!(ids.insert(m.client_msg_id.clone()), "{} stored twice", m.client_msg_id);
    }
    let by_id: HashMap<&str, u64> = all.iter().map(|m| (m.client_msg_id.as_str(), m.seq)).collect();
    for (id, (c, seq)) in &ledger.acked {
        if *c != conversation {
            continue;
        }
        if by_id.get(id.as_str()) != Some(seq) {
            let there = all.get((*seq as usize).wrapping_sub(1)).map(|m| m.client_msg_id.as_str());
            panic!(
                "acknowledged {id} (seq {seq}, through node {:?}) is not in history at its seq: history holds it at {:?}, \
                 seq {seq} holds {there:?}, history has {} messages",
                ledger.via.get(id),
                by_id.get(id.as_str()),
                all.len()
            );
        }
    }
    all
}

/// Checks a user's inbox (read with a sync from the start): every message
/// of `history` (of `conversation`) exactly once, inbox_seqs contiguous.
/// Members in other partitions get their entries a moment after the
/// message is acknowledged (the effect is applied by their partition's
/// owner), so a missing entry is looked for again until a deadline; an
/// entry twice fails at once.
pub async fn check_inbox(conn: &Connection, conversation: u64, history: &[pb::Message]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = inbox_messages(conn, conversation).await;
        for (seq, n) in &seen {
            assert_eq!(*n, 1, "message {seq} of {conversation} is in the inbox {n} times");
        }
        let missing: Vec<u64> = history.iter().map(|m| m.seq).filter(|s| !seen.contains_key(s)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "messages {missing:?} of {conversation} never reached the inbox ({} of {} did)",
            seen.len(),
            history.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many times each message of `conversation` is in the user's inbox.
async fn inbox_messages(conn: &Connection, conversation: u64) -> HashMap<u64, usize> {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut after = 0;
    let mut last_inbox = 0;
    loop {
        let page = read(|| conn.sync(after, 200)).await;
        for e in &page.events {
            assert_eq!(e.inbox_seq, last_inbox + 1, "an inbox gap after {last_inbox}");
            last_inbox = e.inbox_seq;
            if let Some(pb::inbox_event::Event::Message(m)) = &e.event
                && m.conversation_id == conversation
            {
                *seen.entry(m.seq).or_default() += 1;
            }
        }
        after = last_inbox;
        if !page.has_more {
            return seen;
        }
    }
}
