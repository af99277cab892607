//! Groups: creation, members, roles, title, leaving.

use std::sync::Arc;

use confab_protocol::pb::{self, server_frame::Body as Reply};

use std::net::IpAddr;
use std::time::Instant;

use super::{ApiError, Pending, ready, reply, unix_ms};
use crate::state::{Auth, Core};

fn done((): ()) -> Reply {
    Reply::Done(pb::Done {})
}

pub(super) fn create(core: &Arc<Core>, auth: &Auth, peer: IpAddr, r: pb::CreateGroupRequest) -> Pending {
    let members = u32::try_from(r.usernames.len()).unwrap_or(u32::MAX);
    if let Err(wait) = core.credentials.growth.create_group(auth.user.user_id, peer, members, Instant::now()) {
        return ready(Err(ApiError::rate_limited("too many groups or members added; try again later", wait)));
    }
    reply(core.store.create_group(auth.user.clone(), r.title, r.usernames, unix_ms()), Reply::Conversation)
}

pub(super) fn add_members(core: &Arc<Core>, auth: &Auth, peer: IpAddr, r: pb::AddMembersRequest) -> Pending {
    let members = u32::try_from(r.usernames.len()).unwrap_or(u32::MAX);
    if let Err(wait) = core.credentials.growth.add_members(auth.user.user_id, peer, members, Instant::now()) {
        return ready(Err(ApiError::rate_limited("too many members added; try again later", wait)));
    }
    reply(core.store.add_members(auth.user.clone(), r.conversation_id, r.usernames, unix_ms()), done)
}

pub(super) fn remove_member(core: &Arc<Core>, auth: &Auth, r: pb::RemoveMemberRequest) -> Pending {
    reply(core.store.remove_member(auth.user.clone(), r.conversation_id, r.username, unix_ms()), done)
}

pub(super) fn leave(core: &Arc<Core>, auth: &Auth, r: pb::LeaveGroupRequest) -> Pending {
    reply(core.store.leave_group(auth.user.clone(), r.conversation_id, unix_ms()), done)
}

pub(super) fn rename(core: &Arc<Core>, auth: &Auth, r: pb::RenameGroupRequest) -> Pending {
    reply(core.store.rename_group(auth.user.clone(), r.conversation_id, r.title, unix_ms()), done)
}

pub(super) fn set_role(core: &Arc<Core>, auth: &Auth, r: pb::SetRoleRequest) -> Pending {
    // Validation admitted only known roles.
    let role = pb::MemberRole::try_from(r.role).unwrap_or(pb::MemberRole::Member);
    reply(core.store.set_role(auth.user.clone(), r.conversation_id, r.username, role, unix_ms()), done)
}
