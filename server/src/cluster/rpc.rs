//! Forwarded store operations: the owner's side ([`serve`]) and the
//! caller's ([`RpcClient`]), over NATS request/reply on
//! `confab.rpc.p<partition>` (a queue group, so one owner answers even
//! while a fenced one has not yet let go).
//!
//! A caller's requests are published in the order its operations were
//! called (one sender task), and the owner starts them in the order they
//! arrive, so one session's writes keep their order across nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use confab_protocol::pb;
use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::nats::rpc_subject;
use crate::store::records::{
    RpcDevices, RpcDone, RpcFailure, RpcId, RpcIds, RpcMaybeResumed, RpcMaybeUser, RpcMembership, RpcMemberships,
    RpcReply, RpcRequest, RpcUserAndDevice, rpc_reply, rpc_request,
};
use crate::store::{
    Accounts, CommandError, Conversations, HistoryRange, LocalStore, Messages, NewAccount, Op, Privacy, PushOutbox,
    Refusal, StoreError, UserRef,
};

/// The queue group owners answer in.
const QUEUE: &str = "owners";

fn user_ref(u: Option<pb::UserRef>) -> UserRef {
    let u = u.unwrap_or_default();
    UserRef { user_id: u.user_id, username: u.username }
}

/// A failure as it travels.
pub fn failure(e: &CommandError) -> RpcFailure {
    let (kind, detail, would_have, max) = match e {
        CommandError::Refused(r) => match r {
            Refusal::UsernameTaken => ("username_taken", String::new(), 0, 0),
            Refusal::UserNotFound(name) => ("user_not_found", name.clone(), 0, 0),
            Refusal::ConversationNotFound => ("conversation_not_found", String::new(), 0, 0),
            Refusal::DeviceNotFound => ("device_not_found", String::new(), 0, 0),
            Refusal::CannotMessageSelf => ("cannot_message_self", String::new(), 0, 0),
            Refusal::NotAGroup => ("not_a_group", String::new(), 0, 0),
            Refusal::PermissionDenied(why) => ("permission_denied", why.to_string(), 0, 0),
            Refusal::GroupFull { would_have, max } => ("group_full", String::new(), *would_have as u64, *max),
            Refusal::TooManyDevices { max } => ("too_many_devices", String::new(), 0, *max),
            Refusal::Invalid(why) => ("invalid", why.to_string(), 0, 0),
            Refusal::NotAccepted(who) => ("not_accepted", who.clone(), 0, 0),
            Refusal::TooManyBlocked { max } => ("too_many_blocked", String::new(), 0, *max),
        },
        CommandError::Busy => ("busy", String::new(), 0, 0),
        CommandError::Store(StoreError::Closed) => ("closed", String::new(), 0, 0),
        CommandError::Store(StoreError::WriteFailed(why)) => ("unavailable", why.clone(), 0, 0),
        CommandError::Store(StoreError::Reopening) => ("unavailable", "reopening".into(), 0, 0),
        CommandError::Store(StoreError::OutcomeUnknown(why)) => ("outcome_unknown", why.clone(), 0, 0),
        CommandError::Store(other) => ("internal", other.to_string(), 0, 0),
    };
    RpcFailure { kind: kind.into(), detail, would_have, max }
}

/// A failure as the caller sees it again.
pub fn command_error(f: RpcFailure) -> CommandError {
    let refused = |r| CommandError::Refused(r);
    match f.kind.as_str() {
        "username_taken" => refused(Refusal::UsernameTaken),
        "user_not_found" => refused(Refusal::UserNotFound(f.detail)),
        "conversation_not_found" => refused(Refusal::ConversationNotFound),
        "device_not_found" => refused(Refusal::DeviceNotFound),
        "cannot_message_self" => refused(Refusal::CannotMessageSelf),
        "not_a_group" => refused(Refusal::NotAGroup),
        "permission_denied" => refused(Refusal::PermissionDenied(f.detail.into())),
        "group_full" => refused(Refusal::GroupFull { would_have: f.would_have as usize, max: f.max }),
        "too_many_devices" => refused(Refusal::TooManyDevices { max: f.max }),
        "invalid" => refused(Refusal::Invalid(f.detail.into())),
        "not_accepted" => refused(Refusal::NotAccepted(f.detail)),
        "too_many_blocked" => refused(Refusal::TooManyBlocked { max: f.max }),
        "busy" => CommandError::Busy,
        "closed" | "unavailable" => unavailable(&f.detail),
        "outcome_unknown" => CommandError::Store(StoreError::OutcomeUnknown(f.detail)),
        _ => CommandError::Store(StoreError::Corrupt { keyspace: "remote", detail: f.detail }),
    }
}

/// A retryable failure: the owner could not be reached or is changing.
pub fn unavailable(why: &str) -> CommandError {
    CommandError::Store(StoreError::WriteFailed(format!("partition unavailable: {why}")))
}

fn reply(result: rpc_reply::Result) -> RpcReply {
    RpcReply { result: Some(result) }
}

fn done() -> rpc_reply::Result {
    rpc_reply::Result::Done(RpcDone {})
}

/// Starts the operation `request` names on the partition's store (writes
/// are queued now), and returns its answer to come.
fn start(store: &Arc<LocalStore>, request: RpcRequest) -> Op<RpcReply> {
    use rpc_reply::Result as R;
    use rpc_request::Op as Q;
    fn map<T: Send + 'static>(op: Op<T>, f: impl FnOnce(T) -> R + Send + 'static) -> Op<RpcReply> {
        Box::pin(async move { Ok(reply(f(op.await?))) })
    }
    let Some(op) = request.op else {
        return Box::pin(std::future::ready(Err(unavailable("an empty request"))));
    };
    match op {
        Q::CreateUser(r) => {
            let account = NewAccount {
                username: r.username,
                password_hash: r.password_hash,
                device_name: r.device_name,
                now_ms: r.now_ms,
            };
            map(store.create_user(account), |c| {
                R::UserAndDevice(RpcUserAndDevice { user: Some(c.user), device: Some(c.device), token: c.token })
            })
        }
        Q::UserByName(r) => map(store.user_by_name(r.username), |u| R::User(RpcMaybeUser { user: u })),
        Q::CreateDevice(r) => map(store.create_device(r.user_id, r.device_name, r.now_ms), |(d, token)| {
            R::UserAndDevice(RpcUserAndDevice { user: None, device: Some(d), token })
        }),
        Q::Resume(r) => map(store.resume(r.token), |found| {
            R::Resumed(match found {
                Some(f) => RpcMaybeResumed { user: Some(f.user), device: Some(f.device), inbox_head: f.inbox_head },
                None => RpcMaybeResumed::default(),
            })
        }),
        Q::Devices(r) => map(store.devices(r.user_id, 0, usize::MAX), |(devices, _)| {
            R::Devices(RpcDevices { devices, has_more: false })
        }),
        Q::DevicesPage(r) => {
            map(store.devices(r.user_id, r.after_device_id, r.limit as usize), |(devices, has_more)| {
                R::Devices(RpcDevices { devices, has_more })
            })
        }
        Q::RevokeOtherDevices(r) => {
            map(store.revoke_other_devices(r.user_id, r.device_id), |ids| R::Ids(RpcIds { ids }))
        }
        Q::RevokeDevice(r) => map(store.revoke_device(r.user_id, r.device_id), |()| done()),
        Q::TouchDevice(r) => map(store.touch_device(r.device_id, r.now_ms), |()| done()),
        Q::AckCursor(r) => map(store.ack_cursor(r.user_id, r.device_id, r.inbox_seq), |()| done()),
        Q::OpenDirect(r) => {
            let (me, peer) = (user_ref(r.me), user_ref(r.peer));
            map(store.open_direct_resolved(me, peer, r.now_ms), |id| R::Id(RpcId { id }))
        }
        Q::Memberships(r) => map(store.memberships(r.user_id), |list| {
            R::Memberships(RpcMemberships {
                memberships: list
                    .into_iter()
                    .map(|(conversation_id, read_seq)| RpcMembership { conversation_id, read_seq })
                    .collect(),
            })
        }),
        Q::Summaries(r) => map(store.summaries(r.user_id, r.conversation_ids), |conversations| {
            R::Conversations(crate::store::records::RpcConversations { conversations })
        }),
        Q::Members(r) => map(store.members(r.user_id, r.conversation_id), R::Members),
        Q::ReadReceipts(r) => map(store.read_receipts(r.user_id, r.conversation_id), R::Receipts),
        Q::TypingAudience(r) => map(store.typing_audience(r.user_id, r.conversation_id), |ids| R::Ids(RpcIds { ids })),
        Q::CreateGroup(r) => {
            let users = r.users.into_iter().map(|u| user_ref(Some(u))).collect();
            map(store.create_group_resolved(user_ref(r.actor), r.title, users, r.now_ms), R::Conversation)
        }
        Q::AddMembers(r) => {
            let users = r.users.into_iter().map(|u| user_ref(Some(u))).collect();
            map(store.add_members_resolved(user_ref(r.actor), r.conversation_id, users, r.now_ms), |()| done())
        }
        Q::RemoveMember(r) => {
            let op = store.remove_member_resolved(user_ref(r.actor), r.conversation_id, user_ref(r.target), r.now_ms);
            map(op, |()| done())
        }
        Q::LeaveGroup(r) => map(store.leave_group(user_ref(r.actor), r.conversation_id, r.now_ms), |()| done()),
        Q::RenameGroup(r) => {
            map(store.rename_group(user_ref(r.actor), r.conversation_id, r.title, r.now_ms), |()| done())
        }
        Q::SetRole(r) => {
            let role = pb::MemberRole::try_from(r.role).unwrap_or(pb::MemberRole::Member);
            let op = store.set_role_resolved(user_ref(r.actor), r.conversation_id, user_ref(r.target), role, r.now_ms);
            map(op, |()| done())
        }
        Q::Send(r) => map(store.send(user_ref(r.sender), r.conversation_id, r.client_msg_id, r.text, r.now_ms), |o| {
            R::Sent(pb::Sent { message: Some(o.message), duplicate: o.duplicate })
        }),
        Q::History(r) => {
            let range = HistoryRange {
                before_seq: r.before_seq,
                after_seq: r.after_seq,
                oldest_first: r.oldest_first,
                limit: r.limit as usize,
            };
            map(store.history(r.user_id, r.conversation_id, range), R::History)
        }
        Q::MarkRead(r) => map(store.mark_read(user_ref(r.user), r.conversation_id, r.seq), R::ReadState),
        Q::Sync(r) => map(store.sync(r.user_id, r.after, r.limit as usize), R::Sync),
        Q::RegisterPush(r) => match r.target {
            Some(t) => map(store.register_push(r.user_id, r.device_id, t), |()| done()),
            None => Box::pin(std::future::ready(Err(CommandError::Refused(Refusal::Invalid("no target".into()))))),
        },
        Q::UnregisterPush(r) => map(store.unregister_push(r.user_id, r.device_id), |()| done()),
        Q::SetBlocked(r) => map(store.set_blocked_here(r.user_id, user_ref(r.target), r.blocked, r.now_ms), |id| {
            R::Id(RpcId { id: id.unwrap_or(0) })
        }),
        Q::DirectBlock(r) => match r.block {
            Some(b) => map(store.direct_block(r.conversation_id, b.blocker_id, b.blocked_id, b.blocked), |()| done()),
            None => Box::pin(std::future::ready(Err(CommandError::Refused(Refusal::Invalid("no block".into()))))),
        },
        Q::Blocked(r) => map(store.blocked(r.user_id, r.after_user_id, r.limit as usize), |(blocks, has_more)| {
            R::Blocked(crate::store::records::RpcBlocked { blocks, has_more })
        }),
        Q::Privacy(r) => map(store.privacy(r.user_id), R::Privacy),
        Q::SetPrivacy(r) => map(store.set_privacy(r.user_id, r.change.unwrap_or_default()), R::Privacy),
        Q::Reach(r) => match crate::store::Reach::from_code(r.reach) {
            Some(reach) => {
                use crate::store::ThenRefuse;
                map(store.refuses(r.owner_id, r.other_id, reach).then_refuse(String::new()), |()| done())
            }
            None => Box::pin(std::future::ready(Err(CommandError::Refused(Refusal::Invalid("unknown reach".into()))))),
        },
        Q::SetPassword(r) => map(store.set_password(r.user_id, r.password_hash, r.revoke, r.keep_device_id), |ids| {
            R::Ids(RpcIds { ids })
        }),
    }
}

/// Answers forwarded operations for `partition` until `stop`.
pub async fn serve(
    client: async_nats::Client,
    partition: u32,
    store: Arc<LocalStore>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client.queue_subscribe(rpc_subject(partition), QUEUE.into()).await?;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else { continue };
        let answer = match RpcRequest::decode(msg.payload.clone()) {
            // Started here, in arrival order; answered when done.
            Ok(request) if request.partition == partition => start(&store, request),
            Ok(_) => Box::pin(std::future::ready(Err(unavailable("sent to the wrong partition")))),
            Err(e) => Box::pin(std::future::ready(Err(unavailable(&format!("an unreadable request: {e}"))))),
        };
        let client = client.clone();
        tokio::spawn(async move {
            let reply = match answer.await {
                Ok(r) => r,
                Err(e) => RpcReply { result: Some(rpc_reply::Result::Failure(failure(&e))) },
            };
            let _ = client.publish(reply_to, reply.encode_to_vec().into()).await;
        });
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}

/// The caller's side: requests go out in call order; answers come back on
/// one inbox subscription.
pub struct RpcClient {
    out: mpsc::UnboundedSender<(String, String, Bytes)>,
    inbox: String,
    next: AtomicU64,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
    timeout: Duration,
    stats: Arc<crate::metrics::ClusterStats>,
}

impl RpcClient {
    /// A client on `client`, answering after at most `timeout`.
    pub async fn start(
        client: async_nats::Client,
        timeout: Duration,
        stats: Arc<crate::metrics::ClusterStats>,
    ) -> Result<RpcClient, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(format!("{inbox}.*")).await?;
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
        let w = Arc::clone(&waiting);
        tokio::spawn(async move {
            while let Some(msg) = replies.next().await {
                let Some(id) = msg.subject.rsplit('.').next().and_then(|s| s.parse::<u64>().ok()) else { continue };
                // A "no responders" status has no payload: the sender is
                // dropped and the caller sees it.
                let sender = w.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if let Some(sender) = sender
                    && msg.status.is_none()
                {
                    let _ = sender.send(msg.payload);
                }
            }
        });
        let (out, mut queue) = mpsc::unbounded_channel::<(String, String, Bytes)>();
        tokio::spawn(async move {
            while let Some((subject, reply_to, payload)) = queue.recv().await {
                if let Err(e) = client.publish_with_reply(subject, reply_to, payload).await {
                    tracing::debug!(error = %e, "forwarding a request failed");
                }
            }
        });
        Ok(RpcClient { out, inbox, next: AtomicU64::new(1), waiting, timeout, stats })
    }

    /// Sends `op` to the owner of `partition` now; its answer to come.
    pub fn call(&self, partition: u32, op: rpc_request::Op) -> Op<rpc_reply::Result> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let request = RpcRequest { partition, op: Some(op) }.encode_to_vec();
        let queued = self.out.send((rpc_subject(partition), format!("{}.{id}", self.inbox), request.into()));
        let (waiting, timeout) = (Arc::clone(&self.waiting), self.timeout);
        Box::pin(async move {
            if queued.is_err() {
                return Err(unavailable("the node is shutting down"));
            }
            let answer = tokio::time::timeout(timeout, rx).await;
            waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let payload = match answer {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(unavailable(&format!("no owner for partition {partition} right now"))),
                // It may have done the work and its answer been lost.
                Err(_) => {
                    return Err(CommandError::Store(StoreError::OutcomeUnknown(format!(
                        "partition {partition}'s owner did not answer"
                    ))));
                }
            };
            match RpcReply::decode(payload) {
                Ok(RpcReply { result: Some(rpc_reply::Result::Failure(f)) }) => Err(command_error(f)),
                Ok(RpcReply { result: Some(r) }) => Ok(r),
                Ok(RpcReply { result: None }) => Err(unavailable("an empty answer")),
                Err(e) => Err(unavailable(&format!("an unreadable answer: {e}"))),
            }
        })
    }
}
