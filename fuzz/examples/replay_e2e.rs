//! Plays `server_e2e` inputs (files) without libFuzzer and prints what
//! they decode to; with `CONFAB_FUZZ_TRACE=1` also every frame both ways.
//!
//! ```text
//! CONFAB_FUZZ_TRACE=1 cargo run --manifest-path fuzz/Cargo.toml --example replay_e2e -- FILE...
//! ```
#![allow(clippy::print_stdout)] // a command-line tool: its output is the point

fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        println!("{path}: {:#?}", confab_fuzz::script::Script::parse(&bytes));
        confab_fuzz::e2e::run(&bytes);
        println!("{path}: no invariant broken");
    }
}
