//! The screens drawn into ratatui's `TestBackend`: what a user sees at
//! 80×24 and in the narrow and small cases, read back as text (and, where
//! the colour is the message, as styles).

use std::time::{Duration, Instant};

use confab_client::TransportKind;
use confab_protocol::pb;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use super::*;

const ME: u64 = 1;
const BOB: u64 = 2;
/// 2024-02-29T13:45:00Z.
const T0: i64 = 1_709_214_300_000;
const DAY: i64 = 86_400_000;

fn msg(conversation_id: u64, seq: u64, sender: (u64, &str), at_ms: i64, body: &str) -> pb::Message {
    pb::Message {
        conversation_id,
        seq,
        sender_id: sender.0,
        sender_username: sender.1.into(),
        sent_at_ms: at_ms,
        client_msg_id: format!("c{conversation_id}-{seq}"),
        content: Some(pb::message::Content::Text(body.into())),
    }
}

fn created(conversation_id: u64, at_ms: i64) -> pb::Message {
    let users = [(ME, "alice"), (BOB, "bob"), (3, "carol")]
        .iter()
        .map(|&(user_id, name)| pb::UserRef { user_id, username: name.into() })
        .collect();
    pb::Message {
        conversation_id,
        seq: 1,
        sender_id: ME,
        sender_username: "alice".into(),
        sent_at_ms: at_ms,
        client_msg_id: String::new(),
        content: Some(pb::message::Content::Membership(pb::MembershipChange {
            action: pb::MembershipAction::Created as i32,
            users,
            ..Default::default()
        })),
    }
}

fn up() -> Link {
    Link::Connected { server: "127.0.0.1:7443".into(), transport: TransportKind::Tcp }
}

/// Alice with a DM with bob (open, two days of messages, bob online) and
/// a group "Weekend plans" with two unread messages.
fn model(now: Instant) -> ChatModel {
    let mut m = ChatModel::new("alice", ME);
    let dm = pb::Conversation {
        conversation_id: 1,
        kind: pb::ConversationKind::Direct as i32,
        peer_username: "bob".into(),
        member_count: 2,
        activity_ms: T0 + DAY,
        ..Default::default()
    };
    let group = pb::Conversation {
        conversation_id: 2,
        kind: pb::ConversationKind::Group as i32,
        title: "Weekend plans".into(),
        member_count: 3,
        activity_ms: T0,
        ..Default::default()
    };
    m.handle_snapshot(&[dm, group], true);
    m.handle_message(&msg(1, 1, (BOB, "bob"), T0, "hi alice"));
    m.handle_message(&msg(1, 2, (ME, "alice"), T0 + 60_000, "hello bob"));
    let long = "this message is long enough that it has to wrap onto a second line in the pane";
    m.handle_message(&msg(1, 3, (BOB, "bob"), T0 + DAY, long));
    m.handle_message(&created(2, T0 - 1000));
    m.handle_message(&msg(2, 2, (BOB, "bob"), T0 - 500, "who's in?"));
    m.handle_message(&msg(2, 3, (BOB, "bob"), T0 - 400, "saturday?"));
    m.handle_history(1, 1, &pb::HistoryPage { has_more: false, ..Default::default() });
    m.set_link(up(), now);
    m.handle_presence(&pb::Presence {
        user_id: BOB,
        username: "bob".into(),
        state: pb::PresenceState::Online as i32,
        last_seen_ms: 0,
    });
    m.select(1);
    m
}

fn draw_on(
    terminal: &mut Terminal<TestBackend>,
    m: &ChatModel,
    input: &InputLine,
    view: &mut ViewState,
    now: Instant,
) -> Vec<String> {
    terminal.draw(|f| draw(f, m, input, view, now)).unwrap();
    rows(terminal.backend().buffer())
}

fn screen(m: &ChatModel, input: &InputLine, view: &mut ViewState, w: u16, h: u16, now: Instant) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    draw_on(&mut terminal, m, input, view, now)
}

fn rows(b: &Buffer) -> Vec<String> {
    (0..b.area.height)
        .map(|y| (0..b.area.width).map(|x| b[(x, y)].symbol()).collect::<String>().trim_end().to_string())
        .collect()
}

/// The first `n` columns of a row (every symbol here is one column).
fn left(row: &str, n: usize) -> String {
    row.chars().take(n).collect()
}

fn find(rows: &[String], needle: &str) -> usize {
    rows.iter()
        .position(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on screen:\n{}", rows.join("\n")))
}

fn typed(text: &str) -> InputLine {
    let mut i = InputLine::default();
    i.insert_str(text);
    i
}

#[test]
fn main_screen_at_80x24() {
    let now = Instant::now();
    let m = model(now);
    let mut view = ViewState::default();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let s = draw_on(&mut terminal, &m, &InputLine::default(), &mut view, now);
    assert_eq!(s.len(), 24);
    // Header: who I am, the open conversation and the partner's presence.
    assert!(s[0].starts_with(" confab · alice"), "{}", s[0]);
    assert!(s[0].contains("@bob · online"), "{}", s[0]);
    // Conversation list, most recent first, with unread counts; the DM
    // partner's presence dot is green.
    // Each with the number Alt-N opens it by.
    assert_eq!(left(&s[1], 20), "1● bob            1 ");
    assert_eq!(left(&s[2], 20), "2# Weekend plans  2 ");
    let b = terminal.backend().buffer();
    assert_eq!(b[(1, 1)].fg, Color::Green);
    // Messages: start marker, day separators, time and sender, wrapped text.
    let top = find(&s, "beginning of the conversation");
    let day1 = find(&s, "Thu 29 Feb 2024");
    let day2 = find(&s, "Fri 1 Mar 2024");
    assert!(top < day1 && day1 < day2);
    assert!(s[day1 + 1].ends_with("13:45   bob │ hi alice"), "{}", s[day1 + 1]);
    assert!(s[day1 + 2].ends_with("13:46 alice │ hello bob"), "{}", s[day1 + 2]);
    assert!(s[day2 + 1].contains("13:45   bob │ this message is long enough"), "{}", s[day2 + 1]);
    assert!(s[day2 + 2].ends_with("            │ wrap onto a second line in the pane"), "{}", s[day2 + 2]);
    assert!(s.iter().all(|r| r.chars().count() <= 80));
    // Newest at the bottom, just above the rule, the input and the status.
    assert_eq!(day2 + 2, 20);
    assert!(s[21].starts_with("────"));
    assert_eq!(s[22], "> message @bob · /help for commands");
    assert!(s[23].starts_with(" ● connected · 127.0.0.1:7443 · TCP"), "{}", s[23]);
    assert!(s[23].ends_with("Alt-N/Ctrl-N switch · /help · Ctrl-C quit"), "{}", s[23]);
    assert!(view.at_top, "everything fits: nothing older to load");
    assert_eq!(view.page, 20);
}

#[test]
fn a_group_shows_membership_events_and_member_count() {
    let now = Instant::now();
    let mut m = model(now);
    m.select(2);
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    assert!(s[0].contains("Weekend plans · 3 members"), "{}", s[0]);
    assert!(find(&s, "* alice created the group with bob, carol") < find(&s, "who's in?"));
    assert!(s[2].starts_with("2# Weekend plans"));
}

#[test]
fn pending_sending_waiting_and_failed_sends() {
    let now = Instant::now();
    let mut m = model(now);
    m.send("on its way", "p1".into()).unwrap();
    m.send("refused one", "p2".into()).unwrap();
    m.handle_send_error("p2", "MESSAGE_TOO_LONG", false);
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    let sending = find(&s, "on its way");
    assert!(s[sending].contains("…      me │ on its way"), "{}", s[sending]);
    let failed = find(&s, "refused one");
    assert!(s[failed].contains("✗      me │ refused one"), "{}", s[failed]);
    assert!(s[failed + 1].contains("✗ not sent: MESSAGE_TOO_LONG (Ctrl-R retries,"), "{}", s[failed + 1]);

    // Confirmed: the pending line becomes the message, with its time.
    let mut stored = msg(1, 4, (ME, "alice"), T0 + DAY + 60_000, "on its way");
    stored.client_msg_id = "p1".into();
    m.handle_sent(&stored);
    m.set_link(
        Link::Reconnecting { reason: "connection lost".into(), retry_at: now + Duration::from_secs(3), attempt: 2 },
        now,
    );
    m.send("typed offline", "p3".into()).unwrap();
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    assert!(s[find(&s, "on its way")].contains("13:46 alice │ on its way"));
    assert!(s[find(&s, "typed offline") + 1].contains("waiting for the connection"));
    assert!(s[23].starts_with(" ◌ reconnecting in 3s (attempt 2) · connection lost"), "{}", s[23]);
}

#[test]
fn typing_and_scrolling_show_on_the_rule() {
    let now = Instant::now();
    let mut m = model(now);
    m.handle_typing(
        &pb::TypingEvent { conversation_id: 1, user_id: BOB, username: "bob".into(), expires_in_ms: 6000 },
        now,
    );
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    assert!(s[21].starts_with("── bob is typing… ───"), "{}", s[21]);
    assert!(s[0].contains("@bob · online · typing…"), "{}", s[0]);
    let later = now + Duration::from_secs(7);
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 80, 24, later);
    assert!(!s[21].contains("typing"), "expired: {}", s[21]);

    // 40 more messages: scrolled up 10 lines, the rule says what is below.
    for seq in 4..44 {
        m.handle_message(&msg(1, seq, (BOB, "bob"), T0 + DAY + seq as i64, &format!("line {seq}")));
    }
    let mut view = ViewState { scroll: 10, ..ViewState::default() };
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    assert!(s[21].ends_with("↓ 10 lines below (PgDn)"), "{}", s[21]);
    assert!(s[20].ends_with("│ line 33"), "{}", s[20]);
    assert!(!view.at_top);
    // New messages while scrolled up do not move what is being read.
    m.handle_message(&msg(1, 44, (BOB, "bob"), T0 + DAY + 44, "line 44"));
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    assert!(s[20].ends_with("│ line 33"), "{}", s[20]);
    assert_eq!(view.scroll, 11);
    // Scrolling to the top marks it for loading older history.
    view.scroll = 1000;
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    assert!(view.at_top);
    assert!(s[1].contains("beginning of the conversation"), "{}", s[1]);
}

#[test]
fn multi_line_input_grows_and_places_the_cursor() {
    let now = Instant::now();
    let m = model(now);
    let input = typed("first line\nsecond line");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let s = draw_on(&mut terminal, &m, &input, &mut ViewState::default(), now);
    assert_eq!(s[21], "> first line");
    assert_eq!(s[22], "  second line");
    assert!(s[20].starts_with("────"));
    terminal.backend_mut().assert_cursor_position((13, 22));
}

#[test]
fn help_and_notices() {
    let now = Instant::now();
    let mut m = model(now);
    let mut view = ViewState { show_help: true, ..ViewState::default() };
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    find(&s, "confab chat · help");
    for key in ["Alt-Enter", "Ctrl-R", "Ctrl-X", "/group create T @a @b", "/presence @user", "/quit"] {
        find(&s, key);
    }
    m.set_notice("/dm @nobody: USER_NOT_FOUND (no such user)", true, now);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let s = draw_on(&mut terminal, &m, &InputLine::default(), &mut ViewState::default(), now);
    assert!(s[23].contains("TCP │ /dm @nobody: USER_NOT_FOUND"), "{}", s[23]);
    let at = s[23].chars().position(|c| c == '/').unwrap() as u16;
    assert_eq!(terminal.backend().buffer()[(at, 23)].fg, Color::LightRed);
}

#[test]
fn narrow_small_and_empty_screens() {
    let now = Instant::now();
    let m = model(now);
    // Below 60 columns the list gives its room to the messages.
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 50, 16, now);
    assert!(s[10].starts_with("13:45   bob │ this message is long"), "{}", s[10]);
    assert!(!s.iter().any(|r| r.contains("Weekend plans")), "no list");
    assert!(s[15].starts_with(" ● connected · 127.0.0.1:7443 · TCP"), "{}", s[15]);
    // Too small: says so in words that fit, whatever the size.
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 19, 5, now);
    assert_eq!(
        s.iter().map(|r| r.trim()).collect::<Vec<_>>().join(" ").trim(),
        "window too small (need at least 20×6)"
    );
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 12, 2, now);
    assert_eq!(s.iter().map(|r| r.trim()).collect::<Vec<_>>().join(" ").trim(), "too small: need 20×6");
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 9, 1, now);
    assert_eq!(s[0].trim(), "need 20×6");
    for (w, h) in [(1, 1), (3, 1), (0, 0), (80, 5), (19, 40)] {
        let s = screen(&m, &InputLine::default(), &mut ViewState::default(), w, h, now);
        assert!(s.iter().all(|r| r.chars().count() <= w as usize), "{w}x{h}: {s:?}");
    }
    let fresh = ChatModel::new("alice", ME);
    let s = screen(&fresh, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    find(&s, "No conversation open.");
    find(&s, "(none yet)");
    assert!(s[23].starts_with(" ◌ connecting…"), "{}", s[23]);
}

#[test]
fn resizing_redraws_to_the_new_size() {
    let now = Instant::now();
    let m = model(now);
    let mut view = ViewState::default();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    draw_on(&mut terminal, &m, &InputLine::default(), &mut view, now);
    terminal.backend_mut().resize(120, 30);
    let s = draw_on(&mut terminal, &m, &InputLine::default(), &mut view, now);
    assert_eq!(s.len(), 30);
    // Wider: a 24-column list, and the long message fits on one line.
    assert_eq!(left(&s[1], 24), "1● bob                1 ");
    assert!(s[26].ends_with("in the pane"), "{}", s[26]);
    assert_eq!(view.page, 26);
}

#[test]
fn opening_with_unread_shows_the_divider_at_the_top_and_reports_what_was_seen() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    let dm = pb::Conversation {
        conversation_id: 1,
        kind: pb::ConversationKind::Direct as i32,
        peer_username: "bob".into(),
        member_count: 2,
        last_seq: 60,
        read_seq: 20,
        activity_ms: T0,
        ..Default::default()
    };
    m.handle_snapshot(&[dm], true);
    m.set_link(up(), now);
    // Not loaded yet: nothing counts as seen, so nothing is marked read.
    let mut view = ViewState::default();
    screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    assert_eq!(view.seen, None);
    for seq in 1..=60 {
        m.handle_message(&msg(1, seq, (BOB, "bob"), T0 + seq as i64, &format!("line {seq}")));
    }
    m.handle_history(1, 1, &pb::HistoryPage { has_more: false, ..Default::default() });
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    // One line of what came before, the divider, then the first unread.
    assert!(s[1].ends_with("│ line 20"), "{}", s[1]);
    assert!(s[2].contains("── new messages ──"), "{}", s[2]);
    assert!(s[3].ends_with("│ line 21"), "{}", s[3]);
    assert!(s[20].ends_with("│ line 38"), "{}", s[20]);
    assert_eq!(view.seen, Some((1, 38)), "only what is on screen");
    assert!(s[21].contains("lines below (PgDn)"), "{}", s[21]);
    // Scrolling down shows (and reports) more; the divider stays.
    view.scroll = 0;
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    assert!(s[20].ends_with("│ line 60"), "{}", s[20]);
    assert_eq!(view.seen, Some((1, 60)));
    view.scroll = 30;
    let s = screen(&m, &InputLine::default(), &mut view, 80, 24, now);
    find(&s, "new messages");
}

#[test]
fn mentions_receipts_and_link_states() {
    let now = Instant::now();
    let mut m = model(now);
    m.select(2);
    m.handle_message(&msg(2, 4, (BOB, "bob"), T0 - 300, "@alice are you in?"));
    m.handle_receipts(
        2,
        &[
            pb::ReadReceipt { conversation_id: 2, user_id: ME, username: "alice".into(), read_seq: 4 },
            pb::ReadReceipt { conversation_id: 2, user_id: BOB, username: "bob".into(), read_seq: 4 },
            pb::ReadReceipt { conversation_id: 2, user_id: 3, username: "carol".into(), read_seq: 2 },
        ],
    );
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let s = draw_on(&mut terminal, &m, &InputLine::default(), &mut ViewState::default(), now);
    let at = find(&s, "@alice are you in?");
    let col = s[at].find("@alice").map(|b| s[at][..b].chars().count()).unwrap() as u16;
    assert_eq!(terminal.backend().buffer()[(col, at as u16)].bg, Color::Yellow, "the mention stands out");
    assert_eq!(terminal.backend().buffer()[(col + 8, at as u16)].bg, Color::Reset, "the rest does not");
    assert!(s[at + 1].ends_with("│ ✓ read by bob"), "{}", s[at + 1]);
    assert!(s[find(&s, "who's in?") + 1].ends_with("│ ✓ read by carol"), "{}", s[find(&s, "who's in?") + 1]);
    assert!(!s.iter().any(|r| r.contains("read by alice")), "not me");

    let mut fresh = ChatModel::new("alice", ME);
    fresh.set_link(
        Link::Reconnecting { reason: "Connection refused".into(), retry_at: now + Duration::from_secs(2), attempt: 2 },
        now,
    );
    let s = screen(&fresh, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    assert!(s[23].starts_with(" ◌ connecting… retry in 2s (attempt 2) · Connection refused"), "{}", s[23]);
    m.set_link(Link::SignedOut, now);
    let s = screen(&m, &InputLine::default(), &mut ViewState::default(), 80, 24, now);
    assert!(s[23].starts_with(" ✗ this device was signed out; log in again with `confab login`"), "{}", s[23]);
    assert!(s[22].contains("signed out"), "{}", s[22]);
}
