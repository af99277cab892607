//! The network side of `confab chat`: one future that owns the connection,
//! reconnects with backoff when it drops, and talks to the UI through two
//! channels (commands in, events out), so the UI never waits on the network.
//!
//! Per session (spec/PROTOCOL.md §8.7): resume, list conversations, catch up
//! with Sync from the last applied inbox event (an `InboxTracker` drops what
//! was already applied and spots gaps), report the link up (the UI then
//! resends what is unconfirmed and subscribes to presence), then follow live
//! events and run the UI's requests one at a time, in the order they were
//! made (so two sends keep their order). Events that arrive during a request
//! wait in the connection's queue.

use std::time::{Duration, Instant};

use confab_client::{ClientError, Connection, Event, InboxTracker};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use tokio::sync::mpsc;

use confab_protocol::ErrorCode;

use super::model::{Link, SIGNED_OUT, SendRequest};
use crate::cli::{Ctx, Failure};

/// A request from the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCommand {
    /// Send a message (the id is kept across attempts).
    Send(SendRequest),
    /// A history page before `before_seq` (0: the newest page).
    History { conversation_id: u64, before_seq: u64 },
    /// Move the read marker.
    MarkRead { conversation_id: u64, seq: u64 },
    /// "I am typing" (no answer).
    Typing { conversation_id: u64 },
    /// Open the DM with a user.
    OpenDirect { username: String },
    /// Create a group.
    CreateGroup { title: String, usernames: Vec<String> },
    /// Add members.
    AddMembers { conversation_id: u64, usernames: Vec<String> },
    /// Remove a member.
    RemoveMember { conversation_id: u64, username: String },
    /// Leave a group.
    Leave { conversation_id: u64 },
    /// Rename a group.
    Rename { conversation_id: u64, title: String },
    /// List members.
    Members { conversation_id: u64 },
    /// Set a member's role.
    SetRole { conversation_id: u64, username: String, role: pb::MemberRole },
    /// How far each member of a group has read.
    Receipts { conversation_id: u64 },
    /// `/presence`: subscribe and show the answer.
    Presence { usernames: Vec<String> },
    /// Follow these users' presence (answered with `NetEvent::Presence`).
    Subscribe { usernames: Vec<String> },
    /// One conversation's details.
    GetConversation { conversation_id: u64 },
}

/// What the network side tells the UI.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved once through a channel
pub enum NetEvent {
    /// The link changed.
    Link(Link),
    /// Who this session is (from `AuthOk`).
    Me { username: String, user_id: u64 },
    /// A group's read receipts.
    Receipts { conversation_id: u64, receipts: Vec<pb::ReadReceipt> },
    /// The conversation list, on every connect. `rebuild`: start over.
    Snapshot { conversations: Vec<pb::Conversation>, rebuild: bool },
    /// Inbox events, in order, each once.
    Inbox(Vec<pb::InboxEvent>),
    /// Presence (subscription answers and live changes).
    Presence(Vec<pb::Presence>),
    /// The answer to `/presence`: shown in the conversation too.
    PresenceAnswer(Vec<pb::Presence>),
    /// Someone is typing.
    Typing(pb::TypingEvent),
    /// The DM partner read up to a seq.
    ReadReceipt(pb::ReadReceipt),
    /// A send's outcome.
    Sent { client_msg_id: String, result: Result<pb::Message, ClientError> },
    /// A history page, with the `before_seq` it answers.
    History { conversation_id: u64, before_seq: u64, result: Result<pb::HistoryPage, ClientError> },
    /// The read marker's new state.
    ReadState { conversation_id: u64, result: Result<pb::ReadState, ClientError> },
    /// A conversation opened or created by this user: show it.
    Opened(pb::Conversation),
    /// Details of a conversation (not to be opened).
    Conversation(pb::Conversation),
    /// `/members` output.
    Members { conversation_id: u64, members: Vec<pb::Member> },
    /// A command worked: a line for the status bar.
    Done(String),
    /// A command failed.
    Failed { what: String, error: ClientError },
}

type Events = mpsc::UnboundedSender<NetEvent>;

/// How a session ended.
enum Ended {
    /// The connection went away.
    Lost(String),
    /// The server asked to come back later.
    GoAway(String, Duration),
    /// The UI is gone.
    Quit,
    /// This device was revoked.
    Revoked,
}

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the device's cursor is stored (debounced, §8.6).
const ACK_EVERY: Duration = Duration::from_secs(1);

/// Runs sessions until the UI drops its command sender: the first one too,
/// so that a server that is down at start is waited for like one that went
/// away. After giving up (the device was signed out), answers commands with
/// why.
pub async fn run(ctx: &mut Ctx, events: Events, commands: &mut mpsc::UnboundedReceiver<NetCommand>) {
    let why = connect_loop(ctx, &events, commands).await;
    let Some(why) = why else { return };
    while let Some(cmd) = commands.recv().await {
        refuse(&events, cmd, ClientError::Local(why.clone()));
    }
}

/// The sessions, one after another; returns why it gave up (`None`: the UI
/// is gone).
async fn connect_loop(
    ctx: &mut Ctx,
    events: &Events,
    commands: &mut mpsc::UnboundedReceiver<NetCommand>,
) -> Option<String> {
    let mut tracker: Option<InboxTracker> = None;
    let mut backoff = BACKOFF_START;
    // Connection attempts, for the status bar; like the backoff, only a
    // session that lasted starts the count again.
    let mut attempt = 0;
    let signed_out = || {
        let _ = events.send(NetEvent::Link(Link::SignedOut));
        Some(SIGNED_OUT.to_string())
    };
    loop {
        let (conn, auth) = {
            match ctx.session().await {
                Ok(s) => s,
                // The token was revoked (`session` forgot it), or another
                // `confab` on this profile logged out meanwhile.
                Err(Failure::Server(e)) if e.code() == Some(ErrorCode::INVALID_TOKEN) => return signed_out(),
                Err(Failure::Local(e)) if e.starts_with("not logged in") => return signed_out(),
                Err(Failure::Server(e)) if !e.is_retryable() => {
                    let _ = events.send(NetEvent::Link(Link::Failed(e.to_string())));
                    return Some(e.to_string());
                }
                // The certificate is not the pinned one: the user decides.
                // (A usage error cannot come from here; were it to, a retry
                // would not fix it either.)
                Err(Failure::Untrusted(e) | Failure::Usage(e)) => {
                    let _ = events.send(NetEvent::Link(Link::Failed(e.clone())));
                    return Some(e);
                }
                Err(Failure::Server(e)) => {
                    attempt += 1;
                    let wait = retry_after(&e).max(jitter(backoff));
                    if !pause(events, commands, e.to_string(), wait, attempt).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                Err(Failure::Local(e)) => {
                    attempt += 1;
                    let reason = short_reason(&e, &ctx.server());
                    if !pause(events, commands, reason, jitter(backoff), attempt).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        };
        let _ = events.send(NetEvent::Me { username: auth.username.clone(), user_id: auth.user_id });
        for note in ctx.held_notes.as_mut().map(std::mem::take).unwrap_or_default() {
            let _ = events.send(NetEvent::Done(note));
        }
        let started = Instant::now();
        let ended = match session(ctx, conn, &auth, &mut tracker, events, commands).await {
            Ok(ended) => ended,
            Err(e) => Ended::Lost(e.to_string()),
        };
        // A session that lasted resets the backoff; one that failed at once
        // (e.g. during catch-up) keeps growing it.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_START;
            attempt = 0;
        }
        attempt += 1;
        let (reason, wait) = match ended {
            Ended::Quit => return None,
            Ended::Revoked => {
                // Forget the token (spec errors.md, 204), as a failed resume
                // would.
                ctx.profile.clear_login();
                let _ = ctx.save();
                return signed_out();
            }
            Ended::Lost(reason) => (reason, jitter(backoff)),
            Ended::GoAway(reason, after) => (reason, after_goaway(after)),
        };
        if !pause(events, commands, reason, wait, attempt).await {
            return None;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection error without what the status bar already says: "cannot
/// connect: HOST:PORT: Connection refused (os error 111)" becomes
/// "Connection refused (os error 111)".
fn short_reason(error: &str, server: &str) -> String {
    let e = error.strip_prefix("cannot connect: ").unwrap_or(error);
    e.strip_prefix(server).and_then(|r| r.strip_prefix(": ")).unwrap_or(e).to_string()
}

fn retry_after(e: &ClientError) -> Duration {
    match e {
        ClientError::Server { retry_after_ms, .. } => Duration::from_millis(*retry_after_ms),
        _ => Duration::ZERO,
    }
}

/// ±50 % (spec/PROTOCOL.md §8.9).
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random::<u64>() % (ms + 1))
}

/// How long to wait after `GoAway`: `reconnect_after_ms` plus a jitter of
/// up to as much again, at least 0–1 s (spec §13), whatever the backoff, so
/// that the clients of a restarting server do not all come back at once.
fn after_goaway(after: Duration) -> Duration {
    let spread = after.max(Duration::from_secs(1)).as_millis() as u64;
    after + Duration::from_millis(rand::random::<u64>() % (spread + 1))
}

/// Shows "reconnecting" and waits, answering commands with "not
/// connected" meanwhile. Returns false when the UI is gone.
async fn pause(
    events: &Events,
    commands: &mut mpsc::UnboundedReceiver<NetCommand>,
    reason: String,
    wait: Duration,
    attempt: u32,
) -> bool {
    let _ = events.send(NetEvent::Link(Link::Reconnecting { reason, retry_at: Instant::now() + wait, attempt }));
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            cmd = commands.recv() => match cmd {
                None => return false,
                Some(cmd) => refuse(events, cmd, ClientError::Disconnected("not connected".into())),
            },
        }
    }
}

/// Answers a command that cannot run now.
fn refuse(events: &Events, cmd: NetCommand, error: ClientError) {
    let ev = match cmd {
        NetCommand::Send(s) => NetEvent::Sent { client_msg_id: s.client_msg_id, result: Err(error) },
        NetCommand::History { conversation_id, before_seq } => {
            NetEvent::History { conversation_id, before_seq, result: Err(error) }
        }
        NetCommand::MarkRead { conversation_id, .. } => NetEvent::ReadState { conversation_id, result: Err(error) },
        NetCommand::Typing { .. }
        | NetCommand::GetConversation { .. }
        | NetCommand::Subscribe { .. }
        | NetCommand::Receipts { .. } => return,
        other => NetEvent::Failed { what: describe(&other), error },
    };
    let _ = events.send(ev);
}

fn describe(cmd: &NetCommand) -> String {
    match cmd {
        NetCommand::OpenDirect { username } => format!("/dm @{username}"),
        NetCommand::CreateGroup { title, .. } => format!("/group create {title}"),
        NetCommand::AddMembers { .. } => "/add".into(),
        NetCommand::RemoveMember { .. } => "/remove".into(),
        NetCommand::Leave { .. } => "/leave".into(),
        NetCommand::Rename { .. } => "/rename".into(),
        NetCommand::Members { .. } => "/members".into(),
        NetCommand::SetRole { .. } => "/role".into(),
        NetCommand::Presence { .. } => "/presence".into(),
        other => format!("{other:?}"),
    }
}

/// Every conversation, following `has_more` (at most 20 pages).
async fn list_all(conn: &Connection) -> Result<Vec<pb::Conversation>, ClientError> {
    let mut all: Vec<pb::Conversation> = Vec::new();
    for _ in 0..20 {
        let (active_before_ms, before_conversation_id) =
            all.last().map_or((0, 0), |c| (c.activity_ms, c.conversation_id));
        let body = Body::ListConversations(pb::ListConversationsRequest {
            limit: 0,
            active_before_ms,
            before_conversation_id,
        });
        let Reply::ConversationList(page) = conn.request(body).await? else {
            return Err(ClientError::Unexpected("not a conversation list".into()));
        };
        let more = page.has_more && !page.conversations.is_empty();
        all.extend(page.conversations);
        if !more {
            break;
        }
    }
    Ok(all)
}

/// Pages the inbox after the tracker's position to the end.
async fn catch_up(conn: &Connection, tracker: &mut InboxTracker, events: &Events) -> Result<(), ClientError> {
    loop {
        let page = conn.sync(tracker.last(), 0).await?;
        let ready = tracker.apply_page(page.events);
        if !ready.is_empty() {
            let _ = events.send(NetEvent::Inbox(ready));
        }
        if !page.has_more {
            return Ok(());
        }
    }
}

/// Subscribes to these users' presence, in chunks the server accepts.
async fn subscribe(conn: &Connection, users: &[String], events: &Events) -> Result<(), ClientError> {
    let chunk = conn.limits().max_list_items.max(1) as usize;
    for part in users.chunks(chunk) {
        let refs: Vec<&str> = part.iter().map(String::as_str).collect();
        let _ = events.send(NetEvent::Presence(conn.subscribe_presence(&refs).await?));
    }
    Ok(())
}

async fn session(
    ctx: &mut Ctx,
    mut conn: Connection,
    auth: &pb::AuthOk,
    tracker: &mut Option<InboxTracker>,
    events: &Events,
    commands: &mut mpsc::UnboundedReceiver<NetCommand>,
) -> Result<Ended, ClientError> {
    // A first session builds its view from the list (and history as it is
    // viewed), then applies events after inbox_head on top (§8.7). A server
    // whose inbox is behind what this view applied has other data: rebuild.
    let rebuild = tracker.as_ref().is_none_or(|t| auth.inbox_head < t.last());
    let conversations = list_all(&conn).await?;
    let _ = events.send(NetEvent::Snapshot { conversations, rebuild });
    let tracker = match tracker {
        Some(t) if !rebuild => t,
        _ => tracker.insert(InboxTracker::new(auth.inbox_head)),
    };
    catch_up(&conn, tracker, events).await?;
    let server = ctx.connected.clone().unwrap_or_else(|| ctx.server());
    let transport = ctx.transport();
    let _ = events.send(NetEvent::Link(Link::Connected { server, transport }));

    let mut acked = ctx.profile.cursor;
    let mut ack_timer = tokio::time::interval(ACK_EVERY);
    loop {
        tokio::select! {
            ev = conn.next_event() => match ev {
                None => return Ok(Ended::Lost("connection closed".into())),
                Some(Event::Inbox(e)) => {
                    let offered = tracker.offer(e);
                    if !offered.ready.is_empty() {
                        let _ = events.send(NetEvent::Inbox(offered.ready));
                    }
                    if offered.gap {
                        catch_up(&conn, tracker, events).await?;
                    }
                }
                Some(Event::Presence(p)) => { let _ = events.send(NetEvent::Presence(vec![p])); }
                Some(Event::Typing(t)) => { let _ = events.send(NetEvent::Typing(t)); }
                Some(Event::ReadReceipt(r)) => { let _ = events.send(NetEvent::ReadReceipt(r)); }
                Some(Event::GoAway(g)) => {
                    let reason = if g.message.is_empty() { "the server is going away".to_string() } else { format!("server: {}", g.message) };
                    return Ok(Ended::GoAway(reason, Duration::from_millis(g.reconnect_after_ms)));
                }
                Some(Event::Error(e)) if e.code == ErrorCode::DEVICE_REVOKED.0 => return Ok(Ended::Revoked),
                Some(Event::Error(e)) => {
                    let error = ClientError::Server { code: confab_protocol::ErrorCode(e.code), message: e.message, retry_after_ms: e.retry_after_ms };
                    let _ = events.send(NetEvent::Failed { what: "session".into(), error });
                }
                Some(Event::Closed(e)) if e.code() == Some(ErrorCode::DEVICE_REVOKED) => return Ok(Ended::Revoked),
                Some(Event::Closed(e)) => return Ok(Ended::Lost(e.to_string())),
            },
            cmd = commands.recv() => match cmd {
                None => {
                    if tracker.last() > acked && conn.ack_cursor(tracker.last()).await.is_ok() {
                        ctx.profile.cursor = tracker.last();
                    }
                    conn.close();
                    // quinn sends the close from its endpoint task, which
                    // stops with the runtime: wait for it, or the server
                    // would only notice the heartbeat timeout and show this
                    // user online until then.
                    confab_client::finish_closing().await;
                    return Ok(Ended::Quit);
                }
                Some(cmd) => perform(&conn, cmd, events).await,
            },
            _ = ack_timer.tick() => {
                if tracker.last() > acked {
                    conn.ack_cursor(tracker.last()).await?;
                    acked = tracker.last();
                    ctx.profile.cursor = acked;
                    // A profile that cannot be written only costs a longer
                    // catch-up next time.
                    let _ = ctx.save();
                }
            }
        }
    }
}

/// Runs one UI request and reports its outcome.
async fn perform(conn: &Connection, cmd: NetCommand, events: &Events) {
    let what = describe(&cmd);
    let ev = match cmd {
        NetCommand::Send(s) => {
            let result = conn.send(s.conversation_id, &s.client_msg_id, &s.text).await;
            let result =
                result.and_then(|sent| sent.message.ok_or_else(|| ClientError::Unexpected("empty Sent".into())));
            NetEvent::Sent { client_msg_id: s.client_msg_id, result }
        }
        NetCommand::History { conversation_id, before_seq } => {
            let req = pb::HistoryRequest { conversation_id, before_seq, after_seq: 0, limit: 0, oldest_first: false };
            NetEvent::History { conversation_id, before_seq, result: conn.history_request(req).await }
        }
        NetCommand::MarkRead { conversation_id, seq } => {
            NetEvent::ReadState { conversation_id, result: conn.mark_read(conversation_id, seq).await }
        }
        NetCommand::Typing { conversation_id } => {
            let _ = conn.typing(conversation_id);
            return;
        }
        NetCommand::OpenDirect { username } => match conn.open_direct(&username).await {
            Ok(c) => NetEvent::Opened(c),
            Err(error) => NetEvent::Failed { what, error },
        },
        NetCommand::CreateGroup { title, usernames } => {
            let refs: Vec<&str> = usernames.iter().map(String::as_str).collect();
            match conn.create_group(&title, &refs).await {
                Ok(c) => NetEvent::Opened(c),
                Err(error) => NetEvent::Failed { what, error },
            }
        }
        NetCommand::AddMembers { conversation_id, usernames } => {
            let refs: Vec<&str> = usernames.iter().map(String::as_str).collect();
            match conn.add_members(conversation_id, &refs).await {
                Ok(()) => NetEvent::Done(format!("added {}", usernames.join(", "))),
                Err(error) => NetEvent::Failed { what, error },
            }
        }
        NetCommand::RemoveMember { conversation_id, username } => {
            match conn.remove_member(conversation_id, &username).await {
                Ok(()) => NetEvent::Done(format!("removed {username}")),
                Err(error) => NetEvent::Failed { what, error },
            }
        }
        NetCommand::Leave { conversation_id } => match conn.leave_group(conversation_id).await {
            Ok(()) => NetEvent::Done("you left the group".into()),
            Err(error) => NetEvent::Failed { what, error },
        },
        NetCommand::Rename { conversation_id, title } => match conn.rename_group(conversation_id, &title).await {
            Ok(()) => NetEvent::Done(format!("renamed to \"{title}\"")),
            Err(error) => NetEvent::Failed { what, error },
        },
        NetCommand::Members { conversation_id } => match conn.list_members(conversation_id).await {
            Ok(members) => NetEvent::Members { conversation_id, members },
            Err(error) => NetEvent::Failed { what, error },
        },
        NetCommand::SetRole { conversation_id, username, role } => {
            match conn.set_role(conversation_id, &username, role).await {
                Ok(()) => NetEvent::Done(format!("{username} is now {}", role_word(role))),
                Err(error) => NetEvent::Failed { what, error },
            }
        }
        NetCommand::Receipts { conversation_id } => match conn.read_receipts(conversation_id).await {
            Ok(receipts) => NetEvent::Receipts { conversation_id, receipts },
            // Decoration: a group just left answers 311, shown elsewhere.
            Err(_) => return,
        },
        NetCommand::Presence { usernames } => {
            let refs: Vec<&str> = usernames.iter().map(String::as_str).collect();
            match conn.subscribe_presence(&refs).await {
                Ok(p) => NetEvent::PresenceAnswer(p),
                Err(error) => NetEvent::Failed { what, error },
            }
        }
        NetCommand::Subscribe { usernames } => {
            // Presence is decoration: a refusal (e.g. too many
            // subscriptions) only leaves the dots grey.
            let _ = subscribe(conn, &usernames, events).await;
            return;
        }
        NetCommand::GetConversation { conversation_id } => match conn.get_conversation(conversation_id).await {
            Ok(c) => NetEvent::Conversation(c),
            Err(_) => return,
        },
    };
    let _ = events.send(ev);
}

/// A role as a word: owner, admin or member.
pub fn role_word(role: pb::MemberRole) -> &'static str {
    match role {
        pb::MemberRole::Owner => "owner",
        pb::MemberRole::Admin => "admin",
        _ => "member",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_goaway_it_waits_reconnect_after_ms_plus_a_jitter() {
        let ms = |d: Duration| d.as_millis();
        let waits: Vec<u128> = (0..200).map(|_| ms(after_goaway(Duration::from_millis(1500)))).collect();
        assert!(waits.iter().all(|w| (1500..=3000).contains(w)), "{waits:?}");
        assert!(waits.iter().any(|w| *w > 1600), "jittered: {waits:?}");
        let waits: Vec<u128> = (0..200).map(|_| ms(after_goaway(Duration::ZERO))).collect();
        assert!(waits.iter().all(|w| *w <= 1000), "at least 0-1 s of jitter: {waits:?}");
        assert!(waits.iter().any(|w| *w > 100), "{waits:?}");
    }
}
