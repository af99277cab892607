//! Request handlers, one file per request family, over the core's
//! services. [`dispatch`] routes an admitted request to its handler;
//! `error.rs` is the one place internal errors become wire codes.
//!
//! ## Layout
//! - `accounts`: signup, login, resume, logout, devices.
//! - `conversations`: direct conversations, listing, members.
//! - `messages`: send, history, read state, the inbox (sync, cursor).
//! - `groups`: create, members, roles, rename, leave.
//! - `presence`: subscriptions, status, typing.
//! - `push`: push targets.
//! - `privacy`: the block list and privacy settings.
//! - `error`: [`ApiError`].

mod accounts;
mod conversations;
mod error;
mod groups;
mod messages;
mod presence;
mod privacy;
mod push;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use confab_protocol::Now;
use confab_protocol::pb::{client_frame::Body, server_frame::Body as Reply};

pub use error::ApiError;

use crate::state::{Auth, Core};

/// What a handler knows about the session that sent the request.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The session's id in the session table (0 before authentication).
    pub session: u64,
    /// Set once authenticated.
    pub auth: Option<Auth>,
}

/// A handler's eventual result.
pub type Pending = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send>>;

fn ready(r: Result<Reply, ApiError>) -> Pending {
    Box::pin(std::future::ready(r))
}

/// Wraps a store operation's outcome into a reply.
fn reply<T, F>(op: crate::store::Op<T>, f: F) -> Pending
where
    T: Send + 'static,
    F: FnOnce(T) -> Reply + Send + 'static,
{
    Box::pin(async move { Ok(f(op.await?)) })
}

fn unix_ms() -> i64 {
    Now::system().unix_ms
}

/// Starts handling an admitted request. Writes are queued to the store
/// before this returns, so a session's writes run in the order its
/// requests arrived; the returned future finishes the work.
pub fn dispatch(core: &Arc<Core>, ctx: &SessionCtx, body: Body) -> Pending {
    let auth = match (body, &ctx.auth) {
        (Body::Signup(r), _) => return accounts::signup(core, ctx.peer, r),
        (Body::Login(r), _) => return accounts::login(core, ctx.peer, r),
        (Body::Resume(r), _) => return accounts::resume(core, ctx.peer, r),
        (body, Some(auth)) => (body, auth),
        (_, None) => return ready(Err(ApiError::unauthenticated())),
    };
    let (body, auth) = auth;
    match body {
        Body::Logout(_) => accounts::logout(core, auth, ctx.session),
        Body::RevokeDevice(r) => accounts::revoke_device(core, auth, r),
        Body::ListDevices(r) => accounts::list_devices(core, auth, r),
        Body::RevokeOtherDevices(_) => accounts::revoke_other_devices(core, auth),
        Body::ChangePassword(r) => accounts::change_password(core, auth, ctx.peer, r),
        Body::SetBlocked(r) => privacy::set_blocked(core, auth, r),
        Body::ListBlocked(r) => privacy::list_blocked(core, auth, r),
        Body::GetPrivacy(_) => privacy::get_privacy(core, auth),
        Body::SetPrivacy(r) => privacy::set_privacy(core, auth, r),
        Body::SearchUsers(r) => privacy::search_users(core, auth, r),
        Body::OpenDirect(r) => conversations::open_direct(core, auth, ctx.peer.ip(), r),
        Body::ListConversations(r) => conversations::list(core, auth, r),
        Body::GetConversation(r) => conversations::get(core, auth, r),
        Body::ListMembers(r) => conversations::members(core, auth, r),
        Body::Send(r) => messages::send(core, auth, r),
        Body::Sync(r) => messages::sync(core, auth, r),
        Body::AckCursor(r) => messages::ack_cursor(core, auth, r),
        Body::History(r) => messages::history(core, auth, r),
        Body::MarkRead(r) => messages::mark_read(core, auth, r),
        Body::ReadReceipts(r) => messages::read_receipts(core, auth, r),
        Body::CreateGroup(r) => groups::create(core, auth, ctx.peer.ip(), r),
        Body::AddMembers(r) => groups::add_members(core, auth, ctx.peer.ip(), r),
        Body::RemoveMember(r) => groups::remove_member(core, auth, r),
        Body::LeaveGroup(r) => groups::leave(core, auth, r),
        Body::RenameGroup(r) => groups::rename(core, auth, r),
        Body::SetRole(r) => groups::set_role(core, auth, r),
        Body::SubscribePresence(r) => presence::subscribe(core, auth, ctx.session, r),
        Body::UnsubscribePresence(r) => presence::unsubscribe(core, ctx.session, r),
        Body::SetStatus(r) => presence::set_status(core, auth, ctx.session, r),
        Body::RegisterPush(r) => push::register(core, auth, r),
        Body::UnregisterPush(_) => push::unregister(core, auth),
        // The session machine handles or refuses these before dispatch.
        Body::Hello(_) | Body::Signup(_) | Body::Login(_) | Body::Resume(_) | Body::Ping(_) | Body::Typing(_) => {
            ready(Err(ApiError::misrouted()))
        }
    }
}

/// Handles a notification (typing): no response, errors dropped.
pub fn notify(core: &Arc<Core>, ctx: &SessionCtx, body: Body) {
    if let (Body::Typing(t), Some(auth)) = (body, &ctx.auth) {
        presence::typing(core, auth, t);
    }
}
