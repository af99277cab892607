//! Fixed-window budgets per key: "at most N of something per key per
//! window" (failed logins per username, signups per address, groups
//! created per user …).
//!
//! A budget is *taken before the work it guards*, all keys at once or
//! none, so concurrent attempts cannot all pass a check that is only
//! counted afterwards; an attempt that turns out not to count (the
//! password was right, the server was busy) gives its share back.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Entries kept before stale ones are pruned.
const PRUNE_AT: usize = 100_000;
/// Once over `PRUNE_AT`, prune on every this-many-th update (not on each:
/// a scan of the whole map under the lock is O(n)).
const PRUNE_EVERY: usize = 1024;

/// Counts per key in fixed windows of one length.
#[derive(Debug)]
pub struct Window<K> {
    length: Duration,
    /// key → (start of its current window, used in it).
    counts: Mutex<HashMap<K, (Instant, u32)>>,
    updates: AtomicUsize,
}

impl<K: Eq + Hash + Clone> Window<K> {
    /// Budgets that renew every `length`.
    pub fn new(length: Duration) -> Self {
        Window { length, counts: Mutex::new(HashMap::new()), updates: AtomicUsize::new(0) }
    }

    /// The window length.
    pub fn length(&self) -> Duration {
        self.length
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, u32)>> {
        // Every critical section is a few lookups and updates of whole
        // entries: a poisoned lock still holds consistent counts.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `key` has used in its current window at `now`, and since when.
    fn used(&self, map: &HashMap<K, (Instant, u32)>, key: &K, now: Instant) -> (Instant, u32) {
        match map.get(key) {
            Some(&(start, n)) if now.saturating_duration_since(start) < self.length => (start, n),
            _ => (now, 0),
        }
    }

    /// `Err(wait)` when taking `amount` would exceed one of the budgets
    /// (`(key, max)` pairs); takes nothing either way.
    pub fn check(&self, budgets: &[(K, u32)], amount: u32, now: Instant) -> Result<(), Duration> {
        let map = self.map();
        self.over(&map, budgets, amount, now)
    }

    fn over(
        &self,
        map: &HashMap<K, (Instant, u32)>,
        budgets: &[(K, u32)],
        amount: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut wait = None;
        for (key, max) in budgets {
            let (start, used) = self.used(map, key, now);
            if used.saturating_add(amount) > *max {
                let left = self.length.saturating_sub(now.saturating_duration_since(start));
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Takes `amount` from every budget, or from none and `Err(wait)`:
    /// how long until all of them have room again.
    pub fn take(&self, budgets: &[(K, u32)], amount: u32, now: Instant) -> Result<(), Duration> {
        let mut map = self.map();
        if map.len() >= PRUNE_AT && self.updates.fetch_add(1, Ordering::Relaxed).is_multiple_of(PRUNE_EVERY) {
            let length = self.length;
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < length);
        }
        self.over(&map, budgets, amount, now)?;
        for (key, _) in budgets {
            let (start, used) = self.used(&map, key, now);
            map.insert(key.clone(), (start, used + amount));
        }
        Ok(())
    }

    /// Gives `amount` back to each key (an attempt that did not count).
    /// A key whose window has turned since has nothing to give back.
    pub fn give_back(&self, keys: &[K], amount: u32, now: Instant) {
        let mut map = self.map();
        for key in keys {
            if let Some((start, used)) = map.get_mut(key)
                && now.saturating_duration_since(*start) < self.length
            {
                *used = used.saturating_sub(amount);
            }
        }
    }

    /// Forgets a key's count.
    pub fn forget(&self, key: &K) {
        self.map().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_taken_all_or_none_and_renew() {
        let w: Window<&str> = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(w.take(&[("a", 2), ("b", 3)], 1, t0).is_ok());
        assert!(w.take(&[("a", 2), ("b", 3)], 1, t0).is_ok());
        let wait = w.take(&[("a", 2), ("b", 3)], 1, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // "a" refused, so "b" was not charged: it still has one left.
        assert!(w.take(&[("b", 3)], 1, t0).is_ok());
        assert!(w.take(&[("b", 3)], 1, t0).is_err());
        assert!(w.take(&[("a", 2)], 1, t0 + Duration::from_secs(60)).is_ok(), "a new window");
    }

    #[test]
    fn amounts_and_give_back() {
        let w: Window<u32> = Window::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(w.take(&[(1, 10)], 8, t0).is_ok());
        assert!(w.check(&[(1, 10)], 3, t0).is_err());
        assert!(w.check(&[(1, 10)], 2, t0).is_ok());
        w.give_back(&[1], 5, t0);
        assert!(w.take(&[(1, 10)], 7, t0).is_ok());
        w.forget(&1);
        assert!(w.take(&[(1, 10)], 10, t0).is_ok());
        assert!(w.take(&[(1, 10)], 11, t0 + Duration::from_secs(2)).is_err(), "more than the whole budget");
    }
}
