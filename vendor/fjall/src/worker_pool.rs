// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::{
    compaction::worker::run as run_compaction, flush::worker::run as run_flush, poison::PoisonDart,
    stats::Stats, supervisor::Supervisor, Keyspace,
};
use lsm_tree::MemtableId;
use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

pub enum WorkerMessage {
    Flush,
    Compact(Keyspace),
    Close,
    RotateMemtable(Keyspace, MemtableId),
}

impl std::fmt::Debug for WorkerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            match self {
                Self::Flush => Cow::Borrowed("WorkerMessage:Flush"),
                Self::Compact(k) => Cow::Owned(format!("WorkerMessage:Compact({:?})", k.name)),
                Self::Close => Cow::Borrowed("WorkerMessage:Close"),
                Self::RotateMemtable(k, memtable_id) =>
                    Cow::Owned(format!("WorkerMessage:Rotate({:?}, {memtable_id})", k.name)),
            }
        )
    }
}

type WorkerHandle = JoinHandle<Result<(), crate::Error>>;

pub struct WorkerPool {
    thread_handles: Mutex<Vec<WorkerHandle>>,
    pub(crate) rx: flume::Receiver<WorkerMessage>,
    pub(crate) sender: flume::Sender<WorkerMessage>,
    /// Compactions that worker #0 of a pool of several passed on: only
    /// the other workers read this queue, so #0 stays free for flushes.
    pub(crate) compactions_rx: flume::Receiver<Keyspace>,
    compactions: flume::Sender<Keyspace>,
}

impl WorkerPool {
    pub fn prepare() -> Self {
        let (sender, rx) = flume::bounded(1_000);
        let (compactions, compactions_rx) = flume::bounded(1_000);

        Self {
            thread_handles: Mutex::default(),
            rx,
            sender,
            compactions_rx,
            compactions,
        }
    }

    pub fn start(
        &self,
        pool_size: usize,
        supervisor: &Supervisor,
        stats: &Arc<Stats>,
        poison_dart: &PoisonDart,
        thread_counter: &Arc<AtomicUsize>,
    ) -> crate::Result<()> {
        log::debug!("Starting worker pool with {pool_size} threads");

        let thread_handles = claim_and_spawn(pool_size, thread_counter, |i| {
            std::thread::Builder::new()
                .name("fjall:worker".to_string())
                .spawn({
                    log::trace!("Starting fjall worker thread #{i}");

                    let worker_state = WorkerState {
                        pool_size,
                        worker_id: i,
                        rx: self.rx.clone(),
                        supervisor: supervisor.clone(),
                        stats: stats.clone(),
                        sender: self.sender.clone(),
                        compactions: self.compactions.clone(),
                        compactions_rx: self.compactions_rx.clone(),
                    };

                    let thread_counter = thread_counter.clone();
                    let poison_dart = poison_dart.clone();
                    let on_start = supervisor.db_config.worker_thread_start.clone();

                    move || {
                        // The counter must drop on *every* way out of this
                        // thread, not just the graceful one: `Database::drop`
                        // spins on it (`while counter > 0`), so a worker that
                        // returns an error or unwinds would keep the database
                        // closing forever.
                        let _counter_guard = ActiveThreadGuard(thread_counter);

                        if let Some(on_start) = on_start {
                            on_start();
                        }

                        loop {
                            match worker_tick(&worker_state) {
                                Ok(should_abort) => {
                                    if should_abort {
                                        log::debug!("Worker #{i} closes because DB is dropping");
                                        return Ok(());
                                    }
                                }
                                Err(e) => {
                                    log::error!("Worker #{i} crashed: {e:?}");
                                    poison_dart.poison();
                                    return Err(e);
                                }
                            }
                        }
                    }
                })
        })?;

        *self.thread_handles.lock().expect("lock is poisoned") = thread_handles;

        Ok(())
    }
}

/// Claims one slot in the active thread counter per worker, immediately before
/// that worker is spawned, and hands the slot straight back if the spawn fails.
///
/// Claiming the whole pool up front would leak the slots of the workers that failed
/// spawn never reaches: nothing ever decrements them, because those threads do
/// not exist, and `DatabaseInner::drop` waits for the counter to reach zero.
///
/// The spawn is a parameter so the failure path can be tested without having to
/// exhaust the operating system's thread limit.
fn claim_and_spawn<H, S: FnMut(usize) -> std::io::Result<H>>(
    pool_size: usize,
    thread_counter: &Arc<AtomicUsize>,
    mut spawn: S,
) -> std::io::Result<Vec<H>> {
    (0..pool_size)
        .map(|i| {
            thread_counter.fetch_add(1, Relaxed);

            spawn(i).inspect_err(|_| {
                thread_counter.fetch_sub(1, Relaxed);
            })
        })
        .collect()
}

/// Decrements the pool's active thread counter when a worker thread leaves,
/// whatever the reason: graceful close, error return or unwinding panic.
///
/// `DatabaseInner::drop` waits for this counter to reach zero, so a leaked
/// increment makes closing the database hang forever.
struct ActiveThreadGuard(Arc<AtomicUsize>);

impl Drop for ActiveThreadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct WorkerState {
    pool_size: usize,
    worker_id: usize,
    supervisor: Supervisor,
    rx: flume::Receiver<WorkerMessage>,
    sender: flume::Sender<WorkerMessage>,
    compactions: flume::Sender<Keyspace>,
    compactions_rx: flume::Receiver<Keyspace>,
    stats: Arc<Stats>,
}

impl WorkerState {
    /// Whether this worker leaves compactions to the others: worker #0 of
    /// a pool of several, so that a flush never waits behind a merge.
    fn flushes_only(&self) -> bool {
        self.pool_size > 1 && self.worker_id == 0
    }

    /// The next message: for a worker that also compacts, a compaction
    /// worker #0 passed on if there is one, else the next from the shared
    /// queue. Such a worker waits on the shared queue at most
    /// [`PASSED_ON_POLL`] at a time: a compaction passed on while it
    /// waited is then taken within that. (A `flume::Selector` over both
    /// queues loses its wakeup when another receiver takes the message
    /// it was woken for, and then waits forever.)
    fn next_message(&self) -> Option<WorkerMessage> {
        // The only worker takes everything from the shared queue: nothing
        // is passed on to it.
        if self.flushes_only() || self.pool_size == 1 {
            return self.rx.recv().ok();
        }
        loop {
            if let Ok(keyspace) = self.compactions_rx.try_recv() {
                return Some(WorkerMessage::Compact(keyspace));
            }
            match self.rx.recv_timeout(PASSED_ON_POLL) {
                Ok(item) => return Some(item),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// How long a worker that compacts waits on the shared queue before it
/// looks for compactions passed on by worker #0. Worker #0 passes one on
/// when the others are busy (they look when done) or, in a race, while
/// one of them is waiting: that one takes it within this.
const PASSED_ON_POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn worker_tick(ctx: &WorkerState) -> crate::Result<bool> {
    let Some(item) = ctx.next_message() else {
        return Ok(true);
    };

    log::trace!("Worker #{} got message: {item:?}", ctx.worker_id);

    match item {
        WorkerMessage::Close => {
            return Ok(true);
        }
        WorkerMessage::RotateMemtable(keyspace, memtable_id) => {
            log::trace!("acquiring journal lock");
            let journal_writer = keyspace.supervisor.journal.get_writer()?;
            // No `Flush` message to this pool: its queue may be full, and
            // a send from the only worker would then never return. The
            // flush queued by the rotation (or an older one) runs here.
            if keyspace.inner_rotate_memtable(journal_writer, memtable_id, false)? {
                flush_next(ctx)?;
            }
        }
        WorkerMessage::Flush => flush_next(ctx)?,
        WorkerMessage::Compact(keyspace) => {
            // Worker #0 of several keeps itself free for flushes. It used
            // to send the compaction back into the shared queue, which it
            // reads itself: while the others were busy it took the message
            // again at once, spinning on a CPU for as long as a merge ran.
            // The queue it passes it on to is read by the others only.
            if ctx.flushes_only() {
                ctx.compactions.try_send(keyspace).ok();
                return Ok(false);
            }

            run_compaction(&keyspace, &ctx.supervisor.snapshot_tracker, &ctx.stats)?;
        }
    }

    // Sealed memtables that flushes and the version GC have let go of are
    // freed here, off the writers' threads and outside every lock.
    ctx.supervisor.reap_retired_memtables();

    Ok(false)
}

/// Before a flush of `keyspace`: makes the journal durable through every
/// memtable of it that is sealed (fjall issue 329: a table must not
/// outlive the journal entries before it), and past the rotation size
/// starts a new journal file. The journal's lock, which every write takes,
/// is held only to write out its buffer and, when rotating, to switch
/// files: the syncs, the new file's creation and its folder's sync
/// (milliseconds each on a busy disk, which writers used to wait out) run
/// without it.
fn sync_or_rotate_journal(supervisor: &Supervisor, keyspace: &Keyspace) -> crate::Result<()> {
    use lsm_tree::AbstractTree;

    let journal = &supervisor.journal;

    #[expect(clippy::expect_used)]
    let _rotation = journal.rotation.lock().expect("lock is poisoned");

    // Memtables are sealed holding the journal's lock, after every entry
    // they hold was written to the journal: those sealed before a sync
    // point (the active memtable's id then) are durable once it is synced.
    let (synced, next_path, mut active_then) = {
        log::trace!("acquiring journal lock to maybe rotate journal");
        let mut journal_writer = journal.get_writer()?;
        let rotate =
            journal_writer.pos()? > supervisor.db_config.journal_rotation_size_in_bytes;
        let next_path = if rotate {
            Some(journal_writer.next_path()?)
        } else {
            None
        };
        let active = keyspace.tree.active_memtable().id();
        (journal_writer.flush_for_sync()?, next_path, active)
    };
    synced.sync_all()?;

    if let Some(next_path) = next_path {
        // Made and synced before it is used; nothing else starts a
        // journal file while `rotation` is held.
        let next = crate::journal::writer::Writer::create_new(&next_path)?;
        if let Some(folder) = next_path.parent() {
            crate::file::fsync_directory(folder)?;
        }

        let sealed = {
            let mut journal_writer = journal.get_writer()?;

            #[expect(clippy::expect_used)]
            let mut journal_manager = supervisor
                .journal_manager
                .write()
                .expect("lock is poisoned");

            let seqno_map = {
                #[expect(clippy::expect_used)]
                let keyspaces = supervisor.keyspaces.write().expect("lock is poisoned");

                supervisor.build_seqno_map(&keyspaces)
            };

            // The bytes written, not the file's length: a journal file is
            // made 64 MiB long (sparse) up front, and counting that made
            // every rotation look past a `max_journaling_size` under 64 MiB.
            let size = journal_writer.pos()?;
            let (sealed_path, sealed) = journal_writer.switch_to(next)?;
            log::debug!(
                "Sealed journal at {} ({size}B), now writing {}",
                sealed_path.display(),
                next_path.display(),
            );
            journal_manager.sealed(sealed_path, seqno_map, size);

            if journal_manager.disk_space_used()
                >= supervisor.db_config.max_journaling_size_in_bytes
            {
                let stragglers =
                    journal_manager.get_keyspaces_to_flush_for_oldest_journal_eviction();

                for keyspace in stragglers {
                    log::info!(
                        "Rotating {:?} to try to reduce journal size",
                        keyspace.name,
                    );
                    keyspace.request_rotation();
                }
            }

            sealed
        };
        // What was written to the sealed file since the first sync. Until
        // it is done, a sync of the journal (a persist, a durable batch)
        // syncs that file too, under the lock.
        sealed.sync_all()?;
        journal.get_writer()?.sealed_synced();
    }

    // A memtable of this keyspace sealed since the sync point may hold
    // entries written after it, and the flush takes every sealed one:
    // sync again. The third time, holding the lock, so that no seal can
    // come between (as before this patch).
    for attempt in 0.. {
        let mut journal_writer = journal.get_writer()?;
        let active = keyspace.tree.active_memtable().id();
        if active == active_then {
            break;
        }
        active_then = active;
        if attempt >= 2 {
            journal_writer.persist(crate::PersistMode::SyncAll)?;
            break;
        }
        let synced = journal_writer.flush_for_sync()?;
        drop(journal_writer);
        synced.sync_all()?;
    }

    Ok(())
}

/// Runs the oldest queued flush, if any.
fn flush_next(ctx: &WorkerState) -> crate::Result<()> {
    flush_queued(&ctx.supervisor, &ctx.stats, &ctx.sender, ctx.pool_size).map(|_| ())
}

/// Runs the oldest queued flush, if any, on the calling thread (a worker's,
/// or a writer's through `Database::flush_queued`), then asks for
/// `compactions` compactions of its keyspace. Returns whether there was
/// one.
pub(crate) fn flush_queued(
    supervisor: &Supervisor,
    stats: &Stats,
    sender: &flume::Sender<WorkerMessage>,
    compactions: usize,
) -> crate::Result<bool> {
    let Some(task) = supervisor.flush_manager.dequeue() else {
        return Ok(false);
    };

    sync_or_rotate_journal(supervisor, &task.keyspace)?;

    run_flush(
        &task,
        &supervisor.write_buffer_size,
        &supervisor.snapshot_tracker,
        stats,
    )?;

    for _ in 0..compactions {
        sender
            .try_send(WorkerMessage::Compact(task.keyspace.clone()))
            .ok();
    }

    // What a rotation on a caller's thread left to a worker
    // (`Keyspace::inner_rotate_memtable`).
    supervisor.gc_versions();

    supervisor
        .journal_manager
        .write()
        .expect("lock is poisoned")
        .maintenance()?;

    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AbstractTree, Database, KeyspaceCreateOptions};
    use test_log::test;

    /// The state of worker `worker_id` of a pool of `pool_size`, for a
    /// test to run its ticks by hand (on a database opened without
    /// workers).
    fn worker_state(db: &Database, pool_size: usize, worker_id: usize) -> WorkerState {
        WorkerState {
            pool_size,
            worker_id,
            supervisor: db.supervisor.clone(),
            rx: db.worker_pool.rx.clone(),
            sender: db.worker_pool.sender.clone(),
            compactions: db.worker_pool.compactions.clone(),
            compactions_rx: db.worker_pool.compactions_rx.clone(),
            stats: db.stats.clone(),
        }
    }

    // https://github.com/fjall-rs/fjall/pull/303
    #[test]
    fn keyspace_compact_after_startup() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;

        {
            let db = Database::builder(&folder).open()?;

            let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;

            ks.insert("a", "a")?;
            ks.rotate_memtable_and_wait()?;

            ks.insert("a", "a")?;
            ks.rotate_memtable_and_wait()?;

            ks.insert("a", "a")?;
            ks.rotate_memtable_and_wait()?;

            assert!(ks.tree.l0_run_count() > 0);
        }

        {
            let db = Database::builder(&folder)
                .worker_threads_unchecked(0)
                .open()?;

            assert_eq!(
                1,
                db.worker_pool.rx.len(),
                "worker message should be enqueued on startup",
            );
            let item = db.worker_pool.rx.try_recv().expect("should get message");
            assert!(
                matches!(item, WorkerMessage::Compact(_)),
                "worker message should be compaction request",
            );
        }

        Ok(())
    }

    /// The only worker, rotating a memtable on request while its queue is
    /// full, must not block sending a `Flush` message into that queue (it is
    /// the one who would drain it): it flushes the memtable itself. Every
    /// write past the memtable size sends a rotation request, so a single
    /// worker behind a busy writer sees a full queue (confabd stalled there
    /// at ~5M messages on one CPU).
    #[test]
    fn the_only_worker_rotating_with_a_full_queue_flushes_itself() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        ks.insert("a", "a")?;

        // Startup may have queued messages: drained. The worker takes the
        // rotation request, then waits for the journal lock held here while
        // the queue fills to its bound (as writers refill it in production).
        while db.worker_pool.rx.try_recv().is_ok() {}
        let active = ks.tree.active_memtable().id();
        assert!(db
            .worker_pool
            .sender
            .try_send(WorkerMessage::RotateMemtable(ks.clone(), active))
            .is_ok());
        let journal = db.supervisor.journal.get_writer()?;

        let state = worker_state(&db, 1, 0);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = worker_tick(&state).map_err(|e| format!("{e:?}"));
            done.send(outcome).ok();
        });

        let taken_by = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !db.worker_pool.rx.is_empty() {
            assert!(std::time::Instant::now() < taken_by, "the worker never took the request");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        while db
            .worker_pool
            .sender
            .try_send(WorkerMessage::Compact(ks.clone()))
            .is_ok()
        {}
        drop(journal);

        // A deadline to detect the hang, not a timing assertion: the tick
        // takes milliseconds, and blocked it never finishes.
        let outcome = finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the worker blocked sending into its own full queue");
        assert_eq!(outcome, Ok(false));

        assert_eq!(ks.tree.sealed_memtable_count(), 0, "the memtable was flushed");
        assert!(ks.tree.table_count() > 0, "the flush wrote a table");
        assert_eq!(ks.get("a")?.as_deref(), Some(&b"a"[..]));

        Ok(())
    }

    /// Worker #0 of a pool of several passes a compaction on to a queue
    /// only the others read, and one of them runs it. It used to send it
    /// back into the shared queue it reads itself: with the others busy it
    /// took it again at once, spinning a CPU for as long as their merge
    /// ran (on a 2-CPU box, half the machine during every merge).
    #[test]
    fn the_first_of_several_workers_passes_compactions_on_to_the_others() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", || {
            KeyspaceCreateOptions::default().compaction_strategy(Arc::new(
                crate::compaction::Leveled::default().with_l0_threshold(2),
            ))
        })?;
        let first = worker_state(&db, 2, 0);
        let second = worker_state(&db, 2, 1);

        // Two overlapping tables in level 0, flushed by worker #0's ticks.
        for key in ["a", "b"] {
            ks.insert("a", key)?;
            ks.insert(key, key)?;
            assert!(ks.rotate_memtable()?);
            while db.worker_pool.rx.try_recv().is_ok() {}
            assert!(db.worker_pool.sender.try_send(WorkerMessage::Flush).is_ok());
            assert_eq!(worker_tick(&first).map_err(|e| format!("{e:?}")), Ok(false));
        }
        while db.worker_pool.rx.try_recv().is_ok() {}
        while db.worker_pool.compactions_rx.try_recv().is_ok() {}
        assert_eq!(ks.tree.table_count(), 2);

        assert!(db
            .worker_pool
            .sender
            .try_send(WorkerMessage::Compact(ks.clone()))
            .is_ok());
        assert_eq!(worker_tick(&first).map_err(|e| format!("{e:?}")), Ok(false));
        assert!(db.worker_pool.rx.is_empty(), "worker #0 put the compaction back where it reads");
        assert_eq!(db.worker_pool.compactions_rx.len(), 1);
        assert_eq!(ks.tree.table_count(), 2, "worker #0 compacted");

        // Worker #1 takes the compaction passed on before the flush queued
        // meanwhile (a queued flush has waited no longer than a merge
        // that worker #0 would have run at once).
        assert!(db.worker_pool.sender.try_send(WorkerMessage::Flush).is_ok());
        assert_eq!(worker_tick(&second).map_err(|e| format!("{e:?}")), Ok(false));
        assert!(db.worker_pool.compactions_rx.is_empty());
        assert_eq!(ks.tree.table_count(), 1, "the two tables were merged");
        assert_eq!(ks.l0_table_count(), 0);
        assert_eq!(db.worker_pool.rx.len(), 1, "the flush waits for the next tick");
        assert_eq!(worker_tick(&second).map_err(|e| format!("{e:?}")), Ok(false));
        assert!(db.worker_pool.rx.is_empty());
        assert_eq!(ks.get("a")?.as_deref(), Some(&b"b"[..]));
        assert_eq!(ks.get("b")?.as_deref(), Some(&b"b"[..]));

        Ok(())
    }

    /// `Database::flush_queued` runs the oldest queued flush on the calling
    /// thread (a writer's, while the only worker is busy with a merge):
    /// the sealed memtable becomes a table, its bytes stop counting as
    /// unflushed, a compaction is asked for, and with nothing queued it
    /// does nothing.
    #[test]
    fn a_caller_runs_a_queued_flush_itself() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;

        assert!(!db.flush_queued()?, "nothing is queued");
        let value = vec![7u8; 1_000];
        for i in 0..1_000u32 {
            ks.insert(i.to_be_bytes(), &value)?;
        }
        assert!(ks.rotate_memtable()?);
        while db.worker_pool.rx.try_recv().is_ok() {}
        let unflushed = db.write_buffer_size();
        assert!(unflushed >= 1_000_000, "{unflushed} bytes unflushed");
        assert_eq!(ks.tree.table_count(), 0);

        assert!(db.flush_queued()?);
        assert_eq!(ks.tree.table_count(), 1);
        assert_eq!(ks.sealed_memtable_count(), 0);
        assert!(db.write_buffer_size() < unflushed / 100);
        assert!(
            matches!(db.worker_pool.rx.try_recv(), Ok(WorkerMessage::Compact(_))),
            "a compaction of the keyspace was asked for"
        );
        assert!(!db.flush_queued()?, "the one flush was taken");
        assert_eq!(ks.get(999u32.to_be_bytes())?.as_deref(), Some(&value[..]));

        // Flushed memtables are freed by the caller too, once the versions
        // that held them are gone (no worker runs here to do it).
        for round in 0..4u32 {
            ks.insert(round.to_be_bytes(), &value)?;
            assert!(ks.rotate_memtable()?);
            assert!(db.flush_queued()?);
        }
        let retired = db.supervisor.retired_memtables.lock().map(|r| r.len()).ok();
        assert!(
            retired.is_some_and(|n| n < 5),
            "{retired:?} of 5 flushed memtables still held"
        );

        Ok(())
    }

    /// A sealed memtable is freed by a worker's tick, outside every lock,
    /// and not by the version GC that a rotation runs under the version
    /// lock on the rotating thread (a writer's, in confabd: freeing a
    /// memtable of a few MiB there stalled it 10-30 ms).
    #[test]
    fn a_sealed_memtable_is_freed_by_a_worker_not_by_the_version_gc() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        let state = worker_state(&db, 1, 0);
        while db.worker_pool.rx.try_recv().is_ok() {}

        ks.insert("a", "a")?;
        let first = Arc::downgrade(&ks.tree.active_memtable());
        assert!(ks.rotate_memtable()?);
        // The rotation asked the (absent) workers to flush: this tick is
        // theirs. The flush writes a table and a version without it.
        while db.worker_pool.rx.try_recv().is_ok() {}
        assert!(db.worker_pool.sender.try_send(WorkerMessage::Flush).is_ok());
        assert_eq!(worker_tick(&state).map_err(|e| format!("{e:?}")), Ok(false));
        assert_eq!(ks.tree.sealed_memtable_count(), 0, "the memtable was flushed");

        // Later rotations run the version GC, which drops every version
        // that still listed it. Here it outlives them, in the retired list.
        for key in ["b", "c", "d"] {
            ks.insert(key, key)?;
            assert!(ks.rotate_memtable()?);
        }
        assert!(
            first.upgrade().is_some(),
            "the version GC freed the memtable on the rotating thread"
        );
        assert_eq!(
            db.supervisor
                .retired_memtables
                .lock()
                .map(|r| r.iter().any(|m| Arc::strong_count(m) == 1))
                .ok(),
            Some(true),
            "nothing but the retired list holds the flushed memtable"
        );

        // The next tick of a worker frees it.
        while db.worker_pool.rx.try_recv().is_ok() {}
        assert!(db.worker_pool.sender.try_send(WorkerMessage::Flush).is_ok());
        assert_eq!(worker_tick(&state).map_err(|e| format!("{e:?}")), Ok(false));
        assert!(first.upgrade().is_none(), "a worker's tick freed the memtable");
        assert_eq!(ks.get("a")?.as_deref(), Some(&b"a"[..]));

        Ok(())
    }

    #[test]
    fn a_flush_past_the_rotation_size_starts_a_journal_counting_bytes_written() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let value = vec![7u8; 1_024];
        {
            let db = Database::builder(&folder)
                .worker_threads_unchecked(0)
                .journal_rotation_size(1_024 * 1_024)
                .open()?;
            let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
            let state = worker_state(&db, 1, 0);
            for i in 0..1_500u32 {
                ks.insert(i.to_be_bytes(), &value)?;
            }
            let first = db.supervisor.journal.get_writer()?.path.clone();
            assert!(ks.rotate_memtable()?);
            while db.worker_pool.rx.try_recv().is_ok() {}
            assert!(db.worker_pool.sender.try_send(WorkerMessage::Flush).is_ok());
            assert_eq!(worker_tick(&state).map_err(|e| format!("{e:?}")), Ok(false));

            let second = db.supervisor.journal.get_writer()?.path.clone();
            assert_ne!(first, second, "the flush started a new journal file");
            // The sealed file is flushed, so the maintenance after the
            // flush deleted it; what it counted is gone with it.
            assert!(!first.exists(), "the flushed journal was deleted");
            assert_eq!(
                db.supervisor
                    .journal_manager
                    .read()
                    .map(|m| m.disk_space_used())
                    .ok(),
                Some(0)
            );

            // Writes after the switch go to the new file, and a sealed
            // file not yet flushed counts what was written to it, not its
            // preallocated 64 MiB.
            for i in 1_500..3_000u32 {
                ks.insert(i.to_be_bytes(), &value)?;
            }
            assert!(ks.rotate_memtable()?);
            while db.worker_pool.rx.try_recv().is_ok() {}
            sync_or_rotate_journal(&state.supervisor, &ks)?;
            let used = db
                .supervisor
                .journal_manager
                .read()
                .map(|m| m.disk_space_used())
                .unwrap_or(u64::MAX);
            assert!(
                (1_024 * 1_024..8 * 1_024 * 1_024).contains(&used),
                "a sealed journal counts {used} bytes"
            );
            // More writes after that switch, never flushed.
            ks.insert("last", "one")?;
        }

        let db = Database::builder(&folder).worker_threads(1).open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        for i in 0..3_000u32 {
            assert_eq!(ks.get(i.to_be_bytes())?.as_deref(), Some(&value[..]), "key {i}");
        }
        assert_eq!(ks.get("last")?.as_deref(), Some(&b"one"[..]));
        Ok(())
    }

    #[test]
    fn a_sync_after_a_journal_switch_syncs_the_sealed_file_first() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        ks.insert("a", "a")?;

        let mut writer = db.supervisor.journal.get_writer()?;
        let next_path = writer.next_path()?;
        let next = crate::journal::writer::Writer::create_new(&next_path)?;
        let (sealed_path, _sync) = writer.switch_to(next)?;
        assert_ne!(sealed_path, next_path);
        assert!(
            writer.unsynced_sealed.is_some(),
            "the sealed file waits for its sync"
        );
        // A write and persist before the switching worker synced it: the
        // persist syncs the sealed file too, and says so.
        writer.persist(crate::PersistMode::SyncData)?;
        assert!(writer.unsynced_sealed.is_none());
        Ok(())
    }

    #[test]
    fn a_reopened_journal_counts_the_bytes_it_holds() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let value = vec![7u8; 1_024];
        {
            let db = Database::builder(&folder)
                .worker_threads_unchecked(0)
                .open()?;
            let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
            for i in 0..1_000u32 {
                ks.insert(i.to_be_bytes(), &value)?;
            }
            // Sealed, never flushed: recovery replays it and counts it.
            db.supervisor.journal.get_writer()?.rotate()?;
            for i in 1_000..1_100u32 {
                ks.insert(i.to_be_bytes(), &value)?;
            }
        }

        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        assert_eq!(ks.len()?, 1_100);
        let sealed = db
            .supervisor
            .journal_manager
            .read()
            .map(|m| m.disk_space_used())
            .unwrap_or(u64::MAX);
        assert!(
            (1_000 * 1_024..4 * 1_024 * 1_024).contains(&sealed),
            "the recovered sealed journal counts {sealed} bytes"
        );
        // The active file is opened to append before recovery cuts off
        // its preallocated tail: from the first write its position is
        // where the data ends, not past 64 MiB of zeros.
        ks.insert("after", "reopen")?;
        let active = db.supervisor.journal.get_writer()?.pos()?;
        assert!(
            (100 * 1_024..1_024 * 1_024).contains(&active),
            "the active journal's position is {active}"
        );
        Ok(())
    }

    /// Every worker that is actually spawned holds exactly one slot.
    #[test]
    fn claim_and_spawn_claims_one_slot_per_worker() {
        let counter = Arc::new(AtomicUsize::new(0));

        let handles = claim_and_spawn(3, &counter, |i| Ok::<_, std::io::Error>(i))
            .expect("all spawns succeed");

        assert_eq!(handles, vec![0, 1, 2]);
        assert_eq!(counter.load(Relaxed), 3);
    }

    /// A failed spawn releases its own slot and never claims one for the workers
    /// it did not get to. `DatabaseInner::drop` spins until the counter reaches
    /// zero, so a slot held by a thread that does not exist hangs the close
    /// forever.
    #[test]
    fn claim_and_spawn_counts_live_workers_only() {
        let counter = Arc::new(AtomicUsize::new(0));

        let result = claim_and_spawn(4, &counter, |i| {
            if i == 2 {
                Err(std::io::Error::other("cannot spawn thread"))
            } else {
                Ok(i)
            }
        });

        assert!(result.is_err());
        assert_eq!(
            counter.load(Relaxed),
            2,
            "only the two workers that started should hold a slot",
        );
    }

    /// A worker leaving normally releases its slot in the counter.
    #[test]
    fn active_thread_guard_decrements_on_scope_exit() {
        let counter = Arc::new(AtomicUsize::new(1));
        {
            let _guard = ActiveThreadGuard(counter.clone());
            assert_eq!(counter.load(Relaxed), 1);
        }
        assert_eq!(counter.load(Relaxed), 0);
    }

    /// A worker that returns an error releases its slot too: `Database::drop`
    /// spins until the counter reaches zero, so a leaked slot would hang the
    /// close forever.
    #[test]
    fn active_thread_guard_decrements_on_early_return() {
        let counter = Arc::new(AtomicUsize::new(1));

        fn failing_worker(counter: Arc<AtomicUsize>) -> Result<(), ()> {
            let _guard = ActiveThreadGuard(counter);
            Err(())
        }

        assert!(failing_worker(counter.clone()).is_err());
        assert_eq!(counter.load(Relaxed), 0);
    }

    /// A panicking worker releases its slot as well.
    #[test]
    fn active_thread_guard_decrements_on_panic() {
        let counter = Arc::new(AtomicUsize::new(1));
        let counter_in_thread = counter.clone();

        let outcome = std::thread::spawn(move || {
            let _guard = ActiveThreadGuard(counter_in_thread);
            panic!("worker crashed");
        })
        .join();

        assert!(outcome.is_err());
        assert_eq!(counter.load(Relaxed), 0);
    }
}
