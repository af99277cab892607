//! Seeds for the fuzz targets in `fuzz/`, made from the vectors. Seeds are
//! named `vec-<kind>-<name>` (fuzz/.gitignore ignores the hash-named files
//! libFuzzer adds, not these).

use std::{fs, path::Path};

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
    let welcome = wire_of(&welcome());

    for v in client.iter().filter(|v| v.payload.len() < MAX_SEED) {
        let w = wire(&v.payload);
        fs::write(decoder.join(format!("vec-client-{}", v.name)), &w)?;
        // A session only gets past the handshake with a Hello first.
        let stream = if v.name == "hello" { w } else { [hello.clone(), w].concat() };
        fs::write(server_session.join(format!("vec-client-{}", v.name)), [&SESSION_HEADER[..], &stream].concat())?;
    }
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
        if v.after.is_empty() && v.stage != super::Stage::Session {
            stream.extend_from_slice(&hello);
        }
        for frame in &v.after {
            stream.extend_from_slice(frame);
        }
        stream.extend_from_slice(&v.wire);
        fs::write(server_session.join(format!("vec-invalid-{}", v.name)), stream)?;
    }
    Ok(())
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
