//! Test support for the `confab` binary's tests.
//!
//! End-to-end tests that need a tool from outside Rust (tmux) are skipped
//! where it is missing, except under `CONFAB_REQUIRE_E2E=1` (set by
//! `.ci/run`), where a missing tool fails the test, so that CI cannot pass
//! without running it. (server/tests/common/e2e.rs has the same helper for
//! the server's tests.)
#![allow(dead_code)]

use std::io::Write;

/// Set to 1, a missing tool fails the test instead of skipping it.
pub const REQUIRE_E2E: &str = "CONFAB_REQUIRE_E2E";

/// Whether `test` can run: true when `missing` (each missing tool with how
/// to install it) is empty. Otherwise it fails the test under
/// `CONFAB_REQUIRE_E2E=1`, and without it says on stderr that the test is
/// skipped and why, and returns false.
pub fn require_tools_or_skip(test: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    match std::env::var(REQUIRE_E2E).as_deref() {
        Ok("1") => panic!(
            "{test} cannot run: missing {missing}. {REQUIRE_E2E}=1 makes a missing tool a failure \
             (.ci/run sets it): install what is missing, or unset {REQUIRE_E2E} to skip this test"
        ),
        Ok("" | "0") | Err(std::env::VarError::NotPresent) => {
            // Straight to the stderr handle: libtest captures eprintln! of a
            // passing test, and a skip should show in the output.
            let _ =
                writeln!(std::io::stderr(), "SKIPPED {test}: missing {missing} (set {REQUIRE_E2E}=1 to fail instead)");
            false
        }
        Ok(other) => {
            panic!("{REQUIRE_E2E} is {other:?}: set it to 1 (missing tools fail) or leave it unset (they skip)")
        }
        Err(e) => panic!("{REQUIRE_E2E}: {e}"),
    }
}
