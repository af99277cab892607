//! History pages at the edges of the seq range: `after_seq = u64::MAX` is
//! an empty page. Found by the `server_e2e` fuzz target: `after + 1`
//! overflowed (a panic in debug builds, surfacing as INTERNAL; in release
//! it wrapped to 0 and returned the oldest messages instead of none).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::Tcp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_after_the_largest_seq_is_empty() {
    let server = TestServer::start().await;
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();
    alice.send(dm.conversation_id, "m-1", "hello").await.unwrap();

    let page = alice.history(dm.conversation_id, 0, u64::MAX, 0).await.unwrap();
    assert!(page.messages.is_empty(), "nothing comes after seq u64::MAX: {page:?}");
    assert!(!page.has_more);
    let page = alice.history(dm.conversation_id, u64::MAX, 0, 0).await.unwrap();
    assert_eq!(page.messages.len(), 1, "everything comes before seq u64::MAX: {page:?}");
}

/// A page is at most `max_page_size` long, whatever `limit` asks (0 means
/// the maximum): history, sync and the conversation list alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_cut_at_the_advertised_max_page_size() {
    let server = TestServer::start_with(|c| c.limits.max_page_size = 5).await;
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    assert_eq!(alice.limits().max_page_size, 5, "the limit is advertised in Welcome");
    for name in ["bob", "carol", "dave", "erin", "frank", "grace"] {
        let c = server.connect(Tcp).await;
        c.signup(name, &format!("{name}-password"), "phone").await.unwrap();
        alice.open_direct(name).await.unwrap();
    }
    let dm = alice.open_direct("bob").await.unwrap();
    for i in 0..8 {
        alice.send(dm.conversation_id, &format!("m-{i}"), "hello").await.unwrap();
    }
    for limit in [0, 6, 1000] {
        let page = alice.history(dm.conversation_id, 0, 0, limit).await.unwrap();
        assert_eq!((page.messages.len(), page.has_more), (5, true), "history with limit {limit}");
        let page = alice.sync(0, limit).await.unwrap();
        assert_eq!(page.events.len(), 5, "sync with limit {limit}");
        assert!(page.has_more, "sync with limit {limit}");
        let list = alice.list_conversations(limit).await.unwrap();
        assert_eq!((list.conversations.len(), list.has_more), (5, true), "conversations with limit {limit}");
    }
    assert_eq!(alice.history(dm.conversation_id, 0, 0, 3).await.unwrap().messages.len(), 3);
}
