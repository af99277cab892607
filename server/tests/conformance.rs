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
        // Every scenario runs here but heartbeat.timeout (the settings are
        // given), and every vector but the framing ones on WebSocket.
        assert!(passed > 40, "{}", report.summary());
        if transport != Transport::Ws {
            assert_eq!(
                skipped,
                1,
                "only heartbeat.timeout is skipped on {}: {:?}",
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
