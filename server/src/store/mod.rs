//! The store: everything durable, behind a narrow, domain-shaped seam.
//!
//! The rest of the server talks to storage only through the traits here
//! ([`Accounts`], [`Conversations`], [`Messages`], [`PushOutbox`], together
//! [`Store`]): "append a message with its inbox entries", "read a page of
//! history", never keys or records. Domain rules that decide what a reader
//! may see (current membership, history visibility after leaving) live
//! behind the seam too. [`LocalStore`] is the single-node implementation:
//! one fjall database on this machine. A cluster implementation stands
//! behind the same traits.
//!
//! ## Layout
//! - `db`: the fjall database and its keyspaces; `reads`: reads on
//!   committed data. Only this module knows key layouts (`keys`, typed
//!   constructors per keyspace) and record encodings (`records`, protobuf).
//! - `writer`: the single writer thread and its group commit; `tx`: one
//!   group's staged writes; `commands`, `groups`, `push`: the write
//!   commands, each doing every check before its first write.
//! - `error`: [`StoreError`], [`Refusal`], [`CommandError`].
//! - `local`: [`LocalStore`], the seam over all of the above.
//! - `export`, `backup`: the operator's whole-store reads on one node (a
//!   user's data, an online copy), each from one fjall snapshot.
//!
//! Reads are blocking calls on committed data, run off the async workers.
//! Every write goes through the single writer thread, which applies
//! commands in arrival order and group-commits them: one atomic batch and
//! one fsync for everything that arrived while the previous commit was
//! syncing. fjall journals and syncs a batch before applying it to its
//! memtables, so nothing is readable before it is durable; live events go
//! out through the [`Delivery`](crate::delivery::Delivery) seam only after
//! the commit.
//!
//! The push outbox (`push`) lives here too: notification jobs are written in
//! the same batch as the message that causes them, so they are exactly as
//! durable as the message.

mod backup;
mod commands;
mod db;
mod effects;
mod error;
mod export;
mod groups;
mod keys;
mod local;
mod partition;
mod privacy;
mod push;
mod reads;
#[cfg(test)]
mod tests;
pub mod tokens;
mod tx;
mod writer;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use confab_protocol::pb;
use fjall::PersistMode;

pub use backup::{Copied, CopyError};
pub use commands::{SendOutcome, UserRef};
pub use db::{Db, FORMAT_VERSION};
use db::{Ks, decode};
pub use error::{CommandError, Refusal, StoreError};
pub use export::{ExportItem, ExportedConversation};
pub use local::{LocalStore, StoreSettings};
pub use partition::Partitioning;
pub use privacy::Reach;
pub use push::{DueJob, PushNotice, PushPlan, PushSettle, SkipReason};
pub use reads::{conversation_page, with_read_seq};
pub use records::BlockRecord as Blocked;
pub use records::push_target_record::Target as PushEndpoint;
pub use records::{
    DeviceRecord as Device, PushTargetRecord as PushTarget, UserRecord as User, WebhookTargetRecord as WebhookEndpoint,
};
pub use tx::Scope;
use writer::Writer;
pub use writer::{CommitHook, CommitStats};
pub use writer::{Log, LogError};

/// A store operation in progress. A write is queued when its method is
/// called, so the writes one caller makes are stored in the order it made
/// them; awaiting gives its outcome once it is durable. A read runs when
/// awaited.
pub type Op<T> = Pin<Box<dyn Future<Output = Result<T, CommandError>> + Send + 'static>>;

/// Turns a "refuses?" answer into the refusal of a request naming `who`.
pub trait ThenRefuse {
    /// `Ok(())` when not refused, else [`Refusal::NotAccepted`].
    fn then_refuse(self, who: String) -> Op<()>;
}

impl ThenRefuse for Op<bool> {
    fn then_refuse(self, who: String) -> Op<()> {
        Box::pin(
            async move { if self.await? { Err(CommandError::Refused(Refusal::NotAccepted(who))) } else { Ok(()) } },
        )
    }
}

/// How the message path schedules notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushTiming {
    /// How long a device has to ack a message before it is notified; also
    /// gathers a burst into one notification.
    pub delay_ms: i64,
    /// Least time between two notifications of one device about one
    /// conversation.
    pub coalesce_ms: i64,
}

/// A new account and its first device.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The username (already validated).
    pub username: String,
    /// The Argon2id hash of the password (PHC string).
    pub password_hash: String,
    /// The first device's name.
    pub device_name: String,
    /// Now, in unix ms.
    pub now_ms: i64,
}

/// A new account, its first device and that device's token.
#[derive(Debug, Clone)]
pub struct Created {
    /// The account.
    pub user: User,
    /// Its first device.
    pub device: Device,
    /// The device's token (only its hash is stored).
    pub token: String,
}

/// What a resumed token is.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The token's user.
    pub user: User,
    /// The token's device.
    pub device: Device,
    /// The user's inbox head now.
    pub inbox_head: u64,
}

/// Which part of a conversation's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRange {
    /// Only messages with seq below this (0: no bound).
    pub before_seq: u64,
    /// Only messages with seq above this (0: no bound).
    pub after_seq: u64,
    /// Oldest first (else newest first).
    pub oldest_first: bool,
    /// At most this many.
    pub limit: usize,
}

/// Accounts, devices and their cursors.
pub trait Accounts: Send + Sync + 'static {
    /// Creates an account and its first device (with a new token);
    /// refuses a taken username.
    fn create_user(&self, account: NewAccount) -> Op<Created>;
    /// The account with this username.
    fn user_by_name(&self, username: String) -> Op<Option<User>>;
    /// The accounts with these usernames, in order; refuses the first
    /// unknown one ([`Refusal::UserNotFound`]).
    fn users_by_name(&self, usernames: Vec<String>) -> Op<Vec<User>>;
    /// A new device for a user (a login), and its new token.
    fn create_device(&self, user_id: u64, device_name: String, now_ms: i64) -> Op<(Device, String)>;
    /// The device of `token`, its user and inbox head; `None` for an
    /// unknown or revoked token, and for a disabled account's.
    fn resume(&self, token: String) -> Op<Option<Resumed>>;
    /// A user's devices with ids above `after`, at most `limit`, in id
    /// (creation) order; and whether more follow.
    fn devices(&self, user_id: u64, after: u64, limit: usize) -> Op<(Vec<Device>, bool)>;
    /// Revokes one of a user's devices (its token, push target, jobs).
    fn revoke_device(&self, user_id: u64, device_id: u64) -> Op<()>;
    /// Revokes every device of the user but `keep`; returns the ids revoked.
    fn revoke_other_devices(&self, user_id: u64, keep: u64) -> Op<Vec<u64>>;
    /// Records a device's last-seen time.
    fn touch_device(&self, device_id: u64, now_ms: i64) -> Op<()>;
    /// Moves a device's inbox cursor forward (never back, never past the
    /// head).
    fn ack_cursor(&self, user_id: u64, device_id: u64, inbox_seq: u64) -> Op<()>;
}

/// Conversations, groups and their members, as a member sees them.
pub trait Conversations: Send + Sync + 'static {
    /// Opens (or returns) the direct conversation with `peer`.
    fn open_direct(&self, me: UserRef, peer: String, now_ms: i64) -> Op<pb::Conversation>;
    /// A page of the user's conversations, most recently active first,
    /// starting after `before` (active_ms, conversation).
    fn conversations(&self, user_id: u64, limit: usize, before: Option<(i64, u64)>) -> Op<pb::ConversationList>;
    /// One conversation as the user sees it; refuses when the user was
    /// never a member.
    fn conversation(&self, user_id: u64, conversation: u64) -> Op<pb::Conversation>;
    /// The members, for a current member; refuses anyone else.
    fn members(&self, user_id: u64, conversation: u64) -> Op<pb::MemberList>;
    /// Every member's read marker, for a current member.
    fn read_receipts(&self, user_id: u64, conversation: u64) -> Op<pb::ReadReceiptList>;
    /// Who else should see `user_id` typing in `conversation`: the other
    /// current members, or nobody when the user is not one.
    fn typing_audience(&self, user_id: u64, conversation: u64) -> Op<Vec<u64>>;
    /// Creates a group with its creator as owner.
    fn create_group(&self, actor: UserRef, title: String, usernames: Vec<String>, now_ms: i64) -> Op<pb::Conversation>;
    /// Adds members (admins and owners).
    fn add_members(&self, actor: UserRef, conversation: u64, usernames: Vec<String>, now_ms: i64) -> Op<()>;
    /// Removes a member (admins and owners, by rank).
    fn remove_member(&self, actor: UserRef, conversation: u64, username: String, now_ms: i64) -> Op<()>;
    /// Leaves a group.
    fn leave_group(&self, actor: UserRef, conversation: u64, now_ms: i64) -> Op<()>;
    /// Renames a group.
    fn rename_group(&self, actor: UserRef, conversation: u64, title: String, now_ms: i64) -> Op<()>;
    /// Changes a member's role (owners).
    fn set_role(
        &self,
        actor: UserRef,
        conversation: u64,
        username: String,
        role: pb::MemberRole,
        now_ms: i64,
    ) -> Op<()>;
}

/// Messages, history, read state and the inbox.
pub trait Messages: Send + Sync + 'static {
    /// Appends a message with every member's inbox entry (and push jobs),
    /// or returns the original for a `client_msg_id` used before.
    fn send(
        &self,
        sender: UserRef,
        conversation: u64,
        client_msg_id: String,
        text: String,
        now_ms: i64,
    ) -> Op<SendOutcome>;
    /// A page of history, as far as the user may see it (up to where they
    /// left); refuses when the user was never a member.
    fn history(&self, user_id: u64, conversation: u64, range: HistoryRange) -> Op<pb::HistoryPage>;
    /// Moves the user's read marker forward.
    fn mark_read(&self, user: UserRef, conversation: u64, seq: u64) -> Op<pb::ReadState>;
    /// A page of the user's inbox after `after`, with the head as of
    /// after the page was read.
    fn sync(&self, user_id: u64, after: u64, limit: usize) -> Op<pb::SyncPage>;
}

/// Push targets and the durable outbox of notifications.
pub trait PushOutbox: Send + Sync + 'static {
    /// Sets (or replaces) a device's push target.
    fn register_push(&self, user_id: u64, device_id: u64, target: PushTarget) -> Op<()>;
    /// Removes a device's push target and its pending notifications.
    fn unregister_push(&self, user_id: u64, device_id: u64) -> Op<()>;
    /// Devices with a push target.
    fn push_target_count(&self) -> Op<usize>;
    /// Up to `limit` jobs due at `now_ms`, earliest first, except `busy`
    /// (device, conversation) pairs; and when the next one is due.
    fn push_due(&self, now_ms: i64, limit: usize, busy: HashSet<(u64, u64)>) -> Op<(Vec<DueJob>, Option<i64>)>;
    /// What to do with a due job, decided from committed data.
    fn push_plan(&self, job: DueJob, now_ms: i64, delay_ms: i64, with_text: bool) -> Op<PushPlan>;
    /// Records how an attempt at a due job ended.
    fn settle_push(&self, job: DueJob, attempted: u64, settle: PushSettle, now_ms: i64) -> Op<()>;
}

/// The block list, privacy settings and passwords (PROTOCOL.md §6.6,
/// §6.7), in the user's partition.
pub trait Privacy: Send + Sync + 'static {
    /// Blocks or unblocks `target` for `user_id` (idempotent); refuses
    /// blocking past the store's `max_blocked`.
    fn set_blocked(&self, user_id: u64, target: UserRef, blocked: bool, now_ms: i64) -> Op<()>;
    /// The user's blocked users with ids above `after`, at most `limit`,
    /// in id order; and whether more follow.
    fn blocked(&self, user_id: u64, after: u64, limit: usize) -> Op<(Vec<Blocked>, bool)>;
    /// The user's privacy settings.
    fn privacy(&self, user_id: u64) -> Op<pb::PrivacySettings>;
    /// Changes some privacy settings; returns them all.
    fn set_privacy(&self, user_id: u64, change: pb::SetPrivacyRequest) -> Op<pb::PrivacySettings>;
    /// Refuses ([`Refusal::NotAccepted`]) when `target` does not accept
    /// `reach` from `actor` or either blocked the other.
    fn may_reach(&self, actor: u64, target: UserRef, reach: Reach) -> Op<()>;
    /// Replaces the password hash; with `revoke`, revokes every device
    /// but `keep` (0: all). Returns the devices revoked.
    fn set_password(&self, user_id: u64, password_hash: String, revoke: bool, keep: u64) -> Op<Vec<u64>>;
}

/// Everything durable.
pub trait Store: Accounts + Conversations + Messages + PushOutbox + Privacy {
    /// A cheap read that shows the store is open and answers (readiness).
    fn check(&self) -> Op<()>;

    /// Syncs everything to disk and stops taking writes (shutdown); what
    /// was queued before is written first.
    fn close(&self) -> Op<()>;

    /// The store of one machine behind this seam, for the operator's
    /// commands that need all of it (listing accounts, disabling one,
    /// exporting a user, an online backup); `None` in cluster mode, where
    /// no node holds every partition.
    fn single_node(&self) -> Option<&LocalStore> {
        None
    }
}

/// The storage records (values), the cluster log's records and its RPC
/// messages, generated from `proto/store.proto` (generated code: not every
/// message has a use on every build).
#[allow(missing_docs, clippy::all, dead_code)]
pub(crate) mod records {
    include!(concat!(env!("OUT_DIR"), "/confab.store.v1.rs"));
}

/// How durable an acknowledged write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync before acking: survives power loss.
    Fsync,
    /// Written to the OS before acking: survives a process crash.
    Buffered,
}

impl Durability {
    fn persist_mode(self) -> PersistMode {
        match self {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Buffered => PersistMode::Buffer,
        }
    }
}
