//! Checks every golden vector in `spec/vectors/` against the crate.
//!
//! Valid vectors are checked in both directions and by two independent
//! implementations: prost (the crate's types) and prost-reflect (reading the
//! schema's descriptor set, with its own encoder and canonical JSON mapping).
//! Invalid vectors are run through the stage they name, with the real API,
//! and then through a real `ServerSession`, which must answer with exactly
//! the `Error` the vector states. See `spec/vectors/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use bytes::BytesMut;
use confab_protocol::{
    ErrorCode, FrameDecoder, Limits,
    framing::{decode_client_frame, decode_server_frame, frame_bytes},
    pb::{self, client_frame::Body, server_frame::Body as Reply},
    session::{Now, Phase, ServerConfig, ServerEvent, ServerSession},
    validate,
};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage as _, Value as Field};
use serde_json::Value;

/// Fewer vectors than this means files went missing.
const MIN_VECTORS: usize = 40;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap()
}

/// Every `.json` file under `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

struct Vector {
    path: PathBuf,
    /// `client`, `server` or `invalid`: the folder it sits in.
    kind: String,
    doc: Value,
}

impl Vector {
    fn str(&self, key: &str) -> &str {
        self.doc[key].as_str().unwrap_or_else(|| panic!("{}: {key} is not a string", self.path.display()))
    }

    fn hex(&self, key: &str) -> Vec<u8> {
        hex::decode(self.str(key)).unwrap_or_else(|e| panic!("{}: {key}: {e}", self.path.display()))
    }
}

fn load(kind: &str) -> Vec<Vector> {
    all().into_iter().filter(|v| v.kind == kind).collect()
}

fn all() -> Vec<Vector> {
    let root = vectors_dir();
    json_files(&root)
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&root).unwrap();
            let kind = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let doc: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert_eq!(doc["name"].as_str(), Some(stem.as_str()), "{}: name must match the file name", path.display());
            Vector { path, kind, doc }
        })
        .collect()
}

#[test]
fn the_vector_set_is_complete_and_tidy() {
    let vectors = all();
    assert!(vectors.len() >= MIN_VECTORS, "only {} vectors found under {}", vectors.len(), vectors_dir().display());
    for kind in ["client", "server", "invalid"] {
        assert!(vectors.iter().filter(|v| v.kind == kind).count() >= 10, "too few {kind} vectors");
    }
    for v in &vectors {
        assert!(
            ["client", "server", "invalid", "websocket"].contains(&v.kind.as_str()),
            "{}: unknown folder",
            v.path.display()
        );
        assert!(
            v.str("description").len() >= 10,
            "{}: every vector needs a description that says what it shows",
            v.path.display()
        );
    }
    // Nothing but the README and the four folders of vectors.
    for entry in fs::read_dir(vectors_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ["README.md", "client", "server", "invalid", "websocket"].contains(&name.as_str()),
            "stray entry {name}"
        );
    }
    // The WebSocket vectors (replayed live by confab-conformance): each
    // names a message, what the server needs first, and its answer.
    let ws: Vec<_> = vectors.iter().filter(|v| v.kind == "websocket").collect();
    assert!(ws.len() >= 2, "too few websocket vectors");
    for v in ws {
        let name = v.path.display();
        assert!(["text", "binary"].contains(&v.doc["message"]["type"].as_str().unwrap_or("")), "{name}: message.type");
        assert!(
            ["fresh-session", "handshake", "authenticated"].contains(&v.doc["needs"].as_str().unwrap_or("")),
            "{name}: needs"
        );
        let code = u32::try_from(v.doc["expect"]["code"].as_u64().unwrap()).unwrap();
        assert_eq!(ErrorCode(code).name(), v.doc["expect"]["name"].as_str(), "{name}: code and name agree");
        assert!(v.doc["expect"]["close_status"].as_u64().is_some(), "{name}: close_status");
    }
}

// ----- valid vectors ---------------------------------------------------------

/// Splits the length prefix off, with the crate's decoder: the whole hex
/// must be exactly one frame.
fn split_frame(v: &Vector, wire: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::from(wire);
    let payload = FrameDecoder::new(Limits::default().max_frame_bytes)
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", v.path.display()))
        .unwrap_or_else(|| panic!("{}: hex is not a complete frame", v.path.display()));
    assert!(buf.is_empty(), "{}: {} bytes after the frame", v.path.display(), buf.len());
    payload.to_vec()
}

/// The checks that do not depend on the prost type: prost-reflect decodes
/// the payload to the vector's JSON, and encodes the JSON back.
fn check_reflect(v: &Vector, desc: &MessageDescriptor, payload: &[u8], prost_reencoded: &[u8]) {
    let name = v.path.display();
    assert_eq!(v.str("message"), desc.full_name(), "{name}: message type");
    let reencode = v.doc["reencode"].as_bool().unwrap_or_else(|| panic!("{name}: reencode must be a bool"));

    // (a) bytes → JSON, without prost's types.
    let dynamic = DynamicMessage::decode(desc.clone(), payload).unwrap();
    assert_eq!(serde_json::to_value(&dynamic).unwrap(), v.doc["json"], "{name}: payload → JSON");

    // (b) JSON → bytes, without prost's types.
    let from_json = DynamicMessage::deserialize(desc.clone(), v.doc["json"].clone())
        .unwrap_or_else(|e| panic!("{name}: JSON does not deserialize: {e}"));
    let bytes = from_json.encode_to_vec();
    if reencode {
        assert_eq!(hex::encode(&bytes), hex::encode(payload), "{name}: JSON → bytes");
    } else {
        // Unknown fields have no JSON form: the JSON encodes to what
        // decoding and re-encoding gives, and that differs from the hex.
        assert_eq!(hex::encode(&bytes), hex::encode(prost_reencoded), "{name}: JSON → bytes");
        assert_ne!(bytes, payload, "{name}: reencode is false but re-encoding gives the same bytes");
    }
}

fn check_prost_reencode(v: &Vector, wire: &[u8], reencoded_wire: &[u8]) {
    if v.doc["reencode"] == Value::Bool(true) {
        assert_eq!(hex::encode(reencoded_wire), hex::encode(wire), "{}: decode → encode", v.path.display());
    }
}

#[test]
fn client_vectors_decode_encode_and_map_to_json() {
    let desc = pool().get_message_by_name("confab.v1.ClientFrame").unwrap();
    let vectors = load("client");
    assert!(!vectors.is_empty());
    for v in &vectors {
        let wire = v.hex("hex");
        let payload = split_frame(v, &wire);
        let frame = decode_client_frame(&payload).unwrap_or_else(|e| panic!("{}: {e}", v.path.display()));
        assert!(frame.body.is_some(), "{}: a valid client vector has a body", v.path.display());
        check_prost_reencode(v, &wire, &frame_bytes(&frame));
        check_reflect(v, &desc, &payload, &frame.encode_to_vec());
    }
}

#[test]
fn server_vectors_decode_encode_and_map_to_json() {
    let desc = pool().get_message_by_name("confab.v1.ServerFrame").unwrap();
    let vectors = load("server");
    assert!(!vectors.is_empty());
    for v in &vectors {
        let wire = v.hex("hex");
        let payload = split_frame(v, &wire);
        let frame = decode_server_frame(&payload).unwrap_or_else(|e| panic!("{}: {e}", v.path.display()));
        assert!(frame.body.is_some(), "{}: a valid server vector has a body", v.path.display());
        check_prost_reencode(v, &wire, &frame_bytes(&frame));
        check_reflect(v, &desc, &payload, &frame.encode_to_vec());
    }
}

/// Records `Message.field` for every field set in `m`, recursively.
fn fields_set(m: &DynamicMessage, out: &mut BTreeSet<String>) {
    for (field, value) in m.fields() {
        out.insert(format!("{}.{}", m.descriptor().full_name(), field.name()));
        match value {
            Field::Message(inner) => fields_set(inner, out),
            Field::List(items) => {
                for item in items {
                    if let Field::Message(inner) = item {
                        fields_set(inner, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every field of every message in the schema, every oneof variant
/// included, is set in at least one valid vector. A field added to
/// confab.proto fails this test until a vector shows it.
#[test]
fn every_field_and_oneof_variant_appears_in_a_vector() {
    let pool = pool();
    let mut seen = BTreeSet::new();
    for (kind, name) in [("client", "confab.v1.ClientFrame"), ("server", "confab.v1.ServerFrame")] {
        let desc = pool.get_message_by_name(name).unwrap();
        for v in load(kind) {
            let payload = split_frame(&v, &v.hex("hex"));
            fields_set(&DynamicMessage::decode(desc.clone(), &payload[..]).unwrap(), &mut seen);
        }
    }
    let missing: Vec<String> = pool
        .all_messages()
        .filter(|m| m.package_name() == "confab.v1")
        .flat_map(|m| m.fields().map(|f| format!("{}.{}", m.full_name(), f.name())).collect::<Vec<_>>())
        .filter(|f| !seen.contains(f))
        .collect();
    assert!(missing.is_empty(), "fields no vector sets: {missing:#?}");
}

/// The frames of PROTOCOL.md §14, transcribed from the document by hand.
#[test]
fn worked_example_matches_protocol_md() {
    let msg_id = hex::encode("7b6f0c1e-2a44-4c1a-9a0e-0d5d3f6c9b21");
    let s5_event = format!(
        "4e c2 02 4b 08 07 52 47 08 09 10 01 18 11 22 05 61 6c 69 63 65 28 f2 f0 ea b6 b7 33 32 24 {msg_id}
         52 0b 68 69 20 62 6f 62 20 f0 9f 91 8b"
    );
    let expected = [
        ("client/example_c1_hello", "13 08 01 52 0f 0a 01 01 1a 0a 63 6f 6e 66 61 62 2f 30 2e 31"),
        (
            "server/example_s1_welcome",
            "43 08 01 52 3f 08 01 1a 23 08 80 80 20 10 a0 8d 06 18 64 20 64 28 80 01 30 32 38 64 40 c8 01 48 90 03
             50 e8 07 58 64 60 64 68 e8 07 20 a0 9c 01 28 80 d0 ea b6 b7 33 32 0b 63 6f 6e 66 61 62 64 2f 30 2e 31",
        ),
        (
            "client/example_c2_login",
            "31 08 02 62 2d 0a 05 61 6c 69 63 65 12 1c 63 6f 72 72 65 63 74 20 68 6f 72 73 65 20 62 61
             74 74 65 72 79 20 73 74 61 70 6c 65 1a 06 6c 61 70 74 6f 70",
        ),
        ("client/example_c3_sync", "07 08 04 fa 01 02 08 05"),
        ("server/example_s3_sync_page", "07 08 04 9a 01 02 10 05"),
        (
            "client/example_c5_send",
            "3a 08 06 f2 01 35 08 09 12 24 37 62 36 66 30 63 31 65 2d 32 61 34 34 2d 34 63 31 61
             2d 39 61 30 65 2d 30 64 35 64 33 66 36 63 39 62 32 31 1a 0b 68 69 20 62 6f 62 20 f0 9f 91 8b",
        ),
        ("server/example_s5_event_message", &s5_event),
        ("client/example_c6_ack_cursor", "07 08 07 82 02 02 08 07"),
        ("server/example_s6_done", "04 08 07 62 00"),
        ("client/example_c7_ping", "07 08 08 e2 03 02 08 01"),
        ("server/example_s7_pong", "0e 08 08 ca 01 09 08 01 10 a8 96 eb b6 b7 33"),
    ];
    for (file, spec_hex) in expected {
        let path = vectors_dir().join(format!("{file}.json"));
        let doc: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let spec_hex: String = spec_hex.split_whitespace().collect();
        assert_eq!(doc["hex"].as_str().unwrap(), spec_hex, "{file} differs from PROTOCOL.md §14");
    }
}

// ----- invalid vectors -------------------------------------------------------

struct Expect {
    stage: String,
    code: ErrorCode,
    request_id: u64,
    fatal: bool,
}

fn expect(v: &Vector) -> Expect {
    let e = &v.doc["expect"];
    let name = v.path.display();
    let code = ErrorCode(u32::try_from(e["code"].as_u64().unwrap()).unwrap());
    assert_eq!(code.name(), e["name"].as_str(), "{name}: code and name disagree with errors.md");
    let request_id = e["request_id"].as_str().map_or(0, |s| s.parse().unwrap());
    Expect { stage: e["stage"].as_str().unwrap().to_string(), code, request_id, fatal: e["fatal"].as_bool().unwrap() }
}

const T0_UNIX_MS: i64 = 1_700_000_000_000;

/// A server session with the vector's limit, fed `frames` one at a time;
/// returns it and everything it sent.
fn session_after(max_frame_bytes: u32, frames: &[Vec<u8>], t0: Instant) -> ServerSession {
    let limits = Limits { max_frame_bytes, ..Limits::default() };
    let mut s = ServerSession::new(Arc::new(ServerConfig { limits, ..ServerConfig::default() }), t0);
    let now = Now { instant: t0, unix_ms: T0_UNIX_MS };
    for frame in frames {
        s.handle_input(&mut BytesMut::from(&frame[..]), now);
        while let Some(event) = s.poll_event() {
            assert!(!matches!(event, ServerEvent::Closed { .. }), "closed by a preceding frame");
            // A login (the only preceding request) makes the session
            // authenticated, as the application would.
            if let ServerEvent::Request { request_id, body: Body::Login(_) } = event {
                s.respond(request_id, auth_ok());
            }
        }
        for out in outputs(&mut s) {
            assert!(!matches!(out.body, Some(Reply::Error(_))), "a preceding frame was refused: {out:?}");
        }
    }
    s
}

fn auth_ok() -> Reply {
    Reply::AuthOk(pb::AuthOk { user_id: 1001, username: "alice".into(), device_id: 7, ..Default::default() })
}

/// Every frame the session has queued, parsed.
fn outputs(s: &mut ServerSession) -> Vec<pb::ServerFrame> {
    let mut frames = Vec::new();
    while let Some(bytes) = s.poll_transmit() {
        let mut buf = BytesMut::from(&bytes[..]);
        let dec = FrameDecoder::new(u32::MAX);
        while let Some(f) = dec.next_frame(&mut buf).unwrap() {
            frames.push(decode_server_frame(&f).unwrap());
        }
        assert!(buf.is_empty());
    }
    frames
}

/// The stage the vector names, through the crate API that implements it.
fn check_stage(v: &Vector, e: &Expect, max_frame_bytes: u32, wire: &[u8]) {
    let name = v.path.display();
    let mut buf = BytesMut::from(wire);
    let framed = FrameDecoder::new(max_frame_bytes).next_frame(&mut buf);
    if e.stage == "framing" {
        let err = framed.expect_err(&format!("{name}: framing accepted it"));
        assert_eq!(err.code(), e.code, "{name}");
        return;
    }
    let payload = framed.unwrap().unwrap_or_else(|| panic!("{name}: not a complete frame"));
    assert!(buf.is_empty(), "{name}: bytes after the frame");
    let parsed = decode_client_frame(&payload);
    if e.stage == "parse" {
        let err = parsed.expect_err(&format!("{name}: it parses"));
        assert_eq!(err.code(), e.code, "{name}");
        assert_eq!(err.request_id.unwrap_or(0), e.request_id, "{name}: recovered request_id");
        return;
    }
    let frame = match parsed {
        Ok(frame) => frame,
        // Before the handshake the session checks come first (§4.3 rule 2).
        Err(err) if e.stage == "session" => {
            assert_eq!(err.request_id.unwrap_or(0), e.request_id, "{name}: recovered request_id");
            return;
        }
        Err(err) => panic!("{name}: {err}"),
    };
    assert_eq!(frame.request_id, e.request_id, "{name}: the Error answers the frame's request_id");
    if e.stage == "validate" {
        let body = frame.body.as_ref().unwrap_or_else(|| panic!("{name}: no body"));
        let err = validate::validate_request(body, &Limits { max_frame_bytes, ..Limits::default() })
            .expect_err(&format!("{name}: the body is valid"));
        assert_eq!(err.code(), e.code, "{name}");
        return;
    }
    assert_eq!(e.stage, "session", "{name}: unknown stage");
}

/// The frames that put a session where the vector's request is otherwise
/// admitted: its `after` list, or for a validate vector a Hello and, unless
/// the request is itself a signup/login/resume, a login.
fn preceding_frames(v: &Vector, e: &Expect, wire: &[u8]) -> Vec<Vec<u8>> {
    let mut after: Vec<Vec<u8>> = match v.doc["after"].as_array() {
        Some(list) => list.iter().map(|h| hex::decode(h.as_str().unwrap()).unwrap()).collect(),
        None => Vec::new(),
    };
    if e.stage == "validate" {
        assert!(after.is_empty(), "{}: validate vectors name no preceding frames", v.path.display());
        let hello = load("client").into_iter().find(|c| c.str("name") == "hello").unwrap().hex("hex");
        after.push(hello);
        let payload = split_frame(v, wire);
        let auth = matches!(
            decode_client_frame(&payload).unwrap().body,
            Some(Body::Signup(_) | Body::Login(_) | Body::Resume(_))
        );
        if !auth {
            let login = load("client").into_iter().find(|c| c.str("name") == "login").unwrap().hex("hex");
            after.push(login);
        }
    }
    after
}

#[test]
fn invalid_vectors_are_rejected_at_their_stage_with_their_code() {
    let vectors = load("invalid");
    assert!(vectors.len() >= 10);
    let mut stages = BTreeSet::new();
    for v in &vectors {
        let name = v.path.display();
        let e = expect(v);
        stages.insert(e.stage.clone());
        assert_eq!(v.str("direction"), "client", "{name}");
        let max = u32::try_from(v.doc["max_frame_bytes"].as_u64().unwrap()).unwrap();
        let wire = v.hex("hex");
        check_stage(v, &e, max, &wire);

        // The whole path: a real session answers with exactly this Error.
        let t0 = Instant::now();
        let mut s = session_after(max, &preceding_frames(v, &e, &wire), t0);
        let in_flight = s.in_flight();
        s.handle_input(&mut BytesMut::from(&wire[..]), Now { instant: t0, unix_ms: T0_UNIX_MS });
        let out = outputs(&mut s);
        assert_eq!(out.len(), 1, "{name}: expected one Error, got {out:?}");
        let Some(Reply::Error(err)) = &out[0].body else { panic!("{name}: expected an Error, got {:?}", out[0]) };
        assert_eq!(ErrorCode(err.code), e.code, "{name}: session answer");
        assert_eq!(out[0].request_id, e.request_id, "{name}: Error.request_id");
        assert_eq!(err.fatal, e.fatal, "{name}: Error.fatal");
        let events: Vec<ServerEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        if e.fatal {
            assert_eq!(events, vec![ServerEvent::Closed { code: e.code }], "{name}");
            assert_eq!(s.phase(), Phase::Closed, "{name}");
        } else {
            assert!(events.is_empty(), "{name}: a refused frame raised {events:?}");
            assert_ne!(s.phase(), Phase::Closed, "{name}");
            assert_eq!(s.in_flight(), in_flight, "{name}: a refused frame is not in flight");
        }
    }
    let all_stages: BTreeSet<String> = ["framing", "parse", "session", "validate"].map(String::from).into();
    assert_eq!(stages, all_stages, "every stage has vectors");
}
