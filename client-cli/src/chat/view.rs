//! Drawing: one function from the model (plus the input line and the scroll
//! position) to a frame. Nothing here changes the model; what the drawing
//! learns (whether the oldest loaded line is on screen, the page height) goes
//! back through [`ViewState`].
//!
//! Times are shown in UTC, like the rest of the `confab` command line.

use std::time::Instant;

use confab_protocol::pb;
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use unicode_width::UnicodeWidthStr;

use super::conversation::{Conversation, Kind};
use super::input::InputLine;
use super::model::{ChatModel, Link, PendingSend, PendingState, SIGNED_OUT};
use super::text::{day_of, format_day, format_hm, format_seen, mentions, truncate, wrap};

/// What the view keeps between frames.
#[derive(Debug, Default)]
pub struct ViewState {
    /// Lines scrolled up from the newest (0: following new messages).
    pub scroll: usize,
    /// Set by drawing: the oldest loaded line is visible (or the pane is not
    /// full), so older history should be fetched.
    pub at_top: bool,
    /// Set by drawing: the message pane's height, for PgUp/PgDn.
    pub page: usize,
    /// The help overlay is open.
    pub show_help: bool,
    /// Set by drawing: the newest message of the open conversation that is
    /// on screen `(conversation, seq)`, so that only what was shown is
    /// marked read. `None` while the view is still settling.
    pub seen: Option<(u64, u64)>,
    /// A conversation was just opened: once its first unread message is
    /// loaded, the view scrolls so that the "new messages" line is at the
    /// top. Scrolling by hand cancels it.
    pub anchor: bool,
    /// The conversation drawn last and its newest message then: messages
    /// that arrive while scrolled up add to `scroll`, so the lines being
    /// read stay where they are.
    shown: Option<(u64, u64)>,
}

const HELP: &[(&str, &str)] = &[
    ("Enter", "send (Alt-Enter or Ctrl-J: new line)"),
    ("Tab", "complete @name (members) or /command; again: next"),
    ("Ctrl-N Ctrl-P", "next / previous conversation (Tab, S-Tab"),
    ("", "  do it too when the input is empty)"),
    ("Alt-1 … Alt-9", "open conversation 1 … 9 of the list"),
    ("/go N  /go NAME", "open one by number, @user or title (/join)"),
    ("PgUp PgDn", "scroll (older history loads; read as shown)"),
    ("Up Down", "input history / lines"),
    ("Ctrl-R  Ctrl-X", "retry / drop the last failed send"),
    ("Esc", "clear the notice"),
    ("/dm @user", "open a direct conversation"),
    ("/group create T @a @b", "create a group"),
    ("/add @u  /remove @u", "change members"),
    ("/leave  /rename T", "leave or rename the group"),
    ("/members", "list the group's members and roles"),
    ("/role @u ROLE", "ROLE: owner, admin or member (owners only)"),
    ("/presence @user", "show presence"),
    ("Ctrl-C  /quit", "quit; /help: this help (any key closes)"),
    ("── new messages ──", "where the unread messages began"),
    ("✓ read by bob", "how far members have read (groups: every 5 s)"),
];

/// The smallest window the UI is drawn in.
const MIN_W: u16 = 20;
const MIN_H: u16 = 6;

fn bar() -> Style {
    Style::new().bg(Color::Blue).fg(Color::White)
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

fn nick_color(name: &str) -> Color {
    const PALETTE: [Color; 6] =
        [Color::Cyan, Color::Green, Color::Yellow, Color::Magenta, Color::LightBlue, Color::LightRed];
    let h = name.bytes().fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    PALETTE[h as usize % PALETTE.len()]
}

fn presence_dot(model: &ChatModel, user: &str) -> Span<'static> {
    match model.presence(user).map(|p| p.state) {
        Some(pb::PresenceState::Online) => Span::styled("●", Style::new().fg(Color::Green)),
        Some(pb::PresenceState::Away) => Span::styled("●", Style::new().fg(Color::Yellow)),
        _ => Span::styled("○", dim()),
    }
}

/// Draws everything.
pub fn draw(frame: &mut Frame, model: &ChatModel, input: &InputLine, view: &mut ViewState, now: Instant) {
    let area = frame.area();
    if area.width < MIN_W || area.height < MIN_H {
        view.seen = None;
        draw_too_small(frame, area);
        return;
    }
    let side = match area.width {
        100.. => 24,
        60.. => 20,
        _ => 0,
    };
    let input_w = area.width.saturating_sub(2) as usize;
    let (input_lines, cursor) = input.layout(input_w);
    let input_h = input_lines.len().clamp(1, 5) as u16;
    let mid_h = area.height - 3 - input_h;
    let header = Rect::new(area.x, area.y, area.width, 1);
    let rule = Rect::new(area.x, area.y + 1 + mid_h, area.width, 1);
    let input_area = Rect::new(area.x, rule.y + 1, area.width, input_h);
    let status = Rect::new(area.x, area.bottom() - 1, area.width, 1);
    let pane_x = if side > 0 { side + 1 } else { 0 };
    let pane = Rect::new(area.x + pane_x, area.y + 1, area.width - pane_x, mid_h);

    draw_header(frame, model, header, side, now);
    if side > 0 {
        draw_sidebar(frame, model, Rect::new(area.x, area.y + 1, side, mid_h));
        let sep: Vec<Line> = (0..mid_h).map(|_| Line::styled("│", dim())).collect();
        frame.render_widget(Paragraph::new(sep), Rect::new(area.x + side, area.y + 1, 1, mid_h));
    }
    draw_messages(frame, model, pane, view, now);
    draw_rule(frame, model, rule, view, now);
    draw_input(frame, model, input, input_area, &input_lines, cursor);
    draw_status(frame, model, status, now);
    if view.show_help {
        draw_help(frame, area);
    }
}

/// "window too small (need at least 20×6)", in words that fit: wrapped,
/// shortened, and in the smallest windows cut.
fn draw_too_small(frame: &mut Frame, area: Rect) {
    let (w, h) = (area.width as usize, area.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    let need = format!("{MIN_W}×{MIN_H}");
    let variants = [
        format!("window too small (need at least {need})"),
        format!("too small: need {need}"),
        format!("need {need}"),
        need.clone(),
    ];
    let fits = |v: &String| v.split(' ').all(|word| word.width() <= w) && wrap(v, w).len() <= h;
    let lines: Vec<Line> = match variants.iter().find(|v| fits(v)) {
        Some(v) => wrap(v, w).into_iter().map(Line::raw).collect(),
        None => vec![Line::raw(truncate(&need, w))],
    };
    frame.render_widget(Paragraph::new(lines).style(Style::new().fg(Color::Yellow)), area);
}

fn draw_header(frame: &mut Frame, model: &ChatModel, area: Rect, side: u16, now: Instant) {
    let mut spans = vec![Span::styled(format!(" confab · {}", model.me()), bar().add_modifier(Modifier::BOLD))];
    let used: usize = spans.iter().map(Span::width).sum();
    spans.push(Span::styled(" ".repeat((side as usize + 1).saturating_sub(used).max(2)), bar()));
    if let Some(c) = model.current() {
        spans.push(Span::styled(c.name(), bar().add_modifier(Modifier::BOLD)));
        let detail = match c.kind {
            Kind::Direct => match model.presence(&c.peer) {
                Some(p) if p.state == pb::PresenceState::Online => " · online".to_string(),
                Some(p) if p.state == pb::PresenceState::Away => " · away".to_string(),
                Some(p) if p.last_seen_ms > 0 => format!(" · last seen {}", format_seen(p.last_seen_ms)),
                Some(_) => " · offline".to_string(),
                None => String::new(),
            },
            Kind::Group if c.member_count == 1 => " · 1 member".to_string(),
            Kind::Group => format!(" · {} members", c.member_count),
        };
        spans.push(Span::styled(detail, bar()));
        if c.left {
            spans.push(Span::styled(" · you left", bar()));
        }
        let typing = c.typing(now);
        if !typing.is_empty() && c.kind == Kind::Direct {
            spans.push(Span::styled(" · typing…", bar()));
        }
    }
    let line = Line::from(spans);
    frame.render_widget(Paragraph::new(line).style(bar()), area);
}

fn draw_sidebar(frame: &mut Frame, model: &ChatModel, area: Rect) {
    let order = model.order();
    let rows = area.height as usize;
    let at = model.selected().and_then(|id| order.iter().position(|&o| o == id)).unwrap_or(0);
    let first = (at + 1).saturating_sub(rows);
    let width = area.width as usize;
    let mut lines = Vec::new();
    for (i, &id) in order.iter().enumerate().skip(first).take(rows) {
        let Some(c) = model.conversation(id) else { continue };
        // The number that Alt-N (and /go N) open it by, where the
        // selection's margin is.
        let number = if i < 9 { format!("{}", i + 1) } else { " ".into() };
        let mark = match c.kind {
            Kind::Direct => presence_dot(model, &c.peer),
            Kind::Group => Span::styled("#", dim()),
        };
        let unread = match c.unread() {
            0 => String::new(),
            n if n > 99 => " 99+".into(),
            n => format!(" {n}"),
        };
        let name_w = width.saturating_sub(4 + unread.width());
        let name = match c.kind {
            Kind::Direct => c.peer.clone(),
            Kind::Group => c.name(),
        };
        let name = truncate(&name, name_w);
        let pad = " ".repeat(name_w.saturating_sub(name.width()));
        let mut base = if c.left { dim() } else { Style::new() };
        if c.unread() > 0 {
            base = base.add_modifier(Modifier::BOLD);
        }
        if Some(id) == model.selected() {
            base = base.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::from(vec![
            Span::styled(number, base.fg(Color::DarkGray)),
            mark.patch_style(base),
            Span::styled(format!(" {name}{pad}"), base),
            Span::styled(unread, base.fg(Color::Yellow)),
            Span::styled(" ", base),
        ]));
    }
    if order.is_empty() {
        lines.push(Line::styled(" (none yet)", dim()));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// One thing in the message pane, oldest first.
enum Item<'a> {
    Top(&'static str),
    Day(i64),
    /// Where the unread messages began when the conversation was opened.
    Divider,
    Message(&'a pb::Message),
    Note(&'a str),
    Pending(&'a PendingSend),
    Seen(&'a str),
    /// Group members (not this user) whose read marker is at the message
    /// above.
    ReadBy(Vec<&'a str>),
}

fn items<'a>(model: &'a ChatModel, c: &'a Conversation) -> Vec<Item<'a>> {
    let mut out = Vec::with_capacity(c.messages.len() + 8);
    out.push(Item::Top(if c.loading() {
        "loading older messages…"
    } else if c.older_available() {
        "PgUp for older messages"
    } else {
        "beginning of the conversation"
    }));
    let mut notes = c.notes.iter().peekable();
    let mut day = None;
    let mut divider = c.divider;
    // Read markers by seq (groups): who has read up to where.
    let mut read_at: std::collections::BTreeMap<u64, Vec<&str>> = std::collections::BTreeMap::new();
    if c.kind == Kind::Group {
        for (name, &seq) in &c.receipts {
            if name != model.me() && c.messages.contains_key(&seq) {
                read_at.entry(seq).or_default().push(name);
            }
        }
    }
    for m in c.messages.values() {
        while let Some(n) = notes.next_if(|n| n.after_seq < m.seq) {
            out.push(Item::Note(&n.text));
        }
        if divider.is_some_and(|d| m.seq >= d) {
            out.push(Item::Divider);
            divider = None;
        }
        let d = day_of(m.sent_at_ms);
        if day != Some(d) {
            out.push(Item::Day(d));
            day = Some(d);
        }
        out.push(Item::Message(m));
        if let Some(names) = read_at.remove(&m.seq) {
            out.push(Item::ReadBy(names));
        }
    }
    out.extend(notes.map(|n| Item::Note(&n.text)));
    if c.kind == Kind::Direct
        && let Some((&seq, last)) = c.messages.last_key_value()
        && last.sender_username == model.me()
        && c.peer_read_seq >= seq
    {
        out.push(Item::Seen(&c.peer));
    }
    out.extend(model.pending(c.id).map(Item::Pending));
    out
}

/// The text of a membership change: "alice added bob, carol".
pub fn membership_text(m: &pb::Message, ch: &pb::MembershipChange) -> String {
    let who = &m.sender_username;
    let users: Vec<&str> = ch.users.iter().map(|u| u.username.as_str()).filter(|u| u != who).collect();
    let list = users.join(", ");
    match pb::MembershipAction::try_from(ch.action) {
        Ok(pb::MembershipAction::Created) if users.is_empty() => format!("{who} created the group"),
        Ok(pb::MembershipAction::Created) => format!("{who} created the group with {list}"),
        Ok(pb::MembershipAction::Added) => format!("{who} added {list}"),
        Ok(pb::MembershipAction::Removed) => format!("{who} removed {list}"),
        Ok(pb::MembershipAction::Left) => format!("{who} left"),
        Ok(pb::MembershipAction::Renamed) => format!("{who} renamed the group to \"{}\"", ch.title),
        Ok(pb::MembershipAction::RoleChanged) => {
            let role = match pb::MemberRole::try_from(ch.role) {
                Ok(pb::MemberRole::Owner) => "owner",
                Ok(pb::MemberRole::Admin) => "admin",
                _ => "member",
            };
            let users: Vec<&str> = ch.users.iter().map(|u| u.username.as_str()).collect();
            format!("{who} made {} {role}", users.join(", "))
        }
        _ => format!("{who} changed the membership"),
    }
}

/// Column layout of the message pane.
struct Columns {
    nick: usize,
    text: usize,
}

impl Columns {
    fn new(width: usize, c: &Conversation, me: &str) -> Self {
        let longest = c.messages.values().map(|m| m.sender_username.width()).chain([me.width()]).max().unwrap_or(4);
        let nick = longest.clamp(4, 12).min(width / 4);
        Columns { nick, text: width.saturating_sub(5 + 1 + nick + 3).max(8) }
    }

    fn row(&self, time: Span<'static>, nick: Span<'static>, text: Vec<Span<'static>>) -> Line<'static> {
        let mut spans = vec![time, Span::raw(" "), nick, Span::styled(" │ ", dim())];
        spans.extend(text);
        Line::from(spans)
    }

    fn lines(&self, time: Span<'static>, nick: Span<'static>, text: &str, style: Style) -> Vec<Line<'static>> {
        self.lines_marked(time, nick, text, style, None)
    }

    /// Like `lines`, with each `@me` in the text highlighted.
    fn lines_marked(
        &self,
        time: Span<'static>,
        nick: Span<'static>,
        text: &str,
        style: Style,
        me: Option<&str>,
    ) -> Vec<Line<'static>> {
        let blank_time = Span::raw("     ");
        let blank_nick = Span::raw(" ".repeat(self.nick));
        wrap(text, self.text)
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let body = match me {
                    Some(me) => highlight(&l, me, style),
                    None => vec![Span::styled(l, style)],
                };
                if i == 0 {
                    self.row(time.clone(), nick.clone(), body)
                } else {
                    self.row(blank_time.clone(), blank_nick.clone(), body)
                }
            })
            .collect()
    }

    fn nick(&self, name: &str, style: Style) -> Span<'static> {
        let n = truncate(name, self.nick);
        Span::styled(format!("{}{n}", " ".repeat(self.nick.saturating_sub(n.width()))), style)
    }
}

/// How a mention of this user looks.
fn mention_style() -> Style {
    Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD)
}

/// A line of text with each `@me` in it highlighted.
fn highlight(line: &str, me: &str, style: Style) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    let mut at = 0;
    for (start, end) in mentions(line, me) {
        if start > at {
            out.push(Span::styled(line[at..start].to_string(), style));
        }
        out.push(Span::styled(line[start..end].to_string(), mention_style()));
        at = end;
    }
    if at < line.len() || out.is_empty() {
        out.push(Span::styled(line[at..].to_string(), style));
    }
    out
}

fn item_lines(item: &Item, cols: &Columns, width: usize, me: &str) -> Vec<Line<'static>> {
    match item {
        Item::Top(text) => vec![Line::styled(format!("  ── {text} ──"), dim())],
        Item::Divider => {
            let label = " new messages ";
            let side = width.saturating_sub(label.width()) / 2;
            let style = Style::new().fg(Color::LightRed);
            vec![Line::styled(format!("{}{label}{}", "─".repeat(side), "─".repeat(side)), style)]
        }
        Item::ReadBy(names) => {
            let shown: Vec<&str> = names.iter().take(4).copied().collect();
            let more = if names.len() > 4 { format!(" +{}", names.len() - 4) } else { String::new() };
            let text = format!("✓ read by {}{more}", shown.join(", "));
            cols.lines(Span::raw("     "), cols.nick("", dim()), &text, dim())
        }
        Item::Day(d) => {
            let label = format!(" {} ", format_day(*d));
            let side = width.saturating_sub(label.width()) / 2;
            vec![Line::styled(format!("{}{label}{}", "─".repeat(side), "─".repeat(side)), dim())]
        }
        Item::Message(m) => {
            let time = Span::styled(format_hm(m.sent_at_ms), dim());
            match &m.content {
                Some(pb::message::Content::Text(t)) => {
                    let mut nick_style = Style::new().fg(nick_color(&m.sender_username)).bold();
                    let mentioned = m.sender_username != me && !mentions(t, me).is_empty();
                    if mentioned {
                        nick_style = mention_style();
                    }
                    let nick = cols.nick(&m.sender_username, nick_style);
                    cols.lines_marked(time, nick, t, Style::new(), mentioned.then_some(me))
                }
                Some(pb::message::Content::Membership(ch)) => {
                    let text = format!("* {}", membership_text(m, ch));
                    cols.lines(time, cols.nick("", Style::new()), &text, Style::new().fg(Color::Magenta))
                }
                None => cols.lines(time, cols.nick("?", dim()), "(a message this client cannot show)", dim()),
            }
        }
        Item::Note(text) => cols.lines(Span::raw("     "), cols.nick("»", dim()), text, Style::new().fg(Color::Cyan)),
        Item::Seen(peer) => cols.lines(Span::raw("     "), cols.nick("", dim()), &format!("✓ seen by {peer}"), dim()),
        Item::Pending(p) => {
            let (mark, status) = match &p.state {
                PendingState::Sending => (Span::styled("  …  ", dim()), None),
                PendingState::Waiting => {
                    (Span::styled("  …  ", dim()), Some(("waiting for the connection".to_string(), dim())))
                }
                PendingState::Deferred { error, .. } => {
                    (Span::styled("  …  ", dim()), Some((format!("not sent yet: {error}; trying again"), dim())))
                }
                PendingState::Failed(e) => (
                    Span::styled("  ✗  ", Style::new().fg(Color::Red)),
                    Some((format!("✗ not sent: {e} (Ctrl-R retries, Ctrl-X drops)"), Style::new().fg(Color::Red))),
                ),
            };
            let mut lines = cols.lines(mark, cols.nick("me", dim()), &p.text, dim());
            if let Some((text, style)) = status {
                lines.extend(cols.lines(Span::raw("     "), cols.nick("", dim()), &text, style));
            }
            lines
        }
    }
}

fn draw_messages(frame: &mut Frame, model: &ChatModel, area: Rect, view: &mut ViewState, _now: Instant) {
    let height = area.height as usize;
    view.page = height;
    let Some(c) = model.current() else {
        view.at_top = false;
        view.seen = None;
        let text = vec![
            Line::raw(""),
            Line::raw(" No conversation open."),
            Line::raw(" Start one with /dm @user or /group create TITLE @a @b."),
            Line::styled(" /help lists every command.", dim()),
        ];
        frame.render_widget(Paragraph::new(text), area);
        return;
    };
    let width = area.width as usize;
    let me = model.me();
    let cols = Columns::new(width, c, me);
    let fresh = view.shown.is_none_or(|(id, _)| id != c.id);
    if fresh {
        view.anchor = true;
    }
    if let Some((id, newest)) = view.shown
        && id == c.id
        && view.scroll > 0
    {
        let added: usize =
            c.messages.range(newest + 1..).map(|(_, m)| item_lines(&Item::Message(m), &cols, width, me).len()).sum();
        view.scroll += added;
    }
    view.shown = Some((c.id, c.newest_loaded()));
    let items = items(model, c);
    // Opened with unread messages: wait until the first one is loaded
    // (showing nothing as read meanwhile), then put its divider at the top
    // with a line of what came before.
    let mut settled = true;
    if view.anchor {
        if c.divider_pending() {
            settled = false;
        } else {
            view.anchor = false;
            if let Some(at) = items.iter().position(|i| matches!(i, Item::Divider)) {
                let below: usize = items[at..].iter().map(|i| item_lines(i, &cols, width, me).len()).sum();
                view.scroll = (below + 1).saturating_sub(height);
            }
        }
    }
    // Wrap from the newest item back, only as far as the screen needs; the
    // last line of each message carries its seq.
    let want = view.scroll + height;
    let mut rev: Vec<(Line, Option<u64>)> = Vec::new();
    let mut reached_top = true;
    for (i, item) in items.iter().enumerate().rev() {
        let seq = match item {
            Item::Message(m) => Some(m.seq),
            _ => None,
        };
        let lines = item_lines(item, &cols, width, me);
        rev.extend(lines.into_iter().rev().enumerate().map(|(k, l)| (l, if k == 0 { seq } else { None })));
        if rev.len() >= want && i > 0 {
            reached_top = false;
            break;
        }
    }
    let max_scroll = rev.len().saturating_sub(height);
    if reached_top {
        view.scroll = view.scroll.min(max_scroll);
    }
    view.at_top = reached_top && view.scroll >= max_scroll;
    let window = rev.iter().skip(view.scroll).take(height);
    view.seen = if settled { window.clone().find_map(|(_, seq)| *seq).map(|seq| (c.id, seq)) } else { None };
    let visible: Vec<Line> = window.map(|(l, _)| l.clone()).collect::<Vec<_>>().into_iter().rev().collect();
    // Bottom-aligned: a short conversation sits just above the input.
    let pad = height.saturating_sub(visible.len());
    let mut lines = vec![Line::raw(""); pad];
    lines.extend(visible);
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_rule(frame: &mut Frame, model: &ChatModel, area: Rect, view: &ViewState, now: Instant) {
    let width = area.width as usize;
    let mut left = String::new();
    if let Some(c) = model.current() {
        let typing = c.typing(now);
        left = match typing.as_slice() {
            [] => String::new(),
            [one] => format!(" {one} is typing… "),
            [a, b] => format!(" {a} and {b} are typing… "),
            many => format!(" {} people are typing… ", many.len()),
        };
    }
    let right = if view.scroll > 0 { format!(" ↓ {} lines below (PgDn) ", view.scroll) } else { String::new() };
    let left = truncate(&left, width.saturating_sub(4));
    let fill = width.saturating_sub(2 + left.width() + right.width());
    let line = Line::from(vec![
        Span::styled("──", dim()),
        Span::styled(left, Style::new().fg(Color::Yellow).add_modifier(Modifier::ITALIC)),
        Span::styled("─".repeat(fill), dim()),
        Span::styled(right, Style::new().fg(Color::Yellow)),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_input(
    frame: &mut Frame,
    model: &ChatModel,
    input: &InputLine,
    area: Rect,
    lines: &[String],
    cursor: (usize, usize),
) {
    let rows = area.height as usize;
    let first = (cursor.1 + 1).saturating_sub(rows);
    let mut out = Vec::new();
    if input.is_empty() {
        let hint = match model.current() {
            _ if model.signed_out() => "signed out: `confab login` in a shell, then `confab chat` again".to_string(),
            Some(c) if c.left => "read only: you left this conversation".to_string(),
            Some(c) => format!("message {} · /help for commands", c.name()),
            None => "/dm @user to start · /help for commands".into(),
        };
        out.push(Line::from(vec![Span::styled("> ", Style::new().bold()), Span::styled(hint, dim())]));
    } else {
        for (i, l) in lines.iter().enumerate().skip(first).take(rows) {
            let prompt = if i == 0 { "> " } else { "  " };
            out.push(Line::from(vec![Span::styled(prompt, Style::new().bold()), Span::raw(l.clone())]));
        }
    }
    frame.render_widget(Paragraph::new(out), area);
    let x = area.x + 2 + cursor.0 as u16;
    let y = area.y + (cursor.1 - first) as u16;
    frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), y));
}

/// "QUIC", "TCP", …: the transport's command-line name.
fn transport_name(t: confab_client::TransportKind) -> String {
    use clap::ValueEnum;
    t.to_possible_value().map_or_else(|| format!("{t:?}"), |v| v.get_name().to_uppercase())
}

fn draw_status(frame: &mut Frame, model: &ChatModel, area: Rect, now: Instant) {
    let width = area.width as usize;
    let (mark, text) = match model.link() {
        Link::Connecting => (Span::styled(" ◌ ", bar().fg(Color::Yellow)), "connecting…".to_string()),
        Link::Connected { server, transport } => (
            Span::styled(" ● ", bar().fg(Color::LightGreen)),
            format!("connected · {server} · {}", transport_name(*transport)),
        ),
        Link::Reconnecting { reason, retry_at, attempt } => {
            let secs = retry_at.saturating_duration_since(now).as_secs_f32().ceil() as u64;
            let when = if secs == 0 { "now".to_string() } else { format!("in {secs}s") };
            let n = if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
            let text = if model.ever_connected() {
                format!("reconnecting {when}{n} · {reason}")
            } else {
                // Never up yet (e.g. the server is down at start).
                format!("connecting… retry {when}{n} · {reason}")
            };
            (Span::styled(" ◌ ", bar().fg(Color::Yellow)), text)
        }
        Link::Failed(reason) => (Span::styled(" ✗ ", bar().fg(Color::LightRed)), format!("disconnected: {reason}")),
        Link::SignedOut => (Span::styled(" ✗ ", bar().fg(Color::LightRed)), SIGNED_OUT.to_string()),
    };
    // The link state comes first; a notice is given up to half the bar
    // (more when the link text is short); the key hints show only when
    // nothing else needs the room.
    let room = width.saturating_sub(3);
    let notice = model.notice(now);
    let text_max = match notice {
        Some(n) => room.saturating_sub((n.text.width() + 3).min(room / 2)),
        None => room,
    };
    let text = truncate(&text, text_max);
    let rest = room.saturating_sub(text.width());
    let mut spans = vec![mark, Span::styled(text, bar())];
    const HINTS: &str = " Alt-N/Ctrl-N switch · /help · Ctrl-C quit ";
    match notice {
        Some(n) => {
            let style = if n.error { bar().fg(Color::LightRed).bold() } else { bar().bold() };
            spans.push(Span::styled(format!(" │ {}", truncate(&n.text, rest.saturating_sub(3))), style));
        }
        None if rest > HINTS.width() => {
            spans.push(Span::styled(" ".repeat(rest - HINTS.width()), bar()));
            spans.push(Span::styled(HINTS, bar().fg(Color::Gray)));
        }
        None => {}
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar()), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let w = area.width.saturating_sub(4).min(76);
    let h = (HELP.len() as u16 + 2).min(area.height.saturating_sub(2));
    let rect = Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h);
    let key_w = HELP.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!(" {k:<key_w$}  "), Style::new().fg(Color::Yellow)),
                Span::raw(v.to_string()),
            ])
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" confab chat · help ")), rect);
}

#[cfg(test)]
mod tests;
