//! The NATS side of a cluster: connecting, checking that JetStream is there,
//! and creating (or checking) the streams and buckets every node shares.
//!
//! - `CONFAB_P<p>`: partition `p`'s log (`confab.p<p>.log`) and its effects
//!   for other partitions (`confab.p<p>.fx.<q>`); file storage, `replicas`
//!   copies, atomic batches allowed, nothing ever expires.
//! - KV `confab_cluster`: facts fixed when the cluster was created (the
//!   partition count) or by its first node to need them (the VAPID key
//!   pair every node signs Web Push with).
//! - KV `confab_owners`: one lease per partition (`p<p>` → node id), expiring
//!   after the lease TTL unless renewed.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::setup::ClusterError;

/// Where partition `p`'s records go.
pub fn log_subject(p: u32) -> String {
    format!("confab.p{p}.log")
}

/// Where partition `p`'s effects for partition `q` go.
pub fn effects_subject(p: u32, q: u32) -> String {
    format!("confab.p{p}.fx.{q}")
}

/// Partition `p`'s stream.
pub fn stream_name(p: u32) -> String {
    format!("CONFAB_P{p}")
}

/// Where the owner of `p` answers forwarded operations.
pub fn rpc_subject(p: u32) -> String {
    format!("confab.rpc.p{p}")
}

/// The lease key of `p`.
pub fn lease_key(p: u32) -> String {
    format!("p{p}")
}

/// The bucket of partition leases.
pub const OWNERS: &str = "confab_owners";
/// The bucket of cluster-wide facts.
pub const CLUSTER: &str = "confab_cluster";
/// The bucket of live nodes (`<node id>` → its card, JSON: addresses,
/// load, partitions, draining; see `nodes.rs`), each refreshed every round
/// and expiring after the lease TTL.
pub const NODES: &str = "confab_nodes";

/// A connection with JetStream, and the shared buckets.
#[derive(Clone)]
pub struct Nats {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// The partition leases.
    pub owners: kv::Store,
    /// The live nodes.
    pub nodes: kv::Store,
    /// Cluster-wide facts.
    pub facts: kv::Store,
}

/// Connects to `urls` (comma-separated), waiting at most `within` for a
/// first connection, and checks JetStream and the cluster's layout.
pub async fn connect(
    urls: &str,
    node_id: &str,
    partitions: u32,
    replicas: usize,
    lease_ttl: Duration,
    within: Duration,
) -> Result<Nats, ClusterError> {
    let options = async_nats::ConnectOptions::new()
        .name(format!("confabd-{node_id}"))
        .connection_timeout(within.min(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)))
        .retry_on_initial_connect();
    let servers: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|u| u.parse().map_err(|e| ClusterError::Config(format!("--cluster: {u:?} is not a NATS URL: {e}"))))
        .collect::<Result<_, _>>()?;
    let client = options.connect(addrs);
    let client = tokio::time::timeout(within, client)
        .await
        .map_err(|_| ClusterError::Unreachable(format!("no NATS server at {urls} answered within {within:?}")))?
        .map_err(|e| ClusterError::Unreachable(format!("{urls}: {e}")))?;
    // A first real round trip: retry_on_initial_connect returns at once.
    tokio::time::timeout(within, client.flush())
        .await
        .map_err(|_| ClusterError::Unreachable(format!("no NATS server at {urls} answered within {within:?}")))?
        .map_err(|e| ClusterError::Unreachable(format!("{urls}: {e}")))?;
    let js = jetstream::new(client.clone());
    // A NATS cluster that has just started answers before JetStream has
    // elected its leaders: what fails for a reason that may pass is tried
    // again until `within`; a wrong layout fails at once.
    let deadline = tokio::time::Instant::now() + within;
    let (owners, nodes, facts) = loop {
        match layout(&js, urls, partitions, replicas, lease_ttl).await {
            Ok(buckets) => break buckets,
            Err(e @ ClusterError::Layout(_)) => return Err(e),
            Err(e) if tokio::time::Instant::now() + Duration::from_millis(500) < deadline => {
                tracing::info!(error = %e, "JetStream is not ready yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    Ok(Nats { client, js, owners, nodes, facts })
}

/// Checks JetStream and the partition count, and creates (or finds) the
/// streams and buckets: the live-node and lease buckets.
async fn layout(
    js: &jetstream::Context,
    urls: &str,
    partitions: u32,
    replicas: usize,
    lease_ttl: Duration,
) -> Result<(kv::Store, kv::Store, kv::Store), ClusterError> {
    js.query_account().await.map_err(|e| {
        ClusterError::Config(format!("JetStream is not available on {urls} (start nats-server with -js): {e}"))
    })?;
    let facts = check_partitions(js, partitions, replicas).await?;
    for p in 0..partitions {
        ensure_stream(js, p, partitions, replicas).await?;
    }
    let owners = ensure_bucket(js, OWNERS, lease_ttl, replicas).await?;
    let nodes = ensure_bucket(js, NODES, lease_ttl, replicas).await?;
    Ok((owners, nodes, facts))
}

/// The partition count is fixed when the cluster is created: the first
/// node writes it, every later node must agree. Returns the facts bucket.
async fn check_partitions(
    js: &jetstream::Context,
    partitions: u32,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    let facts = ensure_bucket(js, CLUSTER, Duration::ZERO, replicas).await?;
    let mine = partitions.to_string();
    match facts.create("partitions", mine.clone().into()).await {
        Ok(_) => Ok(facts),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            // A get may be answered by a replica that has not seen the
            // value yet: only a value read counts, and none is a reason to
            // try again, not a different layout.
            let theirs = facts
                .get("partitions")
                .await
                .map_err(|e| ClusterError::Nats(format!("reading the partition count: {e}")))?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .ok_or_else(|| ClusterError::Nats("the partition count is not readable yet".into()))?;
            if theirs == mine {
                Ok(facts)
            } else {
                Err(ClusterError::Layout(format!(
                    "this cluster has {theirs} partitions; this node was started with --partitions {partitions}"
                )))
            }
        }
        // A timeout or no stream leader yet: whether it was written is
        // found out by trying again.
        Err(e) => Err(ClusterError::Nats(format!("recording the partition count: {e}"))),
    }
}

/// The cluster's value of fact `key`: `mine` if no node has written one
/// yet (it is written now), else the one written first. A read that finds
/// nothing yet (a replica behind) is tried again until `within`.
pub async fn shared_fact(
    facts: &kv::Store,
    key: &str,
    mine: Vec<u8>,
    within: Duration,
) -> Result<Vec<u8>, ClusterError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let outcome = match facts.create(key, mine.clone().into()).await {
            Ok(_) => return Ok(mine),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match facts.get(key).await {
                Ok(Some(v)) => return Ok(v.to_vec()),
                Ok(None) => format!("{key} is not readable yet"),
                Err(e) => format!("reading {key}: {e}"),
            },
            Err(e) => format!("recording {key}: {e}"),
        };
        if tokio::time::Instant::now() + Duration::from_millis(200) >= deadline {
            return Err(ClusterError::Nats(outcome));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ensure_stream(js: &jetstream::Context, p: u32, partitions: u32, replicas: usize) -> Result<(), ClusterError> {
    let mut subjects = vec![log_subject(p)];
    subjects.extend((0..partitions).filter(|q| *q != p).map(|q| effects_subject(p, q)));
    let config = stream::Config {
        name: stream_name(p),
        subjects,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_atomic_publish: true,
        allow_direct: true,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| ClusterError::Nats(format!("creating stream {}: {e}", stream_name(p))))?;
    Ok(())
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another node created it meanwhile.
        Err(_) => js.get_key_value(bucket).await.map_err(|e| ClusterError::Nats(format!("bucket {bucket}: {e}"))),
    }
}

/// The keys of a bucket, or `None` if they could not all be read within
/// `within` (a listing is a consumer that a NATS hiccup can leave waiting
/// for ever; callers conclude nothing from a failed one).
pub async fn keys_within(bucket: &kv::Store, within: Duration) -> Option<std::collections::HashSet<String>> {
    use futures_util::StreamExt;
    let list = async {
        let mut keys = bucket.keys().await.ok()?;
        let mut out = std::collections::HashSet::new();
        while let Some(k) = keys.next().await {
            out.insert(k.ok()?);
        }
        Some(out)
    };
    tokio::time::timeout(within, list).await.ok().flatten()
}
