//! README.md's "Try it" walkthrough, run exactly as written against a fresh
//! server: every `$ confab …` line of its `console` blocks is run with the
//! `confab` binary, and what it prints must be what the README shows.
//!
//! What differs between runs is normalized on both sides: clock times
//! (`11:16:06Z`), the certificate fingerprint, `sent_at_ms` values, the
//! server's address (the README's `127.0.0.1:7443` is the test server's
//! QUIC and TCP address; its HTTP listener is on port 7080 of the same
//! host, where `--transport ws` takes a profile made over QUIC or TCP),
//! and `/tmp/` (a temp dir). Passwords: each `Password:` / `Again:` line the
//! README shows is one line of stdin. HTML comments in the README direct
//! what happens in other terminals:
//! - `<!-- try-it: background NAME COMMAND -->` starts COMMAND and keeps it
//!   running;
//! - `<!-- try-it: output-of NAME -->` before a block: the block shows what
//!   that command printed; its lines must appear in that order (presence
//!   lines may come at any point, and more of them may appear);
//! - `<!-- try-it: wait-presence-grace -->`: wait out the presence grace
//!   period (1 s on the test server; 5 s by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_server::config::Config;
use confab_server::server::Server;

const PASSWORD: &str = "correct horse battery staple";
const GRACE_MS: u64 = 1000;

/// One step of the walkthrough.
#[derive(Debug)]
enum Step {
    /// `$ confab ARGS` and the lines it prints.
    Run {
        args: Vec<String>,
        expect: Vec<String>,
    },
    Background {
        name: String,
        args: Vec<String>,
    },
    OutputOf {
        name: String,
        expect: Vec<String>,
    },
    WaitPresenceGrace,
}

/// The steps of README.md's "Try it" section.
fn steps(readme: &str) -> Vec<Step> {
    let start = readme.find("\n## Try it\n").expect("README.md has no \"## Try it\" section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut steps = Vec::new();
    let mut lines = section.lines();
    let mut output_of: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(d) = line.strip_prefix("<!-- try-it: ").and_then(|l| l.strip_suffix(" -->")) {
            let mut words = d.split_whitespace();
            match words.next() {
                Some("background") => {
                    let name = words.next().expect("background needs a name").to_string();
                    let command: Vec<&str> = words.collect();
                    steps.push(Step::Background { name, args: shell_words(&command.join(" ")) });
                }
                Some("output-of") => output_of = Some(words.next().expect("output-of needs a name").to_string()),
                Some("wait-presence-grace") => steps.push(Step::WaitPresenceGrace),
                other => panic!("unknown try-it directive {other:?}"),
            }
            continue;
        }
        if line != "```console" {
            continue;
        }
        let mut block = Vec::new();
        for l in lines.by_ref() {
            if l == "```" {
                break;
            }
            block.push(l.to_string());
        }
        if let Some(name) = output_of.take() {
            assert!(block.first().is_some_and(|l| l.starts_with("$ ")), "an output-of block starts with its command");
            steps.push(Step::OutputOf { name, expect: block[1..].to_vec() });
            continue;
        }
        for l in block {
            match l.strip_prefix("$ ") {
                Some(command) => steps.push(Step::Run { args: shell_words(command), expect: Vec::new() }),
                None => match steps.last_mut() {
                    Some(Step::Run { expect, .. }) => expect.push(l),
                    _ => panic!("output before any command in a console block: {l}"),
                },
            }
        }
    }
    steps
}

/// Splits a command line as sh would (double quotes only; the README uses
/// no other quoting). The leading `confab` is dropped.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in command.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    assert_eq!(words.first().map(String::as_str), Some("confab"), "not a confab command: {command}");
    words.remove(0);
    words
}

/// Replaces what differs between runs.
fn normalize(line: &str, server: &str, tmp: &str) -> String {
    let line = line.replace(server, "127.0.0.1:7443").replace(tmp, "/tmp/");
    let mut out = String::with_capacity(line.len());
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // HH:MM:SSZ
        if i + 9 <= b.len()
            && b[i..i + 8]
                .iter()
                .enumerate()
                .all(|(k, c)| if k == 2 || k == 5 { *c == b':' } else { c.is_ascii_digit() })
            && b[i + 8] == b'Z'
        {
            out.push_str("HH:MM:SSZ");
            i += 9;
            continue;
        }
        if line[i..].starts_with("sha256:") {
            let hex = line[i + 7..].bytes().take_while(u8::is_ascii_hexdigit).count();
            out.push_str("sha256:FINGERPRINT");
            i += 7 + hex;
            continue;
        }
        if line[i..].starts_with("\"sent_at_ms\":") {
            let digits = line[i + 13..].bytes().take_while(u8::is_ascii_digit).count();
            out.push_str("\"sent_at_ms\":MS");
            i += 13 + digits;
            continue;
        }
        let c = line[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn is_presence(line: &str) -> bool {
    [" is online", " is offline", " is away"].iter().any(|p| line.contains(p))
}

struct Env {
    server: String,
    tmp: tempfile::TempDir,
}

impl Env {
    fn tmp(&self) -> String {
        format!("{}/", self.tmp.path().display())
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
        let tmp = self.tmp();
        cmd.args(args.iter().map(|a| a.replace("/tmp/", &tmp)));
        // Where `confab` connects when neither --server nor the profile
        // names a server (the README's commands rely on the default).
        cmd.env("CONFAB_SERVER", &self.server);
        cmd
    }
}

/// The lines a finished command printed (stderr first: the notes come
/// before the result), normalized.
fn run(env: &Env, args: &[String], passwords: usize) -> Vec<String> {
    let mut child =
        env.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..passwords {
        writeln!(stdin, "{PASSWORD}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "confab {} failed ({}):\n{text}", args.join(" "), out.status);
    text.lines().map(|l| normalize(l, &env.server, &env.tmp())).collect()
}

/// A command left running, and what it printed so far.
struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn background(env: &Env, args: &[String]) -> Background {
    let mut child =
        env.command(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (sink, server, tmp) = (Arc::clone(&lines), env.server.clone(), env.tmp());
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(normalize(&line, &server, &tmp));
        }
    });
    Background { child, lines }
}

/// Whether `actual` shows `expect`: the same lines in the same order,
/// except that presence lines may be anywhere and more of them may appear.
fn shows(actual: &[String], expect: &[String]) -> bool {
    let plain = |v: &[String]| v.iter().filter(|l| !is_presence(l)).cloned().collect::<Vec<_>>();
    let (a, e) = (plain(actual), plain(expect));
    a.len() >= e.len() && a[..e.len()] == e[..] && expect.iter().filter(|l| is_presence(l)).all(|l| actual.contains(l))
}

/// The port a profile made over QUIC or TCP uses for `--transport ws`
/// (the client's default WebSocket port): the README's WebSocket step
/// relies on it, so the test server's HTTP listener is there.
const HTTP_PORT: u16 = 7080;

fn start_server(dir: &std::path::Path) -> (tokio::runtime::Runtime, Server, String) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // QUIC and TCP on one port, as the defaults (7443) have them, and HTTP
    // on 7080 of the same host: 127.0.0.1 if 7080 is free there, else
    // another loopback address (Linux routes all of 127/8 to lo), since a
    // profile keeps its server's host when it changes port for WebSocket.
    let pid = std::process::id();
    for attempt in 0..50u32 {
        let host: std::net::Ipv4Addr = if attempt == 0 {
            [127, 0, 0, 1].into()
        } else {
            [127, 0, (pid % 250) as u8 + 1, attempt as u8 + 1].into()
        };
        if std::net::TcpListener::bind((host, HTTP_PORT)).is_err() {
            eprintln!("{host}:{HTTP_PORT} is taken (or {host} is not usable); trying another loopback address");
            continue;
        }
        let port = std::net::TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port();
        if std::net::UdpSocket::bind((host, port)).is_err() {
            continue;
        }
        let addr = std::net::SocketAddr::from((host, port));
        let config = Config {
            data_dir: dir.to_path_buf(),
            quic: Some(addr),
            tcp: Some(addr),
            http: Some((host, HTTP_PORT).into()),
            presence_grace_ms: GRACE_MS,
            ..Config::default()
        };
        match rt.block_on(Server::start(config)) {
            Ok(server) => return (rt, server, addr.to_string()),
            Err(e) => eprintln!("{addr}: {e}; trying another"),
        }
    }
    panic!(
        "no loopback address with port {HTTP_PORT} free for HTTP and another free for both QUIC and TCP \
         (the README's --transport ws step needs the HTTP listener on {HTTP_PORT})"
    );
}

#[test]
fn the_try_it_walkthrough_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() > 20, "only {} steps found in \"Try it\"", steps.len());
    let data = tempfile::tempdir().unwrap();
    let (rt, server, addr) = start_server(data.path());
    let env = Env { server: addr, tmp: tempfile::tempdir().unwrap() };
    let mut running: HashMap<String, Background> = HashMap::new();
    for step in &steps {
        match step {
            Step::Run { args, expect } => {
                let passwords = expect.iter().filter(|l| *l == "Password:" || *l == "Again:").count();
                let expect: Vec<String> = expect
                    .iter()
                    .filter(|l| *l != "Password:" && *l != "Again:")
                    .map(|l| normalize(l, "127.0.0.1:7443", "/tmp/"))
                    .collect();
                let actual = run(&env, args, passwords);
                assert_eq!(actual, expect, "`confab {}` printed something else", args.join(" "));
            }
            Step::Background { name, args } => {
                running.insert(name.clone(), background(&env, args));
                // Its catch-up and its subscriptions before the next step.
                std::thread::sleep(Duration::from_millis(500));
            }
            Step::OutputOf { name, expect } => {
                let expect: Vec<String> = expect.iter().map(|l| normalize(l, "127.0.0.1:7443", "/tmp/")).collect();
                let bg = running.get(name).unwrap_or_else(|| panic!("no background command {name}"));
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let actual = bg.lines.lock().unwrap().clone();
                    if shows(&actual, &expect) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{name} printed:\n{}\nnot as the README shows:\n{}",
                        actual.join("\n"),
                        expect.join("\n")
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Step::WaitPresenceGrace => std::thread::sleep(Duration::from_millis(GRACE_MS + 1500)),
        }
    }
    drop(running);
    rt.block_on(server.shutdown());
}

#[test]
fn the_parser_reads_commands_outputs_and_directives() {
    let readme = "# x\n\n## Try it\n\n<!-- try-it: background t confab --profile /tmp/a tail -->\n\n```console\n$ confab send @bob \"hi there\"\nsent\n```\n\n<!-- try-it: output-of t -->\n\n```console\n$ confab --profile /tmp/a tail\nline\n```\n\n## Next\n```console\n$ confab nope\n```\n";
    let steps = steps(readme);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(
        matches!(&steps[1], Step::Run { args, expect } if args == &["send", "@bob", "hi there"] && expect == &["sent"])
    );
    assert_eq!(normalize("[1#1] 11:16:06Z a: b", "x", "y"), "[1#1] HH:MM:SSZ a: b");
    assert!(shows(&["a".into(), "bob is online".into(), "b".into()], &["a".into(), "b".into()]));
    assert!(!shows(&["b".into(), "a".into()], &["a".into(), "b".into()]));
}
