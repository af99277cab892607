//! The cluster as an operator sees it (`GET /v1/cluster` on any node):
//! the live nodes with their load, every partition's owner, and every
//! partition's stream with its Raft leader and how far each replica lags.
//! Read from NATS when asked, so every node answers the same.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::nats::{Nats, lease_key, stream_name};
use super::nodes::Card;

/// How long reading the status may take before what is missing is named
/// in `errors`.
const WITHIN: Duration = Duration::from_secs(5);

/// Concurrent reads of leases and streams.
const CONCURRENCY: usize = 32;

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The node that answered.
    pub node: String,
    /// The cluster's partition count.
    pub partitions: u32,
    /// Live nodes (whose key has not expired), by id.
    pub nodes: Vec<NodeStatus>,
    /// Partitions without an owner now (a takeover in progress, or no
    /// live node could take them).
    pub unowned: Vec<u32>,
    /// One entry per partition.
    pub streams: Vec<PartitionStatus>,
    /// What could not be read (the rest of the answer is still true).
    pub errors: Vec<String>,
}

/// A live node.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    /// What it publishes about itself.
    #[serde(flatten)]
    pub card: Card,
    /// Partitions whose lease it holds.
    pub owns: usize,
    /// How long ago it last wrote its card (by the NATS server's clock).
    pub card_age_ms: Option<u64>,
}

/// A partition.
#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    /// Which.
    pub partition: u32,
    /// The node holding its lease.
    pub owner: Option<String>,
    /// Records in its stream (log records and effects for others).
    pub messages: u64,
    /// Bytes in its stream.
    pub bytes: u64,
    /// The stream's last sequence.
    pub last_seq: u64,
    /// The NATS server leading the stream's Raft group.
    pub leader: Option<String>,
    /// The other replicas.
    pub replicas: Vec<Replica>,
}

/// A follower of a partition's stream.
#[derive(Debug, Serialize)]
pub struct Replica {
    /// The NATS server.
    pub server: String,
    /// Whether it has everything the leader has.
    pub current: bool,
    /// Whether the leader has lost it.
    pub offline: bool,
    /// Operations it is behind.
    pub lag: u64,
    /// Since it was last heard from, in milliseconds.
    pub active_ms: u64,
}

/// Reads the status from NATS.
pub async fn read(nats: &Nats, me: &str, partitions: u32) -> Status {
    let mut errors = Vec::new();
    let (cards, owners, streams) = tokio::join!(
        tokio::time::timeout(WITHIN, cards(nats)),
        tokio::time::timeout(WITHIN, owners(nats, partitions)),
        tokio::time::timeout(WITHIN, streams(nats, partitions)),
    );
    let cards: Vec<(Card, Option<u64>)> = take(&mut errors, "nodes", cards).unwrap_or_default();
    let owners: Vec<Option<String>> =
        take(&mut errors, "leases", owners).unwrap_or_else(|| vec![None; partitions as usize]);
    let mut streams: Vec<PartitionStatus> = take(&mut errors, "streams", streams).unwrap_or_default();
    let nodes = cards
        .into_iter()
        .map(|(card, card_age_ms)| {
            let owns = owners.iter().filter(|o| o.as_deref() == Some(card.node.as_str())).count();
            NodeStatus { card, owns, card_age_ms }
        })
        .collect();
    let unowned = (0..partitions).filter(|p| owners.get(*p as usize).is_none_or(Option::is_none)).collect();
    for s in &mut streams {
        s.owner = owners.get(s.partition as usize).cloned().flatten();
    }
    Status { node: me.to_string(), partitions, nodes, unowned, streams, errors }
}

/// A part's value, or why it is missing (noted in `errors`).
fn take<T>(
    errors: &mut Vec<String>,
    what: &str,
    r: Result<Result<T, String>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match r {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            errors.push(format!("{what}: {e}"));
            None
        }
        Err(_) => {
            errors.push(format!("{what}: no answer within {WITHIN:?}"));
            None
        }
    }
}

async fn cards(nats: &Nats) -> Result<Vec<(Card, Option<u64>)>, String> {
    let keys: Vec<String> =
        nats.nodes.keys().await.map_err(|e| e.to_string())?.try_collect().await.map_err(|e| e.to_string())?;
    let now = time_now();
    let mut out: Vec<(Card, Option<u64>)> = futures_util::stream::iter(keys)
        .map(|k| async move {
            let entry = nats.nodes.entry(&k).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(entry.map(|e| {
                let card = serde_json::from_slice::<Card>(&e.value)
                    .ok()
                    .filter(|c| c.node == k)
                    .unwrap_or_else(|| Card { node: k.clone(), ..Card::default() });
                let age = now.and_then(|n| u64::try_from((n - e.created.unix_timestamp_nanos()) / 1_000_000).ok());
                (card, age)
            }))
        })
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|c| async move { Ok(c) })
        .try_collect()
        .await?;
    out.sort_by(|a, b| a.0.node.cmp(&b.0.node));
    Ok(out)
}

/// Now, in nanoseconds since the epoch (the unit of a KV entry's time).
fn time_now() -> Option<i128> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    i128::try_from(since.as_nanos()).ok()
}

async fn owners(nats: &Nats, partitions: u32) -> Result<Vec<Option<String>>, String> {
    let got: Vec<(u32, Option<String>)> = futures_util::stream::iter(0..partitions)
        .map(|p| async move {
            let v = nats.owners.get(lease_key(p)).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((p, v.map(|b| String::from_utf8_lossy(&b).into_owned())))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = vec![None; partitions as usize];
    for (p, owner) in got {
        out[p as usize] = owner;
    }
    Ok(out)
}

async fn streams(nats: &Nats, partitions: u32) -> Result<Vec<PartitionStatus>, String> {
    let mut out: Vec<PartitionStatus> = futures_util::stream::iter(0..partitions)
        .map(|p| async move {
            let stream = nats.js.get_stream(stream_name(p)).await.map_err(|e| format!("{}: {e}", stream_name(p)))?;
            let info = stream.cached_info();
            let cluster = info.cluster.as_ref();
            Ok::<_, String>(PartitionStatus {
                partition: p,
                owner: None,
                messages: info.state.messages,
                bytes: info.state.bytes,
                last_seq: info.state.last_sequence,
                leader: cluster.and_then(|c| c.leader.clone()),
                replicas: cluster
                    .map(|c| {
                        c.replicas
                            .iter()
                            .map(|r| Replica {
                                server: r.name.clone(),
                                current: r.current,
                                offline: r.offline,
                                lag: r.lag.unwrap_or(0),
                                active_ms: u64::try_from(r.active.as_millis()).unwrap_or(u64::MAX),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    out.sort_by_key(|s| s.partition);
    Ok(out)
}
