//! The `confab` clients pass the client conformance suite (confab-conformance
//! client) over TCP+TLS and WebSocket:
//! - the command line, driven by conformance/drivers/confab-cli.sh: login,
//!   `confab send`, `confab tail`;
//! - the terminal UI's network path (its UI loop, model and network side:
//!   reconnects, catch-up, acks, the resend of unconfirmed messages), driven
//!   by conformance/drivers/confab-chat.sh: login, then `confab chat
//!   --headless`, which types `/go N` and each text as keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confab_conformance::client::{self, ClientOptions};
use confab_conformance::report::Report;
use confab_conformance::wire::Transport;

/// Grades the client `script` (in conformance/drivers/) starts.
async fn grade(script: &str, transport: Transport) {
    let driver = format!("{}/../conformance/drivers/{script}", env!("CARGO_MANIFEST_DIR"));
    // The driver finds the binary under test through $CONFAB.
    let opts = ClientOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport,
        driver: vec!["env".into(), format!("CONFAB={}", env!("CARGO_BIN_EXE_confab")), "sh".into(), driver],
        only: Vec::new(),
        verbose: false,
    };
    let mut report = Report::new(format!("confab-conformance client {} ({script})", transport.name()), false);
    client::run(&opts, &mut report).await.unwrap();
    let (passed, failed, _) = report.counts();
    assert!(failed == 0 && passed >= 10, "{}\n{}", report.summary(), report.failures().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_passes_the_client_conformance_suite_over_tcp() {
    grade("confab-cli.sh", Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_passes_the_client_conformance_suite_over_websocket() {
    grade("confab-cli.sh", Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_ui_passes_the_client_conformance_suite_over_tcp() {
    grade("confab-chat.sh", Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_ui_passes_the_client_conformance_suite_over_websocket() {
    grade("confab-chat.sh", Transport::Ws).await;
}
