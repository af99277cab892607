//! `confabd admin` against a running confabd (the security review: a
//! leaked password could only be fought by revoking devices, and the
//! operator had no way to reset one). The operator resets a password —
//! every device of the account is signed out, the old password stops
//! working, the new one works — looks an account up, and revokes its
//! devices; a data dir with no server running gets a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::Daemon;
use confab_client::{Event, TransportKind::Tcp};
use confab_protocol::ErrorCode;

fn confabd_admin(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.to_str().unwrap(), "admin"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn closed_with(conn: &mut confab_client::Connection) -> Option<ErrorCode> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.next_event().await {
                Some(Event::Closed(e)) => return e.code(),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("the session was not ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_resets_a_password_and_revokes_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = confabd_admin(dir.path(), &["user", "bob"], None);
    assert!(!ok);
    assert!(err.contains("no confabd is running"), "{err}");

    let server = Daemon::start(dir.path(), &[]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.sock")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the admin socket is the owner's only: {mode:o}");
    }
    let mut bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "laptop").await.unwrap();
    let mut phone = server.connect(Tcp).await;
    phone.login("bob", "bob-password", "phone").await.unwrap();

    let (ok, out, err) = confabd_admin(dir.path(), &["user", "bob"], None);
    assert!(ok, "{err}");
    let user: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(user["username"], "bob");
    assert_eq!(user["devices"].as_array().unwrap().len(), 2);
    let (ok, _, err) = confabd_admin(dir.path(), &["user", "nobody-here"], None);
    assert!(!ok && err.contains("no such user"), "{err}");

    // A weak password is refused; nothing changes.
    let (ok, _, err) = confabd_admin(dir.path(), &["reset-password", "bob", "--password-stdin"], Some("bob\n"));
    assert!(!ok && err.contains("password"), "{err}");
    // A good one: both devices are signed out.
    let (ok, out, err) =
        confabd_admin(dir.path(), &["reset-password", "bob", "--password-stdin"], Some("an operator's choice\n"));
    assert!(ok, "{err}");
    assert!(out.contains("2 device(s) signed out"), "{out}");
    assert_eq!(closed_with(&mut bob).await, Some(ErrorCode::DEVICE_REVOKED));
    assert_eq!(closed_with(&mut phone).await, Some(ErrorCode::DEVICE_REVOKED));
    let old = server.connect(Tcp).await;
    assert_eq!(old.login("bob", "bob-password", "x").await.unwrap_err().code(), Some(ErrorCode::INVALID_CREDENTIALS));
    let mut back = server.connect(Tcp).await;
    back.login("bob", "an operator's choice", "laptop").await.unwrap();

    // A generated password is printed once and works.
    let (ok, out, err) = confabd_admin(dir.path(), &["reset-password", "bob"], None);
    assert!(ok, "{err}");
    assert_eq!(closed_with(&mut back).await, Some(ErrorCode::DEVICE_REVOKED));
    let generated = out.lines().find_map(|l| l.strip_prefix("new password for bob: ")).expect(&out).to_string();
    assert_eq!(generated.len(), 20);
    let mut again = server.connect(Tcp).await;
    again.login("bob", &generated, "laptop").await.unwrap();

    // Revoke without a new password.
    let (ok, out, err) = confabd_admin(dir.path(), &["revoke-devices", "bob"], None);
    assert!(ok && out.contains("1 device(s) of bob signed out"), "{out}{err}");
    assert_eq!(closed_with(&mut again).await, Some(ErrorCode::DEVICE_REVOKED));
    server.connect(Tcp).await.login("bob", &generated, "laptop").await.unwrap();
}

/// `confabd admin drain` stops the server as SIGTERM does: its sessions
/// get GoAway, then the fatal SHUTTING_DOWN, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_drains_the_server_through_the_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Daemon::start(dir.path(), &[]).await;
    let mut bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "laptop").await.unwrap();

    let (ok, out, err) = confabd_admin(dir.path(), &["drain"], None);
    assert!(ok, "{err}");
    assert!(out.contains("draining: 1 session(s) are told to go"), "{out}");

    let told = tokio::time::timeout(Duration::from_secs(10), async {
        let mut go_away = false;
        loop {
            match bob.next_event().await {
                Some(Event::GoAway(g)) => {
                    assert_eq!(g.code, ErrorCode::SHUTTING_DOWN.0);
                    go_away = true;
                }
                Some(Event::Closed(e)) => return (go_away, e.code()),
                Some(_) => continue,
                None => return (go_away, None),
            }
        }
    })
    .await
    .expect("the session did not end");
    assert_eq!(told, (true, Some(ErrorCode::SHUTTING_DOWN)), "GoAway, then the fatal SHUTTING_DOWN");
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("confabd did not exit after the drain")
        .unwrap();
    assert!(status.success(), "a drained confabd exits 0: {status}");
}
