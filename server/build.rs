//! Compiles the storage records (`proto/store.proto`) with protox, mapping
//! the wire types it imports onto `confab_protocol::pb`.

use std::{env, fs, path::PathBuf};

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
    Ok(())
}
