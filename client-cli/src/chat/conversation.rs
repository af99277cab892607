//! One conversation as `confab chat` holds it: the server's counters, the
//! loaded messages, local notes and who is typing. The model (`model`)
//! decides what goes in; this file keeps the per-conversation rules.

use std::collections::BTreeMap;
use std::time::Instant;

use confab_protocol::pb;

/// Direct conversation or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Two users.
    Direct,
    /// A titled group.
    Group,
}

/// A local line in a conversation (output of `/members`, `/presence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Shown after the message with this seq.
    pub after_seq: u64,
    /// The text.
    pub text: String,
}

/// One conversation as this user sees it.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Server id.
    pub id: u64,
    /// Direct or group.
    pub kind: Kind,
    /// Group title (empty for direct conversations).
    pub title: String,
    /// The other member of a direct conversation.
    pub peer: String,
    /// Highest seq known.
    pub last_seq: u64,
    /// This user's read marker.
    pub read_seq: u64,
    /// How far the DM partner has read (live receipts).
    pub peer_read_seq: u64,
    /// Sort key: newest message time, else creation time.
    pub activity_ms: i64,
    /// Current members (as last told).
    pub member_count: u32,
    /// This user left or was removed: read-only.
    pub left: bool,
    /// Loaded messages by seq.
    pub messages: BTreeMap<u64, pb::Message>,
    /// Local lines (command output), each after the seq it was written at.
    pub notes: Vec<Note>,
    /// Who is typing, until when.
    pub(super) typing: BTreeMap<String, Instant>,
    /// The server said nothing is older than the first loaded message.
    pub(super) history_exhausted: bool,
    /// A history request is in flight.
    pub(super) history_loading: bool,
    /// A history request failed: no automatic retry until reconnecting.
    pub(super) history_failed: bool,
    /// The read marker asked for (so it is asked for once).
    pub(super) read_requested: u64,
    /// The first unread seq when this conversation was opened: a "new
    /// messages" line is drawn above it until another one is opened.
    pub divider: Option<u64>,
    /// How far each member has read (groups, from `ReadReceiptsRequest`;
    /// the requester included): also the member list for completion.
    pub receipts: BTreeMap<String, u64>,
    /// When receipts were last asked for (`None`: not since it was opened).
    pub(super) receipts_at: Option<Instant>,
}

impl Conversation {
    pub(super) fn new(id: u64) -> Self {
        Conversation {
            id,
            kind: Kind::Group,
            title: String::new(),
            peer: String::new(),
            last_seq: 0,
            read_seq: 0,
            peer_read_seq: 0,
            activity_ms: 0,
            member_count: 0,
            left: false,
            messages: BTreeMap::new(),
            notes: Vec::new(),
            typing: BTreeMap::new(),
            history_exhausted: false,
            history_loading: false,
            history_failed: false,
            read_requested: 0,
            divider: None,
            receipts: BTreeMap::new(),
            receipts_at: None,
        }
    }

    /// Unread messages: `last_seq − read_seq`.
    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }

    /// The name shown in lists: `@peer` or the title.
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Direct => format!("@{}", self.peer),
            Kind::Group if self.title.is_empty() => format!("#{}", self.id),
            Kind::Group => self.title.clone(),
        }
    }

    /// Whether older messages than the loaded ones may exist on the server.
    pub fn older_available(&self) -> bool {
        if self.history_exhausted {
            return false;
        }
        match self.messages.first_key_value() {
            Some((&first, _)) => first > 1,
            None => self.last_seq > 0,
        }
    }

    /// Whether the first unread message (the divider's) is still to be
    /// loaded: history is fetched down to it before the view settles.
    pub fn divider_pending(&self) -> bool {
        let Some(d) = self.divider else { return false };
        self.older_available() && self.messages.first_key_value().is_none_or(|(&first, _)| first > d)
    }

    /// Whether a history page is being fetched.
    pub fn loading(&self) -> bool {
        self.history_loading
    }

    /// Users typing now, by name.
    pub fn typing(&self, now: Instant) -> Vec<&str> {
        self.typing.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.as_str()).collect()
    }

    /// The newest loaded seq (0: nothing loaded).
    pub fn newest_loaded(&self) -> u64 {
        self.messages.last_key_value().map_or(0, |(&seq, _)| seq)
    }

    /// Takes the server's view of the conversation: counters only move
    /// forward, names and member count are replaced.
    pub(super) fn merge(&mut self, c: &pb::Conversation) {
        self.kind = if c.kind == pb::ConversationKind::Direct as i32 { Kind::Direct } else { Kind::Group };
        self.title.clone_from(&c.title);
        self.peer.clone_from(&c.peer_username);
        self.member_count = c.member_count;
        self.last_seq = self.last_seq.max(c.last_seq);
        self.read_seq = self.read_seq.max(c.read_seq);
        self.activity_ms = self.activity_ms.max(c.activity_ms);
        self.left = false;
        // Only into an empty conversation: elsewhere the events since the
        // loaded messages fill the range, and this would punch a hole.
        if self.messages.is_empty()
            && let Some(m) = &c.last_message
        {
            self.messages.insert(m.seq, m.clone());
        }
    }

    /// Forgets the loaded messages, so that history loads again below the
    /// next one. For a live message that does not continue them: this user
    /// was not a member for the seqs between (removed, then added again).
    pub(super) fn restart_loaded(&mut self) {
        self.messages.clear();
        self.history_exhausted = false;
        self.history_failed = false;
    }

    /// Whether a history page that answered `before_seq` (0: the newest
    /// page) extends the loaded messages without a hole: it was asked for
    /// below the oldest one, or, for the newest page, reaches it.
    pub(super) fn accepts_page(&self, before_seq: u64, page: &[pb::Message]) -> bool {
        let Some((&first, _)) = self.messages.first_key_value() else { return true };
        match (before_seq, page.last()) {
            (0, Some(newest)) => newest.seq + 1 >= first,
            (0, None) => false,
            (b, _) => b == first,
        }
    }
}
