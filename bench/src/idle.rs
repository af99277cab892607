//! The `idle` scenario: N authenticated sessions per transport, held open
//! and heartbeating; the server's RSS growth per session (from
//! /proc/PID/status) and the connect + authenticate rate.
//!
//! The figure is the growth from the moment half the sessions are up to
//! the end, per session of that second half: the marginal cost of a
//! session. Growth from before the first session would be lower than that
//! whenever the first sessions land in memory the process already had and
//! freed (the signups' 19 MiB Argon2 buffers stay in glibc's heap once
//! freed); both are in the JSON.
//!
//! Sessions resume the tokens of a few users (a device may have many
//! sessions), so setup does not spend minutes hashing passwords.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::daemon::{Daemon, Meter, status_kib};
use crate::load::{micros, new_hist};
use crate::pipe::{Pipe, Target, run_tag};
use crate::report::Row;
use crate::wire::{Connector, Transport};

/// Connections being set up at once.
const CONNECT_CONCURRENCY: usize = 64;
/// Users whose tokens the sessions resume.
const USERS: usize = 50;
/// How long the sessions are held after the last one connected: more than
/// one heartbeat interval (20 s), so every session has pinged.
const HOLD: Duration = Duration::from_secs(25);

/// Holds `n` sessions on `server` over `transport`.
pub async fn run(server: &Daemon, transport: Transport, n: usize) -> anyhow::Result<Vec<Row>> {
    hold(&server.target(), Some(server.pid), transport, n).await
}

/// Idle sessions held open on one server: authenticated (a token resumed),
/// heartbeating, reading and dropping whatever arrives. Grows on demand;
/// every session is closed when the pool is dropped.
pub struct Pool {
    connector: Arc<Connector>,
    transport: Transport,
    addr: std::net::SocketAddr,
    tokens: Arc<Vec<String>>,
    holders: tokio::task::JoinSet<()>,
    /// Sessions started so far (up or failed).
    started: usize,
    /// Sessions up.
    pub ok: usize,
    /// Sessions that failed to come up.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
}

/// What one [`Pool::grow`] took.
pub struct Growth {
    /// Connect + TLS + Hello + Resume latencies (µs).
    pub hist: crate::load::Hist,
    /// Seconds until every new session was up or had failed.
    pub seconds: f64,
    /// Sessions up among the new ones.
    pub ok: usize,
}

impl Pool {
    /// Signs up the users whose tokens the sessions resume (at most
    /// `USERS`, fewer for a small pool).
    pub async fn new(target: &Target, transport: Transport, users_for: usize) -> anyhow::Result<Pool> {
        let addr = target.addr(transport)?;
        // A small read buffer: these sessions carry almost nothing.
        let connector = Arc::new(Connector::confab(&target.fingerprint, 512)?);
        let tag = run_tag();
        let mut tokens = Vec::with_capacity(USERS);
        for i in 0..USERS.min(users_for.max(1)) {
            let mut p = Pipe::connect(&connector, transport, addr).await?;
            tokens.push(p.signup(&format!("i{tag}-{i}")).await?.1);
        }
        Ok(Pool {
            connector,
            transport,
            addr,
            tokens: Arc::new(tokens),
            holders: tokio::task::JoinSet::new(),
            started: 0,
            ok: 0,
            failed: 0,
            first_error: None,
        })
    }

    /// Opens sessions until `n` were started, `CONNECT_CONCURRENCY` at a
    /// time; returns once each new one is up or failed. `on_up(k)` is
    /// called as the pool's k-th session comes up.
    pub async fn grow(&mut self, n: usize, mut on_up: impl FnMut(usize)) -> anyhow::Result<Growth> {
        let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<u64>>();
        let begin = Instant::now();
        let (transport, addr) = (self.transport, self.addr);
        let new = n.saturating_sub(self.started);
        for i in self.started..n {
            let (connector, tokens, permits, ready) =
                (Arc::clone(&self.connector), Arc::clone(&self.tokens), Arc::clone(&permits), ready_tx.clone());
            self.holders.spawn(async move {
                let permit = permits.acquire_owned().await;
                let t = Instant::now();
                let result = async {
                    let mut p = Pipe::connect(&connector, transport, addr).await?;
                    let token = tokens.get(i % tokens.len()).context("no token")?;
                    p.resume(token).await?;
                    anyhow::Ok(p)
                }
                .await;
                drop(permit);
                let mut pipe = match result {
                    Ok(p) => {
                        let _ = ready.send(Ok(micros(t.elapsed())));
                        p
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                pipe.wire.shrink();
                // Heartbeat until aborted (the session's timer sends pings).
                loop {
                    if pipe.pump(None).await.is_err() {
                        break;
                    }
                    while pipe.poll_event().is_some() {}
                    pipe.wire.shrink();
                }
            });
        }
        self.started = self.started.max(n);
        drop(ready_tx);
        let mut hist = new_hist()?;
        let (mut ok, mut done) = (0usize, 0usize);
        while done < new {
            let Some(r) = ready_rx.recv().await else { break };
            done += 1;
            match r {
                Ok(us) => {
                    ok += 1;
                    self.ok += 1;
                    hist.saturating_record(us);
                    on_up(self.ok);
                }
                Err(e) => {
                    self.failed += 1;
                    self.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        Ok(Growth { hist, seconds: begin.elapsed().as_secs_f64(), ok })
    }

    /// Closes every session.
    pub async fn close(mut self) {
        self.holders.abort_all();
        while self.holders.join_next().await.is_some() {}
    }
}

/// Holds `n` sessions on the server at `target` (its pid for /proc, when
/// known: otherwise no memory figures).
pub async fn hold(target: &Target, pid: Option<u32>, transport: Transport, n: usize) -> anyhow::Result<Vec<Row>> {
    let rss = |pid: Option<u32>| pid.and_then(|p| status_kib(p, "VmRSS")).unwrap_or(0);
    let mut pool = Pool::new(target, transport, n).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(pid);
    let meter = Meter::start(pid);
    // (sessions up, RSS) once half of them are.
    let mut half = None;
    let growth = pool
        .grow(n, |up| {
            if up == n / 2 && n >= 2 {
                half = Some((up, rss(pid)));
            }
        })
        .await?;
    let (ok, failed, hist) = (pool.ok, pool.failed, growth.hist);
    let first_error = pool.first_error.clone();
    let connect_secs = growth.seconds;
    eprintln!("  idle: {ok} {} sessions up in {connect_secs:.1}s ({failed} failed); holding", transport.name());
    let connect_reading = meter.read();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = rss(pid);
    tokio::time::sleep(HOLD).await;
    let held = rss(pid);
    let peak = pid.and_then(|p| status_kib(p, "VmHWM"));
    let per_conn = |rss: u64| rss.saturating_sub(before) as f64 / ok.max(1) as f64;
    // The second half's growth per session of it (see the module doc).
    let marginal = |rss: u64| match half {
        Some((up, at)) if ok > up => rss.saturating_sub(at) as f64 / (ok - up) as f64,
        _ => per_conn(rss),
    };
    let value = marginal(held.max(settled));
    let mut idle = Row::new("idle", "confab", format!("{} N={n}", transport.name()), value, "KiB/conn");
    idle.srv_rss_kib = Some(held);
    idle.extra = json!({
        "connections": ok,
        "failed": failed,
        "rss_before_kib": before,
        "rss_connected_kib": settled,
        "rss_after_heartbeats_kib": held,
        "rss_peak_kib": peak,
        "kib_per_conn_connected": per_conn(settled),
        "kib_per_conn_after_heartbeats": per_conn(held),
        "rss_at_half_kib": half.map(|(_, at)| at),
        "sessions_at_half": half.map(|(up, _)| up),
        "kib_per_conn_second_half": marginal(held.max(settled)),
    });
    if failed > 0 {
        idle.notes.push(format!("{failed} connections failed, first: {}", first_error.unwrap_or_default()));
    }
    let mut connect = Row::new(
        "connect",
        "confab",
        format!("{} N={n} C={CONNECT_CONCURRENCY}", transport.name()),
        ok as f64 / connect_secs,
        "conn/s",
    );
    connect.lat = Some(hist);
    connect.gen_cpu = connect_reading.gen_cpu;
    connect.srv_cpu = connect_reading.srv_cpu;
    connect.notes.push("TCP/QUIC + TLS 1.3 full handshake + Hello + Resume, per second".into());
    pool.close().await;
    Ok(vec![idle, connect])
}
