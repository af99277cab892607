//! The write side's view of the store during one group commit: committed
//! data overlaid with what earlier commands of the same group wrote, plus
//! counters cached across groups. Only the writer thread has one.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use fjall::{OwnedWriteBatch, Slice};

use super::PushTiming;
use super::keys::{ConversationId, UserId};
use super::partition::Partitioning;
use super::records::{EffectRecord, LogWrite, effect_record};
use super::{Db, Ks, StoreError, decode, keys};

/// Counters the writer keeps in memory so it does not re-scan for them:
/// committed values plus everything staged in the current group. Cleared
/// (and re-read from the store) when a commit fails.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    last_seq: HashMap<u64, u64>,
    inbox_head: HashMap<u64, u64>,
    next_ids: HashMap<&'static [u8], u64>,
    /// user → their devices with a push target, filled on first use.
    push_devices: HashMap<u64, Vec<u64>>,
    /// conversation → its current members' user ids, filled on first use
    /// and dropped whenever the group writes one of its Members keys: every
    /// send needs them, and a prefix scan decoding 100 member records per
    /// group message was a visible part of the writer's profile.
    member_ids: HashMap<u64, std::sync::Arc<[u64]>>,
    /// Committed records of the keyspaces every send or read marker looks
    /// up (see [`RecordCache`]).
    records: RefCell<RecordCache>,
}

impl Counters {
    pub(crate) fn clear(&mut self) {
        *self = Counters::default();
    }
}

/// Records the writer read or wrote recently, kept across groups so a send
/// does not search the memtables and tables (bloom filters, block reads)
/// for the member record and the sender's conversation record every time:
/// the committed value, or `None` for a key known to be absent. Writes go
/// through it as they are staged: every staged write is either committed
/// or the whole `Counters` is cleared (a failed commit, a fence, a reopen,
/// a replay of the log), so it never holds what the store does not.
///
/// Used on a single node only, where the writer is its database's only
/// writer. A cluster node runs one writer per partition it owns over one
/// database, and replays the logs of partitions it takes over into it: a
/// record another writer changed would be stale here.
#[derive(Debug, Default)]
struct RecordCache {
    /// One map per keyspace (indexed by `Ks as usize`); empty for the
    /// keyspaces not cached. [`Slice`]s, as the overlay's: the store's
    /// keys fit inline and a value is shared, not copied.
    maps: Vec<HashMap<Slice, Option<Slice>>>,
    entries: usize,
}

impl RecordCache {
    /// Entries kept at most; past it the cache starts empty again (a
    /// handful of MiB: records here are tens of bytes).
    const MAX_ENTRIES: usize = 1 << 16;

    fn cached(ks: Ks) -> bool {
        matches!(ks, Ks::Members | Ks::UserConversations | Ks::Conversations | Ks::Devices | Ks::Users)
    }

    fn get(&self, ks: Ks, key: &[u8]) -> Option<&Option<Slice>> {
        self.maps.get(ks as usize)?.get(key)
    }

    fn set(&mut self, ks: Ks, key: &[u8], value: Option<Slice>) {
        if self.entries >= Self::MAX_ENTRIES {
            self.maps.iter_mut().for_each(HashMap::clear);
            self.entries = 0;
        }
        if self.maps.is_empty() {
            self.maps = Ks::ALL.iter().map(|_| HashMap::new()).collect();
        }
        let map = &mut self.maps[ks as usize];
        match map.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                map.insert(Slice::from(key), value);
                self.entries += 1;
            }
        }
    }
}

/// A key and its value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// One group's staged writes and the overlay that makes them readable to
/// later commands of the same group.
pub struct Tx<'a> {
    store: &'a Db,
    /// The database this group writes to, fixed for the whole group.
    handles: std::sync::Arc<super::db::Handles>,
    counters: &'a mut Counters,
    batch: OwnedWriteBatch,
    /// Staged writes per keyspace (indexed by `Ks as usize`), so a lookup
    /// borrows the key instead of building an owned `(Ks, Vec<u8>)`. Held
    /// as [`Slice`]s, fjall's own byte type: keys of up to 20 bytes (all
    /// the hot ones) are stored inline, and a value is one allocation
    /// shared by the batch, the overlay and the record cache instead of a
    /// copy in each (with the copies, the writer's malloc and free were a
    /// quarter of the server's samples at dm W = 64; bench/README.md,
    /// "Allocations in the writer's transaction").
    overlay: Vec<BTreeMap<Slice, Option<Slice>>>,
    appended: u64,
    /// How sends schedule push notifications (`None`: push is off).
    push: Option<PushTiming>,
    pushes_queued: u32,
    /// Which partition this group writes, and how ids map to partitions.
    scope: Scope,
    /// Effects for other partitions, by partition, in the order made.
    effects: BTreeMap<u32, Vec<EffectRecord>>,
    /// Every write, in order, when the group becomes a log record
    /// (cluster mode); `None` on one node.
    captured: Option<Vec<LogWrite>>,
    /// Where [`Tx::encode`] encodes records, reused across a group.
    scratch: Vec<u8>,
}

/// The partition a writer writes, and the partitioning it is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// How ids map onto partitions.
    pub partitioning: Partitioning,
    /// The writer's own partition.
    pub partition: u32,
    /// Record every write for the log (cluster mode).
    pub capture: bool,
}

impl Scope {
    /// One node: one partition, nothing captured.
    pub const SINGLE: Scope = Scope { partitioning: Partitioning::SINGLE, partition: 0, capture: false };
}

impl<'a> Tx<'a> {
    pub(crate) fn new(
        store: &'a Db,
        counters: &'a mut Counters,
        push: Option<PushTiming>,
        scope: Scope,
    ) -> Result<Self, StoreError> {
        let overlay = Ks::ALL.iter().map(|_| BTreeMap::new()).collect();
        let handles = store.handles()?;
        Ok(Tx {
            batch: handles.db.batch(),
            handles,
            store,
            counters,
            overlay,
            appended: 0,
            push,
            pushes_queued: 0,
            scope,
            effects: BTreeMap::new(),
            captured: scope.capture.then(Vec::new),
            scratch: Vec::new(),
        })
    }

    /// Whether `id` (a user, device or conversation) lives in this group's
    /// partition.
    pub(crate) fn is_local(&self, id: u64) -> bool {
        self.scope.partitioning.of_id(id) == self.scope.partition
    }

    /// The partition this group writes.
    pub(crate) fn scope_partition(&self) -> u32 {
        self.scope.partition
    }

    /// The partition of `id`.
    pub(crate) fn partition_of(&self, id: u64) -> u32 {
        self.scope.partitioning.of_id(id)
    }

    /// Queues an effect for another partition (merged into the last one
    /// for that partition when it is the same message).
    pub(crate) fn send_effect(&mut self, partition: u32, effect: EffectRecord) {
        let queue = self.effects.entry(partition).or_default();
        if let (Some(last), Some(effect_record::Effect::Message(m))) = (queue.last_mut(), &effect.effect)
            && let Some(effect_record::Effect::Message(prev)) = &last.effect
            && prev.push == m.push
            && prev.message.as_ref().map(|p| (p.conversation_id, p.seq))
                == m.message.as_ref().map(|p| (p.conversation_id, p.seq))
        {
            last.target_ids.extend(effect.target_ids);
            return;
        }
        queue.push(effect);
    }

    /// The effects for other partitions and the captured writes, once the
    /// group is done (cluster mode).
    pub(crate) fn take_outputs(&mut self) -> (BTreeMap<u32, Vec<EffectRecord>>, Vec<LogWrite>) {
        (std::mem::take(&mut self.effects), self.captured.take().unwrap_or_default())
    }

    fn capture(&mut self, ks: Ks, key: &[u8], value: Option<&[u8]>) {
        if let Some(c) = &mut self.captured {
            c.push(LogWrite { keyspace: ks as u32, key: key.to_vec().into(), value: value.map(|v| v.to_vec().into()) });
        }
    }

    /// How sends schedule push notifications (`None`: push is off).
    pub(crate) fn push_timing(&self) -> Option<PushTiming> {
        self.push
    }

    /// New push notification jobs staged by this group.
    pub(crate) fn pushes_queued(&self) -> u32 {
        self.pushes_queued
    }

    pub(crate) fn count_pushes(&mut self, n: u32) {
        self.pushes_queued += n;
    }

    /// Records, in the same batch, how far this node has applied the
    /// partition's log (not part of the log record itself).
    pub(crate) fn set_applied(&mut self, partition: u32, position: u64) {
        self.batch.insert(self.handles.ks(Ks::Meta), keys::applied(partition), position.to_be_bytes().to_vec());
    }

    /// Records this group's number in the store, in the same batch.
    pub(crate) fn set_commit_seq(&mut self, n: u64) {
        self.batch.insert(self.handles.ks(Ks::Meta), keys::COMMIT_SEQ, n.to_be_bytes().to_vec());
    }

    /// Messages stored by this group so far.
    pub(crate) fn appended(&self) -> u64 {
        self.appended
    }

    pub(crate) fn count_append(&mut self) {
        self.appended += 1;
    }

    /// Commits everything staged, atomically, with the store's durability.
    /// Returns how many writes (keys) the batch held.
    pub(crate) fn commit(self) -> Result<usize, StoreError> {
        let durability = self.store.durability.persist_mode();
        let batch = self.into_batch();
        let writes = batch.len();
        batch.durability(Some(durability)).commit()?;
        Ok(writes)
    }

    /// The group's write batch: the writes staged straight into it, then
    /// the overlay's, one per key. A key the group wrote several times
    /// (a sender's read marker, once per message it sent; an id counter)
    /// is written once, with its last value, instead of once per write:
    /// each write is a journal entry, a memtable insert and later a
    /// flushed row.
    fn into_batch(mut self) -> OwnedWriteBatch {
        // `overlay` has one map per keyspace, built from Ks::ALL.
        for (&ks, staged) in Ks::ALL.iter().zip(self.overlay.iter_mut()) {
            let handle = self.handles.ks(ks);
            for (key, value) in std::mem::take(staged) {
                match value {
                    Some(value) => self.batch.insert(handle, key, value),
                    None => self.batch.remove(handle, key),
                }
            }
        }
        self.batch
    }

    // ----- reads (overlay first) --------------------------------------------

    fn staged(&self, ks: Ks) -> &BTreeMap<Slice, Option<Slice>> {
        // `overlay` has one map per keyspace, built from Ks::ALL.
        &self.overlay[ks as usize]
    }

    pub(crate) fn get(&self, ks: Ks, key: &[u8]) -> Result<Option<Slice>, StoreError> {
        debug_assert!(ks != Ks::Inbox, "inbox entries are staged without the overlay (put_unread)");
        if let Some(v) = self.staged(ks).get(key) {
            return Ok(v.clone());
        }
        if !self.caches(ks) {
            return Ok(self.handles.ks(ks).get(key)?);
        }
        if let Some(v) = self.counters.records.borrow().get(ks, key) {
            return Ok(v.clone());
        }
        let v = self.handles.ks(ks).get(key)?;
        self.counters.records.borrow_mut().set(ks, key, v.clone());
        Ok(v)
    }

    pub(crate) fn get_record<M: prost::Message + Default>(&self, ks: Ks, key: &[u8]) -> Result<Option<M>, StoreError> {
        match self.get(ks, key)? {
            Some(v) => decode(ks, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every (key, value) under `prefix`, in key order, overlay applied.
    pub(crate) fn scan_prefix(&self, ks: Ks, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        debug_assert!(ks != Ks::Inbox, "inbox entries are staged without the overlay (put_unread)");
        let mut merged: BTreeMap<Slice, Option<Slice>> = BTreeMap::new();
        for kv in self.handles.ks(ks).prefix(prefix) {
            let (k, v) = kv.into_inner()?;
            merged.insert(k, Some(v));
        }
        let from = std::ops::Bound::Included(prefix);
        for (k, v) in self
            .staged(ks)
            .range::<[u8], _>((from, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_vec(), v.to_vec()))).collect())
    }

    // ----- writes ------------------------------------------------------------

    pub(crate) fn put(&mut self, ks: Ks, key: &[u8], value: impl Into<Slice>) {
        let value = value.into();
        self.capture(ks, key, Some(&value));
        // Into the batch at commit, from the overlay (`into_batch`).
        self.touched(ks, key, Some(&value));
        self.overlay[ks as usize].insert(Slice::from(key), Some(value));
    }

    /// Stages a write that no command reads back through a `Tx`, so it
    /// skips the overlay (no key copy, no second value copy): inbox
    /// entries, the most numerous write (one per member per message).
    /// Readers use the committed store, and the inbox head is a counter.
    pub(crate) fn put_unread(&mut self, ks: Ks, key: &[u8], value: Slice) {
        debug_assert!(ks == Ks::Inbox, "only inbox entries are never read back in a group");
        self.capture(ks, key, Some(&value));
        self.batch.insert(self.handles.ks(ks), key, value);
    }

    pub(crate) fn put_record<M: prost::Message>(&mut self, ks: Ks, key: &[u8], record: &M) {
        let value = self.encode(record);
        self.put(ks, key, value);
    }

    /// A record encoded into a [`Slice`] through the group's scratch
    /// buffer: one allocation for a value over 20 bytes, none for the
    /// rest (inbox entries, read markers, dedupe entries), which fjall
    /// keeps inline.
    pub(crate) fn encode<M: prost::Message>(&mut self, record: &M) -> Slice {
        self.scratch.clear();
        // A Vec grows as needed: encoding into one cannot fail.
        let _ = record.encode(&mut self.scratch);
        Slice::from(self.scratch.as_slice())
    }

    pub(crate) fn delete(&mut self, ks: Ks, key: &[u8]) {
        self.capture(ks, key, None);
        self.touched(ks, key, None);
        self.overlay[ks as usize].insert(Slice::from(key), None);
    }

    /// Whether records of `ks` go through the [`RecordCache`]: a cached
    /// keyspace, and this writer the only one of its database.
    fn caches(&self, ks: Ks) -> bool {
        self.scope == Scope::SINGLE && RecordCache::cached(ks)
    }

    /// Updates or drops cached state a write to `key` changes.
    fn touched(&mut self, ks: Ks, key: &[u8], value: Option<&Slice>) {
        if self.caches(ks) {
            self.counters.records.get_mut().set(ks, key, value.cloned());
        }
        if ks == Ks::Members
            && let Some(conversation) = keys::read_u64(key, 0)
        {
            self.counters.member_ids.remove(&conversation);
        }
    }

    /// The user ids of a conversation's current members (committed or
    /// staged), cached across groups until its membership is written.
    pub(crate) fn member_ids(&mut self, conversation: u64) -> Result<std::sync::Arc<[u64]>, StoreError> {
        if let Some(ids) = self.counters.member_ids.get(&conversation) {
            return Ok(std::sync::Arc::clone(ids));
        }
        let mut ids = Vec::new();
        for (k, _) in self.scan_prefix(Ks::Members, &keys::of_conversation(ConversationId(conversation)))? {
            ids.push(
                keys::second(&k).ok_or(StoreError::Corrupt { keyspace: keys::MEMBERS, detail: "short key".into() })?,
            );
        }
        let ids: std::sync::Arc<[u64]> = ids.into();
        self.counters.member_ids.insert(conversation, std::sync::Arc::clone(&ids));
        Ok(ids)
    }

    // ----- counters ------------------------------------------------------------

    /// The highest seq in a conversation (committed or staged).
    pub(crate) fn last_seq(&mut self, conversation: u64) -> Result<u64, StoreError> {
        if let Some(&s) = self.counters.last_seq.get(&conversation) {
            return Ok(s);
        }
        let s = self.store.last_seq(conversation)?;
        self.counters.last_seq.insert(conversation, s);
        Ok(s)
    }

    /// Takes the next seq of a conversation. Call only once every check of
    /// the command has passed.
    pub(crate) fn next_seq(&mut self, conversation: u64) -> Result<u64, StoreError> {
        let s = self.last_seq(conversation)? + 1;
        self.counters.last_seq.insert(conversation, s);
        Ok(s)
    }

    /// The newest inbox_seq of a user (committed or staged).
    pub(crate) fn inbox_head(&mut self, user: u64) -> Result<u64, StoreError> {
        if let Some(&s) = self.counters.inbox_head.get(&user) {
            return Ok(s);
        }
        let s = self.store.inbox_head(user)?;
        self.counters.inbox_head.insert(user, s);
        Ok(s)
    }

    pub(crate) fn next_inbox_seq(&mut self, user: u64) -> Result<u64, StoreError> {
        let s = self.inbox_head(user)? + 1;
        self.counters.inbox_head.insert(user, s);
        Ok(s)
    }

    /// The devices of `user` that have a push target (committed or staged).
    /// Cached: the message path asks this for every recipient.
    pub(crate) fn push_devices(&mut self, user: u64) -> Result<Vec<u64>, StoreError> {
        if let Some(d) = self.counters.push_devices.get(&user) {
            return Ok(d.clone());
        }
        let mut devices = Vec::new();
        for (k, _) in self.scan_prefix(Ks::PushTargets, &keys::of_user(UserId(user)))? {
            devices.push(
                keys::second(&k)
                    .ok_or(StoreError::Corrupt { keyspace: keys::PUSH_TARGETS, detail: "short key".into() })?,
            );
        }
        self.counters.push_devices.insert(user, devices.clone());
        Ok(devices)
    }

    /// Drops the cached push devices of `user`; call after changing them.
    pub(crate) fn forget_push_devices(&mut self, user: u64) {
        self.counters.push_devices.remove(&user);
    }

    /// Allocates the next id from a meta counter (user, device,
    /// conversation ids start at 1), in this group's partition: the
    /// partition's own counter, so ids carry their partition.
    pub(crate) fn next_id(&mut self, counter: &'static [u8]) -> Result<u64, StoreError> {
        let key = keys::counter(counter, self.scope.partition);
        let next = match self.counters.next_ids.get(counter) {
            Some(&n) => n,
            None => match self.get(Ks::Meta, &key)? {
                Some(v) => keys::read_u64(&v, 0)
                    .ok_or(StoreError::Corrupt { keyspace: keys::META, detail: "id counter is not 8 bytes".into() })?,
                None => 1,
            },
        };
        self.counters.next_ids.insert(counter, next + 1);
        self.put(Ks::Meta, &key, (next + 1).to_be_bytes().to_vec());
        Ok(self.scope.partitioning.id(next, self.scope.partition))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::Durability;

    /// One group: reads `key` of Users, optionally writes it, commits.
    fn group(db: &Db, counters: &mut Counters, scope: Scope, write: Option<&[u8]>) -> Option<Vec<u8>> {
        let mut tx = Tx::new(db, counters, None, scope).unwrap();
        let seen = tx.get(Ks::Users, b"key").unwrap().map(|v| v.to_vec());
        if let Some(v) = write {
            tx.put(Ks::Users, b"key", v.to_vec());
        }
        tx.commit().unwrap();
        seen
    }

    #[test]
    fn a_single_nodes_writer_sees_its_own_writes_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), Durability::Buffered).unwrap();
        let mut counters = Counters::default();
        assert_eq!(group(&db, &mut counters, Scope::SINGLE, None), None, "absent, and now cached as absent");
        assert_eq!(group(&db, &mut counters, Scope::SINGLE, Some(b"one")), None);
        assert_eq!(group(&db, &mut counters, Scope::SINGLE, Some(b"two")), Some(b"one".to_vec()));
        assert_eq!(group(&db, &mut counters, Scope::SINGLE, None), Some(b"two".to_vec()));
        counters.clear();
        assert_eq!(group(&db, &mut counters, Scope::SINGLE, None), Some(b"two".to_vec()), "read again from the store");
    }

    #[test]
    fn a_key_written_several_times_in_a_group_is_committed_once_with_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), Durability::Buffered).unwrap();
        let mut counters = Counters::default();
        let mut tx = Tx::new(&db, &mut counters, None, Scope::SINGLE).unwrap();
        for v in [&b"one"[..], b"two", b"three"] {
            tx.put(Ks::Users, b"marker", v.to_vec());
        }
        tx.put(Ks::Users, b"gone", b"soon".to_vec());
        tx.delete(Ks::Users, b"gone");
        tx.put_unread(Ks::Inbox, b"entry", Slice::from(&b"e"[..]));
        let batch = tx.into_batch();
        assert_eq!(batch.len(), 3, "one write per key: marker, gone (a removal), the inbox entry");
        batch.commit().unwrap();
        let users = db.handles().unwrap();
        assert_eq!(users.ks(Ks::Users).get(b"marker").unwrap().as_deref(), Some(&b"three"[..]));
        assert_eq!(users.ks(Ks::Users).get(b"gone").unwrap(), None);
        assert_eq!(users.ks(Ks::Inbox).get(b"entry").unwrap().as_deref(), Some(&b"e"[..]));
    }

    /// A cluster node's writers share one database: what one partition's
    /// writer commits, another's next group reads.
    #[test]
    fn a_cluster_writer_reads_what_another_partitions_writer_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), Durability::Buffered).unwrap();
        let scope = |partition| Scope { partitioning: Partitioning::new(2), partition, capture: true };
        let (mut a, mut b) = (Counters::default(), Counters::default());
        assert_eq!(group(&db, &mut a, scope(0), None), None);
        group(&db, &mut b, scope(1), Some(b"from b"));
        assert_eq!(group(&db, &mut a, scope(0), None), Some(b"from b".to_vec()));
    }
}
