//! Sending, history, read state and the inbox.

use std::sync::Arc;

use confab_protocol::pb::{self, server_frame::Body as Reply};

use super::{Pending, reply, unix_ms};
use crate::state::{Auth, Core};
use crate::store::HistoryRange;

pub(super) fn send(core: &Arc<Core>, auth: &Auth, r: pb::SendRequest) -> Pending {
    let sent = core.store.send(auth.user.clone(), r.conversation_id, r.client_msg_id, r.text, unix_ms());
    reply(sent, |o| Reply::Sent(pb::Sent { message: Some(o.message), duplicate: o.duplicate }))
}

pub(super) fn history(core: &Arc<Core>, auth: &Auth, r: pb::HistoryRequest) -> Pending {
    let range = HistoryRange {
        before_seq: r.before_seq,
        after_seq: r.after_seq,
        oldest_first: r.oldest_first,
        limit: core.limits.page_size(r.limit) as usize,
    };
    reply(core.store.history(auth.user.user_id, r.conversation_id, range), Reply::HistoryPage)
}

pub(super) fn mark_read(core: &Arc<Core>, auth: &Auth, r: pb::MarkReadRequest) -> Pending {
    reply(core.store.mark_read(auth.user.clone(), r.conversation_id, r.seq), Reply::ReadState)
}

pub(super) fn read_receipts(core: &Arc<Core>, auth: &Auth, r: pb::ReadReceiptsRequest) -> Pending {
    reply(core.store.read_receipts(auth.user.user_id, r.conversation_id), Reply::ReadReceiptList)
}

pub(super) fn sync(core: &Arc<Core>, auth: &Auth, r: pb::SyncRequest) -> Pending {
    let limit = core.limits.page_size(r.limit) as usize;
    reply(core.store.sync(auth.user.user_id, r.after, limit), Reply::SyncPage)
}

pub(super) fn ack_cursor(core: &Arc<Core>, auth: &Auth, r: pb::AckCursorRequest) -> Pending {
    reply(core.store.ack_cursor(auth.user.user_id, auth.device_id, r.inbox_seq), |()| Reply::Done(pb::Done {}))
}
