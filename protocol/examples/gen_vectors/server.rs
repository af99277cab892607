//! ServerFrame vectors: every `body` variant at least once, every
//! `InboxEvent.event` and `Message.content` variant, plus edge cases.

use confab_protocol::{
    ErrorCode, Limits,
    pb::{self, inbox_event::Event, message::Content, server_frame::Body},
};
use prost::Message as _;

use super::{Valid, server};

/// 2023-11-14T22:13:20Z, the clock every timestamp is read from.
const T0: i64 = 1_700_000_000_000;
const ALICE: u64 = 1001;
const BOB: u64 = 1002;
const CAROL: u64 = 1003;

/// The Welcome a default server sends to `client::hello()` on QUIC: of
/// what the Hello offers, the capabilities it supports there.
pub fn welcome() -> pb::ServerFrame {
    server(
        1,
        Body::Welcome(pb::Welcome {
            version: 1,
            capabilities: vec!["request-streams".into()],
            limits: Some((&Limits::default()).into()),
            heartbeat_interval_ms: 20_000,
            server_time_ms: T0,
            server_name: "confabd/0.1.0".into(),
            vapid_public_key: "BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3qBUYIHBQFLXYp5Nksh8U"
                .into(),
        }),
    )
}

fn text_message(seq: u64, sender_id: u64, sender: &str, text: &str) -> pb::Message {
    pb::Message {
        conversation_id: 12,
        seq,
        sender_id,
        sender_username: sender.into(),
        sent_at_ms: T0 + seq as i64 * 1000,
        client_msg_id: format!("c{seq:04}-{sender}"),
        content: Some(Content::Text(text.into())),
    }
}

fn group_created() -> pb::Message {
    pb::Message {
        conversation_id: 12,
        seq: 1,
        sender_id: ALICE,
        sender_username: "alice".into(),
        sent_at_ms: T0,
        client_msg_id: String::new(),
        content: Some(Content::Membership(pb::MembershipChange {
            action: pb::MembershipAction::Created.into(),
            users: vec![user(ALICE, "alice"), user(BOB, "bob"), user(CAROL, "carol")],
            title: "Weekend hike 🥾".into(),
            role: 0,
        })),
    }
}

/// Ownership passed to bob when alice left: ROLE_CHANGED with role OWNER.
fn owner_handed_over() -> pb::Message {
    pb::Message {
        conversation_id: 12,
        seq: 200,
        sender_id: ALICE,
        sender_username: "alice".into(),
        sent_at_ms: T0 + 200_000,
        client_msg_id: String::new(),
        content: Some(Content::Membership(pb::MembershipChange {
            action: pb::MembershipAction::RoleChanged.into(),
            users: vec![user(BOB, "bob")],
            title: String::new(),
            role: pb::MemberRole::Owner.into(),
        })),
    }
}

fn user(user_id: u64, username: &str) -> pb::UserRef {
    pb::UserRef { user_id, username: username.into() }
}

fn group() -> pb::Conversation {
    pb::Conversation {
        conversation_id: 12,
        kind: pb::ConversationKind::Group.into(),
        title: "Weekend hike 🥾".into(),
        peer_user_id: 0,
        peer_username: String::new(),
        created_at_ms: T0,
        last_seq: 201,
        read_seq: 199,
        unread_count: 2,
        last_message: Some(text_message(201, BOB, "bob", "See you at 8!")),
        member_count: 3,
        activity_ms: T0 + 201_000,
        role: pb::MemberRole::Owner.into(),
    }
}

fn direct() -> pb::Conversation {
    pb::Conversation {
        conversation_id: 31,
        kind: pb::ConversationKind::Direct.into(),
        title: String::new(),
        peer_user_id: BOB,
        peer_username: "bob".into(),
        created_at_ms: T0 - 86_400_000,
        last_seq: 0,
        read_seq: 0,
        unread_count: 0,
        last_message: None,
        member_count: 2,
        activity_ms: T0 - 86_400_000,
        role: pb::MemberRole::Member.into(),
    }
}

fn read_state() -> pb::ReadState {
    pb::ReadState { conversation_id: 12, read_seq: 201, unread_count: 0, last_seq: 201 }
}

fn event(inbox_seq: u64, event: Event) -> pb::InboxEvent {
    pb::InboxEvent { inbox_seq, event: Some(event) }
}

fn error(code: ErrorCode, message: &str, retry_after_ms: u64, fatal: bool) -> Body {
    Body::Error(pb::Error { code: code.0, message: message.into(), retry_after_ms, fatal })
}

pub fn vectors() -> Vec<Valid> {
    vec![
        Valid::of(
            "welcome",
            "Welcome answering Hello (request_id 1) on QUIC: the capability it supports of those offered, and the v1 default Limits in full",
            &welcome(),
        ),
        Valid::of(
            "error",
            "Error CONVERSATION_NOT_FOUND (311) answering request 5",
            &server(5, error(ErrorCode::CONVERSATION_NOT_FOUND, "no such conversation", 0, false)),
        ),
        Valid::of(
            "error_rate_limited",
            "Error RATE_LIMITED (400) with retry_after_ms 250",
            &server(9, error(ErrorCode::RATE_LIMITED, "rate limit exceeded", 250, false)),
        ),
        Valid::of(
            "error_fatal",
            "A session-level fatal Error HEARTBEAT_TIMEOUT (108) with request_id 0",
            &server(0, error(ErrorCode::HEARTBEAT_TIMEOUT, "nothing heard for 2.5 heartbeat intervals", 0, true)),
        ),
        Valid::of(
            "error_unknown_code",
            "An Error with a code this version does not define (451): receivers keep it and classify it by range (4xx: wait and retry)",
            &server(10, error(ErrorCode(451), "newer server", 1000, false)),
        ),
        Valid::of("done", "Done answering a logout (an empty body)", &server(40, Body::Done(pb::Done {}))),
        Valid::of(
            "auth_ok",
            "AuthOk after login: a new device token, cursor behind the inbox head",
            &server(
                2,
                Body::AuthOk(pb::AuthOk {
                    user_id: ALICE,
                    username: "alice".into(),
                    device_id: 7,
                    token: super::client::TOKEN.into(),
                    cursor: 41,
                    inbox_head: 57,
                    push_dropped: None,
                }),
            ),
        ),
        Valid::of(
            "auth_ok_push_dropped",
            "AuthOk after resume (empty token) telling the device its push target was removed (the push service answered 410)",
            &server(
                3,
                Body::AuthOk(pb::AuthOk {
                    user_id: ALICE,
                    username: "alice".into(),
                    device_id: 7,
                    token: String::new(),
                    cursor: 57,
                    inbox_head: 60,
                    push_dropped: Some(pb::PushTargetDropped { dropped_at_ms: T0 - 60_000, http_status: 410 }),
                }),
            ),
        ),
        Valid::of(
            "blocked_list",
            "BlockedList: one blocked user, more after it",
            &server(
                10,
                Body::BlockedList(pb::BlockedList {
                    users: vec![pb::BlockedUser { username: "mallory".into(), blocked_at_ms: T0 - 60_000 }],
                    has_more: true,
                }),
            ),
        ),
        Valid::of(
            "privacy_settings",
            "PrivacySettings: no new direct conversations, groups from contacts, out of prefix search",
            &server(
                12,
                Body::PrivacySettings(pb::PrivacySettings {
                    direct_messages: pb::Audience::Nobody as i32,
                    group_invites: pb::Audience::Contacts as i32,
                    search: pb::Audience::Nobody as i32,
                }),
            ),
        ),
        Valid::of(
            "user_list",
            "UserList: two users starting with \"al\", more after them",
            &server(
                13,
                Body::UserList(pb::UserList {
                    users: vec![
                        pb::UserResult { username: "alice".into() },
                        pb::UserResult { username: "alina".into() },
                    ],
                    has_more: true,
                }),
            ),
        ),
        Valid::of(
            "device_list",
            "DeviceList with the current device online and another never seen",
            &server(
                5,
                Body::DeviceList(pb::DeviceList {
                    devices: vec![
                        pb::Device {
                            device_id: 7,
                            name: "phone".into(),
                            created_at_ms: T0 - 3_600_000,
                            last_seen_ms: T0,
                            online: true,
                            current: true,
                        },
                        pb::Device {
                            device_id: 8,
                            name: "laptop".into(),
                            created_at_ms: T0 - 60_000,
                            last_seen_ms: 0,
                            online: false,
                            current: false,
                        },
                    ],
                    has_more: false,
                }),
            ),
        ),
        Valid::of(
            "device_list_more",
            "DeviceList page: one device (a limit of 1 asked), more after it",
            &server(
                6,
                Body::DeviceList(pb::DeviceList {
                    devices: vec![pb::Device {
                        device_id: 7,
                        name: "phone".into(),
                        created_at_ms: T0 - 3_600_000,
                        last_seen_ms: T0,
                        online: true,
                        current: true,
                    }],
                    has_more: true,
                }),
            ),
        ),
        Valid::of(
            "conversation",
            "Conversation (a group with unread messages and its last message)",
            &server(4, Body::Conversation(group())),
        ),
        Valid::of(
            "conversation_list",
            "ConversationList with a group and an empty direct conversation, more to come",
            &server(
                11,
                Body::ConversationList(pb::ConversationList { conversations: vec![group(), direct()], has_more: true }),
            ),
        ),
        Valid::of(
            "member_list",
            "MemberList of group 12 with owner, admin and member roles",
            &server(
                12,
                Body::MemberList(pb::MemberList {
                    conversation_id: 12,
                    members: vec![
                        member(ALICE, "alice", pb::MemberRole::Owner),
                        member(BOB, "bob", pb::MemberRole::Admin),
                        member(CAROL, "carol", pb::MemberRole::Member),
                    ],
                }),
            ),
        ),
        Valid::of(
            "sent",
            "Sent: the stored message for a SendRequest",
            &server(
                13,
                Body::Sent(pb::Sent {
                    message: Some(text_message(202, ALICE, "alice", "Hello, world! 👋")),
                    duplicate: false,
                }),
            ),
        ),
        Valid::of(
            "sent_duplicate",
            "Sent for a resent client_msg_id: the original message, duplicate true",
            &server(
                14,
                Body::Sent(pb::Sent {
                    message: Some(text_message(202, ALICE, "alice", "Hello, world! 👋")),
                    duplicate: true,
                }),
            ),
        ),
        Valid::of(
            "sync_page",
            "SyncPage with one event of each kind, more to come",
            &server(
                15,
                Body::SyncPage(pb::SyncPage {
                    events: vec![
                        event(42, Event::Joined(group())),
                        event(43, Event::Message(group_created())),
                        event(44, Event::Message(text_message(200, BOB, "bob", "Who's in?"))),
                        event(45, Event::Read(read_state())),
                        event(46, Event::Left(pb::ConversationLeft { conversation_id: 9, seq: 17 })),
                    ],
                    inbox_head: 57,
                    has_more: true,
                }),
            ),
        ),
        Valid::of(
            "history_page",
            "HistoryPage holding a membership change and text messages",
            &server(
                17,
                Body::HistoryPage(pb::HistoryPage {
                    conversation_id: 12,
                    messages: vec![
                        group_created(),
                        text_message(2, BOB, "bob", "Who's in?"),
                        text_message(3, CAROL, "carol", "Me! Ça va être super."),
                    ],
                    has_more: false,
                }),
            ),
        ),
        Valid::of(
            "history_page_more",
            "HistoryPage cut short: more messages exist before these",
            &server(
                18,
                Body::HistoryPage(pb::HistoryPage {
                    conversation_id: 12,
                    messages: vec![text_message(199, CAROL, "carol", "Bring water"), owner_handed_over()],
                    has_more: true,
                }),
            ),
        ),
        Valid::of(
            "read_state",
            "ReadState answering MarkReadRequest: two messages still unread",
            &server(
                19,
                Body::ReadState(pb::ReadState { conversation_id: 12, read_seq: 199, unread_count: 2, last_seq: 201 }),
            ),
        ),
        Valid::of(
            "read_receipt_list",
            "ReadReceiptList for group 12",
            &server(
                20,
                Body::ReadReceiptList(pb::ReadReceiptList {
                    conversation_id: 12,
                    receipts: vec![receipt(BOB, "bob", 201), receipt(CAROL, "carol", 150)],
                }),
            ),
        ),
        Valid::of(
            "presence_list",
            "PresenceList answering SubscribePresenceRequest: one online, one offline",
            &server(
                21,
                Body::PresenceList(pb::PresenceList {
                    presences: vec![
                        presence(BOB, "bob", pb::PresenceState::Online, 0),
                        presence(CAROL, "carol", pb::PresenceState::Offline, T0 - 5_000),
                    ],
                }),
            ),
        ),
        Valid::of(
            "push_registered",
            "PushRegistered with a 32-byte webhook secret (base64 in JSON)",
            &server(
                25,
                Body::PushRegistered(pb::PushRegistered {
                    webhook_secret: (0u8..32).map(|i| i.wrapping_mul(73) ^ 0x5c).collect::<Vec<_>>().into(),
                }),
            ),
        ),
        Valid::of(
            "pong",
            "Pong echoing the ping's nonce, with the server clock",
            &server(27, Body::Pong(pb::Pong { nonce: 0x1122_3344_5566_7788, server_time_ms: T0 + 1234 })),
        ),
        Valid::of(
            "event_message",
            "Live InboxEvent (request_id 0) carrying a text message",
            &server(0, Body::Event(event(58, Event::Message(text_message(203, BOB, "bob", "On my way"))))),
        ),
        Valid::of(
            "event_membership",
            "Live InboxEvent carrying a membership change (users added, as a message)",
            &server(
                0,
                Body::Event(event(
                    59,
                    Event::Message(pb::Message {
                        conversation_id: 12,
                        seq: 204,
                        sender_id: ALICE,
                        sender_username: "alice".into(),
                        sent_at_ms: T0 + 204_000,
                        client_msg_id: String::new(),
                        content: Some(Content::Membership(pb::MembershipChange {
                            action: pb::MembershipAction::Added.into(),
                            users: vec![user(1004, "dave")],
                            title: String::new(),
                            role: 0,
                        })),
                    }),
                )),
            ),
        ),
        Valid::of(
            "event_read",
            "Live InboxEvent: the user's read marker moved on another device",
            &server(0, Body::Event(event(60, Event::Read(read_state())))),
        ),
        Valid::of(
            "event_joined",
            "Live InboxEvent: the user joined a direct conversation",
            &server(0, Body::Event(event(61, Event::Joined(direct())))),
        ),
        Valid::of(
            "event_left",
            "Live InboxEvent: the user left group 12 at seq 205",
            &server(0, Body::Event(event(62, Event::Left(pb::ConversationLeft { conversation_id: 12, seq: 205 })))),
        ),
        Valid::of(
            "presence",
            "Presence event: bob went away",
            &server(0, Body::Presence(presence(BOB, "bob", pb::PresenceState::Away, 0))),
        ),
        Valid::of(
            "typing",
            "TypingEvent: bob is typing in group 12",
            &server(
                0,
                Body::Typing(pb::TypingEvent {
                    conversation_id: 12,
                    user_id: BOB,
                    username: "bob".into(),
                    expires_in_ms: 5000,
                }),
            ),
        ),
        Valid::of(
            "read_receipt",
            "Live ReadReceipt in a direct conversation",
            &server(0, Body::ReadReceipt(receipt(BOB, "bob", 17))),
        ),
        Valid::of(
            "go_away",
            "GoAway SHUTTING_DOWN (502): reconnect after 5 s",
            &server(
                0,
                Body::GoAway(pb::GoAway {
                    code: ErrorCode::SHUTTING_DOWN.0,
                    message: "restarting".into(),
                    reconnect_after_ms: 5000,
                }),
            ),
        ),
        unknown_field(),
    ]
}

fn member(user_id: u64, username: &str, role: pb::MemberRole) -> pb::Member {
    pb::Member { user_id, username: username.into(), role: role.into(), joined_at_ms: T0 }
}

fn receipt(user_id: u64, username: &str, read_seq: u64) -> pb::ReadReceipt {
    pb::ReadReceipt { conversation_id: 12, user_id, username: username.into(), read_seq }
}

fn presence(user_id: u64, username: &str, state: pb::PresenceState, last_seen_ms: i64) -> pb::Presence {
    pb::Presence { user_id, username: username.into(), state: state.into(), last_seen_ms }
}

/// A Pong followed by field 100 (fixed32), as a newer server might send.
fn unknown_field() -> Valid {
    let mut payload = server(28, Body::Pong(pb::Pong { nonce: 3, server_time_ms: T0 })).encode_to_vec();
    prost::encoding::fixed32::encode(100, &0xdead_beef, &mut payload);
    Valid {
        name: "server_unknown_field",
        description: "A Pong carrying an unknown field 100 (fixed32) in ServerFrame: it must be skipped",
        payload,
        reencode: false,
    }
}
