//! The frames of spec/PROTOCOL.md §14 ("Worked example"), named
//! `example_<step>_<body>`. `protocol/tests/vectors.rs` checks that their hex
//! equals the hex printed in PROTOCOL.md, so the document, the generator and
//! the crate cannot drift apart.

use confab_protocol::{
    Limits,
    pb::{self, client_frame::Body as C, inbox_event::Event, server_frame::Body as S},
};

use super::{Valid, client, server};

const MSG_ID: &str = "7b6f0c1e-2a44-4c1a-9a0e-0d5d3f6c9b21";
/// 2026-01-01T00:00:00Z.
const T: i64 = 1_767_225_600_000;

fn message() -> pb::Message {
    pb::Message {
        conversation_id: 9,
        seq: 1,
        sender_id: 17,
        sender_username: "alice".into(),
        sent_at_ms: T + 4210,
        client_msg_id: MSG_ID.into(),
        content: Some(pb::message::Content::Text("hi bob 👋".into())),
    }
}

fn direct() -> pb::Conversation {
    pb::Conversation {
        conversation_id: 9,
        kind: pb::ConversationKind::Direct.into(),
        peer_user_id: 18,
        peer_username: "bob".into(),
        created_at_ms: T + 2000,
        member_count: 2,
        ..Default::default()
    }
}

pub fn client_vectors() -> Vec<Valid> {
    vec![
        Valid::of(
            "example_c1_hello",
            "PROTOCOL.md §14 C1: Hello",
            &client(
                1,
                C::Hello(pb::Hello { versions: vec![1], capabilities: vec![], client_name: "confab/0.1".into() }),
            ),
        ),
        Valid::of(
            "example_c2_login",
            "PROTOCOL.md §14 C2: Login",
            &client(
                2,
                C::Login(pb::LoginRequest {
                    username: "alice".into(),
                    password: "correct horse battery staple".into(),
                    device_name: "laptop".into(),
                }),
            ),
        ),
        Valid::of(
            "example_c3_sync",
            "PROTOCOL.md §14 C3: Sync from the cursor (a two-byte tag)",
            &client(4, C::Sync(pb::SyncRequest { after: 5, limit: 0 })),
        ),
        Valid::of(
            "example_c4_open_direct",
            "PROTOCOL.md §14 C4: OpenDirect",
            &client(5, C::OpenDirect(pb::OpenDirectRequest { username: "bob".into() })),
        ),
        Valid::of(
            "example_c5_send",
            "PROTOCOL.md §14 C5: Send (8 characters, 11 bytes)",
            &client(
                6,
                C::Send(pb::SendRequest {
                    conversation_id: 9, client_msg_id: MSG_ID.into(), text: "hi bob 👋".into()
                }),
            ),
        ),
        Valid::of(
            "example_c6_ack_cursor",
            "PROTOCOL.md §14 C6: AckCursor",
            &client(7, C::AckCursor(pb::AckCursorRequest { inbox_seq: 7 })),
        ),
        Valid::of("example_c7_ping", "PROTOCOL.md §14 C7: Ping", &client(8, C::Ping(pb::PingRequest { nonce: 1 }))),
    ]
}

pub fn server_vectors() -> Vec<Valid> {
    vec![
        Valid::of(
            "example_s1_welcome",
            "PROTOCOL.md §14 S1: Welcome with every limit at its default",
            &server(
                1,
                S::Welcome(pb::Welcome {
                    version: 1,
                    capabilities: vec![],
                    limits: Some((&Limits::default()).into()),
                    heartbeat_interval_ms: 20_000,
                    server_time_ms: T,
                    server_name: "confabd/0.1".into(),
                    vapid_public_key: String::new(),
                }),
            ),
        ),
        Valid::of(
            "example_s2_auth_ok",
            "PROTOCOL.md §14 S2: AuthOk for a new device (cursor = inbox_head)",
            &server(
                2,
                S::AuthOk(pb::AuthOk {
                    user_id: 17,
                    username: "alice".into(),
                    device_id: 42,
                    token: "q3Jd0fX8v1kz9B2mYwQeR7tLsPn4HcUaGxVo5iKjE6c".into(),
                    cursor: 5,
                    inbox_head: 5,
                    push_dropped: None,
                }),
            ),
        ),
        Valid::of(
            "example_s3_sync_page",
            "PROTOCOL.md §14 S3: an empty SyncPage",
            &server(4, S::SyncPage(pb::SyncPage { events: vec![], inbox_head: 5, has_more: false })),
        ),
        Valid::of(
            "example_s4_conversation",
            "PROTOCOL.md §14 S4: the new direct conversation",
            &server(5, S::Conversation(direct())),
        ),
        Valid::of(
            "example_s4_event_joined",
            "PROTOCOL.md §14 S4: the joined event for it",
            &server(0, S::Event(pb::InboxEvent { inbox_seq: 6, event: Some(Event::Joined(direct())) })),
        ),
        Valid::of(
            "example_s5_sent",
            "PROTOCOL.md §14 S5: Sent",
            &server(6, S::Sent(pb::Sent { message: Some(message()), duplicate: false })),
        ),
        Valid::of(
            "example_s5_event_message",
            "PROTOCOL.md §14 S5': the live inbox event for the same message",
            &server(0, S::Event(pb::InboxEvent { inbox_seq: 7, event: Some(Event::Message(message())) })),
        ),
        Valid::of("example_s6_done", "PROTOCOL.md §14 S6: Done", &server(7, S::Done(pb::Done {}))),
        Valid::of(
            "example_s7_pong",
            "PROTOCOL.md §14 S7: Pong",
            &server(8, S::Pong(pb::Pong { nonce: 1, server_time_ms: T + 9000 })),
        ),
        Valid::of(
            "example_read_receipt",
            "PROTOCOL.md §14: Bob's read receipt, delivered live to Alice",
            &server(
                0,
                S::ReadReceipt(pb::ReadReceipt {
                    conversation_id: 9,
                    user_id: 18,
                    username: "bob".into(),
                    read_seq: 1,
                }),
            ),
        ),
    ]
}
