//! [`LocalStore`]: the store seam over one fjall database on this machine.
//! Writes go to the single writer thread (queued when called, so they run
//! in call order); reads run on tokio's blocking threads.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use confab_protocol::pb;

use super::ThenRefuse;
use super::records::EffectBatch;
use super::tokens;
use super::tx::Tx;
use super::writer::{Deliveries, Log, WriterSettings};
use super::{
    Accounts, Blocked, CommandError, CommitHook, Conversations, Copied, CopyError, Created, Db, Device, DueJob,
    ExportItem, HistoryRange, Messages, NewAccount, Op, Privacy, PushOutbox, PushPlan, PushSettle, PushTarget,
    PushTiming, Reach, Refusal, Resumed, Scope, SendOutcome, Store, StoreError, User, UserRef, Writer,
};
use crate::delivery::Delivery;

/// Settings of a local store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Commands queued for the writer before writes are shed with
    /// [`CommandError::Busy`].
    pub writer_queue: usize,
    /// Largest group, in members.
    pub max_group_members: u32,
    /// Most devices per account.
    pub max_devices: u32,
    /// Most users one account may block.
    pub max_blocked: u32,
    /// Largest encoded page a read may return, in bytes (the frame limit).
    pub max_reply_bytes: usize,
    /// How sends schedule push notifications (`None`: push is off).
    pub push: Option<PushTiming>,
}

impl StoreSettings {
    fn writer(&self, scope: Scope, log: Option<Arc<dyn Log>>) -> WriterSettings {
        WriterSettings { queue: self.writer_queue, push: self.push, scope, log }
    }
}

/// The store on one machine: a fjall database and its writer thread.
pub struct LocalStore {
    db: Arc<Db>,
    writer: Writer,
    settings: StoreSettings,
    scope: Scope,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").field("db", &self.db).field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Starts the writer thread over an open database. Live events of
    /// committed writes go to `delivery`; `hook` hears of every commit.
    pub fn start(
        db: Arc<Db>,
        delivery: Arc<dyn Delivery>,
        hook: CommitHook,
        settings: StoreSettings,
    ) -> std::io::Result<LocalStore> {
        Self::start_partition(db, delivery, hook, settings, Scope::SINGLE, None)
    }

    /// The store of one partition of a cluster, whose groups go to `log`
    /// before fjall (cluster mode; on one node, [`LocalStore::start`]).
    pub fn start_partition(
        db: Arc<Db>,
        delivery: Arc<dyn Delivery>,
        hook: CommitHook,
        settings: StoreSettings,
        scope: Scope,
        log: Option<Arc<dyn Log>>,
    ) -> std::io::Result<LocalStore> {
        let (writer, thread) = Writer::start(Arc::clone(&db), delivery, hook, settings.writer(scope, log))?;
        Ok(LocalStore { db, writer, settings, scope, thread: Mutex::new(Some(thread)) })
    }

    /// Opens (or finds) the direct conversation of two users already
    /// looked up (cluster mode: in the partition of their pair); its id.
    pub fn open_direct_resolved(&self, me: UserRef, peer: UserRef, now_ms: i64) -> Op<u64> {
        self.write(move |tx| tx.open_direct(&me, &peer, now_ms))
    }

    /// A user's current conversations and read markers (their partition).
    pub fn memberships(&self, user_id: u64) -> Op<Vec<(u64, u64)>> {
        self.read(move |db| Ok(db.memberships_of(user_id)?.into_iter().map(|(c, m)| (c, m.read_seq)).collect()))
    }

    /// What the conversations' partition knows of each, for `user_id`
    /// (everything but their read marker); unknown ones are left out.
    pub fn summaries(&self, user_id: u64, conversations: Vec<u64>) -> Op<Vec<pb::Conversation>> {
        self.read(move |db| {
            let mut out = Vec::with_capacity(conversations.len());
            for c in conversations {
                out.extend(db.summary_view(user_id, c)?);
            }
            Ok(out)
        })
    }

    /// Creates a group with members already looked up.
    pub fn create_group_resolved(
        &self,
        actor: UserRef,
        title: String,
        users: Vec<UserRef>,
        now_ms: i64,
    ) -> Op<pb::Conversation> {
        let max = self.settings.max_group_members;
        self.write(move |tx| tx.create_group(&actor, &title, &users, max, now_ms))
    }

    /// Adds members already looked up.
    pub fn add_members_resolved(&self, actor: UserRef, conversation: u64, users: Vec<UserRef>, now_ms: i64) -> Op<()> {
        let max = self.settings.max_group_members;
        self.write(move |tx| tx.add_members(&actor, conversation, &users, max, now_ms))
    }

    /// Removes a member already looked up.
    pub fn remove_member_resolved(&self, actor: UserRef, conversation: u64, target: UserRef, now_ms: i64) -> Op<()> {
        self.write(move |tx| tx.remove_member(&actor, conversation, &target, now_ms))
    }

    /// Sets the role of a member already looked up.
    pub fn set_role_resolved(
        &self,
        actor: UserRef,
        conversation: u64,
        target: UserRef,
        role: pb::MemberRole,
        now_ms: i64,
    ) -> Op<()> {
        self.write(move |tx| tx.set_role(&actor, conversation, &target, role, now_ms))
    }

    /// Applies a batch of effects from partition `source`, read at
    /// `position` of its log, through this partition's writer (cluster
    /// mode). Answers whether it was new.
    pub fn apply_effects(&self, source: u32, position: u64, after: u64, batch: EffectBatch) -> Op<bool> {
        self.write(move |tx| {
            let mut out = Deliveries::default();
            let applied = tx.apply_effects(source, position, after, &batch, &mut out)?;
            Ok((applied, out))
        })
    }

    /// The database (tests and tools read it directly).
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Accounts in username order, those starting with `prefix`, after
    /// `after`, at most `limit`, each with its number of devices; and
    /// whether more follow (the operator's list).
    pub fn users_page(&self, prefix: String, after: String, limit: usize) -> Op<(Vec<(User, usize)>, bool)> {
        self.read(move |db| db.users_page(&prefix, &after, limit))
    }

    /// Usernames starting with `prefix` that `searcher` may find, in
    /// username order, at most `limit`; and whether more follow
    /// (PROTOCOL.md §6.9).
    pub fn search_users(&self, searcher: u64, prefix: String, limit: usize) -> Op<(Vec<String>, bool)> {
        self.read(move |db| db.search_users(searcher, &prefix, limit))
    }

    /// Disables or enables an account; whether that changed it. Ending
    /// its sessions is the caller's.
    pub fn set_disabled(&self, user_id: u64, disabled: bool, now_ms: i64) -> Op<bool> {
        self.write(move |tx| tx.set_disabled(user_id, disabled, now_ms))
    }

    /// Everything the store holds about a user, from one snapshot, as a
    /// stream of items read on a blocking thread as fast as the receiver
    /// takes them (a bounded queue: the read is at most 64 items ahead).
    /// Dropping the receiver stops the read.
    pub fn export(&self, user_id: u64) -> tokio::sync::mpsc::Receiver<Result<ExportItem, StoreError>> {
        let (items, receiver) = tokio::sync::mpsc::channel(64);
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let mut emit = |item| items.blocking_send(Ok(item)).is_ok();
            if let Err(e) = db.export_user(user_id, &mut emit) {
                let _ = items.blocking_send(Err(e));
            }
        });
        receiver
    }

    /// Copies the whole store as of now into a new database in `dir` (see
    /// [`Db::copy_to`]) on a blocking thread, while the writer goes on.
    pub async fn backup(
        &self,
        dir: std::path::PathBuf,
        cancelled: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Copied, CopyError> {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || db.copy_to(&dir, &*cancelled)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Corrupt { keyspace: "-", detail: format!("backup task failed: {e}") }.into()),
        }
    }

    /// Queues a writer command now; its outcome when awaited.
    fn write<T, F>(&self, command: F) -> Op<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<(T, Deliveries), CommandError> + Send + 'static,
    {
        match self.writer.submit(command) {
            Ok(done) => Box::pin(done),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// Runs a read of committed data on a blocking thread.
    fn read<T, F>(&self, f: F) -> Op<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        Box::pin(async move { Ok(db.read(f).await?) })
    }

    /// A read whose `None` means the caller may not see it.
    fn read_visible<T, F>(&self, f: F) -> Op<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<Option<T>, StoreError> + Send + 'static,
    {
        let read = self.read(f);
        Box::pin(async move { read.await?.ok_or(CommandError::Refused(Refusal::ConversationNotFound)) })
    }
}

impl Accounts for LocalStore {
    fn create_user(&self, a: NewAccount) -> Op<Created> {
        let (token, token_hash) = tokens::mint(self.scope.partition);
        self.write(move |tx| {
            let ((user, device), out) =
                tx.create_user(&a.username, a.password_hash, &a.device_name, token_hash, a.now_ms)?;
            Ok((Created { user, device, token }, out))
        })
    }

    fn user_by_name(&self, username: String) -> Op<Option<User>> {
        self.read(move |db| db.user_by_name(&username))
    }

    fn users_by_name(&self, usernames: Vec<String>) -> Op<Vec<User>> {
        let read = self.read(move |db| db.users_by_name(&usernames));
        Box::pin(async move { read.await?.map_err(|name| CommandError::Refused(Refusal::UserNotFound(name))) })
    }

    fn create_device(&self, user_id: u64, device_name: String, now_ms: i64) -> Op<(Device, String)> {
        let (token, token_hash) = tokens::mint(self.scope.partition);
        let max_devices = self.settings.max_devices;
        self.write(move |tx| {
            let (device, out) = tx.create_device(user_id, &device_name, token_hash, now_ms, max_devices)?;
            Ok(((device, token), out))
        })
    }

    fn resume(&self, token: String) -> Op<Option<Resumed>> {
        let token_hash = tokens::hash(&token);
        let read = self.read(move |db| db.resume(&token_hash));
        Box::pin(async move { Ok(read.await?.map(|(user, device, inbox_head)| Resumed { user, device, inbox_head })) })
    }

    fn devices(&self, user_id: u64, after: u64, limit: usize) -> Op<(Vec<Device>, bool)> {
        self.read(move |db| db.devices_page(user_id, after, limit))
    }

    fn revoke_device(&self, user_id: u64, device_id: u64) -> Op<()> {
        self.write(move |tx| tx.revoke_device(user_id, device_id))
    }

    fn revoke_other_devices(&self, user_id: u64, keep: u64) -> Op<Vec<u64>> {
        self.write(move |tx| tx.revoke_other_devices(user_id, keep))
    }

    fn touch_device(&self, device_id: u64, now_ms: i64) -> Op<()> {
        self.write(move |tx| tx.touch_device(device_id, now_ms))
    }

    fn ack_cursor(&self, user_id: u64, device_id: u64, inbox_seq: u64) -> Op<()> {
        self.write(move |tx| tx.ack_cursor(user_id, device_id, inbox_seq))
    }
}

impl Conversations for LocalStore {
    fn open_direct(&self, me: UserRef, peer: String, now_ms: i64) -> Op<pb::Conversation> {
        let user = me.user_id;
        let opened = self.write(move |tx| {
            let peer = tx.user_by_name(&peer)?;
            tx.open_direct(&me, &peer, now_ms)
        });
        let db = Arc::clone(&self.db);
        Box::pin(async move {
            let conversation = opened.await?;
            // The view as the user sees it now (read marker included).
            db.read(move |db| db.conversation_view(user, conversation))
                .await?
                .ok_or(CommandError::Refused(Refusal::ConversationNotFound))
        })
    }

    fn conversations(&self, user_id: u64, limit: usize, before: Option<(i64, u64)>) -> Op<pb::ConversationList> {
        let max = self.settings.max_reply_bytes;
        let read = self.read(move |db| db.list_conversations(user_id, limit, before, max));
        Box::pin(async move {
            let (conversations, has_more) = read.await?;
            Ok(pb::ConversationList { conversations, has_more })
        })
    }

    fn conversation(&self, user_id: u64, conversation: u64) -> Op<pb::Conversation> {
        self.read_visible(move |db| db.conversation_view(user_id, conversation))
    }

    fn members(&self, user_id: u64, conversation: u64) -> Op<pb::MemberList> {
        let read = self.read_visible(move |db| db.member_list(user_id, conversation));
        Box::pin(async move { Ok(pb::MemberList { conversation_id: conversation, members: read.await? }) })
    }

    fn read_receipts(&self, user_id: u64, conversation: u64) -> Op<pb::ReadReceiptList> {
        let read = self.read_visible(move |db| db.read_receipts(user_id, conversation));
        Box::pin(async move { Ok(pb::ReadReceiptList { conversation_id: conversation, receipts: read.await? }) })
    }

    fn typing_audience(&self, user_id: u64, conversation: u64) -> Op<Vec<u64>> {
        self.read(move |db| db.typing_audience(user_id, conversation))
    }

    fn create_group(&self, actor: UserRef, title: String, usernames: Vec<String>, now_ms: i64) -> Op<pb::Conversation> {
        let max = self.settings.max_group_members;
        self.write(move |tx| {
            let named = tx.resolve(&usernames)?;
            tx.create_group(&actor, &title, &named, max, now_ms)
        })
    }

    fn add_members(&self, actor: UserRef, conversation: u64, usernames: Vec<String>, now_ms: i64) -> Op<()> {
        let max = self.settings.max_group_members;
        self.write(move |tx| {
            let named = tx.resolve(&usernames)?;
            tx.add_members(&actor, conversation, &named, max, now_ms)
        })
    }

    fn remove_member(&self, actor: UserRef, conversation: u64, username: String, now_ms: i64) -> Op<()> {
        self.write(move |tx| {
            let target = tx.user_by_name(&username)?;
            tx.remove_member(&actor, conversation, &target, now_ms)
        })
    }

    fn leave_group(&self, actor: UserRef, conversation: u64, now_ms: i64) -> Op<()> {
        self.write(move |tx| tx.leave_group(&actor, conversation, now_ms))
    }

    fn rename_group(&self, actor: UserRef, conversation: u64, title: String, now_ms: i64) -> Op<()> {
        self.write(move |tx| tx.rename_group(&actor, conversation, &title, now_ms))
    }

    fn set_role(
        &self,
        actor: UserRef,
        conversation: u64,
        username: String,
        role: pb::MemberRole,
        now_ms: i64,
    ) -> Op<()> {
        self.write(move |tx| {
            let target = tx.user_by_name(&username)?;
            tx.set_role(&actor, conversation, &target, role, now_ms)
        })
    }
}

impl Messages for LocalStore {
    fn send(
        &self,
        sender: UserRef,
        conversation: u64,
        client_msg_id: String,
        text: String,
        now_ms: i64,
    ) -> Op<SendOutcome> {
        self.write(move |tx| tx.send(&sender, conversation, &client_msg_id, text, now_ms))
    }

    fn history(&self, user_id: u64, conversation: u64, range: HistoryRange) -> Op<pb::HistoryPage> {
        let max = self.settings.max_reply_bytes;
        let read = self.read_visible(move |db| db.history_for(user_id, conversation, range, max));
        Box::pin(async move {
            let (messages, has_more) = read.await?;
            Ok(pb::HistoryPage { conversation_id: conversation, messages, has_more })
        })
    }

    fn mark_read(&self, user: UserRef, conversation: u64, seq: u64) -> Op<pb::ReadState> {
        self.write(move |tx| tx.mark_read(&user, conversation, seq))
    }

    fn sync(&self, user_id: u64, after: u64, limit: usize) -> Op<pb::SyncPage> {
        let max = self.settings.max_reply_bytes;
        let read = self.read(move |db| {
            // The head after the page: an event committed between the two
            // reads is then within the head.
            let (events, has_more) = db.inbox_page(user_id, after, limit, max)?;
            let inbox_head = db.inbox_head(user_id)?;
            Ok(pb::SyncPage { events, inbox_head, has_more })
        });
        Box::pin(read)
    }
}

impl PushOutbox for LocalStore {
    fn register_push(&self, user_id: u64, device_id: u64, target: PushTarget) -> Op<()> {
        self.write(move |tx| tx.register_push(user_id, device_id, target))
    }

    fn unregister_push(&self, user_id: u64, device_id: u64) -> Op<()> {
        self.write(move |tx| tx.unregister_push(user_id, device_id))
    }

    fn push_target_count(&self) -> Op<usize> {
        self.read(|db| db.push_target_count())
    }

    fn push_due(&self, now_ms: i64, limit: usize, busy: HashSet<(u64, u64)>) -> Op<(Vec<DueJob>, Option<i64>)> {
        self.read(move |db| db.push_due(now_ms, limit, &busy, |_| true))
    }

    fn push_plan(&self, job: DueJob, now_ms: i64, delay_ms: i64, with_text: bool) -> Op<PushPlan> {
        self.read(move |db| db.push_plan(job, now_ms, delay_ms, with_text))
    }

    fn settle_push(&self, job: DueJob, attempted: u64, settle: PushSettle, now_ms: i64) -> Op<()> {
        self.write(move |tx| tx.settle_push(job, attempted, settle, now_ms))
    }
}

impl LocalStore {
    /// Whether `owner` refuses `reach` from `other` (read in `owner`'s
    /// partition; cluster mode asks each side's owner).
    pub fn refuses(&self, owner: u64, other: u64, reach: Reach) -> Op<bool> {
        self.read(move |db| super::privacy::refuses(db, owner, other, reach))
    }
}

impl LocalStore {
    /// Blocks or unblocks in the user's partition; returns the pair's
    /// direct conversation when it is in another partition, for
    /// [`LocalStore::direct_block`] there.
    pub fn set_blocked_here(&self, user_id: u64, target: UserRef, blocked: bool, now_ms: i64) -> Op<Option<u64>> {
        let max = self.settings.max_blocked;
        self.write(move |tx| tx.set_blocked(user_id, &target, blocked, max, now_ms))
    }

    /// Applies a block to a direct conversation of this partition.
    pub fn direct_block(&self, conversation: u64, blocker: u64, blocked_user: u64, blocked: bool) -> Op<()> {
        let block = super::records::DirectBlock { blocker_id: blocker, blocked_id: blocked_user, blocked };
        self.write(move |tx| Ok((tx.apply_direct_block(conversation, block)?, Deliveries::default())))
    }
}

impl Privacy for LocalStore {
    fn set_blocked(&self, user_id: u64, target: UserRef, blocked: bool, now_ms: i64) -> Op<()> {
        // One node has one partition: the conversation is always here, and
        // set_blocked_here applies the block to it in the same write.
        let target_id = target.user_id;
        let here = self.set_blocked_here(user_id, target, blocked, now_ms);
        let writer = self.writer.clone();
        Box::pin(async move {
            if let Some(conversation) = here.await? {
                let block = super::records::DirectBlock { blocker_id: user_id, blocked_id: target_id, blocked };
                let done =
                    writer.submit(move |tx| Ok((tx.apply_direct_block(conversation, block)?, Deliveries::default())));
                done?.await?;
            }
            Ok(())
        })
    }

    fn blocked(&self, user_id: u64, after: u64, limit: usize) -> Op<(Vec<Blocked>, bool)> {
        self.read(move |db| db.blocked_page(user_id, after, limit))
    }

    fn privacy(&self, user_id: u64) -> Op<pb::PrivacySettings> {
        let db = Arc::clone(&self.db);
        Box::pin(async move { db.read(move |db| Ok(db.privacy(user_id))).await? })
    }

    fn set_privacy(&self, user_id: u64, change: pb::SetPrivacyRequest) -> Op<pb::PrivacySettings> {
        self.write(move |tx| tx.set_privacy(user_id, &change))
    }

    fn may_reach(&self, actor: u64, target: UserRef, reach: Reach) -> Op<()> {
        let (them, name) = (target.user_id, target.username);
        self.read(move |db| {
            use super::privacy::refuses;
            Ok(refuses(db, them, actor, reach)? || refuses(db, actor, them, Reach::BlockOnly)?)
        })
        .then_refuse(name)
    }

    fn set_password(&self, user_id: u64, password_hash: String, revoke: bool, keep: u64) -> Op<Vec<u64>> {
        self.write(move |tx| tx.set_password(user_id, password_hash, revoke, keep))
    }
}

impl Store for LocalStore {
    fn single_node(&self) -> Option<&LocalStore> {
        Some(self)
    }

    fn check(&self) -> Op<()> {
        self.read(|db| db.inbox_head(0).map(|_| ()))
    }

    fn close(&self) -> Op<()> {
        let writer = self.writer.clone();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            writer.stop().await;
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Ok(())
        })
    }
}
