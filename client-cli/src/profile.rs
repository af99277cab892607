//! The `confab` profile: a directory holding one device's state (server,
//! token, cursor) and the certificate fingerprints it trusts. Written
//! atomically with owner-only permissions: the token is a credential.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::connection::TransportKind;
use crate::error::ClientError;

/// One device's saved state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Profile {
    /// The server this profile logged in to (`host:port`).
    pub server: Option<String>,
    /// Where to ask which node to use (`--discover`), if it was given at
    /// login.
    pub discover: Option<String>,
    /// The discovery URLs of the nodes the last answer listed: asked in
    /// turn when `discover` does not answer.
    pub discover_nodes: Vec<String>,
    /// The transport last used.
    pub transport: Option<TransportKind>,
    /// Logged-in user.
    pub username: Option<String>,
    /// Its id.
    pub user_id: u64,
    /// This device's id.
    pub device_id: u64,
    /// This device's token (secret).
    pub token: Option<String>,
    /// Last inbox_seq processed and acknowledged.
    pub cursor: u64,
    /// Trusted certificate fingerprints by server (`host:port`).
    pub known_servers: BTreeMap<String, String>,
}

const FILE: &str = "profile.json";

impl Profile {
    /// The default profile directory: `$XDG_CONFIG_HOME/confab` or the
    /// platform's equivalent.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("confab"))
    }

    /// Loads the profile in `dir` (an empty profile if there is none).
    pub fn load(dir: &Path) -> Result<Profile, ClientError> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Local(format!(
                    "{}: not a valid profile ({e}). Move it away (or delete it) to start a fresh one: \
                         this device will have to log in again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profile::default()),
            Err(e) => Err(ClientError::Local(format!("{}: {e}", path.display()))),
        }
    }

    /// Saves atomically (temp file + rename), readable by the owner only.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(local)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(|e| ClientError::Local(e.to_string()))?;
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(local)?;
            f.write_all(&json).map_err(local)?;
            f.sync_all().map_err(local)?;
        }
        std::fs::rename(&tmp, dir.join(FILE)).map_err(local)
    }

    /// Forgets the login (keeps trusted fingerprints).
    pub fn clear_login(&mut self) {
        let known = std::mem::take(&mut self.known_servers);
        *self = Profile { known_servers: known, ..Profile::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Profile::load(dir.path()).unwrap(), Profile::default());
        let mut p = Profile { token: Some("t".into()), cursor: 9, ..Default::default() };
        p.known_servers.insert("h:1".into(), "ab".into());
        p.save(dir.path()).unwrap();
        assert_eq!(Profile::load(dir.path()).unwrap(), p);
        p.clear_login();
        assert_eq!(p.token, None);
        assert_eq!(p.known_servers.len(), 1);
    }
}
