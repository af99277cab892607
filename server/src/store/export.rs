//! Everything the store holds about one user, read from one fjall snapshot
//! (every keyspace as of one instant, so a message sent meanwhile is
//! either wholly in the export or not at all) and handed out one item at a
//! time: the operator's `confabd admin export`. A long history is never
//! held in memory; the consumer's pace sets the producer's.
//!
//! Only what the user may see is exported: their account, devices, block
//! list and push registrations, and of each conversation they are or were
//! in, what the protocol lets them read (history up to where they left;
//! the member list while they are a member). Secrets never leave: the
//! password hash, token hashes, push keys and webhook secrets are blanked
//! in the records handed out.

use std::sync::Arc;

use confab_protocol::pb;
use fjall::Readable as _;

use super::db::Handles;
use super::keys::{ConversationId, DeviceId, Seq, UserId};
use super::privacy::{Lookup, settings_of};
use super::reads::visible_to;
use super::records::{ConversationRecord, MemberRecord, UserConversationRecord};
use super::{Blocked, Db, Device, Ks, PushTarget, StoreError, User, decode, keys};

/// One item of a user's export, in the order they come: the account, its
/// devices, its block list, then each conversation followed by its
/// messages.
#[derive(Debug, Clone)]
pub enum ExportItem {
    /// The account, with its privacy settings as a client sees them.
    Account {
        /// The record, its password hash blanked.
        user: User,
        /// Who may reach the user.
        privacy: pb::PrivacySettings,
    },
    /// A device, with its push target when it registered one.
    Device {
        /// The record, its token hash blanked.
        device: Device,
        /// Where its notifications go, keys and secrets blanked.
        push: Option<PushTarget>,
    },
    /// A user the account blocked.
    Blocked(Blocked),
    /// A conversation the user is or was a member of; its messages follow.
    Conversation(ExportedConversation),
    /// A message of the conversation before it that the user may read.
    Message(pb::Message),
}

/// A conversation as its member (or former member) may see it.
#[derive(Debug, Clone)]
pub struct ExportedConversation {
    /// Its id.
    pub conversation_id: u64,
    /// Direct or group.
    pub kind: pb::ConversationKind,
    /// A group's title.
    pub title: String,
    /// When it was created.
    pub created_at_ms: i64,
    /// The user is a current member.
    pub member: bool,
    /// The seq of the change that added the user (0: from the start).
    pub joined_seq: u64,
    /// The seq of the change that took the user out (0: still in).
    pub left_seq: u64,
    /// The user's read marker.
    pub read_seq: u64,
    /// The newest seq the user may read.
    pub last_seq: u64,
    /// The members, while the user is one (a former member may not list
    /// them).
    pub members: Option<Vec<pb::Member>>,
}

/// Every keyspace as of one instant.
struct Snapshot {
    snapshot: fjall::Snapshot,
    handles: Arc<Handles>,
}

impl Lookup for Snapshot {
    fn lookup(&self, ks: Ks, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.snapshot.get(self.handles.ks(ks), key)?.map(|v| v.to_vec()))
    }

    fn values(&self, ks: Ks, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for kv in self.snapshot.prefix(self.handles.ks(ks), prefix) {
            out.push(kv.into_inner()?.1.to_vec());
        }
        Ok(out)
    }
}

impl Snapshot {
    fn record<M: prost::Message + Default>(&self, ks: Ks, key: &[u8]) -> Result<Option<M>, StoreError> {
        match self.snapshot.get(self.handles.ks(ks), key)? {
            Some(v) => decode(ks, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The second ids of the keys under `prefix`, in key order.
    fn ids(&self, ks: Ks, prefix: [u8; 8]) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for kv in self.snapshot.prefix(self.handles.ks(ks), prefix) {
            let k = kv.key()?;
            out.push(keys::second(&k).ok_or(StoreError::Corrupt { keyspace: ks.name(), detail: "short key".into() })?);
        }
        Ok(out)
    }

    /// Every (second id of the key, record) under `prefix`, in key order.
    fn records<M: prost::Message + Default>(&self, ks: Ks, prefix: [u8; 8]) -> Result<Vec<(u64, M)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.snapshot.prefix(self.handles.ks(ks), prefix) {
            let (k, v) = kv.into_inner()?;
            let id = keys::second(&k).ok_or(StoreError::Corrupt { keyspace: ks.name(), detail: "short key".into() })?;
            out.push((id, decode(ks, &v)?));
        }
        Ok(out)
    }
}

impl Db {
    /// Hands everything the store holds about `user_id` to `emit`, in
    /// [`ExportItem`] order, from one snapshot; stops early when `emit`
    /// answers false (the reader went away). Returns whether it finished;
    /// `Ok(false)` also when there is no such user.
    pub(crate) fn export_user(
        &self,
        user_id: u64,
        emit: &mut dyn FnMut(ExportItem) -> bool,
    ) -> Result<bool, StoreError> {
        let handles = self.handles()?;
        let snap = Snapshot { snapshot: handles.db.snapshot(), handles };
        let u = UserId(user_id);
        let Some(mut user) = snap.record::<User>(Ks::Users, &keys::user(u))? else { return Ok(false) };
        user.password_hash = String::new();
        let privacy = settings_of(&user);
        if !emit(ExportItem::Account { user, privacy }) {
            return Ok(false);
        }
        for device_id in snap.ids(Ks::UserDevices, keys::of_user(u))? {
            let Some(mut device) = snap.record::<Device>(Ks::Devices, &keys::device(DeviceId(device_id)))? else {
                continue;
            };
            device.token_hash = Default::default();
            let push = snap
                .record::<PushTarget>(Ks::PushTargets, &keys::push_target(u, DeviceId(device_id)))?
                .map(without_secrets);
            if !emit(ExportItem::Device { device, push }) {
                return Ok(false);
            }
        }
        for (_, blocked) in snap.records::<Blocked>(Ks::Blocks, keys::of_user(u))? {
            if !emit(ExportItem::Blocked(blocked)) {
                return Ok(false);
            }
        }
        for (conversation, membership) in
            snap.records::<UserConversationRecord>(Ks::UserConversations, keys::of_user(u))?
        {
            if !export_conversation(&snap, self.partitioning, user_id, conversation, &membership, emit)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A push target without what would let anyone else notify the device:
/// a Web Push subscription's keys, a webhook's signing secret.
fn without_secrets(mut target: PushTarget) -> PushTarget {
    use super::PushEndpoint;
    match &mut target.target {
        Some(PushEndpoint::WebPush(w)) => {
            w.p256dh = Default::default();
            w.auth = Default::default();
        }
        Some(PushEndpoint::Webhook(w)) => w.secret = Default::default(),
        None => {}
    }
    target
}

/// One conversation and the messages the user may read in it.
fn export_conversation(
    snap: &Snapshot,
    partitioning: super::Partitioning,
    user: u64,
    conversation: u64,
    membership: &UserConversationRecord,
    emit: &mut dyn FnMut(ExportItem) -> bool,
) -> Result<bool, StoreError> {
    let c = ConversationId(conversation);
    let Some(record) = snap.record::<ConversationRecord>(Ks::Conversations, &keys::conversation(c))? else {
        return Ok(true);
    };
    let Some(visible) = visible_to(snap, partitioning, user, conversation)? else { return Ok(true) };
    let last_stored = match snap.snapshot.prefix(snap.handles.ks(Ks::Messages), keys::of_conversation(c)).next_back() {
        Some(kv) => keys::second(&kv.key()?).unwrap_or(0),
        None => 0,
    };
    let member = visible == u64::MAX;
    let members = if member {
        let mut out = Vec::new();
        for (user_id, m) in snap.records::<MemberRecord>(Ks::Members, keys::of_conversation(c))? {
            let username = if m.username.is_empty() {
                snap.record::<User>(Ks::Users, &keys::user(UserId(user_id)))?.map(|u| u.username).unwrap_or_default()
            } else {
                m.username
            };
            out.push(pb::Member { user_id, username, role: m.role, joined_at_ms: m.joined_at_ms });
        }
        out.sort_by_key(|m| (m.joined_at_ms, m.user_id));
        Some(out)
    } else {
        None
    };
    let item = ExportedConversation {
        conversation_id: conversation,
        kind: pb::ConversationKind::try_from(record.kind).unwrap_or(pb::ConversationKind::Unspecified),
        title: record.title,
        created_at_ms: record.created_at_ms,
        member,
        joined_seq: membership.joined_seq,
        left_seq: membership.left_seq,
        read_seq: membership.read_seq,
        last_seq: last_stored.min(visible),
        members,
    };
    if !emit(ExportItem::Conversation(item)) {
        return Ok(false);
    }
    let range = keys::message(c, Seq(1))..=keys::message(c, Seq(visible));
    for kv in snap.snapshot.range(snap.handles.ks(Ks::Messages), range) {
        let message: pb::Message = decode(Ks::Messages, &kv.value()?)?;
        if !emit(ExportItem::Message(message)) {
            return Ok(false);
        }
    }
    Ok(true)
}
