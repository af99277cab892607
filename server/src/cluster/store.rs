//! [`ClusterStore`]: the store seam in cluster mode. Each operation goes to
//! the partition that owns its entity — this node's own [`LocalStore`] for
//! it when this node owns it, else the owner over NATS. Operations that
//! span partitions (a direct conversation found by username, a
//! conversation list with each conversation's last message) are split
//! here into one-partition steps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use confab_protocol::pb;

use super::rpc::{RpcClient, unavailable};
use crate::store::records::{
    DirectBlock, RpcBlockedPage, RpcDirectBlock, RpcReach, RpcSetBlocked, RpcSetPassword, RpcSetPrivacy,
};
use crate::store::records::{
    RpcAckCursor, RpcConversationOf, RpcCreateDevice, RpcCreateGroup, RpcDevice, RpcDevicesPage, RpcGroupAction,
    RpcGroupMember, RpcGroupMembers, RpcHistory, RpcMarkRead, RpcOpenDirect, RpcRegisterPush, RpcRename, RpcResume,
    RpcSend, RpcSummaries, RpcSync, RpcTouchDevice, RpcUser, RpcUserByName, rpc_reply, rpc_request,
};
use crate::store::{
    Accounts, CommandError, Conversations, Created, Db, Device, DueJob, HistoryRange, LocalStore, Messages, NewAccount,
    Op, Partitioning, PushOutbox, PushPlan, PushSettle, PushTarget, Refusal, Resumed, SendOutcome, Store, User,
    UserRef, conversation_page, tokens, with_read_seq,
};
use crate::store::{Blocked, Privacy, Reach, ThenRefuse};

/// The partitions this node owns, each with its store.
pub type Owned = Arc<RwLock<HashMap<u32, Arc<LocalStore>>>>;

/// The store seam over the whole cluster.
pub struct ClusterStore {
    partitioning: Partitioning,
    owned: Owned,
    rpc: RpcClient,
    db: Arc<Db>,
    max_reply_bytes: usize,
}

fn unexpected<T>(what: &str) -> Result<T, CommandError> {
    Err(unavailable(&format!("unexpected answer to {what}")))
}

fn pb_user(u: &UserRef) -> pb::UserRef {
    pb::UserRef::from(u)
}

impl ClusterStore {
    /// Routes over `owned` (kept up to date by the ownership loop).
    pub fn new(partitioning: Partitioning, owned: Owned, rpc: RpcClient, db: Arc<Db>, max_reply_bytes: usize) -> Self {
        ClusterStore { partitioning, owned, rpc, db, max_reply_bytes }
    }

    fn local(&self, partition: u32) -> Option<Arc<LocalStore>> {
        self.owned.read().unwrap_or_else(|p| p.into_inner()).get(&partition).cloned()
    }

    fn owned_partitions(&self) -> HashSet<u32> {
        self.owned.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// Runs `here` on this node's store of `partition`, or sends `there`
    /// to its owner and reads the answer with `read`.
    fn route<T: Send + 'static>(
        &self,
        partition: u32,
        here: impl FnOnce(&LocalStore) -> Op<T>,
        there: impl FnOnce() -> rpc_request::Op,
        read: impl FnOnce(rpc_reply::Result) -> Result<T, CommandError> + Send + 'static,
    ) -> Op<T> {
        match self.local(partition) {
            Some(store) => here(&store),
            None => {
                let call = self.rpc.call(partition, there());
                Box::pin(async move { read(call.await?) })
            }
        }
    }

    fn of_user(&self, user: u64) -> u32 {
        self.partitioning.of_id(user)
    }

    fn done(r: rpc_reply::Result) -> Result<(), CommandError> {
        match r {
            rpc_reply::Result::Done(_) => Ok(()),
            _ => unexpected("a write"),
        }
    }

    fn memberships(&self, user: u64) -> Op<Vec<(u64, u64)>> {
        self.route(
            self.of_user(user),
            |s| s.memberships(user),
            || rpc_request::Op::Memberships(RpcUser { user_id: user }),
            |r| match r {
                rpc_reply::Result::Memberships(m) => {
                    Ok(m.memberships.into_iter().map(|m| (m.conversation_id, m.read_seq)).collect())
                }
                _ => unexpected("memberships"),
            },
        )
    }

    fn summaries(&self, user: u64, partition: u32, conversations: Vec<u64>) -> Op<Vec<pb::Conversation>> {
        let ids = conversations.clone();
        self.route(
            partition,
            |s| s.summaries(user, conversations),
            || rpc_request::Op::Summaries(RpcSummaries { user_id: user, conversation_ids: ids }),
            |r| match r {
                rpc_reply::Result::Conversations(c) => Ok(c.conversations),
                _ => unexpected("summaries"),
            },
        )
    }

    /// The views of a user's conversations (all, or only `only`), each
    /// summary from its partition with the user's read marker.
    fn views(self: &Arc<Self>, user: u64, only: Option<u64>) -> Op<Vec<pb::Conversation>> {
        let this = Arc::clone(self);
        Box::pin(async move {
            let mut read_seqs: HashMap<u64, u64> = this.memberships(user).await?.into_iter().collect();
            if let Some(c) = only {
                read_seqs.retain(|k, _| *k == c);
            }
            let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for c in read_seqs.keys() {
                by_partition.entry(this.partitioning.of_id(*c)).or_default().push(*c);
            }
            let mut views = Vec::with_capacity(read_seqs.len());
            for (partition, conversations) in by_partition {
                for view in this.summaries(user, partition, conversations).await? {
                    let read_seq = read_seqs.get(&view.conversation_id).copied().unwrap_or(0);
                    views.push(with_read_seq(view, read_seq));
                }
            }
            Ok(views)
        })
    }
}

/// The seam's methods need `Arc<Self>` for the steps that span partitions.
#[derive(Clone)]
pub struct Cluster(pub Arc<ClusterStore>);

impl std::ops::Deref for Cluster {
    type Target = Arc<ClusterStore>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Cluster {
    /// The users with these names, each from its partition, in order;
    /// refuses the first unknown one.
    fn resolve(&self, names: Vec<String>) -> Op<Vec<UserRef>> {
        let this = self.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                match this.user_by_name(name.clone()).await? {
                    Some(u) => out.push(UserRef { user_id: u.user_id, username: u.username }),
                    None => return Err(CommandError::Refused(Refusal::UserNotFound(name))),
                }
            }
            Ok(out)
        })
    }
}

impl Accounts for Cluster {
    fn create_user(&self, a: NewAccount) -> Op<Created> {
        let p = self.partitioning.of_username(&a.username);
        let there = rpc_request::Op::CreateUser(crate::store::records::RpcCreateUser {
            username: a.username.clone(),
            password_hash: a.password_hash.clone(),
            device_name: a.device_name.clone(),
            now_ms: a.now_ms,
        });
        self.route(
            p,
            |s| s.create_user(a),
            || there,
            |r| match r {
                rpc_reply::Result::UserAndDevice(c) => match (c.user, c.device) {
                    (Some(user), Some(device)) => Ok(Created { user, device, token: c.token }),
                    _ => unexpected("create_user"),
                },
                _ => unexpected("create_user"),
            },
        )
    }

    fn user_by_name(&self, username: String) -> Op<Option<User>> {
        let p = self.partitioning.of_username(&username);
        let name = username.clone();
        self.route(
            p,
            |s| s.user_by_name(username),
            || rpc_request::Op::UserByName(RpcUserByName { username: name }),
            |r| match r {
                rpc_reply::Result::User(u) => Ok(u.user),
                _ => unexpected("user_by_name"),
            },
        )
    }

    fn users_by_name(&self, usernames: Vec<String>) -> Op<Vec<User>> {
        let this = self.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(usernames.len());
            for name in usernames {
                match this.user_by_name(name.clone()).await? {
                    Some(u) => out.push(u),
                    None => return Err(CommandError::Refused(Refusal::UserNotFound(name))),
                }
            }
            Ok(out)
        })
    }

    fn create_device(&self, user_id: u64, device_name: String, now_ms: i64) -> Op<(Device, String)> {
        let name = device_name.clone();
        self.route(
            self.of_user(user_id),
            |s| s.create_device(user_id, device_name, now_ms),
            || rpc_request::Op::CreateDevice(RpcCreateDevice { user_id, device_name: name, now_ms }),
            |r| match r {
                rpc_reply::Result::UserAndDevice(c) => match c.device {
                    Some(d) => Ok((d, c.token)),
                    None => unexpected("create_device"),
                },
                _ => unexpected("create_device"),
            },
        )
    }

    fn resume(&self, token: String) -> Op<Option<Resumed>> {
        let Some(p) = tokens::partition(&token, self.partitioning) else {
            return Box::pin(std::future::ready(Ok(None)));
        };
        let t = token.clone();
        self.route(
            p,
            |s| s.resume(token),
            || rpc_request::Op::Resume(RpcResume { token: t }),
            |r| match r {
                rpc_reply::Result::Resumed(f) => Ok(match (f.user, f.device) {
                    (Some(user), Some(device)) => Some(Resumed { user, device, inbox_head: f.inbox_head }),
                    _ => None,
                }),
                _ => unexpected("resume"),
            },
        )
    }

    fn devices(&self, user_id: u64, after: u64, limit: usize) -> Op<(Vec<Device>, bool)> {
        let page = RpcDevicesPage { user_id, after_device_id: after, limit: limit.min(u32::MAX as usize) as u32 };
        self.route(
            self.of_user(user_id),
            |s| s.devices(user_id, after, limit),
            || rpc_request::Op::DevicesPage(page),
            |r| match r {
                rpc_reply::Result::Devices(d) => Ok((d.devices, d.has_more)),
                _ => unexpected("devices"),
            },
        )
    }

    fn revoke_other_devices(&self, user_id: u64, keep: u64) -> Op<Vec<u64>> {
        self.route(
            self.of_user(user_id),
            |s| s.revoke_other_devices(user_id, keep),
            || rpc_request::Op::RevokeOtherDevices(RpcDevice { user_id, device_id: keep }),
            |r| match r {
                rpc_reply::Result::Ids(ids) => Ok(ids.ids),
                _ => unexpected("revoke_other_devices"),
            },
        )
    }

    fn revoke_device(&self, user_id: u64, device_id: u64) -> Op<()> {
        self.route(
            self.of_user(user_id),
            |s| s.revoke_device(user_id, device_id),
            || rpc_request::Op::RevokeDevice(RpcDevice { user_id, device_id }),
            ClusterStore::done,
        )
    }

    fn touch_device(&self, device_id: u64, now_ms: i64) -> Op<()> {
        self.route(
            self.partitioning.of_id(device_id),
            |s| s.touch_device(device_id, now_ms),
            || rpc_request::Op::TouchDevice(RpcTouchDevice { device_id, now_ms }),
            ClusterStore::done,
        )
    }

    fn ack_cursor(&self, user_id: u64, device_id: u64, inbox_seq: u64) -> Op<()> {
        self.route(
            self.of_user(user_id),
            |s| s.ack_cursor(user_id, device_id, inbox_seq),
            || rpc_request::Op::AckCursor(RpcAckCursor { user_id, device_id, inbox_seq }),
            ClusterStore::done,
        )
    }
}

impl Conversations for Cluster {
    fn open_direct(&self, me: UserRef, peer: String, now_ms: i64) -> Op<pb::Conversation> {
        let this = self.clone();
        Box::pin(async move {
            let Some(peer) = this.user_by_name(peer.clone()).await? else {
                return Err(CommandError::Refused(Refusal::UserNotFound(peer)));
            };
            let peer = UserRef { user_id: peer.user_id, username: peer.username };
            this.may_reach(me.user_id, peer.clone(), Reach::Direct).await?;
            let pair = this.partitioning.of_pair(me.user_id, peer.user_id);
            let (m, p) = (pb_user(&me), pb_user(&peer));
            let (me2, peer2) = (me.clone(), peer.clone());
            let conversation = this
                .route(
                    pair,
                    |s| s.open_direct_resolved(me2, peer2, now_ms),
                    || rpc_request::Op::OpenDirect(RpcOpenDirect { me: Some(m), peer: Some(p), now_ms }),
                    |r| match r {
                        rpc_reply::Result::Id(id) => Ok(id.id),
                        _ => unexpected("open_direct"),
                    },
                )
                .await?;
            // The opener's view, read marker included (from their partition;
            // a new conversation's joined effect may still be on its way).
            let views = this.views(me.user_id, Some(conversation)).await?;
            match views.into_iter().next() {
                Some(v) => Ok(v),
                None => {
                    let summary = this.summaries(me.user_id, pair, vec![conversation]).await?;
                    summary.into_iter().next().ok_or(CommandError::Refused(Refusal::ConversationNotFound))
                }
            }
        })
    }

    fn conversations(&self, user_id: u64, limit: usize, before: Option<(i64, u64)>) -> Op<pb::ConversationList> {
        let this = self.clone();
        Box::pin(async move {
            let views = this.views(user_id, None).await?;
            let (conversations, has_more) = conversation_page(views, limit, before, this.max_reply_bytes);
            Ok(pb::ConversationList { conversations, has_more })
        })
    }

    fn conversation(&self, user_id: u64, conversation: u64) -> Op<pb::Conversation> {
        let views = self.views(user_id, Some(conversation));
        Box::pin(
            async move { views.await?.into_iter().next().ok_or(CommandError::Refused(Refusal::ConversationNotFound)) },
        )
    }

    fn members(&self, user_id: u64, conversation: u64) -> Op<pb::MemberList> {
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.members(user_id, conversation),
            || rpc_request::Op::Members(RpcConversationOf { user_id, conversation_id: conversation }),
            |r| match r {
                rpc_reply::Result::Members(m) => Ok(m),
                _ => unexpected("members"),
            },
        )
    }

    fn read_receipts(&self, user_id: u64, conversation: u64) -> Op<pb::ReadReceiptList> {
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.read_receipts(user_id, conversation),
            || rpc_request::Op::ReadReceipts(RpcConversationOf { user_id, conversation_id: conversation }),
            |r| match r {
                rpc_reply::Result::Receipts(m) => Ok(m),
                _ => unexpected("read_receipts"),
            },
        )
    }

    fn typing_audience(&self, user_id: u64, conversation: u64) -> Op<Vec<u64>> {
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.typing_audience(user_id, conversation),
            || rpc_request::Op::TypingAudience(RpcConversationOf { user_id, conversation_id: conversation }),
            |r| match r {
                rpc_reply::Result::Ids(ids) => Ok(ids.ids),
                _ => unexpected("typing_audience"),
            },
        )
    }

    fn create_group(&self, actor: UserRef, title: String, usernames: Vec<String>, now_ms: i64) -> Op<pb::Conversation> {
        let this = self.clone();
        let resolved = self.resolve(usernames);
        Box::pin(async move {
            let users = resolved.await?;
            this.may_reach_all(actor.user_id, &users).await?;
            let p = this.of_user(actor.user_id);
            let there = rpc_request::Op::CreateGroup(RpcCreateGroup {
                actor: Some(pb_user(&actor)),
                title: title.clone(),
                users: users.iter().map(pb_user).collect(),
                now_ms,
            });
            this.route(
                p,
                |s| s.create_group_resolved(actor, title, users, now_ms),
                || there,
                |r| match r {
                    rpc_reply::Result::Conversation(c) => Ok(c),
                    _ => unexpected("create_group"),
                },
            )
            .await
        })
    }

    fn add_members(&self, actor: UserRef, conversation: u64, usernames: Vec<String>, now_ms: i64) -> Op<()> {
        let this = self.clone();
        let resolved = self.resolve(usernames);
        Box::pin(async move {
            let users = resolved.await?;
            this.may_reach_all(actor.user_id, &users).await?;
            let there = rpc_request::Op::AddMembers(RpcGroupMembers {
                actor: Some(pb_user(&actor)),
                conversation_id: conversation,
                users: users.iter().map(pb_user).collect(),
                now_ms,
            });
            this.route(
                this.partitioning.of_id(conversation),
                |s| s.add_members_resolved(actor, conversation, users, now_ms),
                || there,
                ClusterStore::done,
            )
            .await
        })
    }

    fn remove_member(&self, actor: UserRef, conversation: u64, username: String, now_ms: i64) -> Op<()> {
        let this = self.clone();
        let resolved = self.resolve(vec![username]);
        Box::pin(async move {
            let target = resolved.await?.remove(0);
            let there = rpc_request::Op::RemoveMember(RpcGroupMember {
                actor: Some(pb_user(&actor)),
                conversation_id: conversation,
                target: Some(pb_user(&target)),
                now_ms,
                role: 0,
            });
            this.route(
                this.partitioning.of_id(conversation),
                |s| s.remove_member_resolved(actor, conversation, target, now_ms),
                || there,
                ClusterStore::done,
            )
            .await
        })
    }

    fn leave_group(&self, actor: UserRef, conversation: u64, now_ms: i64) -> Op<()> {
        let a = pb_user(&actor);
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.leave_group(actor, conversation, now_ms),
            || rpc_request::Op::LeaveGroup(RpcGroupAction { actor: Some(a), conversation_id: conversation, now_ms }),
            ClusterStore::done,
        )
    }

    fn rename_group(&self, actor: UserRef, conversation: u64, title: String, now_ms: i64) -> Op<()> {
        let (a, t) = (pb_user(&actor), title.clone());
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.rename_group(actor, conversation, title, now_ms),
            || {
                rpc_request::Op::RenameGroup(RpcRename {
                    actor: Some(a),
                    conversation_id: conversation,
                    title: t,
                    now_ms,
                })
            },
            ClusterStore::done,
        )
    }

    fn set_role(
        &self,
        actor: UserRef,
        conversation: u64,
        username: String,
        role: pb::MemberRole,
        now_ms: i64,
    ) -> Op<()> {
        let this = self.clone();
        let resolved = self.resolve(vec![username]);
        Box::pin(async move {
            let target = resolved.await?.remove(0);
            let there = rpc_request::Op::SetRole(RpcGroupMember {
                actor: Some(pb_user(&actor)),
                conversation_id: conversation,
                target: Some(pb_user(&target)),
                now_ms,
                role: role as i32,
            });
            this.route(
                this.partitioning.of_id(conversation),
                |s| s.set_role_resolved(actor, conversation, target, role, now_ms),
                || there,
                ClusterStore::done,
            )
            .await
        })
    }
}

impl Messages for Cluster {
    fn send(
        &self,
        sender: UserRef,
        conversation: u64,
        client_msg_id: String,
        text: String,
        now_ms: i64,
    ) -> Op<SendOutcome> {
        let there = rpc_request::Op::Send(RpcSend {
            sender: Some(pb_user(&sender)),
            conversation_id: conversation,
            client_msg_id: client_msg_id.clone(),
            text: text.clone(),
            now_ms,
        });
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.send(sender, conversation, client_msg_id, text, now_ms),
            || there,
            |r| match r {
                rpc_reply::Result::Sent(pb::Sent { message: Some(message), duplicate }) => {
                    Ok(SendOutcome { message, duplicate })
                }
                _ => unexpected("send"),
            },
        )
    }

    fn history(&self, user_id: u64, conversation: u64, range: HistoryRange) -> Op<pb::HistoryPage> {
        self.route(
            self.partitioning.of_id(conversation),
            |s| s.history(user_id, conversation, range),
            || {
                rpc_request::Op::History(RpcHistory {
                    user_id,
                    conversation_id: conversation,
                    before_seq: range.before_seq,
                    after_seq: range.after_seq,
                    oldest_first: range.oldest_first,
                    limit: range.limit as u32,
                })
            },
            |r| match r {
                rpc_reply::Result::History(h) => Ok(h),
                _ => unexpected("history"),
            },
        )
    }

    fn mark_read(&self, user: UserRef, conversation: u64, seq: u64) -> Op<pb::ReadState> {
        let u = pb_user(&user);
        self.route(
            self.of_user(user.user_id),
            |s| s.mark_read(user, conversation, seq),
            || rpc_request::Op::MarkRead(RpcMarkRead { user: Some(u), conversation_id: conversation, seq }),
            |r| match r {
                rpc_reply::Result::ReadState(s) => Ok(s),
                _ => unexpected("mark_read"),
            },
        )
    }

    fn sync(&self, user_id: u64, after: u64, limit: usize) -> Op<pb::SyncPage> {
        self.route(
            self.of_user(user_id),
            |s| s.sync(user_id, after, limit),
            || rpc_request::Op::Sync(RpcSync { user_id, after, limit: limit as u32 }),
            |r| match r {
                rpc_reply::Result::Sync(p) => Ok(p),
                _ => unexpected("sync"),
            },
        )
    }
}

impl PushOutbox for Cluster {
    fn register_push(&self, user_id: u64, device_id: u64, target: PushTarget) -> Op<()> {
        let t = target.clone();
        self.route(
            self.of_user(user_id),
            |s| s.register_push(user_id, device_id, target),
            || rpc_request::Op::RegisterPush(RpcRegisterPush { user_id, device_id, target: Some(t) }),
            ClusterStore::done,
        )
    }

    fn unregister_push(&self, user_id: u64, device_id: u64) -> Op<()> {
        self.route(
            self.of_user(user_id),
            |s| s.unregister_push(user_id, device_id),
            || rpc_request::Op::UnregisterPush(RpcDevice { user_id, device_id }),
            ClusterStore::done,
        )
    }

    fn push_target_count(&self) -> Op<usize> {
        let db = Arc::clone(&self.db);
        Box::pin(async move { Ok(db.read(|db| db.push_target_count()).await?) })
    }

    /// Jobs of the partitions this node owns (each owner sends its users'
    /// notifications).
    fn push_due(&self, now_ms: i64, limit: usize, busy: HashSet<(u64, u64)>) -> Op<(Vec<DueJob>, Option<i64>)> {
        let (db, owned, partitioning) = (Arc::clone(&self.db), self.owned_partitions(), self.partitioning);
        Box::pin(async move {
            let mine = move |device: u64| owned.contains(&partitioning.of_id(device));
            Ok(db.read(move |db| db.push_due(now_ms, limit, &busy, mine)).await?)
        })
    }

    fn push_plan(&self, job: DueJob, now_ms: i64, delay_ms: i64, with_text: bool) -> Op<PushPlan> {
        match self.local(self.partitioning.of_id(job.device)) {
            Some(s) => s.push_plan(job, now_ms, delay_ms, with_text),
            // The partition moved: its new owner decides.
            None => Box::pin(std::future::ready(Ok(PushPlan::Stale))),
        }
    }

    fn settle_push(&self, job: DueJob, attempted: u64, settle: PushSettle, now_ms: i64) -> Op<()> {
        match self.local(self.partitioning.of_id(job.device)) {
            Some(s) => s.settle_push(job, attempted, settle, now_ms),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }
}

impl Cluster {
    /// Refuses unless every one of `users` accepts being put in a group by
    /// `actor` (the creator and members already in it are not asked).
    async fn may_reach_all(&self, actor: u64, users: &[UserRef]) -> Result<(), CommandError> {
        let checks: Vec<_> = users
            .iter()
            .filter(|u| u.user_id != actor)
            .map(|u| self.may_reach(actor, u.clone(), Reach::Group))
            .collect();
        for check in checks {
            check.await?;
        }
        Ok(())
    }

    /// Whether `owner` refuses `reach` from `other`, asked of `owner`'s
    /// partition.
    fn refuses(&self, owner: u64, other: u64, reach: Reach, who: String) -> Op<()> {
        let there = RpcReach { owner_id: owner, other_id: other, reach: reach.code() };
        self.route(
            self.of_user(owner),
            |s| s.refuses(owner, other, reach).then_refuse(who),
            || rpc_request::Op::Reach(there),
            ClusterStore::done,
        )
    }
}

impl Privacy for Cluster {
    fn set_blocked(&self, user_id: u64, target: UserRef, blocked: bool, now_ms: i64) -> Op<()> {
        let target_id = target.user_id;
        let there = RpcSetBlocked { user_id, target: Some(pb_user(&target)), blocked, now_ms };
        let first = self.route(
            self.of_user(user_id),
            |s| s.set_blocked_here(user_id, target, blocked, now_ms),
            || rpc_request::Op::SetBlocked(there),
            |r| match r {
                rpc_reply::Result::Id(id) => Ok((id.id != 0).then_some(id.id)),
                _ => unexpected("set_blocked"),
            },
        );
        let this = self.clone();
        Box::pin(async move {
            // The pair's direct conversation is in another partition: apply
            // the block there before answering, so the next send sees it.
            let Some(conversation) = first.await? else { return Ok(()) };
            let block = DirectBlock { blocker_id: user_id, blocked_id: target_id, blocked };
            this.route(
                this.partitioning.of_id(conversation),
                |s| s.direct_block(conversation, user_id, target_id, blocked),
                || rpc_request::Op::DirectBlock(RpcDirectBlock { conversation_id: conversation, block: Some(block) }),
                ClusterStore::done,
            )
            .await
        })
    }

    fn blocked(&self, user_id: u64, after: u64, limit: usize) -> Op<(Vec<Blocked>, bool)> {
        let page = RpcBlockedPage { user_id, after_user_id: after, limit: limit.min(u32::MAX as usize) as u32 };
        self.route(
            self.of_user(user_id),
            |s| s.blocked(user_id, after, limit),
            || rpc_request::Op::Blocked(page),
            |r| match r {
                rpc_reply::Result::Blocked(b) => Ok((b.blocks, b.has_more)),
                _ => unexpected("blocked"),
            },
        )
    }

    fn privacy(&self, user_id: u64) -> Op<pb::PrivacySettings> {
        self.route(
            self.of_user(user_id),
            |s| s.privacy(user_id),
            || rpc_request::Op::Privacy(RpcUser { user_id }),
            |r| match r {
                rpc_reply::Result::Privacy(p) => Ok(p),
                _ => unexpected("privacy"),
            },
        )
    }

    fn set_privacy(&self, user_id: u64, change: pb::SetPrivacyRequest) -> Op<pb::PrivacySettings> {
        let there = RpcSetPrivacy { user_id, change: Some(change) };
        self.route(
            self.of_user(user_id),
            |s| s.set_privacy(user_id, change),
            || rpc_request::Op::SetPrivacy(there),
            |r| match r {
                rpc_reply::Result::Privacy(p) => Ok(p),
                _ => unexpected("set_privacy"),
            },
        )
    }

    fn may_reach(&self, actor: u64, target: UserRef, reach: Reach) -> Op<()> {
        // Each side's settings and block list live in its own partition.
        let theirs = self.refuses(target.user_id, actor, reach, target.username.clone());
        let mine = self.refuses(actor, target.user_id, Reach::BlockOnly, target.username);
        Box::pin(async move {
            theirs.await?;
            mine.await
        })
    }

    fn set_password(&self, user_id: u64, password_hash: String, revoke: bool, keep: u64) -> Op<Vec<u64>> {
        let there = RpcSetPassword { user_id, password_hash: password_hash.clone(), revoke, keep_device_id: keep };
        self.route(
            self.of_user(user_id),
            |s| s.set_password(user_id, password_hash, revoke, keep),
            || rpc_request::Op::SetPassword(there),
            |r| match r {
                rpc_reply::Result::Ids(ids) => Ok(ids.ids),
                _ => unexpected("set_password"),
            },
        )
    }
}

impl Store for Cluster {
    fn check(&self) -> Op<()> {
        let db = Arc::clone(&self.db);
        Box::pin(async move { Ok(db.read(|db| db.inbox_head(0).map(|_| ())).await?) })
    }

    fn close(&self) -> Op<()> {
        // The partitions' stores are closed by the ownership loop.
        Box::pin(std::future::ready(Ok(())))
    }
}
