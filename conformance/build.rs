//! Embeds spec/vectors/invalid/*.json and spec/vectors/websocket/*.json so
//! the binary replays them on its own, wherever it runs.

use std::fmt::Write as _;
use std::path::PathBuf;

fn embed(out: &mut String, folder: &str, name: &str) {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../spec/vectors").join(folder);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
        })
        .unwrap_or_default();
    files.sort();
    let _ = writeln!(
        out,
        "/// The vectors of spec/vectors/{folder}: (file name, JSON).\npub static {name}: &[(&str, &str)] = &["
    );
    for p in &files {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let path = p.canonicalize().unwrap_or_else(|_| p.clone()).display().to_string();
        let _ = writeln!(out, "    ({stem:?}, include_str!({path:?})),");
    }
    out.push_str("];\n");
}

fn main() {
    let mut out = String::new();
    embed(&mut out, "invalid", "INVALID");
    embed(&mut out, "websocket", "WEBSOCKET");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("invalid_vectors.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
