//! `confab-bench abuse`: the attacks of the security review replayed
//! against a `confabd` with its stock limits (nothing raised), printing
//! the figures the review reported, so a change can be compared with them.
//! Each attack gets a fresh server; attacker and victims use different
//! loopback addresses (127.0.0.x), as they would on the internet.
//!
//! - `login-burst`: 25 bursts of 66 concurrent logins (the password pool
//!   plus its queue on a 2-core box) from 66 addresses, each connection
//!   hung up right after its `Login`: the server's peak RSS and thread
//!   count, its RSS 15 s after the last burst, and how long until the
//!   memory is given back. (The review saw 11 → 6,757 MiB.)
//! - `guesses`: bursts of 40, 100 and 200 concurrent wrong passwords for
//!   one account from one address: how many were checked. (The review saw
//!   every one of 40 checked, and 66 of 100–200, against a budget of 5.)
//! - `login-flood`: one account logging in over 80 connections from one
//!   address as fast as answers come, for 15 s, while 21 users on another
//!   address log in once each, 0.7 s apart: how many of them got in, and
//!   how many logins the flood got. (The review: 764 logins; the victim
//!   refused 20 of 21 times.)
//! - `group-flood`: one user over 8 sessions creating 100-member groups as
//!   fast as answers come (waiting `retry_after_ms` when refused, so the
//!   flood lasts), for 12 s, while a bystander sends DMs 20 times a
//!   second: groups created, joins, data dir growth, and the bystander's
//!   send latency before and during. (The review: 500–750 groups/s, 608k
//!   joins, the bystander's p50 from 1.5 ms to 149–220 ms.)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::{ErrorCode, framing};
use tokio::task::JoinSet;

use crate::daemon::{Daemon, DaemonOpts, dir_bytes, status_kib};
use crate::load::{Hist, new_hist};
use crate::pipe::{PASSWORD, Pipe};
use crate::report::Row;
use crate::wire::{Connector, Transport};

/// The attacks, by name (`--only`).
pub const ATTACKS: [&str; 4] = ["login-burst", "guesses", "login-flood", "group-flood"];

/// Runs the attacks named in `only` (all when empty) against servers
/// started with `opts` (which should keep the stock limits); returns the rows.
pub async fn run(opts: &DaemonOpts, only: &[String]) -> anyhow::Result<Vec<Row>> {
    for name in only {
        if !ATTACKS.contains(&name.as_str()) {
            bail!("unknown attack {name:?}: choose from {}", ATTACKS.join(", "));
        }
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut rows = Vec::new();
    if wanted("login-burst") {
        eprintln!("login-burst: 25 bursts of 66 logins that hang up …");
        rows.extend(login_bursts(opts).await.context("login-burst")?);
    }
    if wanted("guesses") {
        eprintln!("guesses: concurrent wrong passwords for one account …");
        rows.extend(guesses(opts).await.context("guesses")?);
    }
    if wanted("login-flood") {
        eprintln!("login-flood: one account on 80 connections, 21 users elsewhere …");
        rows.extend(login_flood(opts).await.context("login-flood")?);
    }
    if wanted("group-flood") {
        eprintln!("group-flood: one user creating 100-member groups over 8 sessions …");
        rows.extend(group_flood(opts).await.context("group-flood")?);
    }
    Ok(rows)
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A fresh `confabd` with stock limits, and a way to reach it from any
/// loopback address.
struct Server {
    daemon: Daemon,
    tcp: SocketAddr,
    connector: Connector,
}

impl Server {
    async fn start(opts: &DaemonOpts) -> anyhow::Result<Arc<Server>> {
        let daemon = Daemon::start(opts).await?;
        let tcp = daemon.tcp.context("confabd printed no TCP address")?;
        let connector = Connector::confab(&daemon.fingerprint, 16 * 1024)?;
        Ok(Arc::new(Server { daemon, tcp, connector }))
    }

    /// A handshaken session from 127.0.0.`from`.
    async fn session(&self, from: u8) -> anyhow::Result<Pipe> {
        let wire = self.connector.tcp_from(self.tcp, loopback(from)).await?;
        Pipe::handshake(wire, Transport::Tcp).await
    }

    /// Signs `username` up from 127.0.0.`from` and returns its session.
    async fn signup(&self, from: u8, username: &str) -> anyhow::Result<Pipe> {
        let mut pipe = self.session(from).await?;
        pipe.signup(username).await?;
        Ok(pipe)
    }

    /// A login on a new connection from 127.0.0.`from`: its session when
    /// it succeeded.
    async fn login(&self, from: u8, username: &str, password: &str) -> (Outcome, Option<Pipe>) {
        let mut pipe = match self.session(from).await {
            Ok(p) => p,
            Err(_) => return (Outcome::Failed, None),
        };
        let body = Body::Login(pb::LoginRequest {
            username: username.into(),
            password: password.into(),
            device_name: "abuse".into(),
        });
        match pipe.request(body).await {
            Ok(Reply::AuthOk(_)) => (Outcome::Ok, Some(pipe)),
            Ok(Reply::Error(e)) => (Outcome::Refused(ErrorCode(e.code)), None),
            Ok(_) | Err(_) => (Outcome::Failed, None),
        }
    }

    fn rss_mib(&self) -> f64 {
        status_kib(self.daemon.pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
    }

    fn threads(&self) -> u64 {
        // `Threads:` has no unit, but reads the same way as the KiB fields.
        status_kib(self.daemon.pid, "Threads").unwrap_or(0)
    }

    fn data_bytes(&self) -> u64 {
        self.daemon.data_dir().map(dir_bytes).unwrap_or(0)
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Refused(ErrorCode),
    /// The connection failed or closed without an answer.
    Failed,
}

/// Outcomes counted.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    refused: BTreeMap<String, u64>,
    failed: u64,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Refused(code) => *self.refused.entry(code.to_string()).or_default() += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
    }

    fn count(&self, code: ErrorCode) -> u64 {
        self.refused.get(&code.to_string()).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.ok + self.failed + self.refused.values().sum::<u64>()
    }

    /// "ok 3, RATE_LIMITED (104) 10, failed 1".
    fn summary(&self) -> String {
        let mut parts = vec![format!("ok {}", self.ok)];
        parts.extend(self.refused.iter().map(|(k, v)| format!("{k} {v}")));
        if self.failed > 0 {
            parts.push(format!("no answer {}", self.failed));
        }
        parts.join(", ")
    }
}

/// `Hello` and a `Login`, written back to back.
fn hello_and_login(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (request_id, body) in [
        (1, Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })),
        (
            2,
            Body::Login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
                device_name: "abuse".into(),
            }),
        ),
    ] {
        out.extend_from_slice(&framing::frame_bytes(&pb::ClientFrame { request_id, body: Some(body) }));
    }
    out
}

const BURSTS: usize = 25;
const BURST: u8 = 66;

async fn login_bursts(opts: &DaemonOpts) -> anyhow::Result<Vec<Row>> {
    let server = Server::start(opts).await?;
    let baseline = server.rss_mib();
    let (mut peak, mut peak_threads) = (baseline, server.threads());
    for b in 0..BURSTS {
        let mut burst = JoinSet::new();
        for i in 0..BURST {
            let s = Arc::clone(&server);
            burst.spawn(async move {
                let Ok(mut wire) = s.connector.tcp_from(s.tcp, loopback(10 + i)).await else { return };
                wire.out.extend_from_slice(&hello_and_login(&format!("nobody{b}x{i}"), "wrong password"));
                let _ = wire.flush_all().await;
                // Give the server the frames, then hang up.
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
        while burst.join_next().await.is_some() {}
        // Sample while the burst's checks run.
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            peak = peak.max(server.rss_mib());
            peak_threads = peak_threads.max(server.threads());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after_15s = server.rss_mib();
    // How long until the pool's memory is given back (within 16 MiB of
    // where it started), up to a minute.
    let given_back = loop {
        if server.rss_mib() < baseline + 16.0 {
            break Some(stopped.elapsed());
        }
        if stopped.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let config = format!("{BURSTS} bursts of {BURST} hung-up logins, 66 addresses");
    let mut rows = vec![
        Row::new("login-burst", "confab", format!("{config}: peak RSS"), peak, "MiB"),
        Row::new("login-burst", "confab", format!("{config}: RSS 15 s after"), after_15s, "MiB"),
        Row::new("login-burst", "confab", format!("{config}: peak threads"), peak_threads as f64, "threads"),
    ];
    rows[0].notes.push(format!("RSS at start {baseline:.0} MiB"));
    rows[1].notes.push(match given_back {
        Some(d) => format!("back within 16 MiB of the start {:.1} s after the last burst", d.as_secs_f64()),
        None => "not given back within 60 s".into(),
    });
    Ok(rows)
}

async fn guesses(opts: &DaemonOpts) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for n in [40usize, 100, 200] {
        let server = Server::start(opts).await?;
        drop(server.signup(2, "bob").await?);
        let mut burst = JoinSet::new();
        for i in 0..n {
            let s = Arc::clone(&server);
            burst.spawn(async move { s.login(3, "bob", &format!("guess-{i}")).await.0 });
        }
        let mut tally = Tally::default();
        while let Some(o) = burst.join_next().await {
            tally.add(o.context("a guess panicked")?);
        }
        let checked = tally.count(ErrorCode::INVALID_CREDENTIALS) + tally.ok;
        let mut row = Row::new(
            "guesses",
            "confab",
            format!("{n} concurrent wrong passwords, one account, one address: checked"),
            checked as f64,
            "checks",
        );
        row.notes.push(tally.summary());
        rows.push(row);
    }
    Ok(rows)
}

const FLOOD_CONNECTIONS: usize = 80;
const VICTIMS: usize = 21;

async fn login_flood(opts: &DaemonOpts) -> anyhow::Result<Vec<Row>> {
    let server = Server::start(opts).await?;
    drop(server.signup(2, "mallory").await?);
    for k in 0..VICTIMS {
        drop(server.signup(3, &format!("victim{k}")).await?);
    }
    let started = Instant::now();
    let stop = started + Duration::from_secs(15);
    let mut flood = JoinSet::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let s = Arc::clone(&server);
        flood.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < stop {
                tally.add(s.login(2, "mallory", PASSWORD).await.0);
            }
            tally
        });
    }
    let mut victims = Tally::default();
    let mut latency = new_hist()?;
    for k in 0..VICTIMS {
        tokio::time::sleep_until((started + Duration::from_millis(700 * k as u64)).into()).await;
        let t0 = Instant::now();
        let (outcome, _) = server.login(4, &format!("victim{k}"), PASSWORD).await;
        latency.saturating_record(t0.elapsed().as_micros() as u64);
        victims.add(outcome);
    }
    let mut attacker = Tally::default();
    while let Some(t) = flood.join_next().await {
        attacker.merge(t.context("a flood task panicked")?);
    }
    let mut victim_row = Row::new(
        "login-flood",
        "confab",
        format!("{VICTIMS} users logging in on another address during the flood: got in"),
        victims.ok as f64,
        "logins",
    );
    victim_row.notes.push(victims.summary());
    victim_row.lat = Some(latency);
    let mut attacker_row = Row::new(
        "login-flood",
        "confab",
        format!("one account, {FLOOD_CONNECTIONS} connections, one address, 15 s: logins accepted"),
        attacker.ok as f64,
        "logins",
    );
    attacker_row.notes.push(format!("{} attempts: {}", attacker.total(), attacker.summary()));
    Ok(vec![victim_row, attacker_row])
}

const TARGETS: usize = 120;
const ATTACK_SESSIONS: usize = 8;

/// The bystander's pace: one DM every 50 ms, each waiting for its `Sent`.
async fn bystander(pipe: &mut Pipe, conversation_id: u64, tag: &str, until: Instant) -> anyhow::Result<Hist> {
    let mut hist = new_hist()?;
    let mut n = 0u64;
    let mut next = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep_until(next.into()).await;
        next += Duration::from_millis(50);
        n += 1;
        let t0 = Instant::now();
        let body = Body::Send(pb::SendRequest {
            conversation_id,
            client_msg_id: format!("{tag}-{n}"),
            text: format!("bystander {tag} {n}"),
        });
        match pipe.request(body).await? {
            Reply::Sent(_) => hist.saturating_record(t0.elapsed().as_micros() as u64),
            other => bail!("the bystander's send was answered {other:?}"),
        }
    }
    Ok(hist)
}

async fn group_flood(opts: &DaemonOpts) -> anyhow::Result<Vec<Row>> {
    let server = Server::start(opts).await?;
    // 120 people to add, signed up from three addresses (the signup limit
    // is per address).
    let mut signups = JoinSet::new();
    for a in 0..3u8 {
        let s = Arc::clone(&server);
        signups.spawn(async move {
            for i in (a as usize..TARGETS).step_by(3) {
                drop(s.signup(20 + a, &format!("tgt{i:03}")).await?);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = signups.join_next().await {
        r.context("a signup task panicked")??;
    }
    let mut ann = server.signup(4, "ann").await?;
    drop(server.signup(4, "ben").await?);
    let dm = match ann.call(Body::OpenDirect(pb::OpenDirectRequest { username: "ben".into() })).await? {
        Reply::Conversation(c) => c.conversation_id,
        other => bail!("open direct: unexpected {other:?}"),
    };
    // Mallory's sessions: one from signup, the others by login.
    let mut mallory = vec![server.signup(2, "mallory").await?];
    while mallory.len() < ATTACK_SESSIONS {
        match server.login(2, "mallory", PASSWORD).await {
            (Outcome::Ok, Some(p)) => mallory.push(p),
            (o, _) => bail!("mallory's login: {o:?}"),
        }
    }
    let before = bystander(&mut ann, dm, "before", Instant::now() + Duration::from_secs(5)).await?;
    let bytes_before = server.data_bytes();
    let started = Instant::now();
    let stop = started + Duration::from_secs(12);
    let mut flood = JoinSet::new();
    for (s, mut pipe) in mallory.into_iter().enumerate() {
        flood.spawn(async move {
            let mut tally = Tally::default();
            let mut created: Vec<Vec<usize>> = Vec::new();
            let mut k = s;
            while Instant::now() < stop {
                let members: Vec<usize> = (0..99).map(|j| (k + j) % TARGETS).collect();
                k += ATTACK_SESSIONS;
                let body = Body::CreateGroup(pb::CreateGroupRequest {
                    title: format!("spam {s}-{k}"),
                    usernames: members.iter().map(|m| format!("tgt{m:03}")).collect(),
                });
                match pipe.request(body).await {
                    Ok(Reply::Conversation(_)) => {
                        tally.add(Outcome::Ok);
                        created.push(members);
                    }
                    Ok(Reply::Error(e)) => {
                        tally.add(Outcome::Refused(ErrorCode(e.code)));
                        // A patient attacker waits as told, so that the
                        // server never cuts it off and the flood lasts.
                        let wait = Duration::from_millis(e.retry_after_ms.min(1_000));
                        let left = stop.saturating_duration_since(Instant::now());
                        tokio::time::sleep(wait.min(left)).await;
                    }
                    Ok(_) => tally.add(Outcome::Failed),
                    Err(_) => {
                        // The server ended the session (too many refusals
                        // in a row): this attacker is done.
                        tally.add(Outcome::Failed);
                        return (tally, created, Some(started.elapsed()));
                    }
                }
            }
            (tally, created, None)
        });
    }
    let during = bystander(&mut ann, dm, "during", stop).await?;
    let mut attacker = Tally::default();
    let mut groups_of = vec![0u64; TARGETS];
    let mut cut_off = Vec::new();
    while let Some(r) = flood.join_next().await {
        let (tally, created, ended) = r.context("a flood task panicked")?;
        attacker.merge(tally);
        cut_off.extend(ended);
        for members in created {
            for m in members {
                if let Some(g) = groups_of.get_mut(m) {
                    *g += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let growth_mib = server.data_bytes().saturating_sub(bytes_before) as f64 / (1024.0 * 1024.0);
    let joins = attacker.ok * 100;
    let mut groups = Row::new(
        "group-flood",
        "confab",
        format!("one user, {ATTACK_SESSIONS} sessions, 100-member groups, 12 s: groups created"),
        attacker.ok as f64,
        "groups",
    );
    groups.notes.push(format!("{} requests: {}", attacker.total(), attacker.summary()));
    groups.notes.push(format!(
        "{joins} joins; the most groups one person was put in: {}; data dir +{growth_mib:.1} MiB in {elapsed:.1} s",
        groups_of.iter().max().copied().unwrap_or(0)
    ));
    cut_off.sort();
    groups.notes.push(match (cut_off.first(), cut_off.last()) {
        (Some(first), Some(last)) => format!(
            "the server cut off {} of the {ATTACK_SESSIONS} sessions, {:.1}-{:.1} s in (the attacker waits retry_after_ms)",
            cut_off.len(),
            first.as_secs_f64(),
            last.as_secs_f64()
        ),
        _ => format!("all {ATTACK_SESSIONS} sessions kept up the flood for the whole 12 s (waiting retry_after_ms)"),
    });
    let bystander_row = |when: &str, hist: Hist| {
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let mut row =
            Row::new("group-flood", "confab", format!("bystander DM send, 20/s, {when}: p99"), ms(0.99), "ms");
        row.notes.push(format!("p50 {:.2} ms", ms(0.5)));
        row.lat = Some(hist);
        row
    };
    let quiet = bystander_row("before the flood", before);
    let loud = bystander_row("during the flood", during);
    Ok(vec![groups, quiet, loud])
}
