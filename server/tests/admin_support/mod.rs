//! What the `admin_*` tests share: `confabd admin …` run as the operator
//! runs it (the built binary, against a server's data dir), and waiting
//! for a session to be ended.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use confab_client::{Connection, Event};
use confab_protocol::ErrorCode;

/// What a `confabd admin` run printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `confabd --data-dir DIR admin ARGS…`.
pub async fn admin(dir: &Path, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", dir.to_str().unwrap(), "admin"])
        .args(args)
        // An error is one line, as an operator sees it (anyhow adds a
        // backtrace when these are set).
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`admin`], failing the test unless it succeeds; its stdout.
pub async fn admin_ok(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args).await;
    assert!(out.ok, "confabd admin {args:?} failed: {}{}", out.stdout, out.stderr);
    out.stdout
}

/// Like [`admin`], failing the test if it succeeds; its stderr (one line).
pub async fn admin_refused(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args).await;
    assert!(!out.ok, "confabd admin {args:?} should have failed: {}", out.stdout);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "one line: {}", out.stderr);
    out.stderr
}

/// The code a session was ended with (events before it skipped), within
/// 10 s.
pub async fn closed_with(conn: &mut Connection) -> Option<ErrorCode> {
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

/// The JSON lines of an output.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}
