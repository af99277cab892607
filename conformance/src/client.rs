//! Client conformance: a scripted server that a client under test connects
//! to, and a grade for what the client did.
//!
//! The client is started for each scenario by a *driver*: a command given
//! on the command line, run with these environment variables (see
//! spec/CONFORMANCE.md):
//!
//! | variable | meaning |
//! |---|---|
//! | `CONFAB_CONFORMANCE_ADDR` | `host:port` (tcp) or `ws://host:port/v1/ws` (ws) |
//! | `CONFAB_CONFORMANCE_TRANSPORT` | `tcp` or `ws` |
//! | `CONFAB_CONFORMANCE_FINGERPRINT` | the certificate's `sha256:…` (tcp) |
//! | `CONFAB_CONFORMANCE_USERNAME`, `…_PASSWORD` | the account to log in as |
//! | `CONFAB_CONFORMANCE_CONVERSATION` | the conversation to send to |
//! | `CONFAB_CONFORMANCE_SEND` | texts to send once online, one per line |
//!
//! The driver logs in, sends the texts (each once, as a user would type
//! them) and otherwise leaves the client to itself — heartbeats, catch-up,
//! acks, reconnects and resends are the client's own — until it is killed.
//!
//! The scripted server holds one account, one direct conversation with a
//! user "peer" and three messages from them in the inbox, and answers like
//! a server would; each scenario then does one thing to the client (goes
//! silent, skips an inbox_seq, cuts the session off, says GoAway, refuses a
//! send with retry_after_ms, drops a connection with a send in flight,
//! sends fields and frames the client cannot know, advertises small
//! limits) and checks how the client copes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use confab_protocol::framing::{decode_client_frame, frame_bytes};
use confab_protocol::limits::{DEFAULT_MAX_FRAME_BYTES, Limits};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, FrameDecoder};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::report::{Outcome, Report};
use crate::wire::{ALPN, Fallible, Transport};

/// The account the driver logs in as.
pub const USERNAME: &str = "conformance";
/// Its password.
pub const PASSWORD: &str = "conformance-password";
/// The token the scripted server hands out.
const TOKEN: &str = "Y29uZm9ybWFuY2UtdG9rZW4";
/// The direct conversation with "peer".
pub const CONVERSATION: u64 = 7;
const USER_ID: u64 = 1;
const PEER_ID: u64 = 2;
/// Messages from "peer" waiting in the inbox at the start.
const WAITING: u64 = 3;

/// The suite's options.
pub struct ClientOptions {
    /// Where the scripted server listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The binding the client speaks: tcp (TCP+TLS) or ws (plain WebSocket).
    pub transport: Transport,
    /// The driver: program and arguments.
    pub driver: Vec<String>,
    /// Run only the scenarios whose id contains one of these.
    pub only: Vec<String>,
    /// Print what the client sent, frame by frame.
    pub verbose: bool,
}

/// What a scenario does to the client once it is online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Nothing: a server that just works.
    Nothing,
    /// Stops answering (and reading) on the session, without closing it.
    GoSilent,
    /// Sends a live event that skips an inbox_seq.
    Gap,
    /// `Error{RESYNC_REQUIRED, fatal}`, then closes.
    Resync,
    /// `GoAway{reconnect_after_ms}`, then the fatal Error and the close.
    GoAway(u64),
    /// Sends a frame with an unknown body and an event with unknown fields.
    Unknown,
}

/// How the scripted server answers sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnSend {
    /// Stores and answers at once.
    Store,
    /// Refuses the first with RATE_LIMITED and this retry_after_ms.
    RateLimitFirst(u64),
    /// Drops the connection when the first arrives (no answer).
    DropFirst,
    /// Answers each after this many ms.
    Slow(u64),
}

struct Scene {
    id: &'static str,
    section: &'static str,
    title: &'static str,
    heartbeat_ms: u32,
    max_in_flight: u32,
    act: Act,
    on_send: OnSend,
    /// Texts the driver sends.
    send: &'static [&'static str],
    /// How long the scenario may take.
    within: Duration,
    grade: fn(&Log, bool) -> Option<Fallible<()>>,
}

fn scenes() -> Vec<Scene> {
    let base = |id, section, title, grade| Scene {
        id,
        section,
        title,
        heartbeat_ms: 20_000,
        max_in_flight: 128,
        act: Act::Nothing,
        on_send: OnSend::Store,
        send: &[],
        within: Duration::from_secs(15),
        grade,
    };
    vec![
        base(
            "client.handshake",
            "§4.2, §8.4, §8.6",
            "Hello first (request_id ≠ 0, version 1), login, sync from 0, then an ack of what it applied",
            grade_handshake,
        ),
        Scene {
            heartbeat_ms: 1000,
            within: Duration::from_secs(8),
            ..base(
                "client.heartbeat",
                "§4.6",
                "with a 1,000 ms heartbeat the client sends a frame at least every interval",
                grade_heartbeat,
            )
        },
        Scene {
            heartbeat_ms: 1000,
            act: Act::GoSilent,
            within: Duration::from_secs(15),
            ..base(
                "client.dead_server",
                "§4.6",
                "a server that goes silent is given up within 2.5 heartbeat intervals of a ping, and the client reconnects",
                grade_dead_server,
            )
        },
        Scene {
            act: Act::Gap,
            ..base(
                "client.gap_sync",
                "§8.5",
                "a live event that skips an inbox_seq makes the client sync from the last one it applied",
                grade_gap,
            )
        },
        Scene {
            act: Act::Resync,
            ..base(
                "client.resync_required",
                "§8.9",
                "after RESYNC_REQUIRED the client reconnects, resumes (no new login) and syncs from where it was",
                grade_resync,
            )
        },
        Scene {
            act: Act::GoAway(1500),
            ..base(
                "client.goaway",
                "§13",
                "after GoAway the client sends no new requests and reconnects no sooner than reconnect_after_ms",
                grade_goaway,
            )
        },
        Scene {
            on_send: OnSend::RateLimitFirst(1500),
            send: &["retry me"],
            ..base(
                "client.retry_after",
                "§8.2, errors.md 400",
                "a send refused with retry_after_ms is retried no sooner, with the same client_msg_id",
                grade_retry_after,
            )
        },
        Scene {
            on_send: OnSend::DropFirst,
            send: &["do not lose me"],
            ..base(
                "client.resend_after_drop",
                "§8.2",
                "a send whose connection dropped before the answer is sent again after reconnecting, same client_msg_id and text",
                grade_resend,
            )
        },
        Scene {
            act: Act::Unknown,
            ..base(
                "client.unknown_ignored",
                "§3, §11",
                "unknown fields and an unknown frame body are ignored: the session goes on and the next event is applied",
                grade_unknown,
            )
        },
        Scene {
            max_in_flight: 2,
            on_send: OnSend::Slow(400),
            send: &["one", "two", "three", "four", "five"],
            within: Duration::from_secs(20),
            ..base(
                "client.limits",
                "§4.7, §12",
                "with max_in_flight 2 the client never has more than 2 requests unanswered, and every send arrives in order",
                grade_limits,
            )
        },
    ]
}

// ----- the log ---------------------------------------------------------------------

/// What happened, in order.
#[derive(Debug, Clone)]
enum What {
    /// A connection was accepted.
    Connected,
    /// A frame from the client.
    Frame(pb::ClientFrame),
    /// Bytes from the client that are not a frame.
    Malformed(String),
    /// The client's side of the connection ended.
    Closed,
    /// The server answered a request (request_id).
    Answered(u64),
    /// The server's scene act happened.
    Acted,
}

#[derive(Debug, Clone)]
struct Rec {
    at: Duration,
    conn: usize,
    what: What,
}

type Log = Vec<Rec>;

fn frames(log: &Log) -> impl Iterator<Item = (&Rec, &pb::ClientFrame)> {
    log.iter().filter_map(|r| match &r.what {
        What::Frame(f) => Some((r, f)),
        _ => None,
    })
}

fn acted_at(log: &Log) -> Option<&Rec> {
    log.iter().find(|r| matches!(r.what, What::Acted))
}

fn sends(log: &Log) -> Vec<(&Rec, &pb::SendRequest, u64)> {
    frames(log)
        .filter_map(|(r, f)| match &f.body {
            Some(Body::Send(s)) => Some((r, s, f.request_id)),
            _ => None,
        })
        .collect()
}

fn connections(log: &Log) -> Vec<&Rec> {
    log.iter().filter(|r| matches!(r.what, What::Connected)).collect()
}

// ----- grades ------------------------------------------------------------------------
//
// A grade sees the log so far; `done` is true once the scenario's time is
// up. It returns None while it cannot tell yet.

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Some(Err(format!($($fmt)+)));
        }
    };
}

fn pending_or(done: bool, why: impl FnOnce() -> String) -> Option<Fallible<()>> {
    if done { Some(Err(why())) } else { None }
}

fn grade_handshake(log: &Log, done: bool) -> Option<Fallible<()>> {
    // Every connection starts with a Hello (a driver may use several: a
    // login, then the client).
    for c in connections(log) {
        let Some((_, first)) = frames(log).find(|(r, _)| r.conn == c.conn) else { continue };
        match &first.body {
            Some(Body::Hello(h)) => {
                check!(first.request_id != 0, "connection {}: the Hello has request_id 0 (§4.5)", c.conn);
                check!(
                    h.versions.contains(&1),
                    "connection {}: the Hello offers versions {:?}, not 1",
                    c.conn,
                    h.versions
                );
            }
            other => {
                return Some(Err(format!("connection {}: the first frame is {other:?}, not Hello (§4.1)", c.conn)));
            }
        }
    }
    // The first authentication is a login (there is no token yet).
    let auth = frames(log).find(|(_, f)| matches!(&f.body, Some(Body::Login(_) | Body::Resume(_) | Body::Signup(_))));
    match auth.map(|(_, f)| &f.body) {
        None => return pending_or(done, || "the client never logged in".into()),
        Some(Some(Body::Login(l))) => check!(l.username == USERNAME, "logged in as {:?}", l.username),
        Some(other) => return Some(Err(format!("the first authentication is {other:?}, not a login"))),
    }
    // Catch-up from the start (§8.4), or from AuthOk.inbox_head after
    // building the view from the conversation list (§8.7, a new device).
    let synced = frames(log).any(|(_, f)| matches!(&f.body, Some(Body::Sync(s)) if s.after == 0 || s.after == WAITING));
    let acked = frames(log).any(|(_, f)| matches!(&f.body, Some(Body::AckCursor(a)) if a.inbox_seq == WAITING));
    if synced && acked {
        return Some(Ok(()));
    }
    pending_or(done, || {
        if synced {
            format!("synced but never acked inbox_seq {WAITING} (§8.6)")
        } else {
            format!(
                "never sent SyncRequest{{after: 0}} (or after: {WAITING}, the inbox_head) after the login (§8.4, §8.7)"
            )
        }
    })
}

/// The connection the client synced on first: its session.
fn session_conn(log: &Log) -> Option<usize> {
    frames(log).find(|(_, f)| matches!(&f.body, Some(Body::Sync(_)))).map(|(r, _)| r.conn)
}

fn grade_heartbeat(log: &Log, done: bool) -> Option<Fallible<()>> {
    if !done {
        return None;
    }
    let Some(conn) = session_conn(log) else { return Some(Err("the client never synced".into())) };
    let times: Vec<Duration> = frames(log).filter(|(r, _)| r.conn == conn).map(|(r, _)| r.at).collect();
    let Some(first) = times.first() else { return Some(Err("the client sent nothing".into())) };
    let end = log.last().map_or(*first, |r| r.at);
    check!(
        end.saturating_sub(*first) >= Duration::from_secs(5),
        "the session lasted only {} ms",
        (end - *first).as_millis()
    );
    check!(
        !connections(log).iter().any(|r| r.conn > conn),
        "the client reconnected to a server that answers everything"
    );
    let mut worst = Duration::ZERO;
    for w in times.windows(2) {
        worst = worst.max(w[1] - w[0]);
    }
    worst = worst.max(end - *times.last().unwrap_or(first));
    // One interval, plus a timer's slack.
    check!(
        worst <= Duration::from_millis(1000 + 300),
        "{} ms without a frame from the client (heartbeat 1,000 ms, §4.6)",
        worst.as_millis()
    );
    Some(Ok(()))
}

fn grade_dead_server(log: &Log, done: bool) -> Option<Fallible<()>> {
    let Some(silent) = acted_at(log) else { return pending_or(done, || "the client never came online".into()) };
    let reconnect = connections(log).into_iter().find(|r| r.at > silent.at);
    match reconnect {
        Some(r) => {
            let took = r.at - silent.at;
            // 2.5 intervals after the first unanswered ping (which comes at
            // most an interval after the silence began), plus backoff.
            check!(
                took <= Duration::from_millis(1000 + 2500 + 3000),
                "reconnected {} ms after the server went silent",
                took.as_millis()
            );
            let closed = log.iter().any(|x| {
                x.conn == silent.conn && matches!(x.what, What::Closed) && x.at <= r.at + Duration::from_secs(1)
            });
            check!(closed || !done, "opened a new connection but never closed the dead one");
            if !closed {
                return None;
            }
            Some(Ok(()))
        }
        None => pending_or(done, || "the client never gave up on the silent connection".into()),
    }
}

fn grade_gap(log: &Log, done: bool) -> Option<Fallible<()>> {
    let Some(gap) = acted_at(log) else { return pending_or(done, || "the client never came online".into()) };
    let synced = frames(log).find(|(r, f)| r.at > gap.at && matches!(&f.body, Some(Body::Sync(_))));
    match synced {
        Some((_, f)) => {
            let Some(Body::Sync(s)) = &f.body else { return Some(Err("unreachable".into())) };
            check!(s.after <= WAITING, "synced after {} (the last event before the gap is {WAITING})", s.after);
            let acked = frames(log).any(|(r, f)| {
                r.at > gap.at && matches!(&f.body, Some(Body::AckCursor(a)) if a.inbox_seq >= WAITING + 2)
            });
            if acked {
                return Some(Ok(()));
            }
            pending_or(done, || format!("synced but never acked inbox_seq {}", WAITING + 2))
        }
        None => pending_or(done, || {
            format!("no SyncRequest after a live event with inbox_seq {} (applied: {WAITING})", WAITING + 2)
        }),
    }
}

fn grade_resync(log: &Log, done: bool) -> Option<Fallible<()>> {
    let Some(cut) = acted_at(log) else { return pending_or(done, || "the client never came online".into()) };
    let later: Vec<_> = frames(log).filter(|(r, _)| r.conn > cut.conn).collect();
    if let Some((_, f)) = later.iter().find(|(_, f)| matches!(&f.body, Some(Body::Login(_)))) {
        return Some(Err(format!("logged in again ({f:?}) instead of resuming (§8.9)")));
    }
    let resumed = later.iter().any(|(_, f)| matches!(&f.body, Some(Body::Resume(r)) if r.token == TOKEN));
    let sync = later.iter().find_map(|(_, f)| match &f.body {
        Some(Body::Sync(s)) => Some(s.after),
        _ => None,
    });
    match (resumed, sync) {
        (true, Some(after)) => {
            check!(after == WAITING, "synced after {after}, but it had applied up to {WAITING}");
            Some(Ok(()))
        }
        _ => pending_or(done, || format!("after RESYNC_REQUIRED: resumed {resumed}, synced {}", sync.is_some())),
    }
}

fn grade_goaway(log: &Log, done: bool) -> Option<Fallible<()>> {
    let Some(go) = acted_at(log) else { return pending_or(done, || "the client never came online".into()) };
    if let Some((_, f)) = frames(log).find(|(r, f)| {
        r.conn == go.conn && r.at > go.at && !matches!(&f.body, Some(Body::Ping(_) | Body::AckCursor(_)) | None)
    }) {
        return Some(Err(format!("a new request after GoAway on the same session (§13): {:?}", f.body)));
    }
    match connections(log).into_iter().find(|r| r.conn > go.conn) {
        Some(r) => {
            let after = r.at - go.at;
            check!(
                after >= Duration::from_millis(1500),
                "reconnected {} ms after GoAway{{reconnect_after_ms: 1500}}",
                after.as_millis()
            );
            check!(
                after <= Duration::from_millis(1500 + 1500 + 5000),
                "reconnected only {} ms after GoAway",
                after.as_millis()
            );
            Some(Ok(()))
        }
        None => pending_or(done, || "never reconnected after GoAway".into()),
    }
}

fn grade_retry_after(log: &Log, done: bool) -> Option<Fallible<()>> {
    let s = sends(log);
    let Some((first, f, id)) = s.first() else { return pending_or(done, || "the client sent nothing".into()) };
    check!(f.text == "retry me", "sent {:?}", f.text);
    // The wait runs from the refusal.
    let refused_at = log
        .iter()
        .find(|r| r.conn == first.conn && matches!(r.what, What::Answered(a) if a == *id))
        .map_or(first.at, |r| r.at);
    match s.get(1) {
        Some((r, again, _)) => {
            check!(
                again.client_msg_id == f.client_msg_id,
                "the retry has client_msg_id {:?}, the first {:?} (§8.2)",
                again.client_msg_id,
                f.client_msg_id
            );
            check!(again.text == f.text, "the retry has another text");
            let after = r.at.saturating_sub(refused_at);
            check!(
                after >= Duration::from_millis(1500),
                "retried {} ms after RATE_LIMITED with retry_after_ms 1500",
                after.as_millis()
            );
            Some(Ok(()))
        }
        None => pending_or(done, || "the refused send was never retried".into()),
    }
}

fn grade_resend(log: &Log, done: bool) -> Option<Fallible<()>> {
    let s = sends(log);
    let Some((first, f, _)) = s.first() else { return pending_or(done, || "the client sent nothing".into()) };
    match s.iter().find(|(r, _, _)| r.conn > first.conn) {
        Some((_, again, _)) => {
            check!(
                again.client_msg_id == f.client_msg_id,
                "resent with client_msg_id {:?}, first {:?} (§8.2)",
                again.client_msg_id,
                f.client_msg_id
            );
            check!(again.text == f.text, "resent another text: {:?}", again.text);
            check!(s.len() == 2, "sent the message {} times", s.len());
            Some(Ok(()))
        }
        None => pending_or(done, || "the send left unanswered by the dropped connection was never sent again".into()),
    }
}

fn grade_unknown(log: &Log, done: bool) -> Option<Fallible<()>> {
    let Some(u) = acted_at(log) else { return pending_or(done, || "the client never came online".into()) };
    if let Some(r) = log.iter().find(|r| r.at > u.at && matches!(r.what, What::Closed | What::Connected)) {
        return Some(Err(format!(
            "the connection {} after the unknown frame",
            if matches!(r.what, What::Closed) { "was closed" } else { "was replaced" }
        )));
    }
    let acked =
        frames(log).any(|(r, f)| r.at > u.at && matches!(&f.body, Some(Body::AckCursor(a)) if a.inbox_seq > WAITING));
    if acked && done {
        return Some(Ok(()));
    }
    if done {
        return Some(Err(format!("the event after the unknown frame (inbox_seq {}) was never acked", WAITING + 1)));
    }
    None
}

fn grade_limits(log: &Log, done: bool) -> Option<Fallible<()>> {
    // Requests unanswered at each moment, per connection.
    let mut open: HashMap<(usize, u64), ()> = HashMap::new();
    let mut worst = 0;
    for r in log {
        match &r.what {
            What::Frame(f) if f.request_id != 0 => {
                open.insert((r.conn, f.request_id), ());
                worst = worst.max(open.keys().filter(|(c, _)| *c == r.conn).count());
            }
            What::Answered(id) => {
                open.remove(&(r.conn, *id));
            }
            What::Closed => open.retain(|(c, _), ()| *c != r.conn),
            _ => {}
        }
    }
    check!(worst <= 2, "{worst} requests unanswered at once with max_in_flight 2 (§4.7)");
    let texts: Vec<&str> = sends(log).iter().map(|(_, s, _)| s.text.as_str()).collect();
    if texts.len() >= 5 {
        check!(texts == ["one", "two", "three", "four", "five"], "sends arrived as {texts:?}");
        return Some(Ok(()));
    }
    pending_or(done, || format!("only {} of 5 sends arrived: {texts:?}", texts.len()))
}

// ----- the scripted server -------------------------------------------------------------

struct State {
    start: Instant,
    log: Log,
    conns: usize,
    inbox: Vec<pb::InboxEvent>,
    acked: u64,
    /// client_msg_id -> the stored message.
    stored: HashMap<String, pb::Message>,
    last_seq: u64,
    sends: usize,
    acted: bool,
    verbose: bool,
}

impl State {
    fn new(verbose: bool) -> State {
        let mut s = State {
            start: Instant::now(),
            log: Vec::new(),
            conns: 0,
            inbox: Vec::new(),
            acked: 0,
            stored: HashMap::new(),
            last_seq: 0,
            sends: 0,
            acted: false,
            verbose,
        };
        for i in 1..=WAITING {
            s.store(PEER_ID, "peer", &format!("waiting {i}"), &format!("peer-{i}"));
        }
        s
    }

    fn record(&mut self, conn: usize, what: What) {
        if self.verbose {
            eprintln!("    [{:>6} ms] conn {conn}: {what:?}", self.start.elapsed().as_millis());
        }
        self.log.push(Rec { at: self.start.elapsed(), conn, what });
    }

    /// Stores a message in the conversation and the user's inbox.
    fn store(
        &mut self,
        sender_id: u64,
        sender: &str,
        text: &str,
        client_msg_id: &str,
    ) -> (pb::Message, pb::InboxEvent) {
        self.last_seq += 1;
        let m = pb::Message {
            conversation_id: CONVERSATION,
            seq: self.last_seq,
            sender_id,
            sender_username: sender.into(),
            sent_at_ms: 1_800_000_000_000 + i64::try_from(self.last_seq).unwrap_or(0),
            client_msg_id: client_msg_id.into(),
            content: Some(pb::message::Content::Text(text.into())),
        };
        let e = pb::InboxEvent {
            inbox_seq: self.inbox.len() as u64 + 1,
            event: Some(pb::inbox_event::Event::Message(m.clone())),
        };
        self.inbox.push(e.clone());
        (m, e)
    }

    fn conversation(&self) -> pb::Conversation {
        let last = self.inbox.iter().rev().find_map(|e| match &e.event {
            Some(pb::inbox_event::Event::Message(m)) => Some(m.clone()),
            _ => None,
        });
        pb::Conversation {
            conversation_id: CONVERSATION,
            kind: pb::ConversationKind::Direct as i32,
            peer_user_id: PEER_ID,
            peer_username: "peer".into(),
            created_at_ms: 1_800_000_000_000,
            last_seq: self.last_seq,
            activity_ms: last.as_ref().map_or(0, |m| m.sent_at_ms),
            last_message: last,
            member_count: 2,
            ..Default::default()
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panicking connection task must not stop the grade.
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a connection's writer sends.
#[allow(clippy::large_enum_variant)] // sent once through a channel
enum Out {
    Frame(pb::ServerFrame),
    /// A frame's bytes (no length prefix), sent as they are.
    Raw(Vec<u8>),
    /// Close the connection.
    Close,
}

fn frame(request_id: u64, body: Reply) -> Out {
    Out::Frame(pb::ServerFrame { request_id, body: Some(body) })
}

fn error(request_id: u64, code: ErrorCode, message: &str, retry_after_ms: u64, fatal: bool) -> Out {
    frame(request_id, Reply::Error(pb::Error { code: code.0, message: message.into(), retry_after_ms, fatal }))
}

#[derive(Clone)]
struct Conn {
    n: usize,
    out: mpsc::UnboundedSender<Out>,
    /// Set by an act: the server stops answering on this connection.
    silent: Arc<AtomicBool>,
}

impl Conn {
    fn send(&self, out: Out) {
        let _ = self.out.send(out);
    }

    fn answer(&self, state: &Shared, request_id: u64, body: Reply) {
        lock(state).record(self.n, What::Answered(request_id));
        self.send(frame(request_id, body));
    }

    fn fail(&self, state: &Shared, request_id: u64, code: ErrorCode, message: &str, retry_after_ms: u64) {
        lock(state).record(self.n, What::Answered(request_id));
        self.send(error(request_id, code, message, retry_after_ms, false));
    }
}

fn on_frame(scene: &SceneCfg, state: &Shared, conn: &Conn, f: pb::ClientFrame) {
    lock(state).record(conn.n, What::Frame(f.clone()));
    if conn.silent.load(Ordering::SeqCst) {
        return;
    }
    let id = f.request_id;
    let Some(body) = f.body else {
        conn.fail(state, id, ErrorCode::UNKNOWN_REQUEST, "no body", 0);
        return;
    };
    match body {
        Body::Hello(_) => {
            let mut limits = pb::Limits::from(&Limits::default());
            limits.max_in_flight = scene.max_in_flight;
            let w = pb::Welcome {
                version: 1,
                capabilities: vec![],
                limits: Some(limits),
                heartbeat_interval_ms: scene.heartbeat_ms,
                server_time_ms: 1_800_000_000_000,
                server_name: "confab-conformance".into(),
                vapid_public_key: String::new(),
            };
            conn.answer(state, id, Reply::Welcome(w));
        }
        Body::Login(l) => {
            if l.username == USERNAME && l.password == PASSWORD {
                let ok = auth_ok(&lock(state));
                conn.answer(state, id, Reply::AuthOk(ok));
            } else {
                conn.fail(state, id, ErrorCode::INVALID_CREDENTIALS, "wrong username or password", 0);
            }
        }
        Body::Resume(r) => {
            if r.token == TOKEN {
                let ok = auth_ok(&lock(state));
                conn.answer(state, id, Reply::AuthOk(ok));
            } else {
                conn.fail(state, id, ErrorCode::INVALID_TOKEN, "unknown token", 0);
            }
        }
        Body::Signup(_) => conn.fail(state, id, ErrorCode::USERNAME_TAKEN, "this server has one account", 0),
        Body::Sync(s) => {
            let (page, online) = {
                let st = lock(state);
                let limit = if s.limit == 0 { 100 } else { s.limit.min(100) } as usize;
                let events: Vec<_> = st.inbox.iter().filter(|e| e.inbox_seq > s.after).take(limit).cloned().collect();
                let has_more = events.last().is_some_and(|e| e.inbox_seq < st.inbox.len() as u64);
                (pb::SyncPage { events, inbox_head: st.inbox.len() as u64, has_more }, !has_more)
            };
            conn.answer(state, id, Reply::SyncPage(page));
            if online && !lock(state).acted && scene.act != Act::Nothing {
                lock(state).acted = true;
                // After the client's own start-up requests (conversation
                // list, presence, acks) have gone out.
                let (scene, state, conn) = (*scene, Arc::clone(state), conn.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    act(&scene, &state, &conn);
                });
            }
        }
        Body::AckCursor(a) => {
            let mut st = lock(state);
            st.acked = st.acked.max(a.inbox_seq.min(st.inbox.len() as u64));
            drop(st);
            conn.answer(state, id, Reply::Done(pb::Done {}));
        }
        Body::Send(s) => on_send(scene, state, conn, id, s),
        Body::Ping(p) => {
            conn.answer(state, id, Reply::Pong(pb::Pong { nonce: p.nonce, server_time_ms: 1_800_000_000_000 }))
        }
        Body::ListConversations(_) => {
            let c = lock(state).conversation();
            conn.answer(
                state,
                id,
                Reply::ConversationList(pb::ConversationList { conversations: vec![c], has_more: false }),
            );
        }
        Body::GetConversation(g) if g.conversation_id == CONVERSATION => {
            let c = lock(state).conversation();
            conn.answer(state, id, Reply::Conversation(c));
        }
        Body::OpenDirect(o) if o.username == "peer" => {
            let c = lock(state).conversation();
            conn.answer(state, id, Reply::Conversation(c));
        }
        Body::History(h) if h.conversation_id == CONVERSATION => {
            let messages = lock(state)
                .inbox
                .iter()
                .filter_map(|e| match &e.event {
                    Some(pb::inbox_event::Event::Message(m)) => Some(m.clone()),
                    _ => None,
                })
                .filter(|m| (h.before_seq == 0 || m.seq < h.before_seq) && m.seq > h.after_seq)
                .collect();
            conn.answer(
                state,
                id,
                Reply::HistoryPage(pb::HistoryPage { conversation_id: CONVERSATION, messages, has_more: false }),
            );
        }
        Body::MarkRead(m) if m.conversation_id == CONVERSATION => {
            let last = lock(state).last_seq;
            let read_seq = m.seq.min(last);
            let rs = pb::ReadState {
                conversation_id: CONVERSATION,
                read_seq,
                unread_count: last - read_seq,
                last_seq: last,
            };
            conn.answer(state, id, Reply::ReadState(rs));
        }
        Body::ReadReceipts(r) if r.conversation_id == CONVERSATION => {
            conn.answer(
                state,
                id,
                Reply::ReadReceiptList(pb::ReadReceiptList { conversation_id: CONVERSATION, receipts: vec![] }),
            );
        }
        Body::SubscribePresence(p) => {
            let presences = p
                .usernames
                .iter()
                .filter(|u| *u == "peer")
                .map(|u| pb::Presence {
                    user_id: PEER_ID,
                    username: u.clone(),
                    state: pb::PresenceState::Offline as i32,
                    last_seen_ms: 1_800_000_000_000,
                })
                .collect();
            conn.answer(state, id, Reply::PresenceList(pb::PresenceList { presences }));
        }
        Body::UnsubscribePresence(_) | Body::SetStatus(_) => conn.answer(state, id, Reply::Done(pb::Done {})),
        Body::Typing(_) => {}
        Body::ListDevices(_) => {
            let d = pb::Device {
                device_id: 1,
                name: "driver".into(),
                created_at_ms: 1_800_000_000_000,
                last_seen_ms: 0,
                online: true,
                current: true,
            };
            conn.answer(state, id, Reply::DeviceList(pb::DeviceList { devices: vec![d], has_more: false }));
        }
        Body::GetConversation(_) | Body::History(_) | Body::MarkRead(_) | Body::ReadReceipts(_) => {
            conn.fail(state, id, ErrorCode::CONVERSATION_NOT_FOUND, "no such conversation", 0);
        }
        Body::OpenDirect(_) => conn.fail(state, id, ErrorCode::USER_NOT_FOUND, "no such user", 0),
        _ => conn.fail(state, id, ErrorCode::FEATURE_UNAVAILABLE, "not offered by the scripted server", 0),
    }
}

fn auth_ok(st: &State) -> pb::AuthOk {
    pb::AuthOk {
        user_id: USER_ID,
        username: USERNAME.into(),
        device_id: 1,
        token: TOKEN.into(),
        cursor: st.acked,
        inbox_head: st.inbox.len() as u64,
        push_dropped: None,
    }
}

fn on_send(scene: &SceneCfg, state: &Shared, conn: &Conn, id: u64, s: pb::SendRequest) {
    if s.conversation_id != CONVERSATION {
        conn.fail(state, id, ErrorCode::CONVERSATION_NOT_FOUND, "no such conversation", 0);
        return;
    }
    let nth = {
        let mut st = lock(state);
        st.sends += 1;
        st.sends
    };
    match scene.on_send {
        OnSend::RateLimitFirst(ms) if nth == 1 => {
            conn.fail(state, id, ErrorCode::RATE_LIMITED, "slow down", ms);
            return;
        }
        OnSend::DropFirst if nth == 1 => {
            conn.silent.store(true, Ordering::SeqCst);
            conn.send(Out::Close);
            return;
        }
        _ => {}
    }
    let (sent, event) = {
        let mut st = lock(state);
        if let Some(m) = st.stored.get(&s.client_msg_id) {
            (pb::Sent { message: Some(m.clone()), duplicate: true }, None)
        } else {
            let (m, e) = st.store(USER_ID, USERNAME, &s.text, &s.client_msg_id);
            st.stored.insert(s.client_msg_id.clone(), m.clone());
            (pb::Sent { message: Some(m), duplicate: false }, Some(e))
        }
    };
    let delay = match scene.on_send {
        OnSend::Slow(ms) => ms,
        _ => 0,
    };
    let out = conn.out.clone();
    let state = Arc::clone(state);
    let n = conn.n;
    tokio::spawn(async move {
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        lock(&state).record(n, What::Answered(id));
        let _ = out.send(frame(id, Reply::Sent(sent)));
        // The sender's own message is in its inbox too (§8.3).
        if let Some(e) = event {
            let _ = out.send(frame(0, Reply::Event(e)));
        }
    });
}

/// The scene's act, once, shortly after the client first comes online.
fn act(scene: &SceneCfg, state: &Shared, conn: &Conn) {
    match scene.act {
        Act::Nothing => {}
        Act::GoSilent => {
            conn.silent.store(true, Ordering::SeqCst);
            lock(state).record(conn.n, What::Acted);
        }
        Act::Gap => {
            let e = {
                let mut st = lock(state);
                st.store(PEER_ID, "peer", "the one in the gap", "peer-gap");
                let (_, e) = st.store(PEER_ID, "peer", "after the gap", "peer-after-gap");
                st.record(conn.n, What::Acted);
                e
            };
            conn.send(frame(0, Reply::Event(e)));
        }
        Act::Resync => {
            lock(state).record(conn.n, What::Acted);
            conn.send(error(0, ErrorCode::RESYNC_REQUIRED, "outbound queue overflowed: reconnect and sync", 0, true));
            conn.send(Out::Close);
            conn.silent.store(true, Ordering::SeqCst);
        }
        Act::GoAway(ms) => {
            lock(state).record(conn.n, What::Acted);
            let go = pb::GoAway {
                code: ErrorCode::SHUTTING_DOWN.0,
                message: "the server is restarting".into(),
                reconnect_after_ms: ms,
            };
            conn.send(frame(0, Reply::GoAway(go)));
            let out = conn.out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = out.send(error(0, ErrorCode::SHUTTING_DOWN, "the server is shutting down", 0, true));
                let _ = out.send(Out::Close);
            });
        }
        Act::Unknown => {
            let e = {
                let mut st = lock(state);
                let (_, e) = st.store(PEER_ID, "peer", "after the unknown frame", "peer-after-unknown");
                st.record(conn.n, What::Acted);
                e
            };
            // A body variant from the future (field 99, LEN), request_id 0.
            let mut unknown_body = pb::ServerFrame { request_id: 0, body: None }.encode_to_vec();
            unknown_body.extend_from_slice(&[0x9a, 0x06, 0x03, 0x08, 0x01, 0x10]);
            // The event with unknown fields: in the Message (field 50,
            // varint) and in the frame (field 98, LEN).
            let mut bytes = pb::ServerFrame { request_id: 0, body: Some(Reply::Event(e)) }.encode_to_vec();
            bytes.extend_from_slice(&[0x92, 0x06, 0x02, 0x68, 0x69]);
            conn.send(Out::Raw(unknown_body));
            conn.send(Out::Raw(with_unknown_in_message(&bytes)));
        }
    }
}

/// Re-encodes the event frame with an unknown varint field (50) appended
/// inside its Message, keeping the rest as it is.
fn with_unknown_in_message(frame_bytes_in: &[u8]) -> Vec<u8> {
    let Ok(f) = pb::ServerFrame::decode(frame_bytes_in) else { return frame_bytes_in.to_vec() };
    let Some(Reply::Event(e)) = f.body else { return frame_bytes_in.to_vec() };
    let Some(pb::inbox_event::Event::Message(m)) = &e.event else { return frame_bytes_in.to_vec() };
    let mut msg = m.encode_to_vec();
    msg.extend_from_slice(&[0x90, 0x03, 0x2a]); // field 50, varint 42
    let mut event = Vec::new();
    prost::encoding::uint64::encode(1, &e.inbox_seq, &mut event);
    prost::encoding::encode_key(10, prost::encoding::WireType::LengthDelimited, &mut event);
    prost::encoding::encode_varint(msg.len() as u64, &mut event);
    event.extend_from_slice(&msg);
    let mut out = Vec::new();
    prost::encoding::encode_key(40, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(event.len() as u64, &mut out);
    out.extend_from_slice(&event);
    out.extend_from_slice(&[0x92, 0x06, 0x02, 0x68, 0x69]); // field 98, "hi"
    out
}

/// What a connection handler needs of a scene.
#[derive(Clone, Copy)]
struct SceneCfg {
    heartbeat_ms: u32,
    max_in_flight: u32,
    act: Act,
    on_send: OnSend,
}

async fn serve_conn(
    tcp: TcpStream,
    transport: Transport,
    tls: tokio_rustls::TlsAcceptor,
    scene: SceneCfg,
    state: Shared,
) {
    let mut tcp = tcp;
    if transport == Transport::Ws && answered_discovery(&mut tcp).await {
        return;
    }
    let n = {
        let mut st = lock(&state);
        st.conns += 1;
        let n = st.conns;
        st.record(n, What::Connected);
        n
    };
    let _ = tcp.set_nodelay(true);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let conn = Conn { n, out: tx, silent: Arc::new(AtomicBool::new(false)) };
    match transport {
        Transport::Ws => {
            #[allow(clippy::result_large_err)] // tungstenite's callback type
            let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                let offered = req.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
                if offered.split(',').any(|p| p.trim() == "confab.v1") {
                    resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("confab.v1"));
                }
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                lock(&state).record(n, What::Malformed("not a WebSocket upgrade".into()));
                return;
            };
            let (mut sink, mut stream) = ws.split();
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(Out::Frame(f)) => { let _ = sink.send(Message::Binary(f.encode_to_vec().into())).await; }
                        Some(Out::Raw(b)) => { let _ = sink.send(Message::Binary(b.into())).await; }
                        Some(Out::Close) | None => { let _ = sink.close().await; break; }
                    },
                    msg = stream.next() => match msg {
                        Some(Ok(Message::Binary(b))) => match decode_client_frame(&b) {
                            Ok(f) => on_frame(&scene, &state, &conn, f),
                            Err(e) => lock(&state).record(n, What::Malformed(format!("{e:?}"))),
                        },
                        Some(Ok(Message::Text(_))) => lock(&state).record(n, What::Malformed("a text message (§2.3)".into())),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
        }
        Transport::Tcp | Transport::Quic => {
            let Ok(stream) = tls.accept(tcp).await else {
                lock(&state).record(n, What::Malformed("TLS handshake failed".into()));
                return;
            };
            let (mut reader, mut writer) = tokio::io::split(stream);
            let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
            let mut buf = BytesMut::new();
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(Out::Frame(f)) => { let _ = writer.write_all(&frame_bytes(&f)).await; }
                        Some(Out::Raw(b)) => {
                            let mut framed = Vec::new();
                            prost::encoding::encode_varint(b.len() as u64, &mut framed);
                            framed.extend_from_slice(&b);
                            let _ = writer.write_all(&framed).await;
                        }
                        Some(Out::Close) | None => { let _ = writer.shutdown().await; break; }
                    },
                    r = reader.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => loop {
                            match decoder.next_frame(&mut buf) {
                                Ok(Some(b)) => match decode_client_frame(&b) {
                                    Ok(f) => on_frame(&scene, &state, &conn, f),
                                    Err(e) => lock(&state).record(n, What::Malformed(format!("{e:?}"))),
                                },
                                Ok(None) => break,
                                Err(e) => {
                                    lock(&state).record(n, What::Malformed(format!("{e}")));
                                    break;
                                }
                            }
                        },
                    },
                }
            }
        }
    }
    lock(&state).record(n, What::Closed);
}

/// Stops the driver's whole process group, then reaps the driver.
async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // The group id is the driver's pid (process_group(0)).
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status()
            .await;
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

/// A browser-like client asks `GET /v1/discover` before it connects
/// (§2.5): answered with this one node, and not counted as a connection.
async fn answered_discovery(tcp: &mut TcpStream) -> bool {
    const ASK: &[u8] = b"GET /v1/discover";
    let mut head = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(2);
    // Peek until the request line's start is in (or it is clearly not it).
    loop {
        match tcp.peek(&mut head).await {
            Ok(n) if n >= ASK.len() || head[..n] != ASK[..n] || n == 0 => break,
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => return false,
        }
    }
    if head != *ASK {
        return false;
    }
    // Read the request head, then answer and close.
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let me = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let body = serde_json::json!({
        "protocol": "confab.v1",
        "nodes": [{ "node": "conformance", "quic": null, "tcp": null, "ws": format!("ws://{me}/v1/ws"), "fingerprint": "", "load": {} }]
    })
    .to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(resp.as_bytes()).await;
    let _ = tcp.shutdown().await;
    true
}

fn tls_acceptor() -> Fallible<(tokio_rustls::TlsAcceptor, String)> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| format!("generating a certificate: {e}"))?;
    let der = generated.cert.der().to_vec();
    let fingerprint = format!("sha256:{}", confab_client::tls::fingerprint(&der));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![der.into()], key)
        .map_err(|e| format!("TLS set-up: {e}"))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), fingerprint))
}

/// Runs every scene against the driver's client.
pub async fn run(opts: &ClientOptions, report: &mut Report) -> Fallible<()> {
    if opts.driver.is_empty() {
        return Err("no driver: say how to start the client under test (--driver CMD ARGS…)".into());
    }
    if opts.transport == Transport::Quic {
        return Err("the client suite speaks tcp and ws; QUIC clients: use their TCP+TLS path".into());
    }
    let (tls, fingerprint) = tls_acceptor()?;
    let listener =
        TcpListener::bind(opts.listen).await.map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = Arc::new(listener);
    for scene in scenes() {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| scene.id.contains(o.as_str())) {
            continue;
        }
        let started = Instant::now();
        let outcome = match run_scene(opts, &scene, &listener, addr, &tls, &fingerprint).await {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        };
        report.add(scene.id, scene.section, scene.title, outcome, started.elapsed());
    }
    Ok(())
}

async fn run_scene(
    opts: &ClientOptions,
    scene: &Scene,
    listener: &Arc<TcpListener>,
    addr: SocketAddr,
    tls: &tokio_rustls::TlsAcceptor,
    fingerprint: &str,
) -> Fallible<()> {
    let state: Shared = Arc::new(Mutex::new(State::new(opts.verbose)));
    let cfg = SceneCfg {
        heartbeat_ms: scene.heartbeat_ms,
        max_in_flight: scene.max_in_flight,
        act: scene.act,
        on_send: scene.on_send,
    };
    let transport = opts.transport;
    let accept = {
        let listener = Arc::clone(listener);
        let tls = tls.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                tasks.spawn(serve_conn(tcp, transport, tls.clone(), cfg, Arc::clone(&state)));
            }
        })
    };
    let target = match transport {
        Transport::Ws => format!("ws://{addr}/v1/ws"),
        _ => addr.to_string(),
    };
    let mut cmd = tokio::process::Command::new(&opts.driver[0]);
    cmd.args(&opts.driver[1..])
        .env("CONFAB_CONFORMANCE_ADDR", &target)
        .env("CONFAB_CONFORMANCE_TRANSPORT", transport.name())
        .env("CONFAB_CONFORMANCE_FINGERPRINT", fingerprint)
        .env("CONFAB_CONFORMANCE_USERNAME", USERNAME)
        .env("CONFAB_CONFORMANCE_PASSWORD", PASSWORD)
        .env("CONFAB_CONFORMANCE_CONVERSATION", CONVERSATION.to_string())
        .env("CONFAB_CONFORMANCE_SEND", scene.send.join("\n"))
        .env("CONFAB_CONFORMANCE_SCENARIO", scene.id)
        .stdin(std::process::Stdio::null())
        // Its own process group: the whole driver (a script and the client
        // it started) is stopped at the end, so nothing of it reconnects
        // to the next scenario.
        .process_group(0)
        .kill_on_drop(true);
    if !opts.verbose {
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the driver {:?}: {e}", opts.driver[0]))?;
    let deadline = Instant::now() + scene.within;
    let verdict = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = Instant::now() >= deadline;
        let log = lock(&state).log.clone();
        if let Some(v) = (scene.grade)(&log, done) {
            break v;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The client is gone: grade what there is.
            let log = lock(&state).log.clone();
            break match (scene.grade)(&log, true) {
                Some(Ok(())) | None => Ok(()),
                Some(Err(e)) => Err(format!("{e} (the driver exited: {status})")),
            };
        }
    };
    kill_group(&mut child).await;
    accept.abort();
    let _ = accept.await;
    let log = lock(&state).log.clone();
    if let Some(bad) = log.iter().find_map(|r| match &r.what {
        What::Malformed(why) => Some(why.clone()),
        _ => None,
    }) {
        return Err(format!("the client sent something that is not a frame: {bad}"));
    }
    verdict
}
