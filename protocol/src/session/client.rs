//! The client side of a session: sends Hello, correlates responses with
//! requests, keeps the connection alive with pings, and notices a dead
//! server.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::framing::{FrameDecoder, decode_server_frame, encode_frame};
use crate::limits::{DEFAULT_HEARTBEAT_INTERVAL_MS, HEARTBEAT_GRACE_FACTOR, SUPPORTED_VERSIONS};
use crate::pb::{self, client_frame::Body, server_frame::Body as Reply};
use crate::{ErrorCode, Limits};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in Hello.client_name.
    pub client_name: String,
    /// Capabilities offered.
    pub capabilities: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_name: concat!("confab-protocol/", env!("CARGO_PKG_VERSION")).into(),
            capabilities: vec![],
        }
    }
}

/// What the application must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted the handshake.
    Welcome(pb::Welcome),
    /// The final response to one of the application's requests (a result
    /// or an `Error`).
    Response {
        /// The id `send_request` returned.
        request_id: u64,
        /// The response.
        body: Reply,
    },
    /// A server event (request_id 0): inbox events, presence, typing,
    /// receipts, go-away, session errors.
    Event(Reply),
    /// The session is over (fatal error from the server, heartbeat
    /// timeout, or an undecodable stream). Close the transport.
    Closed {
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
}

/// Why a request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The session has ended.
    #[error("the session is closed")]
    Closed,
    /// Notifications (typing) go through `send_notification`.
    #[error("typing is a notification, not a request")]
    NotARequest,
}

/// The client side of one session.
#[derive(Debug)]
pub struct ClientSession {
    decoder: FrameDecoder,
    out: BytesMut,
    events: VecDeque<ClientEvent>,
    next_id: u64,
    hello_id: u64,
    in_flight: HashSet<u64>,
    pings: HashSet<u64>,
    welcome: Option<pb::Welcome>,
    heartbeat: Duration,
    last_sent: Instant,
    last_heard: Instant,
    /// When the last ping went out.
    last_ping: Option<Instant>,
    closed: bool,
    /// `typing-datagram` was negotiated: typing notices go out as
    /// datagrams (QUIC, spec §2.1).
    datagrams: bool,
    datagrams_out: VecDeque<Bytes>,
}

impl ClientSession {
    /// Starts a session at `now`; the Hello is queued for transmission.
    pub fn new(config: &ClientConfig, now: Instant) -> Self {
        let mut s = ClientSession {
            decoder: FrameDecoder::new(crate::limits::DEFAULT_MAX_FRAME_BYTES),
            out: BytesMut::new(),
            events: VecDeque::new(),
            next_id: 1,
            hello_id: 0,
            in_flight: HashSet::new(),
            pings: HashSet::new(),
            welcome: None,
            heartbeat: Duration::from_millis(u64::from(DEFAULT_HEARTBEAT_INTERVAL_MS)),
            last_sent: now,
            last_heard: now,
            last_ping: None,
            closed: false,
            datagrams: false,
            datagrams_out: VecDeque::new(),
        };
        let hello = pb::Hello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            capabilities: config.capabilities.clone(),
            client_name: config.client_name.clone(),
        };
        s.hello_id = s.queue(Body::Hello(hello), now);
        s
    }

    /// The server's Welcome, once received.
    pub fn welcome(&self) -> Option<&pb::Welcome> {
        self.welcome.as_ref()
    }

    /// The server's limits (v1 defaults before Welcome).
    pub fn limits(&self) -> Limits {
        self.welcome.as_ref().and_then(|w| w.limits.as_ref()).map(Limits::from).unwrap_or_default()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues a request; returns its request_id. Requests may be queued
    /// before the Welcome arrives: the server handles frames in order.
    pub fn send_request(&mut self, body: Body, now: Instant) -> Result<u64, SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if matches!(body, Body::Typing(_)) {
            return Err(SendError::NotARequest);
        }
        Ok(self.queue(body, now))
    }

    /// Queues a typing notice (request_id 0, no response).
    pub fn send_typing(&mut self, conversation_id: u64, now: Instant) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        let frame = pb::ClientFrame { request_id: 0, body: Some(Body::Typing(pb::TypingNotice { conversation_id })) };
        if self.datagrams {
            // A datagram is not a heartbeat the client can count on (it may
            // be lost), so `last_sent` stays.
            self.datagrams_out.push_back(Bytes::from(prost::Message::encode_to_vec(&frame)));
            return Ok(());
        }
        encode_frame(&frame, &mut self.out);
        self.last_sent = now;
        Ok(())
    }

    /// Whether typing travels as datagrams on this session (`typing-datagram`
    /// negotiated).
    pub fn datagrams(&self) -> bool {
        self.datagrams
    }

    /// The next datagram to send (a frame without length prefix).
    pub fn poll_datagram(&mut self) -> Option<Bytes> {
        self.datagrams_out.pop_front()
    }

    /// Handles a received datagram: a `typing` event when `typing-datagram`
    /// was negotiated; anything else is dropped silently (spec §2.1).
    pub fn handle_datagram(&mut self, bytes: &[u8], now: Instant) {
        if self.closed || !self.datagrams {
            return;
        }
        self.last_heard = now;
        if let Ok(pb::ServerFrame { request_id: 0, body: Some(body @ Reply::Typing(_)) }) = decode_server_frame(bytes) {
            self.events.push_back(ClientEvent::Event(body));
        }
    }

    fn queue(&mut self, body: Body, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        encode_frame(&pb::ClientFrame { request_id: id, body: Some(body) }, &mut self.out);
        self.in_flight.insert(id);
        self.last_sent = now;
        id
    }

    /// Consumes every complete frame in `buf`.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) {
        while !self.closed {
            match self.decoder.next_frame(buf) {
                Ok(Some(frame)) => self.handle_frame(&frame, now),
                Ok(None) => break,
                Err(e) => {
                    buf.clear();
                    self.close(e.code(), e.to_string());
                }
            }
        }
    }

    /// Handles one frame's bytes without length prefix.
    pub fn handle_frame(&mut self, bytes: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        self.last_heard = now;
        let frame = match decode_server_frame(bytes) {
            Ok(f) => f,
            Err(e) => {
                return self.close(e.code(), format!("server sent a malformed frame: {}", e.detail));
            }
        };
        // An unknown body is a newer server's event: ignore it.
        let id = frame.request_id;
        let Some(body) = frame.body else {
            // A newer server's event is ignored; a response of a kind this
            // client cannot read still ends its request (PROTOCOL.md §3).
            if id != 0 && self.in_flight.remove(&id) && !self.pings.remove(&id) {
                let err = pb::Error {
                    code: ErrorCode::UNKNOWN_REQUEST.0,
                    message: "the response is of a kind this client does not know".into(),
                    retry_after_ms: 0,
                    fatal: false,
                };
                self.events.push_back(ClientEvent::Response { request_id: id, body: Reply::Error(err) });
            }
            return;
        };
        if let Reply::Error(e) = &body
            && e.fatal
        {
            let (code, message) = (ErrorCode(e.code), e.message.clone());
            if id != 0 && self.in_flight.remove(&id) && !self.pings.contains(&id) {
                self.events.push_back(ClientEvent::Response { request_id: id, body: body.clone() });
            }
            return self.close(code, message);
        }
        if id == 0 {
            return self.events.push_back(ClientEvent::Event(body));
        }
        if !self.in_flight.remove(&id) {
            return; // not ours (already answered): drop
        }
        if self.pings.remove(&id) {
            return;
        }
        if id == self.hello_id
            && let Reply::Welcome(w) = &body
        {
            // 0 means the default (PROTOCOL.md §4.2); below 1 s is absurd.
            let interval = match w.heartbeat_interval_ms {
                0 => DEFAULT_HEARTBEAT_INTERVAL_MS,
                ms => ms.max(1000),
            };
            self.heartbeat = Duration::from_millis(u64::from(interval));
            let limits = w.limits.as_ref().map(Limits::from).unwrap_or_default();
            self.decoder.set_max_frame_bytes(limits.max_frame_bytes);
            self.datagrams = w.capabilities.iter().any(|c| c == crate::session::TYPING_DATAGRAM);
            self.welcome = Some(w.clone());
            return self.events.push_back(ClientEvent::Welcome(w.clone()));
        }
        self.events.push_back(ClientEvent::Response { request_id: id, body });
    }

    fn close(&mut self, code: ErrorCode, message: String) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(ClientEvent::Closed { code, message });
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Encoded frames to write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() { None } else { Some(self.out.split().freeze()) }
    }

    /// When [`Self::handle_timeout`] must next be called: the next ping or
    /// the dead-server deadline, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let half = self.heartbeat / 2;
        let mut at = (self.last_sent + half).min(self.last_heard + self.heartbeat.mul_f64(HEARTBEAT_GRACE_FACTOR));
        if !self.ping_since_heard() {
            at = at.min(self.last_heard + half);
        }
        Some(at)
    }

    /// Whether a ping went out after the last thing heard (its answer is
    /// awaited: no second one for the silence that caused it).
    fn ping_since_heard(&self) -> bool {
        self.last_ping.is_some_and(|p| p >= self.last_heard)
    }

    /// Sends a ping when nothing was sent for half an interval, or nothing
    /// heard for half an interval and no ping is out for it yet (§4.6: its
    /// own frames say nothing about the way back); closes the session if
    /// the server has been silent for 2.5 intervals.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if now >= self.last_heard + self.heartbeat.mul_f64(HEARTBEAT_GRACE_FACTOR) {
            return self.close(ErrorCode::HEARTBEAT_TIMEOUT, "nothing heard from the server".into());
        }
        let half = self.heartbeat / 2;
        let quiet_out = now >= self.last_sent + half;
        let quiet_in = now >= self.last_heard + half && !self.ping_since_heard();
        if quiet_out || quiet_in {
            let id = self.queue(Body::Ping(pb::PingRequest { nonce: 0 }), now);
            self.pings.insert(id);
            self.last_ping = Some(now);
        }
    }
}
