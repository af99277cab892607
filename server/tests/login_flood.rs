//! Login floods against a real `confabd` process (security findings 1–3
//! of the hardening issue):
//! - bursts of logins that hang up at once must not grow the server's
//!   memory past the password pool's fixed size (it grew by gigabytes when
//!   a caller that went away released its place while its Argon2 check
//!   ran on), and the memory is given back once the load stops;
//! - concurrent wrong guesses for one account are checked only as often
//!   as the failed-login budget allows;
//! - one account logging in as fast as it can from one address neither
//!   gets unlimited logins nor keeps a user on another address out.
//!
//! Clients come from distinct loopback addresses (127.0.0.x), so the
//! per-address limits meet the traffic they are for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::daemon::Daemon;
use confab_client::tls::Trust;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, FrameDecoder, framing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Where the server's TCP+TLS port is, and its certificate.
#[derive(Clone)]
struct Target {
    tcp: SocketAddr,
    fingerprint: String,
}

impl Target {
    fn of(daemon: &Daemon) -> Arc<Target> {
        Arc::new(Target { tcp: daemon.tcp.parse().unwrap(), fingerprint: daemon.fingerprint.clone() })
    }
}

/// A TCP+TLS connection to `target` from the loopback address `from`.
async fn connect_from(target: &Target, from: IpAddr) -> Tls {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = socket.connect(target.tcp).await.unwrap();
    let config = confab_client::tls::rustls_config(Trust::Fingerprint(target.fingerprint.clone())).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap()
}

/// Hello and a Login, written back to back.
fn hello_and_login(username: &str, password: &str) -> Vec<u8> {
    hello_and(Body::Login(pb::LoginRequest {
        username: username.into(),
        password: password.into(),
        device_name: "flood".into(),
    }))
}

/// Hello and then `request` (id 2), written back to back.
fn hello_and(request: Body) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, body) in [(1, Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })), (2, request)] {
        out.extend_from_slice(&framing::frame_bytes(&pb::ClientFrame { request_id: id, body: Some(body) }));
    }
    out
}

/// Logs in from `from` and returns the login's answer: `Ok(())` or the
/// error code.
async fn login_from(target: &Target, from: IpAddr, username: &str, password: &str) -> Result<(), ErrorCode> {
    authenticate_from(target, from, hello_and_login(username, password)).await
}

/// Signs up from `from` and returns the answer: `Ok(())` or the error code.
async fn signup_from(target: &Target, from: IpAddr, username: &str, password: &str) -> Result<(), ErrorCode> {
    let signup = Body::Signup(pb::SignupRequest {
        username: username.into(),
        password: password.into(),
        device_name: "new".into(),
    });
    authenticate_from(target, from, hello_and(signup)).await
}

/// Writes `frames` (Hello, then an authenticating request with id 2) from
/// `from` and returns that request's answer.
async fn authenticate_from(target: &Target, from: IpAddr, frames: Vec<u8>) -> Result<(), ErrorCode> {
    let mut tls = connect_from(target, from).await;
    tls.write_all(&frames).await.unwrap();
    tls.flush().await.unwrap();
    let decoder = FrameDecoder::new(confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    loop {
        while let Some(f) = decoder.next_frame(&mut buf).unwrap() {
            let frame = framing::decode_server_frame(&f).unwrap();
            match frame.body {
                Some(Reply::AuthOk(_)) if frame.request_id == 2 => return Ok(()),
                Some(Reply::Error(e)) if frame.request_id == 2 => return Err(ErrorCode(e.code)),
                _ => {}
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), tls.read_buf(&mut buf)).await.expect("no answer");
        assert!(n.unwrap() > 0, "closed before the request was answered");
    }
}

/// Reads `Threads:` and `VmRSS:` (KiB) of a process.
fn threads_and_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("Threads:"), field("VmRSS:"))
}

const CONCURRENCY: u64 = 2;
/// Argon2id's memory per check (m = 19 MiB).
const ARGON2_KIB: u64 = 19 * 1024;

async fn start(dir: &std::path::Path, settings: &str) -> Daemon {
    let config = dir.join("flood.toml");
    std::fs::write(&config, settings).unwrap();
    Daemon::start(&dir.join("data"), &["--config", config.to_str().unwrap()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_bursts_that_hang_up_keep_memory_bounded_and_give_it_back() {
    let dir = tempfile::tempdir().unwrap();
    // Every other limit out of the way: the pool alone must bound memory.
    let daemon = start(
        dir.path(),
        &format!(
            "password_check_concurrency = {CONCURRENCY}\npassword_check_queue = 64\n\
             password_checks_per_address = 1000\nlogin_failures_per_user = 1000000\n\
             login_failures_per_address = 1000000\nlogins_per_user_per_minute = 1000000\n\
             logins_per_address_per_minute = 1000000\nmax_connections_per_address = 1000\n"
        ),
    )
    .await;
    let pid = daemon.child.id().unwrap();
    let target = Target::of(&daemon);
    let (baseline_threads, baseline) = threads_and_rss(pid);
    let bound = baseline + CONCURRENCY * ARGON2_KIB + 96 * 1024;
    let addr: IpAddr = [127, 0, 0, 1].into();
    let (mut peak_rss, mut peak_threads) = (0, 0);
    for _burst in 0..6 {
        // 66 logins (the pool's threads plus its queue), each connection
        // closed right after its Login is written.
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..66 {
            let target = Arc::clone(&target);
            burst.spawn(async move {
                let mut tls = connect_from(&target, addr).await;
                let _ = tls.write_all(&hello_and_login(&format!("nobody{i}"), "wrong password")).await;
                let _ = tls.flush().await;
                // Give the server the frames, then hang up.
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
        while burst.join_next().await.is_some() {}
        // Sample while the checks of the burst run.
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let (threads, rss) = threads_and_rss(pid);
            peak_rss = peak_rss.max(rss);
            peak_threads = peak_threads.max(threads);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "baseline {} MiB, peak {} MiB (bound {} MiB), peak threads {peak_threads}",
        baseline / 1024,
        peak_rss / 1024,
        bound / 1024
    );
    assert!(peak_rss < bound, "RSS {peak_rss} KiB under login bursts; bound {bound} KiB");
    // Threads: the password pool's are fixed; the runtime's blocking
    // threads (store reads) stop at confabd's cap of 32.
    let thread_bound = baseline_threads + 32 + CONCURRENCY + 4;
    assert!(peak_threads <= thread_bound, "{peak_threads} threads under login bursts; bound {thread_bound}");
    // The memory comes back once the pool has been idle a while.
    let deadline = Instant::now() + confab_server::passwords::IDLE_RELEASE + Duration::from_secs(20);
    loop {
        let (_, rss) = threads_and_rss(pid);
        if rss < baseline + 16 * 1024 {
            eprintln!("given back: {} MiB", rss / 1024);
            break;
        }
        assert!(Instant::now() < deadline, "RSS still {} MiB after the load stopped", rss / 1024);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the server still checks passwords.
    assert_eq!(login_from(&target, addr, "nobody", "wrong password").await, Err(ErrorCode::INVALID_CREDENTIALS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_checked_only_within_the_failure_budget() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "password_check_queue = 64\n").await;
    let c = daemon.connect(confab_client::TransportKind::Tcp).await;
    c.signup("bob", "bob-password-1", "phone").await.unwrap();
    drop(c);
    let target = Target::of(&daemon);
    let from: IpAddr = [127, 0, 0, 2].into();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..40 {
        let t = Arc::clone(&target);
        guesses.spawn(async move { login_from(&t, from, "bob", &format!("guess-{i}")).await });
    }
    let mut checked = 0;
    while let Some(r) = guesses.join_next().await {
        match r.unwrap() {
            Err(ErrorCode::INVALID_CREDENTIALS) => checked += 1,
            Err(ErrorCode::RATE_LIMITED) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(checked, 5, "the failed-login budget is 5 per username per minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_logging_in_flat_out_neither_gets_unlimited_logins_nor_locks_others_out() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "").await;
    for (name, password) in [("mallory", "mallory-password"), ("victim", "victim-password")] {
        let c = daemon.connect(confab_client::TransportKind::Tcp).await;
        c.signup(name, password, "first").await.unwrap();
    }
    let target = Target::of(&daemon);
    let attacker: IpAddr = [127, 0, 0, 3].into();
    let victim: IpAddr = [127, 0, 0, 4].into();
    // 80 connections logging mallory in, each as fast as it is answered.
    // The flood lasts until the victim is done (well within a minute, the
    // window of the per-account login limit).
    let cap = Instant::now() + Duration::from_secs(50);
    let victim_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..80 {
        let t = Arc::clone(&target);
        let done = Arc::clone(&victim_done);
        flood.spawn(async move {
            let mut ok = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < cap {
                match login_from(&t, attacker, "mallory", "mallory-password").await {
                    Ok(()) => ok += 1,
                    Err(ErrorCode::RATE_LIMITED | ErrorCode::SERVER_BUSY) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            ok
        });
    }
    // Meanwhile the victim logs in now and then from another address, and
    // newcomers there sign up.
    let (mut victim_ok, mut signups_ok) = (0, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..8 {
        match login_from(&target, victim, "victim", "victim-password").await {
            Ok(()) => victim_ok += 1,
            Err(code) => eprintln!("victim refused: {code}"),
        }
        if i % 2 == 0 {
            match signup_from(&target, victim, &format!("newcomer{i}"), &format!("newcomer-password-{i}")).await {
                Ok(()) => signups_ok += 1,
                Err(code) => eprintln!("newcomer refused: {code}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let still_flooding = Instant::now() < cap;
    victim_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut mallory_ok = 0;
    while let Some(n) = flood.join_next().await {
        mallory_ok += n.unwrap();
    }
    eprintln!("mallory logged in {mallory_ok} times; the victim {victim_ok} of 8; signups {signups_ok} of 4");
    assert!(still_flooding, "the victim's logins and signups must run during the flood");
    assert_eq!(victim_ok, 8, "a login flood from another address must not lock the victim out");
    assert_eq!(signups_ok, 4, "a login flood from another address must not keep newcomers from signing up");
    assert!(mallory_ok <= 10, "logins per account per minute: {mallory_ok}");
}
