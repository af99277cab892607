//! The state of `confab chat`, with no I/O and no clock: server events and
//! user actions come in through `handle_*` and the action methods, what the
//! app should ask the server for comes out of the `poll_*` methods, and the
//! view reads the getters. Time is an argument (`Instant`), so tests drive it.
//!
//! Invariants the rest of the UI relies on:
//! - messages are keyed by `(conversation_id, seq)`: a message that arrives
//!   twice (live and from sync, or from `Sent` and live) is stored once;
//! - the loaded messages of a conversation run without holes from the first
//!   loaded seq to the newest (live and synced events fill the top, history
//!   pages extend the bottom; a live message that would leave a hole
//!   restarts the loaded range, and a page that does not reach it is
//!   dropped);
//! - read markers and `last_seq` only move forward; unread = `last_seq −
//!   read_seq`, and one's own messages move one's own read marker.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use confab_client::TransportKind;
use confab_protocol::pb;

use super::conversation::{Conversation, Kind, Note};

/// State of a message sent from here and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingState {
    /// The request is on its way.
    Sending,
    /// The connection is down; sent again (same client_msg_id) on reconnect.
    Waiting,
    /// The server refused it; Ctrl-R sends it again with the same id.
    Failed(String),
}

/// An optimistic send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSend {
    /// The idempotency key: the same for every attempt.
    pub client_msg_id: String,
    /// Where.
    pub conversation_id: u64,
    /// What.
    pub text: String,
    /// How it is going.
    pub state: PendingState,
}

/// What a send request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// Where.
    pub conversation_id: u64,
    /// The idempotency key.
    pub client_msg_id: String,
    /// What.
    pub text: String,
}

impl From<&PendingSend> for SendRequest {
    fn from(p: &PendingSend) -> Self {
        SendRequest { conversation_id: p.conversation_id, client_msg_id: p.client_msg_id.clone(), text: p.text.clone() }
    }
}

/// What a retry of a failed send does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Send this now.
    Now(SendRequest),
    /// Disconnected: it goes out when the link is back.
    OnReconnect,
    /// No failed send.
    Nothing,
}

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceInfo {
    /// Online, away or offline.
    pub state: pb::PresenceState,
    /// When last online (0: online now or never seen).
    pub last_seen_ms: i64,
}

/// The link to the server, for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// First connection in progress.
    Connecting,
    /// Live session.
    Connected {
        /// `host:port`.
        server: String,
        /// QUIC or TCP.
        transport: TransportKind,
    },
    /// Lost; the next attempt is at `retry_at`.
    Reconnecting {
        /// Why the last session (or attempt) ended.
        reason: String,
        /// When the next attempt starts.
        retry_at: Instant,
        /// Attempts since the link was last up (1: the first retry).
        attempt: u32,
    },
    /// Gave up (e.g. the token was revoked).
    Failed(String),
}

/// A transient line for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// An error (shown in red).
    pub error: bool,
    /// Shown until then.
    pub until: Instant,
}

const NOTICE_FOR: Duration = Duration::from_secs(8);

/// Everything `confab chat` shows.
#[derive(Debug)]
pub struct ChatModel {
    me: String,
    me_id: u64,
    conversations: HashMap<u64, Conversation>,
    selected: Option<u64>,
    pending: Vec<PendingSend>,
    presence: HashMap<String, PresenceInfo>,
    link: Link,
    notice: Option<Notice>,
    /// Conversations known only from a message: their details are wanted.
    unknown: BTreeSet<u64>,
    /// User names by id, from conversations, messages and presence: a
    /// presence update is matched by id when it comes without a name.
    names: HashMap<u64, String>,
    /// Users whose presence this session asked for: subscriptions belong
    /// to a session (spec §9.2), so this empties when the link drops.
    subscribed: BTreeSet<String>,
    /// The terminal has focus (reading marks messages read).
    focused: bool,
}

impl ChatModel {
    /// An empty model for this user.
    pub fn new(me: &str, me_id: u64) -> Self {
        ChatModel {
            me: me.to_string(),
            me_id,
            conversations: HashMap::new(),
            selected: None,
            pending: Vec::new(),
            presence: HashMap::new(),
            link: Link::Connecting,
            notice: None,
            unknown: BTreeSet::new(),
            names: HashMap::new(),
            subscribed: BTreeSet::new(),
            focused: true,
        }
    }

    // --- Getters -----------------------------------------------------------

    /// This user's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Conversation ids, most recently active first (ties: higher id first).
    pub fn order(&self) -> Vec<u64> {
        let mut v: Vec<&Conversation> = self.conversations.values().collect();
        v.sort_by(|a, b| b.activity_ms.cmp(&a.activity_ms).then(b.id.cmp(&a.id)));
        v.into_iter().map(|c| c.id).collect()
    }

    /// One conversation.
    pub fn conversation(&self, id: u64) -> Option<&Conversation> {
        self.conversations.get(&id)
    }

    /// The open conversation's id.
    pub fn selected(&self) -> Option<u64> {
        self.selected
    }

    /// The open conversation.
    pub fn current(&self) -> Option<&Conversation> {
        self.selected.and_then(|id| self.conversations.get(&id))
    }

    /// Unconfirmed sends of a conversation, oldest first.
    pub fn pending(&self, conversation_id: u64) -> impl Iterator<Item = &PendingSend> {
        self.pending.iter().filter(move |p| p.conversation_id == conversation_id)
    }

    /// Sends whose outcome is not known yet (not the failed ones): quitting
    /// now may lose them.
    pub fn unconfirmed(&self) -> usize {
        self.pending.iter().filter(|p| !matches!(p.state, PendingState::Failed(_))).count()
    }

    /// A user's presence, if known.
    pub fn presence(&self, username: &str) -> Option<PresenceInfo> {
        self.presence.get(username).copied()
    }

    /// The link state.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Whether the session is live.
    pub fn connected(&self) -> bool {
        matches!(self.link, Link::Connected { .. })
    }

    /// The notice to show now, if any.
    pub fn notice(&self, now: Instant) -> Option<&Notice> {
        self.notice.as_ref().filter(|n| n.until > now)
    }

    // --- Server events -------------------------------------------------------

    /// A conversation list (on every connect). `rebuild`: the server's data
    /// is not what this state was built from; start over.
    pub fn handle_snapshot(&mut self, list: &[pb::Conversation], rebuild: bool) {
        if rebuild {
            self.conversations.clear();
        }
        for c in list {
            self.learn(c.peer_user_id, &c.peer_username);
            self.conversations
                .entry(c.conversation_id)
                .or_insert_with(|| Conversation::new(c.conversation_id))
                .merge(c);
            self.unknown.remove(&c.conversation_id);
        }
        if self.selected.is_none_or(|id| !self.conversations.contains_key(&id)) {
            self.selected = self.order().first().copied();
        }
    }

    /// One conversation's details (from open, create or get).
    pub fn handle_conversation(&mut self, c: &pb::Conversation) {
        self.learn(c.peer_user_id, &c.peer_username);
        self.conversations.entry(c.conversation_id).or_insert_with(|| Conversation::new(c.conversation_id)).merge(c);
        self.unknown.remove(&c.conversation_id);
        if self.selected.is_none() {
            self.selected = Some(c.conversation_id);
        }
    }

    /// An inbox event, applied in inbox_seq order (the tracker's job).
    pub fn handle_inbox(&mut self, e: &pb::InboxEvent) {
        use pb::inbox_event::Event as E;
        match &e.event {
            Some(E::Message(m)) => {
                // Inbox events of a conversation come in seq order with no
                // holes while this user is a member; a jump means it was
                // not one in between (removed, then added again).
                if let Some(c) = self.conversations.get_mut(&m.conversation_id) {
                    let top = c.newest_loaded();
                    if top > 0 && m.seq > top + 1 {
                        c.restart_loaded();
                    }
                }
                self.handle_message(m)
            }
            Some(E::Read(r)) => self.handle_read_state(r),
            Some(E::Joined(c)) => self.handle_conversation(c),
            Some(E::Left(l)) => {
                if let Some(c) = self.conversations.get_mut(&l.conversation_id) {
                    c.left = true;
                    c.typing.clear();
                }
            }
            None => {}
        }
    }

    /// A message (live, synced, from history or from `Sent`).
    pub fn handle_message(&mut self, m: &pb::Message) {
        self.learn(m.sender_id, &m.sender_username);
        if m.sender_id == self.me_id && !m.client_msg_id.is_empty() {
            self.pending.retain(|p| p.client_msg_id != m.client_msg_id);
        }
        let me_id = self.me_id;
        let me = self.me.clone();
        let c = self.conversations.entry(m.conversation_id).or_insert_with(|| {
            self.unknown.insert(m.conversation_id);
            Conversation::new(m.conversation_id)
        });
        // Membership side effects only for changes newer than the state this
        // conversation was last told (a history page replays old ones).
        let newer = m.seq > c.last_seq;
        c.last_seq = c.last_seq.max(m.seq);
        c.activity_ms = c.activity_ms.max(m.sent_at_ms);
        if m.sender_id == me_id {
            c.read_seq = c.read_seq.max(m.seq);
        }
        if c.messages.insert(m.seq, m.clone()).is_some() || !newer {
            return; // seen before, or older than what the counters reflect
        }
        // A new message from someone ends their typing indicator (§9.4).
        c.typing.remove(&m.sender_username);
        if let Some(pb::message::Content::Membership(ch)) = &m.content {
            let users = || ch.users.iter().map(|u| u.username.as_str());
            match pb::MembershipAction::try_from(ch.action) {
                Ok(pb::MembershipAction::Renamed) => c.title.clone_from(&ch.title),
                Ok(pb::MembershipAction::Added) => c.member_count += ch.users.len() as u32,
                Ok(pb::MembershipAction::Removed) => {
                    c.member_count = c.member_count.saturating_sub(1);
                    if users().any(|u| u == me) {
                        c.left = true;
                    }
                }
                Ok(pb::MembershipAction::Left) => {
                    c.member_count = c.member_count.saturating_sub(1);
                    if m.sender_id == me_id {
                        c.left = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// A history page that answered `before_seq` (0: the newest page).
    /// A page that no longer fits below the loaded messages (they were
    /// restarted meanwhile) is dropped, and the next poll asks again.
    pub fn handle_history(&mut self, conversation_id: u64, before_seq: u64, page: &pb::HistoryPage) {
        let Some(c) = self.conversations.get_mut(&conversation_id) else { return };
        c.history_loading = false;
        if !c.accepts_page(before_seq, &page.messages) {
            return;
        }
        if !page.has_more {
            c.history_exhausted = true;
        }
        for m in &page.messages {
            self.handle_message(m);
        }
    }

    /// A history request went down with the connection: asked for again
    /// once the link is back.
    pub fn handle_history_lost(&mut self, conversation_id: u64) {
        if let Some(c) = self.conversations.get_mut(&conversation_id) {
            c.history_loading = false;
        }
    }

    /// A history request failed (the server refused it).
    pub fn handle_history_error(&mut self, conversation_id: u64, error: &str, now: Instant) {
        if let Some(c) = self.conversations.get_mut(&conversation_id) {
            c.history_loading = false;
            c.history_failed = true;
        }
        self.set_notice(format!("history: {error}"), true, now);
    }

    /// This user's read marker moved (from any device).
    pub fn handle_read_state(&mut self, r: &pb::ReadState) {
        if let Some(c) = self.conversations.get_mut(&r.conversation_id) {
            c.read_seq = c.read_seq.max(r.read_seq);
            c.last_seq = c.last_seq.max(r.last_seq);
        }
    }

    /// Moving the read marker failed: ask again later.
    pub fn handle_mark_read_error(&mut self, conversation_id: u64) {
        if let Some(c) = self.conversations.get_mut(&conversation_id) {
            c.read_requested = c.read_seq;
        }
    }

    /// The DM partner read up to a seq.
    pub fn handle_read_receipt(&mut self, r: &pb::ReadReceipt) {
        if r.user_id == self.me_id {
            return;
        }
        if let Some(c) = self.conversations.get_mut(&r.conversation_id) {
            c.peer_read_seq = c.peer_read_seq.max(r.read_seq);
        }
    }

    /// A presence update or answer.
    pub fn handle_presence(&mut self, p: &pb::Presence) {
        self.learn(p.user_id, &p.username);
        let name = if p.username.is_empty() { self.names.get(&p.user_id).cloned() } else { Some(p.username.clone()) };
        let Some(name) = name else { return };
        if self.connected() {
            self.subscribed.insert(name.clone());
        }
        let state = pb::PresenceState::try_from(p.state).unwrap_or(pb::PresenceState::Offline);
        self.presence.insert(name, PresenceInfo { state, last_seen_ms: p.last_seen_ms });
    }

    fn learn(&mut self, user_id: u64, username: &str) {
        if user_id != 0 && !username.is_empty() && self.names.get(&user_id).is_none_or(|n| n != username) {
            self.names.insert(user_id, username.to_string());
        }
    }

    /// Someone is typing; shown until `expires_in_ms` from `now`.
    pub fn handle_typing(&mut self, t: &pb::TypingEvent, now: Instant) {
        if t.user_id == self.me_id {
            return;
        }
        if let Some(c) = self.conversations.get_mut(&t.conversation_id) {
            c.typing.insert(t.username.clone(), now + Duration::from_millis(u64::from(t.expires_in_ms)));
        }
    }

    /// The server confirmed a send (also for `duplicate: true`).
    pub fn handle_sent(&mut self, m: &pb::Message) {
        self.handle_message(m);
    }

    /// A send failed. `retryable`: the connection went away (the outcome is
    /// unknown), so it is sent again with the same id on reconnect.
    pub fn handle_send_error(&mut self, client_msg_id: &str, error: &str, retryable: bool) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.client_msg_id == client_msg_id) {
            p.state = if retryable { PendingState::Waiting } else { PendingState::Failed(error.to_string()) };
        }
    }

    /// The link changed. On connect, returns the sends to resend (same ids).
    pub fn set_link(&mut self, link: Link, now: Instant) -> Vec<SendRequest> {
        let connected = matches!(link, Link::Connected { .. });
        let was_down = matches!(self.link, Link::Reconnecting { .. });
        self.link = link;
        for c in self.conversations.values_mut() {
            // Typing events stop with the session; a request in flight on
            // it gets no answer.
            c.typing.clear();
            c.history_loading = false;
            if connected {
                c.history_failed = false;
                c.read_requested = c.read_seq;
            }
        }
        if !connected {
            self.subscribed.clear();
            return Vec::new();
        }
        if was_down {
            self.set_notice("reconnected", false, now);
        }
        let mut resend = Vec::new();
        for p in &mut self.pending {
            if p.state == PendingState::Waiting {
                p.state = PendingState::Sending;
                resend.push(SendRequest::from(&*p));
            }
        }
        resend
    }

    // --- User actions ------------------------------------------------------

    /// Shows a line in the status bar for a while.
    pub fn set_notice(&mut self, text: impl Into<String>, error: bool, now: Instant) {
        self.notice = Some(Notice { text: text.into(), error, until: now + NOTICE_FOR });
    }

    /// Clears the status bar notice.
    pub fn clear_notice(&mut self) {
        self.notice = None;
    }

    /// Adds a local line to a conversation.
    pub fn note(&mut self, conversation_id: u64, text: impl Into<String>) {
        if let Some(c) = self.conversations.get_mut(&conversation_id) {
            let after_seq = c.last_seq;
            c.notes.push(Note { after_seq, text: text.into() });
        }
    }

    /// Opens a conversation.
    pub fn select(&mut self, conversation_id: u64) {
        if self.conversations.contains_key(&conversation_id) {
            self.selected = Some(conversation_id);
        }
    }

    /// Opens the next (`step` 1) or previous (`step` −1) conversation in list
    /// order, wrapping around.
    pub fn select_step(&mut self, step: isize) {
        let order = self.order();
        if order.is_empty() {
            return;
        }
        let at = self.selected.and_then(|id| order.iter().position(|&o| o == id));
        let next = match at {
            Some(i) => (i as isize + step).rem_euclid(order.len() as isize) as usize,
            None => 0,
        };
        self.selected = Some(order[next]);
    }

    /// Whether the terminal has focus.
    pub fn set_focused(&mut self, focused: bool) {
        self.focused = focused;
    }

    /// Queues an optimistic send to the open conversation. Returns the
    /// request to make now (none while disconnected: it waits).
    pub fn send(&mut self, text: &str, client_msg_id: String) -> Result<Option<SendRequest>, String> {
        let Some(c) = self.current() else { return Err("no conversation open: /dm @user to start one".into()) };
        if c.left {
            return Err("you are no longer a member of this conversation".into());
        }
        let state = if self.connected() { PendingState::Sending } else { PendingState::Waiting };
        let p = PendingSend { client_msg_id, conversation_id: c.id, text: text.to_string(), state };
        let request = (p.state == PendingState::Sending).then(|| SendRequest::from(&p));
        self.pending.push(p);
        Ok(request)
    }

    /// Takes the most recent failed send for another try (same id).
    pub fn retry_failed(&mut self) -> Retry {
        let connected = self.connected();
        let Some(p) = self.pending.iter_mut().rev().find(|p| matches!(p.state, PendingState::Failed(_))) else {
            return Retry::Nothing;
        };
        if connected {
            p.state = PendingState::Sending;
            Retry::Now(SendRequest::from(&*p))
        } else {
            p.state = PendingState::Waiting;
            Retry::OnReconnect
        }
    }

    /// Drops the most recent failed send (one that cannot succeed as it
    /// is). Returns whether there was one.
    pub fn discard_failed(&mut self) -> bool {
        let Some(i) = self.pending.iter().rposition(|p| matches!(p.state, PendingState::Failed(_))) else {
            return false;
        };
        self.pending.remove(i);
        true
    }

    // --- Output: what to ask the server for ----------------------------------

    /// The history page the open conversation needs: `(conversation,
    /// before_seq)` (0: the newest page). `at_top`: the view shows the
    /// oldest loaded line (or is not full).
    pub fn poll_history(&mut self, at_top: bool) -> Option<(u64, u64)> {
        if !at_top || !self.connected() {
            return None;
        }
        let c = self.selected.and_then(|id| self.conversations.get_mut(&id))?;
        if c.history_loading || c.history_failed || !c.older_available() {
            return None;
        }
        c.history_loading = true;
        Some((c.id, c.messages.first_key_value().map_or(0, |(&seq, _)| seq)))
    }

    /// The read marker to send for the open conversation, once per seq:
    /// `(conversation, seq)`.
    pub fn poll_mark_read(&mut self) -> Option<(u64, u64)> {
        if !self.focused || !self.connected() {
            return None;
        }
        let c = self.selected.and_then(|id| self.conversations.get_mut(&id))?;
        if c.left || c.last_seq <= c.read_seq.max(c.read_requested) {
            return None;
        }
        c.read_requested = c.last_seq;
        Some((c.id, c.last_seq))
    }

    /// DM partners whose presence this session has not asked for yet.
    pub fn poll_subscribe(&mut self) -> Vec<String> {
        if !self.connected() {
            return Vec::new();
        }
        let wanted: BTreeSet<String> = self
            .conversations
            .values()
            .filter(|c| c.kind == Kind::Direct && !c.peer.is_empty() && !self.subscribed.contains(&c.peer))
            .map(|c| c.peer.clone())
            .collect();
        self.subscribed.extend(wanted.iter().cloned());
        wanted.into_iter().collect()
    }

    /// A conversation known only from a message, whose details to fetch.
    pub fn poll_unknown(&mut self) -> Option<u64> {
        if !self.connected() {
            return None;
        }
        self.unknown.pop_first()
    }

    /// Drops expired typing indicators.
    pub fn expire(&mut self, now: Instant) {
        for c in self.conversations.values_mut() {
            c.typing.retain(|_, until| *until > now);
        }
    }
}

#[cfg(test)]
mod tests;
