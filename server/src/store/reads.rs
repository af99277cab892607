//! Reads of committed data. Blocking: call through [`Db::read`].

use confab_protocol::pb;
use prost::Message as _;

use super::keys::{ConversationId, DeviceId, InboxSeq, Seq, UserId};
use super::privacy::Lookup;
use super::records::{
    ConversationRecord, DeviceRecord, InboxRecord, MemberRecord, UserConversationRecord, UserRecord, inbox_record,
};
use super::{Db, Ks, StoreError, decode, keys};

/// Room kept in a page for the envelope around its items.
const PAGE_OVERHEAD: usize = 1024;

impl Db {
    /// Highest seq stored in a conversation (0: none).
    pub fn last_seq(&self, conversation: u64) -> Result<u64, StoreError> {
        self.last_key_second(Ks::Messages, keys::of_conversation(ConversationId(conversation)))
    }

    /// Newest inbox_seq of a user (0: none).
    pub fn inbox_head(&self, user: u64) -> Result<u64, StoreError> {
        self.last_key_second(Ks::Inbox, keys::of_user(UserId(user)))
    }

    /// The second id of the last key under `prefix`.
    fn last_key_second(&self, ks: Ks, prefix: [u8; 8]) -> Result<u64, StoreError> {
        match self.ks(ks)?.prefix(prefix).next_back() {
            Some(kv) => {
                let key = kv.key()?;
                keys::second(&key).ok_or(StoreError::Corrupt { keyspace: ks.name(), detail: "short key".into() })
            }
            None => Ok(0),
        }
    }

    /// A user by id.
    pub fn user(&self, user: u64) -> Result<Option<UserRecord>, StoreError> {
        self.get_record(Ks::Users, &keys::user(UserId(user)))
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
        self.get_record(Ks::Devices, &keys::device(DeviceId(device)))
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

    /// Up to `limit` of the user's devices with ids above `after`, in id
    /// order, and whether more follow.
    pub fn devices_page(&self, user: u64, after: u64, limit: usize) -> Result<(Vec<DeviceRecord>, bool), StoreError> {
        let mut out = Vec::new();
        let from = keys::user_device(UserId(user), DeviceId(after.saturating_add(1)));
        let to = keys::user_device(UserId(user), DeviceId(u64::MAX));
        for kv in self.ks(Ks::UserDevices)?.range(from..=to) {
            let key = kv.key()?;
            if let Some(device) = keys::second(&key).map(|d| self.device(d)).transpose()?.flatten() {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(device);
            }
        }
        Ok((out, false))
    }

    /// Accounts in username order (the operator's list): those whose
    /// username starts with `prefix`, after `after` (exclusive; "" from the
    /// first), at most `limit`, each with its number of devices; and
    /// whether more follow.
    pub fn users_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<(UserRecord, usize)>, bool), StoreError> {
        use std::ops::Bound;
        let start = if after.as_bytes() >= prefix.as_bytes() {
            Bound::Excluded(after.as_bytes().to_vec())
        } else {
            Bound::Included(prefix.as_bytes().to_vec())
        };
        let devices = self.ks(Ks::UserDevices)?;
        let mut out = Vec::new();
        for kv in self.ks(Ks::Usernames)?.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (name, id) = kv.into_inner()?;
            if !name.starts_with(prefix.as_bytes()) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let id = keys::read_u64(&id, 0)
                .ok_or(StoreError::Corrupt { keyspace: keys::USERNAMES, detail: "short id".into() })?;
            let Some(user) = self.user(id)? else { continue };
            let mut count = 0;
            for d in devices.prefix(keys::of_user(UserId(id))) {
                d.key()?;
                count += 1;
            }
            out.push((user, count));
        }
        Ok((out, false))
    }

    /// The user's record of a conversation (kept after leaving).
    pub fn membership(&self, user: u64, conversation: u64) -> Result<Option<UserConversationRecord>, StoreError> {
        self.get_record(Ks::UserConversations, &keys::user_conversation(UserId(user), ConversationId(conversation)))
    }

    /// A conversation's record.
    pub fn conversation(&self, conversation: u64) -> Result<Option<ConversationRecord>, StoreError> {
        self.get_record(Ks::Conversations, &keys::conversation(ConversationId(conversation)))
    }

    /// Current members, in user id order.
    pub fn members(&self, conversation: u64) -> Result<Vec<(u64, MemberRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::Members)?.prefix(keys::of_conversation(ConversationId(conversation))) {
            let (k, v) = kv.into_inner()?;
            let user =
                keys::second(&k).ok_or(StoreError::Corrupt { keyspace: keys::MEMBERS, detail: "short key".into() })?;
            out.push((user, decode(Ks::Members, &v)?));
        }
        Ok(out)
    }

    /// One message.
    pub fn message(&self, conversation: u64, seq: u64) -> Result<Option<pb::Message>, StoreError> {
        self.get_record(Ks::Messages, &keys::message(ConversationId(conversation), Seq(seq)))
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
        Ok(self.summary_view(user, conversation)?.map(|v| with_read_seq(v, membership.read_seq)))
    }

    /// What the conversation's partition knows of it, for `user` (role, and
    /// the peer of a direct conversation): everything of the view but the
    /// user's read marker. `None` when it does not exist.
    pub fn summary_view(&self, user: u64, conversation: u64) -> Result<Option<pb::Conversation>, StoreError> {
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
            activity_ms: last_message.as_ref().map_or(conv.created_at_ms, |m| m.sent_at_ms),
            last_message,
            member_count: members.len() as u32,
            role: members.iter().find(|(u, _)| *u == user).map_or(pb::MemberRole::Member as i32, |(_, m)| m.role),
            ..Default::default()
        };
        if conv.kind == pb::ConversationKind::Direct as i32
            && let Some((peer, m)) = members.iter().find(|(u, _)| *u != user)
        {
            view.peer_user_id = *peer;
            view.peer_username = self.member_name(*peer, m)?;
        }
        Ok(Some(view))
    }

    /// A member's username: kept in their member record, or (records from
    /// before) in the users keyspace.
    fn member_name(&self, user: u64, member: &MemberRecord) -> Result<String, StoreError> {
        if !member.username.is_empty() {
            return Ok(member.username.clone());
        }
        Ok(self.user(user)?.map(|u| u.username).unwrap_or_default())
    }

    /// The user's current memberships (conversation, their record), in
    /// conversation order.
    pub fn memberships_of(&self, user: u64) -> Result<Vec<(u64, UserConversationRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::UserConversations)?.prefix(keys::of_user(UserId(user))) {
            let (k, v) = kv.into_inner()?;
            let Some(conversation) = keys::second(&k) else { continue };
            let membership: UserConversationRecord = decode(Ks::UserConversations, &v)?;
            if membership.left_seq == 0 {
                out.push((conversation, membership));
            }
        }
        Ok(out)
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
        for (conversation, membership) in self.memberships_of(user)? {
            if let Some(view) = self.build_view(user, conversation, &membership)? {
                all.push(view);
            }
        }
        Ok(conversation_page(all, limit, before, max_bytes))
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
            let c = ConversationId(conversation);
            let range = keys::message(c, Seq(from))..keys::message(c, Seq(upper.max(from)));
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
            let c = ConversationId(conversation);
            let range = keys::message(c, Seq(1))..keys::message(c, Seq(upper.max(1)));
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
        let u = UserId(user);
        let range = keys::inbox(u, InboxSeq(after.saturating_add(1)))..=keys::inbox(u, InboxSeq(u64::MAX));
        let mut out = Vec::new();
        let mut bytes = PAGE_OVERHEAD;
        let mut has_more = false;
        for kv in self.ks(Ks::Inbox)?.range(range) {
            let (k, v) = kv.into_inner()?;
            if out.len() == limit {
                has_more = true;
                break;
            }
            let inbox_seq =
                keys::second(&k).ok_or(StoreError::Corrupt { keyspace: keys::INBOX, detail: "short key".into() })?;
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
                Some(inbox_record::Event::MessageCopy(m)) => pb::inbox_event::Event::Message(m),
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

// ----- reads with the domain's visibility rules ---------------------------------

impl Db {
    /// The user's member record, when a current member (the
    /// conversation's partition decides).
    fn current_member(&self, user: u64, conversation: u64) -> Result<Option<MemberRecord>, StoreError> {
        self.get_record(Ks::Members, &keys::member(ConversationId(conversation), UserId(user)))
    }

    /// The accounts with these usernames, in order; the first unknown
    /// name is returned as `Err`.
    pub fn users_by_name(&self, usernames: &[String]) -> Result<Result<Vec<UserRecord>, String>, StoreError> {
        let mut out = Vec::with_capacity(usernames.len());
        for name in usernames {
            match self.user_by_name(name)? {
                Some(u) => out.push(u),
                None => return Ok(Err(name.clone())),
            }
        }
        Ok(Ok(out))
    }

    /// What a token (by its SHA-256) resumes: its device, the device's
    /// user, and the user's inbox head. Nothing for a disabled account's
    /// devices (their tokens work again once it is enabled).
    pub fn resume(&self, token_hash: &[u8]) -> Result<Option<(UserRecord, DeviceRecord, u64)>, StoreError> {
        let Some(device) = self.device_by_token_hash(token_hash)? else { return Ok(None) };
        let Some(user) = self.user(device.user_id)?.filter(|u| !u.disabled) else { return Ok(None) };
        let head = self.inbox_head(user.user_id)?;
        Ok(Some((user, device, head)))
    }

    /// The members of a conversation with their usernames, oldest member
    /// first, for a current member; `None` for anyone else.
    pub fn member_list(&self, user: u64, conversation: u64) -> Result<Option<Vec<pb::Member>>, StoreError> {
        if self.current_member(user, conversation)?.is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for (user_id, m) in self.members(conversation)? {
            let username = self.member_name(user_id, &m)?;
            out.push(pb::Member { user_id, username, role: m.role, joined_at_ms: m.joined_at_ms });
        }
        out.sort_by_key(|m| (m.joined_at_ms, m.user_id));
        Ok(Some(out))
    }

    /// Every current member's read marker, for a current member; `None`
    /// for anyone else.
    pub fn read_receipts(&self, user: u64, conversation: u64) -> Result<Option<Vec<pb::ReadReceipt>>, StoreError> {
        if self.current_member(user, conversation)?.is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for (user_id, m) in self.members(conversation)? {
            // A member of this partition has the authoritative marker here;
            // one elsewhere, the copy their read-marker effects keep.
            let read_seq = if self.same_partition(user_id, conversation) {
                self.membership(user_id, conversation)?.map_or(0, |m| m.read_seq)
            } else {
                m.read_seq
            };
            let username = self.member_name(user_id, &m)?;
            out.push(pb::ReadReceipt { conversation_id: conversation, user_id, username, read_seq });
        }
        Ok(Some(out))
    }

    /// The other current members, when `user` is one; else nobody.
    pub fn typing_audience(&self, user: u64, conversation: u64) -> Result<Vec<u64>, StoreError> {
        if self.current_member(user, conversation)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(self.members(conversation)?.into_iter().map(|(u, _)| u).filter(|u| *u != user).collect())
    }

    /// A page of history as `user` may see it: everything while a member,
    /// up to where they left after leaving; `None` when they never were
    /// one.
    pub fn history_for(
        &self,
        user: u64,
        conversation: u64,
        range: super::HistoryRange,
        max_bytes: usize,
    ) -> Result<Option<(Vec<pb::Message>, bool)>, StoreError> {
        let Some(visible_to) = visible_to(self, self.partitioning, user, conversation)? else { return Ok(None) };
        let (before, after, oldest_first, limit) = (range.before_seq, range.after_seq, range.oldest_first, range.limit);
        self.history(conversation, before, after, oldest_first, limit, visible_to, max_bytes).map(Some)
    }
}

/// How far `user` may read a conversation's history (PROTOCOL.md §7.1):
/// everything (`u64::MAX`) while a member, up to the seq at which they
/// left after leaving; `None` when they never were one. Read in the
/// conversation's partition (committed data, or a snapshot of it).
pub(crate) fn visible_to(
    r: &impl Lookup,
    partitioning: super::Partitioning,
    user: u64,
    conversation: u64,
) -> Result<Option<u64>, StoreError> {
    let (c, u) = (ConversationId(conversation), UserId(user));
    if r.lookup(Ks::Members, &keys::member(c, u))?.is_some() {
        return Ok(Some(u64::MAX));
    }
    if let Some(v) = r.lookup(Ks::FormerMembers, &keys::former_member(c, u))? {
        return keys::read_u64(&v, 0)
            .map(Some)
            .ok_or(StoreError::Corrupt { keyspace: keys::FORMER_MEMBERS, detail: "not 8 bytes".into() });
    }
    if partitioning.of_id(user) == partitioning.of_id(conversation)
        && let Some(v) = r.lookup(Ks::UserConversations, &keys::user_conversation(u, c))?
    {
        // Left before former members were recorded.
        let m: UserConversationRecord = decode(Ks::UserConversations, &v)?;
        if m.left_seq != 0 {
            return Ok(Some(m.left_seq));
        }
    }
    Ok(None)
}

/// A user's view of a conversation: the partition's summary with their
/// read marker.
pub fn with_read_seq(mut view: pb::Conversation, read_seq: u64) -> pb::Conversation {
    view.read_seq = read_seq.min(view.last_seq);
    view.unread_count = view.last_seq.saturating_sub(read_seq);
    view
}

/// The page of a conversation list: most recently active first, after the
/// paging position `before` = (activity_ms, conversation_id) when given,
/// cut to `limit` and `max_bytes`.
pub fn conversation_page(
    mut all: Vec<pb::Conversation>,
    limit: usize,
    before: Option<(i64, u64)>,
    max_bytes: usize,
) -> (Vec<pb::Conversation>, bool) {
    all.sort_by_key(|c| std::cmp::Reverse((c.activity_ms, c.conversation_id)));
    if let Some(pos) = before {
        all.retain(|c| (c.activity_ms, c.conversation_id) < pos);
    }
    cut_page(all, limit, max_bytes)
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
