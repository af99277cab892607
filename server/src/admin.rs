//! The operator's socket: `DATA_DIR/admin.sock`, a Unix socket only the
//! data dir's owner can open (the dir is 0700, the socket 0600), where
//! `confabd admin` asks the running server to act on an account: look it
//! up, reset its password, revoke its devices. Whoever can open the socket
//! can already read the database, so the file permissions are the
//! authentication.
//!
//! The exchange is one JSON line each way per connection: a request
//! `{"op": "user" | "reset-password" | "revoke-devices", "username": …,
//! "password": …}` and an answer `{"ok": true, …}` or `{"ok": false,
//! "error": …}`. Requests larger than [`MAX_REQUEST`] or slower than
//! [`DEADLINE`] are dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use confab_protocol::{ErrorCode, validate};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::state::Core;

/// The socket's file name in the data dir.
pub const SOCKET: &str = "admin.sock";
/// Largest request line.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The socket path of a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the socket (replacing one a dead server left) with mode 0600.
#[cfg(unix)]
pub fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    // The data dir is locked by this process's store: a socket file there
    // is a dead server's.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until `stop`; removes the socket file then.
#[cfg(unix)]
pub async fn serve(core: Arc<Core>, listener: tokio::net::UnixListener, path: PathBuf, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let core = Arc::clone(&core);
        core.tracker.clone().spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
            let answer = match tokio::time::timeout(DEADLINE, reader.read_line(&mut line)).await {
                Ok(Ok(_)) => match serde_json::from_str::<Value>(&line) {
                    Ok(request) => handle(&core, &request).await,
                    Err(e) => failure(format!("the request is not JSON: {e}")),
                },
                Ok(Err(e)) => failure(format!("reading the request: {e}")),
                Err(_) => failure("no request within 10 s".into()),
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

fn failure(error: String) -> Value {
    json!({"ok": false, "error": error})
}

/// Password checks of the admin socket count against the loopback
/// address's share of the pool.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn handle(core: &Core, request: &Value) -> Value {
    let op = request.get("op").and_then(Value::as_str).unwrap_or("");
    let Some(username) = request.get("username").and_then(Value::as_str) else {
        return failure("the request names no username".into());
    };
    let user = match core.store.user_by_name(username.to_string()).await {
        Ok(Some(u)) => u,
        Ok(None) => return failure(format!("no such user: {username}")),
        Err(e) => return failure(format!("the store: {e}")),
    };
    match op {
        "user" => {
            let devices = match core.store.devices(user.user_id, 0, usize::MAX).await {
                Ok((d, _)) => d,
                Err(e) => return failure(format!("the store: {e}")),
            };
            let devices: Vec<Value> = devices
                .iter()
                .map(|d| {
                    json!({
                        "device_id": d.device_id,
                        "name": d.name,
                        "created_at_ms": d.created_at_ms,
                        "last_seen_ms": d.last_seen_ms,
                        "online": core.hub.device_online(user.user_id, d.device_id),
                    })
                })
                .collect();
            json!({
                "ok": true,
                "user_id": user.user_id,
                "username": user.username,
                "created_at_ms": user.created_at_ms,
                "last_seen_ms": user.last_seen_ms,
                "devices": devices,
            })
        }
        "reset-password" => {
            let Some(password) = request.get("password").and_then(Value::as_str) else {
                return failure("reset-password needs a password".into());
            };
            if let Err(v) = validate::new_password(&user.username, password) {
                return failure(v.to_string());
            }
            let hash = match core.credentials.passwords.hash(LOCAL, password.to_string()).await {
                Ok(Ok(h)) => h,
                Ok(Err(_)) => return failure("hashing the password failed".into()),
                Err(_) => return failure("the password-check pool is full; try again".into()),
            };
            match core.store.set_password(user.user_id, hash, true, 0).await {
                Ok(revoked) => {
                    end_sessions(core, user.user_id, &revoked);
                    tracing::info!(user = user.user_id, revoked = revoked.len(), "password reset by the operator");
                    json!({"ok": true, "revoked_devices": revoked.len()})
                }
                Err(e) => failure(format!("the store: {e}")),
            }
        }
        "revoke-devices" => match core.store.revoke_other_devices(user.user_id, 0).await {
            Ok(revoked) => {
                end_sessions(core, user.user_id, &revoked);
                tracing::info!(user = user.user_id, revoked = revoked.len(), "devices revoked by the operator");
                json!({"ok": true, "revoked_devices": revoked.len()})
            }
            Err(e) => failure(format!("the store: {e}")),
        },
        other => failure(format!("unknown op {other:?}: user, reset-password or revoke-devices")),
    }
}

fn end_sessions(core: &Core, user: u64, devices: &[u64]) {
    for device in devices {
        core.delivery.end_device_sessions(user, *device, ErrorCode::DEVICE_REVOKED, None);
    }
}
