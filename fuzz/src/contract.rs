//! What a client may rely on, checked on everything a server session sends
//! (spec/PROTOCOL.md §3, §4.1, §4.5, §4.4, §5, §8): the harness panics with
//! the rule's name the moment a frame breaks one, so the fuzzer reports
//! broken contracts, not only crashes.
//!
//! A [`Contract`] sees both directions of one connection, in order: the
//! client's bytes as they are written (parsed exactly as the server parses
//! them, so it knows which request ids the server has been asked about and
//! what it was asked), then each server frame as it arrives.

use std::collections::HashMap;

use bytes::BytesMut;
use confab_protocol::{
    ErrorCode, FrameDecoder,
    framing::{decode_client_frame, decode_server_frame, scan_request_id},
    limits::DEFAULT_MAX_FRAME_BYTES,
    pb::{self, client_frame::Body, message::Content, server_frame::Body as Reply},
};
use prost::Message as _;

/// Whether the session is authenticated, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    No,
    Yes,
    /// A response whose request the client cannot tell apart (a reused id)
    /// may or may not have changed it: checks that depend on it are off
    /// until the next unambiguous AuthOk or logout.
    Unknown,
}

/// One frame the server parsed, under its request_id.
#[derive(Debug, Clone)]
struct Asked {
    /// The body, or `None` for a malformed frame or one without a body.
    body: Option<Body>,
    /// Whether the server owes it a response (§4.5: all but typing).
    owed: bool,
}

/// The user a token or login should authenticate as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user_id: u64,
    /// The device.
    pub device_id: u64,
}

/// The checks for one connection. See the module docs.
#[derive(Debug)]
pub struct Contract {
    label: String,
    /// Tokens of the world's devices, to check what Resume authenticates.
    tokens: HashMap<String, Identity>,
    // The client's side, as the server reads it.
    mirror: FrameDecoder,
    mirror_buf: BytesMut,
    mirror_broken: bool,
    asked: HashMap<u64, Vec<Asked>>,
    /// Frames that can only be answered with request_id 0 (id 0, or an id
    /// the server cannot read).
    asked_on_zero: usize,
    // The server's side.
    inbuf: BytesMut,
    decoder: FrameDecoder,
    answered: HashMap<u64, usize>,
    answered_on_zero: usize,
    welcomed: bool,
    auth: Auth,
    last_live_seq: u64,
    fatal: Option<ErrorCode>,
    eof: bool,
    hung_up: bool,
    frames: usize,
    /// Conversation ids seen in responses and events, for [`ConvRef::Seen`].
    ///
    /// [`ConvRef::Seen`]: crate::script::ConvRef::Seen
    pub seen_conversations: Vec<u64>,
}

impl Contract {
    /// A connection's contract; `tokens` maps the world's tokens to whom
    /// they belong.
    pub fn new(label: String, tokens: HashMap<String, Identity>) -> Self {
        Contract {
            label,
            tokens,
            mirror: FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES),
            mirror_buf: BytesMut::new(),
            mirror_broken: false,
            asked: HashMap::new(),
            asked_on_zero: 0,
            inbuf: BytesMut::new(),
            // The server never sends a frame larger than it advertised
            // (§3); it advertises the default.
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES),
            answered: HashMap::new(),
            answered_on_zero: 0,
            welcomed: false,
            auth: Auth::No,
            last_live_seq: 0,
            fatal: None,
            eof: false,
            hung_up: false,
            frames: 0,
            seen_conversations: Vec::new(),
        }
    }

    fn violated(&self, rule: &str, detail: impl std::fmt::Debug) -> ! {
        panic!("server_e2e invariant broken on session {}: {rule}: {detail:?}", self.label)
    }

    // ----- the client's side ---------------------------------------------------

    /// Bytes the client is about to write (call before writing them, so a
    /// response can never arrive before its request is known).
    pub fn client_wrote(&mut self, bytes: &[u8]) {
        if self.mirror_broken {
            return;
        }
        self.mirror_buf.extend_from_slice(bytes);
        loop {
            match self.mirror.next_frame(&mut self.mirror_buf) {
                Ok(Some(frame)) => self.client_frame(&frame),
                Ok(None) => break,
                // The server closes with FRAME_TOO_LARGE: nothing after it
                // is read.
                Err(_) => {
                    self.mirror_broken = true;
                    break;
                }
            }
        }
    }

    fn client_frame(&mut self, frame: &[u8]) {
        if trace() {
            eprintln!("{} -> {:?}", self.label, decode_client_frame(frame));
        }
        let (id, asked) = match decode_client_frame(frame) {
            Ok(f) => {
                let owed = !matches!(f.body, Some(Body::Typing(_)));
                (f.request_id, Asked { body: f.body, owed })
            }
            Err(_) => (scan_request_id(frame).unwrap_or(0), Asked { body: None, owed: true }),
        };
        if id == 0 {
            self.asked_on_zero += usize::from(asked.owed);
        } else {
            self.asked.entry(id).or_default().push(asked);
        }
    }

    /// The client closed its sending half: the server may end the session
    /// without a fatal Error and without answering what is in flight.
    pub fn client_hung_up(&mut self) {
        self.hung_up = true;
    }

    // ----- the server's side -----------------------------------------------------

    /// Bytes the server wrote.
    pub fn server_wrote(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
        loop {
            match self.decoder.next_frame(&mut self.inbuf) {
                Ok(Some(frame)) => match decode_server_frame(&frame) {
                    // Hand-built frames (live message events) must match
                    // what prost writes: encoders emit fields in order and
                    // omit defaults (§3), so re-encoding gives the bytes.
                    Ok(f) if f.encode_to_vec() != frame => {
                        self.violated("server frames are canonical: they re-encode to the same bytes (§3)", f)
                    }
                    Ok(f) => self.server_frame(f),
                    Err(e) => self.violated("every server frame decodes (§3)", e),
                },
                Ok(None) => break,
                Err(e) => self.violated("no server frame exceeds the advertised max_frame_bytes (§3)", e),
            }
        }
    }

    /// The server closed the connection.
    pub fn server_closed(&mut self) {
        if trace() {
            eprintln!("{} <- end of stream", self.label);
        }
        if !self.inbuf.is_empty() {
            self.violated("the server never stops mid-frame", self.inbuf.len());
        }
        if self.fatal.is_none() && !self.hung_up {
            self.violated("the server closes only after a fatal Error, unless the client went away (§4.1)", ());
        }
        self.eof = true;
    }

    fn server_frame(&mut self, f: pb::ServerFrame) {
        if trace() {
            eprintln!("{} <- {f:?}", self.label);
        }
        self.frames += 1;
        if let Some(code) = self.fatal {
            self.violated("nothing follows a fatal Error (§4.1)", (code, &f));
        }
        let Some(body) = f.body else { self.violated("every server frame has a body", &f) };
        self.note_conversations(&body);
        if let Reply::Error(e) = &body {
            if ErrorCode(e.code).name().is_none() {
                self.violated("error codes come from spec/errors.md", e);
            }
            if e.fatal {
                self.fatal = Some(ErrorCode(e.code));
            }
        }
        if f.request_id == 0 {
            self.event(body);
        } else {
            self.response(f.request_id, body);
        }
    }

    fn event(&mut self, body: Reply) {
        match &body {
            Reply::Error(e) if !e.fatal => {
                // §4.5: only these are about one frame whose id was 0 or
                // could not be read; every other id-0 error ends the session.
                let about_a_frame =
                    [ErrorCode::MALFORMED_FRAME, ErrorCode::UNKNOWN_REQUEST, ErrorCode::INVALID_REQUEST_ID];
                if !about_a_frame.contains(&ErrorCode(e.code)) {
                    self.violated("a non-fatal session-level Error is 100, 102 or 106 (§4.5)", e);
                }
                self.answered_on_zero += 1;
                if self.answered_on_zero > self.asked_on_zero {
                    self.violated("no more id-0 errors than frames that earn one", (self.asked_on_zero, e));
                }
            }
            Reply::Error(_) | Reply::GoAway(_) => {}
            Reply::Event(_) | Reply::Presence(_) | Reply::Typing(_) | Reply::ReadReceipt(_) => {
                if self.auth == Auth::No {
                    self.violated(
                        "live events only while authenticated: after AuthOk, not after logout's Done (§4.1)",
                        &body,
                    );
                }
                if let Reply::Event(ev) = &body
                    && self.auth == Auth::Yes
                {
                    if ev.inbox_seq <= self.last_live_seq {
                        self.violated(
                            "live inbox events arrive in ascending inbox_seq (§4.4)",
                            (self.last_live_seq, ev),
                        );
                    }
                    self.last_live_seq = ev.inbox_seq;
                }
            }
            other => self.violated("a response body needs the request_id it answers", other),
        }
    }

    fn response(&mut self, id: u64, body: Reply) {
        if matches!(
            body,
            Reply::Event(_) | Reply::Presence(_) | Reply::Typing(_) | Reply::ReadReceipt(_) | Reply::GoAway(_)
        ) {
            self.violated("events carry request_id 0 (§5)", (id, &body));
        }
        let asked = self.asked.get(&id).cloned().unwrap_or_default();
        let answered = self.answered.entry(id).or_default();
        *answered += 1;
        if *answered > asked.len() {
            self.violated("each request gets at most one final response (§4.5)", (id, asked.len(), &body));
        }
        if let Reply::Error(e) = &body
            && e.fatal
            && ![ErrorCode::HANDSHAKE_REQUIRED, ErrorCode::UNSUPPORTED_VERSION].contains(&ErrorCode(e.code))
        {
            self.violated("a fatal Error has request_id 0, except 103 and 104 (§4.1)", (id, e));
        }
        if !self.welcomed && !matches!(body, Reply::Welcome(_) | Reply::Error(_)) {
            self.violated("nothing but errors before the Welcome (§4.1)", (id, &body));
        }
        match &asked[..] {
            [one] => self.check_answer(id, one, &body),
            // A reused id: the client cannot tell which request this
            // answers (§4.3), so only what holds for all of them is checked.
            _ => {
                if let Reply::Welcome(_) = body {
                    self.welcomed = true;
                }
                if matches!(body, Reply::AuthOk(_) | Reply::Done(_)) {
                    self.auth = Auth::Unknown;
                }
            }
        }
    }

    fn check_answer(&mut self, id: u64, asked: &Asked, reply: &Reply) {
        let Some(request) = &asked.body else {
            if !matches!(reply, Reply::Error(_)) {
                self.violated("a malformed or empty frame gets an Error (§3)", (id, reply));
            }
            return;
        };
        if let Reply::Error(_) = reply {
            return;
        }
        let expected = success_reply(request);
        if expected != Some(reply_name(reply)) {
            self.violated("a request succeeds with the body §5 lists for it", (id, request_name(request), reply));
        }
        match (request, reply) {
            (Body::Hello(_), Reply::Welcome(w)) => {
                self.welcomed = true;
                let l = w.limits.unwrap_or_default();
                let fields = [
                    l.max_frame_bytes,
                    l.max_message_chars,
                    l.max_group_members,
                    l.max_page_size,
                    l.max_in_flight,
                    l.send_rate_per_sec,
                    l.send_burst,
                    l.request_rate_per_sec,
                    l.request_burst,
                    l.max_presence_subscriptions,
                    l.max_list_items,
                ];
                if w.version != 1 || w.heartbeat_interval_ms == 0 || fields.contains(&0) {
                    self.violated("Welcome: version 1, every limit and the heartbeat non-zero (§4.2)", w);
                }
            }
            (Body::Signup(_) | Body::Login(_) | Body::Resume(_), Reply::AuthOk(ok)) => {
                self.check_auth_ok(request, ok);
                self.auth = Auth::Yes;
                self.last_live_seq = 0;
            }
            (Body::Logout(_), Reply::Done(_)) => self.auth = Auth::No,
            (Body::Ping(p), Reply::Pong(pong)) if pong.nonce != p.nonce => {
                self.violated("Pong echoes the nonce (§4.6)", (p, pong));
            }
            (Body::Send(r), Reply::Sent(s)) => {
                let Some(m) = &s.message else { self.violated("Sent carries the message", s) };
                if !s.duplicate
                    && (m.conversation_id != r.conversation_id
                        || m.content != Some(Content::Text(r.text.clone()))
                        || m.client_msg_id != r.client_msg_id
                        || m.seq == 0)
                {
                    self.violated("Sent is the message that was sent (§8.1)", (r, m));
                }
            }
            (Body::History(r), Reply::HistoryPage(p)) => {
                let seqs: Vec<u64> = p.messages.iter().map(|m| m.seq).collect();
                let in_range = |s: &u64| (r.before_seq == 0 || *s < r.before_seq) && *s > r.after_seq;
                if p.conversation_id != r.conversation_id
                    || p.messages.iter().any(|m| m.conversation_id != r.conversation_id)
                    || !seqs.windows(2).all(|w| w[0] < w[1])
                    || !seqs.iter().all(in_range)
                {
                    self.violated("a history page: that conversation, ascending, within the bounds (§8.8)", (r, seqs));
                }
            }
            (Body::Sync(r), Reply::SyncPage(p)) => {
                let seqs: Vec<u64> = p.events.iter().map(|e| e.inbox_seq).collect();
                if !seqs.windows(2).all(|w| w[0] < w[1])
                    || seqs.first().is_some_and(|s| *s <= r.after)
                    || seqs.last().is_some_and(|s| *s > p.inbox_head)
                {
                    self.violated(
                        "a sync page: ascending, after `after`, up to inbox_head (§8.5)",
                        (r, seqs, p.inbox_head),
                    );
                }
            }
            (Body::ListMembers(r), Reply::MemberList(l)) if l.conversation_id != r.conversation_id => {
                self.violated("a member list is of the conversation asked about", (r, l));
            }
            (Body::ReadReceipts(r), Reply::ReadReceiptList(l)) if l.conversation_id != r.conversation_id => {
                self.violated("read receipts are of the conversation asked about", (r, l));
            }
            (Body::MarkRead(r), Reply::ReadState(s))
                if s.conversation_id != r.conversation_id
                    || s.read_seq > s.last_seq
                    || s.unread_count != s.last_seq - s.read_seq =>
            {
                self.violated(
                    "a read state: that conversation, read_seq <= last_seq, unread = last - read (§8.10)",
                    (r, s),
                );
            }
            (Body::GetConversation(r), Reply::Conversation(c)) => {
                if c.conversation_id != r.conversation_id {
                    self.violated("GetConversation returns the conversation asked about", (r, c));
                }
                self.check_conversation(c);
            }
            (_, Reply::Conversation(c)) => self.check_conversation(c),
            (Body::ListConversations(_), Reply::ConversationList(l)) => {
                let keys: Vec<(i64, u64)> =
                    l.conversations.iter().map(|c| (c.activity_ms, c.conversation_id)).collect();
                if !keys.windows(2).all(|w| w[0] > w[1]) {
                    self.violated("conversation lists: most recently active first (§7.4)", keys);
                }
                l.conversations.iter().for_each(|c| self.check_conversation(c));
            }
            (Body::ListDevices(_), Reply::DeviceList(l)) if l.devices.iter().filter(|d| d.current).count() > 1 => {
                self.violated("at most one device is the current one", l);
            }
            _ => {}
        }
    }

    fn check_auth_ok(&self, request: &Body, ok: &pb::AuthOk) {
        let fine = ok.user_id != 0
            && ok.device_id != 0
            && ok.cursor <= ok.inbox_head
            && match request {
                Body::Signup(r) => ok.username == r.username && !ok.token.is_empty(),
                Body::Login(r) => ok.username == r.username && !ok.token.is_empty(),
                Body::Resume(r) => {
                    ok.token.is_empty()
                        && self
                            .tokens
                            .get(&r.token)
                            .is_none_or(|who| who.user_id == ok.user_id && who.device_id == ok.device_id)
                }
                _ => true,
            };
        if !fine {
            self.violated(
                "AuthOk names the account and device asked for; a token only on signup/login (§6)",
                (request, ok),
            );
        }
    }

    fn check_conversation(&self, c: &pb::Conversation) {
        if c.read_seq > c.last_seq || c.unread_count != c.last_seq - c.read_seq || c.conversation_id == 0 {
            self.violated("a conversation: read_seq <= last_seq, unread_count = last_seq - read_seq (§7)", c);
        }
    }

    fn note_conversations(&mut self, body: &Reply) {
        let mut ids = Vec::new();
        match body {
            Reply::Conversation(c) => ids.push(c.conversation_id),
            Reply::ConversationList(l) => ids.extend(l.conversations.iter().map(|c| c.conversation_id)),
            Reply::Event(pb::InboxEvent { event: Some(pb::inbox_event::Event::Joined(c)), .. }) => {
                ids.push(c.conversation_id)
            }
            _ => {}
        }
        for id in ids {
            if !self.seen_conversations.contains(&id) && self.seen_conversations.len() < 64 {
                self.seen_conversations.push(id);
            }
        }
    }

    // ----- the end -------------------------------------------------------------

    /// True once nothing more is owed: every request answered, or the
    /// session over (fatal Error, closed, or the client went away).
    pub fn settled(&self) -> bool {
        self.fatal.is_some() || self.eof || self.hung_up || self.unanswered().is_empty()
    }

    /// Whether the server has closed the connection.
    pub fn closed(&self) -> bool {
        self.eof
    }

    /// Requests owed a response and not yet answered.
    pub fn unanswered(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .asked
            .iter()
            .filter(|(id, asked)| self.answered.get(id).copied().unwrap_or(0) < asked.iter().filter(|a| a.owed).count())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Panics if, with the session still open and the client still there,
    /// some request was never answered: every request gets exactly one
    /// final response (§4.5).
    pub fn check_settled(&self, waited: std::time::Duration) {
        if !self.settled() {
            self.violated(
                &format!("every request gets a response (none came for {waited:?}) (§4.5)"),
                self.unanswered(),
            );
        }
    }

    /// Frames the server sent.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

/// `CONFAB_FUZZ_TRACE=1` prints every frame both ways (to read what a
/// crashing input does).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CONFAB_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

fn request_name(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "hello",
        Body::Signup(_) => "signup",
        Body::Login(_) => "login",
        Body::Resume(_) => "resume",
        Body::Logout(_) => "logout",
        Body::ListDevices(_) => "list_devices",
        Body::RevokeDevice(_) => "revoke_device",
        Body::RevokeOtherDevices(_) => "revoke_other_devices",
        Body::OpenDirect(_) => "open_direct",
        Body::CreateGroup(_) => "create_group",
        Body::AddMembers(_) => "add_members",
        Body::RemoveMember(_) => "remove_member",
        Body::LeaveGroup(_) => "leave_group",
        Body::RenameGroup(_) => "rename_group",
        Body::ListConversations(_) => "list_conversations",
        Body::ListMembers(_) => "list_members",
        Body::SetRole(_) => "set_role",
        Body::GetConversation(_) => "get_conversation",
        Body::Send(_) => "send",
        Body::Sync(_) => "sync",
        Body::AckCursor(_) => "ack_cursor",
        Body::History(_) => "history",
        Body::MarkRead(_) => "mark_read",
        Body::ReadReceipts(_) => "read_receipts",
        Body::SubscribePresence(_) => "subscribe_presence",
        Body::UnsubscribePresence(_) => "unsubscribe_presence",
        Body::SetStatus(_) => "set_status",
        Body::Typing(_) => "typing",
        Body::RegisterPush(_) => "register_push",
        Body::UnregisterPush(_) => "unregister_push",
        Body::Ping(_) => "ping",
        Body::ChangePassword(_) => "change_password",
        Body::SetBlocked(_) => "set_blocked",
        Body::ListBlocked(_) => "list_blocked",
        Body::GetPrivacy(_) => "get_privacy",
        Body::SetPrivacy(_) => "set_privacy",
        Body::SearchUsers(_) => "search_users",
    }
}

/// The success response of each request, from the table in §5.
fn success_reply(body: &Body) -> Option<&'static str> {
    Some(match body {
        Body::Hello(_) => "welcome",
        Body::Signup(_) | Body::Login(_) | Body::Resume(_) => "auth_ok",
        Body::ListDevices(_) => "device_list",
        Body::OpenDirect(_) | Body::CreateGroup(_) | Body::GetConversation(_) => "conversation",
        Body::ListConversations(_) => "conversation_list",
        Body::ListMembers(_) => "member_list",
        Body::Send(_) => "sent",
        Body::Sync(_) => "sync_page",
        Body::History(_) => "history_page",
        Body::MarkRead(_) => "read_state",
        Body::ReadReceipts(_) => "read_receipt_list",
        Body::SubscribePresence(_) => "presence_list",
        Body::RegisterPush(_) => "push_registered",
        Body::Ping(_) => "pong",
        Body::ListBlocked(_) => "blocked_list",
        Body::GetPrivacy(_) | Body::SetPrivacy(_) => "privacy_settings",
        Body::SearchUsers(_) => "user_list",
        Body::ChangePassword(_) | Body::SetBlocked(_) => "done",
        Body::Logout(_)
        | Body::RevokeDevice(_)
        | Body::RevokeOtherDevices(_)
        | Body::AddMembers(_)
        | Body::RemoveMember(_)
        | Body::LeaveGroup(_)
        | Body::RenameGroup(_)
        | Body::SetRole(_)
        | Body::AckCursor(_)
        | Body::UnsubscribePresence(_)
        | Body::SetStatus(_)
        | Body::UnregisterPush(_) => "done",
        Body::Typing(_) => return None,
    })
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Welcome(_) => "welcome",
        Reply::Error(_) => "error",
        Reply::Done(_) => "done",
        Reply::AuthOk(_) => "auth_ok",
        Reply::DeviceList(_) => "device_list",
        Reply::Conversation(_) => "conversation",
        Reply::ConversationList(_) => "conversation_list",
        Reply::MemberList(_) => "member_list",
        Reply::Sent(_) => "sent",
        Reply::SyncPage(_) => "sync_page",
        Reply::HistoryPage(_) => "history_page",
        Reply::ReadState(_) => "read_state",
        Reply::ReadReceiptList(_) => "read_receipt_list",
        Reply::PresenceList(_) => "presence_list",
        Reply::PushRegistered(_) => "push_registered",
        Reply::Pong(_) => "pong",
        Reply::Event(_) => "event",
        Reply::Presence(_) => "presence",
        Reply::Typing(_) => "typing",
        Reply::ReadReceipt(_) => "read_receipt",
        Reply::GoAway(_) => "go_away",
        Reply::BlockedList(_) => "blocked_list",
        Reply::PrivacySettings(_) => "privacy_settings",
        Reply::UserList(_) => "user_list",
    }
}
