//! confabd passes the server conformance suite (confab-conformance) on
//! all three transports, with the settings its optional scenarios need.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_conformance::report::Report;
use confab_conformance::server::{self, Options, Settings};
use confab_conformance::wire::{Target, Transport, Trust};

const OUTBOUND_QUEUE_BYTES: usize = 1024 * 1024;
const PRESENCE_GRACE_MS: u64 = 1000;
const HANDSHAKE_TIMEOUT_MS: u64 = 1500;
const AUTH_TIMEOUT_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confabd_passes_the_server_conformance_suite_on_every_transport() {
    let server = TestServer::start_with(|c| {
        c.presence_grace_ms = PRESENCE_GRACE_MS;
        c.outbound_queue_bytes = OUTBOUND_QUEUE_BYTES;
        c.tcp_send_buffer_bytes = 16 * 1024;
        c.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
        c.auth_timeout_ms = AUTH_TIMEOUT_MS;
        // Small enough for the suite's four users to fill a group.
        c.limits.max_group_members = 3;
    })
    .await;
    let s = server.server();
    let trust = Trust::Fingerprint(s.fingerprint().to_string());
    let settings = Settings {
        presence_grace_ms: Some(PRESENCE_GRACE_MS),
        outbound_queue_bytes: Some(OUTBOUND_QUEUE_BYTES as u64),
        handshake_timeout_ms: Some(HANDSHAKE_TIMEOUT_MS),
        auth_timeout_ms: Some(AUTH_TIMEOUT_MS),
        // 2.5 intervals of 20 s on each transport would add minutes;
        // heartbeat timeouts are tested in the server's own tests.
        slow: false,
        // The in-process server cannot be stopped by a command: see
        // confabd_shuts_down_as_the_suite_expects below.
        shutdown_command: None,
    };
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    for (transport, addr) in [
        (Transport::Tcp, s.tcp_addr().unwrap()),
        (Transport::Quic, s.quic_addr().unwrap()),
        (Transport::Ws, s.http_addr().unwrap()),
    ] {
        let target = Target::new(&addr.to_string(), transport, &trust, Some("localhost")).unwrap();
        let opts = Options { target, settings: settings.clone(), only: Vec::new() };
        let mut report = Report::new(format!("confab-conformance server {}", transport.name()), false);
        server::run(&opts, &mut report).await.unwrap();
        let (passed, _, skipped) = report.counts();
        // Every scenario runs here but heartbeat.timeout and
        // shutdown.goaway (below), and every vector but the framing ones
        // on WebSocket.
        assert!(passed > 40, "{}", report.summary());
        if transport != Transport::Ws {
            assert_eq!(
                skipped,
                2,
                "only heartbeat.timeout and shutdown.goaway are skipped on {}: {:?}",
                transport.name(),
                report
                    .entries
                    .iter()
                    .filter(|e| matches!(e.outcome, confab_conformance::report::Outcome::Skip(_)))
                    .map(|e| &e.id)
                    .collect::<Vec<_>>()
            );
        }
        summaries.push(report.summary());
        failed.extend(report.failures().into_iter().map(|f| format!("[{}] {f}", transport.name())));
    }
    assert!(failed.is_empty(), "{}\n{}", summaries.join("\n"), failed.join("\n"));
    server.stop().await;
}

/// shutdown.goaway against a confabd process the suite stops with SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confabd_shuts_down_as_the_suite_expects() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The banner names the ports and the fingerprint.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tcp, mut fingerprint) = (String::new(), String::new());
    while fingerprint.is_empty() {
        let line = lines.next().expect("the banner ended early").unwrap();
        if let Some(a) = line.strip_prefix("tcp: ") {
            tcp = a.to_string();
        }
        if let Some(f) = line.strip_prefix("fingerprint: ") {
            fingerprint = f.to_string();
        }
    }
    let target = Target::new(&tcp, Transport::Tcp, &Trust::Fingerprint(fingerprint), Some("localhost")).unwrap();
    let settings = Settings { shutdown_command: Some(format!("kill -TERM {}", child.id())), ..Settings::default() };
    let opts = Options { target, settings, only: vec!["shutdown".into()] };
    let mut report = Report::new("confab-conformance server tcp (shutdown)", false);
    server::run(&opts, &mut report).await.unwrap();
    assert_eq!(report.counts(), (1, 0, 0), "{}\n{}", report.summary(), report.failures().join("\n"));
    assert!(child.wait().unwrap().success(), "confabd exits 0 after SIGTERM");
}
