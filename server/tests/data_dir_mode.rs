//! A new data directory is private to the server's user (0700): it holds
//! message bodies, password and token hashes and webhook secrets, and
//! under the usual umask 022 it used to be world-readable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("confab-data");
    let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data dir mode {mode:o}");
    server.stop().await;
}

/// confabd names every secret others can read when it starts: the data
/// directory, the TLS key, the VAPID key and the QUIC reset key (an
/// operator's `chmod`, a restore or a copy may have loosened them).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_modes_on_the_data_dir_and_keys_are_warned_about_at_start() {
    use common::daemon::Daemon;
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    // A first start makes the keys, each mode 0600, in a 0700 data dir.
    let quiet = parent.path().join("first.log");
    let mut first = Daemon::start_logging(&data, &[], "info", std::fs::File::create(&quiet).unwrap()).await;
    first.kill().await;
    let first_log = std::fs::read_to_string(&quiet).unwrap();
    assert!(
        !first_log.contains("readable by other users") && !first_log.contains("open to other users"),
        "{first_log}"
    );

    let secrets = [
        (data.join("tls/key.pem"), "the TLS private key"),
        (data.join("push/vapid.pem"), "the VAPID private key"),
        (data.join("quic-reset.key"), "the QUIC reset key"),
    ];
    for (path, _) in &secrets {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let loud = parent.path().join("second.log");
    let mut second = Daemon::start_logging(&data, &[], "info", std::fs::File::create(&loud).unwrap()).await;
    second.kill().await;
    let logged = std::fs::read_to_string(&loud).unwrap();
    assert!(logged.contains("the data directory is open to other users; chmod 700 it"), "{logged}");
    for (path, what) in &secrets {
        let line = logged
            .lines()
            .find(|l| l.contains(&format!("{what} is readable by other users; chmod 600 it")))
            .unwrap_or_else(|| panic!("no warning for {what}:\n{logged}"));
        assert!(line.contains(&path.display().to_string()), "the warning names the file: {line}");
    }
}
