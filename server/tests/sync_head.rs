//! A sync page never holds an event past the `inbox_head` it reports
//! (§8.5: the user's newest inbox_seq when the page was read). Found by
//! the `server_e2e` fuzz target: the handler read the head, then the page,
//! so an event committed in between (here: a send pipelined with the sync)
//! showed up in a page whose head was older than it. The window is narrow,
//! hence many rounds of sends racing syncs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use confab_client::TransportKind::Tcp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pages_end_at_or_before_their_inbox_head() {
    let server = TestServer::start().await;
    let alice = server.connect(Tcp).await;
    alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect(Tcp).await;
    bob.signup("bob", "bob-password", "phone").await.unwrap();
    let dm = alice.open_direct("bob").await.unwrap();
    let mut after = 0;
    // Within the send burst (100): no rate limit in the way.
    for round in 0..90 {
        let id = format!("m-{round}");
        let (sent, page) = tokio::join!(alice.send(dm.conversation_id, &id, "racing a sync"), bob.sync(after, 0));
        sent.unwrap();
        let page = page.unwrap();
        // Page from just before the newest events, so the race stays in
        // the page (a full page from 0 would stop at older events).
        after = page.inbox_head.saturating_sub(2);
        if let Some(last) = page.events.last() {
            assert!(
                last.inbox_seq <= page.inbox_head,
                "round {round}: event {} in a page whose inbox_head is {}",
                last.inbox_seq,
                page.inbox_head
            );
        }
    }
}
