//! Server conformance: black-box scenarios against any server that claims
//! the protocol, each naming the section of spec/PROTOCOL.md it checks.
//!
//! Scenarios share four users signed up at the start (signups are
//! rate-limited per address), resume their devices' tokens for sessions,
//! and make their own conversations, so they can run in any order and
//! against a server with other traffic. Scenarios that depend on a server
//! setting the protocol does not advertise are skipped unless the command
//! line says what the setting is.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_protocol::ErrorCode;
use confab_protocol::pb::{self, client_frame::Body, inbox_event::Event, server_frame::Body as Reply};
use rand::Rng;

use crate::report::{Outcome, Report};
use crate::vectors;
use crate::wire::{Fallible, Peer, Recv, Target, Transport, describe, error_code};

/// What the suite knows about the server beyond what `Welcome` says.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The presence grace period (spec §9.1), when known: enables the
    /// "goes offline" scenario.
    pub presence_grace_ms: Option<u64>,
    /// The server cuts off a session that stops reading after at most this
    /// many bytes queued (its outbound queue): enables the slow-consumer
    /// scenario (spec §8.9).
    pub outbound_queue_bytes: Option<u64>,
    /// The handshake deadline (§4.1), when known: enables
    /// handshake.timeout.
    pub handshake_timeout_ms: Option<u64>,
    /// The authentication deadline (§4.1), when known: enables
    /// auth.timeout.
    pub auth_timeout_ms: Option<u64>,
    /// Run the checks that wait 2.5 heartbeat intervals (50 s at the
    /// default interval).
    pub slow: bool,
    /// A shell command that shuts the server down gracefully (e.g.
    /// `kill -TERM 1234`): enables shutdown.goaway, which runs last.
    pub shutdown_command: Option<String>,
}

/// The suite's options.
#[derive(Clone)]
pub struct Options {
    /// The server.
    pub target: Target,
    /// Settings known out of band.
    pub settings: Settings,
    /// Run only scenarios whose id contains one of these (all when empty).
    pub only: Vec<String>,
}

/// One user of the shared pool.
#[derive(Debug, Clone)]
pub struct User {
    /// Username.
    pub name: String,
    /// Password.
    pub password: String,
    /// The token of the device made at signup.
    pub token: String,
    /// Its user id.
    pub user_id: u64,
}

/// What a scenario gets.
pub struct Ctx {
    /// The server.
    pub target: Target,
    /// The limits of its Welcome.
    pub limits: pb::Limits,
    /// The pool: a, b, c, d.
    pub users: Vec<User>,
    /// Settings known out of band.
    pub settings: Settings,
    /// Unique per run: client_msg_ids and titles carry it.
    pub run: String,
}

type Run = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Fallible<Verdict>> + Send + 'a>>;

/// A scenario's result when it did not fail.
pub enum Verdict {
    /// Everything it checks holds.
    Pass,
    /// It could not run here (and why).
    Skip(String),
}

/// A scenario: an id, the spec section, what it checks.
pub struct Scenario {
    /// Stable id (`area.what`).
    pub id: &'static str,
    /// The section of spec/PROTOCOL.md.
    pub section: &'static str,
    /// What holds when it passes.
    pub title: &'static str,
    run: Run,
}

macro_rules! scenarios {
    ($( $id:literal, $section:literal, $title:literal => $f:ident; )*) => {
        /// Every scenario, in the order they run.
        pub fn all() -> Vec<Scenario> {
            vec![$( Scenario { id: $id, section: $section, title: $title, run: |c| Box::pin($f(c)) }, )*]
        }
    };
}

scenarios! {
    "handshake.welcome", "§4.2", "Hello gets a Welcome with version 1, every limit and a sane heartbeat" => welcome;
    "handshake.unsupported_version", "§4.2", "a Hello with no version the server speaks gets a fatal UNSUPPORTED_VERSION, then the close" => unsupported_version;
    "handshake.ping", "§4.6", "a PingRequest gets a Pong with the same nonce" => ping;
    "handshake.timeout", "§4.1", "a connection that sends no Hello is closed with a fatal HANDSHAKE_TIMEOUT after the deadline" => handshake_timeout;
    "auth.timeout", "§4.1", "a session that does not authenticate is closed with a fatal AUTH_TIMEOUT after the deadline" => auth_timeout;
    "heartbeat.timeout", "§4.6", "a session that sends nothing for 2.5 heartbeat intervals is closed with a fatal HEARTBEAT_TIMEOUT" => heartbeat_timeout;
    "auth.required", "§4.1", "a request before authentication gets UNAUTHENTICATED and the session goes on" => auth_required;
    "errors.malformed_streak", "§3", "malformed frames get MALFORMED_FRAME with their request_id; a well-formed one resets the count; the eighth in a row gets a fatal PROTOCOL_VIOLATION, then the close" => malformed_streak;
    "errors.refused_streak", "§4.3", "frames refused by §4.3 rules 4, 6 and 7 get 102, 106 and 105; a request that passes resets the count; the 65th in a row gets a fatal PROTOCOL_VIOLATION, then the close" => refused_streak;
    "quic.request_streams", "§2.1", "with request-streams, a request stream serves a ping; a body not allowed there, bytes after the frame and a FIN inside the frame get PROTOCOL_VIOLATION, not fatal, on that stream, and nothing is stored" => request_streams;
    "quic.no_request_streams", "§2.1", "without request-streams negotiated, a further bidirectional stream is reset with code 109 and nothing is served on it; the session goes on" => no_request_streams;
    "accounts.username_taken", "§6.1", "signing up with a taken username gets USERNAME_TAKEN" => username_taken;
    "accounts.wrong_password", "§6.2", "a wrong password gets INVALID_CREDENTIALS, not fatal" => wrong_password;
    "accounts.bad_token", "§6.3", "resuming with an unknown token gets INVALID_TOKEN" => bad_token;
    "accounts.devices", "§6.5", "the device list names this device as current" => devices;
    "accounts.logout", "§6.4", "logout answers Done, returns the session to Unauthenticated and revokes the token" => logout;
    "accounts.revoke", "§6.5", "a revoked device's live session ends with a fatal DEVICE_REVOKED and its token stops working" => revoke;
    "dm.self", "§7.1", "opening a DM with oneself gets CANNOT_MESSAGE_SELF" => dm_self;
    "dm.unknown_user", "§7.1", "opening a DM with an unknown user gets USER_NOT_FOUND" => dm_unknown;
    "dm.open_twice", "§7.1", "opening the same DM twice gives the same conversation" => dm_twice;
    "group.create", "§7.2", "a new group has its members; each gets a joined event, live" => group_create;
    "group.membership", "§7.2", "an added member joins, a removed one gets a left event and can no longer send" => group_membership;
    "group.permissions", "§7.2", "a plain member cannot remove another: PERMISSION_DENIED" => group_permissions;
    "send.live", "§8.1, §8.3", "messages get consecutive seqs and reach the other member live, in order, with consecutive inbox_seqs" => send_live;
    "send.idempotent", "§8.2", "a resend with the same client_msg_id gets the same message, duplicate = true, stored once" => send_idempotent;
    "send.length", "§8.1, §12", "max_message_chars Unicode scalars are accepted, one more gets MESSAGE_TOO_LONG" => send_length;
    "send.not_member", "§8.1", "sending to a conversation one is not in gets CONVERSATION_NOT_FOUND" => send_not_member;
    "send.check_order", "§8.1", "the text is checked before membership and idempotency: an outsider's empty text, and a stored client_msg_id resent with an empty or too long text, get EMPTY_MESSAGE or MESSAGE_TOO_LONG" => send_check_order;
    "errors.device_not_found", "§6.5", "revoking a device that is not one's own gets DEVICE_NOT_FOUND" => device_not_found;
    "errors.not_a_group", "§7.2", "a group request on a direct conversation gets NOT_A_GROUP" => not_a_group;
    "errors.refused_by_user", "§6.7", "after the recipient blocks the sender, a send gets REFUSED_BY_USER and stores nothing" => refused_by_user;
    "errors.feature_unavailable", "§10.1", "registering a Web Push target on a server whose Welcome has no vapid_public_key gets FEATURE_UNAVAILABLE" => feature_unavailable;
    "catchup.offline", "§8.4, §8.7", "what arrives while a device is offline is synced after resume, in order, nothing missing, and the acked cursor is kept" => catchup;
    "sync.paging", "§8.4", "sync pages by limit with has_more and no gaps" => sync_paging;
    "history.paging", "§8.8", "history pages come in ascending seq from the newest end, bounded by before_seq or after_seq (not both), or from seq 1 with oldest_first" => history_paging;
    "devices.in_sync", "§8.3", "a message reaches every device of the recipient and the sender's other devices" => devices_in_sync;
    "read.receipts", "§8.10", "mark_read answers ReadState, the DM peer gets a live receipt, the reader's other device a read event" => read_receipts;
    "read.group_list", "§8.10", "ReadReceiptsRequest in a group lists every member ordered by user_id" => read_group_list;
    "read.group_receipt", "§8.10", "in a group, the author of the newest message read gets the reader's receipt live, the other members do not" => read_group_receipt;
    "presence.subscribe", "§9.2", "subscribing reports a user with a live session online, duplicates removed" => presence_subscribe;
    "presence.offline", "§9.1", "a user whose last session ends is reported offline after the grace period, with last_seen" => presence_offline;
    "typing.dm", "§9.4", "a typing notice reaches the other member with an expiry, and not the sender" => typing;
    "limits.send_rate", "§12", "sending past send_burst gets RATE_LIMITED with retry_after_ms, not fatal" => send_rate;
    "slow_consumer.cut_off", "§8.9", "a session that stops reading is cut off, and syncs everything after resuming" => slow_consumer;
    "errors.group_full", "§7.2, §12", "adding a member past max_group_members gets GROUP_FULL and adds nobody" => group_full;
    "errors.too_many_devices", "§6.5, §12", "a login past max_devices gets TOO_MANY_DEVICES, not fatal, and makes no device" => too_many_devices;
    "shutdown.goaway", "§13", "a server shutting down says GoAway (SHUTTING_DOWN, reconnect_after_ms), then the fatal SHUTTING_DOWN, then closes" => shutdown;
}

// ----- the runner ------------------------------------------------------------------

/// Runs the suite; every scenario's outcome is in the report (the runner
/// itself fails only when the pool of users cannot be made).
pub async fn run(opts: &Options, report: &mut Report) -> Fallible<()> {
    let target = &opts.target;
    let mut first = Peer::connect(target).await?;
    let welcome = first.hello().await?;
    let limits = welcome.limits.unwrap_or_default();
    let run: String = {
        let mut rng = rand::thread_rng();
        (0..6).map(|_| char::from(b'a' + rng.gen_range(0..26u8))).collect()
    };
    let mut users = Vec::new();
    for who in ["a", "b", "c", "d"] {
        let name = format!("cf{run}{who}");
        let password = format!("conformance-{run}-{who}-{}", rand::thread_rng().gen_range(100_000..999_999));
        let mut p = Peer::connect(target).await?;
        p.hello().await?;
        let ok = p
            .signup(&name, &password, "conformance")
            .await
            .map_err(|e| format!("making the suite's users: {e} (the server may limit signups per address: use a fresh server or raise the limit)"))?;
        users.push(User { name, password, token: ok.token, user_id: ok.user_id });
    }
    drop(first);
    let ctx = Ctx { target: target.clone(), limits, users, settings: opts.settings.clone(), run };

    let (last, first): (Vec<Scenario>, Vec<Scenario>) = all().into_iter().partition(|s| s.id == "shutdown.goaway");
    run_each(&ctx, first, &opts.only, report).await;
    if opts.only.is_empty() || opts.only.iter().any(|o| "vector".contains(o.as_str()) || o.starts_with("vector")) {
        vectors::replay_all(&ctx, report, &opts.only).await;
    }
    // Last: it stops the server.
    run_each(&ctx, last, &opts.only, report).await;
    Ok(())
}

/// Runs the scenarios `only` selects, each within 120 s, into `report`.
async fn run_each(ctx: &Ctx, scenarios: Vec<Scenario>, only: &[String], report: &mut Report) {
    for s in scenarios {
        if !only.is_empty() && !only.iter().any(|o| s.id.contains(o.as_str())) {
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(Duration::from_secs(120), (s.run)(ctx)).await {
            Ok(Ok(Verdict::Pass)) => Outcome::Pass,
            Ok(Ok(Verdict::Skip(why))) => Outcome::Skip(why),
            Ok(Err(why)) => Outcome::Fail(why),
            Err(_) => Outcome::Fail("did not finish within 120 s".into()),
        };
        report.add(s.id, s.section, s.title, outcome, started.elapsed());
    }
}

// ----- helpers -------------------------------------------------------------------

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

const PASS: Fallible<Verdict> = Ok(Verdict::Pass);
const LIVE: Duration = Duration::from_secs(10);

impl Ctx {
    /// A session of pool user `i`'s signup device.
    pub async fn session(&self, i: usize) -> Fallible<Peer> {
        let mut p = Peer::connect(&self.target).await?;
        p.hello().await?;
        p.resume(&self.users[i].token).await?;
        Ok(p)
    }

    /// A session that has only done the handshake.
    pub async fn hello(&self) -> Fallible<Peer> {
        let mut p = Peer::connect(&self.target).await?;
        p.hello().await?;
        Ok(p)
    }

    fn name(&self, i: usize) -> &str {
        &self.users[i].name
    }

    /// A client_msg_id unique to this run.
    fn msg_id(&self, what: &str) -> String {
        format!("{}-{what}-{}", self.run, rand::thread_rng().gen_range(0..u32::MAX))
    }
}

fn expect_error(r: Fallible<Reply>, code: ErrorCode, what: &str) -> Fallible<pb::Error> {
    let r = r?;
    let (got, _) = error_code(&r).map_err(|e| format!("{what}: {e}, not {code}"))?;
    ensure!(got == code, "{what}: got {got}, expected {code}");
    match r {
        Reply::Error(e) => Ok(e),
        _ => Err("unreachable".into()),
    }
}

async fn open_direct(p: &mut Peer, username: &str) -> Fallible<pb::Conversation> {
    match p.request(Body::OpenDirect(pb::OpenDirectRequest { username: username.into() })).await? {
        Reply::Conversation(c) => Ok(c),
        other => Err(format!("open_direct {username}: {}", describe(&other))),
    }
}

async fn create_group(p: &mut Peer, title: &str, usernames: &[&str]) -> Fallible<pb::Conversation> {
    let body = Body::CreateGroup(pb::CreateGroupRequest {
        title: title.into(),
        usernames: usernames.iter().map(|s| s.to_string()).collect(),
    });
    match p.request(body).await? {
        Reply::Conversation(c) => Ok(c),
        other => Err(format!("create_group: {}", describe(&other))),
    }
}

async fn send(p: &mut Peer, conversation_id: u64, client_msg_id: &str, text: &str) -> Fallible<pb::Sent> {
    let body = Body::Send(pb::SendRequest { conversation_id, client_msg_id: client_msg_id.into(), text: text.into() });
    match p.request(body).await? {
        Reply::Sent(s) => Ok(s),
        other => Err(format!("send: {}", describe(&other))),
    }
}

fn sent_seq(s: &pb::Sent) -> Fallible<u64> {
    s.message.as_ref().map(|m| m.seq).ok_or_else(|| "Sent without a message".to_string())
}

async fn sync(p: &mut Peer, after: u64, limit: u32) -> Fallible<pb::SyncPage> {
    match p.request(Body::Sync(pb::SyncRequest { after, limit })).await? {
        Reply::SyncPage(s) => Ok(s),
        other => Err(format!("sync: {}", describe(&other))),
    }
}

async fn history(p: &mut Peer, req: pb::HistoryRequest) -> Fallible<pb::HistoryPage> {
    match p.request(Body::History(req)).await? {
        Reply::HistoryPage(h) => Ok(h),
        other => Err(format!("history: {}", describe(&other))),
    }
}

/// The next live message event in `conversation` (other frames skipped).
async fn live_message(p: &mut Peer, conversation: u64) -> Fallible<(u64, pb::Message)> {
    let f = p
        .until(LIVE, "live message event", |f| {
            matches!(&f.body, Some(Reply::Event(pb::InboxEvent { event: Some(Event::Message(m)), .. })) if m.conversation_id == conversation && matches!(m.content, Some(pb::message::Content::Text(_))))
        })
        .await?;
    match f.body {
        Some(Reply::Event(pb::InboxEvent { inbox_seq, event: Some(Event::Message(m)) })) => Ok((inbox_seq, m)),
        _ => Err("unreachable".into()),
    }
}

fn text_of(m: &pb::Message) -> &str {
    match &m.content {
        Some(pb::message::Content::Text(t)) => t,
        _ => "",
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ----- handshake -----------------------------------------------------------------

async fn welcome(c: &Ctx) -> Fallible<Verdict> {
    let mut p = Peer::connect(&c.target).await?;
    let w = p.hello().await?;
    ensure!(w.version == 1, "Welcome.version {} (the Hello offered only 1)", w.version);
    let l = w.limits.ok_or("Welcome has no limits")?;
    for (name, v) in [
        ("max_frame_bytes", l.max_frame_bytes),
        ("max_message_chars", l.max_message_chars),
        ("max_group_members", l.max_group_members),
        ("max_page_size", l.max_page_size),
        ("max_in_flight", l.max_in_flight),
        ("send_rate_per_sec", l.send_rate_per_sec),
        ("send_burst", l.send_burst),
        ("request_rate_per_sec", l.request_rate_per_sec),
        ("request_burst", l.request_burst),
        ("max_list_items", l.max_list_items),
    ] {
        ensure!(v > 0, "Limits.{name} is 0 (§12: every limit is advertised)");
    }
    ensure!(
        w.heartbeat_interval_ms >= 1000,
        "heartbeat_interval_ms {} is below the 1,000 ms floor (§4.6)",
        w.heartbeat_interval_ms
    );
    let skew = (w.server_time_ms - now_ms()).abs();
    ensure!(skew < 5 * 60 * 1000, "server_time_ms is {skew} ms off this machine's clock");
    ensure!(
        !w.capabilities.iter().any(|cap| !c.target.transport.eq(&Transport::Quic) && cap == "typing-datagram"),
        "typing-datagram offered on {} (QUIC only, §11)",
        c.target.transport.name()
    );
    PASS
}

async fn unsupported_version(c: &Ctx) -> Fallible<Verdict> {
    let mut p = Peer::connect(&c.target).await?;
    p.send(7, Body::Hello(pb::Hello { versions: vec![999], ..Default::default() })).await?;
    let e = p.until_fatal(LIVE).await?;
    ensure!(
        e.code == ErrorCode::UNSUPPORTED_VERSION.0,
        "got {} ({}), expected UNSUPPORTED_VERSION (103)",
        ErrorCode(e.code),
        e.code
    );
    PASS
}

async fn ping(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.hello().await?;
    match p.request(Body::Ping(pb::PingRequest { nonce: 0xC0FFEE })).await? {
        Reply::Pong(pong) => {
            ensure!(pong.nonce == 0xC0FFEE, "Pong.nonce {} is not the PingRequest's", pong.nonce);
            PASS
        }
        other => Err(format!("ping: {}", describe(&other))),
    }
}

/// Waits for the fatal `code` on `p` no sooner than `at_least` and no later
/// than `at_most` from `since`.
async fn closed_with(
    p: &mut Peer,
    code: ErrorCode,
    since: std::time::Instant,
    at_least: Duration,
    at_most: Duration,
) -> Fallible<Verdict> {
    let e = p.until_fatal(at_most + Duration::from_secs(2)).await?;
    let took = since.elapsed();
    ensure!(e.code == code.0, "closed with {} ({}), expected {code} ({})", ErrorCode(e.code), e.code, code.0);
    ensure!(
        took + Duration::from_millis(200) >= at_least,
        "closed after {} ms, before the deadline of {} ms",
        took.as_millis(),
        at_least.as_millis()
    );
    ensure!(
        took <= at_most + Duration::from_secs(2),
        "closed only after {} ms (deadline {} ms)",
        took.as_millis(),
        at_most.as_millis()
    );
    PASS
}

async fn handshake_timeout(c: &Ctx) -> Fallible<Verdict> {
    let Some(ms) = c.settings.handshake_timeout_ms else {
        return Ok(Verdict::Skip("needs the server's handshake deadline: --handshake-timeout-ms".into()));
    };
    let since = std::time::Instant::now();
    let mut p = Peer::connect(&c.target).await?;
    let d = Duration::from_millis(ms);
    if let Some(conn) = p.quic() {
        // Nothing sent: the session stream does not exist yet, so there is
        // nowhere to write the Error; the connection's close code says it
        // (§2.1).
        let closed = tokio::time::timeout(d + Duration::from_secs(2), conn.closed())
            .await
            .map_err(|_| format!("still open {} ms after the deadline", 2000))?;
        let took = since.elapsed();
        ensure!(
            took + Duration::from_millis(700) >= d,
            "closed after {} ms, before the {ms} ms deadline",
            took.as_millis()
        );
        return match closed {
            quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(107) => PASS,
            other => Err(format!("the connection ended with {other}, not application close 107 (HANDSHAKE_TIMEOUT)")),
        };
    }
    closed_with(&mut p, ErrorCode::HANDSHAKE_TIMEOUT, since, d.saturating_sub(Duration::from_millis(500)), d).await
}

async fn auth_timeout(c: &Ctx) -> Fallible<Verdict> {
    let Some(ms) = c.settings.auth_timeout_ms else {
        return Ok(Verdict::Skip("needs the server's authentication deadline: --auth-timeout-ms".into()));
    };
    let mut p = c.hello().await?;
    let since = std::time::Instant::now();
    // Pings keep the heartbeat satisfied; only authentication is missing.
    let d = Duration::from_millis(ms);
    let pinger = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let id = p.next_id();
            if p.send(id, Body::Ping(pb::PingRequest { nonce: id })).await.is_err()
                || since.elapsed() > d + Duration::from_secs(3)
            {
                break;
            }
            match p.recv_within(Duration::from_secs(2)).await {
                Ok(Recv::Frame(pb::ServerFrame { body: Some(Reply::Error(e)), .. })) if e.fatal => return Ok(e),
                Ok(Recv::Frame(_)) => {}
                Ok(_) => return Err("closed without a fatal Error".to_string()),
                Err(e) => return Err(e),
            }
        }
        Err(format!("still open {} ms after the deadline", (since.elapsed().saturating_sub(d)).as_millis()))
    };
    let e = pinger.await?;
    let took = since.elapsed();
    ensure!(
        e.code == ErrorCode::AUTH_TIMEOUT.0,
        "closed with {} ({}), expected AUTH_TIMEOUT (110)",
        ErrorCode(e.code),
        e.code
    );
    ensure!(
        took + Duration::from_millis(600) >= d,
        "closed after {} ms, before the {ms} ms deadline",
        took.as_millis()
    );
    PASS
}

async fn heartbeat_timeout(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(3).await?;
    let hb = u64::from(p.welcome.as_ref().map_or(20_000, |w| w.heartbeat_interval_ms));
    if !c.settings.slow && hb > 2000 {
        return Ok(Verdict::Skip(format!("waits 2.5 heartbeat intervals ({} s here): --slow", hb * 5 / 2000)));
    }
    let since = std::time::Instant::now();
    let d = Duration::from_millis(hb * 5 / 2);
    closed_with(
        &mut p,
        ErrorCode::HEARTBEAT_TIMEOUT,
        since,
        d.saturating_sub(Duration::from_millis(500)),
        d + Duration::from_millis(hb),
    )
    .await
}

async fn auth_required(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.hello().await?;
    let e = expect_error(
        p.request(Body::Sync(pb::SyncRequest { after: 0, limit: 0 })).await,
        ErrorCode::UNAUTHENTICATED,
        "sync before auth",
    )?;
    ensure!(!e.fatal, "UNAUTHENTICATED was fatal");
    // The session goes on: it can still authenticate.
    p.resume(&c.users[0].token).await?;
    PASS
}

/// The next `Error` on `p` (other frames skipped) and the request_id it
/// carried.
async fn next_error(p: &mut Peer, what: &str) -> Fallible<(u64, pb::Error)> {
    let f = p.until(LIVE, &format!("an Error for {what}"), |f| matches!(f.body, Some(Reply::Error(_)))).await?;
    match f.body {
        Some(Reply::Error(e)) => Ok((f.request_id, e)),
        _ => Err("unreachable: not an Error".into()),
    }
}

/// An Error and its request_id as a failure message shows them.
fn show(request_id: u64, e: &pb::Error) -> String {
    format!("{} request_id {request_id}{}", ErrorCode(e.code), if e.fatal { " fatal" } else { "" })
}

/// The WebSocket close status after a fatal `code` (§2.3).
fn ws_close_status(code: ErrorCode) -> u16 {
    match code.0 {
        101 => 1009,
        502 => 1001,
        500..=599 => 1011,
        _ => 1008,
    }
}

/// After the fatal `code` and the close (`status`, its WebSocket close
/// status): the transport said the same, as the QUIC application close code
/// (§2.1) or the WebSocket close status (§2.3).
async fn check_close(p: &mut Peer, code: ErrorCode, status: Option<u16>) -> Fallible<()> {
    if p.is_ws() {
        let want = ws_close_status(code);
        ensure!(
            status == Some(want),
            "the WebSocket closed with status {status:?} after {code}, expected {want} (§2.3)"
        );
    }
    if let Some(conn) = p.quic() {
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .map_err(|_| "the QUIC connection stayed open 5 s after the fatal Error".to_string())?;
        match closed {
            quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(code.0) => {}
            other => {
                return Err(format!(
                    "the QUIC connection ended with {other}, not an application close with code {} (§2.1)",
                    code.0
                ));
            }
        }
    }
    Ok(())
}

/// A frame's bytes: `request_id`, then field 10 (`hello`) announcing 5
/// bytes and holding 1. Malformed to every protobuf parser (not a wrong
/// wire type, which stock parsers keep as an unknown field), and the
/// request_id before the damage can be read (like the vector
/// `invalid/truncated_nested_field`).
fn malformed_payload(request_id: u64) -> Vec<u8> {
    let mut b = vec![0x08];
    prost::encoding::encode_varint(request_id, &mut b);
    b.extend_from_slice(&[0x52, 0x05, 0x00]);
    b
}

async fn malformed_streak(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(0).await?;
    // Seven in a row, a ping, then eight in a row: only the last ends it.
    for (round, count) in [(1, 7), (2, 8)] {
        for n in 1..=count {
            let id = p.next_id();
            p.send_payload(&malformed_payload(id)).await?;
            let what = format!("malformed frame {n} of round {round}");
            let (rid, e) = next_error(&mut p, &what).await?;
            if n < 8 {
                ensure!(
                    e.code == ErrorCode::MALFORMED_FRAME.0 && rid == id && !e.fatal,
                    "{what} ({} in a row) got {}, expected MALFORMED_FRAME (100) request_id {id}, not fatal",
                    n,
                    show(rid, &e)
                );
            } else {
                ensure!(
                    e.code == ErrorCode::PROTOCOL_VIOLATION.0 && rid == 0 && e.fatal,
                    "the eighth malformed frame in a row got {}, expected PROTOCOL_VIOLATION (109) request_id 0 fatal",
                    show(rid, &e)
                );
                let status = p.closed_after_fatal().await?;
                check_close(&mut p, ErrorCode::PROTOCOL_VIOLATION, status).await?;
            }
        }
        if round == 1 {
            match p.request(Body::Ping(pb::PingRequest { nonce: 8 })).await? {
                Reply::Pong(_) => {}
                other => return Err(format!("a ping after seven malformed frames: {}", describe(&other))),
            }
        }
    }
    PASS
}

async fn refused_streak(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(0).await?;
    // Refusals by rule 4 (no body: 102), rule 6 (request_id 0: 106, with
    // request_id 0) and rule 7 (Hello when authenticated: 105), in turn;
    // 64 in a row, a ping (it passes rule 7), then 65 in a row.
    for (round, count) in [(1, 64), (2, 65)] {
        for n in 1..=count {
            let (rid_sent, want) = match n % 3 {
                0 => {
                    let id = p.next_id();
                    let empty = prost::Message::encode_to_vec(&pb::ClientFrame { request_id: id, body: None });
                    p.send_payload(&empty).await?;
                    (id, ErrorCode::UNKNOWN_REQUEST)
                }
                1 => {
                    p.send(0, Body::Ping(pb::PingRequest { nonce: n })).await?;
                    (0, ErrorCode::INVALID_REQUEST_ID)
                }
                _ => {
                    let id = p.next_id();
                    p.send(id, Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })).await?;
                    (id, ErrorCode::INVALID_STATE)
                }
            };
            let what = format!("refused frame {n} of round {round}");
            let (rid, e) = next_error(&mut p, &what).await?;
            if n <= 64 {
                ensure!(
                    e.code == want.0 && rid == rid_sent && !e.fatal,
                    "{what} ({n} in a row) got {}, expected {want} request_id {rid_sent}, not fatal",
                    show(rid, &e)
                );
            } else {
                ensure!(
                    e.code == ErrorCode::PROTOCOL_VIOLATION.0 && rid == 0 && e.fatal,
                    "the 65th refused frame in a row got {}, expected PROTOCOL_VIOLATION (109) request_id 0 fatal",
                    show(rid, &e)
                );
                let status = p.closed_after_fatal().await?;
                check_close(&mut p, ErrorCode::PROTOCOL_VIOLATION, status).await?;
            }
        }
        if round == 1 {
            match p.request(Body::Ping(pb::PingRequest { nonce: 64 })).await? {
                Reply::Pong(_) => {}
                other => return Err(format!("a ping after 64 refused frames: {}", describe(&other))),
            }
        }
    }
    PASS
}

/// A frame with its length prefix, as a request stream carries it.
fn prefixed(request_id: u64, body: Body) -> Vec<u8> {
    confab_protocol::framing::frame_bytes(&pb::ClientFrame { request_id, body: Some(body) }).to_vec()
}

/// What came back on a QUIC request stream.
enum StreamAnswer {
    /// The frames the server wrote before finishing the stream.
    Frames(Vec<pb::ServerFrame>),
    /// The server reset the stream with this code.
    Reset(u64),
}

/// Opens a bidirectional stream, writes `bytes`, finishes it, and reads
/// to the end.
async fn on_request_stream(conn: &quinn::Connection, bytes: &[u8]) -> Fallible<StreamAnswer> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("opening a stream: {e}"))?;
    // The server may stop the stream before it has read it all.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let data = match tokio::time::timeout(LIVE, recv.read_to_end(4 * 1024 * 1024)).await {
        Err(_) => return Err(format!("the stream was neither finished nor reset within {} s", LIVE.as_secs())),
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))) => {
            return Ok(StreamAnswer::Reset(code.into_inner()));
        }
        Ok(Err(e)) => return Err(format!("reading the stream: {e}")),
        Ok(Ok(data)) => data,
    };
    let mut buf = bytes::BytesMut::from(&data[..]);
    let decoder = confab_protocol::FrameDecoder::new(confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES);
    let mut frames = Vec::new();
    while let Some(f) = decoder.next_frame(&mut buf).map_err(|e| format!("a bad frame length on the stream: {e}"))? {
        frames.push(
            confab_protocol::framing::decode_server_frame(&f)
                .map_err(|e| format!("a frame on the stream that does not decode: {e:?}"))?,
        );
    }
    ensure!(buf.is_empty(), "the stream ended inside a frame ({} bytes of it)", buf.len());
    Ok(StreamAnswer::Frames(frames))
}

/// The one frame a request stream answered with.
fn one_frame(answer: StreamAnswer, what: &str) -> Fallible<pb::ServerFrame> {
    match answer {
        StreamAnswer::Reset(code) => Err(format!("{what}: the stream was reset with code {code}, not answered")),
        StreamAnswer::Frames(mut f) if f.len() == 1 => Ok(f.remove(0)),
        StreamAnswer::Frames(f) => Err(format!("{what}: {} frames on the stream, expected exactly one", f.len())),
    }
}

async fn request_streams(c: &Ctx) -> Fallible<Verdict> {
    if c.target.transport != Transport::Quic {
        return Ok(Verdict::Skip("request streams are QUIC only".into()));
    }
    let mut p = Peer::connect(&c.target).await?;
    let w = p.hello_offering(&["request-streams"]).await?;
    if !w.capabilities.iter().any(|cap| cap == "request-streams") {
        return Ok(Verdict::Skip("the server does not offer request-streams (§11)".into()));
    }
    p.resume(&c.users[0].token).await?;
    let dm = open_direct(&mut p, c.name(1)).await?.conversation_id;
    let conn = p.quic().ok_or("no QUIC connection")?.clone();
    let ping = prefixed(5, Body::Ping(pb::PingRequest { nonce: 5 }));
    let f = one_frame(on_request_stream(&conn, &ping).await?, "a ping on a request stream")?;
    ensure!(
        f.request_id == 5 && matches!(f.body, Some(Reply::Pong(ref pong)) if pong.nonce == 5),
        "a ping on a request stream got request_id {} {:?}, expected its Pong",
        f.request_id,
        f.body
    );
    let violation = |f: pb::ServerFrame, what: &str, request_id: Option<u64>| -> Fallible<()> {
        match f.body {
            Some(Reply::Error(e)) if e.code == ErrorCode::PROTOCOL_VIOLATION.0 && !e.fatal => {
                if let Some(id) = request_id {
                    ensure!(
                        f.request_id == id,
                        "{what}: the Error has request_id {}, not the stream's {id}",
                        f.request_id
                    );
                }
                Ok(())
            }
            Some(Reply::Error(e)) => {
                Err(format!("{what}: got {}, expected PROTOCOL_VIOLATION (109), not fatal", show(f.request_id, &e)))
            }
            other => Err(format!("{what}: got {other:?}, expected PROTOCOL_VIOLATION (109)")),
        }
    };
    let id = c.msg_id("on-stream");
    let send_body = Body::Send(pb::SendRequest {
        conversation_id: dm,
        client_msg_id: id.clone(),
        text: "on a request stream".into(),
    });
    let what = "a send on a request stream";
    violation(one_frame(on_request_stream(&conn, &prefixed(6, send_body)).await?, what)?, what, Some(6))?;
    let mut two = ping.clone();
    two.extend_from_slice(&ping);
    let what = "bytes after the request stream's frame";
    violation(one_frame(on_request_stream(&conn, &two).await?, what)?, what, None)?;
    let what = "a FIN inside the request stream's frame";
    violation(one_frame(on_request_stream(&conn, &ping[..ping.len() - 1]).await?, what)?, what, None)?;
    // The session goes on, and the refused send stored nothing.
    let sent = send(&mut p, dm, &id, "on the session stream").await?;
    ensure!(!sent.duplicate, "the send refused on a request stream was stored (its client_msg_id is a duplicate now)");
    PASS
}

async fn no_request_streams(c: &Ctx) -> Fallible<Verdict> {
    if c.target.transport != Transport::Quic {
        return Ok(Verdict::Skip("request streams are QUIC only".into()));
    }
    // Hello offers no capabilities.
    let mut p = c.session(0).await?;
    let conn = p.quic().ok_or("no QUIC connection")?.clone();
    let ping = prefixed(5, Body::Ping(pb::PingRequest { nonce: 5 }));
    match on_request_stream(&conn, &ping).await? {
        StreamAnswer::Reset(code) => ensure!(
            code == u64::from(ErrorCode::PROTOCOL_VIOLATION.0),
            "the stream was reset with code {code}, expected 109 (PROTOCOL_VIOLATION)"
        ),
        StreamAnswer::Frames(f) => {
            return Err(format!(
                "a stream opened without request-streams was answered ({} frames), not reset",
                f.len()
            ));
        }
    }
    match p.request(Body::Ping(pb::PingRequest { nonce: 6 })).await? {
        Reply::Pong(pong) if pong.nonce == 6 => PASS,
        other => Err(format!("a ping on the session stream after the reset: {}", describe(&other))),
    }
}

// ----- accounts ------------------------------------------------------------------

async fn username_taken(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.hello().await?;
    let body = Body::Signup(pb::SignupRequest {
        username: c.name(0).into(),
        password: "another password entirely".into(),
        device_name: "conformance".into(),
    });
    expect_error(p.request(body).await, ErrorCode::USERNAME_TAKEN, "signup with a taken name")?;
    PASS
}

async fn wrong_password(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.hello().await?;
    let body = Body::Login(pb::LoginRequest {
        username: c.name(3).into(),
        password: "not the password".into(),
        device_name: "conformance".into(),
    });
    let e = expect_error(p.request(body).await, ErrorCode::INVALID_CREDENTIALS, "login with a wrong password")?;
    ensure!(!e.fatal, "INVALID_CREDENTIALS was fatal");
    p.resume(&c.users[3].token).await?;
    PASS
}

async fn bad_token(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.hello().await?;
    let body = Body::Resume(pb::ResumeRequest { token: "AAAAnot-a-token-this-server-issued".into() });
    expect_error(p.request(body).await, ErrorCode::INVALID_TOKEN, "resume with an unknown token")?;
    PASS
}

async fn devices(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.hello().await?;
    let me = p.resume(&c.users[0].token).await?;
    match p.request(Body::ListDevices(pb::ListDevicesRequest::default())).await? {
        Reply::DeviceList(l) => {
            let current: Vec<_> = l.devices.iter().filter(|d| d.current).collect();
            ensure!(current.len() == 1, "{} devices marked current (expected 1)", current.len());
            ensure!(
                current[0].device_id == me.device_id,
                "the current device is {}, AuthOk said {}",
                current[0].device_id,
                me.device_id
            );
            PASS
        }
        other => Err(format!("list_devices: {}", describe(&other))),
    }
}

async fn logout(c: &Ctx) -> Fallible<Verdict> {
    let u = &c.users[1];
    let mut p = c.hello().await?;
    let dev = p.login(&u.name, &u.password, "conformance-logout").await?;
    match p.request(Body::Logout(pb::LogoutRequest {})).await? {
        Reply::Done(_) => {}
        other => return Err(format!("logout: {}", describe(&other))),
    }
    expect_error(
        p.request(Body::Sync(pb::SyncRequest { after: 0, limit: 0 })).await,
        ErrorCode::UNAUTHENTICATED,
        "sync after logout",
    )?;
    expect_error(
        p.request(Body::Resume(pb::ResumeRequest { token: dev.token })).await,
        ErrorCode::INVALID_TOKEN,
        "resume with the logged-out token",
    )?;
    // Still a session: it can authenticate again.
    p.resume(&u.token).await?;
    PASS
}

async fn revoke(c: &Ctx) -> Fallible<Verdict> {
    let u = &c.users[1];
    let mut phone = c.hello().await?;
    let dev = phone.login(&u.name, &u.password, "conformance-revoked").await?;
    let mut laptop = c.session(1).await?;
    match laptop.request(Body::RevokeDevice(pb::RevokeDeviceRequest { device_id: dev.device_id })).await? {
        Reply::Done(_) => {}
        other => return Err(format!("revoke_device: {}", describe(&other))),
    }
    let e = phone.until_fatal(LIVE).await?;
    ensure!(
        e.code == ErrorCode::DEVICE_REVOKED.0,
        "the revoked device's session ended with {} ({}), not DEVICE_REVOKED",
        ErrorCode(e.code),
        e.code
    );
    let mut again = c.hello().await?;
    expect_error(
        again.request(Body::Resume(pb::ResumeRequest { token: dev.token })).await,
        ErrorCode::INVALID_TOKEN,
        "resume with a revoked token",
    )?;
    PASS
}

// ----- conversations ---------------------------------------------------------------

async fn dm_self(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(0).await?;
    let name = c.name(0).to_string();
    expect_error(
        p.request(Body::OpenDirect(pb::OpenDirectRequest { username: name })).await,
        ErrorCode::CANNOT_MESSAGE_SELF,
        "open_direct with oneself",
    )?;
    PASS
}

async fn dm_unknown(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(0).await?;
    let name = format!("nobody{}", c.run);
    expect_error(
        p.request(Body::OpenDirect(pb::OpenDirectRequest { username: name })).await,
        ErrorCode::USER_NOT_FOUND,
        "open_direct with an unknown user",
    )?;
    PASS
}

async fn dm_twice(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(0).await?;
    let one = open_direct(&mut p, c.name(1)).await?;
    let two = open_direct(&mut p, c.name(1)).await?;
    ensure!(
        one.conversation_id == two.conversation_id,
        "two conversations ({} and {}) for one pair",
        one.conversation_id,
        two.conversation_id
    );
    ensure!(one.kind == pb::ConversationKind::Direct as i32, "kind {} is not DIRECT", one.kind);
    ensure!(one.peer_username == c.name(1), "peer_username {:?}, expected {:?}", one.peer_username, c.name(1));
    PASS
}

async fn group_create(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut b = c.session(1).await?;
    let g = create_group(&mut a, &format!("g-{}", c.run), &[c.name(1), c.name(2)]).await?;
    ensure!(g.kind == pb::ConversationKind::Group as i32, "kind {} is not GROUP", g.kind);
    ensure!(g.member_count == 3, "member_count {} (expected 3)", g.member_count);
    ensure!(g.role == pb::MemberRole::Owner as i32, "the creator's role is {} (expected OWNER)", g.role);
    b.until(LIVE, "joined event for the new group", |f| {
        matches!(&f.body, Some(Reply::Event(pb::InboxEvent { event: Some(Event::Joined(j)), .. })) if j.conversation_id == g.conversation_id)
    })
    .await?;
    match a.request(Body::ListMembers(pb::ListMembersRequest { conversation_id: g.conversation_id })).await? {
        Reply::MemberList(l) => {
            let mut names: Vec<_> = l.members.iter().map(|m| m.username.as_str()).collect();
            names.sort_unstable();
            let mut want = vec![c.name(0), c.name(1), c.name(2)];
            want.sort_unstable();
            ensure!(names == want, "members {names:?}, expected {want:?}");
            PASS
        }
        other => Err(format!("list_members: {}", describe(&other))),
    }
}

async fn group_membership(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut d = c.session(3).await?;
    let g = create_group(&mut a, &format!("m-{}", c.run), &[c.name(1)]).await?.conversation_id;
    let add = Body::AddMembers(pb::AddMembersRequest { conversation_id: g, usernames: vec![c.name(3).into()] });
    match a.request(add).await? {
        Reply::Conversation(_) | Reply::Done(_) => {}
        other => return Err(format!("add_members: {}", describe(&other))),
    }
    d.until(LIVE, "joined event after being added", |f| {
        matches!(&f.body, Some(Reply::Event(pb::InboxEvent { event: Some(Event::Joined(j)), .. })) if j.conversation_id == g)
    })
    .await?;
    send(&mut d, g, &c.msg_id("member"), "hello from d").await?;
    let remove = Body::RemoveMember(pb::RemoveMemberRequest { conversation_id: g, username: c.name(3).into() });
    match a.request(remove).await? {
        Reply::Done(_) | Reply::Conversation(_) => {}
        other => return Err(format!("remove_member: {}", describe(&other))),
    }
    d.until(LIVE, "left event after being removed", |f| {
        matches!(&f.body, Some(Reply::Event(pb::InboxEvent { event: Some(Event::Left(l)), .. })) if l.conversation_id == g)
    })
    .await?;
    let body = Body::Send(pb::SendRequest {
        conversation_id: g,
        client_msg_id: c.msg_id("removed"),
        text: "still here?".into(),
    });
    expect_error(d.request(body).await, ErrorCode::CONVERSATION_NOT_FOUND, "send after removal")?;
    PASS
}

async fn group_permissions(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut b = c.session(1).await?;
    let g = create_group(&mut a, &format!("p-{}", c.run), &[c.name(1), c.name(2)]).await?.conversation_id;
    let remove = Body::RemoveMember(pb::RemoveMemberRequest { conversation_id: g, username: c.name(2).into() });
    expect_error(b.request(remove).await, ErrorCode::PERMISSION_DENIED, "a plain member removing another")?;
    PASS
}

// ----- delivery --------------------------------------------------------------------

async fn send_live(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut b = c.session(1).await?;
    let dm = open_direct(&mut a, c.name(1)).await?.conversation_id;
    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(sent_seq(&send(&mut a, dm, &c.msg_id(&format!("live{i}")), &format!("live {i} {}", c.run)).await?)?);
    }
    ensure!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seqs {seqs:?} are not consecutive");
    let mut inbox = Vec::new();
    for (i, want) in seqs.iter().enumerate() {
        let (inbox_seq, m) = live_message(&mut b, dm).await?;
        ensure!(m.seq == *want, "live event {i} has seq {}, expected {want}", m.seq);
        ensure!(text_of(&m) == format!("live {i} {}", c.run), "live event {i} has text {:?}", text_of(&m));
        ensure!(m.sender_username == c.name(0), "sender_username {:?}", m.sender_username);
        inbox.push(inbox_seq);
    }
    ensure!(inbox.windows(2).all(|w| w[1] > w[0]), "inbox_seqs {inbox:?} do not increase");
    PASS
}

async fn send_idempotent(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let dm = open_direct(&mut a, c.name(2)).await?.conversation_id;
    let id = c.msg_id("idem");
    let first = send(&mut a, dm, &id, "once only").await?;
    ensure!(!first.duplicate, "the first send was marked duplicate");
    let again = send(&mut a, dm, &id, "once only").await?;
    ensure!(again.duplicate, "the resend was not marked duplicate");
    ensure!(
        sent_seq(&again)? == sent_seq(&first)?,
        "the resend got seq {}, the original {}",
        sent_seq(&again)?,
        sent_seq(&first)?
    );
    let page = history(&mut a, pb::HistoryRequest { conversation_id: dm, limit: 20, ..Default::default() }).await?;
    let n = page.messages.iter().filter(|m| m.client_msg_id == id).count();
    ensure!(n == 1, "history holds the message {n} times");
    PASS
}

async fn send_length(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let dm = open_direct(&mut a, c.name(3)).await?.conversation_id;
    let max = c.limits.max_message_chars as usize;
    // Two bytes each in UTF-8: the limit is in characters, not bytes.
    let text = "é".repeat(max);
    if text.len() + 200 > c.limits.max_frame_bytes as usize {
        return Ok(Verdict::Skip(format!(
            "max_message_chars {max} in two-byte characters does not fit max_frame_bytes {}",
            c.limits.max_frame_bytes
        )));
    }
    let sent = send(&mut a, dm, &c.msg_id("max"), &text).await?;
    ensure!(
        sent.message.as_ref().is_some_and(|m| text_of(m).chars().count() == max),
        "the stored text is not the {max} characters sent"
    );
    let body =
        Body::Send(pb::SendRequest { conversation_id: dm, client_msg_id: c.msg_id("over"), text: format!("{text}é") });
    expect_error(a.request(body).await, ErrorCode::MESSAGE_TOO_LONG, "a text one character over")?;
    PASS
}

async fn send_not_member(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut d = c.session(3).await?;
    let g = create_group(&mut a, &format!("n-{}", c.run), &[c.name(1)]).await?.conversation_id;
    let body = Body::Send(pb::SendRequest {
        conversation_id: g,
        client_msg_id: c.msg_id("outsider"),
        text: "let me in".into(),
    });
    expect_error(d.request(body).await, ErrorCode::CONVERSATION_NOT_FOUND, "send by an outsider")?;
    PASS
}

async fn send_check_order(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut d = c.session(3).await?;
    let g = create_group(&mut a, &format!("o-{}", c.run), &[c.name(1)]).await?.conversation_id;
    let body =
        Body::Send(pb::SendRequest { conversation_id: g, client_msg_id: c.msg_id("order"), text: String::new() });
    expect_error(d.request(body).await, ErrorCode::EMPTY_MESSAGE, "an outsider's empty text")?;
    // The text is checked before idempotency too: a stored client_msg_id
    // with an empty or too long text is refused, not answered with the
    // stored message.
    let id = c.msg_id("stored");
    let first = send(&mut a, g, &id, "stored once").await?;
    let resend = |text: String| Body::Send(pb::SendRequest { conversation_id: g, client_msg_id: id.clone(), text });
    expect_error(
        a.request(resend(String::new())).await,
        ErrorCode::EMPTY_MESSAGE,
        "a stored client_msg_id resent with an empty text",
    )?;
    let max = c.limits.max_message_chars as usize;
    if max + 200 <= c.limits.max_frame_bytes as usize {
        expect_error(
            a.request(resend("x".repeat(max + 1))).await,
            ErrorCode::MESSAGE_TOO_LONG,
            "a stored client_msg_id resent with a text one character too long",
        )?;
    }
    let again = send(&mut a, g, &id, "stored once").await?;
    ensure!(
        again.duplicate && sent_seq(&again)? == sent_seq(&first)?,
        "after the refused resends the client_msg_id no longer answers with the stored message"
    );
    PASS
}

async fn device_not_found(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut b = c.session(1).await?;
    let theirs = match b.request(Body::ListDevices(pb::ListDevicesRequest::default())).await? {
        Reply::DeviceList(l) => l.devices.first().map(|d| d.device_id).ok_or("b has no devices")?,
        other => return Err(format!("list_devices: {}", describe(&other))),
    };
    let body = Body::RevokeDevice(pb::RevokeDeviceRequest { device_id: theirs });
    expect_error(a.request(body).await, ErrorCode::DEVICE_NOT_FOUND, "revoking another user's device")?;
    PASS
}

async fn not_a_group(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let dm = open_direct(&mut a, c.name(1)).await?.conversation_id;
    let body = Body::RenameGroup(pb::RenameGroupRequest { conversation_id: dm, title: "not a group".into() });
    expect_error(a.request(body).await, ErrorCode::NOT_A_GROUP, "renaming a direct conversation")?;
    PASS
}

async fn refused_by_user(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut d = c.session(3).await?;
    let dm = open_direct(&mut a, c.name(3)).await?.conversation_id;
    let before = sent_seq(&send(&mut a, dm, &c.msg_id("pre-block"), "before the block").await?)?;
    let set = |blocked| Body::SetBlocked(pb::SetBlockedRequest { username: c.name(0).into(), blocked });
    match d.request(set(true)).await? {
        Reply::Done(_) => {}
        other => return Err(format!("set_blocked: {}", describe(&other))),
    }
    let body = Body::Send(pb::SendRequest {
        conversation_id: dm,
        client_msg_id: c.msg_id("blocked"),
        text: "blocked?".into(),
    });
    let refused =
        expect_error(a.request(body).await, ErrorCode::REFUSED_BY_USER, "a send to a user who blocked the sender");
    // Unblock whatever happened, so later runs and scenarios are unaffected.
    let unblocked = d.request(set(false)).await;
    refused?;
    match unblocked? {
        Reply::Done(_) => {}
        other => return Err(format!("set_blocked false: {}", describe(&other))),
    }
    let after = sent_seq(&send(&mut a, dm, &c.msg_id("post-block"), "after the unblock").await?)?;
    ensure!(after == before + 1, "the refused send used a seq: {before} then {after}");
    PASS
}

/// The P-256 generator point, uncompressed: a valid `p256dh`.
const P256_G: [u8; 65] = [
    0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03,
    0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe,
    0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce,
    0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];

async fn feature_unavailable(c: &Ctx) -> Fallible<Verdict> {
    let mut p = c.session(0).await?;
    let vapid = p.welcome.as_ref().map(|w| w.vapid_public_key.clone()).unwrap_or_default();
    if !vapid.is_empty() {
        return Ok(Verdict::Skip(
            "the server offers Web Push (Welcome.vapid_public_key is set): run one without it".into(),
        ));
    }
    // A target valid in every field, so that only the kind is refused.
    let target = pb::WebPushTarget {
        endpoint: format!("https://push.example.com/conformance/{}", c.run),
        p256dh: P256_G.to_vec().into(),
        auth: vec![0x5a; 16].into(),
    };
    let body = Body::RegisterPush(pb::RegisterPushRequest {
        target: Some(pb::register_push_request::Target::WebPush(target)),
    });
    let e = expect_error(p.request(body).await, ErrorCode::FEATURE_UNAVAILABLE, "Web Push without a VAPID key")?;
    ensure!(!e.fatal, "FEATURE_UNAVAILABLE was fatal");
    PASS
}

async fn group_full(c: &Ctx) -> Fallible<Verdict> {
    let max = c.limits.max_group_members as usize;
    if max > c.users.len() - 1 {
        return Ok(Verdict::Skip(format!(
            "max_group_members is {max}: the suite has {} users to fill a group with (run a server with max_group_members {} or less)",
            c.users.len(),
            c.users.len() - 1
        )));
    }
    let mut a = c.session(0).await?;
    let members: Vec<&str> = (1..max).map(|i| c.name(i)).collect();
    let g = create_group(&mut a, &format!("f-{}", c.run), &members).await?;
    ensure!(g.member_count as usize == max, "the group has {} members, expected {max}", g.member_count);
    let add = Body::AddMembers(pb::AddMembersRequest {
        conversation_id: g.conversation_id,
        usernames: vec![c.name(max).into()],
    });
    expect_error(a.request(add).await, ErrorCode::GROUP_FULL, "adding a member to a full group")?;
    match a.request(Body::ListMembers(pb::ListMembersRequest { conversation_id: g.conversation_id })).await? {
        Reply::MemberList(l) => ensure!(l.members.len() == max, "{} members after a refused add", l.members.len()),
        other => return Err(format!("list_members: {}", describe(&other))),
    }
    PASS
}

/// The user's non-revoked devices (every page).
async fn device_ids(p: &mut Peer) -> Fallible<Vec<u64>> {
    let mut ids = Vec::new();
    loop {
        let after = ids.last().copied().unwrap_or(0);
        match p.request(Body::ListDevices(pb::ListDevicesRequest { after_device_id: after, limit: 0 })).await? {
            Reply::DeviceList(l) => {
                ids.extend(l.devices.iter().map(|d| d.device_id));
                if !l.has_more || l.devices.is_empty() {
                    return Ok(ids);
                }
            }
            other => return Err(format!("list_devices: {}", describe(&other))),
        }
    }
}

async fn too_many_devices(c: &Ctx) -> Fallible<Verdict> {
    const MOST_LOGINS: usize = 4;
    let u = &c.users[3];
    let max = c.limits.max_devices as usize;
    let mut p = c.session(3).await?;
    let have = device_ids(&mut p).await?.len();
    let needed = max.saturating_sub(have);
    if max == 0 || needed > MOST_LOGINS {
        return Ok(Verdict::Skip(format!(
            "max_devices is {max} and the user has {have}: filling it would take {needed} logins, past most servers' login limits (run a server with max_devices {} or less)",
            have + MOST_LOGINS
        )));
    }
    let mut made = Vec::new();
    let checked = fill_devices(c, u, needed, &mut made, max).await;
    // Revoke what was made, whatever happened, so later runs start alike.
    for id in made {
        match p.request(Body::RevokeDevice(pb::RevokeDeviceRequest { device_id: id })).await? {
            Reply::Done(_) => {}
            other => return Err(format!("revoke_device {id} after the check: {}", describe(&other))),
        }
    }
    checked?;
    PASS
}

/// Logs `u` in `needed` times (each a new device, into `made`), then once
/// more: TOO_MANY_DEVICES, and still `max` devices.
async fn fill_devices(c: &Ctx, u: &User, needed: usize, made: &mut Vec<u64>, max: usize) -> Fallible<()> {
    for i in 0..needed {
        let mut p = c.hello().await?;
        let ok = p.login(&u.name, &u.password, &format!("conformance-fill-{i}")).await?;
        made.push(ok.device_id);
    }
    let mut p = c.hello().await?;
    let body = Body::Login(pb::LoginRequest {
        username: u.name.clone(),
        password: u.password.clone(),
        device_name: "conformance-one-too-many".into(),
    });
    let e = expect_error(p.request(body).await, ErrorCode::TOO_MANY_DEVICES, "a login past max_devices")?;
    ensure!(!e.fatal, "TOO_MANY_DEVICES was fatal");
    let mut check = c.session(3).await?;
    let now = device_ids(&mut check).await?.len();
    ensure!(now == max, "{now} devices after a refused login (max_devices {max})");
    Ok(())
}

async fn shutdown(c: &Ctx) -> Fallible<Verdict> {
    let Some(cmd) = &c.settings.shutdown_command else {
        return Ok(Verdict::Skip("needs a way to stop the server: --shutdown-command (it runs last)".into()));
    };
    let mut p = c.session(1).await?;
    let status = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .await
        .map_err(|e| format!("running the shutdown command: {e}"))?;
    ensure!(status.success(), "the shutdown command failed: {status}");
    let go = p.until(Duration::from_secs(30), "GoAway", |f| matches!(f.body, Some(Reply::GoAway(_)))).await?;
    ensure!(go.request_id == 0, "GoAway has request_id {}", go.request_id);
    if let Some(Reply::GoAway(g)) = go.body {
        ensure!(
            g.code == ErrorCode::SHUTTING_DOWN.0,
            "GoAway code {} ({}), expected SHUTTING_DOWN",
            g.code,
            ErrorCode(g.code)
        );
    }
    let (e, status) = p.until_fatal_close(Duration::from_secs(30)).await?;
    ensure!(
        e.code == ErrorCode::SHUTTING_DOWN.0,
        "closed with {} ({}), expected SHUTTING_DOWN",
        ErrorCode(e.code),
        e.code
    );
    // QUIC code 502, WebSocket 1001.
    check_close(&mut p, ErrorCode::SHUTTING_DOWN, status).await?;
    PASS
}

/// Syncs from `after` to the end; returns the events.
async fn sync_all(p: &mut Peer, after: u64, limit: u32) -> Fallible<Vec<pb::InboxEvent>> {
    let mut out: Vec<pb::InboxEvent> = Vec::new();
    let mut last = after;
    for _ in 0..10_000 {
        let page = sync(p, last, limit).await?;
        for e in page.events {
            ensure!(
                e.inbox_seq == last + 1,
                "sync after {last} returned inbox_seq {} (a gap or a repeat, §8.4)",
                e.inbox_seq
            );
            last = e.inbox_seq;
            out.push(e);
        }
        if !page.has_more {
            ensure!(
                last == page.inbox_head || page.inbox_head >= last,
                "inbox_head {} is behind the last event {last}",
                page.inbox_head
            );
            return Ok(out);
        }
    }
    Err("sync never ended (has_more stayed true)".into())
}

async fn catchup(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let g = create_group(&mut a, &format!("c-{}", c.run), &[c.name(2)]).await?.conversation_id;
    // c's device is offline now (no session of it is open); where it is:
    let mut probe = c.hello().await?;
    let before = probe.resume(&c.users[2].token).await?;
    drop(probe);
    let texts: Vec<String> = (0..5).map(|i| format!("while offline {i} {}", c.run)).collect();
    for (i, t) in texts.iter().enumerate() {
        send(&mut a, g, &c.msg_id(&format!("off{i}")), t).await?;
    }
    let mut back = c.hello().await?;
    let ok = back.resume(&c.users[2].token).await?;
    ensure!(
        ok.inbox_head >= before.inbox_head + 5,
        "inbox_head {} after 5 messages (was {})",
        ok.inbox_head,
        before.inbox_head
    );
    let events = sync_all(&mut back, ok.cursor, 0).await?;
    let got: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Message(m)) if m.conversation_id == g => Some(text_of(m)),
            _ => None,
        })
        .filter(|t| t.starts_with("while offline"))
        .collect();
    ensure!(got == texts.iter().map(String::as_str).collect::<Vec<_>>(), "synced {got:?}, expected {texts:?}");
    let last = events.last().map_or(ok.cursor, |e| e.inbox_seq);
    match back.request(Body::AckCursor(pb::AckCursorRequest { inbox_seq: last })).await? {
        Reply::Done(_) => {}
        other => return Err(format!("ack_cursor: {}", describe(&other))),
    }
    drop(back);
    let mut again = c.hello().await?;
    let ok2 = again.resume(&c.users[2].token).await?;
    ensure!(ok2.cursor >= last, "after acking {last} the cursor is {}", ok2.cursor);
    PASS
}

async fn sync_paging(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let dm = open_direct(&mut a, c.name(1)).await?.conversation_id;
    for i in 0..4 {
        send(&mut a, dm, &c.msg_id(&format!("page{i}")), &format!("page {i}")).await?;
    }
    let mut b = c.hello().await?;
    let ok = b.resume(&c.users[1].token).await?;
    let from = ok.inbox_head.saturating_sub(4);
    let page = sync(&mut b, from, 2).await?;
    ensure!(page.events.len() == 2, "sync with limit 2 returned {} events", page.events.len());
    ensure!(page.has_more, "has_more is false with 2 of 4 events returned");
    let rest = sync_all(&mut b, from, 2).await?;
    ensure!(rest.len() >= 4, "paging returned {} events, expected at least 4", rest.len());
    PASS
}

async fn history_paging(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let g = create_group(&mut a, &format!("h-{}", c.run), &[c.name(1)]).await?.conversation_id;
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(sent_seq(&send(&mut a, g, &c.msg_id(&format!("h{i}")), &format!("h {i}")).await?)?);
    }
    let top = *seqs.last().ok_or("no seqs")?;
    let seqs_of = |p: &pb::HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<u64>>();
    // Pages are in ascending seq whichever end they come from.
    let newest = history(&mut a, pb::HistoryRequest { conversation_id: g, limit: 2, ..Default::default() }).await?;
    ensure!(
        seqs_of(&newest) == vec![top - 1, top],
        "newest page of 2 is {:?}, expected [{}, {top}]",
        seqs_of(&newest),
        top - 1
    );
    ensure!(newest.has_more, "has_more is false with older messages left");
    let older =
        history(&mut a, pb::HistoryRequest { conversation_id: g, before_seq: top - 1, limit: 2, ..Default::default() })
            .await?;
    ensure!(
        seqs_of(&older) == vec![top - 3, top - 2],
        "before_seq {} gave {:?}, expected [{}, {}]",
        top - 1,
        seqs_of(&older),
        top - 3,
        top - 2
    );
    let after =
        history(&mut a, pb::HistoryRequest { conversation_id: g, after_seq: top - 2, limit: 10, ..Default::default() })
            .await?;
    ensure!(seqs_of(&after) == vec![top - 1, top], "after_seq {} gave {:?}", top - 2, seqs_of(&after));
    ensure!(!after.has_more, "has_more is true at the end of the conversation");
    let first =
        history(&mut a, pb::HistoryRequest { conversation_id: g, limit: 2, oldest_first: true, ..Default::default() })
            .await?;
    ensure!(seqs_of(&first) == vec![1, 2], "oldest_first page of 2 is {:?}, expected [1, 2]", seqs_of(&first));
    ensure!(first.has_more, "has_more is false with newer messages left");
    let both = Body::History(pb::HistoryRequest {
        conversation_id: g,
        before_seq: top,
        after_seq: 1,
        limit: 2,
        ..Default::default()
    });
    expect_error(a.request(both).await, ErrorCode::INVALID_ARGUMENT, "history with both bounds")?;
    PASS
}

async fn devices_in_sync(c: &Ctx) -> Fallible<Verdict> {
    let u = &c.users[2];
    let mut a = c.session(0).await?;
    let mut c1 = c.session(2).await?;
    let mut c2 = c.hello().await?;
    c2.login(&u.name, &u.password, "conformance-second").await?;
    let dm = open_direct(&mut a, &u.name).await?.conversation_id;
    let text = format!("to both devices {}", c.run);
    send(&mut a, dm, &c.msg_id("both"), &text).await?;
    for (n, p) in [(1, &mut c1), (2, &mut c2)] {
        let (_, m) = live_message(p, dm).await.map_err(|e| format!("device {n}: {e}"))?;
        ensure!(text_of(&m) == text, "device {n} got {:?}", text_of(&m));
    }
    let own = format!("from device 1 {}", c.run);
    send(&mut c1, dm, &c.msg_id("own"), &own).await?;
    let (_, m) = live_message(&mut c2, dm).await.map_err(|e| format!("the sender's other device: {e}"))?;
    ensure!(text_of(&m) == own, "the sender's other device got {:?}", text_of(&m));
    PASS
}

async fn read_receipts(c: &Ctx) -> Fallible<Verdict> {
    let u = &c.users[1];
    let mut a = c.session(0).await?;
    let mut b1 = c.session(1).await?;
    let mut b2 = c.hello().await?;
    b2.login(&u.name, &u.password, "conformance-reader").await?;
    let dm = open_direct(&mut a, &u.name).await?.conversation_id;
    let seq = sent_seq(&send(&mut a, dm, &c.msg_id("read"), "read me").await?)?;
    let state = match b1.request(Body::MarkRead(pb::MarkReadRequest { conversation_id: dm, seq })).await? {
        Reply::ReadState(s) => s,
        other => return Err(format!("mark_read: {}", describe(&other))),
    };
    ensure!(state.read_seq == seq, "ReadState.read_seq {} (marked {seq})", state.read_seq);
    ensure!(state.unread_count == 0, "unread_count {} after reading everything", state.unread_count);
    a.until(LIVE, "live ReadReceipt", |f| {
        matches!(&f.body, Some(Reply::ReadReceipt(r)) if r.conversation_id == dm && r.read_seq == seq && r.username == u.name)
    })
    .await?;
    b2.until(LIVE, "read event on the reader's other device", |f| {
        matches!(&f.body, Some(Reply::Event(pb::InboxEvent { event: Some(Event::Read(r)), .. })) if r.conversation_id == dm && r.read_seq == seq)
    })
    .await?;
    PASS
}

async fn read_group_list(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let g = create_group(&mut a, &format!("r-{}", c.run), &[c.name(1), c.name(2)]).await?.conversation_id;
    match a.request(Body::ReadReceipts(pb::ReadReceiptsRequest { conversation_id: g })).await? {
        Reply::ReadReceiptList(l) => {
            let ids: Vec<u64> = l.receipts.iter().map(|r| r.user_id).collect();
            ensure!(ids.len() == 3, "{} receipts for 3 members", ids.len());
            ensure!(ids.windows(2).all(|w| w[0] < w[1]), "receipts not ordered by user_id: {ids:?}");
            PASS
        }
        other => Err(format!("read_receipts: {}", describe(&other))),
    }
}

async fn read_group_receipt(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut b = c.session(1).await?;
    let mut d = c.session(3).await?;
    let g = create_group(&mut a, &format!("rr-{}", c.run), &[c.name(1), c.name(3)]).await?.conversation_id;
    let seq = sent_seq(&send(&mut a, g, &c.msg_id("seen"), "seen by?").await?)?;
    match b.request(Body::MarkRead(pb::MarkReadRequest { conversation_id: g, seq })).await? {
        Reply::ReadState(s) => ensure!(s.read_seq == seq, "ReadState.read_seq {} (marked {seq})", s.read_seq),
        other => return Err(format!("mark_read: {}", describe(&other))),
    }
    a.until(LIVE, "the reader's live ReadReceipt at the author", |f| {
        matches!(&f.body, Some(Reply::ReadReceipt(r)) if r.conversation_id == g && r.read_seq == seq && r.username == c.name(1))
    })
    .await?;
    // d, a member who wrote nothing, hears nothing of it: a ping's answer
    // comes back first (frames of one session keep their order).
    let id = d.next_id();
    d.send(id, Body::Ping(pb::PingRequest { nonce: 7 })).await?;
    loop {
        let f = d.event_within(LIVE).await?;
        ensure!(
            !matches!(&f.body, Some(Reply::ReadReceipt(r)) if r.conversation_id == g),
            "a member who is not the author got the receipt"
        );
        if f.request_id == id {
            break;
        }
    }
    PASS
}

// ----- presence and typing -----------------------------------------------------------

async fn presence_subscribe(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let _b = c.session(1).await?;
    let body =
        Body::SubscribePresence(pb::SubscribePresenceRequest { usernames: vec![c.name(1).into(), c.name(1).into()] });
    match a.request(body).await? {
        Reply::PresenceList(l) => {
            ensure!(l.presences.len() == 1, "{} entries for [b, b] (duplicates are removed, §9.2)", l.presences.len());
            ensure!(
                l.presences[0].state == pb::PresenceState::Online as i32,
                "b, with a live session, is in state {}",
                l.presences[0].state
            );
            PASS
        }
        other => Err(format!("subscribe_presence: {}", describe(&other))),
    }
}

async fn presence_offline(c: &Ctx) -> Fallible<Verdict> {
    let Some(grace) = c.settings.presence_grace_ms else {
        return Ok(Verdict::Skip("needs the server's presence grace period: --presence-grace-ms".into()));
    };
    // d has no other session in this suite while this runs.
    let mut a = c.session(0).await?;
    let d = c.session(3).await?;
    let body = Body::SubscribePresence(pb::SubscribePresenceRequest { usernames: vec![c.name(3).into()] });
    match a.request(body).await? {
        Reply::PresenceList(l) if l.presences.first().is_some_and(|p| p.state == pb::PresenceState::Online as i32) => {}
        other => return Err(format!("subscribe_presence: d should be online: {}", describe(&other))),
    }
    let closed_at = now_ms();
    drop(d);
    let within = Duration::from_millis(grace + 10_000);
    let f = a
        .until(
            within,
            "Presence OFFLINE",
            |f| matches!(&f.body, Some(Reply::Presence(p)) if p.state == pb::PresenceState::Offline as i32),
        )
        .await?;
    if let Some(Reply::Presence(p)) = f.body {
        ensure!(
            p.last_seen_ms > 0 && p.last_seen_ms <= now_ms() + 5000,
            "last_seen_ms {} is not a time around the close",
            p.last_seen_ms
        );
        ensure!(
            p.last_seen_ms >= closed_at - 60_000,
            "last_seen_ms {} is long before the session ended",
            p.last_seen_ms
        );
    }
    PASS
}

async fn typing(c: &Ctx) -> Fallible<Verdict> {
    let mut a = c.session(0).await?;
    let mut b = c.session(1).await?;
    let dm = open_direct(&mut a, c.name(1)).await?.conversation_id;
    a.send(0, Body::Typing(pb::TypingNotice { conversation_id: dm })).await?;
    let f =
        b.until(LIVE, "TypingEvent", |f| matches!(&f.body, Some(Reply::Typing(t)) if t.conversation_id == dm)).await?;
    if let Some(Reply::Typing(t)) = f.body {
        ensure!(t.username == c.name(0), "TypingEvent.username {:?}", t.username);
    }
    // The sender hears nothing of its own notice: a ping's answer comes first.
    let id = a.next_id();
    a.send(id, Body::Ping(pb::PingRequest { nonce: 1 })).await?;
    loop {
        let f = a.event_within(LIVE).await?;
        ensure!(
            !matches!(f.body, Some(Reply::Typing(ref t)) if t.conversation_id == dm),
            "the sender got its own typing event"
        );
        if f.request_id == id {
            break;
        }
    }
    PASS
}

// ----- limits ----------------------------------------------------------------------

async fn send_rate(c: &Ctx) -> Fallible<Verdict> {
    let burst = c.limits.send_burst;
    if burst > 500 {
        return Ok(Verdict::Skip(format!("send_burst {burst} is too large to exhaust quickly")));
    }
    let mut a = c.session(0).await?;
    let dm = open_direct(&mut a, c.name(3)).await?.conversation_id;
    let n = u64::from(burst) + 20;
    let first = a.next_id();
    for i in 0..n {
        let body = Body::Send(pb::SendRequest {
            conversation_id: dm,
            client_msg_id: c.msg_id(&format!("rate{i}")),
            text: "fast".into(),
        });
        a.send(first + i, body).await?;
        a.next_id();
    }
    let (mut limited, mut sent) = (0, 0);
    let mut answered = 0;
    while answered < n {
        let f = a.event_within(LIVE).await?;
        if f.request_id < first || f.request_id >= first + n {
            continue;
        }
        answered += 1;
        match f.body {
            Some(Reply::Sent(_)) => sent += 1,
            Some(Reply::Error(e)) if e.code == ErrorCode::RATE_LIMITED.0 => {
                ensure!(!e.fatal, "RATE_LIMITED was fatal");
                ensure!(e.retry_after_ms > 0, "RATE_LIMITED without retry_after_ms");
                limited += 1;
            }
            Some(Reply::Error(e)) if e.code == ErrorCode::TOO_MANY_IN_FLIGHT.0 => {}
            other => return Err(format!("a pipelined send got {other:?}")),
        }
    }
    ensure!(limited > 0, "{n} sends at once (send_burst {burst}) were all accepted");
    ensure!(
        sent >= u64::from(burst).saturating_sub(u64::from(c.limits.send_rate_per_sec)) / 2,
        "only {sent} of {n} sends were accepted"
    );
    PASS
}

async fn slow_consumer(c: &Ctx) -> Fallible<Verdict> {
    let Some(queue) = c.settings.outbound_queue_bytes else {
        return Ok(Verdict::Skip("needs the server's outbound queue size: --outbound-queue-bytes".into()));
    };
    let mut a = c.session(0).await?;
    let g = create_group(&mut a, &format!("s-{}", c.run), &[c.name(2)]).await?.conversation_id;
    let mut slow = c.hello().await?;
    let start = slow.resume(&c.users[2].token).await?;
    // Enough to overflow the queue plus any socket buffers and windows.
    let chunk = (c.limits.max_message_chars as usize).min(60_000);
    let text = "q".repeat(chunk);
    let count = ((queue as usize + 8 * 1024 * 1024) / chunk).clamp(10, 2_000);
    let rate = c.limits.send_rate_per_sec.max(1);
    for i in 0..count {
        loop {
            let body = Body::Send(pb::SendRequest {
                conversation_id: g,
                client_msg_id: c.msg_id(&format!("slow{i}")),
                text: text.clone(),
            });
            match a.request(body).await? {
                Reply::Sent(_) => break,
                Reply::Error(e) if e.code == ErrorCode::RATE_LIMITED.0 => {
                    tokio::time::sleep(Duration::from_millis(e.retry_after_ms.max(1000 / u64::from(rate)))).await;
                }
                other => return Err(format!("send: {}", describe(&other))),
            }
        }
    }
    // Now read: whole frames, then (maybe) RESYNC_REQUIRED, then the close.
    loop {
        match slow.recv_within(Duration::from_secs(30)).await.map_err(|e| format!("not cut off: {e}"))? {
            Recv::Frame(pb::ServerFrame { body: Some(Reply::Error(e)), .. }) if e.fatal => {
                ensure!(
                    e.code == ErrorCode::RESYNC_REQUIRED.0,
                    "cut off with {} ({}), expected RESYNC_REQUIRED",
                    ErrorCode(e.code),
                    e.code
                );
            }
            Recv::Frame(_) => {}
            // §8.9: a peer that does not read may be cut off mid-frame.
            Recv::Closed(_) | Recv::Cut(_) => break,
        }
    }
    let mut back = c.hello().await?;
    back.resume(&c.users[2].token).await?;
    // Nothing was acked: everything since the slow session's cursor is
    // in the inbox, once each, in order (sync_all checks the order).
    let events = sync_all(&mut back, start.cursor, 0).await?;
    let n = events
        .iter()
        .filter(|e| matches!(&e.event, Some(Event::Message(m)) if m.conversation_id == g && text_of(m).len() == chunk))
        .count();
    ensure!(n == count, "after resuming, sync holds {n} of the {count} messages");
    PASS
}
