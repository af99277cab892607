//! `--log trace` does not write what users send: the WebSocket library
//! logs every frame it reads and writes at debug and trace (signup
//! passwords, device tokens, message text, webhook secrets), so confabd
//! caps its targets at info whatever the filter asks (docs/SECURITY.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::Daemon;
use confab_client::TransportKind;
use confab_protocol::pb;
use confab_protocol::pb::client_frame::Body;
use confab_protocol::pb::server_frame::Body as Reply;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_password_token_message_text_or_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Daemon::start_logging(&dir.path().join("data"), &[], "trace", log).await;

    let password = "Pw-7f3a9c-never-in-a-log";
    let text = "Text-5e1b-never-in-a-log";
    let alice = daemon.connect(TransportKind::Ws).await;
    let auth = alice.signup("alice", password, "laptop").await.unwrap();
    let bob = daemon.connect(TransportKind::Ws).await;
    bob.signup("bob", "bob-password-123", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    alice.send(dm, "m1", text).await.unwrap();
    // A webhook's signing secret goes to its device once, in PushRegistered.
    let target =
        pb::register_push_request::Target::Webhook(pb::WebhookTarget { url: "https://203.0.113.7/hook".into() });
    let secret =
        match alice.request(Body::RegisterPush(pb::RegisterPushRequest { target: Some(target) })).await.unwrap() {
            Reply::PushRegistered(r) => r.webhook_secret.to_vec(),
            other => panic!("expected PushRegistered, got {other:?}"),
        };
    assert_eq!(secret.len(), 32);
    let again = daemon.resume(TransportKind::Ws, &auth.token).await;
    drop((alice, bob, again));
    daemon.kill().await;

    let logged = std::fs::read_to_string(&log_path).unwrap();
    // The filter was really at trace: other targets wrote trace lines.
    assert!(logged.contains("TRACE"), "no trace line at all: the test would prove nothing");
    // However a library would print them: as text, as hex (tungstenite
    // shows a frame's payload in hex), or as Rust's `{:?}` of bytes.
    let logged_lower = logged.to_ascii_lowercase();
    let shown = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        [hex, format!("{bytes:?}"), format!("{:?}", bytes::Bytes::copy_from_slice(bytes))]
    };
    for (what, bytes) in [
        ("password", password.as_bytes()),
        ("message text", text.as_bytes()),
        ("token", auth.token.as_bytes()),
        ("webhook secret", secret.as_slice()),
    ] {
        assert!(!logged.contains(String::from_utf8_lossy(bytes).as_ref()), "the {what} is in the log");
        for form in shown(bytes) {
            assert!(!logged_lower.contains(&form.to_ascii_lowercase()), "the {what} is in the log as {form}");
        }
    }
}
