//! The server side of a session: handshake, phases, request admission
//! (ids, in-flight cap, rate limits, validation), heartbeat and handshake
//! deadlines. The application sees only admitted, validated requests and
//! answers each with [`ServerSession::respond`] or [`ServerSession::fail`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Now, TokenBucket};
use crate::framing::{FrameDecoder, decode_client_frame, encode_frame};
use crate::limits::{
    HEARTBEAT_GRACE_FACTOR, MAX_CONSECUTIVE_MALFORMED, MAX_CONSECUTIVE_REFUSED, MAX_CONSECUTIVE_REJECTED,
    SUPPORTED_VERSIONS,
};
use crate::pb::{self, client_frame::Body, server_frame::Body as Reply};
use crate::{ErrorCode, Limits, validate};

/// Fixed settings for every session of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Limits enforced and advertised.
    pub limits: Limits,
    /// Advertised heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Deadline for a complete Hello.
    pub handshake_timeout: Duration,
    /// Deadline for a successful signup, login or resume after the Welcome
    /// (or after a logout): an unauthenticated session is closed with
    /// AUTH_TIMEOUT once it passes.
    pub auth_timeout: Duration,
    /// Sent in Welcome.server_name.
    pub server_name: String,
    /// Capabilities the server supports (the Welcome lists the
    /// intersection with the client's).
    pub capabilities: Vec<String>,
    /// Web Push VAPID public key, or empty.
    pub vapid_public_key: String,
    /// Typing notices per second per session (excess is dropped).
    pub typing_rate_per_sec: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            heartbeat_interval: Duration::from_millis(u64::from(crate::limits::DEFAULT_HEARTBEAT_INTERVAL_MS)),
            handshake_timeout: Duration::from_millis(u64::from(crate::limits::DEFAULT_HANDSHAKE_TIMEOUT_MS)),
            auth_timeout: Duration::from_millis(u64::from(crate::limits::DEFAULT_AUTH_TIMEOUT_MS)),
            server_name: "confabd".into(),
            capabilities: Vec::new(),
            vapid_public_key: String::new(),
            typing_rate_per_sec: 1,
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the first frame, which must be Hello.
    AwaitingHello,
    /// Handshake done; only signup, login, resume and ping are allowed.
    Unauthenticated,
    /// A device is logged in.
    Authenticated {
        /// The user.
        user_id: u64,
        /// The device.
        device_id: u64,
    },
    /// The session has ended; flush output and close the transport.
    Closed,
}

/// What the application must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The handshake completed (a Welcome is queued).
    Handshaken {
        /// The negotiated version.
        version: u32,
        /// The client's free-form name.
        client_name: String,
        /// The negotiated capabilities.
        capabilities: Vec<String>,
    },
    /// An admitted, validated request. Answer it exactly once.
    Request {
        /// Its id, to pass to `respond`/`fail`.
        request_id: u64,
        /// The request.
        body: Body,
    },
    /// A request admitted from a QUIC request stream (spec §2.1). Answer
    /// it exactly once with [`ServerSession::respond_stream`] or
    /// [`ServerSession::fail_stream`], whose bytes go to that stream.
    StreamRequest {
        /// The stream, as the driver named it.
        stream: u64,
        /// The request's id (independent of the session stream's).
        request_id: u64,
        /// The request.
        body: Body,
    },
    /// A notification (typing): no response is expected.
    Notification(Body),
    /// The session ended. Write what `poll_transmit` still returns, then
    /// close the transport.
    Closed {
        /// Why.
        code: ErrorCode,
    },
}

/// What an admitted request is, kept while it is in flight so a response
/// can move the phase (login → authenticated, logout → unauthenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Auth,
    Logout,
    Other,
}

/// The server side of one session.
#[derive(Debug)]
pub struct ServerSession {
    config: std::sync::Arc<ServerConfig>,
    phase: Phase,
    decoder: FrameDecoder,
    out: BytesMut,
    events: VecDeque<ServerEvent>,
    in_flight: HashMap<u64, Pending>,
    requests: TokenBucket,
    sends: TokenBucket,
    typing: TokenBucket,
    /// The handshake deadline while awaiting Hello; the authentication
    /// deadline while unauthenticated.
    phase_deadline: Instant,
    last_heard: Instant,
    malformed_streak: u32,
    rejected_streak: u32,
    /// Frames in a row refused before admission (rules 4, 6, 7 of §4.3):
    /// each costs the sender a byte or two and the server an Error frame.
    refused_streak: u32,
    /// The barrier request in flight, if any (PROTOCOL.md §4.4).
    barrier: Option<u64>,
    /// Frames received behind a barrier (message transports only).
    held: VecDeque<Bytes>,
    last_now: Now,
    /// `typing-datagram` was negotiated (QUIC, spec §2.1).
    datagrams: bool,
    /// `request-streams` was negotiated (QUIC, spec §2.1).
    request_streams: bool,
    /// Request-stream requests admitted and not yet answered, by stream.
    streams_in_flight: HashMap<u64, u64>,
}

/// What became of a request stream's bytes (spec §2.1).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutcome {
    /// Answered at once: write these bytes (one frame) to the stream and
    /// finish it.
    Answer(Bytes),
    /// Admitted: a [`ServerEvent::StreamRequest`] is queued.
    Admitted,
}

/// The bodies a request stream may carry (spec §2.1).
fn allowed_on_request_stream(body: &Body) -> bool {
    matches!(
        body,
        Body::History(_)
            | Body::Sync(_)
            | Body::ListConversations(_)
            | Body::GetConversation(_)
            | Body::ListMembers(_)
            | Body::ListDevices(_)
            | Body::ReadReceipts(_)
            | Body::Ping(_)
    )
}

impl ServerSession {
    /// A new session whose connection opened at `now`.
    pub fn new(config: std::sync::Arc<ServerConfig>, now: Instant) -> Self {
        let l = &config.limits;
        ServerSession {
            phase: Phase::AwaitingHello,
            decoder: FrameDecoder::new(l.max_frame_bytes),
            out: BytesMut::new(),
            events: VecDeque::new(),
            in_flight: HashMap::new(),
            requests: TokenBucket::new(l.request_rate_per_sec, l.request_burst, now),
            sends: TokenBucket::new(l.send_rate_per_sec, l.send_burst, now),
            typing: TokenBucket::new(config.typing_rate_per_sec, 3, now),
            phase_deadline: now + config.handshake_timeout,
            last_heard: now,
            malformed_streak: 0,
            rejected_streak: 0,
            refused_streak: 0,
            barrier: None,
            held: VecDeque::new(),
            last_now: Now { instant: now, unix_ms: 0 },
            datagrams: false,
            request_streams: false,
            streams_in_flight: HashMap::new(),
            config,
        }
    }

    // ----- getters -------------------------------------------------------

    /// The session's phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Requests admitted and not yet answered (request streams included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.streams_in_flight.len()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    // ----- input ---------------------------------------------------------

    /// Consumes complete frames from `buf` (stream transports). Bytes of an
    /// incomplete frame stay in `buf`. While a barrier request (signup,
    /// login, resume, logout) is in flight no further frame is consumed:
    /// call again after answering it. See [`Self::wants_input`].
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Now) {
        self.last_now = now;
        while !self.is_closed() && self.barrier.is_none() {
            match self.decoder.next_frame(buf) {
                Ok(Some(frame)) => self.handle_frame_now(&frame, now),
                Ok(None) => break,
                Err(e) => {
                    self.close(e.code(), &e.to_string());
                    buf.clear();
                }
            }
        }
    }

    /// Whether the session takes more input now. `false` while a barrier
    /// request is in flight (the driver should stop reading the stream so
    /// the peer's bytes wait in the socket, not in memory) and once closed.
    pub fn wants_input(&self) -> bool {
        !self.is_closed() && self.barrier.is_none()
    }

    /// Handles one frame's bytes, without length prefix (message
    /// transports). Frames that arrive while a barrier request is in flight
    /// are held and handled when it is answered (at most `max_in_flight` of
    /// them; past that they are refused with TOO_MANY_IN_FLIGHT).
    pub fn handle_frame(&mut self, bytes: &[u8], now: Now) {
        self.last_now = now;
        if self.barrier.is_some() && !self.is_closed() {
            self.last_heard = now.instant;
            if self.held.len() >= self.config.limits.max_in_flight as usize {
                let id = crate::framing::scan_request_id(bytes).unwrap_or(0);
                return self.send_error(id, ErrorCode::TOO_MANY_IN_FLIGHT, "too many frames behind a pending login", 0);
            }
            self.held.push_back(Bytes::copy_from_slice(bytes));
            return;
        }
        self.handle_frame_now(bytes, now);
    }

    /// Handles one unprefixed message, enforcing the frame size limit.
    pub fn handle_message(&mut self, bytes: &[u8], now: Now) {
        match crate::framing::check_frame_len(bytes.len(), self.decoder.max_frame_bytes()) {
            Ok(()) => self.handle_frame(bytes, now),
            Err(e) => self.close(e.code(), &e.to_string()),
        }
    }

    fn handle_frame_now(&mut self, bytes: &[u8], now: Now) {
        if self.is_closed() {
            return;
        }
        self.last_heard = now.instant;
        let frame = match decode_client_frame(bytes) {
            Ok(frame) => {
                self.malformed_streak = 0;
                frame
            }
            Err(e) => {
                let id = e.request_id.unwrap_or(0);
                if self.phase == Phase::AwaitingHello {
                    return self.close_with_id(
                        id,
                        ErrorCode::HANDSHAKE_REQUIRED,
                        "the first frame must be a valid Hello",
                    );
                }
                self.malformed_streak += 1;
                if self.malformed_streak >= MAX_CONSECUTIVE_MALFORMED {
                    return self.close(ErrorCode::PROTOCOL_VIOLATION, "too many malformed frames in a row");
                }
                return self.send_error(id, e.code(), &e.detail, 0);
            }
        };
        self.handle_client_frame(frame, now);
    }

    /// Applies spec/PROTOCOL.md §4.3, "Frame processing order", rules 2–10.
    fn handle_client_frame(&mut self, frame: pb::ClientFrame, now: Now) {
        let id = frame.request_id;
        if self.phase == Phase::AwaitingHello {
            return match frame.body {
                Some(Body::Hello(_)) if id == 0 => {
                    self.send_error(0, ErrorCode::INVALID_REQUEST_ID, "Hello needs a non-zero request_id", 0)
                }
                Some(Body::Hello(hello)) => self.handle_hello(id, hello, now),
                _ => self.close_with_id(id, ErrorCode::HANDSHAKE_REQUIRED, "the first frame must be Hello"),
            };
        }
        let Some(body) = frame.body else {
            return self.refuse(id, ErrorCode::UNKNOWN_REQUEST, "empty or unknown request body");
        };
        if let Body::Typing(_) = body {
            return self.handle_typing(body, now);
        }
        if id == 0 {
            return self.refuse(0, ErrorCode::INVALID_REQUEST_ID, "request_id 0 is only for typing");
        }
        if self.in_flight.contains_key(&id) {
            return self.refuse(id, ErrorCode::INVALID_REQUEST_ID, "request_id is already in flight");
        }
        let pending = match (&body, self.phase) {
            (Body::Hello(_), _) => {
                return self.refuse(id, ErrorCode::INVALID_STATE, "the handshake is already done");
            }
            (Body::Signup(_) | Body::Login(_) | Body::Resume(_), Phase::Authenticated { .. }) => {
                return self.refuse(id, ErrorCode::INVALID_STATE, "the session is already authenticated");
            }
            (Body::Signup(_) | Body::Login(_) | Body::Resume(_), _) => Pending::Auth,
            (Body::Ping(_), _) => Pending::Other,
            (_, Phase::Unauthenticated) => {
                return self.refuse(id, ErrorCode::UNAUTHENTICATED, "log in or resume first");
            }
            (Body::Logout(_), _) => Pending::Logout,
            _ => Pending::Other,
        };
        self.refused_streak = 0;
        if self.in_flight() >= self.config.limits.max_in_flight as usize {
            return self.send_error(id, ErrorCode::TOO_MANY_IN_FLIGHT, "too many requests in flight", 0);
        }
        if let Err(wait) = self.admit_rate(&body, now.instant) {
            self.rejected_streak += 1;
            if self.rejected_streak > MAX_CONSECUTIVE_REJECTED {
                return self.close(ErrorCode::RATE_LIMITED, "rate limit exceeded persistently");
            }
            let ms = wait.as_millis().max(1) as u64;
            return self.send_error(id, ErrorCode::RATE_LIMITED, "rate limit exceeded", ms);
        }
        self.rejected_streak = 0;
        if let Err(v) = validate::validate_request(&body, &self.config.limits) {
            return self.send_error(id, v.code(), &v.to_string(), 0);
        }
        if let Body::Ping(p) = body {
            let pong = pb::Pong { nonce: p.nonce, server_time_ms: now.unix_ms };
            return self.send(id, Reply::Pong(pong));
        }
        if pending != Pending::Other {
            self.barrier = Some(id);
        }
        self.in_flight.insert(id, pending);
        self.events.push_back(ServerEvent::Request { request_id: id, body });
    }

    fn admit_rate(&mut self, body: &Body, now: Instant) -> Result<(), Duration> {
        // A rejected request takes no token (§4.7): take the request token
        // from a copy and keep it only if the send bucket admits too.
        let mut requests = self.requests.clone();
        requests.try_take(now)?;
        if let Body::Send(_) = body {
            self.sends.try_take(now)?;
        }
        self.requests = requests;
        Ok(())
    }

    fn handle_hello(&mut self, id: u64, hello: pb::Hello, now: Now) {
        if id == 0 {
            return self.close(ErrorCode::INVALID_REQUEST_ID, "Hello needs a non-zero request_id");
        }
        if let Err(v) = validate::validate_request(&Body::Hello(hello.clone()), &self.config.limits) {
            return self.close(ErrorCode::HANDSHAKE_REQUIRED, &v.to_string());
        }
        let Some(version) = hello.versions.iter().copied().filter(|v| SUPPORTED_VERSIONS.contains(v)).max() else {
            return self.close_with_id(
                id,
                ErrorCode::UNSUPPORTED_VERSION,
                "no common protocol version; this server speaks 1",
            );
        };
        let capabilities: Vec<String> =
            hello.capabilities.iter().filter(|c| self.config.capabilities.contains(c)).cloned().collect();
        self.datagrams = capabilities.iter().any(|c| c == super::TYPING_DATAGRAM);
        self.request_streams = capabilities.iter().any(|c| c == super::REQUEST_STREAMS);
        let welcome = pb::Welcome {
            version,
            capabilities: capabilities.clone(),
            limits: Some((&self.config.limits).into()),
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis().min(u32::MAX.into()) as u32,
            server_time_ms: now.unix_ms,
            server_name: self.config.server_name.clone(),
            vapid_public_key: self.config.vapid_public_key.clone(),
        };
        self.phase = Phase::Unauthenticated;
        self.phase_deadline = now.instant + self.config.auth_timeout;
        self.send(id, Reply::Welcome(welcome));
        self.events.push_back(ServerEvent::Handshaken { version, client_name: hello.client_name, capabilities });
    }

    /// Whether typing may travel as datagrams on this session.
    pub fn datagrams(&self) -> bool {
        self.datagrams
    }

    /// Whether the handshake negotiated QUIC request streams. Before the
    /// Welcome it is `false`: the driver reads nothing from a request
    /// stream until then, and rejects every one (application error 109)
    /// when this stays `false` (spec §2.1).
    pub fn request_streams(&self) -> bool {
        self.request_streams
    }

    /// Handles a QUIC request stream read to its FIN: `bytes` is what it
    /// carried, or `None` when it carried more than a frame of
    /// `max_frame_bytes` can be. Applies the checks of spec §2.1 in order;
    /// a request that passes them all counts against the session's
    /// in-flight limit and request rate like one on the session stream,
    /// and any stream counts as a sign of life (§4.6). Errors are
    /// stream-level (`fatal = false`): the session continues.
    pub fn handle_request_stream(&mut self, stream: u64, bytes: Option<&[u8]>, now: Now) -> StreamOutcome {
        self.last_now = now;
        if !self.is_closed() {
            self.last_heard = now.instant;
        }
        match self.admit_stream_request(bytes, now) {
            Ok((request_id, Body::Ping(p))) => {
                let pong = pb::Pong { nonce: p.nonce, server_time_ms: now.unix_ms };
                StreamOutcome::Answer(stream_frame(request_id, Reply::Pong(pong)))
            }
            Ok((request_id, body)) => {
                self.streams_in_flight.insert(stream, request_id);
                self.events.push_back(ServerEvent::StreamRequest { stream, request_id, body });
                StreamOutcome::Admitted
            }
            Err((request_id, code, message, retry_after_ms)) => {
                let err = pb::Error { code: code.0, message, retry_after_ms, fatal: false };
                StreamOutcome::Answer(stream_frame(request_id, Reply::Error(err)))
            }
        }
    }

    /// The checks of spec §2.1, in order: `Err((request_id, code,
    /// message, retry_after_ms))` for the first that fails.
    fn admit_stream_request(
        &mut self,
        bytes: Option<&[u8]>,
        now: Now,
    ) -> Result<(u64, Body), (u64, ErrorCode, String, u64)> {
        let refuse = |id: u64, code: ErrorCode, why: &str| Err((id, code, why.to_string(), 0));
        let Some(bytes) = bytes else {
            return refuse(0, ErrorCode::FRAME_TOO_LARGE, "frame exceeds max_frame_bytes");
        };
        let mut buf = BytesMut::from(bytes);
        let payload = match self.decoder.next_frame(&mut buf) {
            Ok(Some(p)) if buf.is_empty() => p,
            Ok(Some(_)) => return refuse(0, ErrorCode::PROTOCOL_VIOLATION, "bytes after the request's frame"),
            Ok(None) => return refuse(0, ErrorCode::PROTOCOL_VIOLATION, "the stream ended inside its frame"),
            Err(e) => return refuse(0, e.code(), &e.to_string()),
        };
        let frame = decode_client_frame(&payload).map_err(|e| (e.request_id.unwrap_or(0), e.code(), e.detail, 0))?;
        let id = frame.request_id;
        let Some(body) = frame.body else {
            return refuse(id, ErrorCode::UNKNOWN_REQUEST, "empty or unknown request body");
        };
        if !allowed_on_request_stream(&body) {
            return refuse(id, ErrorCode::PROTOCOL_VIOLATION, "this request is not allowed on a request stream");
        }
        if id == 0 {
            return refuse(0, ErrorCode::INVALID_REQUEST_ID, "request_id must be non-zero");
        }
        if !matches!(self.phase, Phase::Authenticated { .. }) {
            return refuse(id, ErrorCode::UNAUTHENTICATED, "authenticate on the session stream first");
        }
        if self.in_flight() >= self.config.limits.max_in_flight as usize {
            return refuse(id, ErrorCode::TOO_MANY_IN_FLIGHT, "too many requests in flight");
        }
        if let Err(wait) = self.admit_rate(&body, now.instant) {
            let ms = wait.as_millis().max(1) as u64;
            return Err((id, ErrorCode::RATE_LIMITED, "rate limit exceeded".into(), ms));
        }
        if let Err(v) = validate::validate_request(&body, &self.config.limits) {
            return Err((id, v.code(), v.to_string(), 0));
        }
        Ok((id, body))
    }

    /// Answers a request admitted from request stream `stream`: the bytes
    /// to write to it (then finish it). `None` when the stream has no
    /// request in flight.
    pub fn respond_stream(&mut self, stream: u64, reply: Reply) -> Option<Bytes> {
        let request_id = self.streams_in_flight.remove(&stream)?;
        Some(stream_frame(request_id, reply))
    }

    /// Answers a request admitted from request stream `stream` with an
    /// error (`fatal = false`).
    pub fn fail_stream(&mut self, stream: u64, code: ErrorCode, message: &str, retry_after_ms: u64) -> Option<Bytes> {
        let err = pb::Error { code: code.0, message: message.to_string(), retry_after_ms, fatal: false };
        self.respond_stream(stream, Reply::Error(err))
    }

    /// Forgets the request of a stream that went away unanswered.
    pub fn drop_stream(&mut self, stream: u64) {
        self.streams_in_flight.remove(&stream);
    }

    /// Handles a received datagram (a frame without length prefix). Only a
    /// `typing` notification is accepted, and only when `typing-datagram`
    /// was negotiated; anything else is dropped silently (spec §2.1). Any
    /// datagram counts as a sign of life (§4.6).
    pub fn handle_datagram(&mut self, bytes: &[u8], now: Now) {
        if self.is_closed() || !self.datagrams || bytes.len() > self.decoder.max_frame_bytes() as usize {
            return;
        }
        self.last_now = now;
        self.last_heard = now.instant;
        if let Ok(pb::ClientFrame { request_id: 0, body: Some(body @ Body::Typing(_)) }) = decode_client_frame(bytes) {
            self.handle_typing(body, now);
        }
    }

    fn handle_typing(&mut self, body: Body, now: Now) {
        // Notifications get no response, so errors are dropped silently;
        // a non-zero request_id is ignored and is not in flight (§9.4).
        if !matches!(self.phase, Phase::Authenticated { .. })
            || validate::validate_request(&body, &self.config.limits).is_err()
            || self.typing.try_take(now.instant).is_err()
        {
            return;
        }
        self.events.push_back(ServerEvent::Notification(body));
    }

    // ----- application answers -----------------------------------------

    /// Answers an admitted request. `AuthOk` to signup/login/resume
    /// authenticates the session; `Done` to logout un-authenticates it.
    pub fn respond(&mut self, request_id: u64, reply: Reply) {
        let pending = self.in_flight.remove(&request_id);
        match (pending, &reply) {
            (Some(Pending::Auth), Reply::AuthOk(ok)) if !self.is_closed() => {
                self.phase = Phase::Authenticated { user_id: ok.user_id, device_id: ok.device_id };
            }
            (Some(Pending::Logout), Reply::Done(_)) if !self.is_closed() => {
                self.phase = Phase::Unauthenticated;
                self.phase_deadline = self.last_now.instant + self.config.auth_timeout;
            }
            _ => {}
        }
        self.send(request_id, reply);
        self.release_barrier(request_id);
    }

    /// After a barrier request is answered, handles the frames held behind
    /// it (message transports). Stream drivers call `handle_input` again.
    fn release_barrier(&mut self, request_id: u64) {
        if self.barrier != Some(request_id) {
            return;
        }
        self.barrier = None;
        let now = self.last_now;
        while self.barrier.is_none()
            && let Some(frame) = self.held.pop_front()
        {
            self.handle_frame_now(&frame, now);
        }
    }

    /// Answers an admitted request with an error.
    pub fn fail(&mut self, request_id: u64, code: ErrorCode, message: &str, retry_after_ms: u64) {
        self.in_flight.remove(&request_id);
        self.send_error(request_id, code, message, retry_after_ms);
        self.release_barrier(request_id);
    }

    /// Ends the session: queues a fatal `Error` (request_id 0) and emits
    /// [`ServerEvent::Closed`].
    pub fn close(&mut self, code: ErrorCode, message: &str) {
        self.close_with_id(0, code, message);
    }

    fn close_with_id(&mut self, request_id: u64, code: ErrorCode, message: &str) {
        if self.is_closed() {
            return;
        }
        let err = pb::Error { code: code.0, message: message.to_string(), retry_after_ms: 0, fatal: true };
        self.send(request_id, Reply::Error(err));
        self.held.clear();
        self.barrier = None;
        self.phase = Phase::Closed;
        self.in_flight.clear();
        self.streams_in_flight.clear();
        self.events.push_back(ServerEvent::Closed { code });
    }

    /// Queues a `GoAway` (shutdown). The driver then stops reading,
    /// lets in-flight requests finish and calls [`Self::close`].
    pub fn go_away(&mut self, code: ErrorCode, message: &str, reconnect_after_ms: u64) {
        let go = pb::GoAway { code: code.0, message: message.to_string(), reconnect_after_ms };
        self.send(0, Reply::GoAway(go));
    }

    /// Refuses a frame before admission; too many in a row end the session
    /// (an Error frame per byte or two of input would let a peer make the
    /// server write far more than it reads).
    fn refuse(&mut self, request_id: u64, code: ErrorCode, message: &str) {
        self.refused_streak += 1;
        if self.refused_streak > MAX_CONSECUTIVE_REFUSED {
            return self.close(ErrorCode::PROTOCOL_VIOLATION, "too many refused frames in a row");
        }
        self.send_error(request_id, code, message, 0);
    }

    fn send_error(&mut self, request_id: u64, code: ErrorCode, message: &str, retry_after_ms: u64) {
        let err = pb::Error { code: code.0, message: message.to_string(), retry_after_ms, fatal: false };
        self.send(request_id, Reply::Error(err));
    }

    fn send(&mut self, request_id: u64, reply: Reply) {
        // The fatal Error is the last frame of a session (§4.1): answers
        // the application gives after it are dropped.
        if self.is_closed() {
            return;
        }
        encode_frame(&pb::ServerFrame { request_id, body: Some(reply) }, &mut self.out);
    }

    // ----- output and time ----------------------------------------------

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Encoded frames the session produced (responses, errors), ready to
    /// write. Events from other sessions do not pass through here.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        // The whole buffer goes (not a split, which would keep the
        // allocation alive for the next frames): an idle session holds none.
        if self.out.is_empty() { None } else { Some(std::mem::take(&mut self.out).freeze()) }
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::AwaitingHello => Some(self.phase_deadline),
            // A login in flight is not idle: its answer decides.
            Phase::Unauthenticated if self.barrier.is_none() => {
                Some(self.phase_deadline.min(self.heartbeat_deadline()))
            }
            Phase::Unauthenticated => Some(self.heartbeat_deadline()),
            Phase::Authenticated { .. } => Some(self.heartbeat_deadline()),
        }
    }

    fn heartbeat_deadline(&self) -> Instant {
        self.last_heard + self.config.heartbeat_interval.mul_f64(HEARTBEAT_GRACE_FACTOR)
    }

    /// Applies deadlines that have passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.phase {
            Phase::AwaitingHello => self.close(ErrorCode::HANDSHAKE_TIMEOUT, "no Hello before the deadline"),
            Phase::Unauthenticated if now >= self.phase_deadline && self.barrier.is_none() => {
                self.close(ErrorCode::AUTH_TIMEOUT, "not authenticated before the deadline")
            }
            _ if now >= self.heartbeat_deadline() => {
                self.close(ErrorCode::HEARTBEAT_TIMEOUT, "nothing heard for 2.5 heartbeat intervals")
            }
            _ => {}
        }
    }
}

/// One response frame for a request stream.
fn stream_frame(request_id: u64, reply: Reply) -> Bytes {
    crate::framing::frame_bytes(&pb::ServerFrame { request_id, body: Some(reply) })
}
