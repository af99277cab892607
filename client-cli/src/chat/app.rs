//! The UI loop: terminal events and network events in, model updates and
//! requests out, a redraw after each batch. The network side runs beside it
//! in the same task (see `net`), so neither waits for the other.

use std::collections::HashMap;
use std::ops::DerefMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use confab_client::ClientError;
use confab_protocol::pb;
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use super::command::{self, Input, Slash};
use super::complete::{self, Cycle};
use super::conversation::Kind;
use super::headless::{self, Script};
use super::input::InputLine;
use super::model::{ChatModel, Link, Retry, SendRequest};
use super::net::{self, NetCommand, NetEvent};
use super::terminal;
use super::text::format_seen;
use super::view::{self, ViewState};
use crate::cli::{Ctx, Failure};

/// Typing notices at most this often per conversation (spec §9.4).
const TYPING_EVERY: Duration = Duration::from_secs(3);

/// How long the network side may take to end its session after the UI is
/// gone (store the cursor, close the connection).
const QUIT_GRACE: Duration = Duration::from_secs(1);
/// How long a first `/leave` waits for the second that confirms it.
const LEAVE_CONFIRM: Duration = Duration::from_secs(10);

/// `confab chat`: runs the terminal UI until the user quits. Only a profile
/// that is not logged in fails before it starts; the connection is made
/// from inside (a server that is down is waited for, with backoff).
pub async fn run(ctx: &mut Ctx) -> crate::cli::Result<()> {
    let model = logged_in(ctx)?;
    // Notes (a certificate trusted on first use) go to the status bar, not
    // over the screen.
    ctx.held_notes = Some(Vec::new());
    let tui = terminal::enter().map_err(|e| Failure::Local(format!("cannot use the terminal: {e}")))?;
    let (key_tx, keys) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    terminal::spawn_reader(key_tx, stop.clone());
    let result = run_ui(ctx, model, None, tui, keys).await;
    stop.store(true, Ordering::SeqCst);
    let _ = ctx.save();
    result.map_err(|e| Failure::Local(format!("terminal: {e}")))
}

/// `confab chat --headless`: the same UI, model and network side, drawn
/// into an off-screen buffer and typed into by a script instead of a
/// keyboard (see `headless`). Runs until killed.
pub async fn run_headless(ctx: &mut Ctx) -> crate::cli::Result<()> {
    let model = logged_in(ctx)?;
    let script = Script::from_env().map_err(Failure::Local)?;
    let Ok(screen) = Terminal::new(TestBackend::new(headless::WIDTH, headless::HEIGHT));
    // No keyboard: the sender stays here, unused, so the UI does not take
    // its end for the terminal going away.
    let (_no_keys, keys) = mpsc::unbounded_channel();
    let Ok(()) = run_ui(ctx, model, Some(script), Box::new(screen), keys).await;
    let _ = ctx.save();
    Ok(())
}

/// The model for the profile's user; fails when it is not logged in.
fn logged_in(ctx: &Ctx) -> crate::cli::Result<ChatModel> {
    if ctx.profile.token.is_none() {
        return Err(Failure::Local("not logged in: run `confab login USER` (or `confab signup USER`)".into()));
    }
    Ok(ChatModel::new(&ctx.profile.username.clone().unwrap_or_default(), ctx.profile.user_id))
}

/// Runs the UI on `screen` (a terminal, or anything that holds one) beside
/// the network side, until the user quits or a signal says stop; then gives
/// the network side a moment to end its session.
async fn run_ui<B: Backend, S: DerefMut<Target = Terminal<B>>>(
    ctx: &mut Ctx,
    model: ChatModel,
    script: Option<Script>,
    mut screen: S,
    mut keys: mpsc::UnboundedReceiver<Event>,
) -> Result<(), B::Error> {
    let (net_tx, mut net_rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let mut ui = Ui::new(model, cmd_tx);
    ui.script = script;
    let ui_side = async move {
        let r = tokio::select! {
            r = ui.run(&mut screen, &mut keys, &mut net_rx) => r,
            () = terminal::terminated() => Ok(()),
        };
        // The terminal comes back at once; dropping the UI closes the
        // command channel, which tells the network side to end its
        // session.
        drop(screen);
        drop(ui);
        r
    };
    let network = net::run(ctx, net_tx, &mut cmd_rx);
    tokio::pin!(ui_side, network);
    let mut network_done = false;
    let result = loop {
        tokio::select! {
            r = &mut ui_side => break r,
            // Gave up (the link says why); the UI stays until the user
            // quits.
            () = &mut network, if !network_done => network_done = true,
        }
    };
    if !network_done {
        let _ = tokio::time::timeout(QUIT_GRACE, &mut network).await;
    }
    result
}

/// The UI's state besides the model.
struct Ui {
    model: ChatModel,
    input: InputLine,
    view: ViewState,
    commands: mpsc::UnboundedSender<NetCommand>,
    typing_sent: HashMap<u64, Instant>,
    quit: bool,
    /// Quitting was asked for once while sends were unconfirmed.
    quit_warned: bool,
    /// `/leave` was asked once for this group, at this time: a second
    /// within LEAVE_CONFIRM leaves.
    leave_armed: Option<(u64, Instant)>,
    clear: bool,
    /// Tab completion in progress.
    completing: Option<Cycle>,
    /// What `--headless` types (never set in a terminal).
    script: Option<Script>,
}

impl Ui {
    fn new(model: ChatModel, commands: mpsc::UnboundedSender<NetCommand>) -> Self {
        Ui {
            model,
            input: InputLine::default(),
            view: ViewState::default(),
            commands,
            typing_sent: HashMap::new(),
            quit: false,
            quit_warned: false,
            leave_armed: None,
            clear: false,
            completing: None,
            script: None,
        }
    }

    async fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        keys: &mut mpsc::UnboundedReceiver<Event>,
        net: &mut mpsc::UnboundedReceiver<NetEvent>,
    ) -> Result<(), B::Error> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.play_script();
            let now = Instant::now();
            self.model.expire(now);
            if std::mem::take(&mut self.clear) {
                terminal.clear()?;
            }
            terminal.draw(|f| view::draw(f, &self.model, &self.input, &mut self.view, now))?;
            self.after_draw();
            if self.quit {
                return Ok(());
            }
            tokio::select! {
                ev = keys.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    self.on_terminal(ev);
                    while let Ok(ev) = keys.try_recv() {
                        self.on_terminal(ev);
                    }
                }
                Some(ev) = net.recv() => {
                    self.on_net(ev);
                    while let Ok(ev) = net.try_recv() {
                        self.on_net(ev);
                    }
                }
                _ = tick.tick() => {}
            }
        }
    }

    /// Headless: the keys the script would press now, pressed.
    fn play_script(&mut self) {
        let Some(script) = &mut self.script else { return };
        for ev in script.keys(&self.model) {
            self.on_terminal(ev);
        }
    }

    fn request(&self, cmd: NetCommand) {
        let _ = self.commands.send(cmd);
    }

    /// What the frame just drawn calls for: older history when its top is
    /// on screen, a read marker for what is shown, sends whose wait after a
    /// refusal is over, details of conversations known only from a message.
    fn after_draw(&mut self) {
        if let Some((conversation_id, before_seq)) = self.model.poll_history(self.view.at_top) {
            self.request(NetCommand::History { conversation_id, before_seq });
        }
        if let Some((conversation_id, seq)) = self.model.poll_mark_read(self.view.seen) {
            self.request(NetCommand::MarkRead { conversation_id, seq });
        }
        if let Some(conversation_id) = self.model.poll_receipts(Instant::now()) {
            self.request(NetCommand::Receipts { conversation_id });
        }
        for req in self.model.poll_deferred(Instant::now()) {
            self.request(NetCommand::Send(req));
        }
        while let Some(conversation_id) = self.model.poll_unknown() {
            self.request(NetCommand::GetConversation { conversation_id });
        }
        let usernames = self.model.poll_subscribe();
        if !usernames.is_empty() {
            self.request(NetCommand::Subscribe { usernames });
        }
    }

    /// Quits, unless sends are still unconfirmed: then the first request
    /// only warns (their outcome would be unknown, and nothing here keeps
    /// them for a later run).
    fn ask_quit(&mut self) {
        let n = self.model.unconfirmed();
        if n == 0 || self.quit_warned {
            self.quit = true;
            return;
        }
        self.quit_warned = true;
        let what = if n == 1 { "1 message is".to_string() } else { format!("{n} messages are") };
        self.model.set_notice(format!("{what} not confirmed yet: Ctrl-C again to quit anyway"), true, Instant::now());
    }

    fn on_terminal(&mut self, ev: Event) {
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.on_key(k),
            Event::Paste(text) => {
                self.input.insert_str(&text);
                self.typed();
            }
            Event::FocusGained => self.model.set_focused(true),
            Event::FocusLost => self.model.set_focused(false),
            // Resize: the next draw fits the new size.
            _ => {}
        }
    }

    fn on_key(&mut self, k: KeyEvent) {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        if ctrl && k.code == KeyCode::Char('c') {
            self.ask_quit();
            return;
        }
        if self.view.show_help {
            self.view.show_help = false;
            return;
        }
        if k.code != KeyCode::Tab {
            self.completing = None;
        }
        match k.code {
            KeyCode::Enter if alt || k.modifiers.contains(KeyModifiers::SHIFT) => {
                self.input.insert('\n');
                self.typed();
            }
            KeyCode::Char('j') if ctrl => {
                self.input.insert('\n');
                self.typed();
            }
            KeyCode::Enter => self.submit(),
            KeyCode::Tab if self.input.is_empty() => self.switch(1),
            KeyCode::Tab => self.complete(),
            KeyCode::BackTab => self.switch(-1),
            KeyCode::Char(d @ '1'..='9') if alt && !ctrl => self.go_number(d),
            KeyCode::Char('n') if ctrl => self.switch(1),
            KeyCode::Char('p') if ctrl => self.switch(-1),
            KeyCode::PageUp => {
                self.view.anchor = false;
                self.view.scroll += self.view.page.saturating_sub(2).max(1);
            }
            KeyCode::PageDown => {
                self.view.anchor = false;
                self.view.scroll = self.view.scroll.saturating_sub(self.view.page.saturating_sub(2).max(1))
            }
            KeyCode::Up => self.input.up(),
            KeyCode::Down => self.input.down(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('h') if ctrl => self.input.backspace(),
            KeyCode::Char('u') if ctrl => self.input.delete_to_line_start(),
            KeyCode::Char('k') if ctrl => self.input.delete_to_line_end(),
            KeyCode::Char('l') if ctrl => self.clear = true,
            KeyCode::Char('r') if ctrl => self.retry(),
            KeyCode::Char('x') if ctrl => self.discard(),
            KeyCode::Esc => self.model.clear_notice(),
            KeyCode::Char(c) if !ctrl && !alt => {
                self.input.insert(c);
                self.typed();
            }
            _ => {}
        }
    }

    fn switch(&mut self, step: isize) {
        self.model.select_step(step);
        self.view.scroll = 0;
    }

    /// Alt-1 … Alt-9: the conversation with that number in the list.
    fn go_number(&mut self, digit: char) {
        let n = digit.to_digit(10).unwrap_or(0) as usize;
        match self.model.nth(n) {
            Some(id) => self.open(id),
            None => self.model.set_notice(format!("no conversation {n} in the list"), true, Instant::now()),
        }
    }

    fn open(&mut self, id: u64) {
        if self.model.selected() != Some(id) {
            self.model.select(id);
            self.view.scroll = 0;
        }
    }

    /// Tab with something typed: completes the word at the cursor (a
    /// /command first, else a member's @name); Tab again, the next match.
    fn complete(&mut self) {
        if let Some(cycle) = &mut self.completing {
            let start = cycle.start;
            let (old, new) = cycle.advance();
            self.input.replace(start, old, new);
            return;
        }
        let names = self.model.member_names();
        match complete::start(&self.input.before_cursor(), &names, command::COMMANDS) {
            Some(cycle) => {
                self.input.replace(
                    cycle.start,
                    self.input.before_cursor().chars().count() - cycle.start,
                    cycle.current(),
                );
                if cycle.candidates.len() > 1 {
                    let list: Vec<&str> = cycle.candidates.iter().map(|c| c.trim_end()).collect();
                    self.model.set_notice(list.join(" "), false, Instant::now());
                }
                self.completing = Some(cycle);
            }
            None => self.model.set_notice("nothing to complete", false, Instant::now()),
        }
    }

    /// After an edit: a typing notice, at most every 3 s per conversation,
    /// while a message (not a command) is being typed.
    fn typed(&mut self) {
        let text = self.input.text();
        if text.trim().is_empty() || text.starts_with('/') || !self.model.connected() {
            return;
        }
        let Some(c) = self.model.current() else { return };
        if c.left {
            return;
        }
        let now = Instant::now();
        let id = c.id;
        if self.typing_sent.get(&id).is_none_or(|at| now.duration_since(*at) >= TYPING_EVERY) {
            self.typing_sent.insert(id, now);
            self.request(NetCommand::Typing { conversation_id: id });
        }
    }

    fn discard(&mut self) {
        if !self.model.discard_failed() {
            self.model.set_notice("no failed message to drop", false, Instant::now());
        }
    }

    fn retry(&mut self) {
        if self.model.signed_out() {
            self.model.set_notice("not sent: signed out", true, Instant::now());
            return;
        }
        match self.model.retry_failed() {
            Retry::Now(req) => self.request(NetCommand::Send(req)),
            Retry::OnReconnect => self.model.set_notice("sent again once reconnected", false, Instant::now()),
            Retry::Nothing => self.model.set_notice("nothing to retry", false, Instant::now()),
        }
    }

    fn submit(&mut self) {
        let text = self.input.take();
        if text.trim().is_empty() {
            return;
        }
        let now = Instant::now();
        match command::parse(&text) {
            // A command that cannot run is not kept in the input, where
            // the next words would be typed onto it; Up brings it back.
            Err(e) => self.model.set_notice(format!("{e} (Up: edit it)"), true, now),
            Ok(Input::Message(m)) => match self.model.send(&m, confab_client::new_client_msg_id()) {
                Ok(req) => {
                    self.view.scroll = 0;
                    if let Some(id) = self.model.selected() {
                        self.typing_sent.remove(&id);
                    }
                    if let Some(req) = req {
                        self.request(NetCommand::Send(req));
                    }
                }
                Err(e) => {
                    self.model.set_notice(e, true, now);
                    self.input.restore(&text);
                }
            },
            Ok(Input::Command(c)) => match self.command(c) {
                Ok(()) => self.model.clear_error_notice(),
                Err(e) => self.model.set_notice(format!("{e} (Up: edit it)"), true, now),
            },
        }
    }

    fn command(&mut self, c: Slash) -> Result<(), String> {
        let current = self.model.current().map(|c| (c.id, c.kind));
        let group = || match current {
            Some((id, Kind::Group)) => Ok(id),
            Some(_) => Err("not a group: this works in group conversations".to_string()),
            None => Err("no conversation open".to_string()),
        };
        let cmd = match c {
            Slash::Dm(username) => NetCommand::OpenDirect { username },
            Slash::GroupCreate { title, users } => NetCommand::CreateGroup { title, usernames: users },
            Slash::Add(usernames) => NetCommand::AddMembers { conversation_id: group()?, usernames },
            Slash::Remove(username) => NetCommand::RemoveMember { conversation_id: group()?, username },
            Slash::Leave => {
                // Leaving cannot be undone by the leaver (someone must add
                // them back): the first /leave only asks.
                let id = group()?;
                let now = Instant::now();
                if !self.leave_armed.is_some_and(|(armed, at)| armed == id && now.duration_since(at) < LEAVE_CONFIRM) {
                    self.leave_armed = Some((id, now));
                    let title = self.model.current().map(|c| c.title.clone()).unwrap_or_default();
                    self.model.set_notice(
                        format!("leave {title}? Only a member can add you back: /leave again within 10 s to leave"),
                        false,
                        now,
                    );
                    return Ok(());
                }
                self.leave_armed = None;
                NetCommand::Leave { conversation_id: id }
            }
            Slash::Rename(title) => NetCommand::Rename { conversation_id: group()?, title },
            Slash::Members => match current {
                Some((conversation_id, _)) => NetCommand::Members { conversation_id },
                None => return Err("no conversation open".into()),
            },
            Slash::Role { user, role } => NetCommand::SetRole { conversation_id: group()?, username: user, role },
            Slash::Go(query) => match self.model.find(&query) {
                Ok(id) => {
                    self.open(id);
                    return Ok(());
                }
                // `/go @user` with no conversation yet: open one.
                Err(_) if query.starts_with('@') && !query.contains(' ') => {
                    NetCommand::OpenDirect { username: query[1..].to_lowercase() }
                }
                Err(e) => return Err(e),
            },
            Slash::Presence(usernames) => NetCommand::Presence { usernames },
            Slash::Help => {
                self.view.show_help = true;
                return Ok(());
            }
            Slash::Quit => {
                self.ask_quit();
                return Ok(());
            }
        };
        self.request(cmd);
        Ok(())
    }

    fn resend(&self, sends: Vec<SendRequest>) {
        for s in sends {
            self.request(NetCommand::Send(s));
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        if let Some(script) = &self.script {
            script.saw(&ev);
        }
        let now = Instant::now();
        match ev {
            NetEvent::Link(link) => {
                // A full redraw on connect: anything written to the
                // terminal meanwhile (a first-use certificate note) goes.
                self.clear |= matches!(link, Link::Connected { .. });
                let resend = self.model.set_link(link, now);
                self.resend(resend);
            }
            NetEvent::Me { username, user_id } => self.model.set_me(&username, user_id),
            NetEvent::Receipts { conversation_id, receipts } => self.model.handle_receipts(conversation_id, &receipts),
            NetEvent::Snapshot { conversations, rebuild } => self.model.handle_snapshot(&conversations, rebuild),
            NetEvent::Inbox(events) => {
                for e in &events {
                    self.model.handle_inbox(e);
                }
            }
            NetEvent::Presence(list) => {
                for p in &list {
                    self.model.handle_presence(p);
                }
            }
            NetEvent::PresenceAnswer(list) => {
                for p in &list {
                    self.model.handle_presence(p);
                    let line = presence_line(p);
                    match self.model.selected() {
                        Some(id) => self.model.note(id, line),
                        None => self.model.set_notice(line, false, now),
                    }
                }
            }
            NetEvent::Typing(t) => self.model.handle_typing(&t, now),
            NetEvent::ReadReceipt(r) => self.model.handle_read_receipt(&r),
            NetEvent::Sent { client_msg_id, result } => match result {
                Ok(m) => {
                    self.model.handle_sent(&m);
                    self.model.clear_error_notice();
                }
                // The server could not take it now: again later, same id
                // (spec §8.2: until `Sent` or a 3xx error).
                Err(ClientError::Server { code, message, retry_after_ms }) if code.is_retryable() => {
                    let error = short_error(&ClientError::Server { code, message, retry_after_ms });
                    let wait = Duration::from_millis(retry_after_ms);
                    self.model.handle_send_deferred(&client_msg_id, &error, wait, now);
                }
                Err(e) => {
                    let lost = matches!(e, ClientError::Disconnected(_) | ClientError::Connect(_));
                    self.model.handle_send_error(&client_msg_id, &short_error(&e), lost);
                }
            },
            NetEvent::History { conversation_id, before_seq, result } => match result {
                Ok(page) => self.model.handle_history(conversation_id, before_seq, &page),
                // A lost connection shows in the status bar; the page is
                // asked for again after reconnecting.
                Err(ClientError::Disconnected(_)) => self.model.handle_history_lost(conversation_id),
                Err(e) => self.model.handle_history_error(conversation_id, &short_error(&e), now),
            },
            NetEvent::ReadState { conversation_id, result } => match result {
                Ok(r) => self.model.handle_read_state(&r),
                Err(_) => self.model.handle_mark_read_error(conversation_id),
            },
            NetEvent::Opened(c) => {
                self.model.handle_conversation(&c);
                self.open(c.conversation_id);
                self.model.clear_error_notice();
            }
            NetEvent::Conversation(c) => self.model.handle_conversation(&c),
            NetEvent::Members { conversation_id, members } => {
                let list: Vec<String> = members.iter().map(member_text).collect();
                self.model.note(conversation_id, format!("members: {}", list.join(", ")));
                self.model.clear_error_notice();
            }
            NetEvent::Done(text) => self.model.set_notice(text, false, now),
            NetEvent::Failed { what, error } => {
                self.model.set_notice(format!("{what}: {}", short_error(&error)), true, now)
            }
        }
    }
}

/// An error as one short line: the server's code and detail, or what
/// happened to the connection.
fn short_error(e: &ClientError) -> String {
    match e {
        ClientError::Server { code, message, .. } if message.is_empty() => code.to_string(),
        ClientError::Server { code, message, .. } => format!("{} ({message})", code.name().unwrap_or("error")),
        other => other.to_string(),
    }
}

fn member_text(m: &pb::Member) -> String {
    match pb::MemberRole::try_from(m.role) {
        Ok(pb::MemberRole::Owner) => format!("{} (owner)", m.username),
        Ok(pb::MemberRole::Admin) => format!("{} (admin)", m.username),
        _ => m.username.clone(),
    }
}

fn presence_line(p: &pb::Presence) -> String {
    match pb::PresenceState::try_from(p.state) {
        Ok(pb::PresenceState::Online) => format!("{} is online", p.username),
        Ok(pb::PresenceState::Away) => format!("{} is away", p.username),
        _ if p.last_seen_ms > 0 => format!("{} is offline, last seen {} UTC", p.username, format_seen(p.last_seen_ms)),
        _ => format!("{} is offline", p.username),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_client::TransportKind;
    use confab_protocol::ErrorCode;

    use crate::chat::model::PendingState;

    fn direct(id: u64, peer: &str, activity_ms: i64) -> pb::Conversation {
        pb::Conversation {
            conversation_id: id,
            kind: pb::ConversationKind::Direct as i32,
            peer_user_id: id + 100,
            peer_username: peer.into(),
            activity_ms,
            member_count: 2,
            ..Default::default()
        }
    }

    fn sends(rx: &mut mpsc::UnboundedReceiver<NetCommand>) -> Vec<SendRequest> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|c| match c {
                NetCommand::Send(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn leave_asks_first_and_leaves_on_the_second() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ui = Ui::new(ChatModel::new("me", 1), tx);
        let group = pb::Conversation {
            conversation_id: 9,
            kind: pb::ConversationKind::Group as i32,
            title: "hikers".into(),
            member_count: 3,
            ..Default::default()
        };
        ui.on_net(NetEvent::Snapshot { conversations: vec![group], rebuild: true });
        ui.open(9);
        let leaves = |rx: &mut mpsc::UnboundedReceiver<NetCommand>| {
            std::iter::from_fn(|| rx.try_recv().ok()).filter(|c| matches!(c, NetCommand::Leave { .. })).count()
        };
        leaves(&mut rx);
        assert_eq!(ui.command(Slash::Leave), Ok(()));
        assert_eq!(leaves(&mut rx), 0, "the first /leave only asks");
        let notice = ui.model.notice(Instant::now()).map(|n| n.text.clone()).unwrap_or_default();
        assert!(notice.contains("leave hikers?"), "{notice}");
        assert_eq!(ui.command(Slash::Leave), Ok(()));
        assert_eq!(leaves(&mut rx), 1, "the second leaves");
    }

    #[test]
    fn the_headless_script_types_through_the_ui_like_a_user() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ui = Ui::new(ChatModel::new("me", 1), tx);
        ui.script = Some(Script::new(7, vec!["hello".into(), "again".into()]));
        let conversations = vec![direct(3, "newer", 2_000), direct(7, "peer", 1_000)];
        ui.on_net(NetEvent::Snapshot { conversations, rebuild: true });
        ui.play_script();
        assert_eq!(ui.model.selected(), Some(3), "offline: nothing typed yet");
        let server = "127.0.0.1:7443".to_string();
        ui.on_net(NetEvent::Link(Link::Connected { server, transport: TransportKind::Tcp }));
        ui.play_script();
        assert_eq!(ui.model.selected(), Some(7), "`/go 2` opened it");
        ui.play_script();
        let sent = sends(&mut rx);
        let texts: Vec<(u64, &str)> = sent.iter().map(|s| (s.conversation_id, s.text.as_str())).collect();
        assert_eq!(texts, [(7, "hello"), (7, "again")]);
        assert_ne!(sent[0].client_msg_id, sent[1].client_msg_id);
        assert!(ui.input.is_empty());

        // A refusal for now keeps the message for another try (§8.2); a
        // 3xx one fails it.
        let refused = |code: ErrorCode| Err(ClientError::Server { code, message: String::new(), retry_after_ms: 1500 });
        let (first, second) = (sent[0].client_msg_id.clone(), sent[1].client_msg_id.clone());
        ui.on_net(NetEvent::Sent { client_msg_id: first, result: refused(ErrorCode::RATE_LIMITED) });
        ui.on_net(NetEvent::Sent { client_msg_id: second, result: refused(ErrorCode::MESSAGE_TOO_LONG) });
        let states: Vec<&PendingState> = ui.model.pending(7).map(|p| &p.state).collect();
        assert!(matches!(states[..], [PendingState::Deferred { .. }, PendingState::Failed(_)]), "{states:?}");
        ui.after_draw();
        assert!(sends(&mut rx).is_empty(), "not before retry_after_ms");
    }
}
