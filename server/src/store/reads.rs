//! Reads of committed data. Blocking: call through [`Store::read`].

use confab_protocol::pb;
use prost::Message as _;

use super::records::{
    ConversationRecord, DeviceRecord, InboxRecord, MemberRecord, UserConversationRecord, UserRecord, inbox_record,
};
use super::{Ks, Store, StoreError, decode, keys};

/// Room kept in a page for the envelope around its items.
const PAGE_OVERHEAD: usize = 1024;

impl Store {
    /// Highest seq stored in a conversation (0: none).
    pub fn last_seq(&self, conversation: u64) -> Result<u64, StoreError> {
        self.last_key_second(Ks::Messages, conversation)
    }

    /// Newest inbox_seq of a user (0: none).
    pub fn inbox_head(&self, user: u64) -> Result<u64, StoreError> {
        self.last_key_second(Ks::Inbox, user)
    }

    fn last_key_second(&self, ks: Ks, first: u64) -> Result<u64, StoreError> {
        match self.ks(ks)?.prefix(keys::id(first)).next_back() {
            Some(kv) => {
                let key = kv.key()?;
                keys::pair_second(&key).ok_or(StoreError::Corrupt { keyspace: ks.name(), detail: "short key".into() })
            }
            None => Ok(0),
        }
    }

    /// A user by id.
    pub fn user(&self, user: u64) -> Result<Option<UserRecord>, StoreError> {
        self.get_record(Ks::Users, &keys::id(user))
    }

    /// A user by username.
    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.ks(Ks::Usernames)?.get(username.as_bytes())? {
            Some(id) => match keys::read_u64(&id, 0) {
                Some(id) => self.user(id),
                None => Err(StoreError::Corrupt { keyspace: keys::USERNAMES, detail: "short id".into() }),
            },
            None => Ok(None),
        }
    }

    /// A device by id.
    pub fn device(&self, device: u64) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_record(Ks::Devices, &keys::id(device))
    }

    /// The device a token (by its SHA-256) belongs to.
    pub fn device_by_token_hash(&self, hash: &[u8]) -> Result<Option<DeviceRecord>, StoreError> {
        match self.ks(Ks::Tokens)?.get(hash)? {
            Some(id) => match keys::read_u64(&id, 0) {
                Some(id) => self.device(id),
                None => Err(StoreError::Corrupt { keyspace: keys::TOKENS, detail: "short id".into() }),
            },
            None => Ok(None),
        }
    }

    /// A user's devices, oldest first.
    pub fn devices_of(&self, user: u64) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::UserDevices)?.prefix(keys::id(user)) {
            let key = kv.key()?;
            if let Some(device) = keys::pair_second(&key).map(|d| self.device(d)).transpose()?.flatten() {
                out.push(device);
            }
        }
        Ok(out)
    }

    /// The user's record of a conversation (kept after leaving).
    pub fn membership(&self, user: u64, conversation: u64) -> Result<Option<UserConversationRecord>, StoreError> {
        self.get_record(Ks::UserConversations, &keys::pair(user, conversation))
    }

    /// A conversation's record.
    pub fn conversation(&self, conversation: u64) -> Result<Option<ConversationRecord>, StoreError> {
        self.get_record(Ks::Conversations, &keys::id(conversation))
    }

    /// Current members, in user id order.
    pub fn members(&self, conversation: u64) -> Result<Vec<(u64, MemberRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::Members)?.prefix(keys::id(conversation)) {
            let (k, v) = kv.into_inner()?;
            let user = keys::pair_second(&k)
                .ok_or(StoreError::Corrupt { keyspace: keys::MEMBERS, detail: "short key".into() })?;
            out.push((user, decode(Ks::Members, &v)?));
        }
        Ok(out)
    }

    /// One message.
    pub fn message(&self, conversation: u64, seq: u64) -> Result<Option<pb::Message>, StoreError> {
        self.get_record(Ks::Messages, &keys::pair(conversation, seq))
    }

    /// A conversation as `user` sees it, or `None` when the user is not a
    /// current member (or it does not exist).
    pub fn conversation_view(&self, user: u64, conversation: u64) -> Result<Option<pb::Conversation>, StoreError> {
        match self.membership(user, conversation)? {
            Some(m) if m.left_seq == 0 => self.build_view(user, conversation, &m),
            _ => Ok(None),
        }
    }

    fn build_view(
        &self,
        user: u64,
        conversation: u64,
        membership: &UserConversationRecord,
    ) -> Result<Option<pb::Conversation>, StoreError> {
        let Some(conv) = self.conversation(conversation)? else { return Ok(None) };
        let members = self.members(conversation)?;
        let last_seq = self.last_seq(conversation)?;
        let last_message = if last_seq > 0 { self.message(conversation, last_seq)? } else { None };
        let mut view = pb::Conversation {
            conversation_id: conversation,
            kind: conv.kind,
            title: conv.title,
            created_at_ms: conv.created_at_ms,
            last_seq,
            read_seq: membership.read_seq.min(last_seq),
            unread_count: last_seq.saturating_sub(membership.read_seq),
            activity_ms: last_message.as_ref().map_or(conv.created_at_ms, |m| m.sent_at_ms),
            last_message,
            member_count: members.len() as u32,
            role: members.iter().find(|(u, _)| *u == user).map_or(pb::MemberRole::Member as i32, |(_, m)| m.role),
            ..Default::default()
        };
        if conv.kind == pb::ConversationKind::Direct as i32
            && let Some((peer, _)) = members.iter().find(|(u, _)| *u != user)
        {
            view.peer_user_id = *peer;
            view.peer_username = self.user(*peer)?.map(|u| u.username).unwrap_or_default();
        }
        Ok(Some(view))
    }

    /// The user's current conversations, most recently active first, after
    /// the paging position `before` = (activity_ms, conversation_id) when
    /// given; cut to `limit` and to `max_bytes` of encoded size.
    pub fn list_conversations(
        &self,
        user: u64,
        limit: usize,
        before: Option<(i64, u64)>,
        max_bytes: usize,
    ) -> Result<(Vec<pb::Conversation>, bool), StoreError> {
        let mut all = Vec::new();
        for kv in self.ks(Ks::UserConversations)?.prefix(keys::id(user)) {
            let (k, v) = kv.into_inner()?;
            let Some(conversation) = keys::pair_second(&k) else { continue };
            let membership: UserConversationRecord = decode(Ks::UserConversations, &v)?;
            if membership.left_seq != 0 {
                continue;
            }
            if let Some(view) = self.build_view(user, conversation, &membership)? {
                all.push(view);
            }
        }
        all.sort_by_key(|c| std::cmp::Reverse((c.activity_ms, c.conversation_id)));
        if let Some(pos) = before {
            all.retain(|c| (c.activity_ms, c.conversation_id) < pos);
        }
        Ok(cut_page(all, limit, max_bytes))
    }

    /// A page of history. `before`/`after` are exclusive bounds (at most one
    /// set; neither: the newest page, or the oldest with `oldest_first`); `visible_to` caps what a former member can read (u64::MAX for
    /// current members). Returns messages ascending and `has_more`.
    #[allow(clippy::too_many_arguments)] // the request's fields, plus what the caller knows
    pub fn history(
        &self,
        conversation: u64,
        before: u64,
        after: u64,
        oldest_first: bool,
        limit: usize,
        visible_to: u64,
        max_bytes: usize,
    ) -> Result<(Vec<pb::Message>, bool), StoreError> {
        let ks = self.ks(Ks::Messages)?;
        let upper = if before != 0 { before.min(visible_to.saturating_add(1)) } else { visible_to.saturating_add(1) };
        let mut out = Vec::new();
        let mut bytes = PAGE_OVERHEAD;
        let mut has_more = false;
        if after != 0 || (before == 0 && oldest_first) {
            // Oldest first, from after+1 upward (after = u64::MAX: nothing).
            let from = after.saturating_add(1);
            let range = keys::pair(conversation, from)..keys::pair(conversation, upper.max(from));
            for kv in ks.range(range) {
                let v = kv.value()?;
                if out.len() == limit || (bytes + v.len() + 8 > max_bytes && !out.is_empty()) {
                    has_more = true;
                    break;
                }
                bytes += v.len() + 8;
                out.push(decode(Ks::Messages, &v)?);
            }
        } else {
            // Newest first below `upper`, then reversed.
            let range = keys::pair(conversation, 1)..keys::pair(conversation, upper.max(1));
            for kv in ks.range(range).rev() {
                let v = kv.value()?;
                if out.len() == limit || (bytes + v.len() + 8 > max_bytes && !out.is_empty()) {
                    has_more = true;
                    break;
                }
                bytes += v.len() + 8;
                out.push(decode(Ks::Messages, &v)?);
            }
            out.reverse();
        }
        Ok((out, has_more))
    }

    /// Inbox events after `after`, ascending, cut to `limit` and
    /// `max_bytes`. Message events are resolved to the stored message.
    pub fn inbox_page(
        &self,
        user: u64,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<pb::InboxEvent>, bool), StoreError> {
        let range = keys::pair(user, after.saturating_add(1))..=keys::pair(user, u64::MAX);
        let mut out = Vec::new();
        let mut bytes = PAGE_OVERHEAD;
        let mut has_more = false;
        for kv in self.ks(Ks::Inbox)?.range(range) {
            let (k, v) = kv.into_inner()?;
            if out.len() == limit {
                has_more = true;
                break;
            }
            let inbox_seq = keys::pair_second(&k)
                .ok_or(StoreError::Corrupt { keyspace: keys::INBOX, detail: "short key".into() })?;
            let record: InboxRecord = decode(Ks::Inbox, &v)?;
            let event = match record.event {
                Some(inbox_record::Event::Message(r)) => match self.message(r.conversation_id, r.seq)? {
                    Some(m) => pb::inbox_event::Event::Message(m),
                    None => {
                        return Err(StoreError::Corrupt {
                            keyspace: keys::INBOX,
                            detail: format!("inbox {user}/{inbox_seq} points to a missing message"),
                        });
                    }
                },
                Some(inbox_record::Event::Read(r)) => pb::inbox_event::Event::Read(r),
                Some(inbox_record::Event::Joined(c)) => pb::inbox_event::Event::Joined(c),
                Some(inbox_record::Event::Left(l)) => pb::inbox_event::Event::Left(l),
                None => continue,
            };
            let event = pb::InboxEvent { inbox_seq, event: Some(event) };
            let len = event.encoded_len() + 8;
            if bytes + len > max_bytes && !out.is_empty() {
                has_more = true;
                break;
            }
            bytes += len;
            out.push(event);
        }
        Ok((out, has_more))
    }
}

/// Cuts a list to `limit` items and `max_bytes` of encoded size (always
/// keeping at least one); says whether anything was cut.
fn cut_page<M: prost::Message>(mut items: Vec<M>, limit: usize, max_bytes: usize) -> (Vec<M>, bool) {
    let mut bytes = PAGE_OVERHEAD;
    let mut keep = 0;
    for item in items.iter().take(limit) {
        let len = item.encoded_len() + 8;
        if bytes + len > max_bytes && keep > 0 {
            break;
        }
        bytes += len;
        keep += 1;
    }
    let has_more = items.len() > keep;
    items.truncate(keep);
    (items, has_more)
}
