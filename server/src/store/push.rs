//! Push targets and the durable push outbox.
//!
//! Layout (keys in `keys`, records in `store.proto`):
//! - `push_targets/(user, device)` → [`PushTargetRecord`]: one per device.
//! - `push_jobs/(device, conversation)` → [`PushJobRecord`]: the device's
//!   pending notification for that conversation, or the cool-down after one
//!   was sent. At most one per pair: that is the coalescing.
//! - `push_due/(due_ms, device, conversation)` → empty: every job, in the
//!   order the worker must look at them. A job and its index entry are
//!   always written in the same batch.
//!
//! The message path ([`Tx::queue_pushes`], called by `send`) only writes a
//! job or extends one, in the same atomic batch as the message, so jobs are
//! exactly as durable as the messages that caused them and survive
//! restarts. Everything else (is the device away, has it acked, did the
//! user read the conversation elsewhere) is decided by the worker when a
//! job is due, from committed data ([`Db::push_plan`]), and recorded
//! through the writer ([`Tx::settle_push`]).

use std::collections::HashSet;

use confab_protocol::pb;

use super::commands::refuse;
use super::keys::{ConversationId, DeviceId, UserId};
use super::records::{DeviceRecord, PushJobRecord, PushTargetRecord, push_target_record};
use super::tx::Tx;
use super::writer::Deliveries;
use super::{Db, Ks, StoreError, decode, keys};
use super::{PushTiming, Refusal};

/// One entry of the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DueJob {
    /// When it is due (unix ms).
    pub due_ms: i64,
    /// The device to notify.
    pub device: u64,
    /// The conversation it is about.
    pub conversation: u64,
}

/// Why a due notification was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The device acked every message of the job in time.
    Acked,
    /// The user read the conversation (on any device): nothing is unread.
    Read,
}

/// What the worker should do with a due job.
#[derive(Debug)]
pub enum PushPlan {
    /// The index entry points at no job (or at an older due time): drop it.
    Stale,
    /// A cool-down is over: the job record can go.
    CooledDown,
    /// The device, its target or the user's membership is gone.
    Discard(&'static str),
    /// Nothing to send.
    Skip {
        /// Why.
        reason: SkipReason,
        /// The newest message the decision covered.
        last_inbox_seq: u64,
    },
    /// Not yet: the device may still ack. Look again at this time.
    Later(i64),
    /// Send this notification.
    Send(Box<PushNotice>),
}

/// A notification ready to be delivered.
#[derive(Debug, Clone)]
pub struct PushNotice {
    /// The recipient.
    pub user_id: u64,
    /// The device notified.
    pub device_id: u64,
    /// Where the messages are.
    pub conversation_id: u64,
    /// The newest message covered.
    pub seq: u64,
    /// Its sender.
    pub sender_id: u64,
    /// Its sender's username.
    pub sender_username: String,
    /// When it was stored.
    pub sent_at_ms: i64,
    /// The user's unread count in the conversation.
    pub unread_count: u64,
    /// The message text, only when asked for (operator-enabled previews).
    pub text: Option<String>,
    /// Where to send it.
    pub target: PushTargetRecord,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the first message covered was stored (for the latency metric).
    pub first_at_ms: i64,
    /// The inbox_seq of the newest message covered.
    pub last_inbox_seq: u64,
}

/// How an attempt ended, as the job records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushSettle {
    /// The index entry was stale.
    Stale,
    /// The cool-down ended.
    CooledDown,
    /// The job cannot be delivered (device, target or membership gone).
    Discard,
    /// Nothing was sent (acked or read); newer messages, if any, are
    /// scheduled `delay_ms` after the newest.
    Skipped {
        /// The configured delay.
        delay_ms: i64,
    },
    /// Sent (or given up on): the next notification waits `coalesce_ms`.
    Delivered {
        /// The configured coalescing window.
        coalesce_ms: i64,
    },
    /// Failed; try again at `at_ms`.
    Retry {
        /// Next attempt (unix ms).
        at_ms: i64,
    },
    /// Not due yet after all.
    Later {
        /// The new due time (unix ms).
        due_ms: i64,
    },
    /// The push service says the target no longer exists (404/410).
    TargetGone {
        /// The target's owner.
        user_id: u64,
        /// Which registration was tried.
        registered_at_ms: i64,
        /// The status the service answered.
        http_status: u32,
    },
}

// ----- the message path ----------------------------------------------------------

impl Tx<'_> {
    /// Queues (or extends) a notification for each device with a push
    /// target of each recipient but the sender, about the message `seq`
    /// just appended (so each recipient's inbox head is its inbox_seq).
    /// Returns how many new jobs were queued. Never fails: a store error
    /// here costs the notification, not the message.
    pub(super) fn queue_pushes(
        &mut self,
        sender: u64,
        recipients: &[u64],
        conversation: u64,
        seq: u64,
        now_ms: i64,
        timing: PushTiming,
    ) -> u32 {
        let mut queued = 0;
        for &user in recipients.iter().filter(|u| **u != sender) {
            match self.queue_pushes_for(user, conversation, seq, now_ms, timing) {
                Ok(n) => queued += n,
                Err(e) => tracing::warn!(user, conversation, error = %e, "could not queue a push notification"),
            }
        }
        queued
    }

    fn queue_pushes_for(
        &mut self,
        user: u64,
        conversation: u64,
        seq: u64,
        now_ms: i64,
        timing: PushTiming,
    ) -> Result<u32, StoreError> {
        let devices = self.push_devices(user)?;
        if devices.is_empty() {
            return Ok(0);
        }
        let inbox_seq = self.inbox_head(user)?;
        let mut queued = 0;
        for device in devices {
            let key = keys::push_job(DeviceId(device), ConversationId(conversation));
            let (old_due, due_ms) = match self.get_record::<PushJobRecord>(Ks::PushJobs, &key)? {
                Some(mut job) if job.pending => {
                    // Coalesce: the pending notification now covers this one.
                    job.last_inbox_seq = inbox_seq;
                    job.last_seq = seq;
                    job.last_at_ms = now_ms;
                    self.put_record(Ks::PushJobs, &key, &job);
                    continue;
                }
                // In a cool-down: the next notification waits for its end.
                Some(cooling) => (Some(cooling.due_ms), (now_ms + timing.delay_ms).max(cooling.due_ms)),
                None => (None, now_ms + timing.delay_ms),
            };
            let job = PushJobRecord {
                user_id: user,
                pending: true,
                due_ms,
                first_inbox_seq: inbox_seq,
                first_at_ms: now_ms,
                last_inbox_seq: inbox_seq,
                last_seq: seq,
                last_at_ms: now_ms,
                attempts: 0,
            };
            self.put_job(device, conversation, old_due, &job);
            queued += 1;
        }
        Ok(queued)
    }

    /// Writes a job and keeps its index entry in step with its due time.
    fn put_job(&mut self, device: u64, conversation: u64, old_due: Option<i64>, job: &PushJobRecord) {
        if let Some(old) = old_due.filter(|d| *d != job.due_ms) {
            self.delete(Ks::PushDue, &keys::push_due(old, DeviceId(device), ConversationId(conversation)));
        }
        if old_due != Some(job.due_ms) {
            self.put(
                Ks::PushDue,
                &keys::push_due(job.due_ms, DeviceId(device), ConversationId(conversation)),
                Vec::new(),
            );
        }
        self.put_record(Ks::PushJobs, &keys::push_job(DeviceId(device), ConversationId(conversation)), job);
    }

    fn delete_job(&mut self, device: u64, conversation: u64, job: &PushJobRecord) {
        self.delete(Ks::PushDue, &keys::push_due(job.due_ms, DeviceId(device), ConversationId(conversation)));
        self.delete(Ks::PushJobs, &keys::push_job(DeviceId(device), ConversationId(conversation)));
    }

    /// Removes a device's target and every job for it (unregister, logout,
    /// revoke, a target the push service says is gone).
    pub(super) fn remove_push_state(&mut self, user: u64, device: u64) -> Result<(), StoreError> {
        self.delete(Ks::PushTargets, &keys::push_target(UserId(user), DeviceId(device)));
        for (k, v) in self.scan_prefix(Ks::PushJobs, &keys::of_device(DeviceId(device)))? {
            let job: PushJobRecord = decode(Ks::PushJobs, &v)?;
            let conversation = keys::second(&k)
                .ok_or(StoreError::Corrupt { keyspace: keys::PUSH_JOBS, detail: "short key".into() })?;
            self.delete_job(device, conversation, &job);
        }
        self.forget_push_devices(user);
        Ok(())
    }

    fn set_push_dropped(&mut self, device_id: u64, dropped: Option<pb::PushTargetDropped>) -> Result<(), StoreError> {
        if let Some(mut device) = self.get_record::<DeviceRecord>(Ks::Devices, &keys::device(DeviceId(device_id)))?
            && device.push_dropped != dropped
        {
            device.push_dropped = dropped;
            self.put_record(Ks::Devices, &keys::device(DeviceId(device_id)), &device);
        }
        Ok(())
    }

    // ----- requests --------------------------------------------------------------

    /// Sets (or replaces) the device's push target. Pending jobs stay: they
    /// go to the new target.
    pub fn register_push(&mut self, user: u64, device: u64, target: PushTargetRecord) -> super::commands::Result<()> {
        match self.get_record::<DeviceRecord>(Ks::Devices, &keys::device(DeviceId(device)))? {
            Some(d) if d.user_id == user => {}
            _ => return refuse(Refusal::DeviceNotFound),
        }
        // One place gets one notification per message: a webhook URL or a
        // push endpoint that another device of this account already has
        // moves to this device (41 devices registering one URL made one
        // message 40 POSTs to it).
        let place = target_place(&target);
        for (k, v) in self.scan_prefix(Ks::PushTargets, &keys::of_user(UserId(user)))? {
            let other = keys::read_u64(&k, 8).unwrap_or(0);
            if other == device || other == 0 {
                continue;
            }
            let existing: PushTargetRecord = decode(Ks::PushTargets, &v)?;
            if place.is_some() && target_place(&existing) == place {
                self.remove_push_state(user, other)?;
            }
        }
        let mut target = target;
        let key = keys::push_target(UserId(user), DeviceId(device));
        if let Some(old) = self.get_record::<PushTargetRecord>(Ks::PushTargets, &key)? {
            // registered_at_ms tells registrations apart: keep it increasing.
            target.registered_at_ms = target.registered_at_ms.max(old.registered_at_ms + 1);
        }
        self.put_record(Ks::PushTargets, &key, &target);
        self.set_push_dropped(device, None)?;
        self.forget_push_devices(user);
        Ok(((), Deliveries::default()))
    }

    /// Removes the device's push target, if any, and its pending jobs.
    pub fn unregister_push(&mut self, user: u64, device: u64) -> super::commands::Result<()> {
        self.remove_push_state(user, device)?;
        self.set_push_dropped(device, None)?;
        Ok(((), Deliveries::default()))
    }

    // ----- the worker's results ------------------------------------------------------

    /// Records how the worker's look at a due job ended. `attempted` is the
    /// newest inbox_seq the attempt covered: messages that arrived while it
    /// ran are kept for the next notification.
    pub fn settle_push(
        &mut self,
        due: DueJob,
        attempted: u64,
        settle: PushSettle,
        now_ms: i64,
    ) -> super::commands::Result<()> {
        let (device, conversation) = (due.device, due.conversation);
        let job = self.get_record::<PushJobRecord>(
            Ks::PushJobs,
            &keys::push_job(DeviceId(device), ConversationId(conversation)),
        )?;
        let Some(mut job) = job else {
            self.delete(Ks::PushDue, &keys::push_due(due.due_ms, DeviceId(device), ConversationId(conversation)));
            return Ok(((), Deliveries::default()));
        };
        let old_due = Some(job.due_ms);
        let newer = job.last_inbox_seq > attempted;
        match settle {
            PushSettle::Stale => {
                if job.due_ms != due.due_ms {
                    self.delete(
                        Ks::PushDue,
                        &keys::push_due(due.due_ms, DeviceId(device), ConversationId(conversation)),
                    );
                }
            }
            PushSettle::CooledDown => {
                if !job.pending && job.due_ms <= now_ms {
                    self.delete_job(device, conversation, &job);
                }
            }
            PushSettle::Discard => self.delete_job(device, conversation, &job),
            PushSettle::Skipped { delay_ms } => {
                if newer {
                    // Only the newer messages are left: their own delay.
                    job.first_inbox_seq = attempted + 1;
                    job.first_at_ms = job.last_at_ms;
                    job.due_ms = job.last_at_ms + delay_ms;
                    self.put_job(device, conversation, old_due, &job);
                } else {
                    self.delete_job(device, conversation, &job);
                }
            }
            PushSettle::Delivered { coalesce_ms } => {
                job.attempts = 0;
                job.due_ms = now_ms + coalesce_ms;
                if newer {
                    job.first_inbox_seq = attempted + 1;
                    job.first_at_ms = job.last_at_ms;
                } else {
                    job.pending = false;
                }
                self.put_job(device, conversation, old_due, &job);
            }
            PushSettle::Retry { at_ms } => {
                job.attempts += 1;
                job.due_ms = at_ms;
                self.put_job(device, conversation, old_due, &job);
            }
            PushSettle::Later { due_ms } => {
                job.due_ms = due_ms;
                self.put_job(device, conversation, old_due, &job);
            }
            PushSettle::TargetGone { user_id, registered_at_ms, http_status } => {
                let current = self.get_record::<PushTargetRecord>(
                    Ks::PushTargets,
                    &keys::push_target(UserId(user_id), DeviceId(device)),
                )?;
                if current.is_some_and(|t| t.registered_at_ms == registered_at_ms) {
                    self.remove_push_state(user_id, device)?;
                    let dropped = pb::PushTargetDropped { dropped_at_ms: now_ms, http_status };
                    self.set_push_dropped(device, Some(dropped))?;
                } else {
                    // Replaced while the attempt ran: try the new target.
                    job.due_ms = now_ms;
                    self.put_job(device, conversation, old_due, &job);
                }
            }
        }
        Ok(((), Deliveries::default()))
    }
}

// ----- the worker's reads ------------------------------------------------------------

impl Db {
    /// Up to `limit` jobs due at `now_ms`, earliest first, leaving out those
    /// in `busy` (being delivered); and the due time of the first job after
    /// them, if any (`now_ms` when more are due than were returned).
    pub fn push_due(
        &self,
        now_ms: i64,
        limit: usize,
        busy: &HashSet<(u64, u64)>,
        mine: impl Fn(u64) -> bool,
    ) -> Result<(Vec<DueJob>, Option<i64>), StoreError> {
        let mut out = Vec::new();
        for kv in self.ks(Ks::PushDue)?.iter() {
            let key = kv.key()?;
            let (due_ms, device, conversation) = keys::parse_push_due(&key)
                .ok_or(StoreError::Corrupt { keyspace: keys::PUSH_DUE, detail: "bad key".into() })?;
            if due_ms > now_ms {
                return Ok((out, Some(due_ms)));
            }
            // Jobs of a partition this node no longer owns stay in its
            // copy; the new owner has them too.
            if busy.contains(&(device, conversation)) || !mine(device) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, Some(now_ms)));
            }
            out.push(DueJob { due_ms, device, conversation });
        }
        Ok((out, None))
    }

    /// Decides what to do with a due job, from committed data. A device is
    /// notified when it has not acked the job's messages within `delay_ms`
    /// of their arrival (a device without a live session cannot ack, so it
    /// is notified after the delay), unless nothing is unread any more.
    pub fn push_plan(&self, due: DueJob, now_ms: i64, delay_ms: i64, with_text: bool) -> Result<PushPlan, StoreError> {
        let (device_id, conversation) = (due.device, due.conversation);
        let Some(job) = self.get_record::<PushJobRecord>(
            Ks::PushJobs,
            &keys::push_job(DeviceId(device_id), ConversationId(conversation)),
        )?
        else {
            return Ok(PushPlan::Stale);
        };
        if job.due_ms != due.due_ms {
            return Ok(PushPlan::Stale);
        }
        if !job.pending {
            return Ok(PushPlan::CooledDown);
        }
        let Some(device) = self.device(device_id)? else { return Ok(PushPlan::Discard("device revoked")) };
        let Some(target) = self.get_record::<PushTargetRecord>(
            Ks::PushTargets,
            &keys::push_target(UserId(job.user_id), DeviceId(device_id)),
        )?
        else {
            return Ok(PushPlan::Discard("no push target"));
        };
        let membership = match self.membership(job.user_id, conversation)? {
            Some(m) if m.left_seq == 0 => m,
            _ => return Ok(PushPlan::Discard("no longer a member")),
        };
        if device.cursor >= job.last_inbox_seq {
            return Ok(PushPlan::Skip { reason: SkipReason::Acked, last_inbox_seq: job.last_inbox_seq });
        }
        // The conversation's own partition knows its last seq; one elsewhere
        // is known here through the effects that reached the user.
        let local = self.same_partition(job.user_id, conversation);
        let last_seq = if local { self.last_seq(conversation)? } else { membership.last_seq };
        let unread_count = last_seq.saturating_sub(membership.read_seq);
        if unread_count == 0 {
            return Ok(PushPlan::Skip { reason: SkipReason::Read, last_inbox_seq: job.last_inbox_seq });
        }
        // The oldest message the device has not acked: the first one, or
        // (when it acked that) at most the newest one.
        let oldest_unacked_at = if device.cursor < job.first_inbox_seq { job.first_at_ms } else { job.last_at_ms };
        let deadline = oldest_unacked_at + delay_ms;
        if now_ms < deadline {
            return Ok(PushPlan::Later(deadline));
        }
        let message = if local {
            self.message(conversation, job.last_seq)?
        } else {
            self.inbox_copy(job.user_id, job.last_inbox_seq)?
        };
        let Some(message) = message else {
            return Ok(PushPlan::Discard("message missing"));
        };
        let text = match (&message.content, with_text) {
            (Some(pb::message::Content::Text(t)), true) => Some(t.clone()),
            _ => None,
        };
        Ok(PushPlan::Send(Box::new(PushNotice {
            user_id: job.user_id,
            device_id,
            conversation_id: conversation,
            seq: message.seq,
            sender_id: message.sender_id,
            sender_username: message.sender_username,
            sent_at_ms: message.sent_at_ms,
            unread_count,
            text,
            target,
            attempts: job.attempts,
            first_at_ms: job.first_at_ms,
            last_inbox_seq: job.last_inbox_seq,
        })))
    }

    /// The copy of a message in a user's inbox (a conversation of another
    /// partition).
    fn inbox_copy(&self, user: u64, inbox_seq: u64) -> Result<Option<pb::Message>, StoreError> {
        let record: Option<super::records::InboxRecord> =
            self.get_record(Ks::Inbox, &keys::inbox(UserId(user), super::keys::InboxSeq(inbox_seq)))?;
        Ok(match record.and_then(|r| r.event) {
            Some(super::records::inbox_record::Event::MessageCopy(m)) => Some(m),
            _ => None,
        })
    }

    /// How many devices have a push target (for the startup log).
    pub fn push_target_count(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.ks(Ks::PushTargets)?.iter() {
            kv.key()?;
            n += 1;
        }
        Ok(n)
    }
}

/// Where a target's notifications go: the webhook URL or the push
/// service endpoint.
fn target_place(t: &PushTargetRecord) -> Option<&str> {
    match &t.target {
        Some(push_target_record::Target::Webhook(w)) => Some(w.url.as_str()),
        Some(push_target_record::Target::WebPush(w)) => Some(w.endpoint.as_str()),
        None => None,
    }
}
