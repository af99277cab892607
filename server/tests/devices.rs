//! Devices (spec §6.5): the list comes in pages that fit a frame, an
//! account has at most `max_devices`, and an owner can revoke every other
//! device at once. (The security review: past ~6,200 devices the list
//! outgrew the frame limit and the owner could no longer find the
//! attacker's devices to revoke them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, code};
use confab_client::{ClientError, Event, TransportKind};
use confab_protocol::ErrorCode;

fn roomy(c: &mut confab_server::config::Config) {
    c.logins_per_user_per_minute = 10_000;
    c.logins_per_address_per_minute = 10_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_max_devices_is_refused_and_creates_nothing() {
    let server = TestServer::start_with(|c| {
        roomy(c);
        c.limits.max_devices = 3;
    })
    .await;
    let first = server.connect(TransportKind::Tcp).await;
    let welcome_limit = first.welcome().limits.as_ref().map(|l| l.max_devices);
    assert_eq!(welcome_limit, Some(3), "max_devices is advertised");
    first.signup("alice", "alice-password", "d1").await.unwrap();
    for name in ["d2", "d3"] {
        server.connect(TransportKind::Tcp).await.login("alice", "alice-password", name).await.unwrap();
    }
    let fourth = server.connect(TransportKind::Tcp).await;
    assert_eq!(code(fourth.login("alice", "alice-password", "d4").await), ErrorCode::TOO_MANY_DEVICES);
    // The password is checked first: a wrong one says so, not "full".
    let guess = server.connect(TransportKind::Tcp).await;
    assert_eq!(code(guess.login("alice", "wrong-password", "d5").await), ErrorCode::INVALID_CREDENTIALS);
    let names: Vec<String> = first.list_devices().await.unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["d1", "d2", "d3"]);
    // Room again after a revoke.
    let d3 = first.list_devices().await.unwrap()[2].device_id;
    first.revoke_device(d3).await.unwrap();
    fourth.login("alice", "alice-password", "d4").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_comes_in_pages_that_fit_a_frame() {
    // A small frame: about 20 devices with 64-character names fit in one.
    let server = TestServer::start_with(|c| {
        roomy(c);
        c.limits.max_message_chars = 100;
        c.limits.max_frame_bytes = 2048;
        c.outbound_queue_bytes = 1 << 20;
    })
    .await;
    let owner = server.connect(TransportKind::Tcp).await;
    owner.signup("alice", "alice-password", &"a".repeat(64)).await.unwrap();
    for i in 1..30 {
        let name = format!("{i:0>64}");
        server.connect(TransportKind::Tcp).await.login("alice", "alice-password", &name).await.unwrap();
    }
    // Pages as asked: 10 at a time, in id order, each after the last.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = owner.list_devices_page(after, 10).await.unwrap();
        assert!(page.devices.len() <= 10);
        assert!(page.devices.windows(2).all(|w| w[0].device_id < w[1].device_id), "not in id order");
        seen.extend(page.devices.iter().map(|d| d.device_id));
        match page.devices.last() {
            Some(last) if page.has_more => after = last.device_id,
            _ => break,
        }
    }
    assert_eq!(seen.len(), 30);
    // Asked for everything at once (0 = the page size, 100), the server
    // cuts the page to fit the 2 KiB frame and says more follow.
    let first = owner.list_devices_page(0, 0).await.unwrap();
    assert!(first.has_more, "30 long-named devices cannot fit 2 KiB");
    assert!(first.devices.len() < 30 && !first.devices.is_empty(), "{} devices in the first page", first.devices.len());
    // The client library walks the pages.
    let all = owner.list_devices().await.unwrap();
    assert_eq!(all.iter().map(|d| d.device_id).collect::<Vec<_>>(), seen);
    assert_eq!(all.iter().filter(|d| d.current).count(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_other_devices_ends_their_sessions_and_keeps_this_one() {
    let server = TestServer::start_with(roomy).await;
    let keeper = server.connect(TransportKind::Tcp).await;
    keeper.signup("alice", "alice-password", "keeper").await.unwrap();
    let mut others = Vec::new();
    for (i, transport) in [TransportKind::Tcp, TransportKind::Quic, TransportKind::Ws].into_iter().enumerate() {
        let c = server.connect(transport).await;
        let ok = c.login("alice", "alice-password", &format!("other{i}")).await.unwrap();
        others.push((c, ok.token));
    }
    keeper.revoke_other_devices().await.unwrap();
    for (mut c, token) in others {
        // Each other session ends with DEVICE_REVOKED …
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match c.next_event().await {
                    Some(Event::Closed(ClientError::Server { code, .. })) => return code,
                    Some(Event::Closed(other)) => panic!("closed otherwise: {other}"),
                    Some(_) => continue,
                    None => panic!("the session ended without a reason"),
                }
            }
        })
        .await
        .expect("a revoked device's session went on");
        assert_eq!(ended, ErrorCode::DEVICE_REVOKED);
        // … and its token no longer resumes.
        let again = server.connect(TransportKind::Tcp).await;
        assert_eq!(code(again.resume(&token).await), ErrorCode::INVALID_TOKEN);
    }
    // This device goes on, alone in the list.
    let devices = keeper.list_devices().await.unwrap();
    assert_eq!(devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["keeper"]);
    keeper.ping(1).await.unwrap();
    server.stop().await;
}
