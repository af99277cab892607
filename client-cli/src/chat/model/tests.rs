//! Events in, state out: the model driven by hand-made server events, with
//! time as an argument.

use std::time::{Duration, Instant};

use confab_client::TransportKind;
use confab_protocol::pb;
use pb::inbox_event::Event as E;

use super::*;

const ME: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;

fn name(user_id: u64) -> &'static str {
    match user_id {
        ME => "alice",
        BOB => "bob",
        CAROL => "carol",
        _ => "someone",
    }
}

fn dm(id: u64, peer: &str, last_seq: u64, read_seq: u64, activity_ms: i64) -> pb::Conversation {
    pb::Conversation {
        conversation_id: id,
        kind: pb::ConversationKind::Direct as i32,
        peer_username: peer.into(),
        last_seq,
        read_seq,
        unread_count: last_seq - read_seq,
        activity_ms,
        member_count: 2,
        ..Default::default()
    }
}

fn group(id: u64, title: &str, last_seq: u64, members: u32) -> pb::Conversation {
    pb::Conversation {
        conversation_id: id,
        kind: pb::ConversationKind::Group as i32,
        title: title.into(),
        last_seq,
        read_seq: last_seq,
        activity_ms: 1_000,
        member_count: members,
        ..Default::default()
    }
}

fn text(conversation_id: u64, seq: u64, sender: u64, body: &str) -> pb::Message {
    pb::Message {
        conversation_id,
        seq,
        sender_id: sender,
        sender_username: name(sender).into(),
        sent_at_ms: 1_000 + seq as i64,
        client_msg_id: format!("m-{conversation_id}-{seq}"),
        content: Some(pb::message::Content::Text(body.into())),
    }
}

fn membership(conversation_id: u64, seq: u64, sender: u64, action: pb::MembershipAction, users: &[u64]) -> pb::Message {
    let users = users.iter().map(|&u| pb::UserRef { user_id: u, username: name(u).into() }).collect();
    pb::Message {
        conversation_id,
        seq,
        sender_id: sender,
        sender_username: name(sender).into(),
        sent_at_ms: 1_000 + seq as i64,
        client_msg_id: String::new(),
        content: Some(pb::message::Content::Membership(pb::MembershipChange {
            action: action as i32,
            users,
            ..Default::default()
        })),
    }
}

fn history_page(messages: Vec<pb::Message>, has_more: bool) -> pb::HistoryPage {
    pb::HistoryPage { messages, has_more, ..Default::default() }
}

fn ev(inbox_seq: u64, event: E) -> pb::InboxEvent {
    pb::InboxEvent { inbox_seq, event: Some(event) }
}

fn up() -> Link {
    Link::Connected { server: "127.0.0.1:7443".into(), transport: TransportKind::Tcp }
}

fn down(now: Instant) -> Link {
    Link::Reconnecting { reason: "connection lost".into(), retry_at: now + Duration::from_secs(1), attempt: 1 }
}

/// A connected model with a DM with bob (conversation 1) holding `seqs`.
fn with_dm(seqs: std::ops::RangeInclusive<u64>, now: Instant) -> ChatModel {
    let mut m = ChatModel::new("alice", ME);
    let last = *seqs.end();
    m.handle_snapshot(&[dm(1, "bob", last, last, 1_000)], true);
    for seq in seqs {
        m.handle_message(&text(1, seq, BOB, &format!("bob {seq}")));
    }
    m.set_link(up(), now);
    m
}

fn seqs(m: &ChatModel, conversation: u64) -> Vec<u64> {
    m.conversation(conversation).map(|c| c.messages.keys().copied().collect()).unwrap_or_default()
}

#[test]
fn list_is_most_recent_first_and_opens_the_newest() {
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[dm(1, "bob", 0, 0, 500), group(2, "Team", 1, 3), dm(3, "carol", 0, 0, 1_000)], true);
    // Ties (group 2 and DM 3 at 1000 ms) put the higher id first.
    assert_eq!(m.order(), [3, 2, 1]);
    assert_eq!(m.selected(), Some(3));
    // A new message moves its conversation to the top; the open one stays.
    let mut late = text(1, 1, BOB, "hello");
    late.sent_at_ms = 5_000;
    m.handle_message(&late);
    assert_eq!(m.order(), [1, 3, 2]);
    assert_eq!(m.selected(), Some(3));
    m.select_step(1);
    assert_eq!(m.selected(), Some(2));
    m.select_step(1);
    assert_eq!(m.selected(), Some(1), "wraps around");
    m.select_step(-1);
    assert_eq!(m.selected(), Some(2));
}

#[test]
fn unread_counts_follow_messages_and_read_markers() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[dm(1, "bob", 4, 1, 1_000)], true);
    let c = |m: &ChatModel| m.conversation(1).map(Conversation::unread);
    assert_eq!(c(&m), Some(3));
    m.handle_inbox(&ev(10, E::Message(text(1, 5, BOB, "more"))));
    assert_eq!(c(&m), Some(4));
    // A read marker from another device of mine.
    m.handle_inbox(&ev(11, E::Read(pb::ReadState { conversation_id: 1, read_seq: 4, unread_count: 1, last_seq: 5 })));
    assert_eq!(c(&m), Some(1));
    // Markers only move forward: a stale one changes nothing.
    m.handle_read_state(&pb::ReadState { conversation_id: 1, read_seq: 2, unread_count: 3, last_seq: 5 });
    assert_eq!(c(&m), Some(1));
    // My own message moves my marker: nothing is unread.
    m.handle_inbox(&ev(12, E::Message(text(1, 6, ME, "answer"))));
    assert_eq!(c(&m), Some(0));
    m.set_link(up(), now);
    assert_eq!(m.poll_mark_read(Some((1, 6))), None, "nothing to mark");
}

#[test]
fn the_open_conversation_is_marked_read_once_per_new_message() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[dm(1, "bob", 3, 1, 1_000)], true);
    m.set_link(up(), now);
    assert_eq!(m.poll_mark_read(Some((1, 3))), Some((1, 3)));
    assert_eq!(m.poll_mark_read(Some((1, 3))), None, "asked for once");
    m.handle_message(&text(1, 4, BOB, "again"));
    assert_eq!(m.poll_mark_read(Some((1, 4))), Some((1, 4)));
    m.handle_mark_read_error(1);
    assert_eq!(m.poll_mark_read(Some((1, 4))), Some((1, 4)), "a failed request is asked for again");
    m.handle_message(&text(1, 5, BOB, "unfocused"));
    m.set_focused(false);
    assert_eq!(m.poll_mark_read(Some((1, 5))), None, "not read while the terminal has no focus");
    m.set_focused(true);
    assert_eq!(m.poll_mark_read(Some((2, 5))), None, "what another conversation showed");
    assert_eq!(m.poll_mark_read(None), None, "nothing shown");
    m.set_link(down(now), now);
    assert_eq!(m.poll_mark_read(Some((1, 5))), None, "not while disconnected");
}

#[test]
fn opening_keeps_the_place_and_marks_read_only_what_was_shown() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    // 81 unread of 90; only the newest is known (last_message).
    let mut c = dm(1, "bob", 90, 9, 2_000);
    c.last_message = Some(text(1, 90, BOB, "newest"));
    m.handle_snapshot(&[c, group(2, "Team", 3, 3)], true);
    m.set_link(up(), now);
    let conv = m.current().unwrap();
    assert_eq!((conv.id, conv.divider), (1, Some(10)), "the divider above the first unread");
    assert!(conv.divider_pending());
    // History is fetched down to the first unread even when the top is
    // not on screen.
    assert_eq!(m.poll_history(false), Some((1, 90)));
    m.handle_history(1, 90, &history_page((40..90).map(|s| text(1, s, BOB, "x")).collect(), true));
    assert_eq!(m.poll_history(false), Some((1, 40)));
    m.handle_history(1, 40, &history_page((1..40).map(|s| text(1, s, BOB, "x")).collect(), false));
    assert!(!m.current().unwrap().divider_pending());
    assert_eq!(m.poll_history(false), None);
    // The screen showed up to 30: that far is read, not 90.
    assert_eq!(m.poll_mark_read(Some((1, 30))), Some((1, 30)));
    m.handle_read_state(&pb::ReadState { conversation_id: 1, read_seq: 30, unread_count: 60, last_seq: 90 });
    assert_eq!(m.conversation(1).unwrap().unread(), 60);
    assert_eq!(m.poll_mark_read(Some((1, 20))), None, "scrolling back marks nothing");
    assert_eq!(m.poll_mark_read(Some((1, 55))), Some((1, 55)), "scrolling down moves it on");
    // Another conversation: this one loses its divider; coming back with
    // nothing unread shows none.
    m.handle_read_state(&pb::ReadState { conversation_id: 1, read_seq: 90, unread_count: 0, last_seq: 90 });
    m.select_step(1);
    assert_eq!(m.selected(), Some(2));
    assert_eq!(m.conversation(1).unwrap().divider, None);
    assert_eq!(m.conversation(2).unwrap().divider, None, "nothing unread there");
    m.select(1);
    assert_eq!(m.current().unwrap().divider, None);
}

#[test]
fn group_receipts_are_asked_for_on_open_and_every_few_seconds() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[group(2, "Team", 3, 3), dm(1, "bob", 1, 1, 500)], true);
    assert_eq!(m.poll_receipts(now), None, "not while disconnected");
    m.set_link(up(), now);
    assert_eq!(m.poll_receipts(now), Some(2));
    assert_eq!(m.poll_receipts(now + Duration::from_secs(1)), None);
    let r = |user_id: u64, read_seq: u64| pb::ReadReceipt {
        conversation_id: 2,
        user_id,
        username: name(user_id).into(),
        read_seq,
    };
    m.handle_receipts(2, &[r(ME, 3), r(BOB, 2), r(CAROL, 1)]);
    assert_eq!(m.member_names(), ["bob", "carol", "alice"], "members for completion, me last");
    // Bob's own message moves his marker.
    m.handle_message(&text(2, 4, BOB, "hi"));
    assert_eq!(m.conversation(2).unwrap().receipts.get("bob"), Some(&4));
    assert_eq!(m.poll_receipts(now + Duration::from_secs(6)), Some(2));
    // A membership change asks again at once.
    m.handle_message(&membership(2, 5, ME, pb::MembershipAction::Removed, &[CAROL]));
    assert_eq!(m.poll_receipts(now + Duration::from_secs(7)), Some(2));
    m.select_step(1);
    assert_eq!(m.poll_receipts(now + Duration::from_secs(20)), None, "not for a DM");
    assert_eq!(m.member_names(), ["bob", "alice"]);
}

#[test]
fn conversations_are_found_by_number_or_name() {
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[dm(1, "bob", 1, 1, 3_000), group(2, "Weekend plans", 1, 3), dm(3, "carol", 1, 1, 2_000)], true);
    assert_eq!(m.nth(1), Some(1));
    assert_eq!(m.nth(3), Some(2));
    assert_eq!(m.nth(4), None);
    assert_eq!(m.find("2"), Ok(3));
    assert_eq!(m.find("@carol"), Ok(3));
    assert_eq!(m.find("carol"), Ok(3));
    assert_eq!(m.find("weekend plans"), Ok(2));
    assert_eq!(m.find("week"), Ok(2), "a unique prefix");
    assert!(m.find("nobody").unwrap_err().contains("no conversation"));
    assert!(m.find("9").unwrap_err().contains("no conversation 9"));
}

#[test]
fn a_revoked_device_stops_sending() {
    let now = Instant::now();
    let mut m = with_dm(1..=2, now);
    m.set_link(down(now), now);
    m.send("queued", "cid-1".into()).unwrap();
    m.set_link(Link::SignedOut, now);
    assert!(m.signed_out());
    assert!(matches!(m.pending(1).next().map(|p| &p.state), Some(PendingState::Failed(_))));
    assert_eq!(m.unconfirmed(), 0, "nothing waits for a connection that will not come");
    assert!(m.send("more", "cid-2".into()).unwrap_err().contains("signed out"));
}

#[test]
fn a_later_success_clears_an_error_notice() {
    let now = Instant::now();
    let mut m = with_dm(1..=2, now);
    m.set_notice("unknown command /frob", true, now);
    m.clear_error_notice();
    assert_eq!(m.notice(now), None);
    m.set_notice("added bob", false, now);
    m.clear_error_notice();
    assert!(m.notice(now).is_some(), "not an error: it stays its time");
    assert_eq!(m.notice(now + Duration::from_secs(9)), None, "and goes by itself");
}

#[test]
fn a_send_is_pending_then_confirmed_once() {
    let now = Instant::now();
    let mut m = with_dm(1..=2, now);
    let req = m.send("hi bob", "cid-1".into()).unwrap().unwrap();
    assert_eq!(req, SendRequest { conversation_id: 1, client_msg_id: "cid-1".into(), text: "hi bob".into() });
    let pending: Vec<_> = m.pending(1).collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, PendingState::Sending);
    assert_eq!(m.unconfirmed(), 1);

    let mut stored = text(1, 3, ME, "hi bob");
    stored.client_msg_id = "cid-1".into();
    m.handle_sent(&stored);
    assert_eq!(m.pending(1).count(), 0);
    assert_eq!(m.unconfirmed(), 0);
    // The live event for the same message (the sender's session gets it
    // too) is not a second copy.
    m.handle_inbox(&ev(7, E::Message(stored.clone())));
    assert_eq!(seqs(&m, 1), [1, 2, 3]);

    // The other order: the live event first, then `Sent`.
    m.send("second", "cid-2".into()).unwrap();
    let mut second = text(1, 4, ME, "second");
    second.client_msg_id = "cid-2".into();
    m.handle_inbox(&ev(8, E::Message(second.clone())));
    assert_eq!(m.pending(1).count(), 0, "confirmed by the live event");
    m.handle_sent(&second);
    assert_eq!(seqs(&m, 1), [1, 2, 3, 4]);
}

#[test]
fn a_refused_send_is_marked_failed_and_retried_with_the_same_id() {
    let now = Instant::now();
    let mut m = with_dm(1..=1, now);
    m.send("too long", "cid-x".into()).unwrap();
    m.handle_send_error("cid-x", "MESSAGE_TOO_LONG", false);
    let p = m.pending(1).next().cloned().unwrap();
    assert_eq!(p.state, PendingState::Failed("MESSAGE_TOO_LONG".into()));
    assert_eq!(m.unconfirmed(), 0, "a failed send is not waiting for anything");
    let Retry::Now(again) = m.retry_failed() else { panic!("connected: sent now") };
    assert_eq!(again.client_msg_id, "cid-x");
    assert_eq!(m.pending(1).next().map(|p| p.state.clone()), Some(PendingState::Sending));
    assert_eq!(m.retry_failed(), Retry::Nothing, "nothing else failed");

    // Disconnected, a retry waits for the link; a failed send can be
    // dropped.
    m.handle_send_error("cid-x", "MESSAGE_TOO_LONG", false);
    m.set_link(down(now), now);
    assert_eq!(m.retry_failed(), Retry::OnReconnect);
    let resend = m.set_link(up(), now);
    assert_eq!(resend.iter().map(|r| r.client_msg_id.as_str()).collect::<Vec<_>>(), ["cid-x"]);
    m.handle_send_error("cid-x", "MESSAGE_TOO_LONG", false);
    m.send("fine", "cid-y".into()).unwrap();
    assert!(m.discard_failed());
    assert_eq!(m.pending(1).map(|p| p.client_msg_id.as_str()).collect::<Vec<_>>(), ["cid-y"], "only the failed one");
    assert!(!m.discard_failed());
}

#[test]
fn a_rate_limited_send_goes_out_again_after_retry_after_with_the_same_id() {
    let now = Instant::now();
    let mut m = with_dm(1..=1, now);
    m.send("retry me", "cid-r".into()).unwrap();
    m.handle_send_deferred("cid-r", "RATE_LIMITED (slow down)", Duration::from_millis(1500), now);
    assert!(matches!(m.pending(1).next().map(|p| &p.state), Some(PendingState::Deferred { .. })));
    assert_eq!(m.unconfirmed(), 1, "its outcome is still to come: quitting warns");
    assert_eq!(m.retry_failed(), Retry::Nothing, "not failed: Ctrl-R has nothing to do");
    assert!(m.poll_deferred(now + Duration::from_millis(1499)).is_empty(), "no sooner than retry_after_ms");
    let again = m.poll_deferred(now + Duration::from_millis(1500));
    assert_eq!(again, [SendRequest { conversation_id: 1, client_msg_id: "cid-r".into(), text: "retry me".into() }]);
    assert_eq!(m.pending(1).next().map(|p| p.state.clone()), Some(PendingState::Sending));
    assert!(m.poll_deferred(now + Duration::from_secs(60)).is_empty(), "sent once");

    // Refused again without a retry_after_ms (INTERNAL): a backoff that
    // doubles with each refusal (the first one was 0.5 s, under 1.5 s).
    m.handle_send_deferred("cid-r", "INTERNAL", Duration::ZERO, now);
    assert!(m.poll_deferred(now + Duration::from_millis(999)).is_empty());
    assert_eq!(m.poll_deferred(now + Duration::from_millis(1000)).len(), 1);
    m.handle_send_deferred("cid-r", "INTERNAL", Duration::ZERO, now);
    assert!(m.poll_deferred(now + Duration::from_millis(1999)).is_empty());
    assert_eq!(m.poll_deferred(now + Duration::from_millis(2000)).len(), 1);

    // Disconnected when its time comes: it waits for the link (not sent
    // twice on reconnect), then goes.
    m.handle_send_deferred("cid-r", "SERVER_BUSY", Duration::from_secs(1), now);
    m.set_link(down(now), now);
    let later = now + Duration::from_secs(10);
    assert!(m.poll_deferred(later).is_empty());
    assert!(m.set_link(up(), later).is_empty(), "not among the sends waiting for the connection");
    assert_eq!(m.poll_deferred(later).len(), 1);
    let mut stored = text(1, 2, ME, "retry me");
    stored.client_msg_id = "cid-r".into();
    m.handle_sent(&stored);
    assert_eq!(m.unconfirmed(), 0);
}

#[test]
fn sends_during_an_outage_wait_and_go_out_on_reconnect() {
    let now = Instant::now();
    let mut m = with_dm(1..=1, now);
    m.send("in flight", "cid-a".into()).unwrap();
    // The connection died under the request: outcome unknown.
    m.handle_send_error("cid-a", "connection lost", true);
    m.set_link(down(now), now);
    assert_eq!(m.send("typed offline", "cid-b".into()), Ok(None), "nothing to send now");
    assert!(m.pending(1).all(|p| p.state == PendingState::Waiting));
    assert_eq!(m.unconfirmed(), 2);

    let resend = m.set_link(up(), now);
    let ids: Vec<&str> = resend.iter().map(|r| r.client_msg_id.as_str()).collect();
    assert_eq!(ids, ["cid-a", "cid-b"], "in order, with the ids they had");
    assert!(m.pending(1).all(|p| p.state == PendingState::Sending));
    assert_eq!(m.notice(now).map(|n| n.text.as_str()), Some("reconnected"));
    assert!(m.set_link(up(), now).is_empty(), "sent once per reconnect");
}

#[test]
fn reconnecting_replays_without_duplicates_or_double_counting() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[group(5, "Team", 1, 2)], true);
    m.handle_inbox(&ev(1, E::Message(membership(5, 1, ME, pb::MembershipAction::Created, &[ME, BOB]))));
    m.handle_inbox(&ev(2, E::Message(text(5, 2, BOB, "one"))));
    m.set_link(up(), now);
    m.set_link(down(now), now);
    // While away: carol was added (seq 3), bob wrote twice. The new
    // session's list already counts all of it...
    let mut list = group(5, "Team", 5, 3);
    list.read_seq = 2;
    m.handle_snapshot(&[list], false);
    // ...and the catch-up replays from the cursor, overlapping what the
    // last session applied.
    m.handle_inbox(&ev(2, E::Message(text(5, 2, BOB, "one"))));
    m.handle_inbox(&ev(3, E::Message(membership(5, 3, ME, pb::MembershipAction::Added, &[CAROL]))));
    m.handle_inbox(&ev(4, E::Message(text(5, 4, BOB, "two"))));
    m.handle_inbox(&ev(5, E::Message(text(5, 5, BOB, "three"))));
    m.set_link(up(), now);
    let c = m.conversation(5).unwrap();
    assert_eq!(seqs(&m, 5), [1, 2, 3, 4, 5]);
    assert_eq!(c.member_count, 3, "the ADDED replay is not counted on top of the list");
    assert_eq!(c.unread(), 2, "my own ADDED at seq 3 moved my marker: bob's 4 and 5");
}

#[test]
fn membership_changes_update_the_conversation() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.set_link(up(), now);
    // Bob creates a group with me in it: joined, then CREATED.
    m.handle_inbox(&ev(1, E::Joined(group(7, "Plans", 1, 2))));
    m.handle_inbox(&ev(2, E::Message(membership(7, 1, BOB, pb::MembershipAction::Created, &[BOB, ME]))));
    assert_eq!(m.selected(), Some(7), "the first conversation opens");
    m.handle_inbox(&ev(3, E::Message(membership(7, 2, BOB, pb::MembershipAction::Added, &[CAROL]))));
    assert_eq!(m.conversation(7).unwrap().member_count, 3);
    let mut renamed = membership(7, 3, BOB, pb::MembershipAction::Renamed, &[]);
    if let Some(pb::message::Content::Membership(ch)) = &mut renamed.content {
        ch.title = "Weekend".into();
    }
    m.handle_inbox(&ev(4, E::Message(renamed)));
    assert_eq!(m.conversation(7).unwrap().name(), "Weekend");
    assert!(m.send("still here", "cid-1".into()).is_ok());
    // Bob removes me: read-only from here.
    m.handle_inbox(&ev(5, E::Message(membership(7, 4, BOB, pb::MembershipAction::Removed, &[ME]))));
    m.handle_inbox(&ev(6, E::Left(pb::ConversationLeft { conversation_id: 7, seq: 4 })));
    let c = m.conversation(7).unwrap();
    assert!(c.left);
    assert_eq!(c.member_count, 2);
    assert!(m.send("hello?", "cid-2".into()).unwrap_err().contains("no longer a member"));
}

#[test]
fn added_again_after_removal_reloads_instead_of_leaving_a_hole() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.set_link(up(), now);
    m.handle_snapshot(&[group(7, "Plans", 3, 3)], true);
    for seq in 1..=3 {
        m.handle_message(&text(7, seq, BOB, "before"));
    }
    m.handle_inbox(&ev(1, E::Message(membership(7, 4, BOB, pb::MembershipAction::Removed, &[ME]))));
    m.handle_inbox(&ev(2, E::Left(pb::ConversationLeft { conversation_id: 7, seq: 4 })));
    // Seqs 5..8 happened without me; seq 9 adds me back.
    let mut back = group(7, "Plans", 9, 3);
    back.read_seq = 9;
    m.handle_inbox(&ev(3, E::Joined(back)));
    m.handle_inbox(&ev(4, E::Message(membership(7, 9, BOB, pb::MembershipAction::Added, &[ME]))));
    assert!(!m.conversation(7).unwrap().left);
    assert_eq!(seqs(&m, 7), [9], "1..4 cannot be extended up to 9 without 5..8");
    assert!(m.conversation(7).unwrap().older_available());
    // A page asked for before the restart (below seq 1) no longer joins.
    m.handle_history(7, 1, &history_page(vec![], false));
    assert!(m.conversation(7).unwrap().older_available(), "the stale answer did not end the history");
    assert_eq!(m.poll_history(true), Some((7, 9)), "history reloads below the new message");
    let page: Vec<pb::Message> = (1..=8).map(|s| text(7, s, BOB, "old")).collect();
    m.handle_history(7, 9, &history_page(page, false));
    assert_eq!(seqs(&m, 7), (1..=9).collect::<Vec<_>>());
}

#[test]
fn a_history_page_that_does_not_reach_the_loaded_messages_is_dropped() {
    let now = Instant::now();
    let mut m = with_dm(50..=60, now);
    assert_eq!(m.poll_history(true), Some((1, 50)));
    // The newest page, asked for when nothing was loaded, ends far below.
    let stale: Vec<pb::Message> = (10..=20).map(|s| text(1, s, BOB, "far")).collect();
    m.handle_history(1, 0, &history_page(stale, true));
    assert_eq!(seqs(&m, 1).first(), Some(&50), "no hole from 21 to 49");
    assert_eq!(m.poll_history(true), Some((1, 50)), "asked again");
    // The newest page that overlaps the live messages is taken.
    let newest: Vec<pb::Message> = (40..=55).map(|s| text(1, s, BOB, "near")).collect();
    m.handle_history(1, 0, &history_page(newest, true));
    assert_eq!(seqs(&m, 1), (40..=60).collect::<Vec<_>>());
}

#[test]
fn history_loads_when_the_top_is_visible_until_the_start() {
    let now = Instant::now();
    let mut m = with_dm(101..=150, now);
    assert_eq!(m.poll_history(false), None, "the top is not on screen");
    assert_eq!(m.poll_history(true), Some((1, 101)));
    assert_eq!(m.poll_history(true), None, "one request at a time");
    assert!(m.current().unwrap().loading());
    // The page replays an old rename: history does not change the title.
    let mut page: Vec<pb::Message> = (2..=100).map(|s| text(1, s, BOB, "older")).collect();
    let mut old = membership(1, 1, BOB, pb::MembershipAction::Renamed, &[]);
    if let Some(pb::message::Content::Membership(ch)) = &mut old.content {
        ch.title = "old title".into();
    }
    page.insert(0, old);
    m.handle_history(1, 101, &history_page(page, false));
    let c = m.current().unwrap();
    assert_eq!(c.messages.len(), 150);
    assert_eq!(c.name(), "@bob");
    assert!(!c.older_available());
    assert_eq!(m.poll_history(true), None, "the beginning is loaded");

    // A refused page is not asked for again until the link comes back.
    let mut m = with_dm(101..=150, now);
    m.poll_history(true);
    m.handle_history_error(1, "INTERNAL", now);
    assert_eq!(m.poll_history(true), None);
    assert!(m.notice(now).is_some_and(|n| n.error));
    m.set_link(down(now), now);
    assert_eq!(m.poll_history(true), None, "not while disconnected");
    m.set_link(up(), now);
    assert_eq!(m.poll_history(true), Some((1, 101)));
}

#[test]
fn typing_shows_until_it_expires_or_the_message_arrives() {
    let t0 = Instant::now();
    let mut m = with_dm(1..=1, t0);
    let typing = |user_id: u64, ms: u32| pb::TypingEvent {
        conversation_id: 1,
        user_id,
        username: name(user_id).into(),
        expires_in_ms: ms,
    };
    m.handle_typing(&typing(ME, 6_000), t0);
    assert!(m.current().unwrap().typing(t0).is_empty(), "my own notices are not shown");
    m.handle_typing(&typing(BOB, 6_000), t0);
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(m.current().unwrap().typing(at(5)), ["bob"]);
    assert!(m.current().unwrap().typing(at(7)).is_empty(), "expired");
    // A renewal extends it; the message itself ends it.
    m.handle_typing(&typing(BOB, 6_000), at(4));
    assert_eq!(m.current().unwrap().typing(at(9)), ["bob"]);
    m.handle_message(&text(1, 2, BOB, "done typing"));
    assert!(m.current().unwrap().typing(at(5)).is_empty());
    // An old message from history does not end a live indicator.
    m.handle_typing(&typing(BOB, 6_000), at(5));
    m.handle_message(&text(1, 1, BOB, "bob 1"));
    assert_eq!(m.current().unwrap().typing(at(6)), ["bob"]);
    m.expire(at(20));
    assert!(m.current().unwrap().typing.is_empty(), "expired entries are dropped");
    m.handle_typing(&typing(BOB, 6_000), at(20));
    m.set_link(down(at(20)), at(20));
    assert!(m.current().unwrap().typing(at(21)).is_empty(), "typing ends with the session");
}

#[test]
fn presence_is_asked_for_dm_partners_once_per_session() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    m.handle_snapshot(&[dm(1, "bob", 0, 0, 1), group(2, "Team", 1, 3)], true);
    assert!(m.poll_subscribe().is_empty(), "not before the link is up");
    m.set_link(up(), now);
    assert_eq!(m.poll_subscribe(), ["bob"]);
    assert!(m.poll_subscribe().is_empty());
    m.handle_presence(&pb::Presence {
        user_id: BOB,
        username: "bob".into(),
        state: pb::PresenceState::Online as i32,
        last_seen_ms: 0,
    });
    assert_eq!(m.presence("bob").map(|p| p.state), Some(pb::PresenceState::Online));
    // Carol opens a DM with me mid-session.
    m.handle_inbox(&ev(1, E::Joined(dm(3, "carol", 0, 0, 2))));
    assert_eq!(m.poll_subscribe(), ["carol"]);
    // Subscriptions end with the session.
    m.set_link(down(now), now);
    assert!(m.poll_subscribe().is_empty());
    m.set_link(up(), now);
    assert_eq!(m.poll_subscribe(), ["bob", "carol"]);
    m.handle_presence(&pb::Presence {
        user_id: BOB,
        username: "bob".into(),
        state: pb::PresenceState::Offline as i32,
        last_seen_ms: 42,
    });
    assert_eq!(m.presence("bob"), Some(PresenceInfo { state: pb::PresenceState::Offline, last_seen_ms: 42 }));
}

#[test]
fn a_presence_update_without_a_name_is_matched_by_user_id() {
    let now = Instant::now();
    let mut m = ChatModel::new("alice", ME);
    let mut bob = dm(1, "bob", 0, 0, 1);
    bob.peer_user_id = BOB;
    m.handle_snapshot(&[bob], true);
    m.set_link(up(), now);
    let offline =
        pb::Presence { user_id: BOB, state: pb::PresenceState::Offline as i32, last_seen_ms: 7, ..Default::default() };
    m.handle_presence(&offline);
    assert_eq!(m.presence("bob"), Some(PresenceInfo { state: pb::PresenceState::Offline, last_seen_ms: 7 }));
    // Names are also learnt from messages; an unknown id is ignored.
    m.handle_message(&text(1, 1, CAROL, "hi"));
    m.handle_presence(&pb::Presence { user_id: CAROL, state: pb::PresenceState::Away as i32, ..Default::default() });
    assert_eq!(m.presence("carol").map(|p| p.state), Some(pb::PresenceState::Away));
    m.handle_presence(&pb::Presence { user_id: 99, state: pb::PresenceState::Online as i32, ..Default::default() });
    assert_eq!(m.presence(""), None);
}

#[test]
fn a_message_for_an_unknown_conversation_asks_for_it_once() {
    let now = Instant::now();
    let mut m = with_dm(1..=1, now);
    m.handle_inbox(&ev(1, E::Message(text(9, 1, CAROL, "hi"))));
    assert_eq!(m.poll_unknown(), Some(9));
    assert_eq!(m.poll_unknown(), None);
    m.handle_conversation(&group(9, "Surprise", 1, 3));
    assert_eq!(m.conversation(9).map(Conversation::name).as_deref(), Some("Surprise"));
    assert_eq!(seqs(&m, 9), [1]);
}

#[test]
fn a_rebuild_starts_over_and_notes_follow_their_message() {
    let now = Instant::now();
    let mut m = with_dm(1..=3, now);
    m.note(1, "members: alice, bob");
    assert_eq!(m.current().unwrap().notes[0], Note { after_seq: 3, text: "members: alice, bob".into() });
    // The server's inbox is behind this view: it is other data.
    m.handle_snapshot(&[dm(4, "carol", 1, 1, 10)], true);
    assert!(m.conversation(1).is_none());
    assert_eq!(m.selected(), Some(4));
}
