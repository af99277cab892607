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
