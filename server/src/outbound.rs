//! One session's outbound queue: the encoded frames the session table
//! ([`crate::hub`]) hands over and the session's task writes out. Bounded
//! in frames and in bytes; a push that does not fit is refused (the hub
//! then cuts the session off to resync), it never waits.
//!
//! Why not a tokio mpsc channel: a channel allocates its first block of 32
//! slots when it is created, so every idle session paid ~1.5 KiB for a
//! queue that is empty nearly all its life. This one is a `VecDeque`
//! behind a mutex (one producer at a time in practice: the writer thread
//! or the presence tick), allocated when frames arrive and given back when
//! a burst has drained, plus a [`Notify`] that wakes the session's task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Capacity (in frames) a drained queue may keep; more is given back.
const KEEP_CAPACITY: usize = 8;

/// The outcome of [`OutboundQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; the session's task has been woken.
    Queued,
    /// Over the frame or byte bound: nothing was queued.
    Full,
    /// The session's task has stopped reading: nothing was queued.
    Closed,
}

#[derive(Debug, Default)]
struct Frames {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
}

/// A bounded queue of encoded frames for one session.
#[derive(Debug)]
pub struct OutboundQueue {
    frames: Mutex<Frames>,
    wake: Notify,
    max_frames: usize,
    max_bytes: usize,
    /// Bytes queued in every queue sharing this counter (the node's
    /// outbound backlog, which a cluster node publishes as load).
    total: Arc<AtomicUsize>,
}

impl OutboundQueue {
    /// An empty queue (it allocates nothing until a frame arrives).
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self::counted(max_frames, max_bytes, Arc::default())
    }

    /// An empty queue whose bytes also count in `total`.
    pub fn counted(max_frames: usize, max_bytes: usize, total: Arc<AtomicUsize>) -> Self {
        OutboundQueue { frames: Mutex::new(Frames::default()), wake: Notify::new(), max_frames, max_bytes, total }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Frames> {
        // Every critical section leaves `Frames` consistent (a push or a
        // pop, with its byte count), so a poisoned lock is safe to use.
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` unless that would exceed a bound.
    pub fn push(&self, frame: Bytes) -> Pushed {
        let mut q = self.lock();
        if q.closed {
            return Pushed::Closed;
        }
        if q.frames.len() >= self.max_frames || q.bytes + frame.len() > self.max_bytes {
            return Pushed::Full;
        }
        let was_empty = q.frames.is_empty();
        q.bytes += frame.len();
        self.total.fetch_add(frame.len(), Ordering::Relaxed);
        q.frames.push_back(frame);
        drop(q);
        // The reader drains until the queue is empty before it waits, so
        // only the first frame of a batch needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        Pushed::Queued
    }

    /// Waits until at least one frame is queued, then appends queued frames
    /// (whole, in order) to `out` while `out` holds less than `max_bytes`.
    /// Cancel-safe: frames leave the queue only when this returns.
    pub async fn recv_into(&self, out: &mut BytesMut, max_bytes: usize) {
        loop {
            if self.drain_into(out, max_bytes) > 0 {
                return;
            }
            // A notify_one with no waiter leaves a permit, so a frame
            // pushed between the check above and this wait is not missed.
            self.wake.notified().await;
        }
    }

    /// Appends queued frames to `out` while it holds less than `max_bytes`
    /// (at least one frame if any is queued); returns how many.
    pub fn drain_into(&self, out: &mut BytesMut, max_bytes: usize) -> usize {
        let mut q = self.lock();
        let (mut n, mut taken) = (0, 0);
        while n == 0 || out.len() < max_bytes {
            let Some(frame) = q.frames.pop_front() else { break };
            taken += frame.len();
            out.extend_from_slice(&frame);
            n += 1;
        }
        q.bytes -= taken;
        self.total.fetch_sub(taken, Ordering::Relaxed);
        if q.frames.is_empty() && q.frames.capacity() > KEEP_CAPACITY {
            q.frames = VecDeque::new();
        }
        n
    }

    /// Takes one queued frame, if any.
    pub fn try_recv(&self) -> Option<Bytes> {
        let mut q = self.lock();
        let frame = q.frames.pop_front()?;
        q.bytes -= frame.len();
        self.total.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }

    /// The reader is gone: refuse further frames and free the queued ones.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.frames = VecDeque::new();
        self.total.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_sharing_a_total_count_their_bytes_in_it() {
        let total = Arc::new(AtomicUsize::new(0));
        let a = OutboundQueue::counted(8, 1024, Arc::clone(&total));
        let b = OutboundQueue::counted(8, 1024, Arc::clone(&total));
        a.push(Bytes::from_static(b"12345"));
        a.push(Bytes::from_static(b"678"));
        b.push(Bytes::from_static(b"abcdefgh"));
        assert_eq!(total.load(Ordering::Relaxed), 16);
        let mut out = BytesMut::new();
        a.drain_into(&mut out, 4);
        assert_eq!(total.load(Ordering::Relaxed), 11, "one frame of a taken");
        assert!(b.try_recv().is_some());
        assert_eq!(total.load(Ordering::Relaxed), 3);
        a.close();
        assert_eq!(total.load(Ordering::Relaxed), 0, "closing gives back what was queued");
        assert_eq!(a.push(Bytes::from_static(b"x")), Pushed::Closed);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn bounded_in_frames_and_bytes() {
        let q = OutboundQueue::new(2, 10);
        assert_eq!(q.push(Bytes::from_static(b"1234")), Pushed::Queued);
        assert_eq!(q.push(Bytes::from_static(b"1234567")), Pushed::Full, "bytes");
        assert_eq!(q.push(Bytes::from_static(b"12")), Pushed::Queued);
        assert_eq!(q.push(Bytes::from_static(b"1")), Pushed::Full, "frames");
        let mut out = BytesMut::new();
        q.recv_into(&mut out, 1 << 20).await;
        assert_eq!(&out[..], b"123412");
        assert_eq!(q.push(Bytes::from_static(b"1234567890")), Pushed::Queued, "draining frees the bytes");
        q.close();
        assert_eq!(q.push(Bytes::from_static(b"1")), Pushed::Closed);
        assert!(q.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_batch_stops_at_the_byte_cap_but_takes_one_frame() {
        let q = OutboundQueue::new(10, 100);
        for _ in 0..3 {
            q.push(Bytes::from_static(b"abcd"));
        }
        let mut out = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(q.drain_into(&mut out, 4), 1);
        assert_eq!(q.drain_into(&mut out, 18), 1);
        assert_eq!(q.drain_into(&mut out, 100), 1);
        assert_eq!(q.drain_into(&mut out, 100), 0);
    }

    #[tokio::test]
    async fn wakes_a_waiting_reader() {
        let q = std::sync::Arc::new(OutboundQueue::new(10, 100));
        let reader = {
            let q = std::sync::Arc::clone(&q);
            tokio::spawn(async move {
                let mut out = BytesMut::new();
                q.recv_into(&mut out, 100).await;
                out
            })
        };
        tokio::task::yield_now().await;
        q.push(Bytes::from_static(b"x"));
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert!(matches!(out, Ok(Ok(ref b)) if &b[..] == b"x"), "{out:?}");
    }
}
