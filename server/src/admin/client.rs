//! The other end of the admin socket, for `confabd admin` (and tests):
//! connect, send one request, read the answer and, after an export's, the
//! lines that follow it. Blocking: the command runs no async runtime.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Why a request got no answer, or a refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Nothing listens on the data dir's socket.
    #[error("no confabd is running on {} (nothing answers at {}); start it first", data_dir.display(), socket.display())]
    NotRunning {
        /// The data dir given.
        data_dir: PathBuf,
        /// Its socket.
        socket: PathBuf,
    },
    /// The socket is another user's.
    #[error("{} is not yours: run as the user that runs confabd", socket.display())]
    NotYours {
        /// The socket.
        socket: PathBuf,
    },
    /// Talking to the server failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The server answered something that is not a JSON line.
    #[error("the server's answer is not JSON: {0}")]
    Malformed(String),
    /// The server closed the connection without an answer.
    #[error("the server closed the connection without answering")]
    NoAnswer,
    /// The server refused the request (its reason).
    #[error("{0}")]
    Refused(String),
}

/// A connection to a running server's admin socket.
#[derive(Debug)]
pub struct AdminClient {
    reader: BufReader<UnixStream>,
}

impl AdminClient {
    /// Connects to the server running on `data_dir`.
    pub fn connect(data_dir: &Path) -> Result<AdminClient, AdminError> {
        let socket = super::socket_path(data_dir);
        let stream = UnixStream::connect(&socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                AdminError::NotRunning { data_dir: data_dir.to_path_buf(), socket: socket.clone() }
            }
            std::io::ErrorKind::PermissionDenied => AdminError::NotYours { socket: socket.clone() },
            _ => AdminError::Io { what: "connecting to the admin socket", source: e },
        })?;
        Ok(AdminClient { reader: BufReader::new(stream) })
    }

    /// Sends `request` and reads its answer: `Ok` with it when it says
    /// `"ok": true`, else the server's reason. `timeout` bounds each wait
    /// for the server (`None`: as long as it takes, for a backup).
    pub fn ask(&mut self, request: &Value, timeout: Option<Duration>) -> Result<Value, AdminError> {
        let stream = self.reader.get_mut();
        stream.set_read_timeout(timeout).map_err(|source| AdminError::Io { what: "setting a timeout", source })?;
        let mut line = request.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(|source| AdminError::Io { what: "sending the request", source })?;
        let mut answer = String::new();
        if !self.next_line(&mut answer)? {
            return Err(AdminError::NoAnswer);
        }
        let answer: Value = serde_json::from_str(&answer).map_err(|e| AdminError::Malformed(e.to_string()))?;
        if answer.get("ok") != Some(&Value::Bool(true)) {
            let why = answer.get("error").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(AdminError::Refused(why.to_string()));
        }
        Ok(answer)
    }

    /// Reads the next line into `line` (replacing what it held, without
    /// its newline); false at the end of the stream.
    pub fn next_line(&mut self, line: &mut String) -> Result<bool, AdminError> {
        line.clear();
        let n = self.reader.read_line(line).map_err(|source| AdminError::Io { what: "reading the answer", source })?;
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(n > 0)
    }
}
