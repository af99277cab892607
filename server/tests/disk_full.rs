//! Disk full: the data directory is a small tmpfs that a filler file fills
//! up while clients send. Sends then get a clear error (`UNAVAILABLE`),
//! nothing that was refused becomes visible, nothing is acknowledged that
//! was not stored, the server keeps serving reads, and once space returns
//! it accepts writes again by itself. A SIGKILL and restart afterwards
//! shows that everything acknowledged — before, during and after the full
//! disk — survived.
//!
//! Needs `mount` and permission to mount a tmpfs (root, as in CI);
//! elsewhere it says so and is skipped, or fails under
//! `CONFAB_REQUIRE_E2E=1` (as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::daemon::Daemon;
use confab_client::TransportKind;
use confab_protocol::{ErrorCode, pb};

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` at `path`, or says what is missing to
    /// do so (with how to get it).
    fn mount(path: &Path, size_mib: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("the mount command ({e}; apt-get install mount)"))?;
        if !out.status.success() {
            return Err(format!(
                "permission to mount a tmpfs (`mount -t tmpfs` said: {}; run the tests as root, or in a \
                 container with CAP_SYS_ADMIN)",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` up to the last few KiB.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = vec![0u8; 1024];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_cleanly_and_recovers_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _mount = match Tmpfs::mount(&data, 64) {
        Ok(m) => m,
        Err(missing) => {
            // Fails the test under CONFAB_REQUIRE_E2E=1, else skips it.
            common::e2e::require_tools_or_skip("disk-full test (server/tests/disk_full.rs)", &[missing]);
            return;
        }
    };
    let flags = ["--durability", "fsync", "--send-rate", "100000", "--request-rate", "100000"];
    let mut daemon = Daemon::start(&data, &flags).await;
    let alice_conn = daemon.connect(TransportKind::Tcp).await;
    let alice = alice_conn.signup("alice", "alice-password", "a").await.unwrap();
    let bob_conn = daemon.connect(TransportKind::Tcp).await;
    bob_conn.signup("bob", "bob-password", "b").await.unwrap();
    let dm = alice_conn.open_direct("bob").await.unwrap().conversation_id;

    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut refused: Vec<String> = Vec::new();
    let body = "x".repeat(2000);
    for i in 0..50 {
        let id = format!("before-{i}");
        let sent = alice_conn.send(dm, &id, &body).await.unwrap();
        acked.insert(id, sent.message.unwrap().seq);
    }

    let filler = fill(&data);
    // Keep sending until the store refuses. The first send that hits the
    // full disk is held until the store recovers (its outcome is only known
    // then), so sends run concurrently; every other one is answered at once
    // with an ack or a clear UNAVAILABLE, never a hang or a dropped session.
    let alice_conn = Arc::new(alice_conn);
    let mut pending = tokio::task::JoinSet::new();
    let mut i = 0;
    while refused.len() < 20 {
        let id = format!("full-{i}");
        i += 1;
        let (conn, body) = (Arc::clone(&alice_conn), body.clone());
        pending.spawn(async move {
            let r = conn.send(dm, &id, &body).await;
            (id, r)
        });
        // Collect what has been answered so far.
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Some(done) = pending.try_join_next() {
            let (id, r) = done.unwrap();
            match r {
                Ok(sent) => {
                    acked.insert(id, sent.message.unwrap().seq);
                }
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::UNAVAILABLE), "{id}: {e}");
                    refused.push(id);
                }
            }
        }
        assert!(i < 5000, "the disk never filled up");
    }
    // A marker: one more send, refused like the others. The writer answers
    // in order, and answers travel in order on the connection, so once the
    // marker's refusal is here every earlier send but the held group has
    // its answer too: collect those (they are ready; the held ones wait
    // for the recovery).
    let marker = alice_conn.send(dm, "full-marker", &body).await;
    assert_eq!(marker.unwrap_err().code(), Some(ErrorCode::UNAVAILABLE));
    while let Ok(Some(done)) = tokio::time::timeout(Duration::from_millis(200), pending.join_next()).await {
        let (id, r) = done.unwrap();
        match r {
            Ok(sent) => {
                acked.insert(id, sent.message.unwrap().seq);
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::UNAVAILABLE), "{id}: {e}");
                refused.push(id);
            }
        }
    }
    refused.push("full-marker".into());
    let held = pending.len();
    eprintln!(
        "disk full: {} acknowledged, {} refused with UNAVAILABLE, {held} waiting for the store to recover",
        acked.len(),
        refused.len()
    );
    assert!(held <= 2, "only the group that hit the full disk waits ({held} sends waiting)");
    // Reads still work, and show exactly the acknowledged messages.
    check_history(&alice_conn, dm, &acked, &refused).await;
    alice_conn.ping(1).await.unwrap();

    // Readers keep reading across the recovery (nested reads once made the
    // reopen wait for them while they waited for it).
    let stop_reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (conn, stop) = (daemon.resume(TransportKind::Tcp, &alice.token).await, Arc::clone(&stop_reading));
        readers.spawn(async move {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for r in [conn.sync(0, 100).await.map(|_| ()), conn.list_conversations(10).await.map(|_| ())] {
                    if let Err(e) = r {
                        assert_eq!(e.code(), Some(ErrorCode::UNAVAILABLE), "a read during recovery: {e}");
                    }
                }
                reads += 1;
            }
            reads
        });
    }

    // Space returns: the store recovers by itself, the waiting sends get
    // their real outcome, and new writes succeed without a restart.
    std::fs::remove_file(&filler).unwrap();
    while let Some(done) = tokio::time::timeout(Duration::from_secs(10), pending.join_next()).await.expect("answered") {
        let (id, r) = done.unwrap();
        match r {
            Ok(sent) => {
                eprintln!("{id}, held while the disk was full, was stored after all");
                acked.insert(id, sent.message.unwrap().seq);
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::UNAVAILABLE), "{id}: {e}");
                refused.push(id);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut after = 0;
    while after < 20 {
        let id = format!("after-{after}");
        match alice_conn.send(dm, &id, &body).await {
            Ok(sent) => {
                acked.insert(id, sent.message.unwrap().seq);
                after += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::UNAVAILABLE), "{id}: {e}");
                assert!(tokio::time::Instant::now() < deadline, "no recovery after space returned: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(r) = readers.join_next().await {
        assert!(r.unwrap() > 0, "the readers kept being served");
    }
    // Nothing refused became visible, and retrying each refused send stores
    // it once, as a new message (it was not stored before).
    check_history(&alice_conn, dm, &acked, &refused).await;
    for id in std::mem::take(&mut refused) {
        let sent = alice_conn.send(dm, &id, &body).await.unwrap();
        assert!(!sent.duplicate, "{id} was refused, yet the store had it");
        acked.insert(id, sent.message.unwrap().seq);
    }
    check_history(&alice_conn, dm, &acked, &refused).await;

    // Everything acknowledged survives a crash.
    drop((alice_conn, bob_conn));
    daemon.kill().await;
    let daemon = Daemon::start(&data, &flags).await;
    let conn = daemon.resume(TransportKind::Tcp, &alice.token).await;
    check_history(&conn, dm, &acked, &refused).await;
    drop(conn);
    let mut daemon = daemon;
    daemon.kill().await;
}

async fn check_history(conn: &confab_client::Connection, dm: u64, acked: &HashMap<String, u64>, refused: &[String]) {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let req =
            pb::HistoryRequest { conversation_id: dm, after_seq: after, oldest_first: true, ..Default::default() };
        let page = conn.history_request(req).await.unwrap();
        after = page.messages.last().map_or(after, |m| m.seq);
        all.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "seqs contiguous");
    let by_id: HashMap<&str, u64> = all.iter().map(|m| (m.client_msg_id.as_str(), m.seq)).collect();
    for (id, seq) in acked {
        assert_eq!(by_id.get(id.as_str()), Some(seq), "acknowledged {id} is in history at its seq");
    }
    for id in refused {
        assert!(!by_id.contains_key(id.as_str()), "refused {id} became visible");
    }
}
