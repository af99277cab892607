//! What one user, and one source address, may make conversations grow by
//! per hour: groups created, members added (at creation too), direct
//! conversations opened. Past a budget the request is refused with
//! `RATE_LIMITED` and `retry_after_ms`, before anything is stored; other
//! users keep their own budgets. (One user with 8 sessions created
//! 100-member groups at 500–750/s before these budgets.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use confab_client::{ClientError, Connection, TransportKind};
use confab_protocol::ErrorCode;

async fn user(server: &TestServer, name: &str) -> Connection {
    let c = server.connect(TransportKind::Tcp).await;
    c.signup(name, &format!("{name}-password"), "laptop").await.unwrap();
    c
}

fn limited<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Some(ErrorCode::RATE_LIMITED), "{what}: {e}");
    let text = e.to_string();
    assert!(text.contains("try again later"), "{what}: says what to do: {text}");
}

#[tokio::test]
async fn groups_members_and_direct_conversations_have_hourly_budgets_per_user() {
    let server = TestServer::start_with(|c| {
        c.groups_per_user_per_hour = 3;
        c.members_added_per_user_per_hour = 6;
        c.directs_per_user_per_hour = 2;
    })
    .await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    for name in ["carol", "dave", "erin", "frank"] {
        user(&server, name).await;
    }

    // Groups: three, then refused; the refusal stores nothing.
    let mut groups = Vec::new();
    for i in 0..3 {
        groups.push(alice.create_group(&format!("g{i}"), &["bob"]).await.unwrap().conversation_id);
    }
    limited(alice.create_group("g3", &["bob"]).await, "a fourth group");
    let listed = alice.list_conversations(50).await.unwrap().conversations.len();
    assert_eq!(listed, 3, "the refused group was not created");
    // Bob's budgets are his own.
    let bobs = bob.create_group("bob's", &["alice"]).await.unwrap().conversation_id;

    // Members: alice has added 3 of 6; four more in one request is over.
    let g0 = groups[0];
    limited(alice.add_members(g0, &["carol", "dave", "erin", "frank"]).await, "members over the budget");
    alice.add_members(g0, &["carol", "dave", "erin"]).await.unwrap();
    limited(alice.add_members(g0, &["frank"]).await, "a seventh member");
    bob.add_members(bobs, &["carol"]).await.unwrap();

    // Direct conversations: two, then refused.
    alice.open_direct("carol").await.unwrap();
    alice.open_direct("dave").await.unwrap();
    limited(alice.open_direct("erin").await, "a third direct conversation");
    bob.open_direct("erin").await.unwrap();
}

#[tokio::test]
async fn one_address_cannot_spread_a_flood_over_many_accounts() {
    let server = TestServer::start_with(|c| {
        c.groups_per_address_per_hour = 4;
    })
    .await;
    let users = [user(&server, "user1").await, user(&server, "user2").await, user(&server, "user3").await];
    // Every test client comes from 127.0.0.1: four groups in all.
    for (i, u) in users.iter().take(2).enumerate() {
        u.create_group(&format!("a{i}"), &[]).await.unwrap();
        u.create_group(&format!("b{i}"), &[]).await.unwrap();
    }
    limited(users[2].create_group("fifth", &[]).await, "a fifth group from the address");
}
