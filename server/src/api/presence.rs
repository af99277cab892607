//! Presence subscriptions, status, and typing notices.

use std::sync::Arc;
use std::time::Instant;

use confab_protocol::pb::{self, server_frame::Body as Reply};

use super::{ApiError, Pending, ready};
use crate::state::{Auth, Core};

pub(super) fn subscribe(core: &Arc<Core>, auth: &Auth, session: u64, r: pb::SubscribePresenceRequest) -> Pending {
    let (user, max) = (auth.user.user_id, core.limits.max_presence_subscriptions);
    let users = core.store.users_by_name(r.usernames);
    let core = Arc::clone(core);
    Box::pin(async move {
        // Request order, each user once (§9.2).
        let mut seen = std::collections::HashSet::new();
        let users: Vec<_> = users
            .await?
            .into_iter()
            .filter(|u| seen.insert(u.user_id))
            .map(|u| (u.user_id, u.username, u.last_seen_ms))
            .collect();
        let presences = core
            .presence
            .subscribe(user, session, &users, max, Instant::now())
            .map_err(|e| ApiError::too_many_presence_subscriptions(e.max))?;
        Ok(Reply::PresenceList(pb::PresenceList { presences }))
    })
}

pub(super) fn unsubscribe(core: &Arc<Core>, session: u64, r: pb::UnsubscribePresenceRequest) -> Pending {
    // Unknown names are skipped: there is nothing to unsubscribe from.
    let lookups: Vec<_> = r.usernames.into_iter().map(|name| core.store.user_by_name(name)).collect();
    let core = Arc::clone(core);
    Box::pin(async move {
        let mut ids = Vec::with_capacity(lookups.len());
        for lookup in lookups {
            ids.extend(lookup.await?.map(|u| u.user_id));
        }
        core.presence.unsubscribe(session, &ids);
        Ok(Reply::Done(pb::Done {}))
    })
}

pub(super) fn set_status(core: &Arc<Core>, auth: &Auth, session: u64, r: pb::SetStatusRequest) -> Pending {
    let away = r.status == pb::PresenceState::Away as i32;
    core.presence.set_away(auth.user.user_id, session, away, Instant::now());
    ready(Ok(Reply::Done(pb::Done {})))
}

/// A typing notice goes live to the other current members' sessions; it is
/// never stored, and errors are dropped (notifications get no answer).
pub(super) fn typing(core: &Arc<Core>, auth: &Auth, t: pb::TypingNotice) {
    let (user, conversation) = (auth.user.user_id, t.conversation_id);
    let audience = core.store.typing_audience(user, conversation);
    let event = pb::TypingEvent {
        conversation_id: conversation,
        user_id: user,
        username: auth.user.username.clone(),
        expires_in_ms: core.typing_expiry_ms,
    };
    let delivery = Arc::clone(&core.delivery);
    core.tracker.spawn(async move {
        let members = audience.await.unwrap_or_default();
        if members.is_empty() {
            return;
        }
        let event = pb::ServerFrame { request_id: 0, body: Some(Reply::Typing(event)) };
        // Encoded once each way: with the length prefix for session
        // streams, without for QUIC datagrams.
        let frame = confab_protocol::framing::frame_bytes(&event);
        let datagram = bytes::Bytes::from(prost::Message::encode_to_vec(&event));
        delivery.deliver_ephemeral(&members, &frame, &datagram);
    });
}
