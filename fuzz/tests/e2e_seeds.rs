//! Replays every committed `server_e2e` seed against the in-process
//! server, without libFuzzer: a quick check on stable that the harness,
//! the seeds and the server agree (`cargo test --manifest-path
//! fuzz/Cargo.toml`). A seed that breaks an invariant fails here with the
//! same message the fuzzer would report.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Panics anywhere, including server tasks whose panics tokio catches
/// (under libFuzzer every panic aborts the process and is a finding).
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn every_seed_keeps_the_contract() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/server_e2e");
    let mut seeds: Vec<_> =
        std::fs::read_dir(&dir).expect("the seed corpus exists").flatten().map(|e| e.path()).collect();
    seeds.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")));
    seeds.sort();
    assert!(seeds.len() > 20, "only {} seeds in {}", seeds.len(), dir.display());
    for seed in &seeds {
        let bytes = std::fs::read(seed).expect("a seed reads");
        let started = std::time::Instant::now();
        confab_fuzz::e2e::run(&bytes);
        eprintln!("{}: {:?}", seed.display(), started.elapsed());
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic while replaying {}", seed.display());
    }
}
