//! The block list, privacy settings and password changes (PROTOCOL.md
//! §6.6, §6.7): commands on the writer thread, and the reach check on
//! committed data.
//!
//! A block lives in the blocker's partition (`blocks`). While either member
//! of a direct conversation blocks the other, the conversation's partition
//! refuses that conversation's sends: the block is copied onto both member
//! records there (`blocks_peer`, `blocked_by_peer`), in the same
//! transaction when the conversation is in the same partition, so
//! the send path reads nothing it did not read before. In a cluster the
//! conversation's partition may be another: the block is applied there as a
//! second step before the request is answered.
//!
//! Whether a user accepts a new direct conversation or a group invite from
//! another ([`Reach`]) is checked on committed data before the write that
//! needs it: a block or setting applies to every request that arrives after
//! it was acknowledged.

use confab_protocol::pb;

use super::commands::{Result, refuse};
use super::db::Db;
use super::keys::{ConversationId, UserId};
use super::records::{BlockRecord, DirectBlock, MemberRecord, UserConversationRecord, UserRecord};
use super::tx::Tx;
use super::writer::Deliveries;
use super::{CommandError, Ks, Refusal, StoreError, UserRef, keys};

/// The most usernames one search looks at (matching ones left out
/// included), so a prefix shared by many hidden or blocked accounts costs a
/// bounded read.
pub const MAX_SEARCH_SCAN: usize = 2000;

/// What a user is asked to accept from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Nothing new: only whether one blocked the other.
    BlockOnly,
    /// A new direct conversation.
    Direct,
    /// Being put in a group (created with them, or added).
    Group,
}

impl Reach {
    /// The wire form of the cluster's `RpcReach.reach`.
    pub fn code(self) -> u32 {
        match self {
            Reach::BlockOnly => 0,
            Reach::Direct => 1,
            Reach::Group => 2,
        }
    }

    /// From [`Reach::code`].
    pub fn from_code(code: u32) -> Option<Reach> {
        match code {
            0 => Some(Reach::BlockOnly),
            1 => Some(Reach::Direct),
            2 => Some(Reach::Group),
            _ => None,
        }
    }
}

fn audience(raw: i32) -> pb::Audience {
    match pb::Audience::try_from(raw) {
        Ok(pb::Audience::Unspecified) | Err(_) => pb::Audience::Everyone,
        Ok(a) => a,
    }
}

/// The settings as a client sees them (UNSPECIFIED reads as EVERYONE).
pub(crate) fn settings_of(user: &UserRecord) -> pb::PrivacySettings {
    pb::PrivacySettings {
        direct_messages: audience(user.direct_messages) as i32,
        group_invites: audience(user.group_invites) as i32,
        search: audience(user.search) as i32,
    }
}

impl Tx<'_> {
    /// Blocks or unblocks `target` for `user` (their partition); at most
    /// `max` users blocked. Idempotent. The pair's direct conversation, if
    /// any, gets the block too: here when its partition is this one, else
    /// its id is returned for the caller to apply it there
    /// ([`Tx::apply_direct_block`]) — also when nothing changed here, so a
    /// retry after a failed second step completes it.
    pub fn set_blocked(
        &mut self,
        user: u64,
        target: &UserRef,
        blocked: bool,
        max: u32,
        now_ms: i64,
    ) -> Result<Option<u64>> {
        if target.user_id == user {
            return refuse(Refusal::Invalid("you cannot block yourself".into()));
        }
        let key = keys::block(UserId(user), UserId(target.user_id));
        let had = self.get(Ks::Blocks, &key)?.is_some();
        if blocked && !had {
            let count = self.scan_prefix(Ks::Blocks, &keys::of_user(UserId(user)))?.len();
            if count >= max as usize {
                return refuse(Refusal::TooManyBlocked { max });
            }
            let record =
                BlockRecord { user_id: target.user_id, username: target.username.clone(), blocked_at_ms: now_ms };
            self.put_record(Ks::Blocks, &key, &record);
        } else if !blocked && had {
            self.delete(Ks::Blocks, &key);
        }
        let Some(conversation) = self.direct_with(user, target.user_id)? else {
            return Ok((None, Deliveries::default()));
        };
        if !self.is_local(conversation) {
            return Ok((Some(conversation), Deliveries::default()));
        }
        if had != blocked {
            self.apply_direct_block(
                conversation,
                DirectBlock { blocker_id: user, blocked_id: target.user_id, blocked },
            )?;
        }
        Ok((None, Deliveries::default()))
    }

    /// The direct conversation of `user` with `peer`, from `user`'s own
    /// records (their partition).
    fn direct_with(&self, user: u64, peer: u64) -> std::result::Result<Option<u64>, CommandError> {
        for (k, v) in self.scan_prefix(Ks::UserConversations, &keys::of_user(UserId(user)))? {
            let m: UserConversationRecord = super::decode(Ks::UserConversations, &v)?;
            if m.kind == pb::ConversationKind::Direct as i32 && m.peer_user_id == peer {
                return Ok(keys::second(&k));
            }
        }
        Ok(None)
    }

    /// Copies a block onto the two member records of a direct
    /// conversation (its partition).
    pub(crate) fn apply_direct_block(
        &mut self,
        conversation: u64,
        block: DirectBlock,
    ) -> std::result::Result<(), StoreError> {
        let c = ConversationId(conversation);
        let blocker = keys::member(c, UserId(block.blocker_id));
        if let Some(mut m) = self.get_record::<MemberRecord>(Ks::Members, &blocker)? {
            m.blocks_peer = block.blocked;
            self.put_record(Ks::Members, &blocker, &m);
        }
        let blocked = keys::member(c, UserId(block.blocked_id));
        if let Some(mut m) = self.get_record::<MemberRecord>(Ks::Members, &blocked)? {
            m.blocked_by_peer = block.blocked;
            self.put_record(Ks::Members, &blocked, &m);
        }
        Ok(())
    }

    /// Changes the settings named in `change` (UNSPECIFIED: unchanged);
    /// returns them all.
    pub fn set_privacy(&mut self, user: u64, change: &pb::SetPrivacyRequest) -> Result<pb::PrivacySettings> {
        let key = keys::user(UserId(user));
        let Some(mut record) = self.get_record::<UserRecord>(Ks::Users, &key)? else {
            return refuse(Refusal::UserNotFound(String::new()));
        };
        if change.direct_messages != pb::Audience::Unspecified as i32 {
            record.direct_messages = change.direct_messages;
        }
        if change.group_invites != pb::Audience::Unspecified as i32 {
            record.group_invites = change.group_invites;
        }
        if change.search != pb::Audience::Unspecified as i32 {
            record.search = change.search;
        }
        self.put_record(Ks::Users, &key, &record);
        Ok((settings_of(&record), Deliveries::default()))
    }

    /// Replaces the user's password hash; with `revoke`, also revokes
    /// every device but `keep` (0: all). Returns the devices revoked.
    pub fn set_password(&mut self, user: u64, password_hash: String, revoke: bool, keep: u64) -> Result<Vec<u64>> {
        let key = keys::user(UserId(user));
        let Some(mut record) = self.get_record::<UserRecord>(Ks::Users, &key)? else {
            return refuse(Refusal::UserNotFound(String::new()));
        };
        record.password_hash = password_hash;
        self.put_record(Ks::Users, &key, &record);
        if !revoke {
            return Ok((Vec::new(), Deliveries::default()));
        }
        self.revoke_other_devices(user, keep)
    }
}

impl Db {
    /// A page of the user's block list: users with ids above `after`, at
    /// most `limit`; and whether more follow.
    pub fn blocked_page(
        &self,
        user: u64,
        after: u64,
        limit: usize,
    ) -> std::result::Result<(Vec<BlockRecord>, bool), StoreError> {
        let mut out = Vec::new();
        let from = keys::block(UserId(user), UserId(after.saturating_add(1)));
        let to = keys::block(UserId(user), UserId(u64::MAX));
        for kv in self.ks(Ks::Blocks)?.range(from..=to) {
            let (_, v) = kv.into_inner()?;
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(super::decode(Ks::Blocks, &v)?);
        }
        Ok((out, false))
    }

    /// Usernames starting with `prefix` that `searcher` may find
    /// (PROTOCOL.md §6.9), in username order, at most `limit`; and whether
    /// more follow. Left out: the searcher, disabled accounts, users either
    /// side blocked, and users out of prefix search unless `prefix` is their
    /// whole username. At most `MAX_SEARCH_SCAN` names are looked at: past
    /// that the answer says more follow.
    pub fn search_users(
        &self,
        searcher: u64,
        prefix: &str,
        limit: usize,
    ) -> std::result::Result<(Vec<String>, bool), StoreError> {
        let blocks = self.ks(Ks::Blocks)?;
        let mut out = Vec::new();
        for (looked, kv) in self.ks(Ks::Usernames)?.prefix(prefix.as_bytes()).enumerate() {
            if looked >= MAX_SEARCH_SCAN {
                return Ok((out, true));
            }
            let (name, id) = kv.into_inner()?;
            let id = keys::read_u64(&id, 0)
                .ok_or(StoreError::Corrupt { keyspace: keys::USERNAMES, detail: "short id".into() })?;
            if id == searcher {
                continue;
            }
            let Some(user) = self.user(id)? else { continue };
            if user.disabled {
                continue;
            }
            let exact = name.as_ref() == prefix.as_bytes();
            if !exact && audience(user.search) == pb::Audience::Nobody {
                continue;
            }
            if blocks.get(keys::block(UserId(searcher), UserId(id)))?.is_some()
                || blocks.get(keys::block(UserId(id), UserId(searcher)))?.is_some()
            {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(user.username);
        }
        Ok((out, false))
    }

    /// The user's privacy settings.
    pub fn privacy(&self, user: u64) -> std::result::Result<pb::PrivacySettings, CommandError> {
        match self.user(user)? {
            Some(u) => Ok(settings_of(&u)),
            None => Err(CommandError::Refused(Refusal::UserNotFound(String::new()))),
        }
    }
}

/// The reads the reach check needs, on committed data ([`Db`]) or inside a
/// command's transaction ([`Tx`], its staged writes included): one
/// implementation of the rule for both.
pub(crate) trait Lookup {
    fn lookup(&self, ks: Ks, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StoreError>;
    /// The values under `prefix`.
    fn values(&self, ks: Ks, prefix: &[u8]) -> std::result::Result<Vec<Vec<u8>>, StoreError>;
}

impl Lookup for Db {
    fn lookup(&self, ks: Ks, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StoreError> {
        Ok(self.ks(ks)?.get(key)?.map(|v| v.to_vec()))
    }

    fn values(&self, ks: Ks, prefix: &[u8]) -> std::result::Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ks(ks)?.prefix(prefix) {
            out.push(kv.into_inner()?.1.to_vec());
        }
        Ok(out)
    }
}

impl Lookup for Tx<'_> {
    fn lookup(&self, ks: Ks, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(ks, key)?.map(|v| v.to_vec()))
    }

    fn values(&self, ks: Ks, prefix: &[u8]) -> std::result::Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.scan_prefix(ks, prefix)?.into_iter().map(|(_, v)| v).collect())
    }
}

/// Whether `owner` refuses `reach` from `other`: `owner` blocked `other`,
/// or (for something new) `owner`'s settings leave `other` out. Read where
/// `owner`'s partition is.
pub(crate) fn refuses(r: &impl Lookup, owner: u64, other: u64, reach: Reach) -> std::result::Result<bool, StoreError> {
    if r.lookup(Ks::Blocks, &keys::block(UserId(owner), UserId(other)))?.is_some() {
        return Ok(true);
    }
    let wanted = match reach {
        Reach::BlockOnly => return Ok(false),
        Reach::Direct | Reach::Group => {
            let Some(user) = r.lookup(Ks::Users, &keys::user(UserId(owner)))? else { return Ok(false) };
            let settings = settings_of(&super::decode::<UserRecord>(Ks::Users, &user)?);
            if reach == Reach::Direct { settings.direct_messages() } else { settings.group_invites() }
        }
    };
    Ok(match wanted {
        pb::Audience::Everyone | pb::Audience::Unspecified => false,
        // A direct conversation that exists stays open whatever the setting.
        pb::Audience::Nobody if reach == Reach::Direct => !have_direct(r, owner, other)?,
        pb::Audience::Nobody => true,
        pb::Audience::Contacts => !have_direct(r, owner, other)?,
    })
}

/// Whether the two users have a direct conversation: from the pair index
/// when it is here, else from `owner`'s own records.
fn have_direct(r: &impl Lookup, owner: u64, other: u64) -> std::result::Result<bool, StoreError> {
    if r.lookup(Ks::DirectPairs, &keys::direct_pair(UserId(owner), UserId(other)))?.is_some() {
        return Ok(true);
    }
    for v in r.values(Ks::UserConversations, &keys::of_user(UserId(owner)))? {
        let m: UserConversationRecord = super::decode(Ks::UserConversations, &v)?;
        if m.kind == pb::ConversationKind::Direct as i32 && m.peer_user_id == other {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Tx<'_> {
    /// Refuses when `target` does not accept `reach` from `actor` or either
    /// blocked the other, as far as this partition holds their records (a
    /// cluster checks the others' partitions before the write).
    pub(crate) fn check_reach(
        &self,
        actor: &UserRef,
        target: &UserRef,
        reach: Reach,
    ) -> std::result::Result<(), CommandError> {
        let theirs = self.is_local(target.user_id) && refuses(self, target.user_id, actor.user_id, reach)?;
        let mine = self.is_local(actor.user_id) && refuses(self, actor.user_id, target.user_id, Reach::BlockOnly)?;
        if theirs || mine {
            return refuse(Refusal::NotAccepted(target.username.clone()));
        }
        Ok(())
    }
}
