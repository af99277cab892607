//! Group commands: create, add, remove, leave, rename, set role. Every
//! membership change is stored in the conversation as a message with its own
//! seq and fanned out like one; see spec/PROTOCOL.md §7.3.

use confab_protocol::pb::{self, MemberRole, MembershipAction};

use super::commands::{Refusal, Result, UserRef, refuse};
use super::records::{ConversationRecord, InboxRecord, MemberRecord, UserConversationRecord, inbox_record};
use super::tx::Tx;
use super::writer::{CommandError, Deliveries};
use super::{Ks, keys};

fn change(action: MembershipAction, users: &[UserRef]) -> pb::MembershipChange {
    pb::MembershipChange {
        action: action as i32,
        users: users.iter().map(pb::UserRef::from).collect(),
        ..Default::default()
    }
}

fn role_of(m: &MemberRecord) -> MemberRole {
    MemberRole::try_from(m.role).unwrap_or(MemberRole::Member)
}

/// A group and the acting member's role in it, after the checks every group
/// request shares: visible (311), a group (314).
struct Group {
    members: Vec<(u64, MemberRecord)>,
    actor_role: MemberRole,
}

impl Tx<'_> {
    fn group(&self, actor: u64, conversation: u64) -> std::result::Result<Group, CommandError> {
        self.current_membership(actor, conversation)?;
        let record = self
            .get_record::<ConversationRecord>(Ks::Conversations, &keys::id(conversation))?
            .ok_or(CommandError::Refused(Refusal::ConversationNotFound))?;
        if record.kind != pb::ConversationKind::Group as i32 {
            return refuse(Refusal::NotAGroup);
        }
        let members = self.members(conversation)?;
        let actor_role = members.iter().find(|(u, _)| *u == actor).map_or(MemberRole::Member, |(_, m)| role_of(m));
        Ok(Group { members, actor_role })
    }

    fn resolve(&self, names: &[String], skip: u64) -> std::result::Result<Vec<UserRef>, CommandError> {
        let mut out: Vec<UserRef> = Vec::new();
        for name in names {
            let user = self.user_by_name(name)?;
            if user.user_id != skip && !out.iter().any(|u| u.user_id == user.user_id) {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// Makes `users` members as of `seq` (the change that adds them) and
    /// writes their `joined` events.
    #[allow(clippy::too_many_arguments)] // the parts of one membership change
    fn admit(
        &mut self,
        conversation: u64,
        users: &[(UserRef, MemberRole)],
        seq: u64,
        view: &pb::Conversation,
        now_ms: i64,
        out: &mut Deliveries,
    ) -> std::result::Result<(), CommandError> {
        for (user, role) in users {
            let member = MemberRecord { role: *role as i32, joined_at_ms: now_ms, joined_seq: seq };
            self.put_record(Ks::Members, &keys::pair(conversation, user.user_id), &member);
            let mine = UserConversationRecord { read_seq: seq, left_seq: 0, joined_seq: seq };
            self.put_record(Ks::UserConversations, &keys::pair(user.user_id, conversation), &mine);
            let view = pb::Conversation { read_seq: seq, role: *role as i32, ..view.clone() };
            let record = InboxRecord { event: Some(inbox_record::Event::Joined(view.clone())) };
            self.inbox_event(user.user_id, record, pb::inbox_event::Event::Joined(view), out)?;
        }
        Ok(())
    }

    /// Ends `user`'s membership at `seq` and writes their `left` event.
    fn release(
        &mut self,
        conversation: u64,
        user: u64,
        seq: u64,
        out: &mut Deliveries,
    ) -> std::result::Result<(), CommandError> {
        self.delete(Ks::Members, &keys::pair(conversation, user));
        let key = keys::pair(user, conversation);
        let mut mine = self.get_record::<UserConversationRecord>(Ks::UserConversations, &key)?.unwrap_or_default();
        mine.left_seq = seq;
        mine.read_seq = mine.read_seq.max(seq);
        self.put_record(Ks::UserConversations, &key, &mine);
        let left = pb::ConversationLeft { conversation_id: conversation, seq };
        let record = InboxRecord { event: Some(inbox_record::Event::Left(left)) };
        self.inbox_event(user, record, pb::inbox_event::Event::Left(left), out)?;
        Ok(())
    }

    /// Creates a group owned by `creator` with the named initial members.
    pub fn create_group(
        &mut self,
        creator: &UserRef,
        title: &str,
        usernames: &[String],
        max_members: u32,
        now_ms: i64,
    ) -> Result<pb::Conversation> {
        let others = self.resolve(usernames, creator.user_id)?;
        if 1 + others.len() > max_members as usize {
            return refuse(Refusal::GroupFull { would_have: 1 + others.len(), max: max_members });
        }
        let conversation = self.next_id(keys::NEXT_CONVERSATION_ID)?;
        let record = ConversationRecord {
            conversation_id: conversation,
            kind: pb::ConversationKind::Group as i32,
            title: title.to_string(),
            created_at_ms: now_ms,
        };
        self.put_record(Ks::Conversations, &keys::id(conversation), &record);
        let mut users = vec![(creator.clone(), MemberRole::Owner)];
        users.extend(others.into_iter().map(|u| (u, MemberRole::Member)));
        let view = pb::Conversation {
            conversation_id: conversation,
            kind: record.kind,
            title: record.title.clone(),
            created_at_ms: now_ms,
            last_seq: 1,
            member_count: users.len() as u32,
            activity_ms: now_ms,
            ..Default::default()
        };
        let mut out = Deliveries::default();
        self.admit(conversation, &users, 1, &view, now_ms, &mut out)?;
        let all: Vec<UserRef> = users.iter().map(|(u, _)| u.clone()).collect();
        let ids: Vec<u64> = all.iter().map(|u| u.user_id).collect();
        let content = pb::message::Content::Membership(change(MembershipAction::Created, &all));
        let message = self.append(conversation, creator, "", content, &ids, now_ms, &mut out)?;
        let mine =
            pb::Conversation { read_seq: 1, role: MemberRole::Owner as i32, last_message: Some(message), ..view };
        Ok((mine, out))
    }

    /// Adds the named users (those not yet members), all or none.
    pub fn add_members(
        &mut self,
        actor: &UserRef,
        conversation: u64,
        usernames: &[String],
        max_members: u32,
        now_ms: i64,
    ) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if !matches!(group.actor_role, MemberRole::Owner | MemberRole::Admin) {
            return refuse(Refusal::PermissionDenied("only owners and admins add members"));
        }
        let named = self.resolve(usernames, 0)?;
        let new: Vec<UserRef> =
            named.into_iter().filter(|u| !group.members.iter().any(|(m, _)| *m == u.user_id)).collect();
        if new.is_empty() {
            return Ok(((), Deliveries::default()));
        }
        let would_have = group.members.len() + new.len();
        if would_have > max_members as usize {
            return refuse(Refusal::GroupFull { would_have, max: max_members });
        }
        // The ADDED change takes the next seq: the new members' view starts there.
        let seq = self.last_seq(conversation)? + 1;
        let record =
            self.get_record::<ConversationRecord>(Ks::Conversations, &keys::id(conversation))?.unwrap_or_default();
        let view = pb::Conversation {
            conversation_id: conversation,
            kind: record.kind,
            title: record.title,
            created_at_ms: record.created_at_ms,
            last_seq: seq,
            member_count: would_have as u32,
            activity_ms: now_ms,
            ..Default::default()
        };
        let mut out = Deliveries::default();
        let admitted: Vec<(UserRef, MemberRole)> = new.iter().map(|u| (u.clone(), MemberRole::Member)).collect();
        self.admit(conversation, &admitted, seq, &view, now_ms, &mut out)?;
        let mut recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        recipients.extend(new.iter().map(|u| u.user_id));
        let content = pb::message::Content::Membership(change(MembershipAction::Added, &new));
        self.append(conversation, actor, "", content, &recipients, now_ms, &mut out)?;
        Ok(((), out))
    }

    /// Removes one member (not oneself; owners cannot be removed; admins
    /// remove only plain members).
    pub fn remove_member(&mut self, actor: &UserRef, conversation: u64, username: &str, now_ms: i64) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if !matches!(group.actor_role, MemberRole::Owner | MemberRole::Admin) {
            return refuse(Refusal::PermissionDenied("only owners and admins remove members"));
        }
        let target = self.user_by_name(username)?;
        if target.user_id == actor.user_id {
            return refuse(Refusal::Invalid("use LeaveGroupRequest to leave"));
        }
        let Some((_, member)) = group.members.iter().find(|(u, _)| *u == target.user_id) else {
            return Ok(((), Deliveries::default()));
        };
        match (role_of(member), group.actor_role) {
            (MemberRole::Owner, _) => return refuse(Refusal::PermissionDenied("owners cannot be removed")),
            (MemberRole::Admin, MemberRole::Admin) => {
                return refuse(Refusal::PermissionDenied("admins remove only members"));
            }
            _ => {}
        }
        let recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        let mut out = Deliveries::default();
        let content =
            pb::message::Content::Membership(change(MembershipAction::Removed, std::slice::from_ref(&target)));
        let message = self.append(conversation, actor, "", content, &recipients, now_ms, &mut out)?;
        self.release(conversation, target.user_id, message.seq, &mut out)?;
        Ok(((), out))
    }

    /// The actor leaves; a last owner hands ownership on first.
    pub fn leave_group(&mut self, actor: &UserRef, conversation: u64, now_ms: i64) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        let recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        let mut out = Deliveries::default();
        let other_owner = group.members.iter().any(|(u, m)| *u != actor.user_id && role_of(m) == MemberRole::Owner);
        if group.actor_role == MemberRole::Owner && !other_owner {
            let rank = |role: MemberRole| if role == MemberRole::Admin { 0 } else { 1 };
            let successor = group
                .members
                .iter()
                .filter(|(u, _)| *u != actor.user_id)
                .min_by_key(|(u, m)| (rank(role_of(m)), m.joined_at_ms, *u));
            if let Some((user_id, member)) = successor {
                let user = self
                    .get_record::<super::records::UserRecord>(Ks::Users, &keys::id(*user_id))?
                    .map(|u| UserRef { user_id: u.user_id, username: u.username })
                    .unwrap_or(UserRef { user_id: *user_id, username: String::new() });
                let promoted = MemberRecord { role: MemberRole::Owner as i32, ..*member };
                self.put_record(Ks::Members, &keys::pair(conversation, *user_id), &promoted);
                let mut c = change(MembershipAction::RoleChanged, std::slice::from_ref(&user));
                c.role = MemberRole::Owner as i32;
                self.append(
                    conversation,
                    actor,
                    "",
                    pb::message::Content::Membership(c),
                    &recipients,
                    now_ms,
                    &mut out,
                )?;
            }
        }
        let content = pb::message::Content::Membership(change(MembershipAction::Left, std::slice::from_ref(actor)));
        let message = self.append(conversation, actor, "", content, &recipients, now_ms, &mut out)?;
        self.release(conversation, actor.user_id, message.seq, &mut out)?;
        Ok(((), out))
    }

    /// Renames the group.
    pub fn rename_group(&mut self, actor: &UserRef, conversation: u64, title: &str, now_ms: i64) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if !matches!(group.actor_role, MemberRole::Owner | MemberRole::Admin) {
            return refuse(Refusal::PermissionDenied("only owners and admins rename"));
        }
        let key = keys::id(conversation);
        let mut record = self.get_record::<ConversationRecord>(Ks::Conversations, &key)?.unwrap_or_default();
        if record.title == title {
            return Ok(((), Deliveries::default()));
        }
        record.title = title.to_string();
        self.put_record(Ks::Conversations, &key, &record);
        let recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        let mut out = Deliveries::default();
        let c = pb::MembershipChange {
            action: MembershipAction::Renamed as i32,
            title: title.to_string(),
            ..Default::default()
        };
        self.append(conversation, actor, "", pb::message::Content::Membership(c), &recipients, now_ms, &mut out)?;
        Ok(((), out))
    }

    /// Sets a member's role (owners only).
    pub fn set_role(
        &mut self,
        actor: &UserRef,
        conversation: u64,
        username: &str,
        role: MemberRole,
        now_ms: i64,
    ) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if group.actor_role != MemberRole::Owner {
            return refuse(Refusal::PermissionDenied("only owners change roles"));
        }
        let target = self.user_by_name(username)?;
        let Some((_, member)) = group.members.iter().find(|(u, _)| *u == target.user_id) else {
            return refuse(Refusal::UserNotFound(format!("{username} is not a member")));
        };
        if role_of(member) == role {
            return Ok(((), Deliveries::default()));
        }
        let owners = group.members.iter().filter(|(_, m)| role_of(m) == MemberRole::Owner).count();
        if role_of(member) == MemberRole::Owner && owners == 1 {
            return refuse(Refusal::PermissionDenied("a group keeps at least one owner"));
        }
        let updated = MemberRecord { role: role as i32, ..*member };
        self.put_record(Ks::Members, &keys::pair(conversation, target.user_id), &updated);
        let recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        let mut out = Deliveries::default();
        let mut c = change(MembershipAction::RoleChanged, std::slice::from_ref(&target));
        c.role = role as i32;
        self.append(conversation, actor, "", pb::message::Content::Membership(c), &recipients, now_ms, &mut out)?;
        Ok(((), out))
    }
}
