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
