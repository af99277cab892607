//! What starting the server needs from the file system, and how a start
//! fails: private files and directories in the data dir (keys, secrets),
//! and [`SetupError`], the typed error of everything `Server::start` does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The settings are inconsistent.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// A file or directory could not be read, written or created.
    #[error("{action} {}: {source}", path.display())]
    File {
        /// What was being done ("reading certificate", "creating" …).
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is unusable (a PEM with no certificate, a key of
    /// the wrong kind, a certificate and key that do not match).
    #[error("{0}")]
    Invalid(String),
    /// The store did not open.
    #[error("opening the store in {}: {source}", path.display())]
    Store {
        /// The store's directory.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// A listener could not bind.
    #[error("binding {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Cluster mode could not start (NATS unreachable, JetStream off, a
    /// different partition count …).
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    /// A thread or socket of the server's own could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl SetupError {
    /// A failed file operation.
    pub fn file(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
        let path = path.to_path_buf();
        move |source| SetupError::File { action, path, source }
    }
}

/// Creates `dir` (and its parents) readable only by this user, unless it
/// exists.
pub fn create_private_dir(dir: &Path) -> Result<(), SetupError> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(SetupError::file("creating", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(SetupError::file("restricting", dir))?;
    }
    Ok(())
}

/// Writes a new file readable only by this user (mode 0600) and syncs it,
/// so a key written at first start survives a crash right after. Fails if
/// the file exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(SetupError::file("creating", path))?;
    f.write_all(bytes).map_err(SetupError::file("writing", path))?;
    f.sync_all().map_err(SetupError::file("syncing", path))?;
    Ok(())
}

/// Logs a warning when a secret file can be read by other users.
pub fn warn_if_readable_by_others(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "{what} is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_private_synced_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        let file = sub.join("key.pem");
        write_private(&file, b"secret").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"secret");
        assert!(matches!(write_private(&file, b"other"), Err(SetupError::File { action: "creating", .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting, or the cluster's layout, is wrong.
    #[error("cluster: {0}")]
    Config(String),
    /// The cluster was created with another layout (partition count).
    #[error("cluster: {0}")]
    Layout(String),
    /// No NATS server answered.
    #[error("cluster: NATS is unreachable: {0}")]
    Unreachable(String),
    /// NATS answered with an error.
    #[error("cluster: {0}")]
    Nats(String),
}
