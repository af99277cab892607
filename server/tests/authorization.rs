//! Authorization: every request that names a conversation or a device is
//! tried by a user who must not have access — an outsider, a removed
//! member, a plain member for owner/admin requests — on the session stream
//! and on QUIC request streams; plus forged, malformed, logged-out and
//! revoked tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use confab_client::TransportKind::{Quic, Tcp};
use confab_client::{Connection, Event};
use confab_protocol::ErrorCode;
use confab_protocol::pb::{self, client_frame::Body};

/// Every conversation-scoped request, as `who` would send it about `conv`.
fn conversation_requests(conv: u64) -> Vec<(&'static str, Body)> {
    vec![
        ("send", Body::Send(pb::SendRequest { conversation_id: conv, client_msg_id: "x-1".into(), text: "hi".into() })),
        ("history", Body::History(pb::HistoryRequest { conversation_id: conv, limit: 10, ..Default::default() })),
        ("mark_read", Body::MarkRead(pb::MarkReadRequest { conversation_id: conv, seq: 1 })),
        ("read_receipts", Body::ReadReceipts(pb::ReadReceiptsRequest { conversation_id: conv })),
        ("list_members", Body::ListMembers(pb::ListMembersRequest { conversation_id: conv })),
        ("get_conversation", Body::GetConversation(pb::GetConversationRequest { conversation_id: conv })),
        (
            "add_members",
            Body::AddMembers(pb::AddMembersRequest { conversation_id: conv, usernames: vec!["mallory".into()] }),
        ),
        (
            "remove_member",
            Body::RemoveMember(pb::RemoveMemberRequest { conversation_id: conv, username: "bob".into() }),
        ),
        ("leave_group", Body::LeaveGroup(pb::LeaveGroupRequest { conversation_id: conv })),
        ("rename_group", Body::RenameGroup(pb::RenameGroupRequest { conversation_id: conv, title: "pwned".into() })),
        (
            "set_role",
            Body::SetRole(pb::SetRoleRequest {
                conversation_id: conv,
                username: "mallory".into(),
                role: pb::MemberRole::Owner as i32,
            }),
        ),
    ]
}

/// The next typing event, failing after 5 s.
async fn next_typing(conn: &mut Connection) -> pb::TypingEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await.expect("no typing event within 5 s") {
            Some(Event::Typing(t)) => return t,
            Some(_) => continue,
            None => panic!("event stream ended"),
        }
    }
}

async fn refused(conn: &Connection, body: Body) -> ErrorCode {
    code(conn.request(body).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_get_not_found_for_every_conversation_request() {
    let server = TestServer::start().await;
    let mut alice = server.connect(Quic).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let mut bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "b").await.unwrap();
    let mallory = server.connect(Quic).await;
    mallory.signup("mallory", "mallory-password", "m").await.unwrap();

    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    let group = alice.create_group("private", &["bob"]).await.unwrap().conversation_id;
    alice.send(dm, "a-1", "secret dm").await.unwrap();
    alice.send(group, "a-2", "secret group").await.unwrap();
    let nonexistent = group + 1000;

    for conv in [dm, group, nonexistent] {
        for (name, body) in conversation_requests(conv) {
            let c = refused(&mallory, body.clone()).await;
            // Not a member and "does not exist" are indistinguishable.
            assert_eq!(c, ErrorCode::CONVERSATION_NOT_FOUND, "{name} on {conv} (session stream)");
        }
        // The reads allowed on QUIC request streams refuse the same way.
        for (name, body) in conversation_requests(conv) {
            if matches!(
                body,
                Body::History(_) | Body::ListMembers(_) | Body::GetConversation(_) | Body::ReadReceipts(_)
            ) {
                let c = code(mallory.request_on_stream(body).await);
                assert_eq!(c, ErrorCode::CONVERSATION_NOT_FOUND, "{name} on {conv} (request stream)");
            }
        }
    }
    // Nothing mallory tried changed anything or reached anyone.
    let members = alice.list_members(group).await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(alice.get_conversation(group).await.unwrap().title, "private");
    assert_eq!(alice.history(dm, 0, 0, 10).await.unwrap().messages.len(), 1);
    // Typing into someone else's conversation reaches nobody. Once the
    // server has mallory's notices (QUIC datagrams, counted as they
    // arrive), the members' own notices must be the first typing each sees.
    mallory.typing(dm).unwrap();
    mallory.typing(group).unwrap();
    eventually("mallory's typing datagrams reach the server", Duration::from_secs(5), || async {
        (metric(&server, "confab_typing_datagrams_in_total").await >= 2.0).then_some(())
    })
    .await;
    alice.typing(dm).unwrap();
    bob.typing(dm).unwrap();
    for (who, conn, from) in [("bob", &mut bob, "alice"), ("alice", &mut alice, "bob")] {
        let t = next_typing(conn).await;
        assert_eq!((t.conversation_id, t.username.as_str()), (dm, from), "{who} got a typing notice from an outsider");
    }
    // mallory's own inbox holds nothing of theirs.
    let page = mallory.sync(0, 100).await.unwrap();
    assert!(page.events.is_empty(), "{:?}", page.events);
    // And the cursor cannot be pushed past mallory's own inbox.
    assert_eq!(code(mallory.ack_cursor(page.inbox_head + 5).await), ErrorCode::INVALID_ARGUMENT);
    // Nor did one of mallory's notices come late.
    for conn in [&mut alice, &mut bob] {
        while let Some(ev) = conn.try_next_event() {
            assert!(!matches!(&ev, Event::Typing(t) if t.username == "mallory"), "{ev:?}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_members_and_plain_members_are_held_to_their_rights() {
    let server = TestServer::start().await;
    let alice = server.connect(Quic).await;
    alice.signup("alice", "alice-password", "a").await.unwrap();
    let bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "b").await.unwrap();
    let carol = server.connect(Quic).await;
    carol.signup("carol", "carol-password", "c").await.unwrap();
    let mallory = server.connect(Tcp).await;
    mallory.signup("mallory", "mallory-password", "m").await.unwrap();
    let group = alice.create_group("team", &["bob", "carol"]).await.unwrap().conversation_id;

    // A plain member may not do owner/admin things.
    let member_only = [
        Body::AddMembers(pb::AddMembersRequest { conversation_id: group, usernames: vec!["mallory".into()] }),
        Body::RemoveMember(pb::RemoveMemberRequest { conversation_id: group, username: "carol".into() }),
        Body::RenameGroup(pb::RenameGroupRequest { conversation_id: group, title: "mine".into() }),
        Body::SetRole(pb::SetRoleRequest {
            conversation_id: group,
            username: "bob".into(),
            role: pb::MemberRole::Owner as i32,
        }),
    ];
    for body in member_only {
        assert_eq!(refused(&bob, body.clone()).await, ErrorCode::PERMISSION_DENIED, "{body:?}");
    }
    assert_eq!(alice.list_members(group).await.unwrap().len(), 3, "nothing changed");

    // Removal: earlier history stays readable up to the removal, nothing
    // after it, and every other request is refused.
    alice.send(group, "before", "before removal").await.unwrap();
    alice.remove_member(group, "carol").await.unwrap();
    alice.send(group, "after", "after removal").await.unwrap();
    let seen = carol.history(group, 0, 0, 100).await.unwrap();
    assert!(seen.messages.iter().any(|m| m.client_msg_id == "before"));
    assert!(!seen.messages.iter().any(|m| m.client_msg_id == "after"), "history after removal leaked");
    for (name, body) in conversation_requests(group) {
        if matches!(body, Body::History(_) | Body::GetConversation(_) | Body::LeaveGroup(_)) {
            continue;
        }
        assert_eq!(refused(&carol, body).await, ErrorCode::CONVERSATION_NOT_FOUND, "{name} by a removed member");
    }

    // Devices: nobody revokes or sees another user's devices.
    let bobs_devices = bob.list_devices().await.unwrap();
    for d in &bobs_devices {
        assert_eq!(code(mallory.revoke_device(d.device_id).await), ErrorCode::DEVICE_NOT_FOUND);
    }
    assert_eq!(code(mallory.revoke_device(999_999).await), ErrorCode::DEVICE_NOT_FOUND);
    assert_eq!(bob.list_devices().await.unwrap().len(), bobs_devices.len());
    assert!(
        mallory.list_devices().await.unwrap().iter().all(|d| !bobs_devices.iter().any(|b| b.device_id == d.device_id))
    );
    bob.ping(1).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_logged_out_and_revoked_tokens_are_refused() {
    let server = TestServer::start().await;
    let phone = server.connect(Quic).await;
    let first = phone.signup("alice", "alice-password", "phone").await.unwrap();
    let laptop = server.connect(Tcp).await;
    let second = laptop.login("alice", "alice-password", "laptop").await.unwrap();

    for token in ["", "forged-token", &"A".repeat(43), &"x".repeat(300)] {
        let c = server.connect(Tcp).await;
        assert_eq!(code(c.resume(token).await), ErrorCode::INVALID_TOKEN, "{token:?}");
        // A failed resume leaves the session unauthenticated.
        assert_eq!(code(c.list_devices().await), ErrorCode::UNAUTHENTICATED);
    }

    // Revoking the phone ends its live session and kills its token.
    let mut phone = phone;
    laptop.revoke_device(first.device_id).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, phone.next_event()).await.expect("the revoked session ends") {
            Some(Event::Closed(e)) => {
                assert_eq!(e.code(), Some(ErrorCode::DEVICE_REVOKED));
                break;
            }
            Some(_) => continue,
            None => panic!("event stream ended without a close"),
        }
    }
    let c = server.connect(Quic).await;
    assert_eq!(code(c.resume(&first.token).await), ErrorCode::INVALID_TOKEN);

    // A logged-out token is dead too.
    laptop.logout().await.unwrap();
    let c = server.connect(Quic).await;
    assert_eq!(code(c.resume(&second.token).await), ErrorCode::INVALID_TOKEN);
    server.stop().await;
}
