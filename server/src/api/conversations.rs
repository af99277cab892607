//! Direct conversations, the conversation list, one conversation, members.

use std::sync::Arc;

use confab_protocol::pb::{self, server_frame::Body as Reply};

use std::net::IpAddr;
use std::time::Instant;

use super::{ApiError, Pending, ready, reply, unix_ms};
use crate::state::{Auth, Core};

pub(super) fn open_direct(core: &Arc<Core>, auth: &Auth, peer: IpAddr, r: pb::OpenDirectRequest) -> Pending {
    if let Err(wait) = core.credentials.growth.open_direct(auth.user.user_id, peer, Instant::now()) {
        return ready(Err(ApiError::rate_limited("too many direct conversations opened; try again later", wait)));
    }
    reply(core.store.open_direct(auth.user.clone(), r.username, unix_ms()), Reply::Conversation)
}

pub(super) fn list(core: &Arc<Core>, auth: &Auth, r: pb::ListConversationsRequest) -> Pending {
    let limit = core.limits.page_size(r.limit) as usize;
    let before = (r.active_before_ms != 0 || r.before_conversation_id != 0)
        .then_some((r.active_before_ms, r.before_conversation_id));
    reply(core.store.conversations(auth.user.user_id, limit, before), Reply::ConversationList)
}

pub(super) fn get(core: &Arc<Core>, auth: &Auth, r: pb::GetConversationRequest) -> Pending {
    reply(core.store.conversation(auth.user.user_id, r.conversation_id), Reply::Conversation)
}

pub(super) fn members(core: &Arc<Core>, auth: &Auth, r: pb::ListMembersRequest) -> Pending {
    reply(core.store.members(auth.user.user_id, r.conversation_id), Reply::MemberList)
}
