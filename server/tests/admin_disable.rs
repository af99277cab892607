//! `confabd admin disable` / `enable` against a running server (an abuse
//! control): a disabled account's live sessions end at once with
//! DEVICE_REVOKED; its login is answered exactly as a wrong password is
//! (INVALID_CREDENTIALS, same message, also with the right password) and
//! its devices' tokens resume nothing (INVALID_TOKEN); other users are
//! untouched. It stays disabled across a restart. `enable` undoes it: the
//! password logs in, the old devices' tokens resume, every message is
//! there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_support;
mod common;

use admin_support::{admin, admin_ok, closed_with};
use common::{TestServer, code, text};
use confab_client::TransportKind::{Quic, Tcp};
use confab_protocol::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_cannot_log_in_or_resume_until_enabled() {
    let mut server = TestServer::start().await;
    let dir = server.dir.path().to_path_buf();
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let mut bob = server.connect(Tcp).await;
    let laptop = bob.signup("bob", "bob-password", "laptop").await.unwrap();
    let mut phone = server.connect(Quic).await;
    let phone_auth = phone.login("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();
    for i in 0..3 {
        alice.send(dm.conversation_id, &format!("m{i}"), &format!("before {i}")).await.unwrap();
    }

    let out = admin_ok(&dir, &["disable", "bob"]).await;
    assert!(out.contains("bob disabled"), "{out}");
    assert!(out.contains("2 device(s) online signed out"), "{out}");
    assert_eq!(closed_with(&mut bob).await, Some(ErrorCode::DEVICE_REVOKED));
    assert_eq!(closed_with(&mut phone).await, Some(ErrorCode::DEVICE_REVOKED));

    // Login: the same answer as a wrong password, whatever the password.
    let c = server.connect(Tcp).await;
    let right = c.login("bob", "bob-password", "x").await.unwrap_err();
    let wrong = server.connect(Tcp).await.login("bob", "not-the-password", "x").await.unwrap_err();
    let nobody = server.connect(Tcp).await.login("nobody", "bob-password", "x").await.unwrap_err();
    assert_eq!(right.code(), Some(ErrorCode::INVALID_CREDENTIALS));
    assert_eq!(right, wrong, "a disabled account answers as a wrong password does");
    assert_eq!(right, nobody);
    // Resume: the devices' tokens resume nothing.
    for (transport, token) in [(Tcp, &laptop.token), (Quic, &phone_auth.token)] {
        let c = server.connect(transport).await;
        assert_eq!(code(c.resume(token).await), ErrorCode::INVALID_TOKEN);
    }
    // Others are untouched; messages to bob are still stored.
    alice.send(dm.conversation_id, "m3", "while disabled").await.unwrap();
    let user: serde_json::Value = serde_json::from_str(&admin_ok(&dir, &["user", "bob"]).await).unwrap();
    assert_eq!(user["disabled"], true);
    assert_eq!(user["devices"].as_array().unwrap().len(), 2, "the devices stay");
    let again = admin_ok(&dir, &["disable", "bob"]).await;
    assert!(again.contains("already"), "{again}");

    // Durable: still disabled after a restart.
    server.restart().await;
    let c = server.connect(Tcp).await;
    assert_eq!(code(c.login("bob", "bob-password", "x").await), ErrorCode::INVALID_CREDENTIALS);
    let c = server.connect(Tcp).await;
    assert_eq!(code(c.resume(&laptop.token).await), ErrorCode::INVALID_TOKEN);

    // Enabled: the old device resumes, the password logs in, nothing lost.
    let out = admin_ok(&dir, &["enable", "bob"]).await;
    assert!(out.contains("bob enabled"), "{out}");
    let back = server.connect(Tcp).await;
    let resumed = back.resume(&laptop.token).await.unwrap();
    assert_eq!(resumed.device_id, laptop.device_id);
    let fresh = server.connect(Quic).await;
    fresh.login("bob", "bob-password", "tablet").await.unwrap();
    let page = fresh.history(dm.conversation_id, 0, 0, 50).await.unwrap();
    let texts: Vec<&str> = page.messages.iter().map(text).collect();
    assert_eq!(texts, ["before 0", "before 1", "before 2", "while disabled"]);
    let again = admin_ok(&dir, &["enable", "bob"]).await;
    assert!(again.contains("was not disabled"), "{again}");
    let user: serde_json::Value = serde_json::from_str(&admin_ok(&dir, &["user", "bob"]).await).unwrap();
    assert_eq!(user["disabled"], false);

    let out = admin(&dir, &["disable", "nobody-here"]).await;
    assert!(!out.ok && out.stderr.contains("no such user"), "{}", out.stderr);
    server.stop().await;
}
