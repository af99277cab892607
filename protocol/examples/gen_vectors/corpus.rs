//! Seeds for the fuzz targets in `fuzz/`, made from the vectors. Seeds are
//! named `vec-<kind>-<name>` (fuzz/.gitignore ignores the hash-named files
//! libFuzzer adds, not these).

use std::{fs, path::Path};

use confab_protocol::pb::client_frame::Body;

use super::{Invalid, Result, Valid, client::hello, server::welcome, wire, wire_of};

/// The session targets read two header bytes before the stream: a seed for
/// the chunk sizes and the time step (see `fuzz/fuzz_targets/common.rs`).
/// These values give small chunks and 100 ms steps: no timeout fires.
const SESSION_HEADER: [u8; 2] = [0x2a, 0x01];

/// Seeds above this size are left out: libFuzzer sizes its inputs from the
/// largest seed, and the 100,000-character messages would slow every run.
const MAX_SEED: usize = 4096;

pub fn write(dir: &Path, client: &[Valid], server: &[Valid], invalid: &[Invalid]) -> Result<()> {
    let decoder = clean(&dir.join("frame_decoder"))?;
    let server_session = clean(&dir.join("server_session"))?;
    let client_session = clean(&dir.join("client_session"))?;
    let hello = wire_of(&hello());
    let login = wire_of(&super::client::login(2));
    let welcome = wire_of(&welcome());
    // Bodies other than these need an authenticated session: their seeds
    // log in first (the fuzz target answers logins with AuthOk), so the
    // fuzzer starts past the handshake and the login barrier.
    let needs_auth = |payload: &[u8]| {
        !matches!(
            confab_protocol::framing::decode_client_frame(payload).map(|f| f.body),
            Ok(Some(Body::Hello(_) | Body::Signup(_) | Body::Login(_) | Body::Resume(_) | Body::Ping(_)))
                | Ok(None)
                | Err(_)
        )
    };
    // One seed plays a whole session: every such request, one after another.
    let mut everything = [&SESSION_HEADER[..], &hello, &login].concat();

    for v in client.iter().filter(|v| v.payload.len() < MAX_SEED) {
        let w = wire(&v.payload);
        fs::write(decoder.join(format!("vec-client-{}", v.name)), &w)?;
        // A session only gets past the handshake with a Hello first.
        let stream = if v.name == "hello" { w.clone() } else { [hello.clone(), w.clone()].concat() };
        fs::write(server_session.join(format!("vec-client-{}", v.name)), [&SESSION_HEADER[..], &stream].concat())?;
        if needs_auth(&v.payload) {
            let authed = [&SESSION_HEADER[..], &hello, &login, &w].concat();
            fs::write(server_session.join(format!("vec-authed-{}", v.name)), authed)?;
            everything.extend_from_slice(&w);
        }
    }
    fs::write(server_session.join("vec-session-everything"), everything)?;
    for v in server.iter().filter(|v| v.payload.len() < MAX_SEED) {
        let w = wire(&v.payload);
        fs::write(decoder.join(format!("vec-server-{}", v.name)), &w)?;
        // The client session sent Hello as request 1; Welcome answers it.
        let stream = if v.name == "welcome" { w } else { [welcome.clone(), w].concat() };
        fs::write(client_session.join(format!("vec-server-{}", v.name)), [&SESSION_HEADER[..], &stream].concat())?;
    }
    for v in invalid.iter().filter(|v| v.wire.len() < MAX_SEED) {
        fs::write(decoder.join(format!("vec-invalid-{}", v.name)), &v.wire)?;
        let mut stream = SESSION_HEADER.to_vec();
        if v.stage == super::Stage::Validate {
            // As spec/vectors/README.md says to replay validate vectors.
            stream.extend_from_slice(&hello);
            let payload = &v.wire[v.wire.len() - frame_len(&v.wire)..];
            if needs_auth(payload) {
                stream.extend_from_slice(&login);
            }
        }
        for frame in &v.after {
            stream.extend_from_slice(frame);
        }
        stream.extend_from_slice(&v.wire);
        fs::write(server_session.join(format!("vec-invalid-{}", v.name)), stream)?;
    }
    Ok(())
}

/// The length of the payload of one wire frame (its prefix is a varint).
fn frame_len(wire: &[u8]) -> usize {
    let prefix = wire.iter().take_while(|b| **b & 0x80 != 0).count() + 1;
    wire.len() - prefix
}

/// Creates `dir` and removes the seeds an earlier run wrote.
fn clean(dir: &Path) -> Result<std::path::PathBuf> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let ours = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vec-"));
        if ours {
            fs::remove_file(&path)?;
        }
    }
    Ok(dir.to_path_buf())
}
