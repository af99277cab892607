//! ClientFrame vectors: every `body` variant at least once, plus edge cases.

use confab_protocol::pb::{self, client_frame::Body, register_push_request::Target};
use prost::Message as _;

use super::{Valid, client};

/// A realistic resume token (43 characters of base64url, like the server's).
pub const TOKEN: &str = "q2Zp0xJ8cM1vKd7T3sWf9LbRhN4yUeA6oGiXtVzQkPw";
/// A realistic client_msg_id.
pub const MSG_ID: &str = "0f8c2a7e-4b1d-4c55-9a6e-2d1b5e6f7a80";

/// The Hello every session vector starts with.
pub fn hello() -> pb::ClientFrame {
    client(
        1,
        Body::Hello(pb::Hello {
            versions: vec![1],
            // Two v1 capabilities (§11) and one this version does not
            // define, which a server ignores.
            capabilities: vec!["request-streams".into(), "typing-datagram".into(), "x-example".into()],
            client_name: "confab-cli/0.1.0".into(),
        }),
    )
}

/// A valid login (the request that authenticates a session).
pub fn login(request_id: u64) -> pb::ClientFrame {
    client(
        request_id,
        Body::Login(pb::LoginRequest {
            username: "alice".into(),
            password: "correct horse battery staple".into(),
            device_name: "phone".into(),
        }),
    )
}

/// A SendRequest with the given text.
pub fn send(request_id: u64, text: String) -> pb::ClientFrame {
    client(request_id, Body::Send(pb::SendRequest { conversation_id: 12, client_msg_id: MSG_ID.into(), text }))
}

/// A web push key: an uncompressed P-256 point (0x04, then X and Y).
pub fn p256dh() -> Vec<u8> {
    let mut key = vec![0x04];
    key.extend((0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    key
}

pub fn vectors() -> Vec<Valid> {
    let mut v = vec![
        Valid::of(
            "hello",
            "Hello offering version 1 and three capabilities (two of §11 and one unknown, which servers ignore): the first frame of every session",
            &hello(),
        ),
        Valid::of(
            "signup",
            "SignupRequest creating account alice from a laptop",
            &client(
                2,
                Body::Signup(pb::SignupRequest {
                    username: "alice".into(),
                    password: "correct horse battery staple".into(),
                    device_name: "laptop".into(),
                }),
            ),
        ),
        Valid::of("login", "LoginRequest for alice from a new device", &login(2)),
        Valid::of(
            "resume",
            "ResumeRequest with a stored device token",
            &client(2, Body::Resume(pb::ResumeRequest { token: TOKEN.into() })),
        ),
        Valid::of(
            "logout",
            "LogoutRequest (an empty message body: only the oneof tag and a zero length)",
            &client(40, Body::Logout(pb::LogoutRequest {})),
        ),
        Valid::of(
            "list_devices",
            "ListDevicesRequest: the first page at the server's page size (both fields absent)",
            &client(5, Body::ListDevices(pb::ListDevicesRequest { after_device_id: 0, limit: 0 })),
        ),
        Valid::of(
            "list_devices_after",
            "ListDevicesRequest: one device after device 7",
            &client(6, Body::ListDevices(pb::ListDevicesRequest { after_device_id: 7, limit: 1 })),
        ),
        Valid::of(
            "revoke_other_devices",
            "RevokeOtherDevicesRequest: every device of the account but this one (no fields)",
            &client(7, Body::RevokeOtherDevices(pb::RevokeOtherDevicesRequest {})),
        ),
        Valid::of(
            "change_password",
            "ChangePasswordRequest: a new password, every other device signed out",
            &client(
                8,
                Body::ChangePassword(pb::ChangePasswordRequest {
                    current_password: "correct horse battery staple".into(),
                    new_password: "a whole new passphrase".into(),
                    revoke_other_devices: true,
                }),
            ),
        ),
        Valid::of(
            "set_blocked",
            "SetBlockedRequest: block mallory",
            &client(9, Body::SetBlocked(pb::SetBlockedRequest { username: "mallory".into(), blocked: true })),
        ),
        Valid::of(
            "list_blocked",
            "ListBlockedRequest: the page after mallory, at most 50",
            &client(10, Body::ListBlocked(pb::ListBlockedRequest { after_username: "mallory".into(), limit: 50 })),
        ),
        Valid::of(
            "get_privacy",
            "GetPrivacyRequest (no fields)",
            &client(11, Body::GetPrivacy(pb::GetPrivacyRequest {})),
        ),
        Valid::of(
            "set_privacy",
            "SetPrivacyRequest: no new direct conversations, groups from contacts only, out of prefix search",
            &client(
                12,
                Body::SetPrivacy(pb::SetPrivacyRequest {
                    direct_messages: pb::Audience::Nobody as i32,
                    group_invites: pb::Audience::Contacts as i32,
                    search: pb::Audience::Nobody as i32,
                }),
            ),
        ),
        Valid::of(
            "search_users",
            "SearchUsersRequest: usernames starting with \"al\", at most 20",
            &client(13, Body::SearchUsers(pb::SearchUsersRequest { prefix: "al".into(), limit: 20 })),
        ),
        Valid::of(
            "revoke_device",
            "RevokeDeviceRequest for device 7",
            &client(6, Body::RevokeDevice(pb::RevokeDeviceRequest { device_id: 7 })),
        ),
        Valid::of(
            "open_direct",
            "OpenDirectRequest with bob",
            &client(3, Body::OpenDirect(pb::OpenDirectRequest { username: "bob".into() })),
        ),
        Valid::of(
            "create_group",
            "CreateGroupRequest with a non-ASCII title and two initial members",
            &client(
                4,
                Body::CreateGroup(pb::CreateGroupRequest {
                    title: "Weekend hike 🥾".into(),
                    usernames: vec!["bob".into(), "carol".into()],
                }),
            ),
        ),
        Valid::of(
            "add_members",
            "AddMembersRequest adding dave to group 12",
            &client(7, Body::AddMembers(pb::AddMembersRequest { conversation_id: 12, usernames: vec!["dave".into()] })),
        ),
        Valid::of(
            "remove_member",
            "RemoveMemberRequest removing dave from group 12",
            &client(8, Body::RemoveMember(pb::RemoveMemberRequest { conversation_id: 12, username: "dave".into() })),
        ),
        Valid::of(
            "leave_group",
            "LeaveGroupRequest for group 12",
            &client(9, Body::LeaveGroup(pb::LeaveGroupRequest { conversation_id: 12 })),
        ),
        Valid::of(
            "rename_group",
            "RenameGroupRequest with a title containing an em dash",
            &client(
                10,
                Body::RenameGroup(pb::RenameGroupRequest { conversation_id: 12, title: "Hike — Saturday".into() }),
            ),
        ),
        Valid::of(
            "list_conversations",
            "ListConversationsRequest for a page of 50",
            &client(11, Body::ListConversations(pb::ListConversationsRequest { limit: 50, ..Default::default() })),
        ),
        Valid::of(
            "list_conversations_next_page",
            "ListConversationsRequest for the page after (activity_ms, conversation_id) = (1700000201000, 12): int64 is a string in JSON",
            &client(
                29,
                Body::ListConversations(pb::ListConversationsRequest {
                    limit: 50,
                    active_before_ms: 1_700_000_201_000,
                    before_conversation_id: 12,
                }),
            ),
        ),
        Valid::of(
            "set_role",
            "SetRoleRequest making bob an ADMIN of group 12",
            &client(
                30,
                Body::SetRole(pb::SetRoleRequest {
                    conversation_id: 12,
                    username: "bob".into(),
                    role: pb::MemberRole::Admin.into(),
                }),
            ),
        ),
        Valid::of(
            "get_conversation",
            "GetConversationRequest for group 12",
            &client(31, Body::GetConversation(pb::GetConversationRequest { conversation_id: 12 })),
        ),
        Valid::of(
            "list_members",
            "ListMembersRequest for group 12",
            &client(12, Body::ListMembers(pb::ListMembersRequest { conversation_id: 12 })),
        ),
        Valid::of(
            "send",
            "SendRequest with a short text containing an emoji (4-byte UTF-8)",
            &send(13, "Hello, world! 👋".into()),
        ),
        Valid::of(
            "send_max_length",
            "SendRequest whose text is exactly 100,000 ASCII characters: the longest valid message",
            &send(14, "a".repeat(100_000)),
        ),
        Valid::of(
            "sync",
            "SyncRequest for inbox events after 41, a page of 100",
            &client(15, Body::Sync(pb::SyncRequest { after: 41, limit: 100 })),
        ),
        Valid::of(
            "ack_cursor",
            "AckCursorRequest up to inbox_seq 57",
            &client(16, Body::AckCursor(pb::AckCursorRequest { inbox_seq: 57 })),
        ),
        Valid::of(
            "history_before",
            "HistoryRequest for 50 messages before seq 200",
            &client(
                17,
                Body::History(pb::HistoryRequest {
                    conversation_id: 12,
                    before_seq: 200,
                    limit: 50,
                    ..Default::default()
                }),
            ),
        ),
        Valid::of(
            "history_newest",
            "HistoryRequest for the newest messages (no bounds, server page size)",
            &client(18, Body::History(pb::HistoryRequest { conversation_id: 12, ..Default::default() })),
        ),
        Valid::of(
            "history_after",
            "HistoryRequest for the 20 oldest messages after seq 150",
            &client(
                32,
                Body::History(pb::HistoryRequest {
                    conversation_id: 12,
                    after_seq: 150,
                    limit: 20,
                    ..Default::default()
                }),
            ),
        ),
        Valid::of(
            "history_oldest_first",
            "HistoryRequest reading a conversation forward from seq 1 (oldest_first, no bounds)",
            &client(
                33,
                Body::History(pb::HistoryRequest {
                    conversation_id: 12,
                    limit: 100,
                    oldest_first: true,
                    ..Default::default()
                }),
            ),
        ),
        Valid::of(
            "mark_read",
            "MarkReadRequest up to seq 199 in conversation 12",
            &client(19, Body::MarkRead(pb::MarkReadRequest { conversation_id: 12, seq: 199 })),
        ),
        Valid::of(
            "read_receipts",
            "ReadReceiptsRequest for conversation 12",
            &client(20, Body::ReadReceipts(pb::ReadReceiptsRequest { conversation_id: 12 })),
        ),
        Valid::of(
            "subscribe_presence",
            "SubscribePresenceRequest for bob and carol",
            &client(
                21,
                Body::SubscribePresence(pb::SubscribePresenceRequest { usernames: vec!["bob".into(), "carol".into()] }),
            ),
        ),
        Valid::of(
            "unsubscribe_presence",
            "UnsubscribePresenceRequest for carol",
            &client(22, Body::UnsubscribePresence(pb::UnsubscribePresenceRequest { usernames: vec!["carol".into()] })),
        ),
        Valid::of(
            "set_status",
            "SetStatusRequest AWAY (an enum, by name in JSON)",
            &client(23, Body::SetStatus(pb::SetStatusRequest { status: pb::PresenceState::Away.into() })),
        ),
        Valid::of(
            "typing",
            "TypingNotice: a notification, so request_id is 0 (absent on the wire)",
            &client(0, Body::Typing(pb::TypingNotice { conversation_id: 12 })),
        ),
        Valid::of(
            "register_push_web_push",
            "RegisterPushRequest with a Web Push subscription (65-byte p256dh, 16-byte auth; bytes are base64 in JSON)",
            &client(
                24,
                Body::RegisterPush(pb::RegisterPushRequest {
                    target: Some(Target::WebPush(pb::WebPushTarget {
                        endpoint: "https://push.example.net/wpush/v2/gAAAAABk3x".into(),
                        p256dh: p256dh().into(),
                        auth: (0u8..16).map(|i| 0xa0 ^ i).collect::<Vec<_>>().into(),
                    })),
                }),
            ),
        ),
        Valid::of(
            "register_push_webhook",
            "RegisterPushRequest with a webhook URL",
            &client(
                25,
                Body::RegisterPush(pb::RegisterPushRequest {
                    target: Some(Target::Webhook(pb::WebhookTarget {
                        url: "https://hooks.example.org/confab/alice".into(),
                    })),
                }),
            ),
        ),
        Valid::of(
            "unregister_push",
            "UnregisterPushRequest",
            &client(26, Body::UnregisterPush(pb::UnregisterPushRequest {})),
        ),
        Valid::of(
            "ping",
            "PingRequest with a nonce above 2^53 (uint64 is a string in JSON)",
            &client(27, Body::Ping(pb::PingRequest { nonce: 0x1122_3344_5566_7788 })),
        ),
        Valid::of(
            "large_request_id",
            "A ping whose request_id is the largest uint64 (a 10-byte varint)",
            &client(u64::MAX, Body::Ping(pb::PingRequest { nonce: 1 })),
        ),
    ];
    v.push(unknown_top_level_field());
    v.push(unknown_field_in_hello());
    v
}

/// A ping followed by field 999 (varint): receivers skip it.
fn unknown_top_level_field() -> Valid {
    let mut payload = client(28, Body::Ping(pb::PingRequest { nonce: 5 })).encode_to_vec();
    prost::encoding::encode_key(999, prost::encoding::WireType::Varint, &mut payload);
    prost::encoding::encode_varint(1, &mut payload);
    Valid {
        name: "unknown_field_top_level",
        description: "A ping carrying an unknown field 999 (varint 1) in ClientFrame: it must be skipped, so re-encoding the decoded frame drops it",
        payload,
        reencode: false,
    }
}

/// A Hello whose body carries field 15 (a string), as a newer client might.
fn unknown_field_in_hello() -> Valid {
    let Some(Body::Hello(h)) = hello().body else { unreachable!("hello() builds a Hello") };
    let mut inner = h.encode_to_vec();
    prost::encoding::string::encode(15, &"future".to_string(), &mut inner);
    let mut payload = Vec::new();
    prost::encoding::uint64::encode(1, &1, &mut payload);
    prost::encoding::bytes::encode(10, &inner, &mut payload);
    Valid {
        name: "unknown_field_in_hello",
        description: "A Hello carrying an unknown field 15 (string \"future\") inside the Hello message: it must be skipped",
        payload,
        reencode: false,
    }
}
