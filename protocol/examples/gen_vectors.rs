//! Writes the golden test vectors in `spec/vectors/` and the fuzz seed
//! corpus in `fuzz/corpus/`.
//!
//! ```text
//! cargo run -p confab-protocol --example gen_vectors
//! ```
//!
//! The frames are built with the prost types (`client.rs`, `server.rs`) or by
//! hand where the point is bytes prost would never produce (`invalid.rs`,
//! unknown fields). The JSON form of each valid vector is produced
//! independently of prost, by `prost-reflect` reading the schema's
//! descriptor set, so the vectors cross-check the two implementations.
//!
//! Output is deterministic: running the generator twice gives the same
//! files, and a run first removes the files an earlier run wrote, so a
//! renamed vector leaves nothing stale behind. `protocol/tests/vectors.rs`
//! checks every file against the crate; see `spec/vectors/README.md`.
//!
//! Layout: `gen_vectors/client.rs` (ClientFrame vectors),
//! `gen_vectors/server.rs` (ServerFrame vectors), `gen_vectors/invalid.rs`
//! (frames a receiver must reject), `gen_vectors/example.rs` (the worked
//! example of PROTOCOL.md §14), `gen_vectors/corpus.rs` (fuzz seeds).

// A crate root looks for modules beside itself; these live in a folder of
// their own so `examples/` holds one example per name.
#[path = "gen_vectors/client.rs"]
mod client;
#[path = "gen_vectors/corpus.rs"]
mod corpus;
#[path = "gen_vectors/example.rs"]
mod example;
#[path = "gen_vectors/invalid.rs"]
mod invalid;
#[path = "gen_vectors/server.rs"]
mod server;

use std::{
    error::Error,
    fs,
    path::{Path, PathBuf},
};

use confab_protocol::{ErrorCode, limits::DEFAULT_MAX_FRAME_BYTES, pb};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde::Serialize;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// A frame that decodes: its payload (without the length prefix).
pub struct Valid {
    /// File and vector name (`[a-z0-9_]+`).
    pub name: &'static str,
    /// What the vector shows, for the README reader.
    pub description: &'static str,
    /// The frame's encoded bytes, length prefix excluded.
    pub payload: Vec<u8>,
    /// False when the payload carries unknown fields, which decoding drops.
    pub reencode: bool,
}

impl Valid {
    /// A vector from a prost message (so it re-encodes to the same bytes).
    pub fn of<M: prost::Message>(name: &'static str, description: &'static str, frame: &M) -> Self {
        Valid { name, description, payload: frame.encode_to_vec(), reencode: true }
    }
}

/// Where a receiver rejects an invalid vector.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The length prefix: the stream can no longer be split into frames.
    Framing,
    /// The frame's bytes are not a valid `ClientFrame`.
    Parse,
    /// The frame parses but the session state machine rejects it.
    Session,
    /// The request body breaks a field rule (`validate_request`).
    Validate,
}

/// A client → server byte string a server must reject.
pub struct Invalid {
    /// File and vector name.
    pub name: &'static str,
    /// What the vector shows.
    pub description: &'static str,
    /// The complete wire bytes, length prefix included.
    pub wire: Vec<u8>,
    /// Complete wire frames the client sent before `wire`.
    pub after: Vec<Vec<u8>>,
    /// The stage that rejects it.
    pub stage: Stage,
    /// The code of the `Error` frame the server answers with.
    pub code: ErrorCode,
    /// The `request_id` of that `Error` frame.
    pub request_id: u64,
    /// Whether that `Error` ends the session.
    pub fatal: bool,
}

#[derive(Serialize)]
struct ValidFile<'a> {
    name: &'a str,
    description: &'a str,
    message: &'a str,
    hex: String,
    /// Serialized by prost-reflect in field-number order.
    json: &'a DynamicMessage,
    reencode: bool,
}

#[derive(Serialize)]
struct InvalidFile<'a> {
    name: &'a str,
    description: &'a str,
    direction: &'a str,
    hex: String,
    max_frame_bytes: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after: Vec<String>,
    /// What a live server must have been told before `hex` (README,
    /// "Against a live server"): "fresh-session" (nothing but `after`),
    /// "handshake" (a Hello answered with Welcome) or "authenticated" (and
    /// a signup, login or resume answered with AuthOk).
    needs: &'static str,
    expect: Expect<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also_accepted: Vec<Expect<'a>>,
}

/// Answers other than `expect` that PROTOCOL.md equally allows for a
/// vector: (vector, stage, code). A known field sent with the wrong wire
/// type is malformed to a strict parser (prost), while stock protobuf
/// libraries keep it as an unknown field, so the body is absent (§3 (b)).
const ALSO_ACCEPTED: &[(&str, Stage, ErrorCode)] = &[("wrong_wire_type", Stage::Session, ErrorCode::UNKNOWN_REQUEST)];

#[derive(Serialize)]
struct Expect<'a> {
    stage: Stage,
    code: u32,
    name: &'a str,
    request_id: String,
    fatal: bool,
}

/// `payload` with its varint length prefix.
pub fn wire(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    prost::encoding::encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// The wire bytes of a prost frame.
pub fn wire_of<M: prost::Message>(frame: &M) -> Vec<u8> {
    wire(&frame.encode_to_vec())
}

/// A ClientFrame with a body.
pub fn client(request_id: u64, body: pb::client_frame::Body) -> pb::ClientFrame {
    pb::ClientFrame { request_id, body: Some(body) }
}

/// A ServerFrame with a body.
pub fn server(request_id: u64, body: pb::server_frame::Body) -> pb::ServerFrame {
    pb::ServerFrame { request_id, body: Some(body) }
}

fn main() -> Result<()> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().ok_or("the crate has no parent folder")?;
    let vectors = root.join("spec/vectors");
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)?;
    let client_desc = message(&pool, "confab.v1.ClientFrame")?;
    let server_desc = message(&pool, "confab.v1.ServerFrame")?;

    let client: Vec<Valid> = client::vectors().into_iter().chain(example::client_vectors()).collect();
    let server: Vec<Valid> = server::vectors().into_iter().chain(example::server_vectors()).collect();
    let invalid = invalid::vectors();

    // Names are file names: unique within each folder.
    for names in [
        client.iter().map(|v| v.name).collect::<Vec<_>>(),
        server.iter().map(|v| v.name).collect(),
        invalid.iter().map(|v| v.name).collect(),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = names.into_iter().find(|n| !seen.insert(*n)) {
            return Err(format!("duplicate vector name {dup}").into());
        }
    }

    let client_dir = clean_dir(&vectors.join("client"), "json")?;
    for v in &client {
        check_round_trip::<pb::ClientFrame>(v)?;
        write_valid(&client_dir, v, &client_desc)?;
    }
    let server_dir = clean_dir(&vectors.join("server"), "json")?;
    for v in &server {
        check_round_trip::<pb::ServerFrame>(v)?;
        write_valid(&server_dir, v, &server_desc)?;
    }
    let invalid_dir = clean_dir(&vectors.join("invalid"), "json")?;
    for v in &invalid {
        write_invalid(&invalid_dir, v)?;
    }
    corpus::write(&root.join("fuzz/corpus"), &client, &server, &invalid)?;

    eprintln!(
        "wrote {} client, {} server and {} invalid vectors to {}",
        client.len(),
        server.len(),
        invalid.len(),
        vectors.display()
    );
    Ok(())
}

fn message(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor> {
    pool.get_message_by_name(name).ok_or_else(|| format!("{name} is not in the descriptor set").into())
}

/// Creates `dir` and removes the files with extension `ext` a previous run
/// wrote there.
fn clean_dir(dir: &Path, ext: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            fs::remove_file(&path)?;
        }
    }
    Ok(dir.to_path_buf())
}

/// Refuses to write a vector whose "reencode" claim is false.
fn check_round_trip<M: prost::Message + Default>(v: &Valid) -> Result<()> {
    let decoded = M::decode(&v.payload[..])?;
    let same = decoded.encode_to_vec() == v.payload;
    if same != v.reencode {
        return Err(format!("{}: reencode is {} but re-encoding gives same={same}", v.name, v.reencode).into());
    }
    Ok(())
}

fn write_valid(dir: &Path, v: &Valid, desc: &MessageDescriptor) -> Result<()> {
    let dynamic = DynamicMessage::decode(desc.clone(), &v.payload[..])?;
    let file = ValidFile {
        name: v.name,
        description: v.description,
        message: desc.full_name(),
        hex: hex::encode(wire(&v.payload)),
        json: &dynamic,
        reencode: v.reencode,
    };
    write_json(&dir.join(format!("{}.json", v.name)), &file)
}

fn write_invalid(dir: &Path, v: &Invalid) -> Result<()> {
    let name = v.code.name().ok_or_else(|| format!("{}: code {} is not in errors.md", v.name, v.code.0))?;
    let file = InvalidFile {
        name: v.name,
        description: v.description,
        direction: "client",
        hex: hex::encode(&v.wire),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        after: v.after.iter().map(hex::encode).collect(),
        needs: needs(v),
        expect: Expect { stage: v.stage, code: v.code.0, name, request_id: v.request_id.to_string(), fatal: v.fatal },
        also_accepted: ALSO_ACCEPTED
            .iter()
            .filter(|(vector, _, _)| *vector == v.name)
            .map(|&(_, stage, code)| {
                let name = code.name().ok_or_else(|| format!("{}: code {} is not in errors.md", v.name, code.0))?;
                Ok(Expect { stage, code: code.0, name, request_id: v.request_id.to_string(), fatal: v.fatal })
            })
            .collect::<Result<_>>()?,
    };
    write_json(&dir.join(format!("{}.json", v.name)), &file)
}

/// The state a live server needs before an invalid vector (see
/// `InvalidFile::needs`): `validate` vectors need an admitted request, so
/// a handshake, and authentication unless the request is one of those
/// that come before it; the others carry what they need in `after`.
fn needs(v: &Invalid) -> &'static str {
    use confab_protocol::pb::client_frame::Body;
    if v.stage != Stage::Validate {
        return "fresh-session";
    }
    let mut payload = &v.wire[..];
    let body = prost::encoding::decode_varint(&mut payload)
        .ok()
        .and_then(|_| <confab_protocol::pb::ClientFrame as prost::Message>::decode(payload).ok())
        .and_then(|f| f.body);
    match body {
        Some(Body::Signup(_) | Body::Login(_) | Body::Resume(_)) => "handshake",
        _ => "authenticated",
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    fs::write(path, text)?;
    Ok(())
}
