//! [`ClusterDelivery`]: the delivery seam across nodes. Events go to this
//! node's sessions at once and, in one message per commit, to every other
//! node (`confab.node.events`), which hands them to its own sessions. The
//! frames are the same encoded bytes everywhere.
//!
//! Publishing is in commit order (one sender task), so a user's events
//! reach other nodes in the order they were stored. Live delivery is best
//! effort as on one node: a node that misses an event leaves a gap its
//! client sees by `inbox_seq` and fills with a sync.

use std::sync::Arc;

use bytes::Bytes;
use confab_protocol::ErrorCode;
use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::Ordering::Relaxed;

use crate::delivery::Delivery;
use crate::metrics::ClusterStats;
use crate::store::records::{NodeEndDevice, NodeEphemeral, NodeEvent, NodeFrame, NodeFrames, node_event};

/// Where node events go.
pub const SUBJECT: &str = "confab.node.events";

/// Events queued for other nodes before new ones are dropped (their clients
/// then catch up by sync).
const QUEUE: usize = 65_536;

/// The delivery seam of a cluster node.
pub struct ClusterDelivery {
    local: Arc<dyn Delivery>,
    node_id: String,
    out: mpsc::Sender<NodeEvent>,
    stats: Arc<ClusterStats>,
}

impl ClusterDelivery {
    /// Delivers to `local` (this node's session table) and through `client`
    /// to the other nodes; receives theirs until `stop`.
    pub async fn start(
        client: async_nats::Client,
        node_id: String,
        local: Arc<dyn Delivery>,
        stats: Arc<ClusterStats>,
        stop: CancellationToken,
    ) -> Result<Arc<ClusterDelivery>, async_nats::SubscribeError> {
        let mut incoming = client.subscribe(SUBJECT).await?;
        let (out, mut queue) = mpsc::channel::<NodeEvent>(QUEUE);
        let (sender, published) = (client.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            while let Some(event) = queue.recv().await {
                match sender.publish(SUBJECT, event.encode_to_vec().into()).await {
                    Ok(()) => {
                        published.live_published.fetch_add(1, Relaxed);
                    }
                    Err(e) => tracing::debug!(error = %e, "publishing live events to other nodes failed"),
                }
            }
        });
        let (me, hub, received) = (node_id.clone(), Arc::clone(&local), Arc::clone(&stats));
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = incoming.next() => match m { Some(m) => m, None => return },
                };
                let Ok(event) = NodeEvent::decode(msg.payload) else { continue };
                if event.origin == me {
                    continue;
                }
                match event.event {
                    Some(node_event::Event::Frames(f)) => {
                        let frames: Vec<(u64, Bytes)> = f.frames.into_iter().map(|f| (f.user_id, f.frame)).collect();
                        received.live_received.fetch_add(frames.len() as u64, Relaxed);
                        hub.deliver(frames);
                    }
                    Some(node_event::Event::Ephemeral(e)) => hub.deliver_ephemeral(&e.user_ids, &e.frame, &e.datagram),
                    Some(node_event::Event::EndDevice(d)) => {
                        hub.end_device_sessions(d.user_id, d.device_id, ErrorCode(d.code), None)
                    }
                    None => {}
                }
            }
        });
        Ok(Arc::new(ClusterDelivery { local, node_id, out, stats }))
    }

    fn publish(&self, event: node_event::Event) {
        let event = NodeEvent { origin: self.node_id.clone(), event: Some(event) };
        if self.out.try_send(event).is_err() {
            self.stats.live_dropped.fetch_add(1, Relaxed);
            tracing::debug!("too many live events queued for other nodes; dropping one (clients catch up by sync)");
        }
    }
}

impl Delivery for ClusterDelivery {
    fn deliver(&self, frames: Vec<(u64, Bytes)>) {
        let remote =
            frames.iter().map(|(user_id, frame)| NodeFrame { user_id: *user_id, frame: frame.clone() }).collect();
        self.local.deliver(frames);
        self.publish(node_event::Event::Frames(NodeFrames { frames: remote }));
    }

    fn deliver_to_session(&self, user: u64, session: u64, frame: Bytes) {
        // Sessions are this node's own (presence subscriptions).
        self.local.deliver_to_session(user, session, frame);
    }

    fn deliver_ephemeral(&self, users: &[u64], frame: &Bytes, datagram: &Bytes) {
        self.local.deliver_ephemeral(users, frame, datagram);
        self.publish(node_event::Event::Ephemeral(NodeEphemeral {
            user_ids: users.to_vec(),
            frame: frame.clone(),
            datagram: datagram.clone(),
        }));
    }

    fn end_device_sessions(&self, user: u64, device: u64, code: ErrorCode, keep: Option<u64>) {
        self.local.end_device_sessions(user, device, code, keep);
        self.publish(node_event::Event::EndDevice(NodeEndDevice { user_id: user, device_id: device, code: code.0 }));
    }
}
