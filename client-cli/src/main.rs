//! `confab`: the Confab command-line client. See `confab --help`.
//!
//! Layout: `cli` (the arguments, the context every command runs with, and
//! how a command fails), `chat` (the interactive terminal UI), and here
//! `main` and the one-shot commands.
#![allow(clippy::print_stdout)] // a command-line client: stdout is its output

mod chat;
mod cli;

use std::io::{BufRead, Read};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use confab_client::{ClientError, Connection, Event, InboxTracker, Profile};
use confab_protocol::pb;
use serde_json::{Value, json};

use crate::cli::{Cli, Command, Ctx, Failure, GroupCommand, PushCommand, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async {
        let r = run(cli).await;
        // Let QUIC closes reach the server before the process goes.
        confab_client::finish_closing().await;
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Server(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Local(e) | Failure::Untrusted(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

/// `completions` and `manpage`: from the clap definitions, no profile.
fn print_generated(command: &Command) -> Option<Result<()>> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    // Rendered into memory first: clap_complete panics on a failed write
    // (a closed pipe), and nothing should.
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => clap_complete::generate(*shell, &mut Cli::command(), "confab", &mut text),
        Command::Manpage => {
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut text) {
                return Some(Err(Failure::Local(format!("rendering the manual page: {e}"))));
            }
        }
        _ => return None,
    }
    let mut out = std::io::stdout().lock();
    Some(match out.write_all(&text).and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Local(format!("writing to stdout: {e}"))),
        _ => Ok(()),
    })
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(done) = print_generated(&cli.command) {
        return done;
    }
    let dir = match cli.profile.clone().or_else(Profile::default_dir) {
        Some(d) => d,
        None => return Err(Failure::Local("no config directory: pass --profile DIR".into())),
    };
    let profile = Profile::load(&dir)?;
    let mut ctx = Ctx { cli, dir, profile, connected: None, held_notes: None };
    match std::mem::replace(&mut ctx.cli.command, Command::Whoami) {
        Command::Signup { user, device, password_stdin } => auth(&mut ctx, true, &user, &device, password_stdin).await,
        Command::Login { user, device, password_stdin } => auth(&mut ctx, false, &user, &device, password_stdin).await,
        Command::Logout => logout(&mut ctx).await,
        Command::Whoami => whoami(&mut ctx).await,
        Command::Devices => devices(&mut ctx).await,
        Command::Revoke { device_id: Some(device_id), .. } => {
            let (conn, _) = ctx.session().await?;
            conn.revoke_device(device_id).await?;
            ctx.out(json!({"revoked": device_id}), || format!("revoked device {device_id}"));
            Ok(())
        }
        Command::Revoke { device_id: None, .. } => {
            let (conn, _) = ctx.session().await?;
            conn.revoke_other_devices().await?;
            ctx.out(json!({"revoked": "others"}), || "revoked every other device of this account".to_string());
            Ok(())
        }
        Command::Passwd { revoke_others, password_stdin } => passwd(&mut ctx, revoke_others, password_stdin).await,
        Command::Block { user } => block(&mut ctx, &user, true).await,
        Command::Unblock { user } => block(&mut ctx, &user, false).await,
        Command::Blocked => blocked(&mut ctx).await,
        Command::Privacy { dm, groups, search } => privacy(&mut ctx, dm, groups, search).await,
        Command::Search { prefix, limit } => search(&mut ctx, &prefix, limit).await,
        Command::Send { to, text } => send(&mut ctx, &to, text).await,
        Command::History { conversation, before, after, limit } => {
            history(&mut ctx, &conversation, before.unwrap_or(0), after.unwrap_or(0), limit).await
        }
        Command::Conversations => conversations(&mut ctx).await,
        Command::Read { conversation, seq } => {
            let (conn, _) = ctx.session().await?;
            let conversation = conversation_id(&conn, &conversation).await?;
            let state = conn.mark_read(conversation, seq.unwrap_or(u64::MAX)).await?;
            ctx.out(
                json!({"conversation_id": state.conversation_id, "read_seq": state.read_seq, "unread": state.unread_count}),
                || format!("conversation {}: read up to {}, {} unread", state.conversation_id, state.read_seq, state.unread_count),
            );
            Ok(())
        }
        Command::Sync => sync(&mut ctx).await,
        Command::Group(g) => group(&mut ctx, g).await,
        Command::Presence { users } => presence(&mut ctx, &users).await,
        Command::Tail => tail(&mut ctx).await,
        Command::Push(p) => push(&mut ctx, p).await,
        Command::Completions { .. } | Command::Manpage => Ok(()),
        Command::Chat { headless: false } => chat::run(&mut ctx).await,
        Command::Chat { headless: true } => chat::run_headless(&mut ctx).await,
    }
}

/// How to give a password without a terminal, for the messages.
const SIGNUP_STDIN: &str = "printf '%s\\n' \"$PASSWORD\" | confab signup NAME --password-stdin";
const LOGIN_STDIN: &str = "printf '%s\\n' \"$PASSWORD\" | confab login NAME --password-stdin";
const PASSWD_STDIN: &str = "printf '%s\\n%s\\n' \"$CURRENT\" \"$NEW\" | confab passwd --password-stdin";

/// One line of stdin without its line end; None at the end of input.
fn stdin_line() -> Result<Option<String>> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(line.trim_end_matches(['\r', '\n']).to_string())),
        Err(e) => Err(Failure::Local(format!("reading the password from stdin: {e}"))),
    }
}

/// A password: from stdin (`--password-stdin`, or when there is no
/// terminal to ask on), else asked for, twice when `confirm`. What the
/// user gave that cannot be used (nothing, two that differ) is a usage
/// error; `example` shows how to give it on stdin.
fn read_password(from_stdin: bool, confirm: bool, example: &str) -> Result<String> {
    if from_stdin {
        return stdin_line()?.ok_or_else(|| {
            Failure::Usage(format!(
                "no password: --password-stdin reads it from stdin, which has nothing to read; e.g. {example}"
            ))
        });
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        // No terminal to prompt on (a pipe, a script): one line per
        // prompt from stdin, as a terminal user would type them.
        let pw = stdin_line()?.ok_or_else(|| {
            Failure::Usage(format!(
                "no password: there is no terminal to ask on and stdin has nothing to read; give it on stdin, \
                 e.g. {example}"
            ))
        })?;
        if confirm {
            let again = stdin_line()?.ok_or_else(|| {
                Failure::Usage(format!(
                    "the password is asked for twice and stdin had it once: without a terminal give it on two \
                     lines, or once with --password-stdin, e.g. {example}"
                ))
            })?;
            if again != pw {
                return Err(Failure::Usage("passwords do not match".into()));
            }
        }
        return Ok(pw);
    }
    let pw = rpassword::prompt_password("Password: ").map_err(|e| Failure::Local(format!("reading password: {e}")))?;
    if confirm {
        let again =
            rpassword::prompt_password("Again: ").map_err(|e| Failure::Local(format!("reading password: {e}")))?;
        if again != pw {
            return Err(Failure::Usage("passwords do not match".into()));
        }
    }
    Ok(pw)
}

async fn passwd(ctx: &mut Ctx, revoke_others: bool, password_stdin: bool) -> Result<()> {
    use std::io::IsTerminal;
    let (current, new) = if password_stdin || !std::io::stdin().is_terminal() {
        // One per line: the current password, then the new one.
        let current = read_password(true, false, PASSWD_STDIN)?;
        (current, read_password(true, false, PASSWD_STDIN)?)
    } else {
        let current = rpassword::prompt_password("Current password: ")
            .map_err(|e| Failure::Local(format!("reading password: {e}")))?;
        eprintln!("New password:");
        (current, read_password(false, true, PASSWD_STDIN)?)
    };
    let (conn, _) = ctx.session().await?;
    conn.change_password(&current, &new, revoke_others).await?;
    let what = if revoke_others { "password changed; every other device is signed out" } else { "password changed" };
    ctx.out(json!({"password_changed": true, "revoked_others": revoke_others}), || what.to_string());
    Ok(())
}

async fn block(ctx: &mut Ctx, user: &str, blocked: bool) -> Result<()> {
    let user = user.trim_start_matches('@').to_lowercase();
    let (conn, _) = ctx.session().await?;
    conn.set_blocked(&user, blocked).await?;
    let verb = if blocked { "blocked" } else { "unblocked" };
    ctx.out(json!({ verb: user }), || format!("{verb} @{user}"));
    Ok(())
}

async fn blocked(ctx: &mut Ctx) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    let users = conn.list_blocked().await?;
    let list: Vec<Value> =
        users.iter().map(|u| json!({"username": u.username, "blocked_at_ms": u.blocked_at_ms})).collect();
    ctx.out(json!({ "blocked": list }), || {
        if users.is_empty() {
            return "nobody is blocked".to_string();
        }
        users.iter().map(|u| format!("@{}", u.username)).collect::<Vec<_>>().join("\n")
    });
    Ok(())
}

fn audience_name(raw: i32) -> &'static str {
    match pb::Audience::try_from(raw) {
        Ok(pb::Audience::Contacts) => "contacts",
        Ok(pb::Audience::Nobody) => "nobody",
        _ => "everyone",
    }
}

async fn privacy(
    ctx: &mut Ctx,
    dm: Option<cli::DmAudience>,
    groups: Option<cli::GroupAudience>,
    search: Option<cli::SearchAudience>,
) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    let settings = if dm.is_none() && groups.is_none() && search.is_none() {
        conn.privacy().await?
    } else {
        let audience = |a: Option<pb::Audience>| a.unwrap_or(pb::Audience::Unspecified) as i32;
        conn.set_privacy_with(pb::SetPrivacyRequest {
            direct_messages: audience(dm.map(Into::into)),
            group_invites: audience(groups.map(Into::into)),
            search: audience(search.map(Into::into)),
        })
        .await?
    };
    let (dm, groups) = (audience_name(settings.direct_messages), audience_name(settings.group_invites));
    let search = audience_name(settings.search);
    ctx.out(json!({"direct_messages": dm, "group_invites": groups, "search": search}), || {
        let found = if search == "nobody" { "your whole username only" } else { "the start of your username" };
        format!("new direct conversations from: {dm}\nadded to groups by: {groups}\nfound in search by: {found}")
    });
    Ok(())
}

async fn search(ctx: &mut Ctx, prefix: &str, limit: u32) -> Result<()> {
    let prefix = prefix.trim_start_matches('@').to_lowercase();
    let (conn, _) = ctx.session().await?;
    let found = conn.search_users(&prefix, limit).await?;
    let names: Vec<&str> = found.users.iter().map(|u| u.username.as_str()).collect();
    ctx.out(json!({"users": names, "has_more": found.has_more}), || {
        if names.is_empty() {
            return format!("nobody found starting with '{prefix}'");
        }
        let mut lines: Vec<String> = names.iter().map(|n| format!("@{n}")).collect();
        if found.has_more {
            lines.push("(more: type more of the name)".to_string());
        }
        lines.join("\n")
    });
    Ok(())
}

async fn auth(ctx: &mut Ctx, signup: bool, user: &str, device: &str, password_stdin: bool) -> Result<()> {
    let user = user.trim_start_matches('@').to_lowercase();
    let password = read_password(password_stdin, signup, if signup { SIGNUP_STDIN } else { LOGIN_STDIN })?;
    let conn = ctx.connect().await?;
    let ok = if signup {
        conn.signup(&user, &password, device).await?
    } else {
        conn.login(&user, &password, device).await?
    };
    ctx.profile.server = Some(ctx.connected.clone().unwrap_or_else(|| ctx.server()));
    ctx.profile.discover = ctx.cli.discover.clone().or(ctx.profile.discover.take());
    ctx.profile.transport = Some(ctx.transport());
    ctx.profile.username = Some(ok.username.clone());
    ctx.profile.user_id = ok.user_id;
    ctx.profile.device_id = ok.device_id;
    ctx.profile.token = Some(ok.token.clone());
    ctx.profile.cursor = ok.cursor;
    ctx.save()?;
    let verb = if signup { "signed up" } else { "logged in" };
    ctx.out(json!({"user": ok.username, "user_id": ok.user_id, "device_id": ok.device_id}), || {
        format!("{verb} as {} (device {})", ok.username, ok.device_id)
    });
    Ok(())
}

async fn logout(ctx: &mut Ctx) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    conn.logout().await?;
    ctx.profile.clear_login();
    ctx.save()?;
    ctx.out(json!({"logged_out": true}), || "logged out".into());
    Ok(())
}

async fn whoami(ctx: &mut Ctx) -> Result<()> {
    let (_conn, ok) = ctx.session().await?;
    let server = ctx.connected.clone().unwrap_or_else(|| ctx.server());
    ctx.out(
        json!({"user": ok.username, "user_id": ok.user_id, "device_id": ok.device_id, "server": server, "cursor": ok.cursor, "inbox_head": ok.inbox_head}),
        || format!("{} (user {}, device {}) on {server}; {} events waiting", ok.username, ok.user_id, ok.device_id, ok.inbox_head.saturating_sub(ctx.profile.cursor)),
    );
    Ok(())
}

async fn devices(ctx: &mut Ctx) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    for d in conn.list_devices().await? {
        ctx.out(
            json!({"device_id": d.device_id, "name": d.name, "online": d.online, "current": d.current, "last_seen_ms": d.last_seen_ms}),
            || {
                let mark = if d.current { " (this device)" } else if d.online { " (online)" } else { "" };
                format!("{:>6}  {}{mark}", d.device_id, d.name)
            },
        );
    }
    Ok(())
}

/// Resolves "@user" (opening the DM) or a numeric conversation id.
async fn conversation_id(conn: &Connection, to: &str) -> Result<u64> {
    if let Some(user) = to.strip_prefix('@') {
        return Ok(conn.open_direct(&user.to_lowercase()).await?.conversation_id);
    }
    to.parse().map_err(|_| Failure::Usage(format!("'{to}' is neither @username nor a conversation id")))
}

async fn send(ctx: &mut Ctx, to: &str, text: String) -> Result<()> {
    let text = if text == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::Local(format!("reading stdin: {e}")))?;
        s.strip_suffix('\n').map(str::to_string).unwrap_or(s)
    } else {
        text
    };
    // One id for every attempt: a retry after a lost connection returns the
    // stored message instead of sending it twice.
    let client_msg_id = confab_client::new_client_msg_id();
    let mut delay = Duration::from_millis(250);
    let mut attempt = 0;
    let sent = loop {
        attempt += 1;
        let result = async {
            let (conn, _) = ctx.session().await?;
            let conv = conversation_id(&conn, to).await?;
            Ok::<_, Failure>(conn.send(conv, &client_msg_id, &text).await?)
        }
        .await;
        match result {
            Ok(sent) => break sent,
            Err(Failure::Server(e)) if e.is_retryable() && attempt < 5 => {
                if let ClientError::Server { retry_after_ms, .. } = &e {
                    delay = delay.max(Duration::from_millis(*retry_after_ms));
                }
            }
            Err(Failure::Local(e)) if attempt < 5 && !e.starts_with("not logged in") => {
                eprintln!("note: {e}; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    };
    let m = sent.message.unwrap_or_default();
    ctx.out(
        json!({"conversation_id": m.conversation_id, "seq": m.seq, "sent_at_ms": m.sent_at_ms, "client_msg_id": m.client_msg_id, "duplicate": sent.duplicate}),
        || format!("sent to conversation {} as seq {}", m.conversation_id, m.seq),
    );
    Ok(())
}

fn user_name(u: &str) -> String {
    u.trim_start_matches('@').to_lowercase()
}

fn role_name(role: i32) -> &'static str {
    match pb::MemberRole::try_from(role) {
        Ok(pb::MemberRole::Owner) => "owner",
        Ok(pb::MemberRole::Admin) => "admin",
        _ => "member",
    }
}

async fn group(ctx: &mut Ctx, cmd: GroupCommand) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    match cmd {
        GroupCommand::Create { title, users } => {
            let names: Vec<String> = users.iter().map(|u| user_name(u)).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let c = conn.create_group(&title, &refs).await?;
            ctx.out(json!({"conversation_id": c.conversation_id, "title": c.title, "members": c.member_count}), || {
                format!("created group {} \"{}\" with {} members", c.conversation_id, c.title, c.member_count)
            });
        }
        GroupCommand::Add { conversation, users } => {
            let names: Vec<String> = users.iter().map(|u| user_name(u)).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            conn.add_members(conversation, &refs).await?;
            ctx.out(json!({"conversation_id": conversation, "added": names}), || format!("added {}", names.join(", ")));
        }
        GroupCommand::Remove { conversation, user } => {
            conn.remove_member(conversation, &user_name(&user)).await?;
            ctx.out(json!({"conversation_id": conversation, "removed": user_name(&user)}), || {
                format!("removed {user}")
            });
        }
        GroupCommand::Leave { conversation } => {
            conn.leave_group(conversation).await?;
            ctx.out(json!({"conversation_id": conversation, "left": true}), || format!("left {conversation}"));
        }
        GroupCommand::Rename { conversation, title } => {
            conn.rename_group(conversation, &title).await?;
            ctx.out(json!({"conversation_id": conversation, "title": title}), || format!("renamed to \"{title}\""));
        }
        GroupCommand::Members { conversation } => {
            for m in conn.list_members(conversation).await? {
                ctx.out(json!({"user": m.username, "user_id": m.user_id, "role": role_name(m.role), "joined_at_ms": m.joined_at_ms}), || {
                    format!("{:<24} {}", m.username, role_name(m.role))
                });
            }
        }
        GroupCommand::Role { conversation, user, role } => {
            let r = pb::MemberRole::from(role);
            conn.set_role(conversation, &user_name(&user), r).await?;
            ctx.out(
                json!({"conversation_id": conversation, "user": user_name(&user), "role": role_name(r as i32)}),
                || format!("{} is now {}", user_name(&user), role_name(r as i32)),
            );
        }
    }
    Ok(())
}

fn presence_out(ctx: &Ctx, p: &pb::Presence) {
    let state = match pb::PresenceState::try_from(p.state) {
        Ok(pb::PresenceState::Online) => "online",
        Ok(pb::PresenceState::Away) => "away",
        _ => "offline",
    };
    ctx.out(json!({"presence": {"user": p.username, "state": state, "last_seen_ms": p.last_seen_ms}}), || {
        if p.last_seen_ms > 0 {
            format!("{} is {state} (last seen {})", p.username, format_time(p.last_seen_ms))
        } else {
            format!("{} is {state}", p.username)
        }
    });
}

async fn presence(ctx: &mut Ctx, users: &[String]) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    let names: Vec<String> = users.iter().map(|u| user_name(u)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for p in conn.subscribe_presence(&refs).await? {
        presence_out(ctx, &p);
    }
    Ok(())
}

fn message_json(m: &pb::Message) -> Value {
    let mut v = json!({
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "sender": m.sender_username,
        "sender_id": m.sender_id,
        "sent_at_ms": m.sent_at_ms,
    });
    match &m.content {
        Some(pb::message::Content::Text(t)) => v["body"] = json!(t),
        Some(pb::message::Content::Membership(c)) => {
            v["membership"] = json!({
                "action": pb::MembershipAction::try_from(c.action).map(|a| a.as_str_name()).unwrap_or("UNKNOWN"),
                "users": c.users.iter().map(|u| u.username.clone()).collect::<Vec<_>>(),
                "title": c.title,
            })
        }
        None => {}
    }
    v
}

fn message_text(m: &pb::Message) -> String {
    let time = format_time(m.sent_at_ms);
    match &m.content {
        Some(pb::message::Content::Text(t)) => {
            format!("[{}#{}] {time} {}: {t}", m.conversation_id, m.seq, m.sender_username)
        }
        Some(pb::message::Content::Membership(c)) => {
            format!("[{}#{}] {time} * {}", m.conversation_id, m.seq, chat::membership_text(m, c))
        }
        None => format!("[{}#{}] {time} (unknown content)", m.conversation_id, m.seq),
    }
}

fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

async fn history(ctx: &mut Ctx, conversation: &str, before: u64, after: u64, limit: u32) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    let conv = conversation_id(&conn, conversation).await?;
    let page = conn.history(conv, before, after, limit).await?;
    for m in &page.messages {
        ctx.out(message_json(m), || message_text(m));
    }
    if page.has_more && !ctx.cli.json {
        let next = page.messages.first().map_or(0, |m| m.seq);
        eprintln!("(more: --before {next})");
    }
    Ok(())
}

async fn conversations(ctx: &mut Ctx) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    let list = conn.list_conversations(0).await?;
    for c in &list.conversations {
        let name = if c.kind == pb::ConversationKind::Direct as i32 {
            format!("@{}", c.peer_username)
        } else {
            c.title.clone()
        };
        let last = c.last_message.as_ref().map(message_text).unwrap_or_default();
        ctx.out(
            json!({"conversation_id": c.conversation_id, "kind": if c.kind == pb::ConversationKind::Direct as i32 { "direct" } else { "group" },
                   "name": name, "unread": c.unread_count, "last_seq": c.last_seq, "read_seq": c.read_seq, "members": c.member_count}),
            || format!("{:>6}  {:<20} {:>4} unread  {last}", c.conversation_id, name, c.unread_count),
        );
    }
    Ok(())
}

fn event_out(ctx: &Ctx, e: &pb::InboxEvent) {
    use pb::inbox_event::Event as E;
    match &e.event {
        Some(E::Message(m)) => {
            let mut v = message_json(m);
            v["inbox_seq"] = json!(e.inbox_seq);
            ctx.out(v, || message_text(m))
        }
        Some(E::Read(r)) => ctx.out(
            json!({"inbox_seq": e.inbox_seq, "read": {"conversation_id": r.conversation_id, "read_seq": r.read_seq, "unread": r.unread_count}}),
            || format!("[{}] read up to {} ({} unread)", r.conversation_id, r.read_seq, r.unread_count),
        ),
        Some(E::Joined(c)) => ctx.out(
            json!({"inbox_seq": e.inbox_seq, "joined": {"conversation_id": c.conversation_id, "peer": c.peer_username, "title": c.title}}),
            || format!("[{}] joined {}", c.conversation_id, if c.title.is_empty() { format!("@{}", c.peer_username) } else { c.title.clone() }),
        ),
        Some(E::Left(l)) => ctx.out(json!({"inbox_seq": e.inbox_seq, "left": {"conversation_id": l.conversation_id}}), || {
            format!("[{}] left", l.conversation_id)
        }),
        None => {}
    }
}

/// Pages everything after the tracker's position, printing it.
async fn catch_up(ctx: &Ctx, conn: &Connection, tracker: &mut InboxTracker) -> Result<()> {
    loop {
        let page = conn.sync(tracker.last(), 0).await?;
        for e in tracker.apply_page(page.events) {
            event_out(ctx, &e);
        }
        if !page.has_more {
            return Ok(());
        }
    }
}

async fn sync(ctx: &mut Ctx) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    let mut tracker = InboxTracker::new(ctx.profile.cursor);
    catch_up(ctx, &conn, &mut tracker).await?;
    if tracker.last() > ctx.profile.cursor {
        conn.ack_cursor(tracker.last()).await?;
        ctx.profile.cursor = tracker.last();
        ctx.save()?;
    }
    Ok(())
}

/// `confab push webhook URL` / `confab push off` (spec §10.1).
async fn push(ctx: &mut Ctx, p: PushCommand) -> Result<()> {
    let (conn, _) = ctx.session().await?;
    match p {
        PushCommand::Webhook { url } => {
            let body = pb::client_frame::Body::RegisterPush(pb::RegisterPushRequest {
                target: Some(pb::register_push_request::Target::Webhook(pb::WebhookTarget { url: url.clone() })),
            });
            match conn.request(body).await? {
                pb::server_frame::Body::PushRegistered(r) => {
                    let secret = hex::encode(&r.webhook_secret);
                    ctx.out(json!({"webhook": url, "secret_hex": secret}), || {
                        format!(
                            "notices for this device go to {url}\nHMAC-SHA256 secret (hex), to check Confab-Signature: {secret}"
                        )
                    });
                    Ok(())
                }
                other => Err(Failure::Local(format!("unexpected answer to RegisterPush: {other:?}"))),
            }
        }
        PushCommand::Off => {
            conn.request(pb::client_frame::Body::UnregisterPush(pb::UnregisterPushRequest {})).await?;
            ctx.out(json!({"push": "off"}), || "no more push notifications for this device".to_string());
            Ok(())
        }
    }
}

async fn tail(ctx: &mut Ctx) -> Result<()> {
    const BACKOFF_START: Duration = Duration::from_millis(500);
    let mut backoff = BACKOFF_START;
    loop {
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            r = tail_once(ctx) => r,
            _ = tokio::signal::ctrl_c() => return ctx.save(),
        };
        // A session that lasted starts the backoff again.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_START;
        }
        let jitter = |d: Duration| Duration::from_millis(rand::random::<u64>() % (d.as_millis() as u64 + 1));
        let wait = match outcome {
            // §13: after GoAway, reconnect_after_ms plus a jitter up to as
            // much again (at least 0-1 s), whatever the backoff.
            Ok(Ended::GoAway(reason, after)) => {
                eprintln!("note: {reason}; reconnecting in about {} ms", after.as_millis());
                after + jitter(after.max(Duration::from_secs(1)))
            }
            Ok(Ended::Lost(reason)) => {
                eprintln!("note: {reason}; reconnecting");
                backoff + jitter(backoff / 2)
            }
            Err(Failure::Server(e)) if !e.is_retryable() => return Err(Failure::Server(e)),
            Err(Failure::Local(e)) if e.starts_with("not logged in") => return Err(Failure::Local(e)),
            Err(e @ (Failure::Untrusted(_) | Failure::Usage(_))) => return Err(e),
            Err(Failure::Server(e)) => {
                eprintln!("note: {e}; reconnecting");
                backoff.max(Duration::from_millis(retry_after(&e))) + jitter(backoff / 2)
            }
            Err(Failure::Local(e)) => {
                eprintln!("note: {e}; reconnecting in {}ms", backoff.as_millis());
                backoff + jitter(backoff / 2)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return ctx.save(),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// How one `tail` session ended.
enum Ended {
    /// The connection went away.
    Lost(String),
    /// The server said GoAway: come back after this long.
    GoAway(String, Duration),
}

fn retry_after(e: &ClientError) -> u64 {
    match e {
        ClientError::Server { retry_after_ms, .. } => *retry_after_ms,
        _ => 0,
    }
}

/// One connection's worth of tail: resume, catch up, then follow live
/// events until the connection ends. Returns why it ended.
async fn tail_once(ctx: &mut Ctx) -> Result<Ended> {
    let (mut conn, _) = ctx.session().await?;
    let mut tracker = InboxTracker::new(ctx.profile.cursor);
    catch_up(ctx, &conn, &mut tracker).await?;
    // Presence of the people this user has direct conversations with.
    let peers: Vec<String> = conn
        .list_conversations(0)
        .await?
        .conversations
        .into_iter()
        .filter(|c| !c.peer_username.is_empty())
        .map(|c| c.peer_username)
        .take(conn.limits().max_list_items as usize)
        .collect();
    if !peers.is_empty() {
        let refs: Vec<&str> = peers.iter().map(String::as_str).collect();
        for p in conn.subscribe_presence(&refs).await? {
            presence_out(ctx, &p);
        }
    }
    let mut acked = ctx.profile.cursor;
    loop {
        if tracker.last() > acked {
            conn.ack_cursor(tracker.last()).await?;
            acked = tracker.last();
            ctx.profile.cursor = acked;
            ctx.save()?;
        }
        let Some(event) = conn.next_event().await else { return Ok(Ended::Lost("connection closed".into())) };
        match event {
            Event::Inbox(e) => {
                let offered = tracker.offer(e);
                for e in &offered.ready {
                    event_out(ctx, e);
                }
                if offered.gap {
                    catch_up(ctx, &conn, &mut tracker).await?;
                }
            }
            Event::ReadReceipt(r) => ctx.out(
                json!({"read_receipt": {"conversation_id": r.conversation_id, "user": r.username, "read_seq": r.read_seq}}),
                || format!("[{}] {} read up to {}", r.conversation_id, r.username, r.read_seq),
            ),
            Event::GoAway(g) => {
                // No new requests on this session (§13); the server closes it.
                let after = Duration::from_millis(g.reconnect_after_ms);
                return Ok(Ended::GoAway(format!("server going away: {}", g.message), after));
            }
            Event::Closed(e) => return Ok(Ended::Lost(e.to_string())),
            Event::Presence(p) => presence_out(ctx, &p),
            Event::Typing(t) => ctx.out(
                json!({"typing": {"conversation_id": t.conversation_id, "user": t.username, "expires_in_ms": t.expires_in_ms}}),
                || format!("[{}] {} is typing…", t.conversation_id, t.username),
            ),
            Event::Error(e) => eprintln!("note: server error {} on the session: {}", confab_protocol::ErrorCode(e.code), e.message),
        }
    }
}
