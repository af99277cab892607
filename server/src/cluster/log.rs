//! A partition's replicated log: JetStream stream `CONFAB_P<p>`.
//!
//! Only the partition's owner appends, and every append carries
//! `Nats-Expected-Last-Sequence`: the stream's last sequence as the owner
//! knows it. A record is one group commit; when the group has effects for
//! other partitions they go in the same atomic batch (ADR-50) on
//! `confab.p<p>.fx.<q>`, so they are stored exactly when the record is.
//! A refused expected sequence means another node appended: this one is
//! fenced out.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message as _;

use super::nats::{Nats, effects_subject, log_subject, stream_name};
use crate::metrics::ClusterStats;
use crate::store::records::{EffectBatch, EffectRecord, LogRecord, LogWrite};
use crate::store::{Db, Log, LogError};

/// Why a publish did not land.
#[derive(Debug)]
enum Refused {
    /// The expected sequence was wrong: another node appended.
    WrongSequence(String),
    /// Anything else (timeouts, no stream leader …): maybe written.
    Other(String),
}

/// Records replayed into one batch at most.
const REPLAY_BATCH: usize = 512;
/// Bytes of records replayed into one batch at most.
const REPLAY_BATCH_BYTES: usize = 8 << 20;

/// One partition's log, as its owner appends to it.
pub struct PartitionLog {
    partition: u32,
    nats: Nats,
    runtime: tokio::runtime::Handle,
    /// The stream's last sequence as this owner knows it.
    last: Mutex<u64>,
    /// Where this node's own takeover record is, once appended: a later
    /// takeover record read back means another node owns the partition.
    took_over_at: Mutex<Option<u64>>,
    timeout: Duration,
    stats: Arc<ClusterStats>,
}

impl PartitionLog {
    /// The log of `partition`, appended to from `runtime`.
    pub fn new(
        partition: u32,
        nats: Nats,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
        stats: Arc<ClusterStats>,
    ) -> PartitionLog {
        PartitionLog { partition, nats, runtime, last: Mutex::new(0), took_over_at: Mutex::new(None), timeout, stats }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, u64> {
        // One integer: a poisoned lock still holds a consistent value.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replays every record after what `db` has applied, up to the
    /// stream's end, and remembers that end as the expected sequence.
    /// After this node's own takeover, a later takeover record means it was
    /// fenced out: [`LogError::Fenced`], and the expected sequence stays
    /// stale so no append of this node can land.
    pub async fn catch_up(&self, db: &Db) -> Result<u64, LogError> {
        let unknown = |what: &str, e: &dyn std::fmt::Display| LogError::Unknown(format!("{what}: {e}"));
        let started = std::time::Instant::now();
        let mut stream =
            self.nats.js.get_stream(stream_name(self.partition)).await.map_err(|e| unknown("stream", &e))?;
        let end = stream.info().await.map_err(|e| unknown("stream info", &e))?.state.last_sequence;
        // The last record up to `end`, as the stream's leader knows it. The
        // replay's consumer is an R1 consumer that JetStream places on any
        // of the stream's replicas, and a replica may lag behind the leader:
        // the consumer's pending count (counted there) can fall short of
        // what the leader acknowledged, so the replay runs until this
        // record is applied instead. Read after `end`, so every record at
        // or before `end` is at or before it.
        let last_record = match stream.get_last_raw_message_by_subject(&log_subject(self.partition)).await {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
            Err(e) => return Err(unknown("the log's last record", &e)),
        };
        let replay_to = last_record.min(end);
        let applied = db.applied(self.partition).map_err(|e| unknown("reading the applied position", &e))?;
        let mut replayed = 0u64;
        if applied < replay_to {
            // One ordered consumer streams the records (not a request per
            // record), and they are applied many to a batch (one sync per
            // batch, the applied position in each).
            let config = pull::OrderedConfig {
                filter_subject: log_subject(self.partition),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: applied + 1 },
                ..Default::default()
            };
            let consumer = stream.create_consumer(config).await.map_err(|e| unknown("replay consumer", &e))?;
            let mut messages = consumer.messages().await.map_err(|e| unknown("replaying", &e))?;
            let mut batch: Vec<(u64, Bytes)> = Vec::new();
            let mut batch_bytes = 0usize;
            let wait = self.timeout.max(Duration::from_secs(5));
            loop {
                let msg = match tokio::time::timeout(wait, messages.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return Err(unknown("reading the log", &e)),
                    Ok(None) => return Err(unknown("reading the log", &"the consumer ended")),
                    Err(_) => return Err(unknown("reading the log", &"no record within the timeout")),
                };
                let sequence = msg.info().map_err(|e| unknown("a record's position", &e))?.stream_sequence;
                if sequence > replay_to {
                    // Not a record the leader had when `end` was read
                    // (its record at `replay_to` was deleted?): the view
                    // cannot be shown complete.
                    return Err(unknown("reading the log", &format!("record {replay_to} was skipped")));
                }
                let took_over_at = *self.took_over_at.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(mine) = took_over_at
                    && sequence > mine
                {
                    let record =
                        LogRecord::decode(msg.payload.clone()).map_err(|e| unknown("decoding a record", &e))?;
                    if !record.takeover_by.is_empty() {
                        return Err(LogError::Fenced(format!("{} took the partition over", record.takeover_by)));
                    }
                }
                batch_bytes += msg.payload.len();
                batch.push((sequence, msg.payload.clone()));
                if batch.len() >= REPLAY_BATCH || batch_bytes >= REPLAY_BATCH_BYTES {
                    replayed += self.apply_replayed(db, &mut batch)?;
                    batch_bytes = 0;
                }
                if sequence == replay_to {
                    break;
                }
            }
            replayed += self.apply_replayed(db, &mut batch)?;
        }
        db.set_applied(self.partition, end).map_err(|e| unknown("recording the applied position", &e))?;
        *self.last() = end;
        if replayed > 0 {
            let took_ms = started.elapsed().as_millis() as u64;
            tracing::info!(partition = self.partition, replayed, end, took_ms, "caught up with the partition's log");
        }
        Ok(end)
    }

    /// Applies and clears `batch`; returns how many records it held.
    fn apply_replayed(&self, db: &Db, batch: &mut Vec<(u64, Bytes)>) -> Result<u64, LogError> {
        if batch.is_empty() {
            return Ok(0);
        }
        db.apply_log_records(self.partition, batch).map_err(|e| LogError::Unknown(format!("applying records: {e}")))?;
        let n = batch.len() as u64;
        self.stats.replayed.fetch_add(n, Relaxed);
        batch.clear();
        Ok(n)
    }

    /// Appends the takeover record that fences out any earlier owner.
    pub async fn append_takeover(&self, node_id: &str) -> Result<u64, LogError> {
        let record = LogRecord { writes: Vec::new(), takeover_by: node_id.to_string() }.encode_to_vec();
        let position = self.append_async(record, BTreeMap::new()).await?;
        *self.took_over_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(position);
        Ok(position)
    }

    async fn append_async(&self, record: Vec<u8>, effects: BTreeMap<u32, Vec<EffectRecord>>) -> Result<u64, LogError> {
        let expected = *self.last();
        let published = tokio::time::timeout(self.timeout, self.publish(record, effects, expected)).await;
        match published {
            Ok(Ok(position)) => {
                *self.last() = position;
                Ok(position)
            }
            Ok(Err(Refused::WrongSequence(why))) => {
                self.stats.fenced.fetch_add(1, Relaxed);
                Err(LogError::Fenced(why))
            }
            Ok(Err(Refused::Other(why))) => {
                self.stats.unknown.fetch_add(1, Relaxed);
                Err(LogError::Unknown(why))
            }
            Err(_) => {
                self.stats.unknown.fetch_add(1, Relaxed);
                Err(LogError::Unknown(format!("no answer from JetStream within {:?}", self.timeout)))
            }
        }
    }

    async fn publish(
        &self,
        record: Vec<u8>,
        effects: BTreeMap<u32, Vec<EffectRecord>>,
        expected: u64,
    ) -> Result<u64, Refused> {
        let p = self.partition;
        if effects.is_empty() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
            let ack = self
                .nats
                .js
                .publish_with_headers(log_subject(p), headers, record.into())
                .await
                .map_err(|e| Refused::Other(e.to_string()))?
                .await;
            return match ack {
                Ok(ack) => Ok(ack.sequence),
                Err(e) if e.kind() == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence => {
                    Err(Refused::WrongSequence(e.to_string()))
                }
                Err(e) => Err(Refused::Other(e.to_string())),
            };
        }
        // An atomic batch: the record first (with the expected sequence,
        // acknowledged on arrival), the effects after it, the last one
        // committing the batch.
        let mut messages: Vec<(String, Bytes)> = vec![(log_subject(p), record.into())];
        for (q, list) in effects {
            messages.push((effects_subject(p, q), EffectBatch { effects: list }.encode_to_vec().into()));
        }
        let id = batch_id();
        let n = messages.len();
        for (i, (subject, payload)) in messages.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", id.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            if i == 0 {
                headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
            }
            if i + 1 == n {
                headers.insert("Nats-Batch-Commit", "1");
            }
            if i == 0 || i + 1 == n {
                let reply = self
                    .nats
                    .client
                    .request_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| Refused::Other(e.to_string()))?;
                if let Some(err) = api_error(&reply.payload) {
                    return Err(err);
                }
                if i + 1 == n {
                    let ack: BatchAck = serde_json::from_slice(&reply.payload)
                        .map_err(|e| Refused::Other(format!("unreadable batch ack: {e}")))?;
                    if ack.batch != id || ack.count != n as u64 {
                        return Err(Refused::Other(format!("the batch ack names {} of {}", ack.batch, ack.count)));
                    }
                    return Ok(ack.seq);
                }
            } else {
                self.nats
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| Refused::Other(e.to_string()))?;
            }
        }
        Err(Refused::Other("an empty batch".into()))
    }
}

/// The JetStream error in an API reply, if it is one.
fn api_error(payload: &[u8]) -> Option<Refused> {
    if payload.is_empty() {
        return None;
    }
    let reply: ApiReply = serde_json::from_slice(payload).ok()?;
    let e = reply.error?;
    let description = e.description.unwrap_or_default();
    // 10071: wrong last sequence.
    if e.err_code == Some(10071) || description.contains("wrong last sequence") {
        Some(Refused::WrongSequence(description))
    } else {
        Some(Refused::Other(format!("JetStream refused the batch: {description}")))
    }
}

#[derive(serde::Deserialize)]
struct ApiReply {
    error: Option<ApiErrorBody>,
}

#[derive(serde::Deserialize)]
struct ApiErrorBody {
    err_code: Option<u64>,
    description: Option<String>,
}

#[derive(serde::Deserialize)]
struct BatchAck {
    seq: u64,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    count: u64,
}

fn batch_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

impl Log for PartitionLog {
    fn append(&self, writes: Vec<LogWrite>, effects: BTreeMap<u32, Vec<EffectRecord>>) -> Result<u64, LogError> {
        let record = LogRecord { writes, takeover_by: String::new() }.encode_to_vec();
        self.runtime.block_on(self.append_async(record, effects))
    }

    fn resolve(&self, db: &Db) -> Result<(), LogError> {
        self.runtime.block_on(self.catch_up(db)).map(|_| ())
    }
}
