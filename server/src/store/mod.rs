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

use std::path::Path;
use std::sync::Arc;

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
pub struct Store {
    db: Database,
    keyspaces: Vec<Keyspace>,
    durability: Durability,
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
        let db = Database::builder(dir).manual_journal_persist(durability == Durability::Fsync).open()?;
        let mut keyspaces = Vec::with_capacity(Ks::ALL.len());
        for ks in Ks::ALL {
            keyspaces.push(db.keyspace(ks.name(), KeyspaceCreateOptions::default)?);
        }
        let store = Store { db, keyspaces, durability };
        let meta = store.ks(Ks::Meta);
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
                if !store.ks(Ks::Users).is_empty()? {
                    return Err(StoreError::Corrupt { keyspace: keys::META, detail: "format_version missing".into() });
                }
                meta.insert(keys::FORMAT_VERSION, FORMAT_VERSION.to_be_bytes())?;
                store.db.persist(PersistMode::SyncAll)?;
            }
        }
        Ok(store)
    }

    /// The durability acks are given at.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn ks(&self, ks: Ks) -> &Keyspace {
        // Ks::ALL and `keyspaces` are built in the same order.
        &self.keyspaces[ks as usize]
    }

    /// Syncs everything to disk (shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
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
        match self.ks(ks).get(key)? {
            Some(v) => decode(ks, &v).map(Some),
            None => Ok(None),
        }
    }
}

pub(crate) fn decode<M: prost::Message + Default>(ks: Ks, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt { keyspace: ks.name(), detail: e.to_string() })
}
