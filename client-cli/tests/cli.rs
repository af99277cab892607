//! The `confab` binary against a real server: two profiles exchange
//! messages over QUIC and TCP, the cursor survives client restarts, groups
//! and presence work from the command line, and failures exit non-zero with
//! the server's error code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use confab_server::config::Config;
use confab_server::server::Server;
use serde_json::Value;

struct Cli<'a> {
    server: String,
    cert: &'a Path,
}

impl Cli<'_> {
    fn run(&self, profile: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
        cmd.arg("--server").arg(&self.server).arg("--profile").arg(profile).arg("--trust-cert").arg(self.cert);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, profile: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(profile, args, stdin);
        assert!(out.status.success(), "confab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, profile: &Path, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(profile, &all, None).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A server on 127.0.0.1, port 0 on every transport, data under `dir`.
fn config(dir: &Path) -> Config {
    let local = "127.0.0.1:0".parse().unwrap();
    Config { data_dir: dir.join("data"), quic: Some(local), tcp: Some(local), http: Some(local), ..Config::default() }
}

#[test]
fn two_profiles_chat_from_the_command_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config { presence_grace_ms: 100, ..config(dir.path()) };
    let server = rt.block_on(Server::start(config)).unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    // QUIC and TCP listen on different ports here; pick per transport.
    let quic = Cli { server: server.quic_addr().unwrap().to_string(), cert: server.cert_path() };
    let tcp = Cli { server: server.tcp_addr().unwrap().to_string(), cert: server.cert_path() };

    assert!(
        quic.ok(&alice, &["signup", "alice", "--password-stdin"], Some("alice-password\n"))
            .contains("signed up as alice")
    );
    tcp.ok(&bob, &["--transport", "tcp", "signup", "Bob", "--password-stdin"], Some("bob-password\n"));

    let sent = quic.json(&alice, &["send", "@bob", "hello bob, over QUIC"]);
    assert_eq!(sent[0]["seq"], 1);
    let conv = sent[0]["conversation_id"].as_u64().unwrap();
    let long = "x".repeat(5000);
    tcp.ok(&bob, &["--transport", "tcp", "send", &conv.to_string(), "-"], Some(&long));

    // Bob's sync prints what he missed, then advances the stored cursor: a
    // second run (a new process) prints nothing new.
    let events = tcp.json(&bob, &["--transport", "tcp", "sync"]);
    let bodies: Vec<&str> = events.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, ["hello bob, over QUIC", long.as_str()]);
    assert_eq!(events.iter().filter(|e| e["sender"] == "alice").count(), 1);
    assert!(tcp.json(&bob, &["--transport", "tcp", "sync"]).is_empty(), "cursor persisted");
    quic.ok(&alice, &["send", "@bob", "one more"], None);
    let again = tcp.json(&bob, &["--transport", "tcp", "sync"]);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["body"], "one more");

    let history = quic.json(&alice, &["history", "@bob"]);
    assert_eq!(history.iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    let convs = tcp.json(&bob, &["--transport", "tcp", "conversations"]);
    assert_eq!(convs[0]["name"], "@alice");
    assert_eq!(convs[0]["unread"], 1, "only seq 3: bob's own message at seq 2 moved his read marker");

    // Groups.
    let g = quic.json(&alice, &["group", "create", "Team", "@bob"]);
    let gid = g[0]["conversation_id"].as_u64().unwrap().to_string();
    tcp.ok(&bob, &["--transport", "tcp", "send", &gid, "hi team"], None);
    let members = quic.json(&alice, &["group", "members", &gid]);
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["role"], "owner");
    quic.ok(&alice, &["group", "rename", &gid, "The Team"], None);
    // Bob's last command ended; once the grace period (100 ms) is over he
    // shows as offline, with when he was last seen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let presence = loop {
        let presence = quic.json(&alice, &["presence", "@bob"]);
        if presence[0]["presence"]["state"] == "offline" {
            break presence;
        }
        assert_eq!(presence[0]["presence"]["state"], "online", "{presence:?}");
        assert!(Instant::now() < deadline, "bob still shows online: {presence:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(presence[0]["presence"]["last_seen_ms"].as_i64().unwrap() > 0);

    // Failures: exit 1 with the server's code; exit 3 when unreachable.
    let out = quic.run(&alice, &["send", "@nobody", "hi"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("USER_NOT_FOUND (310)"));
    let out = tcp.run(&bob, &["--transport", "tcp", "group", "rename", &gid, "mine"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"));
    let out = quic.run(&alice, &["send", &gid, &"y".repeat(100_001)], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("MESSAGE_TOO_LONG"));
    let nowhere = Cli { server: "127.0.0.1:1".into(), cert: server.cert_path() };
    assert_eq!(nowhere.run(&alice, &["--transport", "tcp", "whoami"], None).status.code(), Some(3));
    let out = quic.run(&dir.path().join("nobody"), &["whoami"], None);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"));

    // Logout forgets the token; the server no longer accepts it.
    quic.ok(&alice, &["logout"], None);
    assert_eq!(quic.run(&alice, &["whoami"], None).status.code(), Some(3));
    rt.block_on(server.shutdown());
}

/// `--discover URL` asks the server's /v1/discover where to connect (the
/// given --server is not even reachable), on signup and on later commands,
/// which remember it.
#[test]
fn discovery_picks_the_node_to_connect_to() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = rt.block_on(Server::start(config)).unwrap();
    let url = format!("http://{}", server.http_addr().unwrap());
    // Nothing listens on port 9 of 127.0.0.1 (discard): only discovery can
    // find the server.
    let nowhere = Cli { server: "127.0.0.1:9".into(), cert: server.cert_path() };
    let alice = dir.path().join("alice");
    let out = nowhere.ok(
        &alice,
        &["--discover", &url, "--transport", "tcp", "signup", "alice", "--password-stdin"],
        Some("alice-password\n"),
    );
    assert!(out.contains("signed up as alice"), "{out}");
    let profile: Value = serde_json::from_str(&std::fs::read_to_string(alice.join("profile.json")).unwrap()).unwrap();
    assert_eq!(profile["server"], server.tcp_addr().unwrap().to_string());
    assert_eq!(profile["discover"], url.as_str());
    // The nodes the answer listed are kept, to ask when that URL is gone.
    assert_eq!(profile["discover_nodes"], serde_json::json!([url.as_str()]));
    // A later command without --server asks again (the remembered URL):
    // even with the stored server made unreachable, it finds the node.
    let mut stored = profile.clone();
    stored["server"] = "127.0.0.1:9".into();
    std::fs::write(alice.join("profile.json"), stored.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.args(["--profile", alice.to_str().unwrap(), "--trust-cert", server.cert_path().to_str().unwrap()]);
    let out = cmd.args(["--transport", "tcp", "whoami"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&server.tcp_addr().unwrap().to_string()), "{said}");
    // The remembered URL gone too (its node died): a node the last answer
    // listed is asked instead (spec §2.5: "of any node it knows").
    stored["discover"] = "http://127.0.0.1:9".into();
    std::fs::write(alice.join("profile.json"), stored.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.args(["--profile", alice.to_str().unwrap(), "--trust-cert", server.cert_path().to_str().unwrap()]);
    let out = cmd.args(["--transport", "tcp", "whoami"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&server.tcp_addr().unwrap().to_string()));
    // With no node known but the dead one, the error names what was asked.
    stored["discover_nodes"] = serde_json::json!([]);
    std::fs::write(alice.join("profile.json"), stored.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.args(["--profile", alice.to_str().unwrap(), "--trust-cert", server.cert_path().to_str().unwrap()]);
    let out = cmd.args(["--transport", "tcp", "whoami"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http://127.0.0.1:9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A URL that is not a discovery endpoint is a clear error.
    let bad = nowhere.run(&alice, &["--discover", "https://127.0.0.1:1", "--transport", "tcp", "whoami"], None);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("plain HTTP address"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    rt.block_on(server.shutdown());
}

/// Pointing the client at the wrong kind of port, or at nothing, says what
/// to do next instead of a parser's complaint, and QUIC to a port where
/// nothing listens fails in seconds, not after the 10 s timeout.
#[test]
fn the_wrong_port_or_no_server_says_what_to_do() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(Server::start(config(dir.path()))).unwrap();
    let profile = dir.path().join("p");
    let run = |server_addr: String, transport: &str| {
        let cli = Cli { server: server_addr, cert: server.cert_path() };
        let started = Instant::now();
        let out = cli.run(
            &profile,
            &["--transport", transport, "signup", "wanda", "--password-stdin"],
            Some("wanda-password\n"),
        );
        assert!(!out.status.success());
        (String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
    };
    // WebSocket to the TCP+TLS port.
    let (said, _) = run(server.tcp_addr().unwrap().to_string(), "ws");
    assert!(said.contains("This port speaks TCP+TLS") && said.contains("--transport tcp"), "{said}");
    // TCP+TLS to the HTTP port.
    let (said, _) = run(server.http_addr().unwrap().to_string(), "tcp");
    assert!(said.contains("did not answer in TLS") && said.contains("--transport ws"), "{said}");
    // Nothing at all: a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (said, _) = run(free.clone(), "tcp");
    assert!(said.contains("nothing listens there"), "{said}");
    let (said, took) = run(free, "quic");
    assert!(said.contains("nothing listens there"), "{said}");
    assert!(took < Duration::from_secs(6), "QUIC to nothing took {took:?}");
    rt.block_on(server.shutdown());
}

/// A server whose certificate is not the pinned one: the client says
/// which it got, which it expected and what to do, and does not retry.
#[test]
fn a_changed_certificate_is_reported_once_with_what_to_do() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(Server::start(config(dir.path()))).unwrap();
    let profile = dir.path().join("p");
    let addr = server.tcp_addr().unwrap().to_string();
    let confab = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
        cmd.args(["--profile", profile.to_str().unwrap(), "--server", &addr, "--transport", "tcp"]).args(args);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // Trust on first use, then the pin no longer matches.
    let out = confab(&["signup", "carl", "--password-stdin"], "carl-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = profile.join("profile.json");
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    p["known_servers"][&addr] = "00".repeat(32).into();
    std::fs::write(&path, p.to_string()).unwrap();
    let out = confab(&["send", "@carl", "hello"], "");
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("presented certificate sha256:{}", server.fingerprint())), "{said}");
    assert!(said.contains(&format!("trusts sha256:{}", "00".repeat(32))) && said.contains("--trust-cert"), "{said}");
    assert!(!said.contains("retrying"), "a pin mismatch is not retried: {said}");
    rt.block_on(server.shutdown());
}

#[test]
fn completions_and_manual_page_come_from_the_flags() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_confab")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_confab()") && bash.contains("--transport") && bash.contains("webhook"), "{bash}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c confab"), "{fish}");
    let man = run(&["manpage"]);
    assert!(man.contains(".TH confab 1") && man.contains("Command\\-line client for Confab"), "{man}");
}

/// `confab push webhook URL` registers this device's webhook and prints the
/// secret notices are signed with; `confab push off` removes it; a URL the
/// server does not take is the server's refusal (exit 1).
#[test]
fn push_webhooks_from_the_command_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.push.allow_http = true;
    config.push.allow_private_addresses = true;
    let server = rt.block_on(Server::start(config)).unwrap();
    let cli = Cli { server: server.quic_addr().unwrap().to_string(), cert: server.cert_path() };
    let p = dir.path().join("p");
    cli.ok(&p, &["signup", "una", "--password-stdin"], Some("una-password\n"));
    let out = cli.json(&p, &["push", "webhook", "http://127.0.0.1:9/up/una"]);
    assert_eq!(out[0]["webhook"], "http://127.0.0.1:9/up/una");
    let secret = out[0]["secret_hex"].as_str().unwrap();
    assert_eq!(secret.len(), 64, "a 32-byte HMAC key: {secret}");
    let again = cli.json(&p, &["push", "webhook", "http://127.0.0.1:9/up/una"]);
    assert_ne!(again[0]["secret_hex"].as_str().unwrap(), secret, "a new registration, a new secret");
    assert!(cli.ok(&p, &["push", "off"], None).contains("no more push notifications"));
    let bad = cli.run(&p, &["push", "webhook", "ftp://example.com/x"], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("INVALID_ARGUMENT"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    rt.block_on(server.shutdown());
}

/// A profile.json that is not a profile: the message names the file and
/// says how to start over (a local failure, exit 3), and following that
/// advice works.
#[test]
fn a_corrupt_profile_names_the_file_and_how_to_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p");
    std::fs::create_dir_all(&profile).unwrap();
    let file = profile.join("profile.json");
    let corrupt = "{\"server\": \"127.0.0.1:7443\", \"token\": \"abc";
    std::fs::write(&file, corrupt).unwrap();
    let whoami = || Command::new(env!("CARGO_BIN_EXE_confab")).arg("--profile").arg(&profile).arg("whoami").output();
    let out = whoami().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{}: not a valid profile", file.display())), "{said}");
    assert!(said.contains("Move it away (or delete it) to start a fresh one"), "{said}");
    assert!(said.contains("log in again"), "{said}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), corrupt, "the file is left for the user to look at");
    std::fs::rename(&file, profile.join("profile.json.broken")).unwrap();
    let out = whoami().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not logged in: run `confab login USER`"), "a fresh profile: {said}");
}

/// A password that is not there (no terminal and nothing on stdin) or not
/// the same twice is a usage error (exit 2) that says how to give it, found
/// before anything connects: nothing listens at the address given, and no
/// profile is written.
#[test]
fn a_password_not_given_or_not_the_same_twice_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p");
    let nowhere = Cli { server: "127.0.0.1:9".into(), cert: &dir.path().join("no-cert.pem") };
    let cases: [(&[&str], Option<&str>, &[&str]); 5] = [
        (
            &["signup", "nina"],
            None,
            &[
                "no password: there is no terminal to ask on and stdin has nothing to read",
                "printf '%s\\n' \"$PASSWORD\" | confab signup NAME --password-stdin",
            ],
        ),
        (&["login", "nina"], Some(""), &["no terminal to ask on", "| confab login NAME --password-stdin"]),
        (&["signup", "nina"], Some("nina-password\nnina-passw0rd\n"), &["passwords do not match"]),
        (&["signup", "nina"], Some("nina-password\n"), &["asked for twice", "once with --password-stdin"]),
        (&["signup", "nina", "--password-stdin"], None, &["--password-stdin reads it from stdin"]),
    ];
    for (args, stdin, says) in cases {
        let out = nowhere.run(&profile, args, stdin);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "confab {args:?} with stdin {stdin:?}: {said}");
        for s in says {
            assert!(said.contains(s), "confab {args:?} with stdin {stdin:?} does not say {s:?}: {said}");
        }
        assert!(!profile.exists(), "confab {args:?} wrote a profile");
    }
}

/// `read @user` marks the direct conversation with that user read (all of
/// it, or up to a seq); a conversation that is neither an id nor `@user`,
/// a direct conversation where a group is needed, a role that is not one,
/// a --server without a port and a --discover that is not plain HTTP are
/// usage errors (exit 2), refused before anything is sent; `group role`
/// takes the roles its --help lists.
#[test]
fn read_by_username_and_malformed_arguments() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(Server::start(config(dir.path()))).unwrap();
    let cli = Cli { server: server.quic_addr().unwrap().to_string(), cert: server.cert_path() };
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    cli.ok(&alice, &["signup", "alice", "--password-stdin"], Some("alice-password\n"));
    cli.ok(&bob, &["signup", "bob", "--password-stdin"], Some("bob-password\n"));
    let sent = cli.json(&alice, &["send", "@bob", "one"]);
    let dm = sent[0]["conversation_id"].as_u64().unwrap();
    cli.ok(&alice, &["send", "@bob", "two"], None);

    let read = cli.json(&bob, &["read", "@alice", "1"]);
    assert_eq!((read[0]["conversation_id"].as_u64(), read[0]["read_seq"].as_u64()), (Some(dm), Some(1)), "{read:?}");
    assert_eq!(read[0]["unread"], 1, "{read:?}");
    let said = cli.ok(&bob, &["read", "@Alice"], None);
    assert_eq!(said, format!("conversation {dm}: read up to 2, 0 unread\n"));
    assert_eq!(cli.json(&bob, &["conversations"])[0]["unread"], 0);

    let g = cli.json(&alice, &["group", "create", "Crew", "@bob"]);
    let gid = g[0]["conversation_id"].as_u64().unwrap().to_string();
    let malformed: [(&[&str], &str); 8] = [
        (&["read", "alice"], "'alice' is neither @username nor a conversation id"),
        (&["read", "@"], "'@' is neither @username nor a conversation id"),
        (&["history", "bob"], "'bob' is neither @username nor a conversation id"),
        (&["send", "bob", "hi"], "'bob' is neither @username nor a conversation id"),
        (&["group", "members", "@bob"], "@bob names a direct conversation, not a group"),
        (&["group", "role", &gid, "@bob", "boss"], "[possible values: owner, admin, member]"),
        (&["group", "role", &gid, "@bob"], "<ROLE>"),
        (&["--discover", "https://127.0.0.1:1", "whoami"], "plain HTTP address"),
    ];
    for (args, says) in malformed {
        let out = cli.run(&alice, args, None);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "confab {args:?}: {said}");
        assert!(said.contains(says), "confab {args:?} does not say {says:?}: {said}");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    let out = cmd.arg("--profile").arg(&alice).args(["--server", "localhost", "whoami"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--server without a port: {said}");
    assert!(said.contains("give HOST:PORT"), "{said}");
    // Nothing was sent: the group and the direct conversation are as they were.
    let members = cli.json(&alice, &["group", "members", &gid]);
    assert_eq!(members[1]["user"], "bob");
    assert_eq!(members[1]["role"], "member");
    assert_eq!(cli.json(&alice, &["history", "@bob"]).len(), 2);

    let help = cli.ok(&alice, &["group", "role", "--help"], None);
    assert!(help.contains("Possible values:"), "{help}");
    for role in ["owner", "admin", "member"] {
        assert!(help.contains(&format!("- {role}:")), "{role} is not in the help: {help}");
    }
    // Any case.
    let set = cli.json(&alice, &["group", "role", &gid, "@Bob", "Admin"]);
    assert_eq!(set[0]["role"], "admin", "{set:?}");
    assert_eq!(cli.json(&alice, &["group", "members", &gid])[1]["role"], "admin");
    rt.block_on(server.shutdown());
}

/// `confab search` finds people by the start of their username (any case,
/// '@' optional), leaves out those who chose `confab privacy --search
/// nobody` unless their whole name is typed, and a too-short prefix is the
/// server's refusal (exit 1, INVALID_ARGUMENT).
#[test]
fn search_finds_people_by_the_start_of_their_username() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(Server::start(config(dir.path()))).unwrap();
    let cli = Cli { server: server.quic_addr().unwrap().to_string(), cert: server.cert_path() };
    let profiles: Vec<_> = ["alice", "albert", "alfred", "bob"].iter().map(|n| (n, dir.path().join(n))).collect();
    for (name, profile) in &profiles {
        cli.ok(profile, &["signup", name, "--password-stdin"], Some(&format!("{name}-password\n")));
    }
    let (bob, alfred) = (&profiles[3].1, &profiles[2].1);

    assert_eq!(cli.ok(bob, &["search", "@AL"], None), "@albert\n@alfred\n@alice\n");
    let found = cli.json(bob, &["search", "al", "--limit", "2"]);
    assert_eq!(found[0]["users"], serde_json::json!(["albert", "alfred"]), "{found:?}");
    assert_eq!(found[0]["has_more"], true);
    assert_eq!(cli.ok(bob, &["search", "zz"], None), "nobody found starting with 'zz'\n");

    let set = cli.json(alfred, &["privacy", "--search", "nobody"]);
    assert_eq!(set[0]["search"], "nobody", "{set:?}");
    assert_eq!(set[0]["direct_messages"], "everyone", "{set:?}");
    let shown = cli.ok(alfred, &["privacy"], None);
    assert!(shown.contains("found in search by: your whole username only"), "{shown}");
    assert_eq!(cli.ok(bob, &["search", "al"], None), "@albert\n@alice\n");
    assert_eq!(cli.ok(bob, &["search", "alfred"], None), "@alfred\n");

    let out = cli.run(bob, &["search", "a"], None);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("INVALID_ARGUMENT"), "{said}");
    rt.block_on(server.shutdown());
}
