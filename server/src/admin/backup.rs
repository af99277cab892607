//! `admin backup DIR`: a copy of the data dir taken while the server
//! serves, which is itself a data dir: `confabd --data-dir` on it (or on a
//! copy of it) starts a server with everything acknowledged before the
//! backup began. Restoring is starting on it; there is no other step.
//!
//! The store is copied from one fjall snapshot (every keyspace as of one
//! instant), the files that live beside it are copied as they are, and the
//! whole is built in a hidden directory next to `DIR` and renamed to `DIR`
//! only once it is complete and synced: a `DIR` that exists is a whole
//! backup. A `DIR` that exists and holds anything is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use confab_protocol::Now;
use serde_json::{Value, json};

use super::{Ctx, failure, single_node};
use crate::store::Copied;

/// The files of a data dir beside the store, copied when present: the
/// generated certificate and key (clients pin it), the VAPID key (browsers'
/// push subscriptions are bound to it), the QUIC reset key (clients of the
/// last run learn of a restart at once). Not copied: `admin.sock` (the
/// live server's), `clean-stop` (written fresh: the copy's store is
/// flushed whole).
pub const FILES: &[&str] = &["tls/cert.pem", "tls/key.pem", "push/vapid.pem", crate::transport::quic::RESET_KEY_FILE];

/// The mark a clean stop leaves (see `server.rs`): the copy's store has
/// nothing to replay, so its first start says so.
const CLEAN_STOP: &str = "clean-stop";

/// What the backup says about itself, in `DIR/backup.json`.
pub const MANIFEST: &str = "backup.json";

pub(super) async fn backup(ctx: &Ctx, request: &Value) -> Value {
    let store = match single_node(&ctx.core, "backup") {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let Some(dir) = request.get("dir").and_then(Value::as_str) else {
        return failure("backup needs a directory".into());
    };
    let target = PathBuf::from(dir);
    let staging = match prepare(&ctx.data_dir, &target) {
        Ok(s) => s,
        Err(why) => return failure(why),
    };
    let started = std::time::Instant::now();
    let stop = ctx.stop.clone();
    let copied = match store.backup(staging.join("db"), Arc::new(move || stop.is_cancelled())).await {
        Ok(c) => c,
        Err(e) => {
            discard(staging).await;
            return failure(format!("copying the store: {e}"));
        }
    };
    let (data_dir, done, into) = (ctx.data_dir.clone(), staging.clone(), target.clone());
    let finished = tokio::task::spawn_blocking(move || finish(&data_dir, &done, &into, copied)).await;
    let files = match finished {
        Ok(Ok(files)) => files,
        Ok(Err(e)) => {
            discard(staging).await;
            return failure(e);
        }
        Err(e) => {
            discard(staging).await;
            return failure(format!("the backup task failed: {e}"));
        }
    };
    tracing::info!(
        dir = %target.display(),
        keys = copied.keys,
        bytes = copied.bytes,
        commit_seq = copied.commit_seq,
        took_ms = started.elapsed().as_millis() as u64,
        "backup written"
    );
    json!({
        "ok": true,
        "dir": target.display().to_string(),
        "keys": copied.keys,
        "bytes": copied.bytes,
        "commit_seq": copied.commit_seq,
        "files": files,
    })
}

/// Checks `target` (absolute, new or empty, outside the data dir, in a
/// directory that exists) and makes the hidden directory the backup is
/// built in, next to it.
fn prepare(data_dir: &Path, target: &Path) -> Result<PathBuf, String> {
    let shown = target.display();
    if !target.is_absolute() {
        return Err(format!("{shown}: the backup directory must be an absolute path"));
    }
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!("{shown} exists and is not empty: give a new or an empty directory"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(format!("{shown} exists and is not a directory"));
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(format!("{shown}: not a directory a backup can be written to"));
    };
    let parent = std::fs::canonicalize(parent)
        .map_err(|e| format!("{}: {e} (create the parent directory first)", parent.display()))?;
    let data_dir = std::fs::canonicalize(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    if parent.starts_with(&data_dir) {
        return Err(format!("{shown} is inside the data dir {}: choose a directory outside it", data_dir.display()));
    }
    let nonce = Now::system().unix_ms;
    let staging = parent.join(format!(".{}.partial-{}-{nonce}", name.to_string_lossy(), std::process::id()));
    create_private_dir(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    Ok(staging)
}

/// Copies the files beside the store, writes the clean-stop mark and the
/// manifest, syncs it all and renames `staging` to `target`. Returns the
/// files copied.
fn finish(data_dir: &Path, staging: &Path, target: &Path, copied: Copied) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    for file in FILES {
        let from = data_dir.join(file);
        if !from.is_file() {
            continue;
        }
        let to = staging.join(file);
        copy_file(&from, &to).map_err(|e| format!("copying {}: {e}", from.display()))?;
        files.push((*file).to_string());
    }
    let manifest = json!({
        "format": 1,
        "server": concat!("confabd/", env!("CARGO_PKG_VERSION")),
        "taken_at_ms": Now::system().unix_ms,
        "from": data_dir.display().to_string(),
        "commit_seq": copied.commit_seq,
        "keys": copied.keys,
        "bytes": copied.bytes,
        "files": files,
    });
    let write = |name: &str, bytes: &[u8]| {
        let path = staging.join(name);
        std::fs::write(&path, bytes).and_then(|()| sync(&path)).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(CLEAN_STOP, b"")?;
    write(MANIFEST, format!("{manifest:#}\n").as_bytes())?;
    for dir in ["tls", "push", "db", ""] {
        let dir = staging.join(dir);
        if dir.is_dir() {
            sync(&dir).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        }
    }
    // Renaming onto an empty directory replaces it; onto anything else it
    // fails, and nothing of what is there is touched.
    std::fs::rename(staging, target).map_err(|e| format!("moving the backup to {}: {e}", target.display()))?;
    if let Some(parent) = target.parent() {
        sync(parent).map_err(|e| format!("syncing {}: {e}", parent.display()))?;
    }
    Ok(files)
}

/// Copies a file (its permissions too) into a private directory, synced.
fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(dir) = to.parent() {
        create_private_dir(dir)?;
    }
    std::fs::copy(from, to)?;
    sync(to)
}

/// Creates a directory (and its parents) readable only by this user.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// fsyncs a file or a directory (a directory: its entries).
fn sync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Removes a backup that did not finish (only ever the hidden directory
/// this backup made).
async fn discard(staging: PathBuf) {
    let removed =
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&staging).map_err(|e| (staging, e))).await;
    if let Ok(Err((dir, e))) = removed {
        tracing::warn!(dir = %dir.display(), error = %e, "removing an unfinished backup failed");
    }
}
