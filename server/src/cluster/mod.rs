//! Cluster mode: several `confabd` nodes on NATS JetStream (see
//! docs/CLUSTER.md for the design and the failure table).
//!
//! Users and conversations hash into a fixed number of partitions; each
//! partition's log is a replicated JetStream stream, each has one owner at
//! a time (a lease in a KV bucket), and the owner's fjall is the view of
//! its log. This module puts that behind the same two seams as one node:
//! [`store::Cluster`] for the store and [`delivery::ClusterDelivery`] for
//! live events.
//!
//! ## Layout
//! - `nats`: connecting, streams and buckets, subject names.
//! - `log`: a partition's log (the writer's [`crate::store::Log`]):
//!   fenced appends, atomic batches with effects, catch-up.
//! - `partition`: a partition this node owns (takeover, effects, RPC).
//! - `owners`: the lease loop: renew, give back, take over.
//! - `rpc`: forwarded store operations, both sides.
//! - `store`: the store seam over the cluster.
//! - `delivery`: live events across nodes.
//! - `nodes`: each node's card (addresses, load, draining) for discovery.
//! - `status`: the operator's view (`/v1/cluster`).
//!
//! Its settings are [`crate::config::ClusterConfig`], its start errors
//! [`crate::setup::ClusterError`], its counters
//! [`crate::metrics::ClusterStats`]: the layers below read them.

pub mod delivery;
pub mod log;
pub mod nats;
pub mod nodes;
pub mod owners;
pub mod partition;
pub mod presence;
pub mod rpc;
pub mod status;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::delivery::Delivery;
use crate::metrics::ClusterStats;
use crate::setup::ClusterError;
use crate::store::{CommitHook, Db, Store, StoreSettings};

/// A node's part of the cluster, running.
pub struct ClusterNode {
    /// The store seam over the whole cluster.
    pub store: Arc<dyn Store>,
    /// Live events across nodes.
    pub delivery: Arc<dyn Delivery>,
    /// Discovery and the operator's view.
    pub view: Arc<ClusterView>,
    ctx: Arc<partition::Context>,
    stop: CancellationToken,
    owners: tokio::task::JoinHandle<()>,
}

/// What the HTTP side asks a cluster node: where clients should go, and
/// the cluster's state.
pub struct ClusterView {
    /// The nodes' cards.
    pub nodes: Arc<nodes::Nodes>,
    nats: nats::Nats,
    partitions: u32,
    /// The last status read (JSON) and when: `/v1/cluster` is public like
    /// the rest of the HTTP port, and one read asks NATS about every
    /// partition's stream.
    status: tokio::sync::Mutex<Option<(tokio::time::Instant, bytes::Bytes)>>,
}

/// How long a status read serves `/v1/cluster` requests.
pub const STATUS_MAX_AGE: Duration = Duration::from_secs(2);

impl ClusterView {
    /// The live nodes clients may be sent to, least loaded first (this
    /// node's load as of now).
    pub fn discover(&self) -> Vec<nodes::Card> {
        self.nodes.discover(self.nodes.own_now())
    }

    /// Nodes, owners and streams as JSON, read from NATS at most once per
    /// [`STATUS_MAX_AGE`] however many ask (one read at a time; those who
    /// ask meanwhile wait for it and share it).
    pub async fn status_json(&self) -> bytes::Bytes {
        let mut cached = self.status.lock().await;
        if let Some((at, json)) = cached.as_ref()
            && at.elapsed() < STATUS_MAX_AGE
        {
            return json.clone();
        }
        let status = status::read(&self.nats, self.nodes.me(), self.partitions).await;
        let json = bytes::Bytes::from(serde_json::to_vec(&status).unwrap_or_else(|e| {
            format!("{{\"error\": \"the status could not be written as JSON: {e}\"}}").into_bytes()
        }));
        *cached = Some((tokio::time::Instant::now(), json.clone()));
        json
    }
}

/// What a node brings to the cluster from its own process.
pub struct NodeParts {
    /// This node's fjall.
    pub db: Arc<Db>,
    /// This node's session table.
    pub sessions: Arc<dyn Delivery>,
    /// Called after each group commit.
    pub hook: CommitHook,
    /// The partitions' stores' settings.
    pub settings: StoreSettings,
    /// Counters for /metrics.
    pub stats: Arc<ClusterStats>,
    /// This node's presence table.
    pub presence: Arc<crate::presence::Presence>,
    /// Called when a partition has been taken over.
    pub on_takeover: Arc<dyn Fn() + Send + Sync>,
}

impl ClusterNode {
    /// Connects to NATS and checks (or creates) the cluster's layout: the
    /// first step of joining, before [`ClusterNode::start`].
    pub async fn connect(config: &ClusterConfig) -> Result<nats::Nats, ClusterError> {
        config.validate().map_err(ClusterError::Config)?;
        nats::connect(
            &config.nats,
            &config.node_id,
            config.partitions,
            config.replicas,
            Duration::from_millis(config.lease_ttl_ms),
            Duration::from_millis(config.connect_timeout_ms),
        )
        .await
    }

    /// Joins the cluster over `nats` (from [`ClusterNode::connect`]) and
    /// starts taking partitions.
    pub async fn start(
        config: &ClusterConfig,
        parts: NodeParts,
        nats: nats::Nats,
    ) -> Result<ClusterNode, ClusterError> {
        let NodeParts { db, sessions: local, hook, settings, stats, presence, on_takeover } = parts;
        stats.enabled.store(true, std::sync::atomic::Ordering::Relaxed);
        let ttl = Duration::from_millis(config.lease_ttl_ms);
        let stop = CancellationToken::new();
        let delivery = delivery::ClusterDelivery::start(
            nats.client.clone(),
            config.node_id.clone(),
            local,
            Arc::clone(&stats),
            stop.clone(),
        )
        .await
        .map_err(|e| ClusterError::Nats(format!("subscribing to live events: {e}")))?;
        let rpc = rpc::RpcClient::start(
            nats.client.clone(),
            Duration::from_millis(config.publish_timeout_ms),
            Arc::clone(&stats),
        )
        .await
        .map_err(|e| ClusterError::Nats(format!("subscribing to answers: {e}")))?;
        let owned: store::Owned = Arc::new(RwLock::new(HashMap::new()));
        let partitioning = config.partitioning();
        let max_reply_bytes = settings.max_reply_bytes;
        let cards = Arc::new(nodes::Nodes::new(&config.node_id, config.advertise_host.clone(), ttl));
        tokio::spawn(nodes::watch(Arc::clone(&cards), nats.nodes.clone(), stop.clone()));
        let ctx = Arc::new(partition::Context {
            nats,
            db: Arc::clone(&db),
            delivery: delivery.clone(),
            hook,
            settings,
            partitioning,
            node_id: config.node_id.clone(),
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            stats,
            on_takeover,
            nodes: Arc::clone(&cards),
        });
        let nats = ctx.nats.clone();
        let store: Arc<dyn Store> = Arc::new(store::Cluster(Arc::new(store::ClusterStore::new(
            partitioning,
            Arc::clone(&owned),
            rpc,
            db,
            max_reply_bytes,
        ))));
        // Presence before the first round: this node's live key (written
        // by the round) tells the others to ask it for a snapshot.
        presence::start(&nats, &config.node_id, presence, Arc::clone(&store), ttl / 3, stop.clone())
            .await
            .map_err(|e| ClusterError::Nats(format!("subscribing to presence: {e}")))?;
        let view = Arc::new(ClusterView {
            nodes: cards,
            nats: nats.clone(),
            partitions: config.partitions,
            status: tokio::sync::Mutex::new(None),
        });
        let owners = tokio::spawn(owners::run(Arc::clone(&ctx), owned, ttl, config.max_moves, stop.clone()));
        tracing::info!(node = %config.node_id, partitions = config.partitions, nats = %config.nats, "joined the cluster");
        Ok(ClusterNode { store, delivery, view, ctx, stop, owners })
    }

    /// From now on this node sends clients elsewhere: its card says so
    /// at once (other nodes' `/v1/discover` leave it out), before its
    /// sessions are told to go.
    pub async fn drain(&self) {
        self.view.nodes.set_draining();
        let owned = self.ctx.stats.partitions_owned.load(std::sync::atomic::Ordering::Relaxed);
        let publish = owners::publish_card(&self.ctx, usize::try_from(owned).unwrap_or(usize::MAX));
        if tokio::time::timeout(Duration::from_secs(1), publish).await.is_err() {
            tracing::warn!("could not tell the cluster this node drains within 1 s");
        }
    }

    /// Leaves the cluster: gives every partition back (after finishing
    /// what their writers have queued).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.owners.await;
    }
}

/// The fact under which the cluster keeps its VAPID key pair (PEM).
const VAPID_FACT: &str = "vapid.pem";

/// Makes the VAPID key at `path` the cluster's: a browser subscribes with
/// the public key of the node it is connected to, and the push is signed by
/// whichever node owns the user's partition, so every node must sign with
/// the same key or push services refuse the pushes. The first node to get
/// here publishes its key (generated now if it has none); the others adopt
/// it, replacing their own file — unless the operator gave the key
/// (`explicit`, `--vapid-key`), which must then be the cluster's.
pub async fn share_vapid_key(
    facts: &async_nats::jetstream::kv::Store,
    path: &std::path::Path,
    explicit: bool,
    within: Duration,
) -> Result<(), crate::setup::SetupError> {
    use crate::setup::SetupError;
    if !path.exists() && !explicit {
        if let Some(dir) = path.parent() {
            crate::setup::create_private_dir(dir)?;
        }
        crate::push::webpush::Vapid::load_or_generate(path, "", &ring::rand::SystemRandom::new())?;
    }
    let mine = std::fs::read(path).map_err(SetupError::file("reading the VAPID key", path))?;
    let theirs = nats::shared_fact(facts, VAPID_FACT, mine.clone(), within).await?;
    let normal = |pem: &[u8]| String::from_utf8_lossy(pem).replace('\r', "").trim().to_string();
    if normal(&theirs) == normal(&mine) {
        return Ok(());
    }
    if explicit {
        return Err(ClusterError::Config(format!(
            "--vapid-key {} is not the cluster's VAPID key: a browser subscribed through one node would have \
             its pushes refused when another node signs them. Give every node the same key file, or none \
             (the cluster then shares the one its first node made)",
            path.display()
        ))
        .into());
    }
    // Replace the file whole: a crash leaves the old key or the new one.
    let staged = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&staged);
    crate::setup::write_private(&staged, &theirs)?;
    std::fs::rename(&staged, path).map_err(SetupError::file("replacing the VAPID key", path))?;
    tracing::info!(path = %path.display(), "adopted the cluster's VAPID key (every node signs Web Push with one key)");
    Ok(())
}
