//! A session that revokes its own device ends with a fatal DEVICE_REVOKED
//! Error; it is never just cut off. Found by the `server_e2e` fuzz target:
//! the kill raced the write of the output already queued (`select!` picks
//! among ready branches at random), so the session sometimes closed with
//! neither the Done nor the fatal Error. The race is a coin toss per round,
//! hence the rounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::Tcp;
use confab_protocol::{
    ErrorCode,
    pb::{self, client_frame::Body, server_frame::Body as Reply},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_own_device_ends_with_device_revoked() {
    // A login per round: more than one account's logins per minute.
    let server = TestServer::start_with(|c| c.logins_per_user_per_minute = 1000).await;
    let alice = server.connect(Tcp).await;
    let auth = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    drop(alice);
    for round in 0..30 {
        let mut raw = Raw::hello(&server).await;
        // Each round needs a device of its own (the last one was revoked):
        // log in afresh.
        let login = pb::LoginRequest {
            username: auth.username.clone(),
            password: "alice-password".into(),
            device_name: format!("round {round}"),
        };
        raw.send(2, Body::Login(login)).await;
        let device_id = match raw.recv().await.body {
            Some(Reply::AuthOk(ok)) => ok.device_id,
            other => panic!("round {round}: login got {other:?}"),
        };
        raw.send(3, Body::RevokeDevice(pb::RevokeDeviceRequest { device_id })).await;
        let mut frames = Vec::new();
        while let Some(f) = raw.try_recv().await {
            frames.push(f);
        }
        let ends_revoked = matches!(
            frames.last(),
            Some(pb::ServerFrame { request_id: 0, body: Some(Reply::Error(e)) })
                if e.code == ErrorCode::DEVICE_REVOKED.0 && e.fatal
        );
        assert!(ends_revoked, "round {round}: the session ended with {frames:?}");
    }
}
