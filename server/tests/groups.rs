//! Groups: a 100-member group gets one message to every member's session
//! exactly once; the 101st add fails atomically; membership changes are in
//! history in order; removed members get nothing after and outsiders get
//! nothing at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::Connection;
use confab_client::TransportKind::{Quic, Tcp};
use confab_protocol::ErrorCode;
use confab_protocol::pb::{self, MemberRole, MembershipAction};

fn action(m: &pb::Message) -> MembershipAction {
    match &m.content {
        Some(pb::message::Content::Membership(c)) => MembershipAction::try_from(c.action).unwrap(),
        other => panic!("not a membership change: {other:?}"),
    }
}

async fn signup(server: &TestServer, name: &str, i: usize) -> Connection {
    let c = server.connect(if i.is_multiple_of(2) { Tcp } else { Quic }).await;
    c.signup(name, "member-password", "dev").await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_members_each_get_it_once() {
    let server = TestServer::start().await;
    let mut members = Vec::new();
    for i in 0..100 {
        members.push(signup(&server, &format!("m{i:03}"), i).await);
    }
    let names: Vec<String> = (1..100).map(|i| format!("m{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let group = members[0].create_group("hundred", &refs).await.unwrap();
    assert_eq!(group.member_count, 100);
    assert_eq!(group.role, MemberRole::Owner as i32);
    let conv = group.conversation_id;

    // The 101st is refused, and nobody of a batch that would overflow is added.
    let extra = signup(&server, "extra", 0).await;
    signup(&server, "extra2", 1).await;
    assert_eq!(code(members[0].add_members(conv, &["extra"]).await), ErrorCode::GROUP_FULL);
    assert_eq!(code(members[0].add_members(conv, &["extra", "extra2"]).await), ErrorCode::GROUP_FULL);
    assert_eq!(members[0].list_members(conv).await.unwrap().len(), 100);
    assert_eq!(code(extra.history(conv, 0, 0, 0).await), ErrorCode::CONVERSATION_NOT_FOUND);

    let sent = members[7].send(conv, "hello-all", "hello, hundred").await.unwrap().message.unwrap();
    assert_eq!(sent.seq, 2, "seq 1 is CREATED");
    for m in members.iter_mut() {
        // joined, CREATED, then the message: each exactly once.
        let joined = next_inbox(m).await;
        assert!(matches!(joined.event, Some(pb::inbox_event::Event::Joined(_))));
        assert_eq!(action(message(&next_inbox(m).await)), MembershipAction::Created);
        let e = next_inbox(m).await;
        assert_eq!((message(&e).conversation_id, message(&e).seq), (conv, 2));
        assert_eq!(text(message(&e)), "hello, hundred");
    }
    // A second message is the next thing each member gets: no copy of the
    // first (nor anything else) came before it.
    let marker = members[42].send(conv, "marker", "and again").await.unwrap().message.unwrap();
    assert_eq!(marker.seq, 3);
    for m in members.iter_mut() {
        let e = next_inbox(m).await;
        assert_eq!((message(&e).conversation_id, message(&e).seq), (conv, 3), "{e:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_removal() {
    let server = TestServer::start().await;
    let owner = signup(&server, "owner", 0).await;
    let mut bob = signup(&server, "bob", 1).await;
    let carol = signup(&server, "carol", 0).await;
    let outsider = signup(&server, "outsider", 1).await;

    let g = owner.create_group("team", &["bob"]).await.unwrap().conversation_id;
    owner.add_members(g, &["carol", "bob"]).await.unwrap(); // bob is skipped
    owner.rename_group(g, "the team").await.unwrap();
    owner.rename_group(g, "the team").await.unwrap(); // unchanged: nothing stored
    assert_eq!(code(bob.rename_group(g, "mine").await), ErrorCode::PERMISSION_DENIED);
    assert_eq!(code(bob.add_members(g, &["outsider"]).await), ErrorCode::PERMISSION_DENIED);
    owner.set_role(g, "bob", MemberRole::Admin).await.unwrap();
    owner.send(g, "before", "before removal").await.unwrap();
    bob.remove_member(g, "carol").await.unwrap();
    assert_eq!(code(bob.remove_member(g, "owner").await), ErrorCode::PERMISSION_DENIED);
    owner.send(g, "after", "after removal").await.unwrap();

    let h = owner.history(g, 0, 0, 0).await.unwrap();
    let kinds: Vec<String> = h
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(pb::message::Content::Text(t)) => t.clone(),
            _ => action(m).as_str_name().to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "MEMBERSHIP_ACTION_CREATED",
            "MEMBERSHIP_ACTION_ADDED",
            "MEMBERSHIP_ACTION_RENAMED",
            "MEMBERSHIP_ACTION_ROLE_CHANGED",
            "before removal",
            "MEMBERSHIP_ACTION_REMOVED",
            "after removal"
        ]
    );
    assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());

    // Carol: reads up to her removal, nothing after; cannot send or list.
    let ch = carol.history(g, 0, 0, 0).await.unwrap();
    assert_eq!(ch.messages.last().unwrap().seq, 6);
    assert_eq!(code(carol.send(g, "c", "let me back").await), ErrorCode::CONVERSATION_NOT_FOUND);
    assert_eq!(code(carol.list_members(g).await), ErrorCode::CONVERSATION_NOT_FOUND);
    assert!(carol.list_conversations(0).await.unwrap().conversations.is_empty());
    // Her inbox ends with REMOVED and `left`.
    let page = carol.sync(0, 0).await.unwrap();
    let last = page.events.last().unwrap();
    assert!(matches!(&last.event, Some(pb::inbox_event::Event::Left(l)) if l.seq == 6));
    assert!(!page.events.iter().any(|e| matches!(&e.event, Some(pb::inbox_event::Event::Message(m)) if m.seq == 7)));

    // The outsider sees nothing.
    assert_eq!(code(outsider.history(g, 0, 0, 0).await), ErrorCode::CONVERSATION_NOT_FOUND);
    assert_eq!(code(outsider.list_members(g).await), ErrorCode::CONVERSATION_NOT_FOUND);
    assert_eq!(code(outsider.send(g, "o", "hi").await), ErrorCode::CONVERSATION_NOT_FOUND);
    assert_eq!(code(outsider.leave_group(g).await), ErrorCode::CONVERSATION_NOT_FOUND);

    // The owner leaves: bob (the admin) becomes owner.
    owner.leave_group(g).await.unwrap();
    let members = bob.list_members(g).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!((members[0].username.as_str(), members[0].role), ("bob", MemberRole::Owner as i32));
    let tail = bob.history(g, 0, 7, 0).await.unwrap();
    let acts: Vec<_> = tail.messages.iter().map(action).collect();
    assert_eq!(acts, [MembershipAction::RoleChanged, MembershipAction::Left]);
    // Bob saw it all live, in order, once.
    let mut seqs = Vec::new();
    loop {
        let e = next_inbox(&mut bob).await;
        if let Some(pb::inbox_event::Event::Message(m)) = &e.event {
            seqs.push(m.seq);
            if m.seq == 9 {
                break;
            }
        }
    }
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());

    // Group requests on a DM.
    let dm = bob.open_direct("outsider").await.unwrap().conversation_id;
    assert_eq!(code(bob.add_members(dm, &["carol"]).await), ErrorCode::NOT_A_GROUP);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_agree_across_devices() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice", 0).await;
    let bob_a = signup(&server, "bob", 1).await;
    let mut bob_b = server.connect(Tcp).await;
    bob_b.login("bob", "member-password", "second").await.unwrap();
    let g = alice.create_group("reads", &["bob"]).await.unwrap().conversation_id;
    for i in 0..5 {
        alice.send(g, &format!("r{i}"), "unread?").await.unwrap();
    }
    let before = bob_b.get_conversation(g).await.unwrap();
    assert_eq!((before.last_seq, before.read_seq, before.unread_count), (6, 1, 5));

    let state = bob_a.mark_read(g, 4).await.unwrap();
    assert_eq!((state.read_seq, state.unread_count), (4, 2));
    // Device B hears about it, and its list agrees.
    loop {
        let e = next_inbox(&mut bob_b).await;
        if let Some(pb::inbox_event::Event::Read(r)) = e.event {
            assert_eq!((r.conversation_id, r.read_seq, r.unread_count), (g, 4, 2));
            break;
        }
    }
    let list = bob_b.list_conversations(0).await.unwrap();
    assert_eq!(list.conversations[0].unread_count, 2);
    // Lower values are ignored; values past the end are clamped.
    assert_eq!(bob_b.mark_read(g, 2).await.unwrap().read_seq, 4);
    assert_eq!(bob_b.mark_read(g, 999).await.unwrap().read_seq, 6);
    let receipts = alice.read_receipts(g).await.unwrap();
    let bob_r = receipts.iter().find(|r| r.username == "bob").unwrap();
    assert_eq!(bob_r.read_seq, 6);
    server.stop().await;
}

/// Owners are peers (spec §7.3): an owner the creator made can neither
/// demote the creator nor remove them; each owner changes only their own
/// role (the security review demoted, then removed, a group's creator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cannot_demote_or_remove_another_owner() {
    let server = TestServer::start().await;
    let creator = signup(&server, "creator", 0).await;
    let co = signup(&server, "coowner", 1).await;
    let g = creator.create_group("peers", &["coowner"]).await.unwrap().conversation_id;
    creator.set_role(g, "coowner", MemberRole::Owner).await.unwrap();
    for role in [MemberRole::Admin, MemberRole::Member] {
        assert_eq!(code(co.set_role(g, "creator", role).await), ErrorCode::PERMISSION_DENIED);
    }
    assert_eq!(code(co.remove_member(g, "creator").await), ErrorCode::PERMISSION_DENIED);
    // Each owner may step down themselves while another owner remains.
    co.set_role(g, "coowner", MemberRole::Member).await.unwrap();
    assert_eq!(code(creator.set_role(g, "creator", MemberRole::Member).await), ErrorCode::PERMISSION_DENIED);
    let roles: Vec<(String, i32)> =
        creator.list_members(g).await.unwrap().into_iter().map(|m| (m.username, m.role)).collect();
    assert_eq!(
        roles,
        [("creator".to_string(), MemberRole::Owner as i32), ("coowner".to_string(), MemberRole::Member as i32)]
    );
    server.stop().await;
}
