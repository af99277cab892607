//! Compiles the storage records (`proto/store.proto`) with protox, mapping
//! the wire types it imports onto `confab_protocol::pb`; and embeds the
//! browser client (`../web`) so `confabd` alone serves it.

use std::path::{Path, PathBuf};
use std::{env, fs};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let proto = dir.join("proto/store.proto");
    let spec = dir.join("../spec");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed={}", spec.join("confab.proto").display());
    let includes = [dir.join("proto"), spec];
    let fds = protox::compile([&proto], &includes)?;
    let fds_path = out.join("store.fds");
    fs::write(&fds_path, fds.encode_to_vec())?;
    prost_build::Config::new()
        .file_descriptor_set_path(&fds_path)
        .skip_protoc_run()
        .bytes(["."])
        .extern_path(".confab.v1", "::confab_protocol::pb")
        .compile_protos(&[&proto], &includes)?;
    embed_web(&dir.join("../web"), &out.join("web_assets.rs"))?;
    Ok(())
}

/// Writes `FILES: &[(relative path, bytes)]` for every file of the browser
/// client: all of `web/` but dotfiles, `node_modules/`, `tests/` and the
/// npm manifests (development only).
fn embed_web(web: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    if web.is_dir() {
        collect(web, web, &mut files)?;
    } else {
        println!("cargo:rerun-if-changed={}", web.display());
    }
    files.sort();
    let mut code = String::from("/// The browser client's files.\npub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        code.push_str(&format!("    ({rel:?}, include_bytes!({abs:?})),\n"));
    }
    code.push_str("];\n");
    fs::write(out, code)?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) -> Result<(), Box<dyn std::error::Error>> {
    // A directory's mtime changes when files are added or removed in it.
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
        let top = rel.split('/').next().unwrap_or_default();
        if matches!(top, "node_modules" | "tests" | "package.json" | "package-lock.json") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect(root, &path, files)?;
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
            let abs = fs::canonicalize(&path)?.to_string_lossy().into_owned();
            files.push((rel, abs));
        }
    }
    Ok(())
}
