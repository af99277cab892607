//! Confab as a [`Link`]: sends are `SendRequest`s to one conversation,
//! acks are `Sent`, deliveries are live `InboxEvent{message}`s. It checks
//! as it goes that every conversation's seqs and the session's inbox_seqs
//! arrive with no gap and nothing else in between.

use std::collections::HashMap;
use std::time::Instant;

use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::ClientEvent;

use crate::load::{Checks, Link, LinkEvent, parse_body};
use crate::pipe::Pipe;

/// One Confab session sending to `conversation_id` (0: receive only).
pub struct ConfabLink {
    /// The session.
    pub pipe: Pipe,
    /// Where sends go.
    pub conversation_id: u64,
    /// Prefix of client_msg_ids (unique per link).
    pub id_prefix: String,
    n: u64,
    acked: u64,
    last_inbox: Option<u64>,
    last_seq: HashMap<u64, u64>,
    checks: Checks,
}

impl ConfabLink {
    /// A link over a connected, authenticated session.
    pub fn new(pipe: Pipe, conversation_id: u64, id_prefix: String) -> ConfabLink {
        ConfabLink {
            pipe,
            conversation_id,
            id_prefix,
            n: 0,
            acked: 0,
            last_inbox: None,
            last_seq: HashMap::new(),
            checks: Checks::default(),
        }
    }
}

impl ConfabLink {
    /// Sends acknowledged with `Sent`.
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

impl Link for ConfabLink {
    fn send(&mut self, text: String) -> anyhow::Result<u64> {
        let client_msg_id = format!("{}-{}", self.id_prefix, self.n);
        self.n += 1;
        self.pipe.queue(Body::Send(pb::SendRequest { conversation_id: self.conversation_id, client_msg_id, text }))
    }

    fn backlog(&self) -> usize {
        self.pipe.backlog()
    }

    async fn pump(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        self.pipe.pump(deadline).await
    }

    fn poll(&mut self, out: &mut Vec<LinkEvent>) {
        while let Some(ev) = self.pipe.poll_event() {
            match ev {
                ClientEvent::Response { request_id, body } => match body {
                    Reply::Sent(_) => {
                        self.acked += 1;
                        out.push(LinkEvent::Ack(request_id))
                    }
                    Reply::Error(e) => {
                        out.push(LinkEvent::Failed(request_id, confab_protocol::ErrorCode(e.code).to_string()))
                    }
                    other => out.push(LinkEvent::Failed(request_id, format!("unexpected {other:?}"))),
                },
                ClientEvent::Event(Reply::Event(e)) => {
                    if self.last_inbox.is_some_and(|l| e.inbox_seq != l + 1) {
                        self.checks.inbox_gaps += 1;
                    }
                    self.last_inbox = Some(e.inbox_seq);
                    match e.event {
                        Some(pb::inbox_event::Event::Message(m)) => {
                            let last = self.last_seq.entry(m.conversation_id).or_insert(0);
                            if *last != 0 && m.seq != *last + 1 {
                                self.checks.seq_anomalies += 1;
                            }
                            *last = m.seq;
                            if let Some(pb::message::Content::Text(text)) = &m.content
                                && let Some((stamp, sender)) = parse_body(text.as_bytes())
                            {
                                out.push(LinkEvent::Msg(stamp, sender));
                            }
                        }
                        // Setup leaves a `joined` per new conversation.
                        Some(pb::inbox_event::Event::Joined(_)) => {}
                        _ => self.checks.other_events += 1,
                    }
                }
                ClientEvent::Closed { code, message } => {
                    out.push(LinkEvent::Failed(0, format!("session closed: {code}: {message}")));
                }
                _ => {}
            }
        }
    }

    fn checks(&self) -> Checks {
        self.checks
    }

    fn reads(&self) -> u64 {
        self.pipe.wire.reads
    }
}
