//! Gap detection and de-duplication of inbox events (spec/PROTOCOL.md
//! §8.4): events are applied strictly in inbox_seq order, exactly once,
//! whether they arrive live, from a sync page, or both.

use std::collections::BTreeMap;

use confab_protocol::pb;

/// Tracks the last applied inbox_seq and holds early live events.
#[derive(Debug, Clone, Default)]
pub struct InboxTracker {
    last: u64,
    early: BTreeMap<u64, pb::InboxEvent>,
}

/// What to do after offering a live event.
#[derive(Debug, Default, PartialEq)]
pub struct Offered {
    /// Events now ready, in order.
    pub ready: Vec<pb::InboxEvent>,
    /// A gap precedes a held event: page it with `SyncRequest { after:
    /// last() }`.
    pub gap: bool,
}

impl InboxTracker {
    /// Starts after `last` (the stored cursor).
    pub fn new(last: u64) -> Self {
        InboxTracker { last, early: BTreeMap::new() }
    }

    /// The last inbox_seq applied.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Offers a live event.
    pub fn offer(&mut self, event: pb::InboxEvent) -> Offered {
        if event.inbox_seq <= self.last {
            return Offered::default();
        }
        self.early.insert(event.inbox_seq, event);
        let ready = self.drain();
        Offered { ready, gap: !self.early.is_empty() }
    }

    /// Applies a sync page (ascending), dropping what was already applied;
    /// returns the events to apply, in order, including held live events
    /// that the page made contiguous.
    pub fn apply_page(&mut self, events: Vec<pb::InboxEvent>) -> Vec<pb::InboxEvent> {
        for e in events {
            if e.inbox_seq > self.last {
                self.early.insert(e.inbox_seq, e);
            }
        }
        // A sync page is authoritative up to its last event: anything held
        // below a page event's seq that is missing was never stored.
        self.drain()
    }

    fn drain(&mut self) -> Vec<pb::InboxEvent> {
        let mut ready = Vec::new();
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() != self.last + 1 {
                break;
            }
            let e = entry.remove();
            self.last = e.inbox_seq;
            ready.push(e);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> pb::InboxEvent {
        pb::InboxEvent { inbox_seq: seq, event: None }
    }

    fn seqs(v: &[pb::InboxEvent]) -> Vec<u64> {
        v.iter().map(|e| e.inbox_seq).collect()
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut t = InboxTracker::new(3);
        assert_eq!(seqs(&t.offer(ev(4)).ready), vec![4]);
        assert_eq!(t.offer(ev(4)), Offered::default(), "duplicate dropped");
        let o = t.offer(ev(7));
        assert!(o.ready.is_empty() && o.gap);
        let page = t.apply_page(vec![ev(5), ev(6), ev(7)]);
        assert_eq!(seqs(&page), vec![5, 6, 7]);
        assert_eq!(t.last(), 7);
        assert!(t.apply_page(vec![ev(6), ev(7)]).is_empty());
    }
}
