//! Group commands: create, add, remove, leave, rename, set role. Every
//! membership change is stored in the conversation as a message with its own
//! seq and fanned out like one; see spec/PROTOCOL.md §7.3.

use confab_protocol::pb::{self, MemberRole, MembershipAction};

use super::commands::{Result, UserRef, refuse};
use super::effects::UserEffect;
use super::keys::{ConversationId, UserId};
use super::records::{ConversationRecord, MemberRecord};
use super::tx::Tx;
use super::writer::Deliveries;
use super::{CommandError, Refusal};
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
        self.current_member(actor, conversation)?;
        let record = self
            .get_record::<ConversationRecord>(Ks::Conversations, &keys::conversation(ConversationId(conversation)))?
            .ok_or(CommandError::Refused(Refusal::ConversationNotFound))?;
        if record.kind != pb::ConversationKind::Group as i32 {
            return refuse(Refusal::NotAGroup);
        }
        let members = self.members(conversation)?;
        let actor_role = members.iter().find(|(u, _)| *u == actor).map_or(MemberRole::Member, |(_, m)| role_of(m));
        Ok(Group { members, actor_role })
    }

    /// The users with these names, in order (refusing the first unknown
    /// one); from this partition's usernames.
    pub fn resolve(&self, names: &[String]) -> std::result::Result<Vec<UserRef>, CommandError> {
        names.iter().map(|name| self.user_by_name(name)).collect()
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
            let member = MemberRecord {
                role: *role as i32,
                joined_at_ms: now_ms,
                joined_seq: seq,
                username: user.username.clone(),
                read_seq: seq,
                ..Default::default()
            };
            self.put_record(Ks::Members, &keys::member(ConversationId(conversation), UserId(user.user_id)), &member);
            self.delete(Ks::FormerMembers, &keys::former_member(ConversationId(conversation), UserId(user.user_id)));
            let view = pb::Conversation { read_seq: seq, role: *role as i32, ..view.clone() };
            self.give_user(user.user_id, UserEffect::Joined(Box::new(view)), out)?;
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
        self.delete(Ks::Members, &keys::member(ConversationId(conversation), UserId(user)));
        let former = keys::former_member(ConversationId(conversation), UserId(user));
        self.put(Ks::FormerMembers, &former, seq.to_be_bytes().to_vec());
        let left = pb::ConversationLeft { conversation_id: conversation, seq };
        self.give_user(user, UserEffect::Left(left), out)?;
        Ok(())
    }

    /// A member's username: from their member record, or (records written
    /// before usernames were kept there) from this partition's users.
    fn member_name(&self, user: u64, member: &MemberRecord) -> std::result::Result<String, CommandError> {
        if !member.username.is_empty() {
            return Ok(member.username.clone());
        }
        Ok(self
            .get_record::<super::records::UserRecord>(Ks::Users, &keys::user(UserId(user)))?
            .map(|u| u.username)
            .unwrap_or_default())
    }

    /// Creates a group owned by `creator` with the named initial members.
    pub fn create_group(
        &mut self,
        creator: &UserRef,
        title: &str,
        named: &[UserRef],
        max_members: u32,
        now_ms: i64,
    ) -> Result<pb::Conversation> {
        let mut others: Vec<UserRef> = Vec::new();
        for user in named {
            if user.user_id != creator.user_id && !others.iter().any(|u| u.user_id == user.user_id) {
                others.push(user.clone());
            }
        }
        if 1 + others.len() > max_members as usize {
            return refuse(Refusal::GroupFull { would_have: 1 + others.len(), max: max_members });
        }
        for user in &others {
            self.check_reach(creator, user, super::Reach::Group)?;
        }
        let conversation = self.next_id(keys::NEXT_CONVERSATION_ID)?;
        let record = ConversationRecord {
            conversation_id: conversation,
            kind: pb::ConversationKind::Group as i32,
            title: title.to_string(),
            created_at_ms: now_ms,
        };
        self.put_record(Ks::Conversations, &keys::conversation(ConversationId(conversation)), &record);
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
        let message = self.append(conversation, creator, "", content, &ids, now_ms, false, &mut out)?;
        let mine =
            pb::Conversation { read_seq: 1, role: MemberRole::Owner as i32, last_message: Some(message), ..view };
        Ok((mine, out))
    }

    /// Adds the named users (those not yet members), all or none.
    pub fn add_members(
        &mut self,
        actor: &UserRef,
        conversation: u64,
        named: &[UserRef],
        max_members: u32,
        now_ms: i64,
    ) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if !matches!(group.actor_role, MemberRole::Owner | MemberRole::Admin) {
            return refuse(Refusal::PermissionDenied("only owners and admins add members".into()));
        }
        let mut new: Vec<UserRef> = Vec::new();
        for user in named {
            if !group.members.iter().any(|(m, _)| *m == user.user_id) && !new.iter().any(|u| u.user_id == user.user_id)
            {
                new.push(user.clone());
            }
        }
        if new.is_empty() {
            return Ok(((), Deliveries::default()));
        }
        let would_have = group.members.len() + new.len();
        if would_have > max_members as usize {
            return refuse(Refusal::GroupFull { would_have, max: max_members });
        }
        for user in &new {
            self.check_reach(actor, user, super::Reach::Group)?;
        }
        // The ADDED change takes the next seq: the new members' view starts there.
        let seq = self.last_seq(conversation)? + 1;
        let record = self
            .get_record::<ConversationRecord>(Ks::Conversations, &keys::conversation(ConversationId(conversation)))?
            .unwrap_or_default();
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
        self.append(conversation, actor, "", content, &recipients, now_ms, false, &mut out)?;
        Ok(((), out))
    }

    /// Removes one member (not oneself; owners cannot be removed; admins
    /// remove only plain members).
    pub fn remove_member(&mut self, actor: &UserRef, conversation: u64, target: &UserRef, now_ms: i64) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if !matches!(group.actor_role, MemberRole::Owner | MemberRole::Admin) {
            return refuse(Refusal::PermissionDenied("only owners and admins remove members".into()));
        }
        if target.user_id == actor.user_id {
            return refuse(Refusal::Invalid("use LeaveGroupRequest to leave".into()));
        }
        let Some((_, member)) = group.members.iter().find(|(u, _)| *u == target.user_id) else {
            return Ok(((), Deliveries::default()));
        };
        match (role_of(member), group.actor_role) {
            (MemberRole::Owner, _) => return refuse(Refusal::PermissionDenied("owners cannot be removed".into())),
            (MemberRole::Admin, MemberRole::Admin) => {
                return refuse(Refusal::PermissionDenied("admins remove only members".into()));
            }
            _ => {}
        }
        let recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        let mut out = Deliveries::default();
        let content = pb::message::Content::Membership(change(MembershipAction::Removed, std::slice::from_ref(target)));
        let message = self.append(conversation, actor, "", content, &recipients, now_ms, false, &mut out)?;
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
                let username = self.member_name(*user_id, member)?;
                let user = UserRef { user_id: *user_id, username };
                let promoted = MemberRecord { role: MemberRole::Owner as i32, ..member.clone() };
                self.put_record(Ks::Members, &keys::member(ConversationId(conversation), UserId(*user_id)), &promoted);
                let mut c = change(MembershipAction::RoleChanged, std::slice::from_ref(&user));
                c.role = MemberRole::Owner as i32;
                self.append(
                    conversation,
                    actor,
                    "",
                    pb::message::Content::Membership(c),
                    &recipients,
                    now_ms,
                    false,
                    &mut out,
                )?;
            }
        }
        let content = pb::message::Content::Membership(change(MembershipAction::Left, std::slice::from_ref(actor)));
        let message = self.append(conversation, actor, "", content, &recipients, now_ms, false, &mut out)?;
        self.release(conversation, actor.user_id, message.seq, &mut out)?;
        Ok(((), out))
    }

    /// Renames the group.
    pub fn rename_group(&mut self, actor: &UserRef, conversation: u64, title: &str, now_ms: i64) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if !matches!(group.actor_role, MemberRole::Owner | MemberRole::Admin) {
            return refuse(Refusal::PermissionDenied("only owners and admins rename".into()));
        }
        let key = keys::conversation(ConversationId(conversation));
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
        self.append(
            conversation,
            actor,
            "",
            pb::message::Content::Membership(c),
            &recipients,
            now_ms,
            false,
            &mut out,
        )?;
        Ok(((), out))
    }

    /// Sets a member's role (owners only).
    pub fn set_role(
        &mut self,
        actor: &UserRef,
        conversation: u64,
        target: &UserRef,
        role: MemberRole,
        now_ms: i64,
    ) -> Result<()> {
        let group = self.group(actor.user_id, conversation)?;
        if group.actor_role != MemberRole::Owner {
            return refuse(Refusal::PermissionDenied("only owners change roles".into()));
        }
        let Some((_, member)) = group.members.iter().find(|(u, _)| *u == target.user_id) else {
            return refuse(Refusal::UserNotFound(format!("{} is not a member", target.username)));
        };
        if role_of(member) == role {
            return Ok(((), Deliveries::default()));
        }
        // Owners are peers: one owner never demotes another (who could
        // then be removed — the creator by an owner they made).
        if role_of(member) == MemberRole::Owner && target.user_id != actor.user_id {
            return refuse(Refusal::PermissionDenied("only an owner changes their own role".into()));
        }
        let owners = group.members.iter().filter(|(_, m)| role_of(m) == MemberRole::Owner).count();
        if role_of(member) == MemberRole::Owner && owners == 1 {
            return refuse(Refusal::PermissionDenied("a group keeps at least one owner".into()));
        }
        let updated = MemberRecord { role: role as i32, ..member.clone() };
        self.put_record(Ks::Members, &keys::member(ConversationId(conversation), UserId(target.user_id)), &updated);
        let recipients: Vec<u64> = group.members.iter().map(|(u, _)| *u).collect();
        let mut out = Deliveries::default();
        let mut c = change(MembershipAction::RoleChanged, std::slice::from_ref(target));
        c.role = role as i32;
        self.append(
            conversation,
            actor,
            "",
            pb::message::Content::Membership(c),
            &recipients,
            now_ms,
            false,
            &mut out,
        )?;
        Ok(((), out))
    }
}
