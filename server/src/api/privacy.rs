//! The block list and privacy settings (PROTOCOL.md §6.7).

use std::sync::Arc;

use confab_protocol::pb::{self, server_frame::Body as Reply};

use super::{ApiError, Pending, reply, unix_ms};
use crate::state::{Auth, Core};
use crate::store::{CommandError, Refusal, UserRef};

/// The account named `username`, or USER_NOT_FOUND.
async fn user_named(core: &Core, username: String) -> Result<UserRef, ApiError> {
    match core.store.user_by_name(username.clone()).await? {
        Some(u) => Ok(UserRef { user_id: u.user_id, username: u.username }),
        None => Err(CommandError::Refused(Refusal::UserNotFound(username)).into()),
    }
}

pub(super) fn set_blocked(core: &Arc<Core>, auth: &Auth, r: pb::SetBlockedRequest) -> Pending {
    let core = Arc::clone(core);
    let me = auth.user.user_id;
    Box::pin(async move {
        let target = user_named(&core, r.username).await?;
        core.store.set_blocked(me, target, r.blocked, unix_ms()).await?;
        Ok(Reply::Done(pb::Done {}))
    })
}

pub(super) fn list_blocked(core: &Arc<Core>, auth: &Auth, r: pb::ListBlockedRequest) -> Pending {
    let core = Arc::clone(core);
    let me = auth.user.user_id;
    let limit = core.limits.page_size(r.limit) as usize;
    // Room in one frame for the list: the envelope and has_more take a few
    // bytes; each entry costs its encoded length plus its tag.
    let room = (core.limits.max_frame_bytes as usize).saturating_sub(32);
    Box::pin(async move {
        let after = if r.after_username.is_empty() { 0 } else { user_named(&core, r.after_username).await?.user_id };
        let (blocks, more) = core.store.blocked(me, after, limit).await?;
        let mut users = Vec::with_capacity(blocks.len());
        let mut used = 0usize;
        let mut has_more = more;
        for b in blocks {
            let user = pb::BlockedUser { username: b.username, blocked_at_ms: b.blocked_at_ms };
            let size = prost::Message::encoded_len(&user) + 4;
            if used + size > room && !users.is_empty() {
                has_more = true;
                break;
            }
            used += size;
            users.push(user);
        }
        Ok(Reply::BlockedList(pb::BlockedList { users, has_more }))
    })
}

pub(super) fn get_privacy(core: &Arc<Core>, auth: &Auth) -> Pending {
    reply(core.store.privacy(auth.user.user_id), Reply::PrivacySettings)
}

pub(super) fn set_privacy(core: &Arc<Core>, auth: &Auth, r: pb::SetPrivacyRequest) -> Pending {
    reply(core.store.set_privacy(auth.user.user_id, r), Reply::PrivacySettings)
}

/// Users by username prefix (PROTOCOL.md §6.9). One node holds every
/// username and block only outside cluster mode; a cluster answers
/// FEATURE_UNAVAILABLE.
pub(super) fn search_users(core: &Arc<Core>, auth: &Auth, r: pb::SearchUsersRequest) -> Pending {
    let core = Arc::clone(core);
    let me = auth.user.user_id;
    let limit = core.limits.page_size(r.limit) as usize;
    Box::pin(async move {
        let Some(store) = core.store.single_node() else {
            return Err(ApiError::search_unavailable());
        };
        let (names, has_more) = store.search_users(me, r.prefix, limit).await?;
        let users = names.into_iter().map(|username| pb::UserResult { username }).collect();
        Ok(Reply::UserList(pb::UserList { users, has_more }))
    })
}
