//! The ownership loop: every round (a third of the lease TTL) this node
//! renews the leases it holds, says it is alive (its card, with the
//! partitions it owns), gives a partition back when [`plan`] says the
//! cluster is settled and this node is among the most loaded, and takes a
//! free partition while it holds less than its share. A lease it cannot
//! renew (it expired while the node was paused or cut off, and another
//! node took it) ends its partition here at once. A lease given back (a
//! rebalance, a node shutting down) starts a round on every other node at
//! once, so a partition that moves is without an owner only for its
//! takeover.
//!
//! **The bound on moves.** A partition taken from a live owner is
//! unwritable until its new owner has replayed its log, and a node replays
//! one partition after another. So:
//!
//! - a node takes **one** partition at a time, and decides again (at once)
//!   only when that one is writable: it never holds a lease of a partition
//!   that waits behind another's replay;
//! - a node gives a partition back for balance only in a timed round in
//!   which it sees **nothing in motion**: every partition has a lease, and
//!   the live nodes' cards add up to every partition (a card counts only
//!   writable partitions, so a takeover in progress anywhere shows as a
//!   shortfall);
//! - and then only the `min(max_moves, takers)` most loaded nodes give one
//!   each, where `takers` is the number of nodes that need partitions.
//!
//! Hence at most `min(max_moves, takers)` partitions of live owners are
//! moving for balance at once, cluster-wide, each replayed by a different
//! node; the next ones are given back once they are all writable. Every
//! node ranks from the same cards, and a giver's card still shows its old
//! count until its next round, so the others do not give in its stead.
//! Partitions without an owner (their node died or left) are not held
//! back by any of this: every node below its share takes one at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::nats::{keys_within, lease_key};
use super::partition::{Context, OwnedPartition};
use super::store::Owned;

struct Held {
    partition: OwnedPartition,
    lease: Lease,
}

/// A lease this node holds.
struct Lease {
    revision: u64,
    /// When this node last wrote it.
    renewed: Instant,
}

/// Runs the loop until `stop`; then gives every partition back.
pub async fn run(ctx: Arc<Context>, owned: Owned, lease_ttl: Duration, max_moves: usize, stop: CancellationToken) {
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    let round = (lease_ttl / 3).max(Duration::from_millis(100));
    let released = Arc::new(Notify::new());
    let watcher = tokio::spawn(watch_releases(Arc::clone(&ctx), Arc::clone(&released), stop.clone()));
    let mut next = tokio::time::Instant::now();
    loop {
        // Timed rounds renew and rebalance; a round woken by a release only
        // takes free partitions (so giving back stays at `max_moves` a
        // round even though this node's own releases wake it too).
        let timed = tokio::time::Instant::now() >= next;
        if timed {
            next = tokio::time::Instant::now() + round;
        }
        let took = one_round(&ctx, &owned, &mut held, lease_ttl, if timed { max_moves } else { 0 }).await;
        if stop.is_cancelled() {
            break;
        }
        // A node that has just taken a partition over decides again at
        // once: more may be free (a dead node's), and it takes one at a time.
        if took {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
            _ = released.notified() => {}
        }
    }
    watcher.abort();
    // Give everything back, so other nodes take over at once rather than
    // after the TTL.
    for (p, h) in std::mem::take(&mut held) {
        release(&ctx, &owned, p, h).await;
    }
    let _ = ctx.nats.nodes.delete(&ctx.node_id).await;
}

/// Wakes the loop whenever a lease is given back (deleted), so a free
/// partition is taken at once rather than on the next round. Re-subscribes
/// when the watch ends (NATS reconnects); the rounds remain the fallback.
async fn watch_releases(ctx: Arc<Context>, released: Arc<Notify>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match ctx.nats.owners.watch_all().await {
            Ok(mut watch) => {
                while let Some(entry) = tokio::select! {
                    _ = stop.cancelled() => None,
                    e = watch.next() => e,
                } {
                    match entry {
                        Ok(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => released.notify_one(),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "watching leases");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "watching leases"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Writes this node's card (its key in the live-node bucket: where it
/// listens, its load, whether it drains), and keeps it as seen.
pub async fn publish_card(ctx: &Context, partitions: usize) {
    let card = ctx.nodes.card(partitions);
    match serde_json::to_vec(&card) {
        Ok(json) => {
            if let Err(e) = ctx.nats.nodes.put(&ctx.node_id, json.into()).await {
                tracing::debug!(error = %e, "writing this node's card");
            }
        }
        Err(e) => tracing::warn!(error = %e, "encoding this node's card"),
    }
    ctx.nodes.saw(card);
}

/// Every live node's partition count by id (this node's is `held`), from
/// their cards; `None` unless every live node has a card that says.
fn live_counts(ctx: &Context, nodes: &HashSet<String>, held: usize) -> Option<Vec<(String, usize)>> {
    let cards: std::collections::HashMap<String, usize> =
        ctx.nodes.live().into_iter().filter(|s| s.card.v >= 1).map(|s| (s.card.node, s.card.partitions)).collect();
    nodes
        .iter()
        .map(|id| if *id == ctx.node_id { Some((id.clone(), held)) } else { cards.get(id).map(|n| (id.clone(), *n)) })
        .collect()
}

fn count_owned(owned: &Owned, ctx: &Context) {
    let n = owned.read().unwrap_or_else(|e| e.into_inner()).len() as u64;
    ctx.stats.partitions_owned.store(n, Relaxed);
}

async fn release(ctx: &Context, owned: &Owned, p: u32, h: Held) {
    owned.write().unwrap_or_else(|e| e.into_inner()).remove(&p);
    count_owned(owned, ctx);
    ctx.stats.released.fetch_add(1, Relaxed);
    h.partition.stop().await;
    if let Err(e) = ctx.nats.owners.delete_expect_revision(lease_key(p), Some(h.lease.revision)).await {
        tracing::debug!(partition = p, error = %e, "releasing the lease");
    }
    tracing::info!(node = %ctx.node_id, partition = p, "gave the partition back");
}

/// Renews one lease. `Err` means it is lost: another node holds it, or it
/// could not be renewed for half its TTL (it may have expired, so this node
/// must stop before another one takes over). A transient failure (NATS
/// electing a leader, a timeout) within that is retried next round; the
/// log's fencing keeps even a late stop safe.
async fn renew(ctx: &Context, p: u32, h: &mut Lease, lease_ttl: Duration) -> Result<(), String> {
    let owners = &ctx.nats.owners;
    let me: bytes::Bytes = ctx.node_id.clone().into();
    let result = match owners.update(lease_key(p), me.clone(), h.revision).await {
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
            // A renewal whose answer was lost may have landed: the lease is
            // still ours if it names this node.
            match owners.entry(lease_key(p)).await {
                Ok(Some(entry)) if entry.operation == Operation::Put && entry.value == me => {
                    owners.update(lease_key(p), me, entry.revision).await
                }
                _ => return Err(e.to_string()),
            }
        }
        other => other,
    };
    match result {
        Ok(revision) => {
            h.revision = revision;
            h.renewed = Instant::now();
            Ok(())
        }
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(e.to_string()),
        Err(e) if h.renewed.elapsed() < lease_ttl / 2 => {
            tracing::debug!(partition = p, error = %e, "renewing the lease failed; retrying");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A node's share of `partitions` when `nodes` nodes are live: the most
/// it takes, and above which it gives partitions back.
pub fn share(partitions: u32, nodes: usize) -> usize {
    (partitions as usize).div_ceil(nodes.max(1))
}

/// What a node does in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Partitions it gives back for balance (its highest-numbered ones).
    pub give: usize,
    /// Free partitions it takes over this round: 0 or 1.
    pub take: usize,
}

/// The round's plan for node `me`, holding `held` (writable) of
/// `partitions`, with `nodes` live nodes whose counts of writable
/// partitions are `counts` (from their cards, `me` included; `None` when
/// some live node's count is unknown), `free` partitions without a lease
/// (`None` when the leases were not listed) and `max_moves` (0 in a round
/// woken by a release: it only takes).
///
/// Shares: `ceil` = `partitions / nodes` rounded up, `floor` rounded down.
/// The cluster is *starved* while some node holds fewer than `floor`.
///
/// - **Take**: a node below `ceil` takes one free partition a round. While
///   the cluster is starved and there are no more free partitions than
///   starved nodes (what a balance move frees), only the starved nodes
///   take, so the partitions given back reach the nodes they were given
///   for; with more free than that (a node died or left), every node below
///   `ceil` takes one at once.
/// - **Give**, only with every count known, nothing free (`free ==
///   Some(0)`) and the counts adding up to `partitions` (no takeover in
///   progress anywhere): `budget = min(max_moves, takers)` partitions are
///   given, where `takers` is the number of starved nodes (or, when none
///   is, of nodes below `ceil`). They are handed out one at a time to the
///   node holding the most (then by id), counting each one given, among
///   the nodes above `ceil` or, while starved, holding two more than the
///   least loaded. `give` is how many of them are this node's.
///
/// So at most `min(max_moves, takers)` partitions of live owners move for
/// balance at once, and each of them is taken by a node with no other
/// takeover in progress.
pub fn plan(
    partitions: u32,
    nodes: usize,
    me: &str,
    held: usize,
    counts: Option<&[(String, usize)]>,
    free: Option<usize>,
    max_moves: usize,
) -> Plan {
    let ceil = share(partitions, nodes);
    let floor = partitions as usize / nodes.max(1);
    let free_now = free.unwrap_or(0);
    let Some(counts) = counts.filter(|c| c.iter().any(|(id, _)| id == me)) else {
        // Some live node's count is unknown (a card not seen yet): take
        // up to the share, one at a time, and give nothing.
        return Plan { give: 0, take: usize::from(free_now > 0 && held < ceil) };
    };
    let load: Vec<(usize, &str)> =
        counts.iter().map(|(id, n)| (if id == me { held } else { *n }, id.as_str())).collect();
    let least = load.iter().map(|(n, _)| *n).min().unwrap_or(held);
    let starved_nodes = load.iter().filter(|(n, _)| *n < floor).count();
    let starved = starved_nodes > 0;
    let takers = if starved { starved_nodes } else { load.iter().filter(|(n, _)| *n < ceil).count() };
    let writable: usize = load.iter().map(|(n, _)| *n).sum();
    let settled = free == Some(0) && writable >= partitions as usize;
    let budget = if settled { max_moves.min(takers) } else { 0 };
    let mut left = load;
    let mut give = 0;
    for _ in 0..budget {
        let giver = left
            .iter_mut()
            .filter(|(n, _)| *n > ceil || (starved && *n >= least + 2))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
        let Some(giver) = giver else { break };
        giver.0 -= 1;
        if giver.1 == me {
            give += 1;
        }
    }
    let after = held - give.min(held);
    let take = if give > 0 || free_now == 0 || after >= ceil || (starved && free_now <= starved_nodes && after >= floor)
    {
        0
    } else {
        1
    };
    Plan { give, take }
}

/// The partitions a node under its share tries to take, lowest first:
/// those without a lease, up to `wanted`.
pub fn to_take(partitions: u32, leased: &HashSet<u32>, wanted: usize) -> Vec<u32> {
    (0..partitions).filter(|p| !leased.contains(p)).take(wanted).collect()
}

/// How long listing a bucket may take.
const LISTING_WAIT: Duration = Duration::from_secs(2);

async fn renew_all(ctx: &Arc<Context>, owned: &Owned, held: &mut BTreeMap<u32, Held>, lease_ttl: Duration) {
    let mut lost = Vec::new();
    for (p, h) in held.iter_mut() {
        if let Err(e) = renew(ctx, *p, &mut h.lease, lease_ttl).await {
            tracing::warn!(node = %ctx.node_id, partition = *p, error = %e, "lost the partition's lease");
            ctx.stats.leases_lost.fetch_add(1, Relaxed);
            lost.push(*p);
        }
    }
    for p in lost {
        if let Some(h) = held.remove(&p) {
            owned.write().unwrap_or_else(|e| e.into_inner()).remove(&p);
            count_owned(owned, ctx);
            h.partition.stop().await;
        }
    }
}

/// One round; whether it took a partition over.
async fn one_round(
    ctx: &Arc<Context>,
    owned: &Owned,
    held: &mut BTreeMap<u32, Held>,
    lease_ttl: Duration,
    max_moves: usize,
) -> bool {
    let owners = &ctx.nats.owners;
    renew_all(ctx, owned, held, lease_ttl).await;
    publish_card(ctx, held.len()).await;
    // Without a complete list of live nodes and of leases this round
    // decides nothing (a failed listing must not look like a lone node).
    let Some(nodes) = keys_within(&ctx.nats.nodes, LISTING_WAIT).await else { return false };
    let partitions = ctx.partitioning.count();
    let counts = live_counts(ctx, &nodes, held.len());
    // Partitions with a lease: read when this node may take, or when it
    // would give if none were free (a give needs every partition leased).
    // One listing, instead of a refused create per leased one.
    let may_give =
        plan(partitions, nodes.len(), &ctx.node_id, held.len(), counts.as_deref(), Some(0), max_moves).give > 0;
    let leased: Option<HashSet<u32>> = if may_give || held.len() < share(partitions, nodes.len()) {
        let Some(keys) = keys_within(owners, LISTING_WAIT).await else { return false };
        Some(keys.iter().filter_map(|k| k.strip_prefix('p')?.parse().ok()).filter(|p| *p < partitions).collect())
    } else {
        None
    };
    let free = leased.as_ref().map(|l| partitions as usize - l.len());
    let plan = plan(partitions, nodes.len(), &ctx.node_id, held.len(), counts.as_deref(), free, max_moves);
    let give: Vec<u32> = held.keys().rev().take(plan.give).copied().collect();
    for p in give {
        if let Some(h) = held.remove(&p) {
            release(ctx, owned, p, h).await;
        }
    }
    if plan.take == 0 {
        return false;
    }
    let Some(leased) = leased else { return false };
    let round = lease_ttl / 3;
    // Lowest first; one another node created meanwhile is skipped.
    for p in to_take(partitions, &leased, usize::MAX) {
        let Ok(revision) = owners.create(lease_key(p), ctx.node_id.clone().into()).await else { continue };
        let mut lease = Lease { revision, renewed: Instant::now() };
        // A takeover replays a log, which may take longer than a lease:
        // every lease of this node, the one being taken included, and its
        // card (which says it is alive) are renewed on time meanwhile.
        let takeover = OwnedPartition::take_over(ctx, p);
        tokio::pin!(takeover);
        let taken = loop {
            tokio::select! {
                r = &mut takeover => break r.map_err(|e| e.to_string()),
                _ = tokio::time::sleep(round) => {
                    renew_all(ctx, owned, held, lease_ttl).await;
                    publish_card(ctx, held.len()).await;
                    if let Err(e) = renew(ctx, p, &mut lease, lease_ttl).await {
                        break Err(format!("lost the lease while taking the partition over: {e}"));
                    }
                }
            }
        };
        return match taken {
            Ok(partition) => {
                owned.write().unwrap_or_else(|e| e.into_inner()).insert(p, Arc::clone(&partition.store));
                count_owned(owned, ctx);
                (ctx.on_takeover)();
                held.insert(p, Held { partition, lease });
                // The card says so at once: the others give the next
                // partition for balance only when every one is writable.
                publish_card(ctx, held.len()).await;
                true
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "takeover failed; giving the lease back");
                let _ = owners.delete_expect_revision(lease_key(p), Some(lease.revision)).await;
                false
            }
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(id, n)| (id.to_string(), *n)).collect()
    }

    /// 1,024 partitions spread over `n` nodes `n00`, `n01`, … as evenly as
    /// they go (the first ones one more).
    fn spread(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("n{i:02}"), 1024 / n + usize::from(i < 1024 % n))).collect()
    }

    /// Every node's plan from one view (the worst case: all decide at once).
    fn plans(list: &[(String, usize)], free: usize, max_moves: usize) -> Vec<Plan> {
        list.iter().map(|(id, n)| plan(1024, list.len(), id, *n, Some(list), Some(free), max_moves)).collect()
    }

    #[test]
    fn a_node_joining_42_nodes_gets_one_partition_at_a_time() {
        // 42 nodes (16 at 25, 26 at 24), n42 joins: the share drops to 24,
        // and 16 nodes are above it. Before, each gave one at once.
        let mut list = spread(42);
        list.push(("n42".into(), 0));
        let all = plans(&list, 0, 2);
        // One taker: one partition is given, by the most loaded (then by id).
        assert_eq!(all.iter().map(|p| p.give).sum::<usize>(), 1);
        assert_eq!(all[0], Plan { give: 1, take: 0 });
        // Once it is free, only the node that joined takes it.
        list[0].1 -= 1;
        let all = plans(&list, 1, 0);
        assert_eq!(all.iter().map(|p| p.take).sum::<usize>(), 1);
        assert_eq!(all[42], Plan { give: 0, take: 1 });
        // While it replays (taken, not yet in its card) nothing more is given.
        assert!(plans(&list, 0, 2).iter().all(|p| p.give == 0));
        // Once it is writable, the next one.
        list[42].1 = 1;
        assert_eq!(plans(&list, 0, 2).iter().map(|p| p.give).sum::<usize>(), 1);
    }

    #[test]
    fn two_nodes_joining_get_max_moves_at_a_time_one_each() {
        let mut list = spread(42);
        list.push(("n42".into(), 0));
        list.push(("n43".into(), 0));
        assert_eq!(plans(&list, 0, 2).iter().map(|p| p.give).sum::<usize>(), 2);
        assert_eq!(plans(&list, 0, 1).iter().map(|p| p.give).sum::<usize>(), 1);
        assert_eq!(plans(&list, 0, 5).iter().map(|p| p.give).sum::<usize>(), 2);
    }

    /// Rounds in which every node decides from the same view, takes over
    /// one after another within the round (as the creates race), and the
    /// takeovers finish at the end of the round: the partitions moving
    /// for balance never exceed `max_moves`, and the cluster ends balanced.
    fn rounds_until_balanced(mut list: Vec<(String, usize)>, max_moves: usize) -> (usize, usize) {
        let (mut moved, mut rounds) = (0, 0);
        loop {
            rounds += 1;
            assert!(rounds < 1000, "not balanced: {list:?}");
            let given: usize = plans(&list, 0, max_moves)
                .iter()
                .zip(list.iter_mut())
                .map(|(p, (_, n))| {
                    *n -= p.give;
                    p.give
                })
                .sum();
            assert!(given <= max_moves, "{given} given at once");
            if given == 0 {
                let (floor, ceil) = (1024 / list.len(), 1024usize.div_ceil(list.len()));
                assert!(list.iter().all(|(_, n)| (floor..=ceil).contains(n)), "not balanced: {list:?}");
                return (moved, rounds);
            }
            moved += given;
            let mut free = given;
            let mut taking = vec![0; list.len()];
            // Woken by the releases (max_moves 0): take only.
            for i in 0..list.len() {
                let (id, n) = &list[i];
                if plan(1024, list.len(), id, *n, Some(&list), Some(free), 0).take == 1 {
                    taking[i] = 1;
                    free -= 1;
                }
            }
            assert_eq!(free, 0, "a partition given for balance was left waiting");
            for (i, t) in taking.into_iter().enumerate() {
                list[i].1 += t;
            }
        }
    }

    #[test]
    fn joins_end_balanced_with_the_bound_held_throughout() {
        let mut list = spread(42);
        list.push(("n42".into(), 0));
        let (moved, _) = rounds_until_balanced(list.clone(), 2);
        // 1,024 over 43: 35 nodes at 24 and 8 at 23; the new one gets 23.
        assert_eq!(moved, 23);
        let mut two = spread(42);
        two.push(("n42".into(), 0));
        two.push(("n43".into(), 0));
        assert_eq!(rounds_until_balanced(two, 2).0, 46);
        // A second cluster size: 8 nodes grown from 7.
        let mut list: Vec<(String, usize)> =
            (0..7).map(|i| (format!("n{i}"), 1024 / 7 + usize::from(i < 1024 % 7))).collect();
        list.push(("n7".into(), 0));
        assert_eq!(rounds_until_balanced(list, 3).0, 128);
    }

    #[test]
    fn a_dead_nodes_partitions_are_taken_at_once() {
        // n00 (25 partitions) died: 41 nodes left, 25 partitions free.
        let list: Vec<(String, usize)> = spread(42).into_iter().skip(1).collect();
        let n = list.len();
        let takers = list.iter().filter(|(id, h)| plan(1024, n, id, *h, Some(&list), Some(25), 0).take == 1).count();
        // Every node below the share (25 at 41 nodes) takes one at once:
        // the 26 at 24, for 25 free partitions.
        assert_eq!(takers, 26);
        // Also in a timed round, and while a node that came back is short:
        // more free than starved nodes is not a balance move.
        let mut list = list;
        list.push(("n42".into(), 0));
        let n = list.len();
        let takers = list.iter().filter(|(id, h)| plan(1024, n, id, *h, Some(&list), Some(25), 2).take == 1).count();
        assert_eq!(takers, 27);
        // Nothing is given meanwhile.
        assert!(list.iter().all(|(id, h)| plan(1024, n, id, *h, Some(&list), Some(25), 2).give == 0));
        // A node that does not know every count yet takes too.
        assert_eq!(plan(1024, 41, "n41", 24, None, Some(25), 2), Plan { give: 0, take: 1 });
    }

    #[test]
    fn a_node_that_comes_back_empty_gets_partitions_from_the_most_loaded() {
        // 1,024 partitions, 42 nodes: 40 at 25, one at 24, and n41 back at 0.
        let mut list: Vec<(String, usize)> = (0..40).map(|i| (format!("n{i:02}"), 25)).collect();
        list.push(("n40".into(), 24));
        list.push(("n41".into(), 0));
        let plan_of = |me: &str, held: usize| plan(1024, 42, me, held, Some(&list), Some(0), 2);
        // The most loaded (then by id) gives one: there is one taker.
        assert_eq!(plan_of("n00", 25), Plan { give: 1, take: 0 });
        assert_eq!(plan_of("n01", 25), Plan { give: 0, take: 0 });
        assert_eq!(plan_of("n40", 24), Plan { give: 0, take: 0 });
        // A round woken by a release moves nothing (max_moves 0).
        assert_eq!(plan(1024, 42, "n00", 25, Some(&list), Some(0), 0).give, 0);
        // The partition given back goes to n41, not to n00 or n40.
        assert_eq!(plan(1024, 42, "n41", 0, Some(&list), Some(1), 0).take, 1);
        assert_eq!(plan(1024, 42, "n00", 24, Some(&list), Some(1), 0).take, 0);
        assert_eq!(plan(1024, 42, "n40", 24, Some(&list), Some(1), 0).take, 0);
    }

    #[test]
    fn nothing_is_given_for_balance_while_a_partition_moves_or_a_count_is_unknown() {
        // 7 partitions over 3 nodes: shares 2 to 3; c came back with 1.
        let list = counts(&[("a", 3), ("b", 3), ("c", 1)]);
        // A partition is free, the leases were not listed, a count unknown.
        assert_eq!(plan(7, 3, "a", 3, Some(&list), Some(1), 2).give, 0);
        assert_eq!(plan(7, 3, "a", 3, Some(&list), None, 2).give, 0);
        assert_eq!(plan(7, 3, "a", 3, None, Some(0), 2).give, 0);
        // The cards add up to 6 of 7: a takeover is in progress.
        assert_eq!(plan(7, 3, "a", 3, Some(&counts(&[("a", 3), ("b", 2), ("c", 1)])), Some(0), 2).give, 0);
        // Settled: a gives one (most loaded, then by id), and c takes it.
        assert_eq!(plan(7, 3, "a", 3, Some(&list), Some(0), 2), Plan { give: 1, take: 0 });
        assert_eq!(plan(7, 3, "b", 3, Some(&list), Some(0), 2), Plan { give: 0, take: 0 });
        assert_eq!(plan(7, 3, "c", 1, Some(&list), Some(1), 0), Plan { give: 0, take: 1 });
    }

    #[test]
    fn a_balanced_cluster_stays_put() {
        let list = counts(&[("a", 3), ("b", 3), ("c", 2)]);
        for (me, held) in [("a", 3), ("b", 3), ("c", 2)] {
            assert_eq!(plan(8, 3, me, held, Some(&list), Some(0), 2), Plan { give: 0, take: 0 });
        }
        // A new cluster: the first node takes one at a time, up to all.
        let one = counts(&[("a", 0)]);
        assert_eq!(plan(8, 1, "a", 0, Some(&one), Some(8), 2), Plan { give: 0, take: 1 });
        // Then a second node: the first gives, one at a time (one taker).
        let two = counts(&[("a", 8), ("b", 0)]);
        assert_eq!(plan(8, 2, "a", 8, Some(&two), Some(0), 2), Plan { give: 1, take: 0 });
        // Above the share with nobody starved: 10 over 4 (2 to 3) as 4,2,2,2.
        let list = counts(&[("a", 4), ("b", 2), ("c", 2), ("d", 2)]);
        assert_eq!(plan(10, 4, "a", 4, Some(&list), Some(0), 2), Plan { give: 1, take: 0 });
        assert_eq!(plan(10, 4, "b", 2, Some(&list), Some(1), 0), Plan { give: 0, take: 1 });
    }
}
