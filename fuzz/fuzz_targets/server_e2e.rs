//! A whole server session, end to end: arbitrary sequences of client
//! actions (every request kind with fuzzed fields, garbage, frames cut at
//! any byte, typing, a second user's session, reconnects) against a real
//! in-process `confabd`, every server frame checked against the protocol's
//! contract. Input format: `src/script.rs`; harness: `src/e2e.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    confab_fuzz::e2e::run(data);
});
