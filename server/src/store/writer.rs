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

use super::tx::{Counters, Tx};
use super::{Refusal, Store, StoreError};

/// Most commands in one group commit.
const MAX_GROUP: usize = 1024;

/// Where live events go once their writes are durable: the session table,
/// or in a cluster, a router to other nodes' sessions.
pub trait Deliver: Send + Sync + 'static {
    /// Queue `frame` (an encoded, length-prefixed ServerFrame) for every
    /// live session of `user_id`.
    fn deliver(&self, user_id: u64, frame: Bytes);
}

/// Called after each group commit with (commands, messages stored, time
/// spent writing and syncing).
pub type CommitObserver = Arc<dyn Fn(usize, u64, std::time::Duration) + Send + Sync>;

/// Live events a command produces, delivered after its commit.
#[derive(Debug, Default)]
pub struct Deliveries(pub Vec<(u64, Bytes)>);

impl Deliveries {
    /// Adds one frame for one user.
    pub fn push(&mut self, user_id: u64, frame: Bytes) {
        self.0.push((user_id, frame));
    }
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request was refused (domain rule); nothing was written.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The store failed; nothing of this command's group was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer's queue is full; nothing was done.
    #[error("the store is overloaded")]
    Busy,
}

type Completion = Box<dyn FnOnce(Result<(), &StoreError>, &dyn Deliver) + Send>;
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
        store: Arc<Store>,
        deliver: Arc<dyn Deliver>,
        observe: CommitObserver,
        queue: usize,
    ) -> std::io::Result<(Writer, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Msg>(queue);
        let handle =
            thread::Builder::new().name("confab-writer".into()).spawn(move || run(&store, &*deliver, &*observe, rx))?;
        Ok((Writer { jobs: tx }, handle))
    }

    /// Runs `command` on the writer thread and waits until its writes are
    /// durable and its deliveries queued. See [`Writer::submit`].
    pub async fn run<T, F>(&self, command: F) -> Result<T, CommandError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<(T, Deliveries), CommandError> + Send + 'static,
    {
        self.submit(command)?.await
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
            Ok((value, deliveries)) => Box::new(move |commit, deliver| match commit {
                Ok(()) => {
                    for (user, frame) in deliveries.0 {
                        deliver.deliver(user, frame);
                    }
                    let _ = reply.send(Ok(value));
                }
                Err(e) => {
                    let _ = reply.send(Err(CommandError::Store(StoreError::WriteFailed(e.to_string()))));
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
    fn maybe_reopen(&mut self, store: &Store, deliver: &dyn Deliver) -> Option<u64> {
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
                Err(e) => Err(StoreError::WriteFailed(format!("outcome unknown: {e}"))),
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
    fn abandon(&mut self, deliver: &dyn Deliver) {
        if let Some((_, completions)) = self.held.take() {
            let e = StoreError::WriteFailed("the server stopped before the store recovered; outcome unknown".into());
            for done in completions {
                done(Err(&e), deliver);
            }
        }
    }
}

fn run(
    store: &Store,
    deliver: &dyn Deliver,
    observe: &(dyn Fn(usize, u64, std::time::Duration) + Send + Sync),
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut counters = Counters::default();
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
        let mut tx = match Tx::new(store, &mut counters) {
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
        let appended = tx.appended();
        let started = std::time::Instant::now();
        match tx.commit() {
            Ok(()) => {
                commit_seq = seq;
                observe(completions.len(), appended, started.elapsed());
                failing.recovered();
                for done in completions {
                    done(Ok(()), deliver);
                }
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
