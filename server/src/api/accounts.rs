//! Signup, login, resume, logout and the device list.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use confab_protocol::ErrorCode;
use confab_protocol::pb::{self, server_frame::Body as Reply};

use super::{ApiError, Pending, reply, unix_ms};
use crate::passwords::Refused;
use crate::state::{Auth, Core};
use crate::store::{Created, NewAccount};

/// Counts a password check that found no place in the pool.
fn shed(core: &Core, why: Refused) -> ApiError {
    core.metrics.password_checks_shed.fetch_add(1, Relaxed);
    why.into()
}

pub(super) fn signup(core: &Arc<Core>, peer: SocketAddr, r: pb::SignupRequest) -> Pending {
    let core = Arc::clone(core);
    Box::pin(async move {
        let guard = &core.credentials;
        // Counted before the hash (so concurrent signups cannot all pass a
        // check made before any is counted); given back if the hash never
        // ran. Taken usernames count, so signup is no cheaper way to probe
        // for accounts.
        if let Err(wait) = guard.signups.attempt(peer.ip(), Instant::now()) {
            return Err(ApiError::rate_limited("too many signups from this address; try again later", wait));
        }
        let password_hash = match guard.passwords.hash(peer.ip(), r.password).await {
            Ok(h) => h.map_err(|_| ApiError::hashing_failed())?,
            Err(why) => {
                guard.signups.not_checked(peer.ip(), Instant::now());
                return Err(shed(&core, why));
            }
        };
        let account = NewAccount { username: r.username, password_hash, device_name: r.device_name, now_ms: unix_ms() };
        let Created { user, device, token } = core.store.create_user(account).await?;
        tracing::info!(user = user.user_id, username = %user.username, device = device.device_id, "signed up");
        Ok(Reply::AuthOk(pb::AuthOk {
            user_id: user.user_id,
            username: user.username,
            device_id: device.device_id,
            token,
            cursor: device.cursor,
            inbox_head: device.cursor,
            push_dropped: None,
        }))
    })
}

pub(super) fn login(core: &Arc<Core>, peer: SocketAddr, r: pb::LoginRequest) -> Pending {
    let core = Arc::clone(core);
    Box::pin(async move {
        let logins = &core.credentials.logins;
        // The attempt is reserved before the password check: as a login
        // (limited whatever its outcome) and in advance as a failure, which
        // a right password gives back.
        if let Err(wait) = logins.begin(&r.username, peer.ip(), Instant::now()) {
            return Err(ApiError::rate_limited("too many logins; try again later", wait));
        }
        let user = match core.store.user_by_name(r.username.clone()).await {
            Ok(u) => u,
            Err(e) => {
                logins.not_checked(&r.username, peer.ip(), Instant::now());
                return Err(e.into());
            }
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let ok = match core.credentials.passwords.verify(peer.ip(), stored, r.password).await {
            Ok(ok) => ok,
            Err(why) => {
                logins.not_checked(&r.username, peer.ip(), Instant::now());
                return Err(shed(&core, why));
            }
        };
        // A disabled account gets exactly what a wrong password gets (the
        // same answer after the same work, a failure counted), so nobody
        // learns from a login that it exists and is disabled.
        let disabled = ok && user.as_ref().is_some_and(|u| u.disabled);
        let Some(user) = user.filter(|_| ok && !disabled) else {
            core.metrics.auth_failures.fetch_add(1, Relaxed);
            tracing::info!(username = %r.username, %peer, disabled, "failed login");
            return Err(ApiError::invalid_credentials());
        };
        logins.succeeded(&r.username, peer.ip(), Instant::now());
        let user_id = user.user_id;
        let (device, token) = core.store.create_device(user_id, r.device_name, unix_ms()).await?;
        tracing::info!(user = user_id, device = device.device_id, %peer, "logged in");
        Ok(Reply::AuthOk(pb::AuthOk {
            user_id,
            username: user.username,
            device_id: device.device_id,
            token,
            cursor: device.cursor,
            inbox_head: device.cursor,
            push_dropped: None,
        }))
    })
}

pub(super) fn resume(core: &Arc<Core>, peer: SocketAddr, r: pb::ResumeRequest) -> Pending {
    let core = Arc::clone(core);
    Box::pin(async move {
        let logins = &core.credentials.logins;
        if let Err(wait) = logins.check_address(peer.ip(), Instant::now()) {
            return Err(ApiError::rate_limited(
                "too many failed logins and resumes from this address; try again later",
                wait,
            ));
        }
        let Some(found) = core.store.resume(r.token).await? else {
            logins.failed_address(peer.ip(), Instant::now());
            core.metrics.auth_failures.fetch_add(1, Relaxed);
            return Err(ApiError::invalid_token());
        };
        Ok(Reply::AuthOk(pb::AuthOk {
            user_id: found.user.user_id,
            username: found.user.username,
            device_id: found.device.device_id,
            token: String::new(),
            cursor: found.device.cursor,
            inbox_head: found.inbox_head,
            push_dropped: found.device.push_dropped,
        }))
    })
}

pub(super) fn logout(core: &Arc<Core>, auth: &Auth, session: u64) -> Pending {
    let (user, device) = (auth.user.user_id, auth.device_id);
    let revoked = core.store.revoke_device(user, device);
    let core = Arc::clone(core);
    Box::pin(async move {
        revoked.await?;
        // The asking session gets its Done; any other session of the
        // device ends.
        core.delivery.end_device_sessions(user, device, ErrorCode::DEVICE_REVOKED, Some(session));
        Ok(Reply::Done(pb::Done {}))
    })
}

pub(super) fn revoke_device(core: &Arc<Core>, auth: &Auth, r: pb::RevokeDeviceRequest) -> Pending {
    let (user, device) = (auth.user.user_id, r.device_id);
    let revoked = core.store.revoke_device(user, device);
    let core = Arc::clone(core);
    Box::pin(async move {
        revoked.await?;
        core.delivery.end_device_sessions(user, device, ErrorCode::DEVICE_REVOKED, None);
        Ok(Reply::Done(pb::Done {}))
    })
}

pub(super) fn revoke_other_devices(core: &Arc<Core>, auth: &Auth) -> Pending {
    let (user, keep) = (auth.user.user_id, auth.device_id);
    let revoked = core.store.revoke_other_devices(user, keep);
    let core = Arc::clone(core);
    Box::pin(async move {
        for device in revoked.await? {
            core.delivery.end_device_sessions(user, device, ErrorCode::DEVICE_REVOKED, None);
        }
        Ok(Reply::Done(pb::Done {}))
    })
}

pub(super) fn change_password(
    core: &Arc<Core>,
    auth: &Auth,
    peer: SocketAddr,
    r: pb::ChangePasswordRequest,
) -> Pending {
    let core = Arc::clone(core);
    let (user_id, username, keep) = (auth.user.user_id, auth.user.username.clone(), auth.device_id);
    Box::pin(async move {
        // The session checked the new password's general rules; the one
        // that needs the username is checked here, before any hashing.
        if let Err(v) = confab_protocol::validate::new_password(&username, &r.new_password) {
            return Err(ApiError::new(v.code(), v.to_string()));
        }
        // A wrong current password is a failed login: the same limits, so
        // a stolen session cannot guess its way to the password.
        let logins = &core.credentials.logins;
        if let Err(wait) = logins.begin(&username, peer.ip(), Instant::now()) {
            return Err(ApiError::rate_limited("too many password attempts; try again later", wait));
        }
        let stored = match core.store.user_by_name(username.clone()).await {
            Ok(u) => u.map(|u| u.password_hash),
            Err(e) => {
                logins.not_checked(&username, peer.ip(), Instant::now());
                return Err(e.into());
            }
        };
        let ok = match core.credentials.passwords.verify(peer.ip(), stored, r.current_password).await {
            Ok(ok) => ok,
            Err(why) => {
                logins.not_checked(&username, peer.ip(), Instant::now());
                return Err(shed(&core, why));
            }
        };
        if !ok {
            core.metrics.auth_failures.fetch_add(1, Relaxed);
            tracing::info!(user = user_id, %peer, "failed password change: wrong current password");
            return Err(ApiError::invalid_credentials());
        }
        logins.succeeded(&username, peer.ip(), Instant::now());
        let hash = match core.credentials.passwords.hash(peer.ip(), r.new_password).await {
            Ok(h) => h.map_err(|_| ApiError::hashing_failed())?,
            Err(why) => return Err(shed(&core, why)),
        };
        let revoked = core.store.set_password(user_id, hash, r.revoke_other_devices, keep).await?;
        for device in &revoked {
            core.delivery.end_device_sessions(user_id, *device, ErrorCode::DEVICE_REVOKED, None);
        }
        tracing::info!(user = user_id, device = keep, revoked = revoked.len(), "password changed");
        Ok(Reply::Done(pb::Done {}))
    })
}

pub(super) fn list_devices(core: &Arc<Core>, auth: &Auth, r: pb::ListDevicesRequest) -> Pending {
    let (user, current) = (auth.user.user_id, auth.device_id);
    let limit = core.limits.page_size(r.limit) as usize;
    // Room for the devices in one frame: the envelope and has_more take a
    // few bytes; each device costs its encoded length plus its tag.
    let room = (core.limits.max_frame_bytes as usize).saturating_sub(32);
    let hub = Arc::clone(&core.hub);
    reply(core.store.devices(user, r.after_device_id, limit), move |(devices, more)| {
        let mut out = Vec::with_capacity(devices.len());
        let mut used = 0usize;
        let mut has_more = more;
        for d in devices {
            let device = pb::Device {
                device_id: d.device_id,
                name: d.name,
                created_at_ms: d.created_at_ms,
                last_seen_ms: d.last_seen_ms,
                online: hub.device_online(user, d.device_id),
                current: d.device_id == current,
            };
            let size = prost::Message::encoded_len(&device) + 4;
            if used + size > room && !out.is_empty() {
                has_more = true;
                break;
            }
            used += size;
            out.push(device);
        }
        Reply::DeviceList(pb::DeviceList { devices: out, has_more })
    })
}
