//! Push targets of a device.

use std::sync::Arc;

use confab_protocol::pb::{self, server_frame::Body as Reply};

use super::{ApiError, Pending, ready, reply, unix_ms};
use crate::state::{Auth, Core};
use crate::store::PushEndpoint;

pub(super) fn register(core: &Arc<Core>, auth: &Auth, r: pb::RegisterPushRequest) -> Pending {
    let Some(push) = &core.push else { return ready(Err(ApiError::push_off())) };
    let target = match push.target(r, unix_ms()) {
        Ok(t) => t,
        Err(e) => return ready(Err(e.into())),
    };
    let webhook_secret = match &target.target {
        Some(PushEndpoint::Webhook(h)) => h.secret.clone(),
        _ => Default::default(),
    };
    let registered = core.store.register_push(auth.user.user_id, auth.device_id, target);
    reply(registered, move |()| Reply::PushRegistered(pb::PushRegistered { webhook_secret }))
}

pub(super) fn unregister(core: &Arc<Core>, auth: &Auth) -> Pending {
    reply(core.store.unregister_push(auth.user.user_id, auth.device_id), |()| Reply::Done(pb::Done {}))
}
