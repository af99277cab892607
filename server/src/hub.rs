//! The in-memory session table: user → live sessions. Delivery to a
//! session is a non-blocking push of an already-encoded frame onto its
//! queue, bounded both in frames and in bytes; a session whose queue is
//! full is cut off with RESYNC_REQUIRED (it catches up from the store) so
//! it never stalls the writer or anyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use confab_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::link::Transport;
use crate::outbound::{OutboundQueue, Pushed};

/// A way to end a session from outside its task.
#[derive(Debug, Default)]
pub struct Kill {
    token: CancellationToken,
    code: AtomicU32,
}

impl Kill {
    /// Asks the session to close with `code` (the first code wins).
    pub fn kill(&self, code: ErrorCode) {
        let _ = self.code.compare_exchange(0, code.0, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Resolves once killed.
    pub async fn killed(&self) -> ErrorCode {
        self.token.cancelled().await;
        ErrorCode(self.code.load(Ordering::Acquire))
    }
}

struct Entry {
    session: u64,
    device: u64,
    queue: Arc<OutboundQueue>,
    kill: Arc<Kill>,
    /// The QUIC connection, when typing events may go as datagrams.
    datagrams: Option<quinn::Connection>,
}

/// The live sessions of this node.
pub struct Hub {
    users: Mutex<HashMap<u64, Vec<Entry>>>,
    next_session: AtomicU64,
    queue_len: usize,
    queue_bytes: usize,
    /// Bytes waiting in every session's queue.
    queued: Arc<AtomicUsize>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A registered session's receiving side. Dropping it closes the queue:
/// later deliveries are dropped (the session catches up from the store).
pub struct Registration {
    /// The session's id in the table.
    pub session: u64,
    queue: Arc<OutboundQueue>,
}

impl Registration {
    /// Waits for delivered frames and appends them to `out` (whole, in
    /// order) while it holds less than `max_bytes`. Cancel-safe.
    pub async fn recv_into(&self, out: &mut BytesMut, max_bytes: usize) {
        self.queue.recv_into(out, max_bytes).await
    }

    /// Appends the frames already delivered to `out`, without waiting,
    /// as [`Registration::recv_into`] does; returns how many.
    pub fn drain_into(&self, out: &mut BytesMut, max_bytes: usize) -> usize {
        self.queue.drain_into(out, max_bytes)
    }

    /// A frame already delivered, if any.
    pub fn try_recv(&self) -> Option<Bytes> {
        self.queue.try_recv()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Hub {
    /// An empty table whose sessions queue up to `queue_len` frames and
    /// `queue_bytes` bytes each.
    pub fn new(queue_len: usize, queue_bytes: usize, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Hub {
            users: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            queue_len,
            queue_bytes,
            queued: Arc::default(),
            metrics,
        }
    }

    /// Bytes delivered to this node's sessions and not yet taken by their
    /// connections: the node's outbound backlog.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Relaxed) as u64
    }

    /// Queues one frame for one session, or cuts the session off when its
    /// queue is full in frames or bytes.
    fn push(&self, user: u64, e: &Entry, frame: Bytes) {
        match e.queue.push(frame) {
            Pushed::Queued => {
                self.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Full => self.overflowed(user, e),
            // The session is closing; it will catch up from the store.
            Pushed::Closed => {}
        }
    }

    fn overflowed(&self, user: u64, e: &Entry) {
        if !e.kill.token.is_cancelled() {
            tracing::info!(user, session = e.session, "outbound queue full; session must resync");
            self.metrics.overflow_disconnects.fetch_add(1, Ordering::Relaxed);
        }
        e.kill.kill(ErrorCode::RESYNC_REQUIRED);
    }

    /// Authenticated sessions on this node.
    pub fn sessions(&self) -> usize {
        self.users().values().map(Vec::len).sum()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Entry>>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single insert/remove/iteration), so a
        // poisoned lock is safe to keep using.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an authenticated session.
    pub fn register(
        &self,
        user: u64,
        device: u64,
        kill: Arc<Kill>,
        peer: SocketAddr,
        transport: Transport,
        datagrams: Option<quinn::Connection>,
    ) -> Registration {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(OutboundQueue::counted(self.queue_len, self.queue_bytes, Arc::clone(&self.queued)));
        let entry = Entry { session, device, queue: Arc::clone(&queue), kill, datagrams };
        self.users().entry(user).or_default().push(entry);
        tracing::debug!(user, device, session, %peer, ?transport, "session registered");
        Registration { session, queue }
    }

    /// Removes a session (on close or logout).
    pub fn unregister(&self, user: u64, session: u64) {
        let mut users = self.users();
        if let Some(entries) = users.get_mut(&user) {
            entries.retain(|e| e.session != session);
            if entries.is_empty() {
                users.remove(&user);
            }
        }
    }

    /// Live sessions of a device.
    pub fn device_online(&self, user: u64, device: u64) -> bool {
        self.users().get(&user).is_some_and(|es| es.iter().any(|e| e.device == device))
    }

    /// Users with at least one live session.
    pub fn users_online(&self) -> usize {
        self.users().len()
    }
}

impl Delivery for Hub {
    fn deliver(&self, frames: Vec<(u64, Bytes)>) {
        let users = self.users();
        for (user, frame) in frames {
            if let Some((last, others)) = users.get(&user).and_then(|es| es.split_last()) {
                for e in others {
                    self.push(user, e, frame.clone());
                }
                self.push(user, last, frame);
            }
        }
    }

    fn deliver_to_session(&self, user: u64, session: u64, frame: Bytes) {
        if let Some(e) = self.users().get(&user).and_then(|es| es.iter().find(|e| e.session == session)) {
            self.push(user, e, frame);
        }
    }

    fn deliver_ephemeral(&self, users: &[u64], frame: &Bytes, datagram: &Bytes) {
        let table = self.users();
        for user in users {
            for e in table.get(user).into_iter().flatten() {
                if let Some(conn) = &e.datagrams
                    && conn.send_datagram(datagram.clone()).is_ok()
                {
                    self.metrics.typing_datagrams_out.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                self.push(*user, e, frame.clone());
            }
        }
    }

    fn end_device_sessions(&self, user: u64, device: u64, code: ErrorCode, keep: Option<u64>) {
        if let Some(entries) = self.users().get(&user) {
            for e in entries.iter().filter(|e| e.device == device && Some(e.session) != keep) {
                e.kill.kill(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn delivers_to_every_session_and_cuts_off_a_full_queue() {
        let hub = Hub::new(2, 1 << 20, Default::default());
        let (k1, k2) = (Arc::new(Kill::default()), Arc::new(Kill::default()));
        let a = hub.register(7, 1, k1.clone(), addr(), Transport::Tcp, None);
        let b = hub.register(7, 2, k2.clone(), addr(), Transport::Quic, None);
        hub.deliver(vec![(7, Bytes::from_static(b"x"))]);
        assert_eq!(a.try_recv(), Some(Bytes::from_static(b"x")));
        assert_eq!(b.try_recv(), Some(Bytes::from_static(b"x")));
        for _ in 0..3 {
            hub.deliver(vec![(7, Bytes::from_static(b"y"))]);
        }
        assert_eq!(k1.killed().await, ErrorCode::RESYNC_REQUIRED);
        hub.unregister(7, a.session);
        hub.unregister(7, b.session);
        assert_eq!(hub.users_online(), 0);
    }

    #[tokio::test]
    async fn a_queue_full_in_bytes_cuts_the_session_off() {
        let hub = Hub::new(100, 10, Default::default());
        let k = Arc::new(Kill::default());
        let a = hub.register(7, 1, k.clone(), addr(), Transport::Tcp, None);
        hub.deliver(vec![(7, Bytes::from_static(b"123456"))]);
        // Reading frees the bytes: the same again fits.
        let mut out = BytesMut::new();
        a.recv_into(&mut out, 1 << 20).await;
        assert_eq!(out.len(), 6);
        hub.deliver(vec![(7, Bytes::from_static(b"123456"))]);
        assert!(!k.token.is_cancelled());
        hub.deliver(vec![(7, Bytes::from_static(b"12345"))]);
        assert_eq!(k.killed().await, ErrorCode::RESYNC_REQUIRED);
        assert_eq!(a.try_recv().unwrap().len(), 6, "what fitted is still delivered");
        assert!(a.try_recv().is_none());
    }

    #[tokio::test]
    async fn kill_device_spares_the_asking_session() {
        let hub = Hub::new(4, 1 << 20, Default::default());
        let (k1, k2) = (Arc::new(Kill::default()), Arc::new(Kill::default()));
        let a = hub.register(1, 5, k1.clone(), addr(), Transport::Tcp, None);
        let _b = hub.register(1, 5, k2.clone(), addr(), Transport::Tcp, None);
        hub.end_device_sessions(1, 5, ErrorCode::DEVICE_REVOKED, Some(a.session));
        assert_eq!(k2.killed().await, ErrorCode::DEVICE_REVOKED);
        assert!(!k1.token.is_cancelled());
    }
}
