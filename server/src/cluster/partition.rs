//! A partition this node owns: taking it over (replay the log, append the
//! takeover record that fences out the last owner), its writer (groups go
//! to the log first), the effects it receives from every other partition,
//! and the forwarded operations it answers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::log::PartitionLog;
use super::nats::{Nats, effects_subject, stream_name};
use super::rpc;
use crate::delivery::Delivery;
use crate::store::records::EffectBatch;
use crate::store::{CommitHook, Db, LocalStore, Log, LogError, Op, Partitioning, Scope, Store, StoreSettings};

/// What every owned partition is run with.
pub struct Context {
    /// NATS and JetStream.
    pub nats: Nats,
    /// This node's fjall: the view of every partition it owns (and a stale
    /// one of those it owned before).
    pub db: Arc<Db>,
    /// Where live events go.
    pub delivery: Arc<dyn Delivery>,
    /// Called after each group commit.
    pub hook: CommitHook,
    /// The stores' settings.
    pub settings: StoreSettings,
    /// The cluster's partitioning.
    pub partitioning: Partitioning,
    /// This node.
    pub node_id: String,
    /// How long a log append may take before its outcome counts as unknown.
    pub publish_timeout: Duration,
    /// Counters for /metrics.
    pub stats: Arc<crate::metrics::ClusterStats>,
    /// Called when this node has taken a partition over (its pending push
    /// jobs are now this node's to send).
    pub on_takeover: Arc<dyn Fn() + Send + Sync>,
    /// The nodes' cards, this one's included.
    pub nodes: Arc<super::nodes::Nodes>,
}

/// A partition this node owns, running.
pub struct OwnedPartition {
    /// Which.
    pub partition: u32,
    /// Its store (writer with the log).
    pub store: Arc<LocalStore>,
    stop: CancellationToken,
}

/// Attempts to append the takeover record before giving up for this round.
const TAKEOVER_ATTEMPTS: usize = 5;

impl OwnedPartition {
    /// Takes partition `p` over: replays its log into this node's view,
    /// appends the takeover record, and starts its writer, its effects
    /// consumers and its forwarded-operation server.
    pub async fn take_over(ctx: &Arc<Context>, p: u32) -> Result<OwnedPartition, LogError> {
        let log = Arc::new(PartitionLog::new(
            p,
            ctx.nats.clone(),
            tokio::runtime::Handle::current(),
            ctx.publish_timeout,
            Arc::clone(&ctx.stats),
        ));
        let mut attempts = 0;
        let position = loop {
            attempts += 1;
            log.catch_up(&ctx.db).await?;
            match log.append_takeover(&ctx.node_id).await {
                Ok(position) => break position,
                // Someone appended after we read the end: read again.
                Err(LogError::Fenced(why)) if attempts < TAKEOVER_ATTEMPTS => {
                    tracing::debug!(partition = p, %why, "the log moved during takeover; reading again");
                }
                Err(e) => return Err(e),
            }
        };
        ctx.db.set_applied(p, position).map_err(|e| LogError::Unknown(e.to_string()))?;
        let scope = Scope { partitioning: ctx.partitioning, partition: p, capture: true };
        let store = LocalStore::start_partition(
            Arc::clone(&ctx.db),
            Arc::clone(&ctx.delivery),
            Arc::clone(&ctx.hook),
            ctx.settings,
            scope,
            Some(log as Arc<dyn Log>),
        )
        .map_err(|e| LogError::Unknown(format!("starting the writer: {e}")))?;
        let store = Arc::new(store);
        let stop = CancellationToken::new();
        for source in (0..ctx.partitioning.count()).filter(|s| *s != p) {
            tokio::spawn(consume_effects(Arc::clone(ctx), Arc::clone(&store), source, p, stop.clone()));
        }
        let (client, served, stopped) = (ctx.nats.client.clone(), Arc::clone(&store), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = rpc::serve(client, p, served, stopped).await {
                tracing::error!(partition = p, error = %e, "cannot answer forwarded operations");
            }
        });
        ctx.stats.takeovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(node = %ctx.node_id, partition = p, position, "took the partition over");
        Ok(OwnedPartition { partition: p, store, stop })
    }

    /// Stops everything of the partition on this node: no more forwarded
    /// operations or effects, and the writer finishes what is queued.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.store.close().await {
            tracing::warn!(partition = self.partition, error = %e, "closing the partition's writer");
        }
    }
}

/// Effect batches queued to the writer ahead of the last one confirmed.
const EFFECTS_WINDOW: usize = 256;

/// The longest pull request an effects consumer makes. async-nats asks
/// for idle heartbeats at half of it and recreates its ordered consumer
/// after two are missed, so this bounds how long a consumer that died
/// with its NATS server goes unnoticed (at the library's default of 30 s,
/// a minute). An idle consumer makes one pull request per this interval.
const EFFECTS_PULL_EXPIRES: Duration = Duration::from_secs(4);

/// How long a consumer with room to read may receive nothing before the
/// watchdog checks whether its subject holds effects past the last one
/// it read.
const EFFECTS_STALL: Duration = Duration::from_secs(5);

/// After a check that found effects waiting, how long until the second
/// check; if that one finds the consumer still behind and silent, it is
/// made anew from what is applied. Two checks are needed so that a batch
/// published just before a check does not count as a stall.
const EFFECTS_RECHECK: Duration = Duration::from_secs(1);

/// A consumer's batches queued to the writer, counted in
/// `effects_inflight` while they are (also when the consumer ends).
struct Inflight<'a> {
    ops: VecDeque<Op<bool>>,
    stats: &'a crate::metrics::ClusterStats,
}

impl Inflight<'_> {
    fn push(&mut self, op: Op<bool>) {
        self.ops.push_back(op);
        self.stats.effects_inflight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn pop(&mut self) {
        if self.ops.pop_front().is_some() {
            self.stats.effects_inflight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.stats.effects_inflight.fetch_sub(self.ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Applies, in order, the effects partition `source` sends to `target`,
/// from where `target` stopped, until `stop`.
async fn consume_effects(ctx: Arc<Context>, store: Arc<LocalStore>, source: u32, target: u32, stop: CancellationToken) {
    consume_until_stopped(&ctx, &store, source, target, &stop).await;
    // This node no longer applies them: its lag is no longer its own.
    ctx.stats.effects_pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&(source, target));
}

async fn consume_until_stopped(ctx: &Context, store: &LocalStore, source: u32, target: u32, stop: &CancellationToken) {
    const FIRST_WAIT: Duration = Duration::from_millis(100);
    let mut wait = FIRST_WAIT;
    let applied = || ctx.db.effects_applied(target, source).ok();
    loop {
        if stop.is_cancelled() {
            return;
        }
        let before = applied();
        let outcome = consume_once(ctx, store, source, target, stop).await;
        if before.is_some() && applied() > before {
            // It made progress: a new failure starts the backoff afresh.
            wait = FIRST_WAIT;
        }
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(source, target, error = %e, "effects consumer restarting");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn consume_once(
    ctx: &Context,
    store: &LocalStore,
    source: u32,
    target: u32,
    stop: &CancellationToken,
) -> Result<(), String> {
    let applied = ctx.db.effects_applied(target, source).map_err(|e| e.to_string())?;
    let stream = ctx.nats.js.get_stream(stream_name(source)).await.map_err(|e| e.to_string())?;
    let subject = effects_subject(source, target);
    let config = pull::OrderedConfig {
        filter_subject: subject.clone(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: applied + 1 },
        max_expires: EFFECTS_PULL_EXPIRES,
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    // Batches are queued to the writer as they arrive, up to WINDOW ahead
    // of the last one confirmed, so many share a group commit (one append
    // to the target's log) instead of one round trip each. Each names the
    // batch before it: the writer refuses one whose predecessor is not
    // applied, and any failure restarts the consumer from what is.
    let mut inflight = Inflight { ops: VecDeque::new(), stats: &ctx.stats };
    let mut previous = applied;
    // The watchdog: when the consumer last read a batch (or was made), and
    // the last position a check saw waiting past `previous`.
    let mut heard = tokio::time::Instant::now();
    let mut behind: Option<u64> = None;
    loop {
        let check_at = heard + if behind.is_some() { EFFECTS_RECHECK } else { EFFECTS_STALL };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next(), if inflight.ops.len() < EFFECTS_WINDOW => {
                let msg = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the consumer ended".into()),
                };
                let info = msg.info().map_err(|e| e.to_string())?;
                let (position, pending) = (info.stream_sequence, info.pending);
                if position <= previous {
                    // async-nats remade its consumer before this one had
                    // read anything, from the stream's start: make it anew
                    // from what is applied instead of reading it all again.
                    return Err(format!("the consumer went back to {position}, after {previous}"));
                }
                heard = tokio::time::Instant::now();
                behind = None;
                ctx.stats
                    .effects_pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((source, target), pending);
                let batch =
                    EffectBatch::decode(msg.payload.clone()).map_err(|e| format!("effects at {position}: {e}"))?;
                inflight.push(store.apply_effects(source, position, previous, batch));
                previous = position;
            }
            done = async {
                match inflight.ops.front_mut() {
                    Some(op) => op.await,
                    None => std::future::pending().await,
                }
            } => {
                if inflight.ops.len() == EFFECTS_WINDOW {
                    // The window was full, so nothing could be read: the
                    // watchdog's wait starts now.
                    heard = tokio::time::Instant::now();
                }
                inflight.pop();
                match done {
                    Ok(true) => {
                        ctx.stats.effects_applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    // The log unreachable, the writer busy, or out of order:
                    // start again from what is applied.
                    Err(e) => return Err(format!("applying effects: {e}")),
                }
            }
            _ = tokio::time::sleep_until(check_at), if inflight.ops.len() < EFFECTS_WINDOW => {
                // Nothing read for a while with room to read: is anything
                // waiting? A consumer whose NATS server died reads nothing
                // more, and the library may take long to notice.
                // Bounded: the loop answers `stop` and the writer only
                // between its arms.
                let lookup =
                    tokio::time::timeout(2 * EFFECTS_RECHECK, stream.get_last_raw_message_by_subject(&subject)).await;
                let last = match lookup {
                    Ok(Ok(m)) => Ok(m.sequence),
                    Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer in time".to_string()),
                };
                heard = tokio::time::Instant::now();
                let last = match last {
                    Ok(last) => last,
                    Err(error) => {
                        // NATS itself is in trouble (a leader election?):
                        // the consumer may well be fine; check again later.
                        tracing::debug!(source, target, %error, "effects watchdog could not read the stream");
                        behind = None;
                        continue;
                    }
                };
                behind = match behind {
                    Some(_) if last > previous => {
                        ctx.stats.effects_stalls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(source, target, previous, last, "effects consumer stalled; making it anew");
                        return Err(format!("the consumer read nothing while effects up to {last} wait after {previous}"));
                    }
                    _ if last > previous => Some(last),
                    _ => None,
                };
            }
        }
    }
}
