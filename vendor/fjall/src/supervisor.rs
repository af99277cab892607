// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use lsm_tree::{Memtable, SequenceNumberCounter};

use crate::{
    db::Keyspaces,
    flush::manager::FlushManager,
    journal::{manager::JournalManager, Journal},
    snapshot_tracker::SnapshotTracker,
    write_buffer_manager::WriteBufferManager,
};
use std::sync::{Arc, Mutex, RwLock};

pub struct SupervisorInner {
    pub db_config: crate::Config,

    /// Dictionary of all keyspaces
    #[doc(hidden)]
    pub keyspaces: Arc<RwLock<Keyspaces>>,

    pub(crate) write_buffer_size: WriteBufferManager,
    pub(crate) flush_manager: FlushManager,

    pub seqno: SequenceNumberCounter,

    pub snapshot_tracker: SnapshotTracker,

    pub(crate) journal: Arc<Journal>,

    /// Tracks journal size and garbage collects sealed journals when possible
    pub(crate) journal_manager: Arc<RwLock<JournalManager>>,

    pub(crate) backpressure_lock: Mutex<()>,

    /// Sealed memtables, each kept alive here until this is its last
    /// reference, so that the thread that drops it last is a worker
    /// (`reap_retired_memtables`) and not whichever thread happened to run
    /// the version GC: that GC drops old versions while holding the
    /// keyspace's version lock, and freeing a memtable of a few MiB (its
    /// skiplist, node by node) took 10-30 ms there, blocking every read
    /// and write of the keyspace and, when a writer rotated, that writer.
    pub(crate) retired_memtables: Mutex<Vec<Arc<Memtable>>>,
}

#[derive(Clone)]
pub struct Supervisor(Arc<SupervisorInner>);

impl std::ops::Deref for Supervisor {
    type Target = SupervisorInner;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Supervisor {
    pub fn new(inner: SupervisorInner) -> Self {
        Self(Arc::new(inner))
    }

    /// Keeps a just-sealed memtable until only this holds it.
    pub(crate) fn retire_memtable(&self, memtable: Arc<Memtable>) {
        #[expect(clippy::expect_used)]
        self.retired_memtables
            .lock()
            .expect("lock is poisoned")
            .push(memtable);
    }

    /// Drops the versions of every keyspace that no snapshot can read any
    /// more, deleting their version files.
    pub(crate) fn gc_versions(&self) {
        use crate::AbstractTree;

        let watermark = self.snapshot_tracker.get_seqno_safe_to_gc();

        #[expect(clippy::expect_used)]
        for keyspace in self.keyspaces.read().expect("lock is poisoned").values() {
            if let Err(e) = keyspace
                .tree
                .get_version_history_lock()
                .maintenance(keyspace.path(), watermark)
            {
                log::warn!(
                    "Version history GC failed for keyspace {:?}: {e:?}",
                    keyspace.name,
                );
            }
        }
    }

    /// Frees the retired memtables nothing else refers to any more, outside
    /// every lock. Returns how many it freed.
    pub(crate) fn reap_retired_memtables(&self) -> usize {
        let dead: Vec<Arc<Memtable>> = {
            #[expect(clippy::expect_used)]
            let mut retired = self.retired_memtables.lock().expect("lock is poisoned");
            if retired.is_empty() {
                return 0;
            }
            // Only versions (and readers holding them) refer to a sealed
            // memtable besides this list, and a version is never made
            // again from one that no longer lists it: at a count of one
            // nothing can take a new reference.
            let (dead, alive) = retired
                .drain(..)
                .partition(|m| Arc::strong_count(m) == 1);
            *retired = alive;
            dead
        };
        let n = dead.len();
        drop(dead);
        n
    }

    pub fn build_seqno_map(
        &self,
        keyspaces: &Keyspaces,
    ) -> Vec<crate::journal::manager::EvictionWatermark> {
        use crate::AbstractTree;

        let mut seqnos = Vec::with_capacity(keyspaces.len());

        for keyspace in keyspaces.values() {
            if let Some(lsn) = keyspace.tree.get_highest_memtable_seqno() {
                seqnos.push(crate::journal::manager::EvictionWatermark {
                    lsn,
                    keyspace: keyspace.clone(),
                });
            }
        }

        seqnos
    }
}
