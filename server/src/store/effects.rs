//! What a command does to users (and conversations) of other partitions:
//! inbox entries, memberships, read markers.
//!
//! A command names the effect with [`Tx::give_user`] (or
//! [`Tx::read_marker`]). When the target lives in the group's own
//! partition — always, on one node — the effect is applied at once, in the
//! same transaction, exactly as the command used to write it. Otherwise it
//! is queued as an [`EffectRecord`] for the target partition, whose owner
//! applies it through its own writer ([`Tx::apply_effects`]), once: each
//! partition records how far it has applied the effects of every other.

use confab_protocol::{framing, pb};
use prost::Message as _;

use super::keys::{ConversationId, InboxSeq, UserId};
use super::records::{
    EffectBatch, EffectRecord, InboxMessage, InboxRecord, MemberRecord, MessageRef, ReadMarker, UserConversationRecord,
    effect_record, inbox_record,
};
use super::tx::Tx;
use super::writer::Deliveries;
use super::{CommandError, Ks, StoreError, keys};

/// An effect on one user, as a command names it.
pub(crate) enum UserEffect<'a> {
    /// A message for the user's inbox (`encoded`: the message, encoded
    /// once for every recipient); push jobs for the user's devices when
    /// `push` (and the user is not the sender).
    Message { message: &'a pb::Message, encoded: &'a [u8], push: bool },
    /// The user joined: their view of the conversation.
    Joined(Box<pb::Conversation>),
    /// The user left or was removed.
    Left(pb::ConversationLeft),
}

impl Tx<'_> {
    /// Applies `effect` to `user` now when the user is in this partition,
    /// else queues it for the user's partition.
    pub(crate) fn give_user(
        &mut self,
        user: u64,
        effect: UserEffect<'_>,
        out: &mut Deliveries,
    ) -> Result<(), CommandError> {
        if self.is_local(user) {
            return match effect {
                UserEffect::Message { message, encoded, push } => self.apply_message(user, message, encoded, push, out),
                UserEffect::Joined(view) => self.apply_joined(user, *view, out),
                UserEffect::Left(left) => self.apply_left(user, left, out),
            };
        }
        let effect = match effect {
            UserEffect::Message { message, push, .. } => {
                effect_record::Effect::Message(InboxMessage { message: Some(message.clone()), push })
            }
            UserEffect::Joined(view) => effect_record::Effect::Joined(*view),
            UserEffect::Left(left) => effect_record::Effect::Left(left),
        };
        let partition = self.partition_of(user);
        self.send_effect(partition, EffectRecord { target_ids: vec![user], effect: Some(effect) });
        Ok(())
    }

    /// Tells the conversation's partition, when it is another, that `user`
    /// read up to `read_seq` (for read receipts there).
    pub(crate) fn read_marker(&mut self, conversation: u64, user: u64, read_seq: u64) {
        if self.is_local(conversation) {
            return;
        }
        let effect = effect_record::Effect::ReadMarker(ReadMarker { user_id: user, read_seq });
        let partition = self.partition_of(conversation);
        self.send_effect(partition, EffectRecord { target_ids: vec![conversation], effect: Some(effect) });
    }

    /// Writes an inbox event for `user` and queues its live delivery.
    pub(super) fn inbox_event(
        &mut self,
        user: u64,
        record: InboxRecord,
        live: pb::inbox_event::Event,
        out: &mut Deliveries,
    ) -> Result<u64, CommandError> {
        let inbox_seq = self.next_inbox_seq(user)?;
        let value = self.encode(&record);
        self.put_unread(Ks::Inbox, &keys::inbox(UserId(user), InboxSeq(inbox_seq)), value);
        out.push(user, event_frame(inbox_seq, live));
        Ok(inbox_seq)
    }

    fn apply_message(
        &mut self,
        user: u64,
        message: &pb::Message,
        encoded: &[u8],
        push: bool,
        out: &mut Deliveries,
    ) -> Result<(), CommandError> {
        let (conversation, seq) = (message.conversation_id, message.seq);
        let local = self.is_local(conversation);
        let inbox_seq = self.next_inbox_seq(user)?;
        let event = if local {
            inbox_record::Event::Message(MessageRef { conversation_id: conversation, seq })
        } else {
            inbox_record::Event::MessageCopy(message.clone())
        };
        let record = InboxRecord { event: Some(event) };
        let value = self.encode(&record);
        self.put_unread(Ks::Inbox, &keys::inbox(UserId(user), InboxSeq(inbox_seq)), value);
        out.push(user, framing::message_event_frame(inbox_seq, encoded));
        let sender = user == message.sender_id;
        // The sender has read their own message; a conversation in another
        // partition has its last seq remembered here.
        if sender || !local {
            let key = keys::user_conversation(UserId(user), ConversationId(conversation));
            if let Some(mut m) = self.get_record::<UserConversationRecord>(Ks::UserConversations, &key)? {
                if sender {
                    m.read_seq = m.read_seq.max(seq);
                }
                if !local {
                    m.last_seq = m.last_seq.max(seq);
                }
                self.put_record(Ks::UserConversations, &key, &m);
            }
        }
        if push
            && !sender
            && let Some(timing) = self.push_timing()
        {
            let queued = self.queue_pushes(0, &[user], conversation, seq, message.sent_at_ms, timing);
            self.count_pushes(queued);
        }
        Ok(())
    }

    fn apply_joined(&mut self, user: u64, view: pb::Conversation, out: &mut Deliveries) -> Result<(), CommandError> {
        let conversation = view.conversation_id;
        let mine = UserConversationRecord {
            read_seq: view.read_seq,
            left_seq: 0,
            joined_seq: view.last_seq,
            last_seq: view.last_seq,
            kind: view.kind,
            peer_user_id: view.peer_user_id,
        };
        self.put_record(
            Ks::UserConversations,
            &keys::user_conversation(UserId(user), ConversationId(conversation)),
            &mine,
        );
        let record = InboxRecord { event: Some(inbox_record::Event::Joined(view.clone())) };
        self.inbox_event(user, record, pb::inbox_event::Event::Joined(view), out)?;
        Ok(())
    }

    fn apply_left(&mut self, user: u64, left: pb::ConversationLeft, out: &mut Deliveries) -> Result<(), CommandError> {
        let key = keys::user_conversation(UserId(user), ConversationId(left.conversation_id));
        let mut mine = self.get_record::<UserConversationRecord>(Ks::UserConversations, &key)?.unwrap_or_default();
        mine.left_seq = left.seq;
        mine.read_seq = mine.read_seq.max(left.seq);
        mine.last_seq = mine.last_seq.max(left.seq);
        self.put_record(Ks::UserConversations, &key, &mine);
        let record = InboxRecord { event: Some(inbox_record::Event::Left(left)) };
        self.inbox_event(user, record, pb::inbox_event::Event::Left(left), out)?;
        Ok(())
    }

    fn apply_read_marker(&mut self, conversation: u64, marker: ReadMarker) -> Result<(), StoreError> {
        let key = keys::member(ConversationId(conversation), UserId(marker.user_id));
        if let Some(mut m) = self.get_record::<MemberRecord>(Ks::Members, &key)?
            && marker.read_seq > m.read_seq
        {
            m.read_seq = marker.read_seq;
            self.put_record(Ks::Members, &key, &m);
        }
        Ok(())
    }

    /// Applies a batch of effects from partition `source`, read at
    /// `position` (the source stream's sequence) — unless this partition
    /// has applied it already. Returns whether it was applied.
    pub fn apply_effects(
        &mut self,
        source: u32,
        position: u64,
        after: u64,
        batch: &EffectBatch,
        out: &mut Deliveries,
    ) -> Result<bool, CommandError> {
        let key = keys::effects_from(self.scope_partition(), source);
        let done = self.get(Ks::Meta, &key)?.and_then(|v| keys::read_u64(&v, 0)).unwrap_or(0);
        if position <= done {
            return Ok(false);
        }
        if done != after {
            // The batch before this one (at `after`) is not applied: it
            // failed while this one was queued. Applying this one would
            // skip it for good; the consumer starts again from `done`.
            return Err(CommandError::Store(StoreError::WriteFailed(format!(
                "effects from partition {source} out of order: {after} expected applied, {done} is"
            ))));
        }
        for effect in &batch.effects {
            let Some(kind) = &effect.effect else { continue };
            for &target in &effect.target_ids {
                match kind {
                    effect_record::Effect::Message(m) => {
                        let Some(message) = &m.message else { continue };
                        let encoded = message.encode_to_vec();
                        self.apply_message(target, message, &encoded, m.push, out)?;
                    }
                    effect_record::Effect::Joined(view) => self.apply_joined(target, view.clone(), out)?,
                    effect_record::Effect::Left(left) => self.apply_left(target, *left, out)?,
                    effect_record::Effect::ReadMarker(marker) => self.apply_read_marker(target, *marker)?,
                }
            }
        }
        self.put(Ks::Meta, &key, position.to_be_bytes().to_vec());
        Ok(true)
    }
}

fn event_frame(inbox_seq: u64, event: pb::inbox_event::Event) -> bytes::Bytes {
    framing::frame_bytes(&pb::ServerFrame {
        request_id: 0,
        body: Some(pb::server_frame::Body::Event(pb::InboxEvent { inbox_seq, event: Some(event) })),
    })
}
