//! `confab chat` as people use it: two instances in tmux panes (80×24),
//! alice over QUIC and bob over TCP, against a real server. It checks that
//! history loads as alice scrolls, that a message typed in one pane shows as
//! typing and then arrives in the other while the sender sees it confirmed,
//! that presence and groups show, and that a server restart shows as
//! reconnecting and recovers with nothing lost or doubled: on screen and in
//! the server's history. A second pair of panes covers reading and commands:
//! a start with the server down, opening at the first of 40 unread messages
//! with only what was shown marked read, Alt-N and `/go`, Tab completion,
//! mentions, group read receipts, `/role`, `/rename`, `/members`, an unknown
//! command, a tiny window and a revoked device. Skips (with a note on
//! stderr) without tmux, or fails under `CONFAB_REQUIRE_E2E=1` or `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use confab_server::config::Config;
use confab_server::server::Server;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
/// Reconnecting waits with backoff and a QUIC attempt can take its full
/// timeout while the server is down.
const RECOVER: Duration = Duration::from_secs(45);

fn config(data_dir: &Path, quic: SocketAddr, tcp: SocketAddr) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        quic: Some(quic),
        tcp: Some(tcp),
        http: None,
        presence_grace_ms: 200,
        ..Config::default()
    }
}

/// The same ports again: the clients reconnect to where they were.
async fn restart_on(data_dir: &Path, quic: SocketAddr, tcp: SocketAddr) -> Server {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Server::start(config(data_dir, quic, tcp)).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart: {e:#}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot restart the server on {quic} / {tcp}: {e:#}"),
        }
    }
}

/// One user's `confab` invocations.
struct User {
    profile: PathBuf,
    args: Vec<String>,
}

impl User {
    fn new(dir: &Path, name: &str, server: SocketAddr, transport: &str, cert: &Path) -> User {
        let args = ["--server", &server.to_string(), "--transport", transport, "--trust-cert"]
            .iter()
            .map(|s| s.to_string())
            .chain([cert.display().to_string()])
            .collect();
        User { profile: dir.join(name), args }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(&self.args)
            .arg("--profile")
            .arg(&self.profile)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "confab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all, "");
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// A shell script that runs `confab chat`, then reports how it ended
    /// and whether the terminal is back in canonical mode.
    fn chat_script(&self, dir: &Path, name: &str) -> PathBuf {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut line = vec![quote(env!("CARGO_BIN_EXE_confab"))];
        line.extend(self.args.iter().map(|a| quote(a)));
        line.extend(["--profile".into(), quote(&self.profile.display().to_string()), "chat".into()]);
        let err = quote(&dir.join(format!("{name}.stderr")).display().to_string());
        let script = format!(
            "{} 2>{err}\necho \"chat exited with $?\"\nstty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'\n",
            line.join(" ")
        );
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, script).unwrap();
        path
    }
}

/// A private tmux server, killed on drop. Its socket is in the test's
/// temporary directory (`-S`), so it cannot meet another tmux server and
/// leaves nothing behind.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        Tmux { socket: dir.join("tmux.sock") }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-f", "/dev/null", "-S"]).arg(&self.socket).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An 80×24 pane running `script`; the pane stays after it exits.
    fn start(&self, pane: &str, script: &Path) {
        self.tmux(&["new-session", "-d", "-s", pane, "-x", "80", "-y", "24", "sleep 600"]);
        self.tmux(&["set-option", "-g", "remain-on-exit", "on"]);
        let cmd = format!("sh '{}'", script.display());
        self.tmux(&["respawn-pane", "-k", "-t", pane, &cmd]);
    }

    fn type_text(&self, pane: &str, text: &str) {
        self.tmux(&["send-keys", "-t", pane, "-l", text]);
    }

    fn key(&self, pane: &str, key: &str) {
        self.tmux(&["send-keys", "-t", pane, key]);
    }

    fn screen(&self, pane: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", pane])
    }

    /// The screen with the scrollback above it: what a shell printed after
    /// the UI left the alternate screen can scroll there.
    fn everything(&self, pane: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-", "-t", pane])
    }

    /// Polls the pane until `ok` holds, failing with the screen after
    /// `timeout`.
    fn wait(&self, pane: &str, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen(pane);
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("{pane}: {what} not seen within {timeout:?}; the pane shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, pane: &str, text: &str) -> String {
        self.wait(pane, &format!("{text:?}"), WAIT, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
    }
}

/// The status bar: the last line drawn.
fn status(screen: &str) -> &str {
    screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// Lines showing `text` as a message body (after the "nick │ " column).
fn shown(screen: &str, text: &str) -> usize {
    screen.lines().filter(|l| l.rsplit_once(" │ ").is_some_and(|(_, body)| body.trim_end() == text)).count()
}

/// The line that shows `text` as a message body.
fn line_of<'a>(screen: &'a str, text: &str) -> &'a str {
    screen.lines().find(|l| l.rsplit_once(" │ ").is_some_and(|(_, body)| body.trim_end() == text)).unwrap_or("")
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages.iter().filter_map(|m| m["body"].as_str()).map(str::to_string).collect()
}

/// Whether tmux is there to run the test; without it the test is skipped,
/// except in CI (`CONFAB_REQUIRE_E2E=1`, or `CI=true`), where it fails.
fn have_tmux() -> bool {
    let missing: Vec<String> = match Command::new("tmux").arg("-V").output() {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("tmux ({e}; apt-get install tmux)")],
    };
    if !missing.is_empty() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "tmux chat test (client-cli/tests/chat_tmux.rs) cannot run under CI=true: missing {}",
            missing.join(", ")
        );
    }
    common::require_tools_or_skip("tmux chat test (client-cli/tests/chat_tmux.rs)", &missing)
}

#[test]
fn two_terminals_chat_and_survive_a_server_restart() {
    if !have_tmux() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = rt.block_on(Server::start(config(&data, any, any))).unwrap();
    let (quic, tcp) = (server.quic_addr().unwrap(), server.tcp_addr().unwrap());
    let cert = server.cert_path().to_path_buf();
    let alice = User::new(dir.path(), "alice", quic, "quic", &cert);
    let bob = User::new(dir.path(), "bob", tcp, "tcp", &cert);
    // Bob's second device, to read the server's history independently.
    let bob2 = User::new(dir.path(), "bob-laptop", tcp, "tcp", &cert);
    alice.run(&["signup", "alice", "--password-stdin"], "alice-password\n");
    bob.run(&["signup", "bob", "--password-stdin"], "bob-password\n");
    bob2.run(&["login", "bob", "--device", "laptop", "--password-stdin"], "bob-password\n");
    // A backlog older than one history page (100), for scrolling back.
    for i in 1..=120 {
        bob2.run(&["send", "@alice", &format!("backlog {i}")], "");
    }

    let tmux = Tmux::new(dir.path());
    tmux.start("alice", &alice.chat_script(dir.path(), "alice"));
    tmux.start("bob", &bob.chat_script(dir.path(), "bob"));
    // 120 unread: alice's pane opens at the first of them (two history
    // pages back), under the "new messages" line.
    let a = tmux.wait("alice", "connected at the first unread", WAIT, |s| {
        status(s).contains("connected · ") && s.contains("── new messages ──") && shown(s, "backlog 1") == 1
    });
    assert_eq!(shown(&a, "backlog 120"), 0, "{a}");
    assert!(status(&a).contains(&format!("connected · {quic} · QUIC")), "{}", status(&a));
    let b = tmux.wait("bob", "connected", WAIT, |s| status(s).contains("connected · "));
    assert!(status(&b).contains(&format!("connected · {tcp} · TCP")), "{}", status(&b));
    assert_eq!(a.lines().count(), 24, "an 80×24 screen:\n{a}");
    assert!(a.lines().all(|l| l.chars().count() <= 80));

    // PgUp walks back through the server's history to the first message.
    tmux.wait("alice", "bob online", WAIT, |s| s.lines().next().is_some_and(|h| h.contains("@bob · online")));
    let deadline = Instant::now() + WAIT;
    let top = loop {
        tmux.key("alice", "PPage");
        let s = tmux.screen("alice");
        if s.contains("beginning of the conversation") {
            break s;
        }
        assert!(Instant::now() < deadline, "history did not reach the start:\n{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(shown(&top, "backlog 1"), 1, "{top}");
    assert_eq!(shown(&top, "backlog 2"), 1, "{top}");
    for _ in 0..12 {
        tmux.key("alice", "NPage");
    }
    tmux.wait_for("alice", "backlog 120");

    // `/dm` opens the existing conversation; typing shows in bob's pane
    // before the message arrives there, once, and alice sees it confirmed.
    tmux.type_text("alice", "/dm @bob");
    tmux.key("alice", "Enter");
    tmux.type_text("alice", "hello bob, from the terminal");
    tmux.wait_for("bob", "alice is typing…");
    tmux.key("alice", "Enter");
    let b = tmux.wait("bob", "the message", WAIT, |s| shown(s, "hello bob, from the terminal") == 1);
    assert!(line_of(&b, "hello bob, from the terminal").contains("alice │"), "{b}");
    assert!(!b.contains("alice is typing"), "the message ends the indicator:\n{b}");
    let a = tmux.wait("alice", "the confirmed message", WAIT, |s| {
        line_of(s, "hello bob, from the terminal").contains("alice │")
    });
    assert_eq!(shown(&a, "hello bob, from the terminal"), 1, "{a}");

    tmux.type_text("bob", "hi alice, over TCP");
    tmux.key("bob", "Enter");
    tmux.wait("alice", "bob's answer", WAIT, |s| line_of(s, "hi alice, over TCP").contains("bob │"));

    // A group: created in alice's pane, unread in bob's list until he
    // opens it with Tab.
    tmux.type_text("alice", "/group create Weekend @bob");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the group", WAIT, |s| s.contains("* alice created the group with bob"));
    tmux.type_text("alice", "who is in?");
    tmux.key("alice", "Enter");
    tmux.wait("bob", "an unread group", WAIT, |s| s.lines().any(|l| l.contains("# Weekend") && l.contains(" 1 │")));
    tmux.key("bob", "Tab");
    let b = tmux.wait("bob", "the group open", WAIT, |s| {
        s.lines().next().is_some_and(|h| h.contains("Weekend · 2 members")) && shown(s, "who is in?") == 1
    });
    assert!(b.contains("* alice created the group with bob"), "{b}");
    tmux.wait("bob", "the group read", WAIT, |s| !s.lines().any(|l| l.contains("# Weekend") && l.contains(" 1 │")));

    let groups = bob2.json(&["conversations"]);
    let group = groups.iter().find(|c| c["name"] == "Weekend").expect("the group is listed");
    let gid = group["conversation_id"].as_u64().unwrap().to_string();

    // The server goes away: both panes say so, and what alice types
    // meanwhile waits for the connection.
    rt.block_on(server.shutdown());
    let reconnecting = |s: &str| status(s).contains("reconnecting");
    tmux.wait("alice", "reconnecting", WAIT, reconnecting);
    tmux.wait("bob", "reconnecting", WAIT, reconnecting);
    tmux.type_text("alice", "sent during the outage");
    tmux.key("alice", "Enter");
    let a = tmux.wait_for("alice", "waiting for the connection");
    assert!(line_of(&a, "sent during the outage").contains("me │"), "pending:\n{a}");
    // TCP refuses at once, so bob's pane shows its next attempt soon.
    let b = tmux.wait("bob", "a second attempt", RECOVER, |s| status(s).contains("(attempt 2)"));
    assert!(reconnecting(&b), "{}", status(&b));

    // Back on the same ports: both recover, the message goes out once.
    let server = rt.block_on(restart_on(&data, quic, tcp));
    // Most likely before the panes are back: they catch up on it by Sync.
    bob2.run(&["send", &gid, "from the laptop, right after the restart"], "");
    let recovered = |s: &str| status(s).contains("● connected") && status(s).contains("reconnected");
    tmux.wait("alice", "the reconnect", RECOVER, recovered);
    tmux.wait("bob", "the reconnect", RECOVER, recovered);
    tmux.wait("alice", "the outage message confirmed", WAIT, |s| {
        line_of(s, "sent during the outage").contains("alice │") && !s.contains("waiting for the connection")
    });
    tmux.wait("bob", "the outage message", WAIT, |s| shown(s, "sent during the outage") == 1);
    tmux.wait("alice", "the laptop's message", WAIT, |s| shown(s, "from the laptop, right after the restart") == 1);
    tmux.type_text("bob", "after the restart");
    tmux.key("bob", "Enter");
    let a = tmux.wait("alice", "bob after the restart", WAIT, |s| shown(s, "after the restart") == 1);
    let b = tmux.wait("bob", "his own message confirmed", WAIT, |s| line_of(s, "after the restart").contains("bob │"));
    for text in
        ["who is in?", "sent during the outage", "from the laptop, right after the restart", "after the restart"]
    {
        assert_eq!(shown(&a, text), 1, "alice shows {text:?} once:\n{a}");
        assert_eq!(shown(&b, text), 1, "bob shows {text:?} once:\n{b}");
    }

    // The server holds each message once, in order.
    let dm: Vec<String> = bodies(&bob2.json(&["history", "@alice", "--limit", "3"]));
    assert_eq!(dm, ["backlog 120", "hello bob, from the terminal", "hi alice, over TCP"]);
    let history = bob2.json(&["history", &gid]);
    let mut group_bodies = bodies(&history);
    // The outage message and the laptop's race for their seq.
    group_bodies[1..3].sort();
    assert_eq!(
        group_bodies,
        ["who is in?", "from the laptop, right after the restart", "sent during the outage", "after the restart"]
    );
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "CREATED, then the four messages, no gaps");

    // Ctrl-C quits and gives the terminal back (canonical mode, main screen).
    tmux.key("alice", "C-c");
    let deadline = Instant::now() + WAIT;
    let a = loop {
        let all = tmux.everything("alice");
        if all.lines().any(|l| l.trim().ends_with("icanon")) || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(a.contains("chat exited with 0"), "{a}");
    assert!(a.lines().any(|l| l.trim() == "icanon"), "canonical mode again:\n{a}");
    let alternate = tmux.tmux(&["display-message", "-p", "-t", "alice", "#{alternate_on}"]);
    assert_eq!(alternate.trim(), "0", "left the alternate screen");
    // Bob's pane sees alice go offline (after the server's grace period).
    tmux.key("bob", "Tab");
    tmux.wait("bob", "alice offline", WAIT, |s| s.lines().next().is_some_and(|h| h.contains("@alice · last seen")));
    tmux.type_text("bob", "/quit");
    tmux.key("bob", "Enter");
    let deadline = Instant::now() + WAIT;
    while !tmux.everything("bob").contains("chat exited with 0") {
        assert!(Instant::now() < deadline, "bob's chat did not exit:\n{}", tmux.everything("bob"));
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(server.shutdown());
}

/// Whether `line` shows `text` as a message body.
fn is_body(line: &str, text: &str) -> bool {
    line.rsplit_once(" │ ").is_some_and(|(_, body)| body.trim_end() == text)
}

/// The message bodies "unread N" on screen, by N.
fn unread_shown(screen: &str) -> Vec<u64> {
    screen
        .lines()
        .filter_map(|l| l.rsplit_once(" │ ").and_then(|(_, b)| b.trim_end().strip_prefix("unread ")?.parse().ok()))
        .collect()
}

/// The screen's non-blank lines, trimmed and joined with spaces.
fn words(screen: &str) -> String {
    screen.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The input line (the one that starts with the prompt).
fn input_line(screen: &str) -> &str {
    screen.lines().rev().find(|l| l.starts_with("> ")).unwrap_or("")
}

fn header(screen: &str) -> &str {
    screen.lines().next().unwrap_or("")
}

/// Polls `f` until it returns `Some`, failing after `timeout`.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reading_place_commands_completion_and_failures() {
    if !have_tmux() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = rt.block_on(Server::start(config(&data, any, any))).unwrap();
    let (quic, tcp) = (server.quic_addr().unwrap(), server.tcp_addr().unwrap());
    let cert = server.cert_path().to_path_buf();
    // Over TCP: a server that is down refuses at once, so retries are quick.
    let alice = User::new(dir.path(), "alice", tcp, "tcp", &cert);
    let laptop = User::new(dir.path(), "alice-laptop", tcp, "tcp", &cert);
    let bob = User::new(dir.path(), "bob", tcp, "tcp", &cert);
    let carol = User::new(dir.path(), "carol", tcp, "tcp", &cert);
    alice.run(&["signup", "alice", "--password-stdin"], "alice-password\n");
    laptop.run(&["login", "alice", "--device", "laptop", "--password-stdin"], "alice-password\n");
    bob.run(&["signup", "bob", "--password-stdin"], "bob-password\n");
    carol.run(&["signup", "carol", "--password-stdin"], "carol-password\n");
    // A group alice owns, then 40 messages from bob while she is away: the
    // DM is the newest conversation, so it opens first.
    laptop.run(&["group", "create", "Team", "@bob", "@carol"], "");
    let gid = laptop.json(&["conversations"]).iter().find(|c| c["name"] == "Team").unwrap()["conversation_id"]
        .as_u64()
        .unwrap()
        .to_string();
    for i in 1..=40 {
        bob.run(&["send", "@alice", &format!("unread {i}")], "");
    }
    let seq_of: std::collections::HashMap<String, u64> = bob
        .json(&["history", "@alice", "--limit", "100"])
        .iter()
        .filter_map(|m| Some((m["body"].as_str()?.to_string(), m["seq"].as_u64()?)))
        .collect();
    let dm_state = || {
        let list = laptop.json(&["conversations"]);
        let dm = list.iter().find(|c| c["name"] == "@bob").unwrap();
        (dm["read_seq"].as_u64().unwrap(), dm["last_seq"].as_u64().unwrap())
    };

    // Started while the server is down: it says "connecting…", stays, and
    // connects once the server is back.
    rt.block_on(server.shutdown());
    let tmux = Tmux::new(dir.path());
    tmux.start("alice", &alice.chat_script(dir.path(), "alice"));
    let a = tmux.wait("alice", "connecting", WAIT, |s| status(s).contains("connecting…"));
    assert!(!a.contains("chat exited"), "{a}");
    tmux.wait("alice", "a retry", WAIT, |s| status(s).contains("connecting… retry"));
    let server = rt.block_on(restart_on(&data, quic, tcp));

    // Opened at the first unread under the divider; only what was shown is
    // marked read, and reading on moves the marker.
    let a = tmux.wait("alice", "the first unread under the divider", RECOVER, |s| {
        status(s).contains("● connected") && shown(s, "unread 1") == 1
    });
    let divider = a.lines().position(|l| l.contains("── new messages ──")).expect("the divider");
    assert!(divider < a.lines().position(|l| is_body(l, "unread 1")).unwrap(), "{a}");
    let last = *unread_shown(&a).iter().max().unwrap();
    assert!(last < 40, "not scrolled to the newest:\n{a}");
    let last_seq = seq_of["unread 40"];
    let wanted = seq_of[&format!("unread {last}")];
    let (read, total) = eventually("the read marker at the last line shown", WAIT, || {
        let (read, total) = dm_state();
        (read == wanted).then_some((read, total))
    });
    assert!(read < total && total == last_seq, "read {read} of {total}");
    for _ in 0..3 {
        tmux.key("alice", "NPage");
    }
    tmux.wait("alice", "the newest", WAIT, |s| shown(s, "unread 40") == 1);
    eventually("all read after scrolling down", WAIT, || (dm_state().0 == last_seq).then_some(()));

    // Alt-2 opens the second conversation; /go by name and number.
    tmux.key("alice", "M-2");
    tmux.wait("alice", "the group by Alt-2", WAIT, |s| header(s).contains("Team · 3 members"));
    tmux.type_text("alice", "/go @bob");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the DM by /go @bob", WAIT, |s| header(s).contains("@bob"));
    tmux.type_text("alice", "/go 2");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the group by /go 2", WAIT, |s| header(s).contains("Team · 3 members"));

    // Group commands (alice is the owner).
    tmux.type_text("alice", "/role @bob admin");
    tmux.key("alice", "Enter");
    tmux.wait_for("alice", "* alice made bob admin");
    tmux.type_text("alice", "/rename Team two");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the new title", WAIT, |s| {
        s.contains("* alice renamed the group to \"Team two\"") && header(s).contains("Team two")
    });
    tmux.type_text("alice", "/members");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the member list", WAIT, |s| {
        s.lines().any(|l| l.contains("members: ") && l.contains("alice (owner)") && l.contains("bob (admin)"))
    });
    tmux.type_text("alice", "/go team");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "/go by a title prefix", WAIT, |s| header(s).contains("Team two"));

    // Tab completes commands and members' names.
    tmux.type_text("alice", "/ro");
    tmux.key("alice", "Tab");
    tmux.wait("alice", "a completed command", WAIT, |s| input_line(s).trim_end() == "> /role");
    tmux.key("alice", "C-u");
    tmux.type_text("alice", "hi @ca");
    tmux.key("alice", "Tab");
    tmux.wait("alice", "a completed name", WAIT, |s| input_line(s).trim_end() == "> hi @carol");
    tmux.type_text("alice", "see you");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the completed message", WAIT, |s| line_of(s, "hi @carol see you").contains("alice │"));

    // A mention of alice stands out; group receipts say who read how far.
    bob.run(&["send", &gid, "@alice look at this"], "");
    tmux.wait("alice", "the mention", WAIT, |s| shown(s, "@alice look at this") == 1);
    let styled = tmux.tmux(&["capture-pane", "-p", "-e", "-t", "alice"]);
    let mention = styled.lines().find(|l| l.contains("look at this")).unwrap();
    // Between the column rule and "@alice" there are only escapes.
    let before = &mention[..mention.find("@alice").unwrap()];
    let sgr = before.rsplit('│').next().unwrap_or("");
    assert!(sgr.contains("43") || sgr.contains("48;5;3"), "yellow behind @alice: {mention:?}");
    carol.run(&["read", &gid], "");
    tmux.wait("alice", "the read receipts", WAIT, |s| {
        let at = s.lines().position(|l| is_body(l, "@alice look at this"));
        at.is_some_and(|i| s.lines().nth(i + 1).is_some_and(|l| l.trim_end().ends_with("│ ✓ read by bob, carol")))
    });

    // An unknown command is refused and leaves the input empty: the next
    // line is a message of its own. The next success clears the notice.
    tmux.type_text("alice", "/frobnicate");
    tmux.key("alice", "Enter");
    let a = tmux.wait("alice", "the refusal", WAIT, |s| status(s).contains("unknown command /frobnicate"));
    assert!(input_line(&a).contains("message Team two"), "the input is empty again:\n{a}");
    tmux.type_text("alice", "after the unknown command");
    tmux.key("alice", "Enter");
    tmux.wait("alice", "the next message", WAIT, |s| line_of(s, "after the unknown command").contains("alice │"));
    let a = tmux.wait("alice", "the notice cleared", Duration::from_secs(5), |s| !status(s).contains("unknown"));
    assert!(!a.contains("/frobnicate"), "{a}");

    // A tiny window says what it needs, and the UI comes back.
    tmux.tmux(&["resize-window", "-t", "alice", "-x", "15", "-y", "4"]);
    tmux.wait("alice", "too small", WAIT, |s| words(s).contains("window too small (need at least 20×6)"));
    tmux.tmux(&["resize-window", "-t", "alice", "-x", "80", "-y", "24"]);
    tmux.wait("alice", "the UI again", WAIT, |s| status(s).contains("● connected") && s.lines().count() == 24);

    // Revoked from the laptop: the pane says so in words, stops trying and
    // queues nothing.
    let devices = laptop.json(&["devices"]);
    let chat_device = devices.iter().find(|d| d["current"] == false).unwrap()["device_id"].as_u64().unwrap();
    laptop.run(&["revoke", &chat_device.to_string()], "");
    tmux.wait("alice", "signed out", WAIT, |s| {
        status(s).contains("this device was signed out; log in again with `confab login`")
    });
    tmux.type_text("alice", "after the revoke");
    tmux.key("alice", "Enter");
    let a = tmux.wait("alice", "the send refused", WAIT, |s| status(s).contains("not sent: signed out"));
    assert!(!a.contains("waiting for the connection") && shown(&a, "after the revoke") == 0, "{a}");
    assert!(input_line(&a).contains("after the revoke"), "kept in the input:\n{a}");
    assert!(!status(&a).contains("reconnecting") && !a.contains("INVALID_TOKEN"), "{a}");

    tmux.key("alice", "C-c");
    let deadline = Instant::now() + WAIT;
    while !tmux.everything("alice").contains("chat exited with 0") {
        assert!(Instant::now() < deadline, "the chat did not exit:\n{}", tmux.everything("alice"));
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(server.shutdown());
}
