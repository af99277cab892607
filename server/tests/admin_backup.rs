//! `confabd admin backup DIR` while the server serves: messages are sent
//! before and during the backup; the backup is a data dir (the store as of
//! one instant, and the certificate, VAPID and QUIC reset keys beside it)
//! that a second server starts on, with the same certificate, accepting the
//! same device tokens, holding every message acknowledged before the backup
//! began, with no gap in any conversation. An existing non-empty DIR, or
//! one inside the data dir, is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_support;
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admin_support::{admin_ok, admin_refused};
use common::{TestServer, text};
use confab_client::ConnectOptions;
use confab_client::TransportKind::Tcp;
use confab_client::tls::Trust;
use confab_protocol::{ErrorCode, pb};
use confab_server::server::Server;

/// Every file under `dir`, as paths relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_traffic_starts_a_server_with_everything_acknowledged() {
    let server = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 100_000;
        c.limits.send_burst = 100_000;
    })
    .await;
    let dir = server.dir.path().to_path_buf();
    let alice = server.connect(Tcp).await;
    let alice_auth = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    server.connect(Tcp).await.signup("bob", "bob-password", "laptop").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    for i in 0..200 {
        alice.send(dm, &format!("pre-{i}"), &format!("before {i}")).await.unwrap();
    }

    // Traffic that goes on while the backup is taken: every ack recorded.
    let sender = server.connect(Tcp).await;
    sender.login("alice", "alice-password", "sender").await.unwrap();
    let acked: Arc<Mutex<Vec<(Instant, u64, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!("during {i}");
                match sender.send(dm, &format!("live-{i}"), &body).await {
                    Ok(sent) => {
                        acked.lock().unwrap().push((Instant::now(), sent.message.unwrap().seq, body));
                        i += 1;
                    }
                    // Faster than the session's rate: wait as told, send again.
                    Err(confab_client::ClientError::Server {
                        code: ErrorCode::RATE_LIMITED, retry_after_ms, ..
                    }) => {
                        tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
                    }
                    Err(e) => panic!("a send failed during the backup: {e}"),
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let parent = tempfile::tempdir().unwrap();
    let backup = parent.path().join("backup");
    let began = Instant::now();
    let before: Vec<(u64, String)> = acked.lock().unwrap().iter().map(|(_, s, t)| (*s, t.clone())).collect();
    let out = admin_ok(&dir, &["backup", backup.to_str().unwrap()]).await;
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(out.contains("backup written to"), "{out}");
    assert!(out.contains("files: tls/cert.pem, tls/key.pem"), "{out}");
    assert!(!before.is_empty(), "traffic ran before the backup");
    let after = acked.lock().unwrap().iter().filter(|(t, _, _)| *t > ended).count();
    assert!(after > 0, "the server went on serving after the backup");
    let during = acked.lock().unwrap().iter().filter(|(t, _, _)| *t > began && *t < ended).count();

    // The backup is a data dir: everything beside the store is there, the
    // same bytes; the live server's socket is not.
    let copied = files(&backup);
    for file in files(&dir).iter().filter(|f| !f.starts_with("db/") && *f != "admin.sock" && *f != "clean-stop") {
        assert!(copied.contains(file), "{file} is not in the backup: {copied:?}");
        assert_eq!(std::fs::read(dir.join(file)).unwrap(), std::fs::read(backup.join(file)).unwrap(), "{file}");
    }
    assert!(copied.iter().any(|f| f.starts_with("db/")), "{copied:?}");
    assert!(!copied.contains(&"admin.sock".to_string()));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backup.join("backup.json")).unwrap()).unwrap();
    assert!(manifest["commit_seq"].as_u64().unwrap() > 0, "{manifest}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the backup is private: {mode:o}");
    }

    // A second server on the backup, while the first one still runs.
    let restored = Server::start(common::config(&backup)).await.unwrap();
    assert_eq!(restored.fingerprint(), server.server().fingerprint(), "the same certificate");
    let mut options = ConnectOptions::new(
        restored.tcp_addr().unwrap().to_string(),
        Trust::Fingerprint(restored.fingerprint().into()),
    );
    options.transport = Tcp;
    let c = confab_client::Connection::connect(&options).await.unwrap();
    c.resume(&alice_auth.token).await.expect("the backup accepts the same device tokens");
    let mut history = Vec::new();
    loop {
        let after = history.last().map_or(0, |m: &pb::Message| m.seq);
        let req = pb::HistoryRequest {
            conversation_id: dm,
            after_seq: after,
            limit: 100,
            oldest_first: true,
            ..Default::default()
        };
        let page = c.history_request(req).await.unwrap();
        history.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap in the backup's history");
    for (i, m) in history.iter().take(200).enumerate() {
        assert_eq!(text(m), format!("before {i}"));
    }
    for (seq, body) in &before {
        let m =
            history.get(*seq as usize - 1).unwrap_or_else(|| panic!("seq {seq}, acked before the backup, is missing"));
        assert_eq!(text(m), body);
    }
    eprintln!(
        "backup: {} messages acked before it, {during} while it ran, {} in it",
        200 + before.len(),
        history.len()
    );
    restored.shutdown().await;

    // Refused: a DIR with anything in it, and one inside the data dir.
    let again = admin_refused(&dir, &["backup", backup.to_str().unwrap()]).await;
    assert!(again.contains("exists and is not empty"), "{again}");
    let inside = admin_refused(&dir, &["backup", dir.join("backup").to_str().unwrap()]).await;
    assert!(inside.contains("inside the data dir"), "{inside}");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    admin_ok(&dir, &["backup", empty.to_str().unwrap()]).await;
    assert!(empty.join("db").is_dir());
    let leftovers: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no half-written backup is left behind: {leftovers:?}");
    server.stop().await;
}
