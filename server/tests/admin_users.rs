//! `confabd admin users` against a running server: every account in
//! username order with its user id, times, devices and disabled flag;
//! narrowed by prefix, paged with --limit and --after (the next page's
//! --after said on stderr), as JSON lines or a table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_support;
mod common;

use admin_support::{admin, admin_ok, json_lines};
use common::TestServer;
use confab_client::TransportKind::Tcp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lists_accounts_a_page_at_a_time() {
    let server = TestServer::start().await;
    let dir = server.dir.path();
    let mut ids = std::collections::HashMap::new();
    for name in ["carol", "bob", "alice", "bobby", "bo.b"] {
        let c = server.connect(Tcp).await;
        let ok = c.signup(name, &format!("{name}-password"), "laptop").await.unwrap();
        ids.insert(name, ok.user_id);
    }
    // bob has a second device.
    server.connect(Tcp).await.login("bob", "bob-password", "phone").await.unwrap();

    let all = json_lines(&admin_ok(dir, &["users"]).await);
    let names: Vec<&str> = all.iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bo.b", "bob", "bobby", "carol"], "username order");
    let bob = &all[2];
    assert_eq!(bob["user_id"], ids["bob"]);
    assert_eq!(bob["devices"], 2);
    assert_eq!(bob["disabled"], false);
    assert!(bob["created_at_ms"].as_i64().unwrap() > 1_600_000_000_000, "{bob}");
    assert!(bob["last_seen_ms"].as_i64().unwrap() >= bob["created_at_ms"].as_i64().unwrap());
    assert_eq!(all[0]["devices"], 1);

    let bobs = json_lines(&admin_ok(dir, &["users", "--prefix", "bob"]).await);
    let names: Vec<&str> = bobs.iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob", "bobby"]);
    assert!(json_lines(&admin_ok(dir, &["users", "--prefix", "zed"]).await).is_empty());

    // Pages of two: the next page's --after is on stderr, until the last.
    let first = admin(dir, &["users", "--limit", "2"]).await;
    assert!(first.ok, "{}", first.stderr);
    assert_eq!(json_lines(&first.stdout).len(), 2);
    assert!(first.stderr.contains("more accounts follow: --after bo.b"), "{}", first.stderr);
    let second = admin(dir, &["users", "--limit", "2", "--after", "bo.b"]).await;
    let names: Vec<String> =
        json_lines(&second.stdout).iter().map(|u| u["username"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["bob", "bobby"]);
    assert!(second.stderr.contains("--after bobby"), "{}", second.stderr);
    let last = admin(dir, &["users", "--limit", "2", "--after", "bobby"]).await;
    assert_eq!(json_lines(&last.stdout).len(), 1);
    assert!(!last.stderr.contains("more accounts follow"), "{}", last.stderr);
    // --after and --prefix together: the rest of the prefix.
    let rest = json_lines(&admin_ok(dir, &["users", "--prefix", "bob", "--after", "bob"]).await);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["username"], "bobby");

    // Disabled accounts say so, in both forms.
    admin_ok(dir, &["disable", "carol"]).await;
    let carol = json_lines(&admin_ok(dir, &["users", "--prefix", "carol"]).await);
    assert_eq!(carol[0]["disabled"], true);
    let table = admin_ok(dir, &["users", "--table"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("USERNAME") && lines[0].ends_with("DISABLED"), "{table}");
    assert_eq!(lines.len(), 6, "{table}");
    let carol_row: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(carol_row[0], "carol");
    assert_eq!(carol_row[1], ids["carol"].to_string());
    assert_eq!(*carol_row.last().unwrap(), "yes");
    assert!(lines[3].starts_with("bob ") && lines[3].ends_with(" 2 no"), "{table}");

    // Out-of-range limits are clamped, not refused.
    assert_eq!(json_lines(&admin_ok(dir, &["users", "--limit", "0"]).await).len(), 1);
    server.stop().await;
}
