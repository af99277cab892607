//! The store: one fjall database with a keyspace per record family, behind
//! a narrow, domain-shaped interface. Only this module knows key layouts
//! (`keys`) and record encodings (`records`, protobuf).
//!
//! Reads ([`Store`] methods) are blocking calls on committed data: run them
//! with [`Store::read`], which moves them off the async workers. Every write
//! goes through the single writer thread ([`writer::Writer`]), which applies
//! commands in arrival order and group-commits them: one atomic batch and one
//! fsync for everything that arrived while the previous commit was syncing.
//! fjall journals and syncs a batch before applying it to its memtables, so
//! nothing is readable before it is durable.
//!
//! The push outbox (`push`) lives here too: notification jobs are written in
//! the same batch as the message that causes them, so they are exactly as
//! durable as the message.

mod commands;
mod groups;
pub mod keys;
pub mod push;
mod reads;
mod tx;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

pub use commands::{Refusal, SendOutcome, UserRef};
pub use tx::Tx;
pub use writer::{CommandError, Writer};

/// The storage records (values), generated from `proto/store.proto`.
#[allow(missing_docs, clippy::all)]
pub mod records {
    include!(concat!(env!("OUT_DIR"), "/confab.store.v1.rs"));
}

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// How durable an acknowledged write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync before acking: survives power loss.
    Fsync,
    /// Written to the OS before acking: survives a process crash.
    Buffered,
}

impl Durability {
    fn persist_mode(self) -> PersistMode {
        match self {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Buffered => PersistMode::Buffer,
        }
    }
}

/// Store failures (not domain refusals such as "user not found").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// fjall reported an I/O or internal error.
    #[error("storage error: {0}")]
    Fjall(#[from] fjall::Error),
    /// A stored value did not decode.
    #[error("corrupt record in {keyspace}: {detail}")]
    Corrupt {
        /// Where.
        keyspace: &'static str,
        /// What.
        detail: String,
    },
    /// The data directory was written by an incompatible version.
    #[error("store format version {found} is not supported by this build (it reads version {expected})")]
    UnsupportedFormat {
        /// On disk.
        found: u32,
        /// This build.
        expected: u32,
    },
    /// A group commit failed (disk full, I/O error): none of its writes
    /// were stored.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The writer thread is gone (shutting down).
    #[error("the store is shutting down")]
    Closed,
    /// The store is being reopened after write failures; try again soon.
    #[error("the store is reopening after write failures")]
    Reopening,
}

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
}

impl Ks {
    const ALL: [Ks; 16] = [
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
    ];

    fn name(self) -> &'static str {
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
        }
    }
}

/// The open database.
///
/// fjall poisons a database whose journal write or sync failed (a full
/// disk, an I/O error): every later write fails. The handles can therefore
/// be replaced by a fresh open of the same directory ([`Store::reopen`]),
/// which recovers from the journal exactly what was committed.
pub struct Store {
    dir: PathBuf,
    /// `None` only while `reopen` runs: readers then get
    /// [`StoreError::Reopening`] at once, so they let go of the old
    /// database's lock file instead of waiting for the new one.
    handles: RwLock<Option<Arc<Handles>>>,
    durability: Durability,
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
        let db = Database::builder(dir).manual_journal_persist(durability == Durability::Fsync).open()?;
        let mut keyspaces = Vec::with_capacity(Ks::ALL.len());
        for ks in Ks::ALL {
            keyspaces.push(db.keyspace(ks.name(), KeyspaceCreateOptions::default)?);
        }
        Ok(Handles { db, keyspaces })
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("durability", &self.durability).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database in `dir`, checking its format
    /// version.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        let handles = Handles::open(dir, durability)?;
        let store = Store { dir: dir.to_path_buf(), handles: RwLock::new(Some(Arc::new(handles))), durability };
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

    /// Syncs everything to disk (shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db()?.persist(PersistMode::SyncAll)?;
        Ok(())
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
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
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
