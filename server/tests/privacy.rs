//! Users' say over who reaches them (spec §6.7) and password changes
//! (§6.6). The security review found that anyone could open a direct
//! conversation with anyone and put anyone in any number of groups: a
//! victim's conversation list filled with spam. Now a user can block
//! another (no new DM, no group adds, no sends in their DM, either way) and
//! choose who may open DMs with them and add them to groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, code};
use confab_client::{Connection, Event, TransportKind::Tcp};
use confab_protocol::{ErrorCode, pb};

async fn user(server: &TestServer, name: &str) -> Connection {
    let c = server.connect(Tcp).await;
    c.signup(name, &format!("{name}-password"), "d").await.unwrap();
    c
}

fn roomy(c: &mut confab_server::config::Config) {
    c.logins_per_user_per_minute = 10_000;
    c.logins_per_address_per_minute = 10_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_stops_new_dms_group_adds_and_sends_both_ways_until_lifted() {
    let server = TestServer::start_with(|c| c.limits.max_blocked = 2).await;
    let welcome_limit = server.connect(Tcp).await.welcome().limits.as_ref().map(|l| l.max_blocked);
    assert_eq!(welcome_limit, Some(2), "max_blocked is advertised");
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let dm = alice.open_direct("bob").await.unwrap().conversation_id;
    alice.send(dm, "m1", "hi bob").await.unwrap();

    bob.set_blocked("alice", true).await.unwrap();
    bob.set_blocked("alice", true).await.unwrap(); // idempotent
    let listed: Vec<String> = bob.list_blocked().await.unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(listed, ["alice"]);

    // Sends in the DM are refused, both ways, and store nothing.
    assert_eq!(code(alice.send(dm, "m2", "are you there?").await), ErrorCode::REFUSED_BY_USER);
    assert_eq!(code(bob.send(dm, "b1", "go away").await), ErrorCode::REFUSED_BY_USER);
    let history = alice.history(dm, 0, 0, 10).await.unwrap();
    assert_eq!(history.messages.len(), 1, "nothing stored for the refused sends");
    // A retry of a message sent before the block still answers with it.
    assert!(alice.send(dm, "m1", "hi bob").await.unwrap().duplicate);

    // No DM (the existing one included), no group with bob, no adding him.
    assert_eq!(code(alice.open_direct("bob").await), ErrorCode::REFUSED_BY_USER);
    assert_eq!(code(bob.open_direct("alice").await), ErrorCode::REFUSED_BY_USER);
    assert_eq!(code(alice.create_group("trap", &["bob", "carol"]).await), ErrorCode::REFUSED_BY_USER);
    let group = alice.create_group("club", &["carol"]).await.unwrap().conversation_id;
    assert_eq!(code(alice.add_members(group, &["bob"]).await), ErrorCode::REFUSED_BY_USER);
    // The refused create made no group: carol is in "club" only.
    let carols = carol.list_conversations(0).await.unwrap().conversations;
    assert_eq!(carols.len(), 1, "{carols:?}");
    // Bob, who blocked, cannot add alice either.
    let bobs = bob.create_group("bob's", &["carol"]).await.unwrap().conversation_id;
    assert_eq!(code(bob.add_members(bobs, &["alice"]).await), ErrorCode::REFUSED_BY_USER);

    // Lifted: everything works again, in the same DM.
    bob.set_blocked("alice", false).await.unwrap();
    assert!(bob.list_blocked().await.unwrap().is_empty());
    let sent = alice.send(dm, "m3", "hello again").await.unwrap();
    assert_eq!(sent.message.unwrap().seq, 2, "no seq was used by the refused sends");
    bob.send(dm, "b2", "hi").await.unwrap();
    assert_eq!(alice.open_direct("bob").await.unwrap().conversation_id, dm);
    alice.add_members(group, &["bob"]).await.unwrap();

    // The list has a limit, and bad names get clear errors.
    bob.set_blocked("alice", true).await.unwrap();
    bob.set_blocked("carol", true).await.unwrap();
    let dave = user(&server, "dave").await;
    assert_eq!(code(bob.set_blocked("dave", true).await), ErrorCode::TOO_MANY_ITEMS);
    assert_eq!(code(bob.set_blocked("bob", true).await), ErrorCode::INVALID_ARGUMENT);
    assert_eq!(code(bob.set_blocked("nobody-here", true).await), ErrorCode::USER_NOT_FOUND);
    // Unblocking someone not blocked is fine.
    bob.set_blocked("dave", false).await.unwrap();
    drop(dave);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_block_list_comes_in_pages() {
    let server = TestServer::start_with(|c| c.limits.max_page_size = 3).await;
    let owner = user(&server, "owner").await;
    let mut names = Vec::new();
    for i in 0..7 {
        let name = format!("pest{i}");
        user(&server, &name).await;
        owner.set_blocked(&name, true).await.unwrap();
        names.push(name);
    }
    let req = pb::ListBlockedRequest { after_username: String::new(), limit: 0 };
    let first = match owner.request(pb::client_frame::Body::ListBlocked(req)).await.unwrap() {
        pb::server_frame::Body::BlockedList(l) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.users.len(), 3);
    assert!(first.has_more);
    let all: Vec<String> = owner.list_blocked().await.unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(all, names, "every page, in order, once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_settings_limit_who_opens_dms_and_adds_to_groups() {
    let server = TestServer::start().await;
    let carol = user(&server, "carol").await;
    let friend = user(&server, "friend").await;
    let stranger = user(&server, "stranger").await;
    friend.open_direct("carol").await.unwrap();

    let defaults = carol.privacy().await.unwrap();
    assert_eq!(defaults.direct_messages(), pb::Audience::Everyone);
    assert_eq!(defaults.group_invites(), pb::Audience::Everyone);

    // Groups: contacts only (people with a DM with carol).
    let set = carol.set_privacy(pb::Audience::Unspecified, pb::Audience::Contacts).await.unwrap();
    assert_eq!(set.group_invites(), pb::Audience::Contacts);
    assert_eq!(set.direct_messages(), pb::Audience::Everyone, "unspecified leaves a setting as it is");
    assert_eq!(code(stranger.create_group("spam", &["carol"]).await), ErrorCode::REFUSED_BY_USER);
    let own = stranger.create_group("spam", &["friend"]).await.unwrap().conversation_id;
    assert_eq!(code(stranger.add_members(own, &["carol"]).await), ErrorCode::REFUSED_BY_USER);
    friend.create_group("real", &["carol"]).await.unwrap();
    // Nobody: not even contacts.
    carol.set_privacy(pb::Audience::Unspecified, pb::Audience::Nobody).await.unwrap();
    assert_eq!(code(friend.create_group("again", &["carol"]).await), ErrorCode::REFUSED_BY_USER);

    // DMs: nobody new; the DM that exists stays open.
    carol.set_privacy(pb::Audience::Nobody, pb::Audience::Unspecified).await.unwrap();
    assert_eq!(code(stranger.open_direct("carol").await), ErrorCode::REFUSED_BY_USER);
    let dm = friend.open_direct("carol").await.unwrap().conversation_id;
    friend.send(dm, "f1", "still here").await.unwrap();
    // Carol can still start DMs herself.
    carol.open_direct("stranger").await.unwrap();

    // CONTACTS means nothing for DMs: refused, not guessed.
    assert_eq!(
        code(carol.set_privacy(pb::Audience::Contacts, pb::Audience::Unspecified).await),
        ErrorCode::INVALID_ARGUMENT
    );
    // Settings survive a restart.
    let mut server = server;
    server.restart().await;
    let carol = server.connect(Tcp).await;
    carol.login("carol", "carol-password", "d2").await.unwrap();
    let kept = carol.privacy().await.unwrap();
    assert_eq!((kept.direct_messages(), kept.group_invites()), (pb::Audience::Nobody, pb::Audience::Nobody));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_the_current_one_and_can_sign_out_the_rest() {
    let server = TestServer::start_with(roomy).await;
    let alice = user(&server, "alice").await;
    let mut phone = server.connect(Tcp).await;
    phone.login("alice", "alice-password", "phone").await.unwrap();

    assert_eq!(
        code(alice.change_password("wrong-password", "a-new-secret-1", false).await),
        ErrorCode::INVALID_CREDENTIALS
    );
    assert_eq!(code(alice.change_password("alice-password", "alice", false).await), ErrorCode::INVALID_ARGUMENT);
    assert_eq!(code(alice.change_password("alice-password", "password", false).await), ErrorCode::INVALID_ARGUMENT);
    alice.change_password("alice-password", "a-new-secret-1", true).await.unwrap();

    // The phone was signed out; this device goes on.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match phone.next_event().await {
                Some(Event::Closed(e)) => return e,
                Some(_) => continue,
                None => panic!("the phone's session ended without an error"),
            }
        }
    })
    .await
    .expect("the phone was not signed out");
    assert_eq!(ended.code(), Some(ErrorCode::DEVICE_REVOKED));
    assert_eq!(alice.list_devices().await.unwrap().len(), 1);

    let old = server.connect(Tcp).await;
    assert_eq!(code(old.login("alice", "alice-password", "x").await), ErrorCode::INVALID_CREDENTIALS);
    server.connect(Tcp).await.login("alice", "a-new-secret-1", "laptop").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_current_passwords_count_as_failed_logins() {
    // Default limits: 5 failures per username per minute.
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let mut codes = Vec::new();
    for i in 0..7 {
        codes.push(code(alice.change_password(&format!("guess-{i}-xyz"), "a-new-secret-1", false).await));
    }
    assert!(codes[..5].iter().all(|c| *c == ErrorCode::INVALID_CREDENTIALS), "{codes:?}");
    assert_eq!(codes[6], ErrorCode::RATE_LIMITED, "{codes:?}");
    server.stop().await;
}
