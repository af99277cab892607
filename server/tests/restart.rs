//! Back in service soon after any stop (and clients that know at once):
//! - SIGKILL under sustained writes leaves a bounded journal to replay, and
//!   the restart serves within a bound, with nothing acknowledged lost;
//! - SIGTERM flushes the store, so the next start replays nothing;
//! - a QUIC client of a killed server gets a stateless reset as soon as the
//!   server is back, instead of waiting for the heartbeat deadline.
//!
//! The bounds are generous for a debug build on a loaded CI machine; the
//! release figures are measured by `confab-bench restart` (bench/README.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use confab_client::{ClientError, TransportKind};

/// What a kill may leave to replay, and journal to read at start: the
/// store flushes at 8 MiB of memtables and starts a new journal file past
/// 4 MiB, and writes go on while a flush runs. Without those bounds this
/// test left 47.6 MiB to replay, and a journal file is read whole at start
/// (fjall's own rotation is at 64 MB).
const REPLAY_BOUND: u64 = 32 << 20;
/// Restart to first answered request, in a debug build under CI load.
const SERVE_BOUND: Duration = Duration::from_secs(8);

/// Journal bytes written (fjall sizes each journal file to 64 MiB up
/// front, sparse: the blocks count, not the length).
fn journal_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir.join("db"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        .map(|e| e.metadata().unwrap())
        .map(|m| (m.blocks() * 512).min(m.len()))
        .sum()
}

/// Senders writing big messages until `stop`; returns the highest seq
/// acknowledged.
async fn write_until(daemon: &Daemon, token: &str, conversation: u64, stop: Arc<AtomicBool>) -> Arc<AtomicU64> {
    let top = Arc::new(AtomicU64::new(0));
    // Big texts fill the journal quickly even in a debug build.
    let text: Arc<str> = "j".repeat(16_000).into();
    for w in 0..6 {
        let conn = daemon.resume(TransportKind::Tcp, token).await;
        let (stop, top, text) = (Arc::clone(&stop), Arc::clone(&top), Arc::clone(&text));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match conn.send(conversation, &format!("w{w}-{i}"), &text).await {
                    Ok(sent) => {
                        top.fetch_max(sent.message.map_or(0, |m| m.seq), Ordering::Relaxed);
                        i += 1;
                    }
                    // The kill: the connection is gone.
                    Err(_) => return,
                }
            }
        });
    }
    top
}

/// Starts the daemon again on `dir` and times spawn → a resumed session's
/// history page; checks that `acked` (the highest acknowledged seq) is
/// there. Returns the daemon, the time, and the log.
async fn restart_and_serve(
    dir: &std::path::Path,
    token: &str,
    conversation: u64,
    acked: u64,
) -> (Daemon, Duration, String) {
    let log_path = dir.join("restart.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let daemon = Daemon::start_logging(dir, &[], "info", log).await;
    let conn = daemon.resume(TransportKind::Tcp, token).await;
    let page = conn.history(conversation, 0, 0, 1).await.unwrap();
    let took = started.elapsed();
    let last = page.messages.first().map_or(0, |m| m.seq);
    assert!(last >= acked, "acknowledged seq {acked} lost: history ends at {last}");
    (daemon, took, std::fs::read_to_string(&log_path).unwrap())
}

/// A `field=<n>` the log line of the store's open carries.
fn logged_kib(log: &str, field: &str) -> u64 {
    let line = log.lines().find(|l| l.contains("the store after")).unwrap_or_else(|| panic!("no store line:\n{log}"));
    // Log lines are colored: strip escapes around the field.
    let plain: String = strip_ansi(line);
    let at = plain.find(&format!("{field}=")).unwrap_or_else(|| panic!("no {field} in {plain}"));
    plain[at + field.len() + 1..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn setup(daemon: &Daemon) -> (String, u64) {
    let alice = daemon.connect(TransportKind::Tcp).await;
    let token = alice.signup("alice", "alice-password", "main").await.unwrap().token;
    daemon.connect(TransportKind::Tcp).await.signup("bob", "bob-password", "main").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    (token, dm)
}

/// Starts a server on `dir`, writes until `messages` are acknowledged and
/// kills it (-9) while the writers are still going. Returns alice's token,
/// the DM and the highest seq acknowledged.
async fn write_then_kill(dir: &std::path::Path, messages: u64) -> (String, u64, u64) {
    let flags = ["--send-rate", "100000", "--request-rate", "100000"];
    let mut daemon = Daemon::start(dir, &flags).await;
    let (token, dm) = setup(&daemon).await;
    let stop = Arc::new(AtomicBool::new(false));
    let top = write_until(&daemon, &token, dm, Arc::clone(&stop)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while top.load(Ordering::Relaxed) < messages {
        assert!(Instant::now() < deadline, "only {} messages written in 120 s", top.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.kill().await;
    stop.store(true, Ordering::Relaxed);
    (token, dm, top.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_under_writes_leaves_a_bounded_replay_and_the_restart_serves_soon() {
    let dir = tempfile::tempdir().unwrap();
    // Enough writes that fjall's defaults would leave far more than the
    // bound unflushed and in one journal file (rotated at 64 MB): ~3,000
    // messages of 16 KB (the text is journaled once per message).
    let (token, dm, acked) = write_then_kill(dir.path(), 3_000).await;
    let journal = journal_bytes(dir.path());
    eprintln!("killed after {acked} messages; {:.1} MiB of journal left", journal as f64 / 1048576.0);
    assert!(journal <= REPLAY_BOUND, "{journal} bytes of journal to read at start (bound {REPLAY_BOUND})");
    let (_daemon, took, log) = restart_and_serve(dir.path(), &token, dm, acked).await;
    eprintln!("serving {} ms after the restart", took.as_millis());
    assert!(log.contains("recovered the store after an unclean stop"), "the log does not say why recovery ran:\n{log}");
    let replayed = logged_kib(&log, "replayed_kib") << 10;
    eprintln!("{:.1} MiB replayed", replayed as f64 / 1048576.0);
    assert!(replayed <= REPLAY_BOUND, "{replayed} bytes replayed from the journal (bound {REPLAY_BOUND})");
    assert!(took <= SERVE_BOUND, "the restart took {took:?} to serve (bound {SERVE_BOUND:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_store_so_the_next_start_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--send-rate", "100000", "--request-rate", "100000"];
    let mut daemon = Daemon::start(dir.path(), &flags).await;
    let (token, dm) = setup(&daemon).await;
    let stop = Arc::new(AtomicBool::new(false));
    let top = write_until(&daemon, &token, dm, Arc::clone(&stop)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while top.load(Ordering::Relaxed) < 1_000 {
        assert!(Instant::now() < deadline, "only {} messages written in 120 s", top.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let pid = daemon.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "confabd exited with {status} after SIGTERM");
    let acked = top.load(Ordering::Relaxed);
    let journal = journal_bytes(dir.path());
    eprintln!("stopped after {acked} messages; {journal} bytes of journal left");
    assert!(dir.path().join("clean-stop").exists(), "no clean-stop mark after SIGTERM");
    let (_daemon, took, log) = restart_and_serve(dir.path(), &token, dm, acked).await;
    eprintln!("serving {} ms after the restart", took.as_millis());
    assert!(log.contains("opened the store after a clean stop"), "the log does not say the stop was clean:\n{log}");
    // Everything is in tables, and the journal was started anew: the next
    // start reads next to nothing.
    assert_eq!(logged_kib(&log, "replayed_kib"), 0, "a clean stop left data to replay:\n{log}");
    assert!(journal <= 256 << 10, "a clean stop left {journal} bytes of journal to read");
    assert!(!dir.path().join("clean-stop").exists(), "the clean-stop mark outlived the start");
    assert!(took <= SERVE_BOUND, "the restart took {took:?} to serve (bound {SERVE_BOUND:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_client_of_a_killed_server_is_reset_as_soon_as_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let quic = format!("127.0.0.1:{port}");
    // The default heartbeat (20 s): without the reset the client would
    // wait 50 s to notice.
    let flags = ["--quic", quic.as_str()];
    let mut daemon = Daemon::start(dir.path(), &flags).await;
    let (token, _) = setup(&daemon).await;
    let conn = daemon.resume(TransportKind::Quic, &token).await;
    conn.ping(1).await.unwrap();
    daemon.kill().await;
    let _daemon = Daemon::start(dir.path(), &flags).await;
    let back = Instant::now();
    // The next packet of the old connection is answered with a reset.
    let outcome = tokio::time::timeout(Duration::from_secs(10), conn.ping(2)).await;
    let noticed = back.elapsed();
    match outcome {
        Ok(Err(ClientError::Disconnected(why))) => {
            eprintln!("the client noticed {} ms after the restart: {why}", noticed.as_millis());
            assert!(why.contains("reset"), "lost for another reason than a stateless reset: {why}");
            // One round trip on loopback, and a loaded CI machine's slack.
            assert!(noticed < Duration::from_secs(3), "the reset took {noticed:?}");
        }
        Ok(other) => panic!("the old connection answered after a restart: {other:?}"),
        Err(_) => panic!("no stateless reset within 10 s of the restart"),
    }
    // Control: a new connection works.
    let again = _daemon.resume(TransportKind::Quic, &token).await;
    again.ping(3).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_key_of_the_wrong_size_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quic-reset.key"), b"short").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quic-reset.key holds 5 bytes, not 40"), "{stderr}");
}

/// While the store recovers after a kill, the HTTP port is already up and
/// says so: `/readyz` answers 503 "starting" (a load balancer or a
/// readiness probe sees "not ready", not a refused connection) until the
/// store is open, then 200; `/healthz` is 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_not_ready_while_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    write_then_kill(dir.path(), 3_000).await;

    let http = format!("127.0.0.1:{}", common::cluster::free_port());
    let log_path = dir.path().join("recover.log");
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", &http, "--log", "info"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ask as fast as answers come, from the moment the port opens.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answers: Vec<(u16, String)> = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "not ready within 30 s: {answers:?}");
        if tokio::net::TcpStream::connect(&http).await.is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let ready = common::cluster::http_get(&http, "/readyz").await;
        if ready.0 == 503 {
            let healthy = common::cluster::http_get(&http, "/healthz").await;
            assert_eq!(healthy.0, 200, "/healthz while starting: {healthy:?}");
        }
        let done = ready.0 == 200;
        answers.push(ready);
        if done {
            break;
        }
    }
    let starting = answers.iter().filter(|a| *a == &(503, "starting\n".to_string())).count();
    eprintln!("/readyz: {starting} x 503 starting, then {:?}", answers.last());
    assert!(starting >= 1, "the store's recovery was never seen as not ready: {answers:?}");
    assert!(answers[..answers.len() - 1].iter().all(|a| a.0 == 503), "{answers:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("recovered the store after an unclean stop"), "{log}");
}
