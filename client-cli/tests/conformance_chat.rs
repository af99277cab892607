//! The network path of `confab chat` (its UI loop, model and network side:
//! reconnects, catch-up, acks, the resend of unconfirmed messages) passes
//! the client conformance suite (confab-conformance client) over TCP+TLS
//! and WebSocket, driven by conformance/drivers/confab-chat.sh: login, then
//! `confab chat --headless`, which types `/go N` and each text as keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confab_conformance::client::{self, ClientOptions};
use confab_conformance::report::Report;
use confab_conformance::wire::Transport;

async fn grade(transport: Transport) {
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/drivers/confab-chat.sh");
    // The driver finds the binary under test through $CONFAB.
    let opts = ClientOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport,
        driver: vec!["env".into(), format!("CONFAB={}", env!("CARGO_BIN_EXE_confab")), "sh".into(), driver.into()],
        only: Vec::new(),
        verbose: false,
    };
    let mut report = Report::new(format!("confab-conformance client {} (confab chat)", transport.name()), false);
    client::run(&opts, &mut report).await.unwrap();
    let (passed, failed, _) = report.counts();
    assert!(failed == 0 && passed >= 10, "{}\n{}", report.summary(), report.failures().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_ui_passes_the_client_conformance_suite_over_tcp() {
    grade(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_ui_passes_the_client_conformance_suite_over_websocket() {
    grade(Transport::Ws).await;
}
