//! Patched for Confab (vendor/quinn/VENDORED.md): the queue of events from
//! the endpoint driver to one connection.
//!
//! Upstream uses an unbounded tokio channel per connection. tokio allocates
//! such a channel's first block of 32 slots, with the channel's shared
//! state, when the channel is made, and keeps the block while the channel
//! lives: about 1 KiB for every connection, idle or not. This queue holds
//! nothing while it is empty: its buffer grows when events come and is
//! given back once they are all taken.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::ConnectionEvent;

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<ConnectionEvent>,
    /// The connection driver's, while it waits for an event.
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Nothing in the critical sections can panic half-way through a change.
    queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A queue of events to one connection: its sender (kept by the endpoint)
/// and its receiver (kept by the connection).
pub(crate) fn channel() -> (EventSender, EventReceiver) {
    let queue = Arc::new(Mutex::new(Queue::default()));
    (EventSender(queue.clone()), EventReceiver(queue))
}

/// The endpoint's end of a connection's event queue.
#[derive(Debug)]
pub(crate) struct EventSender(Arc<Mutex<Queue>>);

impl EventSender {
    /// Queues `event`; gives it back when the connection is gone.
    pub(crate) fn send(&self, event: ConnectionEvent) -> Result<(), ConnectionEvent> {
        let waker = {
            let mut queue = lock(&self.0);
            if queue.receiver_gone {
                return Err(event);
            }
            queue.events.push_back(event);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        let waker = {
            let mut queue = lock(&self.0);
            queue.sender_gone = true;
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The connection's end of its event queue.
#[derive(Debug)]
pub(crate) struct EventReceiver(Arc<Mutex<Queue>>);

impl EventReceiver {
    /// The next event in the order they were sent; `None` once the queue
    /// is empty and the endpoint dropped its end.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        let mut queue = lock(&self.0);
        if let Some(event) = queue.events.pop_front() {
            if queue.events.is_empty() {
                // Given back: an idle connection holds no buffer here.
                queue.events = VecDeque::new();
            }
            return Poll::Ready(Some(event));
        }
        if queue.sender_gone {
            return Poll::Ready(None);
        }
        match &queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => queue.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let events = {
            let mut queue = lock(&self.0);
            queue.receiver_gone = true;
            queue.waker = None;
            std::mem::take(&mut queue.events)
        };
        // Dropped outside the lock (an event may hold a socket).
        drop(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn close(code: u32) -> ConnectionEvent {
        ConnectionEvent::Close(Box::new((code.into(), bytes::Bytes::new())))
    }

    fn code(event: Poll<Option<ConnectionEvent>>) -> Option<u64> {
        match event {
            Poll::Ready(Some(ConnectionEvent::Close(c))) => Some(c.0.into_inner()),
            Poll::Ready(Some(_)) => panic!("another event"),
            Poll::Ready(None) => None,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn in_order_woken_and_given_back() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (send, mut recv) = channel();
        assert!(recv.poll_recv(&mut cx).is_pending());
        send.send(close(1)).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the waiting receiver is woken");
        send.send(close(2)).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once per wait");
        assert_eq!(code(recv.poll_recv(&mut cx)), Some(1));
        assert_eq!(code(recv.poll_recv(&mut cx)), Some(2));
        assert_eq!(lock(&recv.0).events.capacity(), 0, "an empty queue holds no buffer");
        assert!(recv.poll_recv(&mut cx).is_pending());
        send.send(close(3)).unwrap();
        drop(send);
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "one wake for the send; the drop finds no waiter");
        assert_eq!(code(recv.poll_recv(&mut cx)), Some(3), "what was sent before the sender went is taken");
        assert_eq!(code(recv.poll_recv(&mut cx)), None, "then the end");
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_event_back() {
        let (send, recv) = channel();
        send.send(close(1)).unwrap();
        drop(recv);
        assert!(send.send(close(2)).is_err());
    }
}
