//! `confabd admin` on a cluster node: the commands that need the whole
//! store on one machine (users, disable, enable, export, backup) refuse
//! with one line saying what to do instead, and change nothing; `user`
//! still looks an account up (through its partition's owner).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_support;
mod common;

use admin_support::{admin_ok, admin_refused};
use common::cluster::{Nats, nats_server, settled, start_node};
use confab_client::TransportKind::Tcp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_need_the_whole_store_refuse_in_cluster_mode() {
    let Some(binary) = nats_server("cluster test (server/tests/admin_cluster.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let node_dir = dir.path().join("a");
    let node = start_node(&nats, &node_dir, "a", 4).await;
    let bob = node.connect(Tcp).await;
    settled(|| bob.signup("bob", "bob-password", "laptop")).await;

    let backup = dir.path().join("backup");
    for (args, says) in [
        (vec!["users"], "confabd admin user NAME"),
        (vec!["disable", "bob"], "reset-password"),
        (vec!["enable", "bob"], "reset-password"),
        (vec!["export", "bob"], "confabd admin user NAME"),
        (vec!["backup", backup.to_str().unwrap()], "nats stream backup"),
    ] {
        let err = admin_refused(&node_dir, &args).await;
        assert!(err.contains("not available in cluster mode"), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} should say what to do instead: {err}");
    }
    assert!(!backup.exists(), "a refused backup writes nothing");

    // Nothing was disabled; the lookup works.
    let user: serde_json::Value = serde_json::from_str(&admin_ok(&node_dir, &["user", "bob"]).await).unwrap();
    assert_eq!(user["disabled"], false);
    node.connect(Tcp).await.login("bob", "bob-password", "phone").await.unwrap();
}
