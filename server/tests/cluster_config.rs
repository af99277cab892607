//! A node that cannot join a cluster says why in one line and exits, never
//! hangs: no NATS at the URL, a NATS without JetStream, a cluster created
//! with another partition count. (A NATS cluster that is still electing
//! its JetStream leaders is waited for, within the connect timeout.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Nats, free_port, nats_server, start_node};

/// Runs confabd with `args` in `dir`; it must exit with an error within
/// `within`. Returns what it wrote to stderr.
async fn refused(dir: &std::path::Path, args: &[&str], within: Duration) -> String {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("confabd {args:?} still running after {within:?}"))
        .unwrap();
    assert!(!out.status.success(), "confabd {args:?} exited successfully");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("refused after {:?}: {}", started.elapsed(), stderr.trim());
    stderr
}

/// A config file that shortens the connect timeout.
fn quick_config(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, "[cluster]\nconnect_timeout_ms = 1500\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_nats_at_the_url_is_refused_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = quick_config(dir.path());
    let url = format!("nats://127.0.0.1:{}", free_port());
    let err =
        refused(dir.path(), &["--config", &config, "--cluster", &url, "--node-id", "a"], Duration::from_secs(15)).await;
    assert!(err.contains("NATS is unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_without_jetstream_is_refused() {
    let Some(binary) = nats_server("cluster test (server/tests/cluster_config.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nats = tokio::process::Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = quick_config(dir.path());
    let url = format!("nats://127.0.0.1:{port}");
    let err =
        refused(dir.path(), &["--config", &config, "--cluster", &url, "--node-id", "a"], Duration::from_secs(15)).await;
    assert!(err.contains("JetStream is not available"), "{err}");
    assert!(err.contains("-js"), "says how to fix it: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_partition_count_is_refused_at_once() {
    let Some(binary) = nats_server("cluster test (server/tests/cluster_config.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let _a = start_node(&nats, &dir.path().join("a"), "a", 8).await;
    let urls = nats.urls();
    let err = refused(
        &dir.path().join("b"),
        &["--cluster", &urls, "--node-id", "b", "--partitions", "4", "--replicas", "3"],
        Duration::from_secs(5),
    )
    .await;
    assert!(err.contains("this cluster has 8 partitions"), "{err}");
    assert!(err.contains("--partitions 4"), "{err}");
}

/// While a node starts (here: waiting for NATS), its HTTP port already
/// answers: alive (`/healthz` 200) but not ready (`/readyz` 503), so a
/// readiness probe sees "not ready" rather than a refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_answers_healthz_but_not_readyz() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[cluster]\nconnect_timeout_ms = 20000\n").unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let url = format!("nats://127.0.0.1:{}", free_port());
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", &http])
        .args(["--config", config.to_str().unwrap(), "--cluster", &url, "--node-id", "a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The port is bound once the data dir and certificate are ready.
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(&http).await.is_err() {
        assert!(Instant::now() < deadline, "the HTTP port never opened while the node started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = common::cluster::http_get(&http, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "starting\n"));
    let (status, body) = common::cluster::http_get(&http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = common::cluster::http_get(&http, "/v1/discover").await;
    assert_eq!(status, 503, "a starting node sent clients to itself");
}
