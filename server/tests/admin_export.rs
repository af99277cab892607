//! `confabd admin export USER` against a running server: a GDPR-style
//! export of everything the server holds about one user, as JSON lines —
//! the account (no password hash), devices (no token hash) with their push
//! registration (no secret, only the origin of its URL), the block list,
//! privacy settings, every conversation with its members and the user's
//! read marker, and every message the user can see (a group's history only
//! up to where they left it), then an `end` record with the counts. A
//! history of 600 messages streams through; `--out FILE` writes a new
//! private file and refuses an existing one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_support;
mod common;

use admin_support::{admin, admin_ok, admin_refused, json_lines};
use common::TestServer;
use confab_client::TransportKind::Tcp;
use confab_protocol::pb;
use confab_protocol::pb::client_frame::Body;
use serde_json::Value;

const DM_MESSAGES: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_exports_what_the_server_holds_about_a_user() {
    let server = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 100_000;
        c.limits.send_burst = 100_000;
    })
    .await;
    let dir = server.dir.path().to_path_buf();
    let mut users = std::collections::HashMap::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let c = server.connect(Tcp).await;
        users.insert(name, (c.signup(name, &format!("{name}-password"), "laptop").await.unwrap(), c));
    }
    let (bob_auth, bob) = &users["bob"];
    let (_, alice) = &users["alice"];
    let (_, carol) = &users["carol"];
    let phone = server.connect(Tcp).await;
    let phone_auth = phone.login("bob", "bob-password", "phone").await.unwrap();
    let hook = "https://hookuser:hookpass@push.invalid:8443/push/SECRETPATH?token=SECRETQUERY";
    let target = pb::register_push_request::Target::Webhook(pb::WebhookTarget { url: hook.into() });
    phone.request(Body::RegisterPush(pb::RegisterPushRequest { target: Some(target) })).await.unwrap();
    bob.set_blocked("dave", true).await.unwrap();

    // A direct conversation with a long history (both directions).
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    let tricky = "line one\nline two: \"quoted\", tab\t, ✓ émoji 🎉";
    for chunk in (0..DM_MESSAGES).collect::<Vec<_>>().chunks(50) {
        let sends = chunk.iter().map(|i| {
            let (from, text) = if i % 3 == 0 { (bob, format!("{tricky} {i}")) } else { (alice, format!("dm {i}")) };
            async move { from.send(dm, &format!("dm-{i}"), &text).await.unwrap() }
        });
        futures_util::future::join_all(sends).await;
    }
    // A group bob is in, with his read marker.
    let team = alice.create_group("team", &["bob", "carol"]).await.unwrap().conversation_id;
    alice.send(team, "t1", "hello team").await.unwrap();
    let t2 = carol.send(team, "t2", "hi all").await.unwrap();
    alice.send(team, "t3", "unread by bob").await.unwrap();
    bob.mark_read(team, t2.message.unwrap().seq).await.unwrap();
    // A group bob left: nothing after his leaving is his to see.
    let old = carol.create_group("old", &["bob"]).await.unwrap().conversation_id;
    carol.send(old, "o1", "before leaving").await.unwrap();
    bob.leave_group(old).await.unwrap();
    carol.send(old, "o2", "after leaving").await.unwrap();
    bob.set_privacy(pb::Audience::Unspecified, pb::Audience::Contacts).await.unwrap();

    let raw = admin_ok(&dir, &["export", "bob"]).await;
    for secret in ["$argon2", &bob_auth.token, &phone_auth.token, "SECRETPATH", "SECRETQUERY", "hookpass", "hookuser"] {
        assert!(!raw.contains(secret), "the export holds a secret: {secret}");
    }
    let records = json_lines(&raw);
    let of = |kind: &str| -> Vec<&Value> { records.iter().filter(|r| r["type"] == kind).collect() };

    let header = &records[0];
    assert_eq!(header["type"], "export");
    assert_eq!(header["format"], 1);
    assert_eq!(header["username"], "bob");
    let account = &records[1];
    assert_eq!(account["type"], "account");
    assert_eq!(account["user_id"], bob_auth.user_id);
    assert_eq!(account["disabled"], false);
    assert_eq!(account["privacy"], serde_json::json!({"direct_messages": "everyone", "group_invites": "contacts"}));
    assert!(account.get("password_hash").is_none());

    let devices = of("device");
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["name"], "laptop");
    assert_eq!(devices[0]["push"], Value::Null);
    assert_eq!(devices[1]["device_id"], phone_auth.device_id);
    assert_eq!(devices[1]["push"]["kind"], "webhook");
    assert_eq!(devices[1]["push"]["origin"], "https://push.invalid:8443");
    assert!(devices[1].get("token_hash").is_none());

    let blocked = of("blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["username"], "dave");

    let conversations = of("conversation");
    assert_eq!(conversations.len(), 3);
    let direct = conversations.iter().find(|c| c["conversation_id"] == dm).unwrap();
    assert_eq!(direct["kind"], "direct");
    assert_eq!(direct["member"], true);
    assert_eq!(direct["last_seq"], DM_MESSAGES);
    let names = |c: &Value| -> Vec<String> {
        c["members"].as_array().unwrap().iter().map(|m| m["username"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(direct), ["alice", "bob"]);
    let group = conversations.iter().find(|c| c["conversation_id"] == team).unwrap();
    assert_eq!((group["kind"].as_str(), group["title"].as_str()), (Some("group"), Some("team")));
    assert_eq!(names(group), ["alice", "bob", "carol"]);
    assert_eq!(group["members"][0]["role"], "owner");
    assert_eq!(group["read_seq"], 3, "the creation, then two messages: bob read up to carol's");
    let left = conversations.iter().find(|c| c["conversation_id"] == old).unwrap();
    assert_eq!(left["member"], false);
    assert!(left.get("members").is_none(), "a former member does not see the members");
    assert!(left["left_seq"].as_u64().unwrap() > 0);
    assert_eq!(left["last_seq"], left["left_seq"]);

    // Every message bob can see, in seq order, each after its conversation.
    let messages_of =
        |c: u64| -> Vec<&Value> { of("message").into_iter().filter(|m| m["conversation_id"] == c).collect() };
    let dm_messages = messages_of(dm);
    assert_eq!(dm_messages.len(), DM_MESSAGES);
    assert!(dm_messages.iter().enumerate().all(|(i, m)| m["seq"] == i as u64 + 1), "seqs 1..={DM_MESSAGES}");
    let mut texts: Vec<&str> = dm_messages.iter().map(|m| m["text"].as_str().unwrap()).collect();
    texts.sort();
    let mut sent: Vec<String> =
        (0..DM_MESSAGES).map(|i| if i % 3 == 0 { format!("{tricky} {i}") } else { format!("dm {i}") }).collect();
    sent.sort();
    assert_eq!(texts, sent);
    let from_bob = dm_messages.iter().find(|m| m["sender_username"] == "bob").unwrap();
    assert_eq!(from_bob["sender_id"], bob_auth.user_id);
    assert!(from_bob["sent_at_ms"].as_i64().unwrap() > 0);
    let team_messages = messages_of(team);
    assert_eq!(team_messages[0]["membership"]["action"], "created");
    let team_texts: Vec<&str> = team_messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(team_texts, ["hello team", "hi all", "unread by bob"]);
    let old_messages = messages_of(old);
    let old_texts: Vec<&str> = old_messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(old_texts, ["before leaving"]);
    assert_eq!(old_messages.last().unwrap()["membership"]["action"], "left");
    let position = |r: &Value| records.iter().position(|x| x == r).unwrap();
    assert!(position(dm_messages[0]) > position(direct));

    let end = records.last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["messages"], of("message").len());
    assert_eq!(end["conversations"], 3);
    assert_eq!(end["devices"], 2);

    // --out: a new private file with the same records.
    let file = dir.parent().unwrap().join(format!("export-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let out = admin(&dir, &["export", "bob", "--out", file.to_str().unwrap()]).await;
    assert!(out.ok && out.stdout.is_empty(), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&format!("3 conversation(s), {} message(s)", of("message").len())), "{}", out.stderr);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the export is private: {mode:o}");
    }
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().skip(1).collect::<Vec<_>>(), raw.lines().skip(1).collect::<Vec<_>>());
    let refused = admin(&dir, &["export", "bob", "--out", file.to_str().unwrap()]).await;
    assert!(!refused.ok && refused.stderr.contains("creating"), "{}", refused.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written, "an existing file is not touched");
    std::fs::remove_file(&file).unwrap();

    assert!(admin_refused(&dir, &["export", "nobody-here"]).await.contains("no such user"));
    server.stop().await;
}
