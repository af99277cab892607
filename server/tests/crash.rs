//! Crash consistency: SIGKILL `confabd` while clients are sending, restart
//! it on the same data dir, and check that every acknowledged message is in
//! history exactly once, that seqs are contiguous, and that retrying the
//! sends whose outcome was unknown never duplicates anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_client::tls::Trust;
use confab_client::{ConnectOptions, Connection, TransportKind};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Daemon {
    child: Child,
    tcp: String,
    quic: String,
    fingerprint: String,
}

async fn start(dir: &std::path::Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--quic",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--durability", "fsync", "--send-rate", "100000", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tcp, mut quic, mut fingerprint) = (None, None, None);
    while let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap() {
        if let Some(a) = line.strip_prefix("tcp: ") {
            tcp = Some(a.to_string());
        } else if let Some(a) = line.strip_prefix("quic: ") {
            quic = Some(a.to_string());
        } else if let Some(f) = line.strip_prefix("fingerprint: sha256:") {
            fingerprint = Some(f.to_string());
            break;
        }
    }
    Daemon { child, tcp: tcp.unwrap(), quic: quic.unwrap(), fingerprint: fingerprint.unwrap() }
}

impl Daemon {
    fn options(&self, transport: TransportKind) -> ConnectOptions {
        let addr = if transport == TransportKind::Tcp { &self.tcp } else { &self.quic };
        let mut o = ConnectOptions::new(addr.clone(), Trust::Fingerprint(self.fingerprint.clone()));
        o.transport = transport;
        o
    }

    async fn connect(&self, transport: TransportKind, token: &str) -> Connection {
        let c = Connection::connect(&self.options(transport)).await.unwrap();
        c.resume(token).await.unwrap();
        c
    }
}

#[derive(Default)]
struct Ledger {
    /// client_msg_id → seq, for every acknowledged send.
    acked: HashMap<String, u64>,
    /// Sends whose outcome is unknown (no ack before the kill).
    unknown: HashSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path()).await;
    let setup = Connection::connect(&daemon.options(TransportKind::Tcp)).await.unwrap();
    let alice = setup.signup("alice", "alice-password", "writer").await.unwrap();
    let setup2 = Connection::connect(&daemon.options(TransportKind::Tcp)).await.unwrap();
    setup2.signup("bob", "bob-password", "reader").await.unwrap();
    let conv = setup.open_direct("bob").await.unwrap().conversation_id;
    drop((setup, setup2));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..3u32 {
        // Four writers, two per transport, each keeping 8 sends in flight.
        let mut writers = Vec::new();
        for w in 0..4u32 {
            let transport = if w % 2 == 0 { TransportKind::Tcp } else { TransportKind::Quic };
            let conn = Arc::new(daemon.connect(transport, &alice.token).await);
            let ledger = Arc::clone(&ledger);
            writers.push(tokio::spawn(async move {
                let mut inflight = tokio::task::JoinSet::new();
                for i in 0u32.. {
                    let id = format!("r{round}-w{w}-{i}");
                    ledger.lock().unwrap().unknown.insert(id.clone());
                    let (conn, ledger) = (Arc::clone(&conn), Arc::clone(&ledger));
                    inflight.spawn(async move {
                        if let Ok(sent) = conn.send(conv, &id, &format!("payload {id}")).await {
                            let mut l = ledger.lock().unwrap();
                            l.unknown.remove(&id);
                            l.acked.insert(id, sent.message.unwrap().seq);
                            true
                        } else {
                            false
                        }
                    });
                    if inflight.len() >= 8 && !inflight.join_next().await.unwrap().unwrap() {
                        return;
                    }
                }
            }));
        }
        // Kill at a moment that varies by round, mid-stream.
        tokio::time::sleep(Duration::from_millis(300 + 170 * u64::from(round))).await;
        daemon.child.start_kill().unwrap();
        daemon.child.wait().await.unwrap();
        // TCP writers see the reset at once; QUIC ones would wait for the
        // idle timeout. Their in-flight sends stay "unknown" either way.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for w in &writers {
            w.abort();
        }
        for w in writers {
            let _ = w.await;
        }
        let acked_so_far = ledger.lock().unwrap().acked.len();
        assert!(acked_so_far > 0, "round {round}: some sends were acknowledged before the kill");
        eprintln!(
            "round {round}: {acked_so_far} acknowledged so far, {} unknown",
            ledger.lock().unwrap().unknown.len()
        );

        daemon = start(dir.path()).await;
        let reader = daemon.connect(TransportKind::Quic, &alice.token).await;
        let acked = ledger.lock().unwrap().acked.clone();
        check_history(&reader, conv, &acked).await;

        // Retrying the unknown ones stores each at most once.
        let unknown: Vec<String> = ledger.lock().unwrap().unknown.drain().collect();
        for id in unknown {
            let sent = reader.send(conv, &id, &format!("payload {id}")).await.unwrap();
            ledger.lock().unwrap().acked.insert(id, sent.message.unwrap().seq);
        }
        let acked = ledger.lock().unwrap().acked.clone();
        check_history(&reader, conv, &acked).await;
    }
    daemon.child.start_kill().unwrap();
}

async fn check_history(conn: &Connection, conv: u64, acked: &HashMap<String, u64>) {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let req = confab_protocol::pb::HistoryRequest {
            conversation_id: conv,
            after_seq: after,
            oldest_first: true,
            ..Default::default()
        };
        let page = conn.history_request(req).await.unwrap();
        after = page.messages.last().map_or(after, |m| m.seq);
        all.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "seqs are contiguous from 1");
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for m in &all {
        assert!(seen.insert(&m.client_msg_id, m.seq).is_none(), "{} stored twice", m.client_msg_id);
    }
    for (id, seq) in acked {
        assert_eq!(seen.get(id.as_str()), Some(seq), "acknowledged {id} (seq {seq}) is in history");
    }
}
