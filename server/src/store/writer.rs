//! The single writer thread and its group commit.
//!
//! Commands are closures queued in arrival order. The thread takes the first
//! waiting command and every other one already queued (up to a cap), runs
//! them one after another against a [`Tx`], commits their writes as one
//! atomic batch with one sync, then — in the same order — hands each
//! command's live deliveries to the session table and replies to its caller.
//! Everything that arrives while a sync is in progress forms the next group,
//! so under load many messages share one fsync, and with one writer the
//! seq/inbox counters need no locks.

use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::PushTiming;
use std::collections::BTreeMap;

use super::records::{EffectRecord, LogWrite};
use super::tx::{Counters, Scope, Tx};
use super::{CommandError, Db, StoreError};
use crate::delivery::Delivery;

/// Most commands in one group commit.
const MAX_GROUP: usize = 1024;

/// What one group commit did, for the commit hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Commands in the group.
    pub commands: usize,
    /// Messages stored.
    pub messages: u64,
    /// New push notification jobs queued.
    pub pushes_queued: u32,
    /// Time spent writing and syncing.
    pub took: std::time::Duration,
    /// How long the writer paused before taking this group, for the
    /// store's flushes and merges to catch up (zero almost always).
    pub paused_before: std::time::Duration,
}

/// Called after each successful group commit (metrics; waking the push
/// worker when jobs were queued).
pub type CommitHook = Arc<dyn Fn(&CommitStats) + Send + Sync>;

/// Where a group's writes become durable before fjall applies them, in
/// cluster mode: the partition's replicated log. On one node there is none
/// and the fjall commit is the durable step.
pub trait Log: Send + Sync + 'static {
    /// Appends one group (its writes, and its effects for other
    /// partitions) and returns its position in the log once a quorum has
    /// it. Blocks the writer thread meanwhile.
    fn append(&self, writes: Vec<LogWrite>, effects: BTreeMap<u32, Vec<EffectRecord>>) -> Result<u64, LogError>;

    /// After [`LogError::Unknown`]: reads the log's tail and applies to
    /// `db` whatever landed (the uncertain group included, if it did), so
    /// the view is the log again. Blocks until done.
    fn resolve(&self, db: &Db) -> Result<(), LogError>;
}

/// Why a group did not reach the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Someone else appended first: this node no longer owns the
    /// partition. Nothing was written; nothing more will be.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The log did not answer (NATS unreachable, a timeout): the group may
    /// or may not be in it.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// How a writer writes.
#[derive(Clone)]
pub struct WriterSettings {
    /// Commands queued before writes are shed with [`CommandError::Busy`].
    pub queue: usize,
    /// How sends schedule push notifications (`None`: push is off).
    pub push: Option<PushTiming>,
    /// The partition written, and the partitioning.
    pub scope: Scope,
    /// The replicated log groups go to first (cluster mode).
    pub log: Option<Arc<dyn Log>>,
}

/// Live events a command produces, delivered after its commit.
#[derive(Debug, Default)]
pub struct Deliveries(pub Vec<(u64, Bytes)>);

impl Deliveries {
    /// Adds one frame for one user.
    pub fn push(&mut self, user_id: u64, frame: Bytes) {
        self.0.push((user_id, frame));
    }
}

type Completion = Box<dyn FnOnce(Result<(), &StoreError>, &dyn Delivery) + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> Completion + Send>;

enum Msg {
    Job(Job),
    /// Finish what is queued, flush, and stop.
    Stop,
}

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Msg>,
}

impl Writer {
    /// Starts the writer thread. It stops when every `Writer` is dropped,
    /// after finishing the queued commands.
    pub fn start(
        store: Arc<Db>,
        delivery: Arc<dyn Delivery>,
        hook: CommitHook,
        settings: WriterSettings,
    ) -> std::io::Result<(Writer, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Msg>(settings.queue);
        let name = match settings.log {
            Some(_) => format!("confab-writer-p{}", settings.scope.partition),
            None => "confab-writer".into(),
        };
        let handle = thread::Builder::new().name(name).spawn(move || run(&store, &*delivery, &*hook, &settings, rx))?;
        Ok((Writer { jobs: tx }, handle))
    }

    /// Queues `command` now (so commands submitted one after another run in
    /// that order) and returns a future for its result. A command MUST do
    /// every check before its first write: its writes join the group batch
    /// as soon as it returns `Ok`, and an `Err` must leave nothing staged.
    /// A full queue is refused at once with [`CommandError::Busy`] rather
    /// than waited on: overload is shed, never queued without bound.
    pub fn submit<T, F>(
        &self,
        command: F,
    ) -> Result<impl std::future::Future<Output = Result<T, CommandError>> + Send + 'static, CommandError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<(T, Deliveries), CommandError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |tx| match command(tx) {
            Ok((value, deliveries)) => Box::new(move |commit, delivery| match commit {
                Ok(()) => {
                    if !deliveries.0.is_empty() {
                        delivery.deliver(deliveries.0);
                    }
                    let _ = reply.send(Ok(value));
                }
                Err(e) => {
                    let _ = reply.send(Err(CommandError::Store(e.for_each_command())));
                }
            }),
            Err(e) => Box::new(move |_, _| {
                let _ = reply.send(Err(e));
            }),
        });
        match self.jobs.try_send(Msg::Job(job)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(CommandError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(StoreError::Closed.into()),
        }
        Ok(async move { result.await.map_err(|_| CommandError::Store(StoreError::Closed))? })
    }

    /// Asks the writer thread to finish the queued commands, flush and stop.
    pub async fn stop(&self) {
        let _ = self.jobs.send(Msg::Stop).await;
    }
}

/// How often a failing store is checked for space to reopen.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// The free space a reopen needs first.
const PROBE_BYTES: usize = 1 << 20;

/// The writer's view of a store whose commits fail. fjall poisons a
/// database after a failed journal write or sync (disk full, I/O error), so
/// every later commit fails at once, before writing anything, until the
/// store is reopened; the writer reopens it as soon as a probe write shows
/// the disk takes data again. The error is logged once per episode plus a
/// count, not once per command.
///
/// The first failed group of an episode is different: fjall keeps its batch
/// in the journal's buffer, and dropping the old database (to reopen)
/// flushes that buffer, so the group may be stored after all. Its callers
/// are therefore not answered until the reopen, when the stored commit
/// number says which it was: then they get their result (or UNAVAILABLE),
/// never a refusal for something that became visible later.
#[derive(Default)]
struct Failing {
    since: Option<std::time::Instant>,
    last_probe: Option<std::time::Instant>,
    failures: u64,
    /// The first failed group: its commit number and its callers.
    held: Option<(u64, Vec<Completion>)>,
}

impl Failing {
    /// A group failed. Returns its completions to answer now with the
    /// error, or keeps them (the first failure of an episode).
    fn failed(&mut self, e: &StoreError, seq: u64, completions: Vec<Completion>) -> Vec<Completion> {
        self.failures += completions.len() as u64;
        if self.since.is_some() {
            return completions;
        }
        self.since = Some(std::time::Instant::now());
        tracing::error!(
            error = %e,
            commands = completions.len(),
            "group commit failed; refusing writes until the store recovers (this group's outcome is decided then)"
        );
        self.held = Some((seq, completions));
        Vec::new()
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(failed_commands = self.failures, down_for = ?since.elapsed(), "store writes recovered");
            self.failures = 0;
        }
    }

    /// Reopens a failing store once it has space again; then answers the
    /// held group by what the store says. Returns the stored commit number
    /// after a reopen.
    fn maybe_reopen(&mut self, store: &Db, deliver: &dyn Delivery) -> Option<u64> {
        if self.since.is_none() || self.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return None;
        }
        self.last_probe = Some(std::time::Instant::now());
        if !store.has_space(PROBE_BYTES) {
            return None;
        }
        if let Err(e) = store.reopen() {
            tracing::error!(error = %e, "store reopen failed");
            return None;
        }
        let stored = store.commit_seq();
        tracing::info!(commit_seq = ?stored.as_ref().ok(), "store reopened after write failures");
        if let Some((seq, completions)) = self.held.take() {
            let outcome = match &stored {
                Ok(n) if *n >= seq => Ok(()),
                Ok(_) => Err(StoreError::WriteFailed("the disk was full; nothing was stored".into())),
                Err(e) => Err(StoreError::OutcomeUnknown(e.to_string())),
            };
            if outcome.is_ok() {
                tracing::info!(commands = completions.len(), "the failed group was stored after all");
            }
            for done in completions {
                done(outcome.as_ref().map(|_| ()), deliver);
            }
        }
        stored.ok()
    }

    /// Answers a held group at shutdown: its outcome is unknown.
    fn abandon(&mut self, deliver: &dyn Delivery) {
        if let Some((_, completions)) = self.held.take() {
            let e = StoreError::OutcomeUnknown("the server stopped before the store recovered".into());
            for done in completions {
                done(Err(&e), deliver);
            }
        }
    }
}

fn run(
    store: &Db,
    deliver: &dyn Delivery,
    hook: &(dyn Fn(&CommitStats) + Send + Sync),
    settings: &WriterSettings,
    mut rx: mpsc::Receiver<Msg>,
) {
    if let Some(log) = &settings.log {
        return run_logged(store, deliver, hook, settings, &**log, rx);
    }
    let push = settings.push;
    let mut counters = Counters::default();
    // How long the writer paused after the last group (reported with the
    // next one).
    let mut paused = std::time::Duration::ZERO;
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut stopping = false;
    let mut failing = Failing::default();
    let mut commit_seq = store.commit_seq().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read the commit number; counting from 0");
        0
    });
    while !stopping {
        // While the store fails, wake up to probe for space even when no
        // command comes: a held group is waiting for the outcome.
        let next = loop {
            if failing.since.is_none() {
                break rx.blocking_recv();
            }
            match rx.try_recv() {
                Ok(msg) => break Some(msg),
                Err(mpsc::error::TryRecvError::Disconnected) => break None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Some(stored) = failing.maybe_reopen(store, deliver) {
                        commit_seq = stored;
                        counters.clear();
                    }
                    if failing.since.is_some() {
                        thread::sleep(PROBE_EVERY / 4);
                    }
                }
            }
        };
        match next {
            Some(Msg::Job(job)) => group.push(job),
            Some(Msg::Stop) | None => break,
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => group.push(job),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if let Some(stored) = failing.maybe_reopen(store, deliver) {
            commit_seq = stored;
            counters.clear();
        }
        let mut tx = match Tx::new(store, &mut counters, push, settings.scope) {
            Ok(tx) => tx,
            Err(e) => {
                // Only while a reopen runs on this very thread, i.e. never
                // here; dropping the jobs answers their callers (Closed).
                tracing::error!(error = %e, commands = group.len(), "no store to write to");
                group.clear();
                continue;
            }
        };
        let seq = commit_seq + 1;
        tx.set_commit_seq(seq);
        let completions: Vec<Completion> = group.drain(..).map(|job| job(&mut tx)).collect();
        let (messages, pushes_queued) = (tx.appended(), tx.pushes_queued());
        let started = std::time::Instant::now();
        match tx.commit() {
            Ok(writes) => {
                commit_seq = seq;
                store.bound_unflushed();
                hook(&CommitStats {
                    commands: completions.len(),
                    messages,
                    pushes_queued,
                    took: started.elapsed(),
                    paused_before: std::mem::take(&mut paused),
                });
                failing.recovered();
                for done in completions {
                    done(Ok(()), deliver);
                }
                paused = store.wait_for_flushes(writes);
            }
            Err(e) => {
                counters.clear();
                for done in failing.failed(&e, seq, completions) {
                    done(Err(&e), deliver);
                }
            }
        }
    }
    failing.abandon(deliver);
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "final store flush failed");
    }
}

/// The writer of a partition in cluster mode: each group goes to the
/// partition's log first, and only once a quorum has it to fjall (with
/// the log position, in the same batch). A group the log refused
/// (fenced) or may not have (unknown) is answered `UNAVAILABLE`, never
/// acknowledged; after a fence the writer refuses everything until it is
/// stopped, after an unknown outcome it writes nothing until the log's
/// tail is applied.
fn run_logged(
    store: &Db,
    deliver: &dyn Delivery,
    hook: &(dyn Fn(&CommitStats) + Send + Sync),
    settings: &WriterSettings,
    log: &dyn Log,
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut counters = Counters::default();
    // How long the writer paused after the last group (reported with the
    // next one).
    let mut paused = std::time::Duration::ZERO;
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut fenced = false;
    let mut stopping = false;
    let refused = |why: &str| StoreError::WriteFailed(format!("not written: {why}"));
    while !stopping {
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => group.push(job),
            Some(Msg::Stop) | None => break,
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => group.push(job),
                // Stop after this group.
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut tx = match Tx::new(store, &mut counters, settings.push, settings.scope) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, "no store to write to");
                group.clear();
                continue;
            }
        };
        let completions: Vec<Completion> = group.drain(..).map(|job| job(&mut tx)).collect();
        if fenced {
            let e = refused("this node no longer owns the partition");
            completions.into_iter().for_each(|done| done(Err(&e), deliver));
            continue;
        }
        let (messages, pushes_queued) = (tx.appended(), tx.pushes_queued());
        let (effects, writes) = tx.take_outputs();
        if writes.is_empty() && effects.is_empty() {
            // Refusals and reads only: nothing to append.
            drop(tx);
            completions.into_iter().for_each(|done| done(Ok(()), deliver));
            continue;
        }
        let started = std::time::Instant::now();
        match log.append(writes, effects) {
            Ok(position) => {
                tx.set_applied(settings.scope.partition, position);
                let writes = match tx.commit() {
                    Ok(writes) => writes,
                    Err(e) => {
                        // The group is in the log (a quorum has it) but not
                        // in this view: only a replay can repair it. The
                        // process ends and the partition moves (or comes
                        // back here and replays the tail).
                        tracing::error!(error = %e, partition = settings.scope.partition, "applying a logged group failed; exiting");
                        std::process::exit(70);
                    }
                };
                store.bound_unflushed();
                hook(&CommitStats {
                    commands: completions.len(),
                    messages,
                    pushes_queued,
                    took: started.elapsed(),
                    paused_before: std::mem::take(&mut paused),
                });
                completions.into_iter().for_each(|done| done(Ok(()), deliver));
                paused = store.wait_for_flushes(writes);
            }
            Err(LogError::Fenced(why)) => {
                tracing::warn!(partition = settings.scope.partition, %why, "fenced: another node owns the partition");
                fenced = true;
                counters.clear();
                let e = refused("this node no longer owns the partition");
                completions.into_iter().for_each(|done| done(Err(&e), deliver));
            }
            Err(LogError::Unknown(why)) => {
                drop(tx);
                counters.clear();
                tracing::warn!(partition = settings.scope.partition, %why, "log append outcome unknown; resolving");
                let e = StoreError::OutcomeUnknown(why.clone());
                completions.into_iter().for_each(|done| done(Err(&e), deliver));
                let mut wait = std::time::Duration::from_millis(100);
                loop {
                    match log.resolve(store) {
                        Ok(()) => break,
                        Err(LogError::Fenced(why)) => {
                            tracing::warn!(partition = settings.scope.partition, %why, "fenced while resolving");
                            fenced = true;
                            break;
                        }
                        Err(LogError::Unknown(why)) => {
                            tracing::debug!(%why, "the log is still unreachable");
                            // What was queued meanwhile is refused now
                            // (none of it is written), so clients hear a
                            // retryable error instead of waiting for the
                            // log to come back.
                            let e = refused("the partition's log is unreachable");
                            if refuse_queued(store, &mut counters, settings, &mut rx, deliver, &e) {
                                stopping = true;
                                break;
                            }
                            thread::sleep(wait);
                            wait = (wait * 2).min(std::time::Duration::from_secs(2));
                        }
                    }
                }
            }
        }
    }
}

/// Answers every job queued now with `e`, writing nothing; true if a stop
/// was among them.
fn refuse_queued(
    store: &Db,
    counters: &mut Counters,
    settings: &WriterSettings,
    rx: &mut mpsc::Receiver<Msg>,
    deliver: &dyn Delivery,
    e: &StoreError,
) -> bool {
    let mut jobs = Vec::new();
    let mut stop = false;
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Job(job) => jobs.push(job),
            Msg::Stop => {
                stop = true;
                break;
            }
        }
    }
    if !jobs.is_empty()
        && let Ok(mut tx) = Tx::new(store, counters, settings.push, settings.scope)
    {
        let completions: Vec<Completion> = jobs.into_iter().map(|job| job(&mut tx)).collect();
        drop(tx);
        completions.into_iter().for_each(|done| done(Err(e), deliver));
    }
    // The jobs ran against a transaction that is never committed.
    counters.clear();
    stop
}
