//! Presence across nodes. Each node keeps the presence table of its own
//! sessions ([`crate::presence::Presence`]) and announces its view of each
//! user (online, away, or offline once the grace period is over) on core
//! NATS (`confab.presence.changes`, no JetStream: presence is not stored).
//! The others record it as the user's sessions on that node, so a user is
//! online while any node holds a live session, and subscriptions,
//! coalescing and the grace period work as on one node.
//!
//! What a node missed it gets by asking: whenever it sees a node it has no
//! view of (at start, a node joining or coming back, after its own NATS
//! connection was lost), it asks that node for a snapshot
//! (`confab.presence.sync`). Announcements and snapshots are numbered, so
//! a snapshot never undoes a later announcement.
//!
//! A node that dies, or is cut off from NATS, stops refreshing its key in
//! the live-node bucket; when the key expires (the lease TTL) the others
//! take its users offline and one of them (the live node with the smallest
//! id) records their devices' last-seen time in the store. A user of a dead
//! node is so shown online at most the lease TTL plus one round after the
//! node's last word.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_protocol::pb::PresenceState;
use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::nats::Nats;
use crate::presence::{Announcement, Presence};
use crate::store::Store;
use crate::store::records::{NodePresence, NodePresenceSnapshot, NodePresenceSync};

/// Announcements of one node's users.
pub const CHANGES: &str = "confab.presence.changes";
/// Snapshot requests.
pub const SYNC: &str = "confab.presence.sync";

/// Users per snapshot message (well under NATS's 1 MiB payload).
const CHUNK: usize = 4096;
/// How long listing the live nodes may take.
const LISTING_WAIT: Duration = Duration::from_secs(2);
/// How long a snapshot may take to arrive.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// Tries to record the last-seen time of a gone node's devices.
const RECORD_ATTEMPTS: usize = 20;
/// Announcements queued for NATS before new ones are dropped (the other
/// nodes then correct themselves at their next snapshot).
const QUEUE: usize = 65_536;

/// What this node knows of one other node's users.
#[derive(Default)]
struct View {
    /// Which run of the node this is (its start time): a restarted node
    /// numbers its announcements from 1 again.
    incarnation: u64,
    /// A snapshot has been applied since the view began (or since this
    /// node's own connection came back).
    synced: bool,
    /// The number of the last snapshot applied: announcements up to it are
    /// in it (they may arrive after it, by another path).
    floor: u64,
    /// Set while a snapshot is being asked for: announcement numbers
    /// applied meanwhile, so the snapshot does not undo them.
    syncing: Option<HashMap<u64, u64>>,
    /// Users online there → (announcement number, their devices there).
    users: HashMap<u64, (u64, Vec<u64>)>,
}

struct Shared {
    me: Arc<str>,
    incarnation: u64,
    presence: Arc<Presence>,
    views: Mutex<HashMap<Arc<str>, View>>,
}

impl Shared {
    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, View>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view of `node` for `incarnation`: a later run of the node
    /// replaces an earlier one's (whose users are then offline there);
    /// `None` for a message of an earlier run.
    fn view<'a>(
        &self,
        views: &'a mut HashMap<Arc<str>, View>,
        node: &Arc<str>,
        incarnation: u64,
        replaced: &mut Vec<u64>,
    ) -> Option<&'a mut View> {
        let view = views.entry(Arc::clone(node)).or_default();
        if incarnation < view.incarnation {
            return None;
        }
        if incarnation > view.incarnation {
            replaced.extend(view.users.keys());
            let syncing = view.syncing.take().map(|_| HashMap::new());
            *view = View { incarnation, syncing, ..View::default() };
        }
        Some(view)
    }

    /// Applies one announcement of `node` unless a snapshot or a later
    /// announcement covers it already. `from_snapshot`: part of a snapshot
    /// numbered `a.seq`.
    fn apply(&self, node: &Arc<str>, incarnation: u64, a: &NodePresence, from_snapshot: bool) {
        let state = PresenceState::try_from(a.state).unwrap_or(PresenceState::Offline);
        let mut replaced = Vec::new();
        let apply = {
            let mut views = self.views();
            match self.view(&mut views, node, incarnation, &mut replaced) {
                None => false,
                Some(view) => {
                    let newer = if from_snapshot {
                        view.syncing.as_ref().and_then(|m| m.get(&a.user_id)).is_none_or(|seen| *seen < a.seq)
                    } else {
                        a.seq > view.floor
                    };
                    if newer {
                        if let Some(m) = view.syncing.as_mut() {
                            m.insert(a.user_id, a.seq);
                        }
                        if state == PresenceState::Offline {
                            view.users.remove(&a.user_id);
                        } else {
                            view.users.insert(a.user_id, (a.seq, a.device_ids.clone()));
                        }
                    }
                    newer
                }
            }
        };
        let now = Instant::now();
        let now_ms = confab_protocol::Now::system().unix_ms;
        for user in replaced {
            self.presence.remote_update(node, user, "", PresenceState::Offline, now_ms, now);
        }
        if apply {
            self.presence.remote_update(node, a.user_id, &a.username, state, a.last_seen_ms, now);
        }
    }

    /// Starts asking `node` for a snapshot.
    fn begin_sync(&self, node: &str) {
        if let Some(view) = self.views().get_mut(node) {
            view.syncing = Some(HashMap::new());
        }
    }

    /// Applies a snapshot chunk; the last chunk also takes offline the
    /// users the view had from before the snapshot and not in it.
    fn apply_snapshot(&self, s: &NodePresenceSnapshot, listed: &mut HashSet<u64>) {
        let node: Arc<str> = s.origin.as_str().into();
        for u in &s.users {
            listed.insert(u.user_id);
            self.apply(&node, s.incarnation, &NodePresence { seq: s.seq, ..u.clone() }, true);
        }
        if !s.last {
            return;
        }
        let stale: Vec<u64> = {
            let mut views = self.views();
            let mut replaced = Vec::new();
            let Some(view) = self.view(&mut views, &node, s.incarnation, &mut replaced) else { return };
            view.synced = true;
            view.floor = view.floor.max(s.seq);
            view.syncing = None;
            view.users.iter().filter(|(u, (seq, _))| *seq < s.seq && !listed.contains(u)).map(|(u, _)| *u).collect()
        };
        for user in stale {
            let gone = NodePresence {
                origin: s.origin.clone(),
                seq: s.seq,
                user_id: user,
                state: PresenceState::Offline as i32,
                last_seen_ms: confab_protocol::Now::system().unix_ms,
                ..Default::default()
            };
            self.apply(&node, s.incarnation, &gone, true);
        }
    }
}

fn to_wire(me: &str, incarnation: u64, a: Announcement) -> NodePresence {
    NodePresence {
        origin: me.to_string(),
        incarnation,
        seq: a.seq,
        user_id: a.user,
        username: a.username,
        state: a.state as i32,
        last_seen_ms: a.last_seen_ms,
        device_ids: a.devices,
    }
}

/// Starts presence across nodes for `presence`, until `stop`. `round` is
/// how often the live nodes are checked (a third of the lease TTL).
pub async fn start(
    nats: &Nats,
    me: &str,
    presence: Arc<Presence>,
    store: Arc<dyn Store>,
    round: Duration,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let client = nats.client.clone();
    let incarnation = confab_protocol::Now::system().unix_ms.max(0) as u64;
    let shared =
        Arc::new(Shared { me: me.into(), incarnation, presence: Arc::clone(&presence), views: Mutex::default() });
    let mut changes = client.subscribe(CHANGES).await?;
    let mut requests = client.subscribe(SYNC).await?;

    // Announcements leave in the order they were numbered.
    let (out, mut queue) = mpsc::channel::<NodePresence>(QUEUE);
    let me_owned = me.to_string();
    presence.announce_to(Box::new(move |a| {
        if out.try_send(to_wire(&me_owned, incarnation, a)).is_err() {
            tracing::debug!("too many presence announcements queued; dropping one");
        }
    }));
    let sender = client.clone();
    tokio::spawn(async move {
        while let Some(a) = queue.recv().await {
            if let Err(e) = sender.publish(CHANGES, a.encode_to_vec().into()).await {
                tracing::debug!(error = %e, "announcing presence failed");
            }
        }
    });

    // Other nodes' announcements.
    let (s, stop2) = (Arc::clone(&shared), stop.clone());
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop2.cancelled() => return,
                m = changes.next() => match m { Some(m) => m, None => return },
            };
            let Ok(a) = NodePresence::decode(msg.payload) else { continue };
            if *a.origin == *s.me {
                continue;
            }
            let node: Arc<str> = a.origin.as_str().into();
            s.apply(&node, a.incarnation, &a, false);
        }
    });

    // Snapshots for nodes that ask.
    let (s, stop2, answer) = (Arc::clone(&shared), stop.clone(), client.clone());
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop2.cancelled() => return,
                m = requests.next() => match m { Some(m) => m, None => return },
            };
            let Some(reply) = msg.reply else { continue };
            let Ok(req) = NodePresenceSync::decode(msg.payload) else { continue };
            if !req.target.is_empty() && *req.target != *s.me {
                continue;
            }
            let (seq, users) = s.presence.local_snapshot();
            let users: Vec<NodePresence> = users.into_iter().map(|a| to_wire(&s.me, s.incarnation, a)).collect();
            let chunks: Vec<&[NodePresence]> = if users.is_empty() { vec![&[]] } else { users.chunks(CHUNK).collect() };
            let n = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                let snapshot = NodePresenceSnapshot {
                    origin: s.me.to_string(),
                    incarnation: s.incarnation,
                    seq,
                    users: chunk.to_vec(),
                    last: i + 1 == n,
                };
                if let Err(e) = answer.publish(reply.clone(), snapshot.encode_to_vec().into()).await {
                    tracing::debug!(error = %e, "answering a presence snapshot request failed");
                    break;
                }
            }
        }
    });

    // The live nodes: snapshots from new ones, offline for gone ones.
    let nodes = nats.nodes.clone();
    tokio::spawn(async move {
        let mut was_connected = true;
        loop {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            if !connected || !was_connected {
                // What was announced while this node was away is lost to
                // it: ask everyone again once back.
                shared.views().values_mut().for_each(|v| v.synced = false);
            }
            was_connected = connected;
            if connected && let Some(live) = live_nodes(&nodes).await {
                let gone: Vec<Arc<str>> = shared.views().keys().filter(|n| !live.contains(&***n)).cloned().collect();
                for node in gone {
                    node_gone(&shared, &node, &live, &store).await;
                }
                for node in live.iter().filter(|n| **n != *shared.me) {
                    let synced = shared.views().get(node.as_str()).is_some_and(|v| v.synced);
                    if !synced {
                        sync_from(&client, &shared, node).await;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(round) => {}
            }
        }
    });
    Ok(())
}

/// The nodes whose live key has not expired, or `None` when the bucket
/// cannot be read (then nothing is concluded).
async fn live_nodes(nodes: &async_nats::jetstream::kv::Store) -> Option<HashSet<String>> {
    super::nats::keys_within(nodes, LISTING_WAIT).await
}

/// Asks `node` for its snapshot and applies it; false if it did not come
/// whole within [`SNAPSHOT_WAIT`] (asked again next round).
async fn sync_from(client: &async_nats::Client, shared: &Arc<Shared>, node: &str) -> bool {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else { return false };
    shared.views().entry(node.into()).or_default();
    shared.begin_sync(node);
    let request = NodePresenceSync { target: node.to_string() }.encode_to_vec();
    if client.publish_with_reply(SYNC, inbox, request.into()).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
    let mut listed = HashSet::new();
    loop {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            tracing::debug!(node, "no presence snapshot in time; asking again next round");
            return false;
        };
        let Ok(snapshot) = NodePresenceSnapshot::decode(msg.payload) else { continue };
        if snapshot.origin != node {
            continue;
        }
        shared.apply_snapshot(&snapshot, &mut listed);
        if snapshot.last {
            tracing::debug!(node, users = listed.len(), "presence snapshot applied");
            return true;
        }
    }
}

/// `node` is gone: its users are offline as of now; the live node with the
/// smallest id records their devices' last-seen time.
async fn node_gone(shared: &Arc<Shared>, node: &str, live: &HashSet<String>, store: &Arc<dyn Store>) {
    let view = shared.views().remove(node);
    let now_ms = confab_protocol::Now::system().unix_ms;
    let users = shared.presence.remote_node_gone(node, Instant::now(), now_ms);
    let Some(view) = view else { return };
    tracing::info!(node, users, "a node is gone: its users are offline");
    let recorder = live.iter().min().is_some_and(|n| **n == *shared.me);
    if !recorder {
        return;
    }
    // The devices' partitions may be moving (the gone node may have owned
    // them): retry until they have an owner again.
    let mut devices: Vec<u64> = view.users.into_values().flat_map(|(_, d)| d).collect();
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        for _ in 0..RECORD_ATTEMPTS {
            let mut failed = Vec::new();
            for device in devices {
                if let Err(e) = store.touch_device(device, now_ms).await {
                    tracing::debug!(device, error = %e, "recording last-seen of a gone node's device; retrying");
                    failed.push(device);
                }
            }
            if failed.is_empty() {
                return;
            }
            devices = failed;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        tracing::warn!(devices = devices.len(), "could not record last-seen of a gone node's devices");
    });
}
