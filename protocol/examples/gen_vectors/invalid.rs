//! Client → server bytes a server must reject, with the stage that rejects
//! them and the exact `Error` it answers with. The expectations are written
//! out by hand here; `protocol/tests/vectors.rs` checks them against the
//! crate, so a disagreement fails a test instead of being baked into a file.

use confab_protocol::{
    ErrorCode,
    pb::{self, client_frame::Body},
};
use prost::Message as _;

use super::{Invalid, Stage, client, client::hello, client::send, wire, wire_of};

fn framing(name: &'static str, description: &'static str, wire: Vec<u8>) -> Invalid {
    Invalid {
        name,
        description,
        wire,
        after: vec![wire_of(&hello())],
        stage: Stage::Framing,
        code: ErrorCode::FRAME_TOO_LARGE,
        request_id: 0,
        fatal: true,
    }
}

fn parse(name: &'static str, description: &'static str, payload: &[u8], request_id: u64) -> Invalid {
    Invalid {
        name,
        description,
        wire: wire(payload),
        after: vec![wire_of(&hello())],
        stage: Stage::Parse,
        code: ErrorCode::MALFORMED_FRAME,
        request_id,
        fatal: false,
    }
}

fn validate(name: &'static str, description: &'static str, frame: &pb::ClientFrame, code: ErrorCode) -> Invalid {
    Invalid {
        name,
        description,
        wire: wire_of(frame),
        after: Vec::new(),
        stage: Stage::Validate,
        code,
        request_id: frame.request_id,
        fatal: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn session(
    name: &'static str,
    description: &'static str,
    after: Vec<Vec<u8>>,
    payload: Vec<u8>,
    code: ErrorCode,
    request_id: u64,
    fatal: bool,
) -> Invalid {
    Invalid { name, description, wire: wire(&payload), after, stage: Stage::Session, code, request_id, fatal }
}

pub fn vectors() -> Vec<Invalid> {
    let hello_wire = wire_of(&hello());
    let ping = |id| client(id, Body::Ping(pb::PingRequest { nonce: 1 }));
    vec![
        // ----- framing -----------------------------------------------------
        framing(
            "frame_one_byte_over_limit",
            "Length prefix 524289 (one byte over max_frame_bytes 524288) followed by the first bytes of the body: rejected from the prefix alone",
            {
                let mut w = Vec::new();
                prost::encoding::encode_varint(524_289, &mut w);
                w.extend_from_slice(&[0x08, 0x01, 0x52, 0x00]);
                w
            },
        ),
        framing(
            "frame_length_2_pow_63",
            "Length prefix 2^63 as a 10-byte varint",
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ),
        framing(
            "frame_length_varint_11_bytes",
            "A length prefix of 11 bytes (ten continuation bytes): not a valid varint at all",
            [vec![0x80; 10], vec![0x01]].concat(),
        ),
        framing(
            "frame_length_partial_over_limit",
            "An incomplete prefix (ff ff ff) whose value so far already exceeds the limit: rejected without waiting for more bytes",
            vec![0xff, 0xff, 0xff],
        ),
        // ----- parse ---------------------------------------------------------
        parse(
            "truncated_nested_field",
            "request_id 42, then field 10 (hello, LEN) announcing 5 bytes but holding 1: the frame's own length is consistent, its contents are not; request_id is recovered",
            &[0x08, 0x2a, 0x52, 0x05, 0x00],
            42,
        ),
        parse(
            "invalid_utf8_string",
            "request_id 7, open_direct whose username is the byte 0xff (not UTF-8)",
            &[0x08, 0x07, 0xa2, 0x01, 0x03, 0x0a, 0x01, 0xff],
            7,
        ),
        parse(
            "wrong_wire_type",
            "request_id 9, then field 10 (hello, a message) sent with the varint wire type",
            &[0x08, 0x09, 0x50, 0x01],
            9,
        ),
        parse(
            "request_id_repeated",
            "request_id 1, request_id 2 (a field may repeat: the last wins), then a truncated hello field: the Error carries 2",
            &[0x08, 0x01, 0x08, 0x02, 0x52, 0x05, 0x00],
            2,
        ),
        parse(
            "truncated_request_id",
            "A frame holding only the tag of request_id and one continuation byte: the id cannot be recovered, so the Error carries request_id 0",
            &[0x08, 0xff],
            0,
        ),
        // ----- validate ------------------------------------------------------
        validate(
            "signup_username_uppercase",
            "SignupRequest with username \"Bob\" (usernames are lowercase)",
            &client(
                2,
                Body::Signup(pb::SignupRequest {
                    username: "Bob".into(),
                    password: "correct horse battery staple".into(),
                    device_name: "laptop".into(),
                }),
            ),
            ErrorCode::INVALID_ARGUMENT,
        ),
        validate(
            "send_too_long",
            "SendRequest whose text is 100,001 ASCII characters: one over max_message_chars",
            &send(14, "a".repeat(100_001)),
            ErrorCode::MESSAGE_TOO_LONG,
        ),
        validate("send_empty_text", "SendRequest with empty text", &send(13, String::new()), ErrorCode::EMPTY_MESSAGE),
        validate(
            "history_both_bounds",
            "HistoryRequest with both before_seq and after_seq set",
            &client(
                17,
                Body::History(pb::HistoryRequest {
                    conversation_id: 12,
                    before_seq: 200,
                    after_seq: 100,
                    limit: 50,
                    ..Default::default()
                }),
            ),
            ErrorCode::INVALID_ARGUMENT,
        ),
        validate(
            "create_group_too_many_members",
            "CreateGroupRequest listing 101 usernames (max_list_items is 100)",
            &client(
                4,
                Body::CreateGroup(pb::CreateGroupRequest {
                    title: "Crowd".into(),
                    usernames: (0..101).map(|i| format!("user{i:03}")).collect(),
                }),
            ),
            ErrorCode::TOO_MANY_ITEMS,
        ),
        validate(
            "register_push_short_key",
            "RegisterPushRequest whose p256dh is a 33-byte compressed point instead of 65 bytes",
            &client(
                24,
                Body::RegisterPush(pb::RegisterPushRequest {
                    target: Some(pb::register_push_request::Target::WebPush(pb::WebPushTarget {
                        endpoint: "https://push.example.net/wpush/v2/gAAAAABk3x".into(),
                        p256dh: super::client::p256dh()[..33].to_vec().into(),
                        auth: vec![7u8; 16].into(),
                    })),
                }),
            ),
            ErrorCode::INVALID_ARGUMENT,
        ),
        validate(
            "set_status_offline",
            "SetStatusRequest OFFLINE (only ONLINE and AWAY may be set)",
            &client(23, Body::SetStatus(pb::SetStatusRequest { status: pb::PresenceState::Offline.into() })),
            ErrorCode::INVALID_ARGUMENT,
        ),
        // ----- session -------------------------------------------------------
        session(
            "empty_body",
            "A ClientFrame with request_id 3 and no body (valid protobuf) after the handshake",
            vec![hello_wire.clone()],
            pb::ClientFrame { request_id: 3, body: None }.encode_to_vec(),
            ErrorCode::UNKNOWN_REQUEST,
            3,
            false,
        ),
        session(
            "unknown_body_variant",
            "request_id 4 and field 99 (LEN, 2 bytes): a body variant this version does not know, so the body parses as absent",
            vec![hello_wire.clone()],
            vec![0x08, 0x04, 0x9a, 0x06, 0x02, 0x08, 0x01],
            ErrorCode::UNKNOWN_REQUEST,
            4,
            false,
        ),
        session(
            "first_frame_not_hello",
            "A ping as the first frame of a session: fatal, carrying the ping's request_id",
            Vec::new(),
            ping(1).encode_to_vec(),
            ErrorCode::HANDSHAKE_REQUIRED,
            1,
            true,
        ),
        session(
            "hello_unsupported_versions",
            "A Hello offering only versions 2 and 3: fatal, carrying the Hello's request_id",
            Vec::new(),
            client(
                1,
                Body::Hello(pb::Hello {
                    versions: vec![2, 3],
                    capabilities: Vec::new(),
                    client_name: "confab-cli/9.0.0".into(),
                }),
            )
            .encode_to_vec(),
            ErrorCode::UNSUPPORTED_VERSION,
            1,
            true,
        ),
        session(
            "malformed_first_frame",
            "A malformed first frame (request_id 5, then a truncated hello field): before the handshake every bad frame is fatal, and the readable request_id is carried",
            Vec::new(),
            vec![0x08, 0x05, 0x52, 0x05, 0x00],
            ErrorCode::HANDSHAKE_REQUIRED,
            5,
            true,
        ),
        session(
            "hello_request_id_zero",
            "A Hello with request_id 0: not fatal, the session still awaits a Hello",
            Vec::new(),
            pb::ClientFrame { request_id: 0, ..hello() }.encode_to_vec(),
            ErrorCode::INVALID_REQUEST_ID,
            0,
            false,
        ),
        session(
            "zero_length_frame",
            "A zero-length frame (the empty ClientFrame: request_id 0, no body) after the handshake: the body check comes before the request_id check",
            vec![hello_wire.clone()],
            Vec::new(),
            ErrorCode::UNKNOWN_REQUEST,
            0,
            false,
        ),
        session(
            "second_hello",
            "A second Hello after the handshake",
            vec![hello_wire.clone()],
            pb::ClientFrame { request_id: 2, ..hello() }.encode_to_vec(),
            ErrorCode::INVALID_STATE,
            2,
            false,
        ),
        session(
            "ping_request_id_zero",
            "A ping with request_id 0 after the handshake",
            vec![hello_wire.clone()],
            ping(0).encode_to_vec(),
            ErrorCode::INVALID_REQUEST_ID,
            0,
            false,
        ),
        session(
            "request_before_auth",
            "A ListConversationsRequest after the handshake but before login",
            vec![hello_wire.clone()],
            client(6, Body::ListConversations(pb::ListConversationsRequest::default())).encode_to_vec(),
            ErrorCode::UNAUTHENTICATED,
            6,
            false,
        ),
    ]
}
