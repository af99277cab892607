//! The ownership loop: every round (a third of the lease TTL) this node
//! renews the leases it holds, says it is alive, gives partitions back when
//! it holds more than its share (at most `max_moves` a round), and takes
//! free ones up to its share. A lease it cannot renew (it expired while the
//! node was paused or cut off, and another node took it) ends its
//! partition here at once. A lease given back (a rebalance, a node
//! shutting down) starts a round on every other node at once, so a
//! partition that moves is without an owner only for its takeover.

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
        one_round(&ctx, &owned, &mut held, lease_ttl, if timed { max_moves } else { 0 }).await;
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

/// How many of its `held` partitions a node gives back in one round (the
/// highest-numbered ones): what it holds above its share, at most
/// `max_moves`.
pub fn to_give(held: usize, share: usize, max_moves: usize) -> usize {
    held.saturating_sub(share).min(max_moves)
}

/// What a node does in a timed round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Partitions it gives back (its highest-numbered ones).
    pub give: usize,
    /// Free partitions it takes, up to this many held.
    pub hold_up_to: usize,
}

/// The round's plan for node `me`, holding `held` of `partitions`, with
/// `nodes` live nodes whose partition counts are `counts` (`me` included;
/// `None` when some live node's count is unknown).
///
/// A node above its share (`partitions / nodes`, rounded up) gives the
/// excess back, at most `max_moves` a round, and a node below it takes
/// free partitions. That alone leaves a node that comes back empty when
/// every other node sits at the rounded-up share (nobody is above it), so:
/// while some node holds fewer than the rounded-down share and every
/// partition has an owner (`all_leased`), the `max_moves` most loaded
/// nodes (then by id) that hold two or more above it give one each, and
/// only nodes below the rounded-down share take — the givers would
/// otherwise take their partitions straight back.
pub fn plan(
    partitions: u32,
    nodes: usize,
    me: &str,
    held: usize,
    counts: Option<&[(String, usize)]>,
    all_leased: bool,
    max_moves: usize,
) -> Plan {
    let ceil = share(partitions, nodes);
    let floor = partitions as usize / nodes.max(1);
    let counts = counts.filter(|c| c.iter().any(|(id, _)| id == me));
    let count = |id: &str, n: usize| if id == me { held } else { n };
    let least = counts.and_then(|c| c.iter().map(|(id, n)| count(id, *n)).min());
    let starved = least.is_some_and(|l| l < floor);
    let mut give = to_give(held, ceil, max_moves);
    if give == 0
        && starved
        && all_leased
        && least.is_some_and(|l| held >= l + 2)
        && let Some(counts) = counts
    {
        let mut ranked: Vec<(usize, &str)> = counts.iter().map(|(id, n)| (count(id, *n), id.as_str())).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        if ranked.iter().take(max_moves).any(|(_, id)| *id == me) {
            give = 1;
        }
    }
    let after = held - give;
    let hold_up_to = if starved && after >= floor { after } else { ceil };
    Plan { give, hold_up_to }
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

async fn one_round(
    ctx: &Arc<Context>,
    owned: &Owned,
    held: &mut BTreeMap<u32, Held>,
    lease_ttl: Duration,
    max_moves: usize,
) {
    let owners = &ctx.nats.owners;
    renew_all(ctx, owned, held, lease_ttl).await;
    publish_card(ctx, held.len()).await;
    // Without a complete list of live nodes and of leases this round
    // decides nothing (a failed listing must not look like a lone node).
    let Some(nodes) = keys_within(&ctx.nats.nodes, LISTING_WAIT).await else { return };
    let partitions = ctx.partitioning.count();
    let counts = live_counts(ctx, &nodes, held.len());
    // Partitions with a lease: read when this node may take, or when a
    // node below its share may make this one give (only while none is
    // free). One listing, instead of a refused create per leased one.
    let floor = partitions as usize / nodes.len().max(1);
    let starved = counts.as_ref().is_some_and(|c| c.iter().any(|(_, n)| *n < floor));
    let leased: Option<HashSet<u32>> = if starved || held.len() < share(partitions, nodes.len()) {
        let Some(keys) = keys_within(owners, LISTING_WAIT).await else { return };
        Some(keys.iter().filter_map(|k| k.strip_prefix('p')?.parse().ok()).collect())
    } else {
        None
    };
    let all_leased = leased.as_ref().is_some_and(|l| l.len() == partitions as usize);
    let plan = plan(partitions, nodes.len(), &ctx.node_id, held.len(), counts.as_deref(), all_leased, max_moves);
    let give: Vec<u32> = held.keys().rev().take(plan.give).copied().collect();
    for p in give {
        if let Some(h) = held.remove(&p) {
            release(ctx, owned, p, h).await;
        }
    }
    if held.len() >= plan.hold_up_to {
        return;
    }
    let Some(leased) = leased else { return };
    let round = lease_ttl / 3;
    for p in to_take(partitions, &leased, plan.hold_up_to - held.len()) {
        let Ok(revision) = owners.create(lease_key(p), ctx.node_id.clone().into()).await else { continue };
        let mut lease = Lease { revision, renewed: Instant::now() };
        // A takeover replays a log, which may take longer than a lease:
        // every lease of this node, the one being taken included, is
        // renewed on time meanwhile.
        let takeover = OwnedPartition::take_over(ctx, p);
        tokio::pin!(takeover);
        let taken = loop {
            tokio::select! {
                r = &mut takeover => break r.map_err(|e| e.to_string()),
                _ = tokio::time::sleep(round) => {
                    renew_all(ctx, owned, held, lease_ttl).await;
                    if let Err(e) = renew(ctx, p, &mut lease, lease_ttl).await {
                        break Err(format!("lost the lease while taking the partition over: {e}"));
                    }
                }
            }
        };
        match taken {
            Ok(partition) => {
                owned.write().unwrap_or_else(|e| e.into_inner()).insert(p, Arc::clone(&partition.store));
                count_owned(owned, ctx);
                (ctx.on_takeover)();
                held.insert(p, Held { partition, lease });
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "takeover failed; giving the lease back");
                let _ = owners.delete_expect_revision(lease_key(p), Some(lease.revision)).await;
            }
        }
        if held.values().any(|h| h.lease.renewed.elapsed() >= round) {
            renew_all(ctx, owned, held, lease_ttl).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(id, n)| (id.to_string(), *n)).collect()
    }

    #[test]
    fn a_node_that_comes_back_empty_gets_partitions_from_the_most_loaded() {
        // 1,024 partitions, 42 nodes: 40 at 25, one at 24, and n41 back at 0.
        let mut list: Vec<(String, usize)> = (0..40).map(|i| (format!("n{i:02}"), 25)).collect();
        list.push(("n40".into(), 24));
        list.push(("n41".into(), 0));
        let plan_of = |me: &str, held: usize| plan(1024, 42, me, held, Some(&list), true, 2);
        // The two most loaded (then by id) give one each; they do not take back.
        assert_eq!(plan_of("n00", 25), Plan { give: 1, hold_up_to: 24 });
        assert_eq!(plan_of("n01", 25), Plan { give: 1, hold_up_to: 24 });
        // The others stay, and take nothing while n41 is short.
        assert_eq!(plan_of("n02", 25), Plan { give: 0, hold_up_to: 25 });
        assert_eq!(plan_of("n40", 24), Plan { give: 0, hold_up_to: 24 });
        // The empty node takes up to the share.
        assert_eq!(plan_of("n41", 0), Plan { give: 0, hold_up_to: 25 });
        // A round woken by a release moves nothing (max_moves 0).
        assert_eq!(plan(1024, 42, "n00", 25, Some(&list), true, 0).give, 0);
    }

    #[test]
    fn nothing_is_given_for_balance_while_a_partition_is_free_or_a_count_unknown() {
        // 7 partitions over 3 nodes: shares 2 to 3; c came back with 1.
        let list = counts(&[("a", 3), ("b", 3), ("c", 1)]);
        assert_eq!(plan(7, 3, "a", 3, Some(&list), false, 2), Plan { give: 0, hold_up_to: 3 });
        assert_eq!(plan(7, 3, "a", 3, None, true, 2), Plan { give: 0, hold_up_to: 3 });
        assert_eq!(plan(7, 3, "a", 3, Some(&list), true, 2), Plan { give: 1, hold_up_to: 2 });
        assert_eq!(plan(7, 3, "c", 1, Some(&list), true, 2), Plan { give: 0, hold_up_to: 3 });
    }

    #[test]
    fn a_balanced_cluster_stays_put() {
        let list = counts(&[("a", 3), ("b", 3), ("c", 2)]);
        for (me, held) in [("a", 3), ("b", 3), ("c", 2)] {
            assert_eq!(plan(8, 3, me, held, Some(&list), true, 2), Plan { give: 0, hold_up_to: 3 });
        }
        // Above the share: give the excess, bounded.
        assert_eq!(plan(8, 3, "a", 8, Some(&counts(&[("a", 8), ("b", 0), ("c", 0)])), true, 2).give, 2);
    }
}
