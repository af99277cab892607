//! The write commands, run on the writer thread (see `writer`). Each one
//! does all of its checks before its first write, so a refusal leaves
//! nothing staged in the group.

use confab_protocol::{framing, pb};
use prost::Message as _;

use super::effects::UserEffect;
use super::keys::{ConversationId, DeviceId, Seq, UserId};
use super::records::{
    ConversationRecord, DeviceRecord, InboxRecord, MemberRecord, MessageRef, UserConversationRecord, UserRecord,
    inbox_record,
};
use super::tx::Tx;
use super::writer::Deliveries;
use super::{CommandError, Refusal};
use super::{Ks, keys};

/// The result of a send.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The stored message (the original one for a duplicate).
    pub message: pb::Message,
    /// The client_msg_id had been used before; nothing new was stored.
    pub duplicate: bool,
}

pub(super) type Result<T> = std::result::Result<(T, Deliveries), CommandError>;

pub(super) fn refuse<T>(r: Refusal) -> std::result::Result<T, CommandError> {
    Err(CommandError::Refused(r))
}

// ----- accounts ---------------------------------------------------------------

impl Tx<'_> {
    /// Creates an account and its first device.
    pub fn create_user(
        &mut self,
        username: &str,
        password_hash: String,
        device_name: &str,
        token_hash: Vec<u8>,
        now_ms: i64,
    ) -> Result<(UserRecord, DeviceRecord)> {
        if self.get(Ks::Usernames, username.as_bytes())?.is_some() {
            return refuse(Refusal::UsernameTaken);
        }
        let user_id = self.next_id(keys::NEXT_USER_ID)?;
        let user = UserRecord {
            user_id,
            username: username.to_string(),
            password_hash,
            created_at_ms: now_ms,
            last_seen_ms: now_ms,
            ..Default::default()
        };
        self.put_record(Ks::Users, &keys::user(UserId(user_id)), &user);
        self.put(Ks::Usernames, username.as_bytes(), keys::id_value(user_id));
        // A new account's first device: nothing to count yet.
        let (device, _) = self.create_device(user_id, device_name, token_hash, now_ms, u32::MAX)?;
        Ok(((user, device), Deliveries::default()))
    }

    /// Adds a device to an existing user. Its cursor starts at the inbox
    /// head: a new device builds its view from lists and history.
    pub fn create_device(
        &mut self,
        user_id: u64,
        name: &str,
        token_hash: Vec<u8>,
        now_ms: i64,
        max_devices: u32,
    ) -> Result<DeviceRecord> {
        let devices = self.scan_prefix(Ks::UserDevices, &keys::of_user(UserId(user_id)))?.len();
        if devices >= max_devices as usize {
            return refuse(Refusal::TooManyDevices { max: max_devices });
        }
        let cursor = self.inbox_head(user_id)?;
        let device_id = self.next_id(keys::NEXT_DEVICE_ID)?;
        let device = DeviceRecord {
            device_id,
            user_id,
            name: name.to_string(),
            token_hash: token_hash.clone().into(),
            created_at_ms: now_ms,
            last_seen_ms: now_ms,
            cursor,
            push_dropped: None,
        };
        self.put_record(Ks::Devices, &keys::device(DeviceId(device_id)), &device);
        self.put(Ks::UserDevices, &keys::user_device(UserId(user_id), DeviceId(device_id)), Vec::new());
        self.put(Ks::Tokens, &token_hash, keys::id_value(device_id));
        Ok((device, Deliveries::default()))
    }

    /// Deletes a device and its token. Its live sessions are ended by the
    /// caller.
    pub fn revoke_device(&mut self, user_id: u64, device_id: u64) -> Result<()> {
        let Some(device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::device(DeviceId(device_id)))? else {
            return refuse(Refusal::DeviceNotFound);
        };
        if device.user_id != user_id {
            return refuse(Refusal::DeviceNotFound);
        }
        self.delete(Ks::Devices, &keys::device(DeviceId(device_id)));
        self.delete(Ks::UserDevices, &keys::user_device(UserId(user_id), DeviceId(device_id)));
        self.delete(Ks::Tokens, &device.token_hash);
        self.remove_push_state(user_id, device_id)?;
        Ok(((), Deliveries::default()))
    }

    /// Revokes every device of the user but `keep` (as
    /// [`Tx::revoke_device`] each); returns the ids revoked.
    pub fn revoke_other_devices(&mut self, user_id: u64, keep: u64) -> Result<Vec<u64>> {
        let mut revoked = Vec::new();
        for (k, _) in self.scan_prefix(Ks::UserDevices, &keys::of_user(UserId(user_id)))? {
            let Some(device_id) = keys::read_u64(&k, 8) else { continue };
            if device_id == keep {
                continue;
            }
            self.revoke_device(user_id, device_id)?;
            revoked.push(device_id);
        }
        Ok((revoked, Deliveries::default()))
    }

    /// Records when a device (and its user) was last online.
    pub fn touch_device(&mut self, device_id: u64, now_ms: i64) -> Result<()> {
        if let Some(mut device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::device(DeviceId(device_id)))? {
            device.last_seen_ms = now_ms;
            let user_key = keys::user(UserId(device.user_id));
            self.put_record(Ks::Devices, &keys::device(DeviceId(device_id)), &device);
            if let Some(mut user) = self.get_record::<UserRecord>(Ks::Users, &user_key)? {
                user.last_seen_ms = now_ms;
                self.put_record(Ks::Users, &user_key, &user);
            }
        }
        Ok(((), Deliveries::default()))
    }

    /// Stores a device's inbox cursor (monotonic; above the head refused).
    pub fn ack_cursor(&mut self, user_id: u64, device_id: u64, inbox_seq: u64) -> Result<()> {
        let head = self.inbox_head(user_id)?;
        if inbox_seq > head {
            return refuse(Refusal::Invalid("inbox_seq is beyond the inbox head".into()));
        }
        let Some(mut device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::device(DeviceId(device_id)))? else {
            return refuse(Refusal::DeviceNotFound);
        };
        if inbox_seq > device.cursor {
            device.cursor = inbox_seq;
            self.put_record(Ks::Devices, &keys::device(DeviceId(device_id)), &device);
        }
        Ok(((), Deliveries::default()))
    }

    /// Disables or enables an account (the operator's abuse control):
    /// only the flag changes, never its devices, conversations or
    /// messages. Returns whether it changed (disabling a disabled account
    /// keeps its first `disabled_at_ms`).
    pub fn set_disabled(&mut self, user_id: u64, disabled: bool, now_ms: i64) -> Result<bool> {
        let key = keys::user(UserId(user_id));
        let Some(mut user) = self.get_record::<UserRecord>(Ks::Users, &key)? else {
            return refuse(Refusal::UserNotFound(String::new()));
        };
        if user.disabled == disabled {
            return Ok((false, Deliveries::default()));
        }
        user.disabled = disabled;
        if disabled {
            user.disabled_at_ms = now_ms;
        }
        self.put_record(Ks::Users, &key, &user);
        Ok((true, Deliveries::default()))
    }
}

// ----- conversations and messages ---------------------------------------------

/// What a command needs to know about a user it names.
#[derive(Debug, Clone)]
pub struct UserRef {
    /// The user's id.
    pub user_id: u64,
    /// The user's username.
    pub username: String,
}

impl From<&UserRef> for pb::UserRef {
    fn from(u: &UserRef) -> Self {
        pb::UserRef { user_id: u.user_id, username: u.username.clone() }
    }
}

impl Tx<'_> {
    /// The user with this username (in this partition's usernames).
    pub fn user_by_name(&self, username: &str) -> std::result::Result<UserRef, CommandError> {
        let Some(id) = self.get(Ks::Usernames, username.as_bytes())? else {
            return refuse(Refusal::UserNotFound(username.to_string()));
        };
        let user_id = keys::read_u64(&id, 0)
            .ok_or(super::StoreError::Corrupt { keyspace: keys::USERNAMES, detail: "short id".into() })?;
        Ok(UserRef { user_id, username: username.to_string() })
    }

    /// The user's member record, when a current member (from the
    /// conversation's own partition).
    pub(super) fn current_member(
        &self,
        user: u64,
        conversation: u64,
    ) -> std::result::Result<MemberRecord, CommandError> {
        match self.get_record::<MemberRecord>(Ks::Members, &keys::member(ConversationId(conversation), UserId(user)))? {
            Some(m) => Ok(m),
            None => refuse(Refusal::ConversationNotFound),
        }
    }

    pub(super) fn members(&self, conversation: u64) -> std::result::Result<Vec<(u64, MemberRecord)>, CommandError> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(Ks::Members, &keys::of_conversation(ConversationId(conversation)))? {
            let user = keys::second(&k)
                .ok_or(super::StoreError::Corrupt { keyspace: keys::MEMBERS, detail: "short key".into() })?;
            out.push((user, super::decode(Ks::Members, &v)?));
        }
        Ok(out)
    }

    /// Opens (or finds) the direct conversation of `me` and `peer`, in
    /// the partition of their pair; returns its id.
    pub fn open_direct(&mut self, me: &UserRef, peer: &UserRef, now_ms: i64) -> Result<u64> {
        if peer.user_id == me.user_id {
            return refuse(Refusal::CannotMessageSelf);
        }
        // Before looking for the pair: a blocked user gets no conversation,
        // not even one that exists (as in a cluster, which checks first).
        self.check_reach(me, peer, super::Reach::Direct)?;
        let pair_key = keys::direct_pair(UserId(me.user_id), UserId(peer.user_id));
        if let Some(id) = self.get(Ks::DirectPairs, &pair_key)? {
            let conversation = keys::read_u64(&id, 0)
                .ok_or(super::StoreError::Corrupt { keyspace: keys::DIRECT_PAIRS, detail: "short id".into() })?;
            return Ok((conversation, Deliveries::default()));
        }
        let conversation = self.next_id(keys::NEXT_CONVERSATION_ID)?;
        let record = ConversationRecord {
            conversation_id: conversation,
            kind: pb::ConversationKind::Direct as i32,
            title: String::new(),
            created_at_ms: now_ms,
        };
        self.put(Ks::DirectPairs, &pair_key, keys::id_value(conversation));
        self.put_record(Ks::Conversations, &keys::conversation(ConversationId(conversation)), &record);
        let mut out = Deliveries::default();
        for user in [me, peer] {
            let member = MemberRecord {
                role: pb::MemberRole::Member as i32,
                joined_at_ms: now_ms,
                joined_seq: 0,
                username: user.username.clone(),
                read_seq: 0,
                ..Default::default()
            };
            self.put_record(Ks::Members, &keys::member(ConversationId(conversation), UserId(user.user_id)), &member);
        }
        for (user, other) in [(me, peer), (peer, me)] {
            let view = pb::Conversation {
                conversation_id: conversation,
                kind: record.kind,
                peer_user_id: other.user_id,
                peer_username: other.username.clone(),
                created_at_ms: now_ms,
                activity_ms: now_ms,
                member_count: 2,
                role: pb::MemberRole::Member as i32,
                ..Default::default()
            };
            self.give_user(user.user_id, UserEffect::Joined(Box::new(view)), &mut out)?;
        }
        Ok((conversation, out))
    }

    /// Stores a message (text or membership change) with the next seq and
    /// gives it to every recipient (their inbox entries, the sender's read
    /// marker, push jobs when `push`), in this partition or as effects for
    /// theirs. No checks: callers have done them.
    #[allow(clippy::too_many_arguments)] // every argument is a distinct part of the message
    pub(super) fn append(
        &mut self,
        conversation: u64,
        sender: &UserRef,
        client_msg_id: &str,
        content: pb::message::Content,
        recipients: &[u64],
        now_ms: i64,
        push: bool,
        out: &mut Deliveries,
    ) -> std::result::Result<pb::Message, CommandError> {
        let seq = self.next_seq(conversation)?;
        self.count_append();
        let message = pb::Message {
            conversation_id: conversation,
            seq,
            sender_id: sender.user_id,
            sender_username: sender.username.clone(),
            sent_at_ms: now_ms,
            client_msg_id: client_msg_id.to_string(),
            content: Some(content),
        };
        // Encoded once: stored as is and framed per recipient around it.
        let encoded = message.encode_to_vec();
        self.put(Ks::Messages, &keys::message(ConversationId(conversation), Seq(seq)), encoded.as_slice());
        for &user in recipients {
            self.give_user(user, UserEffect::Message { message: &message, encoded: &encoded, push }, out)?;
        }
        Ok(message)
    }

    /// Sends a text message, deduplicated on (sender, client_msg_id), and
    /// queues push notifications for the recipients' devices when push is
    /// on.
    pub fn send(
        &mut self,
        sender: &UserRef,
        conversation: u64,
        client_msg_id: &str,
        text: String,
        now_ms: i64,
    ) -> Result<SendOutcome> {
        let dedupe_key = keys::dedupe(UserId(sender.user_id), client_msg_id);
        if let Some(r) = self.get_record::<MessageRef>(Ks::Dedupe, &dedupe_key)? {
            let Some(message) = self.get_record::<pb::Message>(
                Ks::Messages,
                &keys::message(ConversationId(r.conversation_id), Seq(r.seq)),
            )?
            else {
                return Err(super::StoreError::Corrupt {
                    keyspace: keys::DEDUPE,
                    detail: "dedupe entry without message".into(),
                }
                .into());
            };
            return Ok((SendOutcome { message, duplicate: true }, Deliveries::default()));
        }
        let me = self.current_member(sender.user_id, conversation)?;
        if me.blocks_peer || me.blocked_by_peer {
            return refuse(Refusal::NotAccepted("the other member".into()));
        }
        let recipients = self.member_ids(conversation)?;
        let mut out = Deliveries::default();
        let content = pb::message::Content::Text(text);
        let message = self.append(conversation, sender, client_msg_id, content, &recipients, now_ms, true, &mut out)?;
        self.put_record(Ks::Dedupe, &dedupe_key, &MessageRef { conversation_id: conversation, seq: message.seq });
        Ok((SendOutcome { message, duplicate: false }, out))
    }

    /// Moves a read marker forward; returns the resulting state. Runs in
    /// the user's partition.
    pub fn mark_read(&mut self, user: &UserRef, conversation: u64, seq: u64) -> Result<pb::ReadState> {
        let key = keys::user_conversation(UserId(user.user_id), ConversationId(conversation));
        let mut membership = match self.get_record::<UserConversationRecord>(Ks::UserConversations, &key)? {
            Some(m) if m.left_seq == 0 => m,
            _ => return refuse(Refusal::ConversationNotFound),
        };
        let local = self.is_local(conversation);
        let last_seq = if local { self.last_seq(conversation)? } else { membership.last_seq };
        let target = seq.min(last_seq);
        let mut out = Deliveries::default();
        if target > membership.read_seq {
            membership.read_seq = target;
            self.put_record(Ks::UserConversations, &key, &membership);
            let state = read_state(conversation, target, last_seq);
            let record = InboxRecord { event: Some(inbox_record::Event::Read(state)) };
            self.inbox_event(user.user_id, record, pb::inbox_event::Event::Read(state), &mut out)?;
            self.read_marker(conversation, user.user_id, target);
            let peer = if local { self.direct_peer(conversation, user.user_id)? } else { direct(&membership) };
            // In a group, only the author of the newest message read hears
            // of it live (§8.10): one receipt per move, where "Seen by" is
            // shown, never one per member.
            let peer = match peer {
                Some(p) => Some(p),
                None if local => self.author(conversation, target)?.filter(|a| *a != user.user_id),
                None => None,
            };
            if let Some(peer) = peer {
                let receipt = pb::ReadReceipt {
                    conversation_id: conversation,
                    user_id: user.user_id,
                    username: user.username.clone(),
                    read_seq: target,
                };
                let frame = framing::frame_bytes(&pb::ServerFrame {
                    request_id: 0,
                    body: Some(pb::server_frame::Body::ReadReceipt(receipt)),
                });
                out.push(peer, frame);
            }
        }
        Ok((read_state(conversation, membership.read_seq, last_seq), out))
    }

    /// Who wrote message `seq` of a conversation in this partition.
    fn author(&self, conversation: u64, seq: u64) -> std::result::Result<Option<u64>, CommandError> {
        let message =
            self.get_record::<pb::Message>(Ks::Messages, &keys::message(ConversationId(conversation), Seq(seq)))?;
        Ok(message.map(|m| m.sender_id).filter(|id| *id != 0))
    }

    /// The other member of a direct conversation in this partition.
    fn direct_peer(&self, conversation: u64, me: u64) -> std::result::Result<Option<u64>, CommandError> {
        let record = self
            .get_record::<ConversationRecord>(Ks::Conversations, &keys::conversation(ConversationId(conversation)))?;
        if record.is_none_or(|c| c.kind != pb::ConversationKind::Direct as i32) {
            return Ok(None);
        }
        Ok(self.members(conversation)?.into_iter().map(|(u, _)| u).find(|u| *u != me))
    }
}

/// The peer of a direct conversation in another partition, as the user's
/// partition remembers it.
fn direct(m: &UserConversationRecord) -> Option<u64> {
    (m.kind == pb::ConversationKind::Direct as i32 && m.peer_user_id != 0).then_some(m.peer_user_id)
}

fn read_state(conversation: u64, read_seq: u64, last_seq: u64) -> pb::ReadState {
    pb::ReadState { conversation_id: conversation, read_seq, unread_count: last_seq.saturating_sub(read_seq), last_seq }
}
