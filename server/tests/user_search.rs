//! Finding people by a username prefix (spec §6.9): results in username
//! order, at most `limit` with `has_more`, the searcher, blocks either way
//! and disabled accounts left out, users who chose to stay out of search
//! found only by their whole username, short or malformed prefixes refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, code};
use confab_client::{Connection, TransportKind::Tcp};
use confab_protocol::{ErrorCode, pb};

async fn user(server: &TestServer, name: &str) -> (Connection, u64) {
    let c = server.connect(Tcp).await;
    let ok = c.signup(name, &format!("{name}-password"), "d").await.unwrap();
    (c, ok.user_id)
}

fn names(list: &pb::UserList) -> Vec<&str> {
    list.users.iter().map(|u| u.username.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_search_lists_matches_in_order_within_the_limit() {
    let server = TestServer::start().await;
    // Created out of order: the answer is in username order all the same.
    let (alice, _) = user(&server, "alice").await;
    for name in ["alma", "alfred", "albert", "bob", "al-x"] {
        user(&server, name).await;
    }

    let all = alice.search_users("al", 0).await.unwrap();
    assert_eq!(names(&all), ["al-x", "albert", "alfred", "alma"], "the searcher is not listed");
    assert!(!all.has_more);

    let two = alice.search_users("al", 2).await.unwrap();
    assert_eq!(names(&two), ["al-x", "albert"]);
    assert!(two.has_more, "more match than the limit");
    let exact_limit = alice.search_users("al", 4).await.unwrap();
    assert_eq!(exact_limit.users.len(), 4);
    assert!(!exact_limit.has_more, "exactly the limit: nothing more");

    assert_eq!(names(&alice.search_users("alf", 0).await.unwrap()), ["alfred"]);
    assert!(alice.search_users("zz", 0).await.unwrap().users.is_empty());
    // The searcher's own full name finds nobody (themself excluded).
    assert!(alice.search_users("alice", 0).await.unwrap().users.is_empty());

    // A limit above max_page_size is clamped, not refused.
    assert_eq!(alice.search_users("al", 1_000_000).await.unwrap().users.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_either_way_hide_both_users_from_each_other() {
    let server = TestServer::start().await;
    let (alice, _) = user(&server, "alice").await;
    let (albert, _) = user(&server, "albert").await;
    let (alfred, _) = user(&server, "alfred").await;

    alice.set_blocked("albert", true).await.unwrap();
    alfred.set_blocked("alice", true).await.unwrap();
    assert!(alice.search_users("al", 0).await.unwrap().users.is_empty(), "blocked by alice, and blocking alice");
    // Not even by the whole name.
    assert!(alice.search_users("albert", 0).await.unwrap().users.is_empty());
    assert!(alice.search_users("alfred", 0).await.unwrap().users.is_empty());
    assert_eq!(names(&albert.search_users("al", 0).await.unwrap()), ["alfred"], "alice blocked albert");
    assert_eq!(names(&alfred.search_users("al", 0).await.unwrap()), ["albert"], "alfred blocked alice");

    alice.set_blocked("albert", false).await.unwrap();
    assert_eq!(names(&alice.search_users("al", 0).await.unwrap()), ["albert"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_users_are_found_only_by_their_whole_username() {
    let server = TestServer::start().await;
    let (alice, _) = user(&server, "alice").await;
    let (carol, _) = user(&server, "carol").await;
    user(&server, "carla").await;

    assert_eq!(carol.privacy().await.unwrap().search(), pb::Audience::Everyone, "the default");
    let set = carol
        .set_privacy_with(pb::SetPrivacyRequest { search: pb::Audience::Nobody as i32, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(set.search(), pb::Audience::Nobody);
    assert_eq!(set.direct_messages(), pb::Audience::Everyone, "other settings unchanged");
    assert_eq!(carol.privacy().await.unwrap().search(), pb::Audience::Nobody);

    assert_eq!(names(&alice.search_users("car", 0).await.unwrap()), ["carla"]);
    assert_eq!(names(&alice.search_users("carol", 0).await.unwrap()), ["carol"], "the whole username finds her");
    assert!(alice.search_users("caro", 0).await.unwrap().users.is_empty());
    // A setting change that does not name search leaves it alone.
    carol.set_privacy(pb::Audience::Nobody, pb::Audience::Unspecified).await.unwrap();
    assert_eq!(carol.privacy().await.unwrap().search(), pb::Audience::Nobody);

    carol
        .set_privacy_with(pb::SetPrivacyRequest { search: pb::Audience::Everyone as i32, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(names(&alice.search_users("car", 0).await.unwrap()), ["carla", "carol"]);

    // CONTACTS is not a search setting.
    let contacts = carol
        .set_privacy_with(pb::SetPrivacyRequest { search: pb::Audience::Contacts as i32, ..Default::default() })
        .await;
    assert_eq!(code(contacts), ErrorCode::INVALID_ARGUMENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_accounts_are_never_listed() {
    let server = TestServer::start().await;
    let (alice, _) = user(&server, "alice").await;
    let (_, dave) = user(&server, "dave").await;
    user(&server, "davina").await;
    let store = server.server().core().store.single_node().unwrap();
    assert!(store.set_disabled(dave, true, 1).await.unwrap());
    assert_eq!(names(&alice.search_users("dav", 0).await.unwrap()), ["davina"]);
    assert!(alice.search_users("dave", 0).await.unwrap().users.is_empty(), "not even by the whole name");
    store.set_disabled(dave, false, 2).await.unwrap();
    assert_eq!(names(&alice.search_users("dav", 0).await.unwrap()), ["dave", "davina"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_or_malformed_prefixes_are_refused() {
    let server = TestServer::start().await;
    let (alice, _) = user(&server, "alice").await;
    for bad in ["", "a", "Al", "_a", "a b", "al!", "é", &"a".repeat(33)] {
        assert_eq!(code(alice.search_users(bad, 0).await), ErrorCode::INVALID_ARGUMENT, "{bad:?}");
    }
    // Unauthenticated sessions cannot search.
    let anon = server.connect(Tcp).await;
    assert_eq!(code(anon.search_users("al", 0).await), ErrorCode::UNAUTHENTICATED);
}

/// Cluster mode does not offer search yet (spec §6.9, docs/CLUSTER.md):
/// FEATURE_UNAVAILABLE, after the prefix is checked; the privacy setting is
/// stored all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_answers_feature_unavailable() {
    use common::cluster::{Nats, nats_server, settled, start_node};
    let Some(binary) = nats_server("cluster test (server/tests/user_search.rs)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(binary, dir.path()).await;
    let node = start_node(&nats, &dir.path().join("a"), "a", 4).await;
    let alice = node.connect(Tcp).await;
    settled(|| alice.signup("alice", "alice-password", "d")).await;
    let bob = node.connect(Tcp).await;
    settled(|| bob.signup("albert", "albert-password", "d")).await;

    assert_eq!(code(alice.search_users("al", 0).await), ErrorCode::FEATURE_UNAVAILABLE);
    assert_eq!(code(alice.search_users("a", 0).await), ErrorCode::INVALID_ARGUMENT, "the prefix is checked first");
    let set = settled(|| {
        bob.set_privacy_with(pb::SetPrivacyRequest { search: pb::Audience::Nobody as i32, ..Default::default() })
    })
    .await;
    assert_eq!(set.search(), pb::Audience::Nobody);
    assert_eq!(bob.privacy().await.unwrap().search(), pb::Audience::Nobody);
}
