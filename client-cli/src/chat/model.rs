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
    /// The server could not take it now (a rate limit, a busy or failing
    /// server, spec §8.2): sent again (same client_msg_id) at `at`.
    Deferred {
        /// Why, for the screen.
        error: String,
        /// When it goes out again.
        at: Instant,
    },
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
    /// Times the server could not take it yet (the backoff grows with it).
    pub deferrals: u32,
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
    /// Gave up (e.g. not logged in).
    Failed(String),
    /// This device's token was revoked (or is no longer valid): nothing is
    /// retried until the user logs in again.
    SignedOut,
}

/// What the UI says when the device was signed out.
pub const SIGNED_OUT: &str = "this device was signed out; log in again with `confab login`";

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

/// A send the server could not take is tried again after at least this
/// long, doubling with each refusal up to `DEFER_MAX` (and never sooner
/// than the server's `retry_after_ms`).
const DEFER_START: Duration = Duration::from_millis(500);
const DEFER_MAX: Duration = Duration::from_secs(30);

/// How often the read receipts of the open group are asked for (groups get
/// no live receipts, spec §8.10).
const RECEIPTS_EVERY: Duration = Duration::from_secs(5);

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
    /// A session was up at least once (before that, the status bar says
    /// "connecting", not "reconnecting").
    ever_connected: bool,
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
            ever_connected: false,
        }
    }

    /// Who this user is, as the server said (the profile's name may be
    /// missing or stale).
    pub fn set_me(&mut self, me: &str, me_id: u64) {
        if !me.is_empty() {
            self.me = me.to_string();
        }
        if me_id != 0 {
            self.me_id = me_id;
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

    /// Whether a session was ever up in this run.
    pub fn ever_connected(&self) -> bool {
        self.ever_connected
    }

    /// Whether this device was signed out (revoked): nothing more is sent.
    pub fn signed_out(&self) -> bool {
        self.link == Link::SignedOut
    }

    /// The conversation shown as number `n` (1-based, list order).
    pub fn nth(&self, n: usize) -> Option<u64> {
        n.checked_sub(1).and_then(|i| self.order().get(i).copied())
    }

    /// The conversation that `query` names: its number in the list, `@peer`
    /// or a title (case-insensitive; a unique prefix will do).
    pub fn find(&self, query: &str) -> Result<u64, String> {
        let q = query.trim();
        if let Ok(n) = q.parse::<usize>() {
            return self
                .nth(n)
                .ok_or_else(|| format!("no conversation {n}: the list has {}", self.conversations.len()));
        }
        let q = q.to_lowercase();
        let order = self.order();
        let names: Vec<(u64, String)> =
            order.iter().filter_map(|id| self.conversations.get(id)).map(|c| (c.id, c.name().to_lowercase())).collect();
        let bare = |n: &str| n.strip_prefix('@').unwrap_or(n).to_string();
        if let Some((id, _)) = names.iter().find(|(_, n)| *n == q || bare(n) == bare(&q)) {
            return Ok(*id);
        }
        let matching: Vec<&(u64, String)> =
            names.iter().filter(|(_, n)| n.starts_with(&q) || bare(n).starts_with(&bare(&q))).collect();
        match matching.as_slice() {
            [(id, _)] => Ok(*id),
            [] => Err(format!("no conversation named \"{query}\"")),
            many => {
                let list: Vec<&str> = many.iter().take(4).map(|(_, n)| n.as_str()).collect();
                Err(format!("\"{query}\" could be {}", list.join(", ")))
            }
        }
    }

    /// Usernames for Tab completion in the open conversation: its members
    /// as last told (the receipts of a group, the peer of a DM) and the
    /// senders of loaded messages; this user last.
    pub fn member_names(&self) -> Vec<String> {
        let Some(c) = self.current() else { return Vec::new() };
        let mut names: BTreeSet<String> = c.receipts.keys().cloned().collect();
        if !c.peer.is_empty() {
            names.insert(c.peer.clone());
        }
        if c.receipts.is_empty() {
            names.extend(c.messages.values().map(|m| m.sender_username.clone()).filter(|n| !n.is_empty()));
        }
        names.remove(&self.me);
        let mut out: Vec<String> = names.into_iter().collect();
        out.push(self.me.clone());
        out
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
            self.selected = None;
            if let Some(&first) = self.order().first() {
                self.open(first);
            }
        }
    }

    /// Makes `id` the open conversation. A newly opened one keeps the
    /// reader's place: its first unread message gets the "new messages"
    /// divider (the one left loses it).
    fn open(&mut self, id: u64) {
        if self.selected == Some(id) {
            return;
        }
        if let Some(old) = self.selected.and_then(|o| self.conversations.get_mut(&o)) {
            old.divider = None;
        }
        if let Some(c) = self.conversations.get_mut(&id) {
            c.divider = (c.read_seq < c.last_seq && !c.left).then_some(c.read_seq + 1);
            c.receipts_at = None;
            self.selected = Some(id);
        }
    }

    /// One conversation's details (from open, create or get).
    pub fn handle_conversation(&mut self, c: &pb::Conversation) {
        self.learn(c.peer_user_id, &c.peer_username);
        self.conversations.entry(c.conversation_id).or_insert_with(|| Conversation::new(c.conversation_id)).merge(c);
        self.unknown.remove(&c.conversation_id);
        if self.selected.is_none() {
            self.open(c.conversation_id);
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
        if c.kind == Kind::Group && c.receipts.contains_key(&m.sender_username) {
            // Sending moves the sender's own read marker (§8.10).
            let r = c.receipts.entry(m.sender_username.clone()).or_default();
            *r = (*r).max(m.seq);
        }
        if let Some(pb::message::Content::Membership(ch)) = &m.content {
            // Members changed: the receipts (the member list) are asked
            // for again.
            c.receipts_at = None;
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
            if c.kind == Kind::Group && !r.username.is_empty() {
                let seq = c.receipts.entry(r.username.clone()).or_default();
                *seq = (*seq).max(r.read_seq);
            }
        }
    }

    /// A group's read receipts (one per current member): replaces the
    /// list, since members may have left.
    pub fn handle_receipts(&mut self, conversation_id: u64, list: &[pb::ReadReceipt]) {
        for r in list {
            self.learn(r.user_id, &r.username);
        }
        if let Some(c) = self.conversations.get_mut(&conversation_id) {
            c.receipts =
                list.iter().filter(|r| !r.username.is_empty()).map(|r| (r.username.clone(), r.read_seq)).collect();
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

    /// The server could not take a send now (RATE_LIMITED, SERVER_BUSY,
    /// INTERNAL, UNAVAILABLE …: any 4xx or 5xx answer; spec §8.2 keeps a
    /// message until `Sent` or a 3xx error). It goes out again with the
    /// same id once `retry_after` has passed and a backoff that doubles with
    /// each refusal (see [`ChatModel::poll_deferred`]).
    pub fn handle_send_deferred(&mut self, client_msg_id: &str, error: &str, retry_after: Duration, now: Instant) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.client_msg_id == client_msg_id) {
            let backoff = DEFER_START.saturating_mul(1 << p.deferrals.min(16)).min(DEFER_MAX);
            p.deferrals = p.deferrals.saturating_add(1);
            p.state = PendingState::Deferred { error: error.to_string(), at: now + retry_after.max(backoff) };
        }
    }

    /// The link changed. On connect, returns the sends to resend (same ids).
    pub fn set_link(&mut self, link: Link, now: Instant) -> Vec<SendRequest> {
        let connected = matches!(link, Link::Connected { .. });
        let was_down = matches!(self.link, Link::Reconnecting { .. }) && self.ever_connected;
        let signed_out = link == Link::SignedOut;
        self.link = link;
        if signed_out {
            // Nothing will go out from this device any more.
            for p in &mut self.pending {
                p.state = PendingState::Failed("signed out".into());
            }
            self.notice = None;
        }
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
        self.ever_connected = true;
        if was_down {
            self.set_notice("reconnected", false, now);
        } else {
            self.clear_error_notice();
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

    /// Something worked: an error shown from before no longer applies.
    pub fn clear_error_notice(&mut self) {
        if self.notice.as_ref().is_some_and(|n| n.error) {
            self.notice = None;
        }
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
        self.open(conversation_id);
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
        self.open(order[next]);
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
        if self.signed_out() {
            return Err("not sent: signed out".into());
        }
        let state = if self.connected() { PendingState::Sending } else { PendingState::Waiting };
        let p = PendingSend { client_msg_id, conversation_id: c.id, text: text.to_string(), state, deferrals: 0 };
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
        if !self.connected() {
            return None;
        }
        let c = self.selected.and_then(|id| self.conversations.get_mut(&id))?;
        // Opening at the first unread needs it loaded, on screen or not.
        if !at_top && !c.divider_pending() {
            return None;
        }
        if c.history_loading || c.history_failed || !c.older_available() {
            return None;
        }
        c.history_loading = true;
        Some((c.id, c.messages.first_key_value().map_or(0, |(&seq, _)| seq)))
    }

    /// The read marker to send for the open conversation, once per seq:
    /// `(conversation, seq)`. `shown`: the newest message of it that the
    /// screen has shown (`(conversation, seq)`); nothing newer is marked.
    pub fn poll_mark_read(&mut self, shown: Option<(u64, u64)>) -> Option<(u64, u64)> {
        if !self.focused || !self.connected() {
            return None;
        }
        let (id, shown) = shown?;
        let c = self.selected.filter(|&s| s == id).and_then(|id| self.conversations.get_mut(&id))?;
        let seq = shown.min(c.last_seq);
        if c.left || seq <= c.read_seq.max(c.read_requested) {
            return None;
        }
        c.read_requested = seq;
        Some((c.id, seq))
    }

    /// Deferred sends whose time has come, oldest first (none while
    /// disconnected: they wait for the link, then for their time).
    pub fn poll_deferred(&mut self, now: Instant) -> Vec<SendRequest> {
        if !self.connected() {
            return Vec::new();
        }
        let mut due = Vec::new();
        for p in &mut self.pending {
            if matches!(p.state, PendingState::Deferred { at, .. } if at <= now) {
                p.state = PendingState::Sending;
                due.push(SendRequest::from(&*p));
            }
        }
        due
    }

    /// The open group whose read receipts to ask for now: once when it is
    /// opened or its members change, then every few seconds.
    pub fn poll_receipts(&mut self, now: Instant) -> Option<u64> {
        if !self.connected() {
            return None;
        }
        let c = self.selected.and_then(|id| self.conversations.get_mut(&id))?;
        if c.kind != Kind::Group || c.left || c.receipts_at.is_some_and(|at| now.duration_since(at) < RECEIPTS_EVERY) {
            return None;
        }
        c.receipts_at = Some(now);
        Some(c.id)
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
