//! The browser client (web/) end to end in headless Chromium: starts a real
//! server with its HTTP listener and runs `node web/tests/e2e.mjs` against
//! it (two browser contexts sign up, open a DM, talk; one loses its network
//! while the other sends and must catch up with exactly the missed messages).
//!
//! Needs Debian's `chromium` (/usr/bin/chromium), Node.js and
//! `web/node_modules/playwright-core` (`cd web && npm ci`). Without them the
//! test says so on stderr and is skipped, or fails under
//! `CONFAB_REQUIRE_E2E=1` (as in CI). Screenshots and the browser console go
//! to `target/browser-artifacts/`.
//!
//! The script restarts the server through this harness (`--control stdin`):
//! it prints `e2e-control: stop-server` or `e2e-control: start-server` on
//! its stdout and reads `ok` (or `error: …`) on its stdin. Stopping is the
//! graceful shutdown `confabd` does on SIGTERM (GoAway, SHUTTING_DOWN, the
//! store flushed and closed); starting opens the same data dir on the same
//! HTTP address, so the pages reconnect to where they were.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use confab_server::config::Config;
use confab_server::server::Server;
use confab_server::store::Durability;

const CHROMIUM: &str = "/usr/bin/chromium";
const E2E_DEADLINE: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf())
}

/// What is missing to run the browser test, if anything.
fn missing_tools(root: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (apt-get install chromium)"));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !node_ok {
        missing.push("node (Node.js 20 or later)".to_string());
    }
    if !root.join("web/node_modules/playwright-core/package.json").exists() {
        missing.push("web/node_modules/playwright-core (cd web && npm ci)".to_string());
    }
    missing
}

fn artifacts_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() { target } else { root.join(target) };
    target.join("browser-artifacts")
}

/// What a line of the script's stdout asks of this harness.
const CONTROL_PREFIX: &str = "e2e-control: ";

/// Reads the script's stdout to the end on its own thread, passing the
/// control requests among its lines to `requests`.
fn read_stdout(
    pipe: Option<impl Read + Send + 'static>,
    requests: mpsc::Sender<String>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = String::new();
        let Some(pipe) = pipe else { return all };
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            if let Some(request) = text.trim_end().strip_prefix(CONTROL_PREFIX) {
                let _ = requests.send(request.to_string());
            }
            all.push_str(&text);
        }
        all
    })
}

/// Does what the script asked: stop the server, or start it again on the
/// same data dir and address. Returns the answer line.
async fn control(request: &str, server: &mut Option<Server>, config: &Config) -> String {
    match request {
        "stop-server" => match server.take() {
            Some(s) => {
                s.shutdown().await;
                "ok".to_string()
            }
            None => "error: the server is not running".to_string(),
        },
        "start-server" if server.is_some() => "error: the server is already running".to_string(),
        "start-server" => match Server::start(config.clone()).await {
            Ok(s) => {
                *server = Some(s);
                "ok".to_string()
            }
            Err(e) => format!("error: cannot start the server again: {e}"),
        },
        other => format!("error: unknown request {other:?}"),
    }
}

/// Reads a child's pipe to the end on its own thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_dm_offline_catch_up() {
    let root = repo_root();
    if !common::e2e::require_tools_or_skip("browser e2e test (server/tests/browser.rs)", &missing_tools(&root)) {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let local = "127.0.0.1:0".parse().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        quic: None,
        tcp: None,
        http: Some(local),
        // The files on disk, so the test never runs a stale embedded copy.
        web_dir: Some(root.join("web")),
        durability: Durability::Buffered,
        // Short, so "bob sees alice offline" does not wait the default 5 s.
        presence_grace_ms: 2000,
        // Short, so the half-open phase (a silent connection only a
        // heartbeat can detect: 2.5 intervals) takes seconds, not a minute.
        heartbeat_interval_ms: 2000,
        ..Config::default()
    };
    let server = Server::start(config.clone()).await.unwrap();
    let addr = server.http_addr().expect("the server has no HTTP listener");
    // A restart listens where the pages know the server is.
    config.http = Some(addr);
    let mut server = Some(server);
    let url = format!("http://{addr}");
    let out = artifacts_dir(&root);

    let mut child = Command::new("node")
        .arg(root.join("web/tests/e2e.mjs"))
        .arg("--url")
        .arg(&url)
        .arg("--out")
        .arg(&out)
        .arg("--chromium")
        .arg(CHROMIUM)
        .arg("--control")
        .arg("stdin")
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start node");
    let (requests_tx, requests) = mpsc::channel();
    let stdout = read_stdout(child.stdout.take(), requests_tx);
    let stderr = drain(child.stderr.take());
    let mut answers = child.stdin.take();

    // Poll the child with a deadline (the server keeps running on the
    // runtime), doing what it asks of the server meanwhile.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break Some(status);
        }
        while let Ok(request) = requests.try_recv() {
            let answer = control(&request, &mut server, &config).await;
            eprintln!("browser.rs: the script asked to {request}: {answer}");
            if let Some(pipe) = answers.as_mut() {
                // The script may have ended meanwhile: its exit status tells.
                let _ = writeln!(pipe, "{answer}").and_then(|()| pipe.flush());
            }
        }
        if started.elapsed() > E2E_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    drop(answers);
    println!("{stdout}");
    eprintln!("{stderr}");
    if let Some(server) = server {
        server.shutdown().await;
    }

    let status = status.unwrap_or_else(|| panic!("the browser e2e test did not finish within {E2E_DEADLINE:?}"));
    assert!(status.success(), "node web/tests/e2e.mjs failed ({status}); artifacts in {}", out.display());
    assert!(stdout.contains(", 0 failed"), "the e2e test did not report its result:\n{stdout}");
    assert!(
        stdout.contains(&format!("{CONTROL_PREFIX}start-server")),
        "the e2e test never restarted the server:\n{stdout}"
    );
    assert!(out.join("alice.png").exists(), "no screenshot in {}", out.display());
}
