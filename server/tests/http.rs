//! The HTTP side: health and readiness, Prometheus metrics that move with
//! traffic, discovery naming the bound endpoints, and the browser client's
//! files (from a directory here), with nothing outside them reachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use confab_client::TransportKind::{Quic, Ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 GET: (status, headers in lowercase, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_discovery() {
    let server = TestServer::start().await;
    let http = server.server().http_addr().unwrap();

    let (status, _, body) = get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let (_, _, before) = get(http, "/metrics").await;
    let stored_before = metric(&before, "confab_messages_stored_total ");

    let mut web = server.connect(Ws).await;
    web.signup("wes", "wes-password", "browser").await.unwrap();
    let quic = server.connect(Quic).await;
    quic.signup("quinn", "quinn-password", "laptop").await.unwrap();
    let dm = web.open_direct("quinn").await.unwrap();
    web.send(dm.conversation_id, "m1", "counted").await.unwrap();
    next_inbox(&mut web).await;
    let stranger = server.connect(Quic).await;
    assert!(stranger.login("wes", "wrong-password", "x").await.is_err());
    drop(stranger);

    let (status, head, text) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert_eq!(metric(&text, "confab_connections{transport=\"ws\"} "), 1.0);
    assert!(metric(&text, "confab_connections{transport=\"quic\"} ") >= 1.0);
    assert_eq!(metric(&text, "confab_sessions "), 2.0);
    assert_eq!(metric(&text, "confab_users_online "), 2.0);
    assert!(metric(&text, "confab_messages_stored_total ") >= stored_before + 1.0);
    assert!(metric(&text, "confab_deliveries_total ") >= 2.0);
    assert!(metric(&text, "confab_frames_in_total{type=\"send\"} ") >= 1.0);
    assert!(metric(&text, "confab_auth_failures_total ") >= 1.0);
    assert!(metric(&text, "confab_store_commit_seconds_count ") >= 1.0);
    assert!(text.contains("# TYPE confab_store_commit_seconds histogram"));

    let (status, head, body) = get(http, "/v1/discover").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    // A page served by another node may read it (the browser client asks
    // the node it last used when its own origin does not answer).
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["protocol"], "confab.v1");
    let node = &d["nodes"][0];
    let s = server.server();
    assert_eq!(node["quic"], s.quic_addr().unwrap().to_string());
    assert_eq!(node["tcp"], s.tcp_addr().unwrap().to_string());
    assert_eq!(node["ws"], format!("ws://{http}/v1/ws"));
    assert_eq!(node["fingerprint"], format!("sha256:{}", s.fingerprint()));
    assert_eq!(node["load"]["sessions"], 2);

    let (status, _, _) = get(http, "/v1/ws").await;
    assert_eq!(status, 400, "a plain GET of the WebSocket endpoint is refused");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_browser_client_from_a_directory_and_nothing_else() {
    // The client's directory sits inside another one that holds a secret:
    // a path that escaped the root would find it.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
    let web_dir = root.path().join("web");
    std::fs::create_dir(&web_dir).unwrap();
    struct Dir(std::path::PathBuf);
    impl Dir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    let web = Dir(web_dir);
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>Confab</title>").unwrap();
    std::fs::write(web.path().join("app.js"), "export const x = 1;").unwrap();
    std::fs::create_dir(web.path().join("tests")).unwrap();
    std::fs::write(web.path().join("tests/e2e.mjs"), "secret").unwrap();
    std::fs::write(web.path().join(".env"), "secret").unwrap();
    // Links: one out of the directory (not followed), one inside it (fine).
    std::os::unix::fs::symlink(root.path().join("secret.txt"), web.path().join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(root.path(), web.path().join("up")).unwrap();
    std::os::unix::fs::symlink(web.path().join("app.js"), web.path().join("alias.js")).unwrap();
    let dir = web.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.web_dir = Some(dir)).await;
    let http = server.server().http_addr().unwrap();

    let (status, head, body) = get(http, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy"), "{head}");
    assert!(body.contains("<title>Confab</title>"));
    let (status, head, _) = get(http, "/app.js").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    let (status, _, body) = get(http, "/alias.js").await;
    assert_eq!((status, body.as_str()), (200, "export const x = 1;"));
    for path in [
        "/tests/e2e.mjs",
        "/.env",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/a/../../secret.txt",
        "/nope.js",
        "/leak.txt",
        "/up/secret.txt",
    ] {
        let (status, _, body) = get(http, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.contains("secret"), "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_http_connections_are_closed() {
    let server = TestServer::start_with(|c| c.handshake_timeout_ms = 500).await;
    let http = server.server().http_addr().unwrap();
    let started = std::time::Instant::now();
    // One sends nothing, one trickles a request header, one sends half a
    // header and stops.
    let silent = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(http).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let trickling = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n" {
            if trickle.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the trickled request was allowed to finish");
    });
    for (what, mut s) in [("silent", silent), ("half", half)] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "{what}: still open after 5 s");
        assert!(buf.is_empty(), "{what}: got an answer without a complete request");
    }
    trickling.await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    // Well-behaved requests are unaffected.
    let (status, _, body) = get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.stop().await;
}
