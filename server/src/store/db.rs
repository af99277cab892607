//! The fjall database: one keyspace per record family, opened, checked for
//! its format version, and reopened after write failures. Reads on
//! committed data are methods of [`Db`] (in `reads.rs`, `push.rs`), run off
//! the async workers with [`Db::read`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Durability, StoreError, keys};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Keyspaces, by record family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Ks {
    Meta,
    Users,
    Usernames,
    Devices,
    UserDevices,
    Tokens,
    Conversations,
    DirectPairs,
    Members,
    UserConversations,
    Messages,
    Inbox,
    Dedupe,
    PushTargets,
    PushJobs,
    PushDue,
    FormerMembers,
    Blocks,
}

impl Ks {
    pub(crate) const ALL: [Ks; 18] = [
        Ks::Meta,
        Ks::Users,
        Ks::Usernames,
        Ks::Devices,
        Ks::UserDevices,
        Ks::Tokens,
        Ks::Conversations,
        Ks::DirectPairs,
        Ks::Members,
        Ks::UserConversations,
        Ks::Messages,
        Ks::Inbox,
        Ks::Dedupe,
        Ks::PushTargets,
        Ks::PushJobs,
        Ks::PushDue,
        Ks::FormerMembers,
        Ks::Blocks,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Ks::Meta => keys::META,
            Ks::Users => keys::USERS,
            Ks::Usernames => keys::USERNAMES,
            Ks::Devices => keys::DEVICES,
            Ks::UserDevices => keys::USER_DEVICES,
            Ks::Tokens => keys::TOKENS,
            Ks::Conversations => keys::CONVERSATIONS,
            Ks::DirectPairs => keys::DIRECT_PAIRS,
            Ks::Members => keys::MEMBERS,
            Ks::UserConversations => keys::USER_CONVERSATIONS,
            Ks::Messages => keys::MESSAGES,
            Ks::Inbox => keys::INBOX,
            Ks::Dedupe => keys::DEDUPE,
            Ks::PushTargets => keys::PUSH_TARGETS,
            Ks::PushJobs => keys::PUSH_JOBS,
            Ks::PushDue => keys::PUSH_DUE,
            Ks::FormerMembers => keys::FORMER_MEMBERS,
            Ks::Blocks => keys::BLOCKS,
        }
    }
}

/// Memtable bytes (all keyspaces) after which they are flushed: what a
/// crash can leave to replay into memory. fjall's own defaults (64 MiB per
/// keyspace, 512 MiB of journal) let a restart after a kill under load
/// take 4-9 s. An open reads every journal file not yet deleted (the
/// active one, and sealed ones whose memtables are not all flushed) at
/// about 18 ms per MB on the reference box, whatever it replays: this and
/// [`JOURNAL_FILE_SIZE`] bound that read (bench/README.md, "Restart
/// time").
pub const UNFLUSHED_LIMIT: u64 = 8 << 20;

/// Memtable bytes past which a writer, once it has answered a group,
/// waits for the flushes to catch up before it takes the next: the hard
/// bound behind [`UNFLUSHED_LIMIT`]. fjall's workers run at a lower
/// priority than the writers ([`WORKER_NICE`]), so under a load that
/// fills the CPU their flushes would fall behind without it, memtables
/// piling up (hundreds of MiB in a minute of dm at full speed) and with
/// them what a crash leaves to replay. At twice [`UNFLUSHED_LIMIT`]
/// instead of four times, dm at full speed stalled for up to 0.5 s at a
/// time and lost an eighth of its rate on the reference box; at four
/// times, a kill under full load left up to 20 MiB of journal (a restart
/// in about 0.5 s, against 0.3 s with the workers at the writers'
/// priority).
pub const UNFLUSHED_HARD_LIMIT: u64 = 4 * UNFLUSHED_LIMIT;

/// Level-0 runs in a keyspace past which a writer waits between groups
/// for compaction to catch up, as for [`UNFLUSHED_HARD_LIMIT`]: below
/// fjall's own thresholds (20 runs: each write spins, on the CPU the
/// niced compaction needs; 30: writes halt), and twice the runs a merge
/// starts at ([`L0_TABLES_BEFORE_COMPACTION`]).
const L0_RUNS_WAIT: usize = 2 * L0_TABLES_BEFORE_COMPACTION as usize;

/// Level-0 runs in a keyspace from which a writer is slowed between
/// groups, the more the closer they are to [`L0_RUNS_WAIT`]: a merge
/// into a grown level 1 takes seconds, and a writer that went on at full
/// speed until it had to stop for up to [`FLUSH_WAIT_MAX`] left messages
/// waiting a second or more (the bench's soak row), where one slowed in
/// steps spreads the same wait thinly over every message. Two more than
/// a merge starts at: with one merge running the next tables wait their
/// turn.
const L0_RUNS_SLOW: usize = L0_TABLES_BEFORE_COMPACTION as usize + 2;

/// A writer's delay per write of the group it just committed at the most
/// level-0 runs short of [`L0_RUNS_WAIT`] (less below): 40 us, with about
/// five writes per message a rate of at most ~5,000 messages a second
/// then, with W = 64 over 32 pairs still answers within about 0.4 s.
const SLOW_PER_WRITE: std::time::Duration = std::time::Duration::from_micros(40);

/// The longest a writer is slowed after one group.
const SLOW_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a writer pauses after committing `writes` writes while the
/// busiest keyspace has `runs` level-0 runs: nothing below
/// [`L0_RUNS_SLOW`], then in equal steps up to [`SLOW_PER_WRITE`] a write
/// at one short of [`L0_RUNS_WAIT`], at most [`SLOW_MAX`].
fn slow_down(runs: usize, writes: usize) -> std::time::Duration {
    if runs < L0_RUNS_SLOW {
        return std::time::Duration::ZERO;
    }
    let steps = (L0_RUNS_WAIT - L0_RUNS_SLOW) as u32;
    let step = (runs + 1 - L0_RUNS_SLOW).min(L0_RUNS_WAIT - L0_RUNS_SLOW) as u32;
    let per_write = SLOW_PER_WRITE * step / steps;
    per_write.saturating_mul(u32::try_from(writes).unwrap_or(u32::MAX)).min(SLOW_MAX)
}

/// The longest a writer waits for flushes at a time: a flush that keeps
/// failing (a full disk) must not stop the writes too (fjall's own
/// limits still apply).
pub(crate) const FLUSH_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The nice value of fjall's workers (flushes, compactions), above the
/// writers' and the network's 0. A flush or compaction burst (100-200 ms
/// of CPU every second or so under load) then takes the CPU the
/// foreground leaves instead of half a shared core, which in the
/// open-loop dm rows was most of the p99. [`UNFLUSHED_HARD_LIMIT`] keeps
/// them from falling behind for good when the foreground takes all of it.
pub(crate) const WORKER_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`WORKER_NICE`]: run by
/// each of fjall's worker threads as it starts. Raising one's own nice
/// value needs no privilege; where it fails, the thread runs as before.
fn lower_worker_priority() {
    // On Linux, a process id of 0 names the calling thread only (each
    // thread has its own nice value), so the writers and the runtime's
    // threads keep theirs. Elsewhere it would name the whole process.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, WORKER_NICE) {
        tracing::debug!(error = %e, "could not lower a store worker's priority");
    }
}

/// Size past which the active journal file is sealed and a new one started
/// (fjall's default is 64 MB, over a second to read at start). fjall checks
/// it when a memtable flush begins, so at half [`UNFLUSHED_LIMIT`] nearly
/// every flush starts a new file, and the sealed one is deleted once its
/// memtables are tables. The store's patched fjall (vendor/fjall) makes it
/// a setting.
pub const JOURNAL_FILE_SIZE: u64 = 4 << 20;

/// Level-0 tables a keyspace collects before they are merged into level 1
/// (fjall's default is 4). [`UNFLUSHED_LIMIT`] makes flushes small and
/// frequent, and each merge into level 1 rewrites the tables there that
/// the new ones overlap (all of them, for keys of many conversations), so
/// merging twice the data at a time halves that rewriting. dm W = 64 on the
/// pinned 2-core box, four runs each: 20.0-22.3 us of server CPU per
/// message against 22.3-23.6 with 4; history pages of 50 over 1M messages
/// unchanged (cold p99 1.55 ms against 1.59). Point reads check the bloom
/// filters of up to 8 tables instead of 4. Fixed when a keyspace is created
/// (fjall keeps it in its metadata): stores made before keep 4.
const L0_TABLES_BEFORE_COMPACTION: u8 = 8;

/// The open database.
///
/// fjall poisons a database whose journal write or sync failed (a full
/// disk, an I/O error): every later write fails. The handles can therefore
/// be replaced by a fresh open of the same directory ([`Db::reopen`]),
/// which recovers from the journal exactly what was committed.
pub struct Db {
    dir: PathBuf,
    /// `None` only while `reopen` runs: readers then get
    /// [`StoreError::Reopening`] at once, so they let go of the old
    /// database's lock file instead of waiting for the new one.
    handles: RwLock<Option<Arc<Handles>>>,
    pub(crate) durability: Durability,
    /// How ids map to partitions (one on a single node): reads use it to
    /// know whether a record is authoritative here or a copy kept by
    /// effects.
    pub(crate) partitioning: super::Partitioning,
}

pub(crate) struct Handles {
    pub(crate) db: Database,
    keyspaces: Vec<Keyspace>,
}

impl Handles {
    pub(crate) fn ks(&self, ks: Ks) -> &Keyspace {
        // Ks::ALL and `keyspaces` are built in the same order.
        &self.keyspaces[ks as usize]
    }
}

impl Handles {
    fn open(dir: &Path, durability: Durability) -> Result<Handles, StoreError> {
        let db = Database::builder(dir)
            .manual_journal_persist(durability == Durability::Fsync)
            // A backstop for UNFLUSHED_LIMIT (the smallest fjall takes).
            .max_journaling_size(64 << 20)
            .journal_rotation_size(JOURNAL_FILE_SIZE)
            .worker_thread_start(Arc::new(lower_worker_priority))
            .open()?;
        let mut keyspaces = Vec::with_capacity(Ks::ALL.len());
        for ks in Ks::ALL {
            keyspaces.push(db.keyspace(ks.name(), || {
                KeyspaceCreateOptions::default().compaction_strategy(Arc::new(
                    fjall::compaction::Leveled::default().with_l0_threshold(L0_TABLES_BEFORE_COMPACTION),
                ))
            })?);
        }
        Ok(Handles { db, keyspaces })
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("durability", &self.durability).finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (or creates) the database in `dir`, checking its format
    /// version.
    pub fn open(dir: &Path, durability: Durability) -> Result<Db, StoreError> {
        let handles = Handles::open(dir, durability)?;
        let store = Db {
            dir: dir.to_path_buf(),
            handles: RwLock::new(Some(Arc::new(handles))),
            durability,
            partitioning: super::Partitioning::SINGLE,
        };
        let meta = store.ks(Ks::Meta)?;
        match meta.get(keys::FORMAT_VERSION)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(&v[..]).map(u32::from_be_bytes).map_err(|_| StoreError::Corrupt {
                    keyspace: keys::META,
                    detail: "format_version is not 4 bytes".into(),
                })?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::UnsupportedFormat { found, expected: FORMAT_VERSION });
                }
            }
            None => {
                if !store.ks(Ks::Users)?.is_empty()? {
                    return Err(StoreError::Corrupt { keyspace: keys::META, detail: "format_version missing".into() });
                }
                meta.insert(keys::FORMAT_VERSION, FORMAT_VERSION.to_be_bytes())?;
                store.db()?.persist(PersistMode::SyncAll)?;
            }
        }
        Ok(store)
    }

    /// The same database, read as one node of a cluster with this
    /// partitioning.
    pub fn with_partitioning(mut self, partitioning: super::Partitioning) -> Db {
        self.partitioning = partitioning;
        self
    }

    /// Whether two ids are in the same partition.
    pub(crate) fn same_partition(&self, a: u64, b: u64) -> bool {
        self.partitioning.of_id(a) == self.partitioning.of_id(b)
    }

    /// The durability acks are given at.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        // Each critical section clones or swaps one Arc: a poisoned lock
        // still holds a consistent value.
        let guard = self.handles.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(Arc::clone).ok_or(StoreError::Reopening)
    }

    pub(crate) fn ks(&self, ks: Ks) -> Result<Keyspace, StoreError> {
        Ok(self.handles()?.ks(ks).clone())
    }

    pub(crate) fn db(&self) -> Result<Database, StoreError> {
        Ok(self.handles()?.db.clone())
    }

    /// Applies replayed log records of `partition` (ascending positions)
    /// in one batch, with the applied position of the last one; records at
    /// or below what is applied are skipped.
    pub fn apply_log_records(&self, partition: u32, records: &[(u64, bytes::Bytes)]) -> Result<(), StoreError> {
        use prost::Message as _;
        let applied = self.applied(partition)?;
        let Some(last) = records.iter().map(|(p, _)| *p).filter(|p| *p > applied).max() else { return Ok(()) };
        let handles = self.handles()?;
        let mut batch = handles.db.batch();
        for (position, record) in records.iter().filter(|(p, _)| *p > applied) {
            let record = super::records::LogRecord::decode(record.clone())
                .map_err(|e| StoreError::Corrupt { keyspace: "log", detail: format!("record at {position}: {e}") })?;
            for w in record.writes {
                let ks = Ks::ALL.get(w.keyspace as usize).copied().ok_or(StoreError::Corrupt {
                    keyspace: "log",
                    detail: format!("record at {position}: keyspace {}", w.keyspace),
                })?;
                match w.value {
                    Some(v) => batch.insert(handles.ks(ks), w.key.to_vec(), v.to_vec()),
                    None => batch.remove(handles.ks(ks), w.key.to_vec()),
                }
            }
        }
        batch.insert(handles.ks(Ks::Meta), keys::applied(partition), last.to_be_bytes().to_vec());
        batch.durability(Some(self.durability.persist_mode())).commit()?;
        self.bound_unflushed();
        Ok(())
    }

    /// Records that this view has applied partition `partition`'s log up
    /// to `position` (past records that wrote nothing here).
    pub fn set_applied(&self, partition: u32, position: u64) -> Result<(), StoreError> {
        if position <= self.applied(partition)? {
            return Ok(());
        }
        self.ks(Ks::Meta)?.insert(keys::applied(partition), position.to_be_bytes())?;
        self.db()?.persist(self.durability.persist_mode())?;
        Ok(())
    }

    /// How far this view has applied partition `partition`'s log.
    pub fn applied(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(self.ks(Ks::Meta)?.get(keys::applied(partition))?.and_then(|v| keys::read_u64(&v, 0)).unwrap_or(0))
    }

    /// How far partition `target` has applied the effects it received
    /// from `source` (the source stream's sequence).
    pub fn effects_applied(&self, target: u32, source: u32) -> Result<u64, StoreError> {
        let key = keys::effects_from(target, source);
        Ok(self.ks(Ks::Meta)?.get(key)?.and_then(|v| keys::read_u64(&v, 0)).unwrap_or(0))
    }

    /// Writes every memtable out to tables and syncs (shutdown): the
    /// journal then holds nothing to replay, and the next start is quick.
    pub fn flush(&self) -> Result<(), StoreError> {
        let handles = self.handles()?;
        handles.db.persist(PersistMode::SyncAll)?;
        for ks in &handles.keyspaces {
            // fjall 3 exposes no public flush; `rotate_memtable_and_wait`
            // seals the active memtable and waits until it is a table. If
            // it fails, the journal still has everything (it was synced
            // above): the next start replays it.
            ks.rotate_memtable_and_wait()?;
        }
        // Everything is in tables: a new journal file, so the next start
        // reads (nearly) nothing, and the sealed one is deleted once fjall
        // sees its memtables flushed. The last flushes above can finish
        // out of order and keep it a moment; one more small flush, after
        // all of them, lets it go.
        handles.db.rotate_journal()?;
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let meta = handles.ks(Ks::Meta);
        meta.insert(keys::FLUSHED_AT, now_ms.to_be_bytes())?;
        meta.rotate_memtable_and_wait()?;
        handles.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Bounds what a crash leaves to replay: once the memtables hold
    /// [`UNFLUSHED_LIMIT`] bytes and no flush is running, every keyspace's
    /// memtable is sealed and flushed in the background, and the journal
    /// files behind them are deleted once flushed. Called by writers after
    /// each commit; cheap when under the limit.
    pub(crate) fn bound_unflushed(&self) {
        let Ok(handles) = self.handles() else { return };
        Self::rotate_if_due(&handles);
    }

    fn rotate_if_due(handles: &Handles) {
        if handles.db.write_buffer_size() < UNFLUSHED_LIMIT || handles.db.outstanding_flushes() > 0 {
            return;
        }
        // A flush a worker has taken is no longer queued, but its bytes
        // still count until it is done: sealing now would only make small
        // memtables (and tables) while it runs.
        if handles.keyspaces.iter().any(|ks| ks.sealed_memtable_count() > 0) {
            return;
        }
        for ks in &handles.keyspaces {
            // Sealing an empty memtable does nothing; a failure leaves the
            // data in the journal (fjall's own limits still apply).
            if let Err(e) = ks.rotate_memtable() {
                tracing::warn!(error = %e, "sealing a memtable failed");
            }
        }
    }

    /// Waits (at most [`FLUSH_WAIT_MAX`]) while the memtables hold
    /// [`UNFLUSHED_HARD_LIMIT`] bytes or more, or a keyspace has
    /// [`L0_RUNS_WAIT`] level-0 runs: flushes or compactions have fallen
    /// behind the writes. Short of that, from [`L0_RUNS_SLOW`] runs,
    /// pauses in proportion to the `writes` of the group just committed
    /// ([`slow_down`]). Called by writers between groups, after the
    /// last one was answered. Behind on flushes, the writer runs the
    /// queued ones itself rather than wait for a worker that may be in the
    /// middle of a long merge. Returns how long it paused or waited.
    pub(crate) fn wait_for_flushes(&self, writes: usize) -> std::time::Duration {
        let Ok(handles) = self.handles() else { return std::time::Duration::ZERO };
        let behind = |h: &Handles| {
            h.db.write_buffer_size() >= UNFLUSHED_HARD_LIMIT
                || h.keyspaces.iter().any(|ks| ks.l0_run_count() >= L0_RUNS_WAIT)
        };
        if !behind(&handles) {
            let runs = handles.keyspaces.iter().map(|ks| ks.l0_run_count()).max().unwrap_or(0);
            let pause = slow_down(runs, writes);
            if !pause.is_zero() {
                tracing::debug!(runs, writes, ?pause, "level-0 merges are behind: slowing the writer");
                std::thread::sleep(pause);
            }
            return pause;
        }
        let started = std::time::Instant::now();
        let mut asked = None::<std::time::Instant>;
        let mut help = true;
        while behind(&handles) {
            if started.elapsed() >= FLUSH_WAIT_MAX {
                tracing::warn!(
                    unflushed = handles.db.write_buffer_size(),
                    "memtable flushes or compactions are not keeping up; writing on"
                );
                break;
            }
            // A flush finishing may leave the rest due for sealing.
            Self::rotate_if_due(&handles);
            // fjall asks for compactions only after flushes, and a flush
            // may be far off while this writer waits: ask for the
            // keyspaces at the limit now and then.
            if asked.is_none_or(|at| at.elapsed() >= std::time::Duration::from_millis(10)) {
                for ks in handles.keyspaces.iter().filter(|ks| ks.l0_run_count() >= L0_RUNS_WAIT) {
                    ks.request_compaction();
                }
                asked = Some(std::time::Instant::now());
            }
            // Behind on flushes only (not on merges, which more level-0
            // tables would put further behind): a flush waiting for
            // fjall's workers runs here instead. With one worker busy with
            // a merge (seconds, once level 1 has grown), the writer then
            // waits for that flush, not for the merge.
            let flushed = help
                && handles.db.write_buffer_size() >= UNFLUSHED_HARD_LIMIT
                && !handles.keyspaces.iter().any(|ks| ks.l0_run_count() >= L0_RUNS_WAIT)
                && match handles.db.flush_queued() {
                    Ok(ran) => ran,
                    Err(e) => {
                        tracing::error!(error = %e, "a flush on the writer's thread failed");
                        help = false;
                        false
                    }
                };
            if !flushed {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        started.elapsed()
    }

    /// Bytes held in memtables, not yet in tables: right after an open,
    /// what recovery replayed from the journal.
    pub fn unflushed_bytes(&self) -> u64 {
        self.handles().map_or(0, |h| h.db.write_buffer_size())
    }

    /// Bytes of journal written in the store's directory now (what a start
    /// reads). fjall sizes each journal file to 64 MiB up front (sparse),
    /// so the blocks written count, not the length.
    pub fn journal_bytes(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| written_bytes(&m))
            .sum()
    }

    /// The number of the last group commit that reached the store (see
    /// the writer: it tells whether a commit that reported failure was
    /// written after all).
    pub(crate) fn commit_seq(&self) -> Result<u64, StoreError> {
        match self.ks(Ks::Meta)?.get(keys::COMMIT_SEQ)? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(&v[..])
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt { keyspace: keys::META, detail: "commit_seq is not 8 bytes".into() }),
        }
    }

    /// Whether the directory can take writes again: a probe file of
    /// `bytes` is written and synced (and removed).
    pub fn has_space(&self, bytes: usize) -> bool {
        use std::io::Write;
        let probe = self.dir.join(".space-probe");
        let ok = std::fs::File::create(&probe)
            .and_then(|mut f| {
                f.write_all(&vec![0u8; bytes])?;
                f.sync_data()
            })
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }

    /// Replaces poisoned handles with a fresh open of the same directory.
    /// Meanwhile reads fail fast with [`StoreError::Reopening`]. The old
    /// database must be gone first (fjall holds a lock file per directory,
    /// also through the keyspace handles of reads still running), so the
    /// open is retried for a short while. If no handles can be put back the
    /// process ends: nothing could be served anyway, and everything
    /// acknowledged is on disk for the next start.
    pub fn reopen(&self) -> Result<(), StoreError> {
        // Taken out under the lock, dropped outside it: dropping flushes
        // fjall's journal, and readers must not wait on that.
        let old = self.handles.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
        let mut last = None;
        for _ in 0..50 {
            match Handles::open(&self.dir, self.durability) {
                Ok(h) => {
                    *self.handles.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(h));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let e = last.map_or_else(|| "unknown".to_string(), |e| e.to_string());
        tracing::error!(error = %e, dir = %self.dir.display(), "cannot reopen the store; exiting");
        std::process::exit(70);
    }

    /// Runs a blocking read off the async executor's workers.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Corrupt { keyspace: "-", detail: format!("read task failed: {e}") }),
        }
    }

    pub(crate) fn get_record<M: prost::Message + Default>(&self, ks: Ks, key: &[u8]) -> Result<Option<M>, StoreError> {
        match self.ks(ks)?.get(key)? {
            Some(v) => decode(ks, &v).map(Some),
            None => Ok(None),
        }
    }
}

pub(crate) fn decode<M: prost::Message + Default>(ks: Ks, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt { keyspace: ks.name(), detail: e.to_string() })
}

/// Bytes a file has on disk (its length where blocks are not known).
fn written_bytes(m: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (m.blocks() * 512).min(m.len())
    }
    #[cfg(not(unix))]
    m.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_writer_is_slowed_in_steps_as_level_0_runs_near_the_wait() {
        assert_eq!(slow_down(L0_TABLES_BEFORE_COMPACTION as usize, 1_000), Duration::ZERO, "a merge due is normal");
        assert_eq!(slow_down(L0_RUNS_SLOW - 1, 1_000), Duration::ZERO);
        let first = slow_down(L0_RUNS_SLOW, 1_000);
        assert!(first > Duration::ZERO);
        let mut last = first;
        for runs in L0_RUNS_SLOW + 1..L0_RUNS_WAIT {
            let pause = slow_down(runs, 1_000);
            assert!(pause > last, "{runs} runs: {pause:?} after {last:?}");
            last = pause;
        }
        assert_eq!(slow_down(L0_RUNS_WAIT - 1, 100), SLOW_PER_WRITE * 100);
        assert_eq!(slow_down(L0_RUNS_WAIT - 1, 1_000_000), SLOW_MAX, "capped");
        assert_eq!(slow_down(L0_RUNS_WAIT - 1, 0), Duration::ZERO, "nothing written, nothing to slow");
    }
}
