//! The cluster's nodes as clients and operators see them. Each node keeps
//! a card in the `confab_nodes` bucket — where it listens, how loaded it
//! is, whether it is draining — rewritten every lease round (the same key
//! says the node is alive: it expires after the lease TTL). Every node
//! watches the bucket, so `/v1/discover` on any node lists the live nodes
//! least loaded first, and a draining node drops out of the list at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How loaded a node is, as it reports itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Load {
    /// Live sessions.
    pub sessions: u64,
    /// Connections it may still accept (of `connections_max`).
    pub connections_free: u64,
    /// Connections it accepts at most.
    pub connections_max: u64,
    /// Its process's CPU over the last round, as a share of the machine
    /// (0 to 1).
    pub cpu: f64,
    /// Bytes delivered to its sessions and not yet written out: a node
    /// whose clients or network cannot keep up builds a backlog here.
    pub queued_bytes: u64,
}

/// An outbound backlog this large counts as a full node
/// ([`Load::busy`]): 256 MiB is, at the default 8 MiB per session, 32
/// sessions about to be cut off, or thousands of sessions each behind by
/// tens of kilobytes.
pub const BACKLOG_FULL: u64 = 256 * 1024 * 1024;

impl Load {
    /// 0 (idle) to 1 (full): the largest of the share of connections in
    /// use, the CPU, and the outbound backlog against [`BACKLOG_FULL`].
    pub fn busy(&self) -> f64 {
        let used = if self.connections_max == 0 {
            0.0
        } else {
            1.0 - self.connections_free.min(self.connections_max) as f64 / self.connections_max as f64
        };
        let backlog = self.queued_bytes.min(BACKLOG_FULL) as f64 / BACKLOG_FULL as f64;
        used.max(self.cpu.clamp(0.0, 1.0)).max(backlog)
    }
}

/// One node's card, as stored in the bucket (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Card {
    /// The card's version: 1 (0: a node too old to write one).
    pub v: u32,
    /// Its node id.
    pub node: String,
    /// QUIC `host:port`, if it serves QUIC.
    pub quic: Option<String>,
    /// TCP+TLS `host:port`, if it serves TCP.
    pub tcp: Option<String>,
    /// HTTP `host:port` (the WebSocket bridge and discovery), if enabled.
    pub http: Option<String>,
    /// Whether HTTP is behind TLS (`wss://`).
    pub http_tls: bool,
    /// Its certificate's fingerprint (hex).
    pub fingerprint: String,
    /// Its load.
    pub load: Load,
    /// Partitions it owns.
    pub partitions: usize,
    /// It is shutting down: send nobody there.
    pub draining: bool,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
}

/// Where this node listens, as bound.
#[derive(Debug, Clone, Default)]
pub struct Listening {
    /// QUIC.
    pub quic: Option<SocketAddr>,
    /// TCP+TLS.
    pub tcp: Option<SocketAddr>,
    /// HTTP.
    pub http: Option<SocketAddr>,
    /// Whether HTTP is behind TLS.
    pub http_tls: bool,
    /// Certificate fingerprint (hex).
    pub fingerprint: String,
}

/// Reads this node's load (sessions and connections; the CPU is measured
/// here).
pub type LoadSource = Arc<dyn Fn() -> Load + Send + Sync>;

/// A card seen in the bucket, and when.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The card.
    pub card: Card,
    /// When this node last read it.
    pub at: Instant,
}

struct Own {
    listening: Listening,
    load: Option<LoadSource>,
    draining: bool,
    cpu: Option<(Instant, f64)>,
    last_cpu: f64,
    partitions: usize,
}

/// The cards of the cluster's nodes, this one's included.
pub struct Nodes {
    me: String,
    advertise_host: Option<String>,
    ttl: Duration,
    started_ms: i64,
    own: Mutex<Own>,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Nodes {
    /// This node's card keeper; cards not rewritten within `ttl` count as
    /// gone.
    pub fn new(me: &str, advertise_host: Option<String>, ttl: Duration) -> Nodes {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Nodes {
            me: me.to_string(),
            advertise_host,
            ttl,
            started_ms,
            own: Mutex::new(Own {
                listening: Listening::default(),
                load: None,
                draining: false,
                cpu: None,
                last_cpu: 0.0,
                partitions: 0,
            }),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Where this node listens (known once the listeners are bound).
    pub fn set_listening(&self, listening: Listening) {
        let wildcard =
            [listening.quic, listening.tcp, listening.http].into_iter().flatten().any(|a| a.ip().is_unspecified());
        if wildcard && self.advertise_host.is_none() {
            tracing::warn!(
                "this node listens on a wildcard address and has no cluster.advertise_host: \
                 other nodes cannot send clients here through /v1/discover"
            );
        }
        self.lock_own().listening = listening;
    }

    /// How to read this node's load.
    pub fn set_load(&self, load: LoadSource) {
        self.lock_own().load = Some(load);
    }

    /// From now on this node tells clients to go elsewhere.
    pub fn set_draining(&self) {
        self.lock_own().draining = true;
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.lock_own().draining
    }

    fn lock_own(&self) -> std::sync::MutexGuard<'_, Own> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self, addr: SocketAddr) -> String {
        match &self.advertise_host {
            Some(h) if addr.ip().is_unspecified() => {
                if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]:{}", addr.port())
                } else {
                    format!("{h}:{}", addr.port())
                }
            }
            _ => addr.to_string(),
        }
    }

    /// This node's card for the bucket: its CPU measured since the last
    /// call (once per lease round).
    pub fn card(&self, partitions: usize) -> Card {
        let mut own = self.lock_own();
        if let Some(now) = crate::metrics::process_cpu_seconds() {
            let at = Instant::now();
            if let Some((then, before)) = own.cpu {
                let wall = at.duration_since(then).as_secs_f64();
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
                if wall > 0.05 {
                    own.last_cpu = ((now - before) / (wall * cores)).clamp(0.0, 1.0);
                }
            }
            own.cpu = Some((at, now));
        }
        own.partitions = partitions;
        self.build(&own)
    }

    /// This node's card as of now: sessions and connections read now, the
    /// CPU of the last round.
    pub fn own_now(&self) -> Card {
        self.build(&self.lock_own())
    }

    fn build(&self, own: &Own) -> Card {
        let mut load = own.load.as_ref().map(|f| f()).unwrap_or_default();
        load.cpu = own.last_cpu;
        let l = &own.listening;
        Card {
            v: 1,
            node: self.me.clone(),
            quic: l.quic.map(|a| self.name(a)),
            tcp: l.tcp.map(|a| self.name(a)),
            http: l.http.map(|a| self.name(a)),
            http_tls: l.http_tls,
            fingerprint: l.fingerprint.clone(),
            load,
            partitions: own.partitions,
            draining: own.draining,
            started_ms: self.started_ms,
        }
    }

    /// A card read from the bucket (or this node's own, just written).
    pub fn saw(&self, card: Card) {
        self.lock_seen().insert(card.node.clone(), Seen { card, at: Instant::now() });
    }

    /// A node's key was deleted (it left).
    pub fn gone(&self, node: &str) {
        self.lock_seen().remove(node);
    }

    /// The live nodes' cards (rewritten within the TTL), by node id.
    pub fn live(&self) -> Vec<Seen> {
        self.live_at(Instant::now())
    }

    fn live_at(&self, now: Instant) -> Vec<Seen> {
        let ttl = self.ttl;
        let mut seen = self.lock_seen();
        seen.retain(|_, s| now.saturating_duration_since(s.at) < ttl);
        let mut out: Vec<Seen> = seen.values().cloned().collect();
        out.sort_by(|a, b| a.card.node.cmp(&b.card.node));
        out
    }

    /// Where clients should connect: the live nodes that are not draining
    /// and can be named, least loaded first (then fewest sessions, then
    /// node id). `own` is this node's card as of now; the HTTP handler
    /// names its wildcard addresses by the host the client asked for.
    pub fn discover(&self, own: Card) -> Vec<Card> {
        let mut cards: Vec<Card> =
            self.live().into_iter().map(|s| s.card).filter(|c| c.node != self.me).chain([own]).collect();
        cards.retain(|c| !c.draining && (c.node == self.me || nameable(c)));
        cards.sort_by(|a, b| {
            a.load
                .busy()
                .total_cmp(&b.load.busy())
                .then(a.load.sessions.cmp(&b.load.sessions))
                .then(a.node.cmp(&b.node))
        });
        cards
    }
}

/// Whether another node's card names addresses a client can reach (not a
/// wildcard bind without an advertised host).
fn nameable(card: &Card) -> bool {
    let addrs: Vec<&String> = [&card.quic, &card.tcp, &card.http].into_iter().flatten().collect();
    !addrs.is_empty() && addrs.iter().all(|a| a.parse::<SocketAddr>().map_or(true, |s| !s.ip().is_unspecified()))
}

/// Follows the bucket: every card written, every node leaving. Re-watches
/// when the watch ends (NATS reconnects).
pub async fn watch(nodes: Arc<Nodes>, bucket: kv::Store, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match bucket.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = tokio::select! {
                    _ = stop.cancelled() => None,
                    e = watch.next() => e,
                } {
                    match entry {
                        Ok(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => nodes.gone(&e.key),
                        Ok(e) => match serde_json::from_slice::<Card>(&e.value) {
                            Ok(card) if card.node == e.key => nodes.saw(card),
                            // A node of an older version (its value was a
                            // partition count): alive, but not named.
                            _ => nodes.saw(Card { node: e.key.clone(), ..Card::default() }),
                        },
                        Err(e) => {
                            tracing::debug!(error = %e, "watching nodes");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "watching nodes"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(node: &str, sessions: u64, free: u64, cpu: f64) -> Card {
        Card {
            node: node.into(),
            tcp: Some("10.0.0.1:7443".into()),
            load: Load { sessions, connections_free: free, connections_max: 1000, cpu, queued_bytes: 0 },
            ..Card::default()
        }
    }

    #[test]
    fn busy_is_the_larger_of_connections_and_cpu() {
        assert_eq!(card("a", 0, 1000, 0.0).load.busy(), 0.0);
        assert_eq!(card("a", 500, 500, 0.2).load.busy(), 0.5);
        assert_eq!(card("a", 10, 990, 0.9).load.busy(), 0.9);
        assert_eq!(Load::default().busy(), 0.0);
    }

    #[test]
    fn an_outbound_backlog_makes_a_node_busy() {
        let backlogged = |queued_bytes| Load { queued_bytes, ..card("a", 10, 990, 0.1).load };
        assert_eq!(backlogged(0).busy(), 0.1);
        assert_eq!(backlogged(BACKLOG_FULL / 2).busy(), 0.5);
        assert_eq!(backlogged(BACKLOG_FULL * 4).busy(), 1.0);
        // Between two nodes alike but for the backlog, discovery prefers
        // the one that keeps up.
        let nodes = Nodes::new("me", None, Duration::from_secs(10));
        nodes.saw(Card { load: backlogged(BACKLOG_FULL / 2), ..card("behind", 10, 990, 0.1) });
        nodes.saw(card("keeping-up", 10, 990, 0.1));
        let list: Vec<String> = nodes.discover(card("me", 900, 100, 0.9)).into_iter().map(|c| c.node).collect();
        assert_eq!(list.first().map(String::as_str), Some("keeping-up"), "{list:?}");
    }

    #[test]
    fn discover_orders_by_load_and_leaves_out_draining_and_unnamed_nodes() {
        let nodes = Nodes::new("me", None, Duration::from_secs(10));
        nodes.saw(card("busy", 900, 100, 0.1));
        nodes.saw(card("idle", 1, 999, 0.0));
        nodes.saw(Card { draining: true, ..card("leaving", 0, 1000, 0.0) });
        nodes.saw(Card { tcp: Some("0.0.0.0:7443".into()), ..card("wild", 0, 1000, 0.0) });
        nodes.saw(Card { node: "old".into(), ..Card::default() });
        let list: Vec<String> = nodes.discover(card("me", 300, 700, 0.05)).into_iter().map(|c| c.node).collect();
        assert_eq!(list, ["idle", "me", "busy"]);
    }

    #[test]
    fn a_card_not_rewritten_within_the_ttl_is_gone() {
        let nodes = Nodes::new("me", None, Duration::from_secs(10));
        nodes.saw(card("other", 0, 1000, 0.0));
        assert_eq!(nodes.live().len(), 1);
        assert!(nodes.live_at(Instant::now() + Duration::from_secs(11)).is_empty());
    }

    #[test]
    fn a_wildcard_bind_is_named_by_the_advertised_host() {
        let nodes = Nodes::new("me", Some("chat-1.example".into()), Duration::from_secs(10));
        nodes.set_listening(Listening { tcp: Some("0.0.0.0:7443".parse().unwrap()), ..Listening::default() });
        assert_eq!(nodes.card(0).tcp.as_deref(), Some("chat-1.example:7443"));
    }
}
