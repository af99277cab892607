//! The write commands, run on the writer thread (see `writer`). Each one
//! does all of its checks before its first write, so a refusal leaves
//! nothing staged in the group.

use bytes::Bytes;
use confab_protocol::{framing, pb};
use prost::Message as _;

use super::records::{
    ConversationRecord, DeviceRecord, InboxRecord, MemberRecord, MessageRef, UserConversationRecord, UserRecord,
    inbox_record,
};
use super::tx::Tx;
use super::writer::{CommandError, Deliveries};
use super::{Ks, keys};

/// A request refused by a domain rule. Mapped to wire codes in `api`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("username is taken")]
    UsernameTaken,
    #[error("no such user: {0}")]
    UserNotFound(String),
    #[error("no such conversation, or not a member")]
    ConversationNotFound,
    #[error("no such device")]
    DeviceNotFound,
    #[error("cannot open a conversation with yourself")]
    CannotMessageSelf,
    #[error("not a group")]
    NotAGroup,
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("the group would have {would_have} members; the limit is {max}")]
    GroupFull { would_have: usize, max: u32 },
    #[error("{0}")]
    Invalid(&'static str),
}

/// The result of a send.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The stored message (the original one for a duplicate).
    pub message: pb::Message,
    /// The client_msg_id had been used before; nothing new was stored.
    pub duplicate: bool,
    /// New push notification jobs queued with the message.
    pub pushes_queued: u32,
}

pub(super) type Result<T> = std::result::Result<(T, Deliveries), CommandError>;

pub(super) fn refuse<T>(r: Refusal) -> std::result::Result<T, CommandError> {
    Err(CommandError::Refused(r))
}

fn event_frame(inbox_seq: u64, event: pb::inbox_event::Event) -> Bytes {
    framing::frame_bytes(&pb::ServerFrame {
        request_id: 0,
        body: Some(pb::server_frame::Body::Event(pb::InboxEvent { inbox_seq, event: Some(event) })),
    })
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
        };
        self.put_record(Ks::Users, &keys::id(user_id), &user);
        self.put(Ks::Usernames, username.as_bytes(), keys::id(user_id).to_vec());
        let (device, _) = self.create_device(user_id, device_name, token_hash, now_ms)?;
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
    ) -> Result<DeviceRecord> {
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
        self.put_record(Ks::Devices, &keys::id(device_id), &device);
        self.put(Ks::UserDevices, &keys::pair(user_id, device_id), Vec::new());
        self.put(Ks::Tokens, &token_hash, keys::id(device_id).to_vec());
        Ok((device, Deliveries::default()))
    }

    /// Deletes a device and its token. Its live sessions are ended by the
    /// caller.
    pub fn revoke_device(&mut self, user_id: u64, device_id: u64) -> Result<()> {
        let Some(device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::id(device_id))? else {
            return refuse(Refusal::DeviceNotFound);
        };
        if device.user_id != user_id {
            return refuse(Refusal::DeviceNotFound);
        }
        self.delete(Ks::Devices, &keys::id(device_id));
        self.delete(Ks::UserDevices, &keys::pair(user_id, device_id));
        self.delete(Ks::Tokens, &device.token_hash);
        self.remove_push_state(user_id, device_id)?;
        Ok(((), Deliveries::default()))
    }

    /// Records when a device (and its user) was last online.
    pub fn touch_device(&mut self, device_id: u64, now_ms: i64) -> Result<()> {
        if let Some(mut device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::id(device_id))? {
            device.last_seen_ms = now_ms;
            let user_key = keys::id(device.user_id);
            self.put_record(Ks::Devices, &keys::id(device_id), &device);
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
            return refuse(Refusal::Invalid("inbox_seq is beyond the inbox head"));
        }
        let Some(mut device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::id(device_id))? else {
            return refuse(Refusal::DeviceNotFound);
        };
        if inbox_seq > device.cursor {
            device.cursor = inbox_seq;
            self.put_record(Ks::Devices, &keys::id(device_id), &device);
        }
        Ok(((), Deliveries::default()))
    }
}

// ----- conversations and messages ---------------------------------------------

/// What a command needs to know about a user it names.
#[derive(Debug, Clone)]
pub struct UserRef {
    pub user_id: u64,
    pub username: String,
}

impl From<&UserRef> for pb::UserRef {
    fn from(u: &UserRef) -> Self {
        pb::UserRef { user_id: u.user_id, username: u.username.clone() }
    }
}

impl Tx<'_> {
    pub(super) fn user_by_name(&self, username: &str) -> std::result::Result<UserRef, CommandError> {
        let Some(id) = self.get(Ks::Usernames, username.as_bytes())? else {
            return refuse(Refusal::UserNotFound(username.to_string()));
        };
        let user_id = keys::read_u64(&id, 0)
            .ok_or(super::StoreError::Corrupt { keyspace: keys::USERNAMES, detail: "short id".into() })?;
        Ok(UserRef { user_id, username: username.to_string() })
    }

    /// The user's membership, when current.
    pub(super) fn current_membership(
        &self,
        user: u64,
        conversation: u64,
    ) -> std::result::Result<UserConversationRecord, CommandError> {
        match self.get_record::<UserConversationRecord>(Ks::UserConversations, &keys::pair(user, conversation))? {
            Some(m) if m.left_seq == 0 => Ok(m),
            _ => refuse(Refusal::ConversationNotFound),
        }
    }

    pub(super) fn members(&self, conversation: u64) -> std::result::Result<Vec<(u64, MemberRecord)>, CommandError> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(Ks::Members, &keys::id(conversation))? {
            let user = keys::pair_second(&k)
                .ok_or(super::StoreError::Corrupt { keyspace: keys::MEMBERS, detail: "short key".into() })?;
            out.push((user, super::decode(Ks::Members, &v)?));
        }
        Ok(out)
    }

    /// Writes an inbox event for `user` and queues its live delivery.
    pub(super) fn inbox_event(
        &mut self,
        user: u64,
        record: InboxRecord,
        live: pb::inbox_event::Event,
        out: &mut Deliveries,
    ) -> std::result::Result<u64, CommandError> {
        let inbox_seq = self.next_inbox_seq(user)?;
        self.put_unread(Ks::Inbox, &keys::pair(user, inbox_seq), record.encode_to_vec());
        out.push(user, event_frame(inbox_seq, live));
        Ok(inbox_seq)
    }

    /// Opens (or finds) the direct conversation of `me` and `peer_name`.
    pub fn open_direct(&mut self, me: &UserRef, peer_name: &str, now_ms: i64) -> Result<pb::Conversation> {
        let peer = self.user_by_name(peer_name)?;
        if peer.user_id == me.user_id {
            return refuse(Refusal::CannotMessageSelf);
        }
        let pair_key = keys::direct_pair(me.user_id, peer.user_id);
        if let Some(id) = self.get(Ks::DirectPairs, &pair_key)? {
            let conversation = keys::read_u64(&id, 0)
                .ok_or(super::StoreError::Corrupt { keyspace: keys::DIRECT_PAIRS, detail: "short id".into() })?;
            return Ok((self.direct_view(conversation, me, &peer)?, Deliveries::default()));
        }
        let conversation = self.next_id(keys::NEXT_CONVERSATION_ID)?;
        let record = ConversationRecord {
            conversation_id: conversation,
            kind: pb::ConversationKind::Direct as i32,
            title: String::new(),
            created_at_ms: now_ms,
        };
        self.put(Ks::DirectPairs, &pair_key, keys::id(conversation).to_vec());
        self.put_record(Ks::Conversations, &keys::id(conversation), &record);
        let member = MemberRecord { role: pb::MemberRole::Member as i32, joined_at_ms: now_ms, joined_seq: 0 };
        let mut out = Deliveries::default();
        for (user, other) in [(me, &peer), (&peer, me)] {
            self.put_record(Ks::Members, &keys::pair(conversation, user.user_id), &member);
            self.put_record(
                Ks::UserConversations,
                &keys::pair(user.user_id, conversation),
                &UserConversationRecord::default(),
            );
            let view = self.direct_view(conversation, user, other)?;
            let record = InboxRecord { event: Some(inbox_record::Event::Joined(view.clone())) };
            self.inbox_event(user.user_id, record, pb::inbox_event::Event::Joined(view), &mut out)?;
        }
        Ok((self.direct_view(conversation, me, &peer)?, out))
    }

    fn direct_view(
        &mut self,
        conversation: u64,
        me: &UserRef,
        peer: &UserRef,
    ) -> std::result::Result<pb::Conversation, CommandError> {
        let record = self.get_record::<ConversationRecord>(Ks::Conversations, &keys::id(conversation))?.ok_or(
            super::StoreError::Corrupt {
                keyspace: keys::CONVERSATIONS,
                detail: "direct pair without conversation".into(),
            },
        )?;
        let membership = self.current_membership(me.user_id, conversation)?;
        let last_seq = self.last_seq(conversation)?;
        let last_message = if last_seq > 0 {
            self.get_record::<pb::Message>(Ks::Messages, &keys::pair(conversation, last_seq))?
        } else {
            None
        };
        Ok(pb::Conversation {
            conversation_id: conversation,
            kind: record.kind,
            peer_user_id: peer.user_id,
            peer_username: peer.username.clone(),
            created_at_ms: record.created_at_ms,
            last_seq,
            read_seq: membership.read_seq,
            unread_count: last_seq.saturating_sub(membership.read_seq),
            activity_ms: last_message.as_ref().map_or(record.created_at_ms, |m| m.sent_at_ms),
            last_message,
            member_count: 2,
            role: pb::MemberRole::Member as i32,
            ..Default::default()
        })
    }

    /// Stores a message (text or membership change) with the next seq, its
    /// inbox entries for `recipients`, moves the sender's read marker, and
    /// queues the live deliveries. No checks: callers have done them.
    #[allow(clippy::too_many_arguments)] // every argument is a distinct part of the message
    pub(super) fn append(
        &mut self,
        conversation: u64,
        sender: &UserRef,
        client_msg_id: &str,
        content: pb::message::Content,
        recipients: &[u64],
        now_ms: i64,
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
        self.put(Ks::Messages, &keys::pair(conversation, seq), encoded.clone());
        let record = InboxRecord {
            event: Some(inbox_record::Event::Message(MessageRef { conversation_id: conversation, seq })),
        };
        let record = record.encode_to_vec();
        for &user in recipients {
            let inbox_seq = self.next_inbox_seq(user)?;
            self.put_unread(Ks::Inbox, &keys::pair(user, inbox_seq), record.clone());
            out.push(user, framing::message_event_frame(inbox_seq, &encoded));
        }
        let key = keys::pair(sender.user_id, conversation);
        if let Some(mut m) = self.get_record::<UserConversationRecord>(Ks::UserConversations, &key)? {
            m.read_seq = m.read_seq.max(seq);
            self.put_record(Ks::UserConversations, &key, &m);
        }
        Ok(message)
    }

    /// Sends a text message, deduplicated on (sender, client_msg_id), and
    /// queues push notifications for the recipients' devices when `push`
    /// is given.
    pub fn send(
        &mut self,
        sender: &UserRef,
        conversation: u64,
        client_msg_id: &str,
        text: String,
        now_ms: i64,
        push: Option<super::push::PushTiming>,
    ) -> Result<SendOutcome> {
        let dedupe_key = keys::dedupe(sender.user_id, client_msg_id);
        if let Some(r) = self.get_record::<MessageRef>(Ks::Dedupe, &dedupe_key)? {
            let Some(message) = self.get_record::<pb::Message>(Ks::Messages, &keys::pair(r.conversation_id, r.seq))?
            else {
                return Err(super::StoreError::Corrupt {
                    keyspace: keys::DEDUPE,
                    detail: "dedupe entry without message".into(),
                }
                .into());
            };
            return Ok((SendOutcome { message, duplicate: true, pushes_queued: 0 }, Deliveries::default()));
        }
        self.current_membership(sender.user_id, conversation)?;
        let recipients = self.member_ids(conversation)?;
        let mut out = Deliveries::default();
        let message = self.append(
            conversation,
            sender,
            client_msg_id,
            pb::message::Content::Text(text),
            &recipients,
            now_ms,
            &mut out,
        )?;
        self.put_record(Ks::Dedupe, &dedupe_key, &MessageRef { conversation_id: conversation, seq: message.seq });
        let pushes_queued = match push {
            Some(timing) => self.queue_pushes(sender.user_id, &recipients, conversation, message.seq, now_ms, timing),
            None => 0,
        };
        Ok((SendOutcome { message, duplicate: false, pushes_queued }, out))
    }

    /// Moves a read marker forward; returns the resulting state.
    pub fn mark_read(&mut self, user: &UserRef, conversation: u64, seq: u64) -> Result<pb::ReadState> {
        let mut membership = self.current_membership(user.user_id, conversation)?;
        let last_seq = self.last_seq(conversation)?;
        let target = seq.min(last_seq);
        let mut out = Deliveries::default();
        if target > membership.read_seq {
            membership.read_seq = target;
            self.put_record(Ks::UserConversations, &keys::pair(user.user_id, conversation), &membership);
            let state = read_state(conversation, target, last_seq);
            let record = InboxRecord { event: Some(inbox_record::Event::Read(state)) };
            self.inbox_event(user.user_id, record, pb::inbox_event::Event::Read(state), &mut out)?;
            let kind =
                self.get_record::<ConversationRecord>(Ks::Conversations, &keys::id(conversation))?.map(|c| c.kind);
            if kind == Some(pb::ConversationKind::Direct as i32) {
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
                for (peer, _) in self.members(conversation)? {
                    if peer != user.user_id {
                        out.push(peer, frame.clone());
                    }
                }
            }
        }
        Ok((read_state(conversation, membership.read_seq, last_seq), out))
    }
}

fn read_state(conversation: u64, read_seq: u64, last_seq: u64) -> pb::ReadState {
    pb::ReadState { conversation_id: conversation, read_seq, unread_count: last_seq.saturating_sub(read_seq), last_seq }
}
