//! Request handlers: one per request body, over the store, the writer and
//! the session table. [`ApiError`] is the one place internal errors become
//! wire codes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, Now};

use crate::accounts;
use crate::server::Shared;
use crate::store::{CommandError, Refusal, StoreError, UserRef};

/// A request's failure, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The wire code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// Retry advice (0: none).
    pub retry_after_ms: u64,
}

impl ApiError {
    /// An error with no retry advice.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_ms: 0 }
    }

    /// `RATE_LIMITED`, to be retried after `wait`.
    fn rate_limited(message: &str, wait: std::time::Duration) -> Self {
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        ApiError { code: ErrorCode::RATE_LIMITED, message: message.into(), retry_after_ms }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let code = match &r {
            Refusal::UsernameTaken => ErrorCode::USERNAME_TAKEN,
            Refusal::UserNotFound(_) => ErrorCode::USER_NOT_FOUND,
            Refusal::ConversationNotFound => ErrorCode::CONVERSATION_NOT_FOUND,
            Refusal::DeviceNotFound => ErrorCode::DEVICE_NOT_FOUND,
            Refusal::CannotMessageSelf => ErrorCode::CANNOT_MESSAGE_SELF,
            Refusal::NotAGroup => ErrorCode::NOT_A_GROUP,
            Refusal::PermissionDenied(_) => ErrorCode::PERMISSION_DENIED,
            Refusal::GroupFull { .. } => ErrorCode::GROUP_FULL,
            Refusal::Invalid(_) => ErrorCode::INVALID_ARGUMENT,
        };
        ApiError::new(code, r.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fjall(_) | StoreError::WriteFailed(_) | StoreError::Reopening => {
                // The writer logs a failing store once per episode; one
                // line per refused request would flood the log.
                tracing::debug!(error = %e, "store unavailable");
                ApiError {
                    code: ErrorCode::UNAVAILABLE,
                    message: "storage is unavailable".into(),
                    retry_after_ms: 1000,
                }
            }
            StoreError::Closed => ApiError::new(ErrorCode::SHUTTING_DOWN, "the server is shutting down"),
            other => {
                tracing::error!(error = %other, "internal store error");
                ApiError::new(ErrorCode::INTERNAL, "internal error")
            }
        }
    }
}

impl From<crate::push::PushRefusal> for ApiError {
    fn from(r: crate::push::PushRefusal) -> Self {
        let code = match &r {
            crate::push::PushRefusal::Unavailable(_) => ErrorCode::FEATURE_UNAVAILABLE,
            crate::push::PushRefusal::Invalid(_) => ErrorCode::INVALID_ARGUMENT,
        };
        ApiError::new(code, r.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(r) => r.into(),
            CommandError::Store(s) => s.into(),
            CommandError::Busy => {
                ApiError { code: ErrorCode::SERVER_BUSY, message: "server busy".into(), retry_after_ms: 100 }
            }
        }
    }
}

/// Who a session belongs to, once authenticated.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The user.
    pub user: UserRef,
    /// The device.
    pub device_id: u64,
}

/// What a handler knows about the session that sent the request.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The session's id in the hub (0 before authentication).
    pub session: u64,
    /// Set once authenticated.
    pub auth: Option<Auth>,
}

/// A handler's eventual result.
pub type Pending = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send>>;

fn ready(r: Result<Reply, ApiError>) -> Pending {
    Box::pin(std::future::ready(r))
}

fn unix_ms() -> i64 {
    Now::system().unix_ms
}

/// Starts handling an admitted request. Writes are queued to the store
/// writer before this returns, so a session's writes run in the order its
/// requests arrived; the returned future finishes the work.
pub fn dispatch(shared: &Arc<Shared>, ctx: &SessionCtx, body: Body) -> Pending {
    let sh = Arc::clone(shared);
    let auth = ctx.auth.clone();
    match (body, auth) {
        (Body::Signup(r), _) => Box::pin(signup(sh, ctx.peer, r)),
        (Body::Login(r), _) => Box::pin(login(sh, ctx.peer, r)),
        (Body::Resume(r), _) => Box::pin(resume(sh, ctx.peer, r)),
        (body, Some(auth)) => authenticated(sh, ctx, auth, body),
        (_, None) => ready(Err(ApiError::new(ErrorCode::UNAUTHENTICATED, "log in or resume first"))),
    }
}

fn authenticated(sh: Arc<Shared>, ctx: &SessionCtx, auth: Auth, body: Body) -> Pending {
    let user = auth.user.clone();
    let uid = user.user_id;
    let max_bytes = sh.limits.max_frame_bytes as usize;
    match body {
        Body::Logout(_) => {
            let session = ctx.session;
            submit(
                &sh,
                move |tx| tx.revoke_device(uid, auth.device_id),
                move |sh, ()| {
                    sh.hub.kill_device(uid, auth.device_id, ErrorCode::DEVICE_REVOKED, Some(session));
                    Reply::Done(pb::Done {})
                },
            )
        }
        Body::RevokeDevice(r) => {
            let device = r.device_id;
            submit(
                &sh,
                move |tx| tx.revoke_device(uid, device),
                move |sh, ()| {
                    sh.hub.kill_device(uid, device, ErrorCode::DEVICE_REVOKED, None);
                    Reply::Done(pb::Done {})
                },
            )
        }
        Body::ListDevices(_) => Box::pin(async move {
            let devices = sh.store.read(move |s| s.devices_of(uid)).await?;
            let devices = devices
                .into_iter()
                .map(|d| pb::Device {
                    device_id: d.device_id,
                    name: d.name,
                    created_at_ms: d.created_at_ms,
                    last_seen_ms: d.last_seen_ms,
                    online: sh.hub.device_online(uid, d.device_id),
                    current: d.device_id == auth.device_id,
                })
                .collect();
            Ok(Reply::DeviceList(pb::DeviceList { devices }))
        }),
        Body::OpenDirect(r) => {
            let now = unix_ms();
            submit(&sh, move |tx| tx.open_direct(&user, &r.username, now), |_, c| Reply::Conversation(c))
        }
        Body::ListConversations(r) => {
            let limit = sh.limits.page_size(r.limit) as usize;
            let before = (r.active_before_ms != 0 || r.before_conversation_id != 0)
                .then_some((r.active_before_ms, r.before_conversation_id));
            Box::pin(async move {
                let (conversations, has_more) =
                    sh.store.read(move |s| s.list_conversations(uid, limit, before, max_bytes)).await?;
                Ok(Reply::ConversationList(pb::ConversationList { conversations, has_more }))
            })
        }
        Body::GetConversation(r) => Box::pin(async move {
            match sh.store.read(move |s| s.conversation_view(uid, r.conversation_id)).await? {
                Some(c) => Ok(Reply::Conversation(c)),
                None => Err(Refusal::ConversationNotFound.into()),
            }
        }),
        Body::ListMembers(r) => Box::pin(async move {
            let conversation = r.conversation_id;
            let members = sh
                .store
                .read(move |s| {
                    if s.membership(uid, conversation)?.is_none_or(|m| m.left_seq != 0) {
                        return Ok(None);
                    }
                    let mut out = Vec::new();
                    for (user_id, m) in s.members(conversation)? {
                        let username = s.user(user_id)?.map(|u| u.username).unwrap_or_default();
                        out.push(pb::Member { user_id, username, role: m.role, joined_at_ms: m.joined_at_ms });
                    }
                    out.sort_by_key(|m| (m.joined_at_ms, m.user_id));
                    Ok(Some(out))
                })
                .await?;
            match members {
                Some(members) => Ok(Reply::MemberList(pb::MemberList { conversation_id: conversation, members })),
                None => Err(Refusal::ConversationNotFound.into()),
            }
        }),
        Body::Send(r) => {
            let now = unix_ms();
            let push = sh.push.as_ref().map(|p| p.timing());
            submit(
                &sh,
                move |tx| tx.send(&user, r.conversation_id, &r.client_msg_id, r.text, now, push),
                |sh, o| {
                    if let Some(push) = &sh.push {
                        push.queued(o.pushes_queued, &sh.metrics.push);
                    }
                    Reply::Sent(pb::Sent { message: Some(o.message), duplicate: o.duplicate })
                },
            )
        }
        Body::Sync(r) => {
            let limit = sh.limits.page_size(r.limit) as usize;
            Box::pin(async move {
                let (events, has_more, inbox_head) = sh
                    .store
                    .read(move |s| {
                        // The head after the page: an event committed
                        // between the two reads is then within the head.
                        let (events, more) = s.inbox_page(uid, r.after, limit, max_bytes)?;
                        let head = s.inbox_head(uid)?;
                        Ok((events, more, head))
                    })
                    .await?;
                Ok(Reply::SyncPage(pb::SyncPage { events, inbox_head, has_more }))
            })
        }
        Body::AckCursor(r) => {
            let device = auth.device_id;
            submit(&sh, move |tx| tx.ack_cursor(uid, device, r.inbox_seq), |_, ()| Reply::Done(pb::Done {}))
        }
        Body::History(r) => {
            let limit = sh.limits.page_size(r.limit) as usize;
            Box::pin(async move {
                let conversation = r.conversation_id;
                let page = sh
                    .store
                    .read(move |s| {
                        let Some(m) = s.membership(uid, conversation)? else { return Ok(None) };
                        let visible_to = if m.left_seq != 0 { m.left_seq } else { u64::MAX };
                        s.history(conversation, r.before_seq, r.after_seq, r.oldest_first, limit, visible_to, max_bytes)
                            .map(Some)
                    })
                    .await?;
                match page {
                    Some((messages, has_more)) => {
                        Ok(Reply::HistoryPage(pb::HistoryPage { conversation_id: conversation, messages, has_more }))
                    }
                    None => Err(Refusal::ConversationNotFound.into()),
                }
            })
        }
        Body::MarkRead(r) => {
            submit(&sh, move |tx| tx.mark_read(&user, r.conversation_id, r.seq), |_, state| Reply::ReadState(state))
        }
        Body::ReadReceipts(r) => Box::pin(async move {
            let conversation = r.conversation_id;
            let receipts = sh
                .store
                .read(move |s| {
                    if s.membership(uid, conversation)?.is_none_or(|m| m.left_seq != 0) {
                        return Ok(None);
                    }
                    let mut out = Vec::new();
                    for (user_id, _) in s.members(conversation)? {
                        let read_seq = s.membership(user_id, conversation)?.map_or(0, |m| m.read_seq);
                        let username = s.user(user_id)?.map(|u| u.username).unwrap_or_default();
                        out.push(pb::ReadReceipt { conversation_id: conversation, user_id, username, read_seq });
                    }
                    Ok(Some(out))
                })
                .await?;
            match receipts {
                Some(receipts) => {
                    Ok(Reply::ReadReceiptList(pb::ReadReceiptList { conversation_id: conversation, receipts }))
                }
                None => Err(Refusal::ConversationNotFound.into()),
            }
        }),
        Body::RegisterPush(r) => {
            let Some(push) = &sh.push else {
                return ready(Err(ApiError::new(ErrorCode::FEATURE_UNAVAILABLE, "this server does not offer push")));
            };
            let target = match push.target(r, unix_ms()) {
                Ok(t) => t,
                Err(e) => return ready(Err(e.into())),
            };
            let webhook_secret = match &target.target {
                Some(crate::store::records::push_target_record::Target::Webhook(h)) => h.secret.clone(),
                _ => Default::default(),
            };
            let device = auth.device_id;
            submit(
                &sh,
                move |tx| tx.register_push(uid, device, target),
                move |_, ()| Reply::PushRegistered(pb::PushRegistered { webhook_secret }),
            )
        }
        Body::UnregisterPush(_) => {
            let device = auth.device_id;
            submit(&sh, move |tx| tx.unregister_push(uid, device), done)
        }
        Body::CreateGroup(r) => {
            let (now, max) = (unix_ms(), sh.limits.max_group_members);
            submit(
                &sh,
                move |tx| tx.create_group(&user, &r.title, &r.usernames, max, now),
                |_, c| Reply::Conversation(c),
            )
        }
        Body::AddMembers(r) => {
            let (now, max) = (unix_ms(), sh.limits.max_group_members);
            submit(&sh, move |tx| tx.add_members(&user, r.conversation_id, &r.usernames, max, now), done)
        }
        Body::RemoveMember(r) => {
            let now = unix_ms();
            submit(&sh, move |tx| tx.remove_member(&user, r.conversation_id, &r.username, now), done)
        }
        Body::LeaveGroup(r) => {
            let now = unix_ms();
            submit(&sh, move |tx| tx.leave_group(&user, r.conversation_id, now), done)
        }
        Body::RenameGroup(r) => {
            let now = unix_ms();
            submit(&sh, move |tx| tx.rename_group(&user, r.conversation_id, &r.title, now), done)
        }
        Body::SetRole(r) => {
            let now = unix_ms();
            let role = pb::MemberRole::try_from(r.role).unwrap_or(pb::MemberRole::Member);
            submit(&sh, move |tx| tx.set_role(&user, r.conversation_id, &r.username, role, now), done)
        }
        Body::SubscribePresence(r) => {
            let (session, max) = (ctx.session, sh.limits.max_presence_subscriptions);
            Box::pin(async move {
                let users = sh
                    .store
                    .read(move |s| {
                        let mut out = Vec::with_capacity(r.usernames.len());
                        for name in &r.usernames {
                            match s.user_by_name(name)? {
                                Some(u) => out.push((u.user_id, u.username, u.last_seen_ms)),
                                None => return Ok(Err(name.clone())),
                            }
                        }
                        Ok(Ok(out))
                    })
                    .await?
                    .map_err(|name| ApiError::from(Refusal::UserNotFound(name)))?;
                let presences = sh.presence.subscribe(uid, session, &users, max, Instant::now()).map_err(|e| {
                    ApiError::new(ErrorCode::TOO_MANY_ITEMS, format!("at most {} presence subscriptions", e.max))
                })?;
                Ok(Reply::PresenceList(pb::PresenceList { presences }))
            })
        }
        Body::UnsubscribePresence(r) => {
            let session = ctx.session;
            Box::pin(async move {
                let ids = sh
                    .store
                    .read(move |s| {
                        let mut ids = Vec::new();
                        for name in &r.usernames {
                            ids.extend(s.user_by_name(name)?.map(|u| u.user_id));
                        }
                        Ok(ids)
                    })
                    .await?;
                sh.presence.unsubscribe(session, &ids);
                Ok(Reply::Done(pb::Done {}))
            })
        }
        Body::SetStatus(r) => {
            let away = r.status == pb::PresenceState::Away as i32;
            sh.presence.set_away(uid, ctx.session, away, Instant::now());
            ready(Ok(Reply::Done(pb::Done {})))
        }
        Body::Hello(_) | Body::Signup(_) | Body::Login(_) | Body::Resume(_) | Body::Ping(_) | Body::Typing(_) => {
            // The session machine handles or refuses these before dispatch.
            ready(Err(ApiError::new(ErrorCode::INTERNAL, "request reached the wrong handler")))
        }
    }
}

fn done(_: &Shared, (): ()) -> Reply {
    Reply::Done(pb::Done {})
}

/// Handles a notification (typing): no response, errors dropped. The
/// notice goes live to the other members' sessions; it is never stored.
pub fn notify(shared: &Arc<Shared>, ctx: &SessionCtx, body: Body) {
    let (Body::Typing(t), Some(auth)) = (body, ctx.auth.clone()) else { return };
    let sh = Arc::clone(shared);
    shared.tracker.spawn(async move {
        let (user, conversation) = (auth.user.user_id, t.conversation_id);
        let members = sh
            .store
            .read(move |s| {
                if s.membership(user, conversation)?.is_none_or(|m| m.left_seq != 0) {
                    return Ok(Vec::new());
                }
                s.members(conversation).map(|m| m.into_iter().map(|(u, _)| u).collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default();
        let event = pb::TypingEvent {
            conversation_id: conversation,
            user_id: user,
            username: auth.user.username,
            expires_in_ms: sh.config.typing_expiry_ms,
        };
        let event = pb::ServerFrame { request_id: 0, body: Some(Reply::Typing(event)) };
        // Encoded once each way: with the length prefix for session
        // streams, without for QUIC datagrams.
        let frame = confab_protocol::framing::frame_bytes(&event);
        let datagram = bytes::Bytes::from(prost::Message::encode_to_vec(&event));
        for member in members.into_iter().filter(|m| *m != user) {
            sh.hub.deliver_ephemeral(member, &frame, &datagram);
        }
    });
}

/// Queues a writer command now and maps its result when it completes.
fn submit<T, F, M>(sh: &Arc<Shared>, command: F, map: M) -> Pending
where
    T: Send + 'static,
    F: FnOnce(&mut crate::store::Tx<'_>) -> Result<(T, crate::store::writer::Deliveries), CommandError>
        + Send
        + 'static,
    M: FnOnce(&Shared, T) -> Reply + Send + 'static,
{
    match sh.writer.submit(command) {
        Ok(done) => {
            let sh = Arc::clone(sh);
            Box::pin(async move { Ok(map(&sh, done.await?)) })
        }
        Err(e) => ready(Err(e.into())),
    }
}

/// The answer when the password-check queue is full.
fn password_checks_busy(sh: &Shared) -> ApiError {
    sh.metrics.password_checks_shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ApiError {
        code: ErrorCode::SERVER_BUSY,
        message: "too many logins in progress; try again shortly".into(),
        retry_after_ms: 500,
    }
}

async fn signup(sh: Arc<Shared>, peer: SocketAddr, r: pb::SignupRequest) -> Result<Reply, ApiError> {
    if let Err(wait) = sh.signups.check(peer.ip(), Instant::now()) {
        return Err(ApiError::rate_limited("too many signups from this address; try again later", wait));
    }
    let password = r.password;
    let hash = sh
        .password_gate
        .run(move || accounts::hash_password(&password))
        .await
        .map_err(|_| password_checks_busy(&sh))?
        .map_err(|_| ApiError::new(ErrorCode::INTERNAL, "hashing failed"))?;
    // Counted once the expensive part was done (a SERVER_BUSY costs the
    // address nothing); taken usernames count, so signup is no cheaper way
    // to probe for accounts.
    if let Err(wait) = sh.signups.attempt(peer.ip(), Instant::now()) {
        return Err(ApiError::rate_limited("too many signups from this address; try again later", wait));
    }
    let (token, token_hash) = accounts::new_token();
    let now = unix_ms();
    let (user, device) =
        sh.writer.run(move |tx| tx.create_user(&r.username, hash, &r.device_name, token_hash, now)).await?;
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
}

async fn login(sh: Arc<Shared>, peer: SocketAddr, r: pb::LoginRequest) -> Result<Reply, ApiError> {
    let started = Instant::now();
    if let Err(wait) = sh.throttle.check(&r.username, peer.ip(), started) {
        return Err(ApiError::rate_limited("too many failed logins; try again later", wait));
    }
    let name = r.username.clone();
    let user = sh.store.read(move |s| s.user_by_name(&name)).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let password = r.password;
    let ok = sh
        .password_gate
        .run(move || accounts::verify_password(stored.as_deref(), &password))
        .await
        .map_err(|_| password_checks_busy(&sh))?;
    let Some(user) = user.filter(|_| ok) else {
        sh.throttle.failed(&r.username, peer.ip(), Instant::now());
        sh.metrics.auth_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(username = %r.username, %peer, "failed login");
        return Err(ApiError::new(ErrorCode::INVALID_CREDENTIALS, "unknown username or wrong password"));
    };
    sh.throttle.succeeded(&r.username);
    let (token, token_hash) = accounts::new_token();
    let now = unix_ms();
    let user_id = user.user_id;
    let device = sh.writer.run(move |tx| tx.create_device(user_id, &r.device_name, token_hash, now)).await?;
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
}

async fn resume(sh: Arc<Shared>, peer: SocketAddr, r: pb::ResumeRequest) -> Result<Reply, ApiError> {
    if let Err(wait) = sh.throttle.check_address(peer.ip(), Instant::now()) {
        return Err(ApiError::rate_limited(
            "too many failed logins and resumes from this address; try again later",
            wait,
        ));
    }
    let hash = accounts::token_hash(&r.token);
    let found = sh
        .store
        .read(move |s| {
            let Some(device) = s.device_by_token_hash(&hash)? else { return Ok(None) };
            let Some(user) = s.user(device.user_id)? else { return Ok(None) };
            let head = s.inbox_head(user.user_id)?;
            Ok(Some((user, device, head)))
        })
        .await?;
    let Some((user, device, inbox_head)) = found else {
        sh.throttle.failed_address(peer.ip(), Instant::now());
        sh.metrics.auth_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(ErrorCode::INVALID_TOKEN, "unknown or revoked token"));
    };
    Ok(Reply::AuthOk(pb::AuthOk {
        user_id: user.user_id,
        username: user.username,
        device_id: device.device_id,
        token: String::new(),
        cursor: device.cursor,
        inbox_head,
        push_dropped: device.push_dropped,
    }))
}
