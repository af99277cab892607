//! The operator's socket: `DATA_DIR/admin.sock`, a Unix socket only the
//! data dir's owner can open (the dir is 0700, the socket 0600), where
//! `confabd admin` asks the running server to act: look an account up,
//! list accounts, reset a password, revoke devices, disable or enable an
//! account, export a user's data, back the store up, drain the node (stop
//! it as SIGTERM does). Whoever can open the
//! socket can already read the database, so the file permissions are the
//! authentication.
//!
//! The exchange is one JSON line each way per connection: a request
//! `{"op": …, "username": …, …}` and an answer `{"ok": true, …}` or
//! `{"ok": false, "error": …}`. An export's answer `{"ok": true}` is
//! followed by the export itself, one JSON line per record, the last of
//! type `end` (or `error`). Requests larger than [`MAX_REQUEST`] or slower
//! than [`DEADLINE`] are dropped.
//!
//! ## Layout
//! - this file: the socket, the account commands and the dispatch;
//! - `export`: `admin export`, a user's data as JSON lines;
//! - `backup`: `admin backup`, an online copy of the data dir;
//! - `client`: the other end, for `confabd admin` (and tests).
//!
//! Listing, disabling, export and backup need the whole store on one
//! machine; in cluster mode they refuse with one line saying what to do
//! instead.

mod backup;
#[cfg(unix)]
pub mod client;
mod export;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use confab_protocol::{ErrorCode, Now, validate};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::state::Core;
use crate::store::{LocalStore, User};

/// The socket's file name in the data dir.
pub const SOCKET: &str = "admin.sock";
/// Largest request line.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Most accounts in one page of `admin users`.
pub const MAX_USERS_PAGE: u64 = 1000;

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

/// What every request is served with.
struct Ctx {
    core: Arc<Core>,
    /// The data dir the socket is in (what a backup copies).
    data_dir: PathBuf,
    /// The server is shutting down: long commands stop.
    stop: CancellationToken,
    /// Cancelled to ask the server to drain and stop.
    drain: CancellationToken,
}

/// Answers requests until `stop`; removes the socket file then.
#[cfg(unix)]
pub async fn serve(
    core: Arc<Core>,
    listener: tokio::net::UnixListener,
    path: PathBuf,
    stop: CancellationToken,
    drain: CancellationToken,
) {
    let data_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let ctx = Arc::new(Ctx { core, data_dir, stop: stop.clone(), drain });
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
        let ctx = Arc::clone(&ctx);
        ctx.core.tracker.clone().spawn(async move {
            let (read, write) = stream.into_split();
            let mut out = tokio::io::BufWriter::new(write);
            let mut line = String::new();
            let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
            let refused = match tokio::time::timeout(DEADLINE, reader.read_line(&mut line)).await {
                Ok(Ok(_)) => match serde_json::from_str::<Value>(&line) {
                    Ok(request) => {
                        answer(&ctx, &request, &mut out).await;
                        None
                    }
                    Err(e) => Some(format!("the request is not JSON: {e}")),
                },
                Ok(Err(e)) => Some(format!("reading the request: {e}")),
                Err(_) => Some("no request within 10 s".into()),
            };
            if let Some(why) = refused {
                send(&mut out, &failure(why)).await;
            }
            let _ = out.flush().await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Writes one JSON line; false when the client is gone.
async fn send(out: &mut (impl AsyncWrite + Unpin), value: &Value) -> bool {
    let mut line = value.to_string();
    line.push('\n');
    out.write_all(line.as_bytes()).await.is_ok()
}

fn failure(error: String) -> Value {
    json!({"ok": false, "error": error})
}

/// Password checks of the admin socket count against the loopback
/// address's share of the pool.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Serves one request: an export streams, everything else answers one
/// line.
async fn answer(ctx: &Ctx, request: &Value, out: &mut (impl AsyncWrite + Unpin)) {
    let op = request.get("op").and_then(Value::as_str).unwrap_or("");
    let answer = match op {
        "export" => return export::stream(ctx, request, out).await,
        "users" => users(&ctx.core, request).await,
        "backup" => backup::backup(ctx, request).await,
        "drain" => {
            // Counted before the drain starts: a session with nothing in
            // flight leaves the table as soon as it is told to go, which can
            // be before this answer is built.
            let already = ctx.drain.is_cancelled();
            let sessions = ctx.core.hub.sessions();
            ctx.drain.cancel();
            json!({"ok": true, "already": already, "sessions": sessions})
        }
        _ => account(ctx, op, request).await,
    };
    send(out, &answer).await;
}

/// The store of one machine, or the refusal of a command that needs it.
fn single_node<'a>(core: &'a Core, op: &str) -> Result<&'a LocalStore, Value> {
    core.store.single_node().ok_or_else(|| failure(in_a_cluster(op).into()))
}

/// What to do instead, in cluster mode, of a command that needs the whole
/// store on one machine.
fn in_a_cluster(op: &str) -> &'static str {
    match op {
        "users" => {
            "admin users is not available in cluster mode (accounts are spread over the nodes' partitions): look \
             accounts up one at a time with `confabd admin user NAME`"
        }
        "disable" | "enable" => {
            "admin disable and enable are not available in cluster mode: to lock an account out, give it a new \
             password with `confabd admin reset-password NAME` (it signs out every device)"
        }
        "export" => {
            "admin export is not available in cluster mode (a user's conversations are in other nodes' partitions): \
             use `confabd admin user NAME` for the account and its devices; docs/OPERATING.md, \"Exporting a user's \
             data\""
        }
        "backup" => {
            "admin backup is not available in cluster mode: the NATS JetStream streams are the data; back them up \
             with `nats stream backup` (docs/OPERATING.md, \"Cluster: backup and restore\")"
        }
        _ => "not available in cluster mode",
    }
}

/// `admin users`: a page of accounts in username order.
async fn users(core: &Core, request: &Value) -> Value {
    let store = match single_node(core, "users") {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let text = |key: &str| request.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let limit = request.get("limit").and_then(Value::as_u64).unwrap_or(100).clamp(1, MAX_USERS_PAGE);
    match store.users_page(text("prefix"), text("after"), limit as usize).await {
        Ok((users, more)) => {
            let users: Vec<Value> = users
                .iter()
                .map(|(u, devices)| {
                    json!({
                        "username": u.username,
                        "user_id": u.user_id,
                        "created_at_ms": u.created_at_ms,
                        "last_seen_ms": u.last_seen_ms,
                        "devices": devices,
                        "disabled": u.disabled,
                    })
                })
                .collect();
            json!({"ok": true, "users": users, "more": more})
        }
        Err(e) => failure(format!("the store: {e}")),
    }
}

/// The commands on one account, named by `username`.
async fn account(ctx: &Ctx, op: &str, request: &Value) -> Value {
    let core = &ctx.core;
    let Some(username) = request.get("username").and_then(Value::as_str) else {
        return match op {
            "user" | "reset-password" | "revoke-devices" | "disable" | "enable" => {
                failure("the request names no username".into())
            }
            other => failure(format!(
                "unknown op {other:?}: user, users, reset-password, revoke-devices, disable, enable, export or backup"
            )),
        };
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
                "disabled": user.disabled,
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
        "disable" => disable(ctx, &user).await,
        "enable" => enable(core, &user).await,
        other => failure(format!(
            "unknown op {other:?}: user, users, reset-password, revoke-devices, disable, enable, export or backup"
        )),
    }
}

fn end_sessions(core: &Core, user: u64, devices: &[u64]) {
    for device in devices {
        core.delivery.end_device_sessions(user, *device, ErrorCode::DEVICE_REVOKED, None);
    }
}

/// When sessions of a disabled account are looked for again after the
/// first sweep: a login or resume that read the account just before the
/// write registers its session a moment later.
const SWEEPS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// `admin disable`: the flag first (from then on no login or resume
/// succeeds), then every live session of every device of the account
/// ends with `DEVICE_REVOKED`. Devices, tokens and data stay.
async fn disable(ctx: &Ctx, user: &User) -> Value {
    let core = &ctx.core;
    let store = match single_node(core, "disable") {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let changed = match store.set_disabled(user.user_id, true, Now::system().unix_ms).await {
        Ok(c) => c,
        Err(e) => return failure(format!("the store: {e}")),
    };
    let online = match end_all_sessions(core, user.user_id).await {
        Ok(n) => n,
        Err(e) => return failure(format!("disabled, but listing its devices to sign them out failed: {e}")),
    };
    tracing::info!(user = user.user_id, changed, devices_online = online, "account disabled by the operator");
    let (core, stop, user_id, username) = (Arc::clone(core), ctx.stop.clone(), user.user_id, user.username.clone());
    ctx.core.tracker.spawn(async move {
        for wait in SWEEPS {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match core.store.user_by_name(username.clone()).await {
                Ok(Some(u)) if u.disabled => {
                    if let Err(e) = end_all_sessions(&core, user_id).await {
                        tracing::warn!(user = user_id, error = %e, "signing a disabled account's devices out again failed");
                    }
                }
                // Enabled again meanwhile: its new sessions stay.
                _ => return,
            }
        }
    });
    json!({"ok": true, "changed": changed, "devices_online": online})
}

/// `admin enable`: the account logs in and resumes again.
async fn enable(core: &Core, user: &User) -> Value {
    let store = match single_node(core, "enable") {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    match store.set_disabled(user.user_id, false, Now::system().unix_ms).await {
        Ok(changed) => {
            tracing::info!(user = user.user_id, changed, "account enabled by the operator");
            json!({"ok": true, "changed": changed})
        }
        Err(e) => failure(format!("the store: {e}")),
    }
}

/// Ends every live session of every device of `user`; how many devices
/// had one.
async fn end_all_sessions(core: &Core, user: u64) -> Result<usize, crate::store::CommandError> {
    let (devices, _) = core.store.devices(user, 0, usize::MAX).await?;
    let mut online = 0;
    for d in devices {
        if core.hub.device_online(user, d.device_id) {
            online += 1;
        }
        core.delivery.end_device_sessions(user, d.device_id, ErrorCode::DEVICE_REVOKED, None);
    }
    Ok(online)
}
