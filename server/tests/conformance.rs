//! confabd passes the server conformance suite (confab-conformance) on
//! all three transports, with the settings its optional scenarios need:
//! every scenario runs on every transport it applies to, three of them
//! against servers of their own (heartbeat.timeout needs a 1 s heartbeat,
//! which would end every idle session of the other scenarios, and
//! shutdown.goaway stops its server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use confab_conformance::report::{Outcome, Report};
use confab_conformance::server::{self, Options, Settings};
use confab_conformance::wire::{Target, Transport, Trust};

const OUTBOUND_QUEUE_BYTES: usize = 1024 * 1024;
const PRESENCE_GRACE_MS: u64 = 1000;
const HANDSHAKE_TIMEOUT_MS: u64 = 1500;
const AUTH_TIMEOUT_MS: u64 = 2000;
/// The shortest heartbeat interval a server may advertise (§4.6).
const HEARTBEAT_INTERVAL_MS: u64 = 1000;

const TRANSPORTS: [Transport; 3] = [Transport::Tcp, Transport::Quic, Transport::Ws];

/// Runs the suite's scenarios `only` selects (all when empty) against
/// `addr` over `transport`.
async fn run_suite(addr: &str, transport: Transport, fingerprint: &str, settings: Settings, only: &[&str]) -> Report {
    let trust = Trust::Fingerprint(fingerprint.to_string());
    let target = Target::new(addr, transport, &trust, Some("localhost")).unwrap();
    let opts = Options { target, settings, only: only.iter().map(|s| s.to_string()).collect() };
    let what = if only.is_empty() { String::new() } else { format!(" ({})", only.join(", ")) };
    let mut report = Report::new(format!("confab-conformance server {}{what}", transport.name()), false);
    server::run(&opts, &mut report).await.unwrap();
    report
}

fn skipped(report: &Report) -> BTreeSet<String> {
    report.entries.iter().filter(|e| matches!(e.outcome, Outcome::Skip(_))).map(|e| e.id.clone()).collect()
}

/// The `invalid/` vectors of the framing stage: WebSocket messages carry
/// no length prefix, so the suite skips them there.
fn framing_vectors() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/invalid");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if v["expect"]["stage"] == "framing" {
            out.insert(format!("vector.{}", path.file_stem().unwrap().to_str().unwrap()));
        }
    }
    assert!(!out.is_empty(), "no framing vectors in {}", dir.display());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confabd_passes_the_server_conformance_suite_on_every_transport() {
    let server = TestServer::start_with(|c| {
        c.presence_grace_ms = PRESENCE_GRACE_MS;
        c.outbound_queue_bytes = OUTBOUND_QUEUE_BYTES;
        c.tcp_send_buffer_bytes = 16 * 1024;
        c.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
        c.auth_timeout_ms = AUTH_TIMEOUT_MS;
        // Small enough for the suite's four users to fill a group, and for
        // a few logins to fill an account's devices.
        c.limits.max_group_members = 3;
        c.limits.max_devices = 3;
        // No VAPID key in Welcome: registering Web Push is FEATURE_UNAVAILABLE.
        c.push.web_push = false;
    })
    .await;
    let s = server.server();
    let settings = Settings {
        presence_grace_ms: Some(PRESENCE_GRACE_MS),
        outbound_queue_bytes: Some(OUTBOUND_QUEUE_BYTES as u64),
        handshake_timeout_ms: Some(HANDSHAKE_TIMEOUT_MS),
        auth_timeout_ms: Some(AUTH_TIMEOUT_MS),
        // The heartbeat is the default 20 s here: heartbeat.timeout runs
        // in confabd_ends_silent_sessions_as_the_suite_expects below.
        slow: false,
        // The in-process server cannot be stopped by a command: see
        // confabd_shuts_down_as_the_suite_expects below.
        shutdown_command: None,
    };
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    for transport in TRANSPORTS {
        let addr = match transport {
            Transport::Tcp => s.tcp_addr(),
            Transport::Quic => s.quic_addr(),
            Transport::Ws => s.http_addr(),
        };
        let report = run_suite(&addr.unwrap().to_string(), transport, s.fingerprint(), settings.clone(), &[]).await;
        let (passed, _, _) = report.counts();
        assert!(passed > 40, "{}", report.summary());
        // Skipped here, and only these: the two scenarios run below, the
        // QUIC-only ones elsewhere, the framing vectors on WebSocket. A
        // new skip fails.
        let mut expected: BTreeSet<String> =
            ["heartbeat.timeout", "shutdown.goaway"].into_iter().map(String::from).collect();
        if transport != Transport::Quic {
            expected.extend(["quic.request_streams".to_string(), "quic.no_request_streams".to_string()]);
        }
        if transport == Transport::Ws {
            expected.extend(framing_vectors());
        }
        assert_eq!(skipped(&report), expected, "the checks skipped on {}\n{}", transport.name(), report.summary());
        summaries.push(report.summary());
        failed.extend(report.failures().into_iter().map(|f| format!("[{}] {f}", transport.name())));
    }
    assert!(failed.is_empty(), "{}\n{}", summaries.join("\n"), failed.join("\n"));
    server.stop().await;
}

/// heartbeat.timeout on every transport, against a server with the
/// shortest heartbeat interval allowed: it waits 2.5 intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confabd_ends_silent_sessions_as_the_suite_expects() {
    let server = TestServer::start_with(|c| c.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS).await;
    let s = server.server();
    let f = s.fingerprint();
    let only = ["heartbeat"];
    let (tcp, quic, ws) =
        (s.tcp_addr().unwrap().to_string(), s.quic_addr().unwrap().to_string(), s.http_addr().unwrap().to_string());
    let reports = tokio::join!(
        run_suite(&tcp, Transport::Tcp, f, Settings::default(), &only),
        run_suite(&quic, Transport::Quic, f, Settings::default(), &only),
        run_suite(&ws, Transport::Ws, f, Settings::default(), &only),
    );
    for report in [reports.0, reports.1, reports.2] {
        assert_eq!(report.counts(), (1, 0, 0), "{}\n{}", report.summary(), report.failures().join("\n"));
        assert_eq!(report.entries[0].id, "heartbeat.timeout");
    }
    server.stop().await;
}

/// A confabd process, and where its banner says it listens.
struct Confabd {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    fingerprint: String,
    quic: String,
    tcp: String,
    http: String,
}

impl Confabd {
    fn start() -> Confabd {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The banner names the ports, then the fingerprint.
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut quic, mut tcp, mut http, mut fingerprint) =
            (String::new(), String::new(), String::new(), String::new());
        while fingerprint.is_empty() {
            let line = lines.next().expect("the banner ended early").unwrap();
            for (prefix, field) in
                [("quic: ", &mut quic), ("tcp: ", &mut tcp), ("http: ", &mut http), ("fingerprint: ", &mut fingerprint)]
            {
                if let Some(v) = line.strip_prefix(prefix) {
                    *field = v.to_string();
                }
            }
        }
        Confabd { child, _dir: dir, fingerprint, quic, tcp, http }
    }

    /// shutdown.goaway over `transport`, stopping this process with SIGTERM.
    async fn shut_down_over(&self, transport: Transport) -> Report {
        let addr = match transport {
            Transport::Tcp => &self.tcp,
            Transport::Quic => &self.quic,
            Transport::Ws => &self.http,
        };
        let settings =
            Settings { shutdown_command: Some(format!("kill -TERM {}", self.child.id())), ..Settings::default() };
        run_suite(addr, transport, &self.fingerprint, settings, &["shutdown"]).await
    }
}

impl Drop for Confabd {
    fn drop(&mut self) {
        // A no-op once it has been waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// shutdown.goaway on every transport, each against a confabd process the
/// suite stops with SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confabd_shuts_down_as_the_suite_expects() {
    let mut daemons: Vec<Confabd> = TRANSPORTS.iter().map(|_| Confabd::start()).collect();
    let reports = tokio::join!(
        daemons[0].shut_down_over(TRANSPORTS[0]),
        daemons[1].shut_down_over(TRANSPORTS[1]),
        daemons[2].shut_down_over(TRANSPORTS[2]),
    );
    for report in [reports.0, reports.1, reports.2] {
        assert_eq!(report.counts(), (1, 0, 0), "{}\n{}", report.summary(), report.failures().join("\n"));
        assert_eq!(report.entries[0].id, "shutdown.goaway");
    }
    for (d, transport) in daemons.iter_mut().zip(TRANSPORTS) {
        assert!(d.child.wait().unwrap().success(), "confabd exits 0 after SIGTERM ({})", transport.name());
    }
}
