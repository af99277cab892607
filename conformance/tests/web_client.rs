//! The browser client's session (web/client.js) passes the client
//! conformance suite over WebSocket, run in Node by
//! web/tests/conformance-driver.mjs (the Session built as web/app.js builds
//! it; see the driver's header for what stands in for the browser).
//!
//! Needs Node.js with a WebSocket (Node 22, or Node 20.10+ through
//! `--experimental-websocket`, which the driver turns on itself). Without it
//! the test says so on stderr and is skipped, or fails under
//! `CONFAB_REQUIRE_E2E=1` (as in CI, .ci/run). The driver uses no npm
//! package, so `npm ci --prefix web` is not needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use confab_conformance::client::{self, ClientOptions};
use confab_conformance::report::Report;
use confab_conformance::wire::Transport;

/// Set to 1, a missing tool fails the test instead of skipping it.
const REQUIRE_E2E: &str = "CONFAB_REQUIRE_E2E";

fn driver() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("web/tests/conformance-driver.mjs")
}

/// What is missing to run the driver, if anything.
fn missing_tools(driver: &Path) -> Vec<String> {
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        return vec!["node (Node.js 20.10 or later)".to_string()];
    }
    // The driver says whether this Node has (or can turn on) a WebSocket.
    let ws_ok = Command::new("node")
        .arg(driver)
        .arg("--check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ws_ok {
        return vec!["a Node.js with WebSocket (20.10 or later)".to_string()];
    }
    Vec::new()
}

/// Whether the test can run: a missing tool skips it (saying so on stderr),
/// or fails it under `CONFAB_REQUIRE_E2E=1`. (The same rule as
/// server/tests/common/e2e.rs.)
fn require_tools_or_skip(test: &str, missing: &[String]) -> bool {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_passes_the_client_conformance_suite_over_websocket() {
    let driver = driver();
    if !require_tools_or_skip("browser client conformance (conformance/tests/web_client.rs)", &missing_tools(&driver)) {
        return;
    }
    let opts = ClientOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Ws,
        driver: vec!["node".into(), driver.to_string_lossy().into_owned()],
        only: Vec::new(),
        verbose: false,
    };
    let mut report = Report::new("confab-conformance client ws (web/client.js)", false);
    client::run(&opts, &mut report).await.unwrap();
    let (passed, failed, _) = report.counts();
    assert!(failed == 0 && passed >= 10, "{}\n{}", report.summary(), report.failures().join("\n"));
}
