//! What an operator sees when confabd cannot start: one line that says
//! what to do (no backtrace, even with RUST_BACKTRACE=1, no colour codes),
//! exit status 1, and no half-made data dir left by a first start that
//! failed; `--help` shows the defaults and `--version` the binary's name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn confabd(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A start that fails ends at once; one that does not is a bug here.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "confabd {args:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The last line of stderr (logs may come before it), checked to be the
/// only error line.
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("stack backtrace") && !err.contains("Caused by"), "one line, no backtrace: {err}");
    assert!(!err.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {err:?}");
    let line = err.lines().last().unwrap_or_default().to_string();
    assert!(line.starts_with("confabd: "), "{err}");
    line
}

fn local() -> [&'static str; 6] {
    ["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"]
}

#[test]
fn a_data_dir_in_use_is_named_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_confabd"))
        .args(["--data-dir", data_s])
        .args(local())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Serving once the banner's fingerprint line is out.
    let mut banner = String::new();
    let mut stdout = std::io::BufReader::new(first.stdout.take().unwrap());
    while !banner.contains("fingerprint:") {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "no banner: {banner}");
        banner.push_str(&line);
    }
    let mut args = vec!["--data-dir", data_s];
    args.extend(local());
    let line = error_line(&confabd(&args));
    assert!(line.contains("another confabd is using this data dir") && line.contains("--data-dir"), "{line}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn a_data_dir_that_is_a_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut args = vec!["--data-dir", file.to_str().unwrap()];
    args.extend(local());
    let line = error_line(&confabd(&args));
    assert!(line.contains("is a file, not a directory"), "{line}");
}

#[test]
fn a_failed_first_start_leaves_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = confabd(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--tcp",
        &port,
        "--quic",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    let line = error_line(&out);
    assert!(line.contains("Address already in use") && line.matches("os error").count() == 1, "said once: {line}");
    assert!(!data.exists(), "the failed start left {} behind", data.display());
}

#[test]
fn help_shows_defaults_and_version_names_confabd() {
    let out = Command::new(env!("CARGO_BIN_EXE_confabd")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 127.0.0.1:7443]") && help.contains("[default: 127.0.0.1:7080]"), "{help}");
    assert!(help.contains("[default: fsync]") && help.contains("[default: 50]"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_confabd")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("confabd "));
}

#[test]
fn completions_and_manual_page_come_from_the_flags() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_confabd")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_confabd()") && bash.contains("--data-dir") && bash.contains("reset-password"), "{bash}");
    let man = run(&["manpage"]);
    assert!(man.contains(".TH confabd 1") && man.contains("default: 127.0.0.1:7443"), "{man}");
}
