//! The online copy of the store: every keyspace read from one fjall
//! snapshot (one instant across all of them, so the copy holds exactly the
//! writes committed before it began, each one whole) and bulk-loaded into
//! a new fjall database, which opens as a store like any other. The server
//! keeps serving meanwhile: the copy only reads.

use std::path::Path;
use std::time::Duration;

use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable as _};

use super::{Db, Durability, Ks, StoreError, keys};

/// What a copy holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Keys copied, over every keyspace.
    pub keys: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// The number of the last group commit in the copy: every write
    /// acknowledged up to it is there, none after it.
    pub commit_seq: u64,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Reading the store, or writing or reopening the copy, failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The server is shutting down.
    #[error("stopped: the server is shutting down")]
    Cancelled,
}

impl From<fjall::Error> for CopyError {
    fn from(e: fjall::Error) -> Self {
        CopyError::Store(StoreError::Fjall(e))
    }
}

/// How many keys are copied between two looks at `cancelled`.
const CHECK_EVERY: u64 = 4096;

impl Db {
    /// Copies every keyspace as of now into a new fjall database in `dir`
    /// (which must not hold one), synced, then opens the copy as a store to
    /// check it. Blocking: call through [`Db::read`] or a blocking thread.
    /// `cancelled` is looked at as it goes; the caller removes `dir` after
    /// a failure.
    pub(crate) fn copy_to(&self, dir: &Path, cancelled: &(dyn Fn() -> bool + Sync)) -> Result<Copied, CopyError> {
        let handles = self.handles()?;
        let snapshot = handles.db.snapshot();
        let mut copied = Copied::default();
        {
            let target = Database::builder(dir).open()?;
            for ks in Ks::ALL {
                let out = target.keyspace(ks.name(), KeyspaceCreateOptions::default)?;
                // Keys come in ascending order, as bulk loading needs: the
                // snapshot is written straight into tables.
                let mut load = out.start_ingestion()?;
                for kv in snapshot.iter(handles.ks(ks)) {
                    if copied.keys % CHECK_EVERY == 0 && cancelled() {
                        return Err(CopyError::Cancelled);
                    }
                    let (k, v) = kv.into_inner()?;
                    copied.keys += 1;
                    copied.bytes += (k.len() + v.len()) as u64;
                    if ks == Ks::Meta && &*k == keys::COMMIT_SEQ {
                        copied.commit_seq = keys::read_u64(&v, 0).unwrap_or(0);
                    }
                    load.write(k, v)?;
                }
                load.finish()?;
            }
            target.persist(PersistMode::SyncAll)?;
        }
        drop(snapshot);
        // The copy must open as a store (format version and all). Its
        // database may take a moment to let go of the directory's lock.
        let mut last = None;
        for _ in 0..50 {
            match Db::open(dir, Durability::Fsync) {
                Ok(db) => {
                    db.flush()?;
                    return Ok(copied);
                }
                Err(StoreError::Fjall(fjall::Error::Locked)) => last = Some(StoreError::Fjall(fjall::Error::Locked)),
                Err(e) => return Err(e.into()),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or(StoreError::Closed).into())
    }
}
