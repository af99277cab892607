//! `confab-bench restart`: how long confabd takes to serve again after a
//! stop, against the write rate before it and the data it holds.
//!
//! Each round starts confabd on a fresh data dir, sends DMs at a steady
//! rate for a while (paced, `WINDOW` in flight), then stops it — SIGKILL
//! (nothing flushed) or SIGTERM (a clean stop) — and starts it again on the
//! same dir. It measures the time from spawn to the banner (listening) and
//! to the first answered request (a resume and a history page), and the
//! journal left behind. The figures go in bench/README.md.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::ClientEvent;
use serde_json::json;

use crate::daemon::{Daemon, DaemonOpts, dir_bytes};
use crate::pipe::{Pipe, run_tag};
use crate::report::Row;
use crate::wire::{Connector, Transport};

/// Sends in flight at most.
const WINDOW: usize = 64;

/// How a round stops the server.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
}

/// One round's settings.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Messages per second (0: as fast as acks come).
    pub rate: u64,
    /// Seconds of writes before the stop.
    pub seconds: f64,
    /// How it stops.
    pub stop: Stop,
}

/// Journal bytes written under a fjall directory: its `*.jnl` files are
/// sized to 64 MiB up front (sparse), so the blocks count.
fn journal_bytes(db: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(db) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| (m.blocks() * 512).min(m.len()))
        .sum()
}

/// What the writes left: messages acknowledged.
async fn write_for(pipe: &mut Pipe, conversation: u64, rate: u64, seconds: f64) -> anyhow::Result<u64> {
    let text = "x".repeat(crate::load::BODY_LEN);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let (mut sent, mut acked, mut in_flight) = (0u64, 0u64, 0usize);
    while Instant::now() < until || in_flight > 0 {
        let now = Instant::now();
        let allowed = if now >= until {
            sent
        } else if rate == 0 {
            u64::MAX
        } else {
            (now - started).as_secs_f64().mul_add(rate as f64, 1.0) as u64
        };
        while in_flight < WINDOW && sent < allowed {
            pipe.queue(Body::Send(pb::SendRequest {
                conversation_id: conversation,
                client_msg_id: format!("r-{sent}"),
                text: text.clone(),
            }))?;
            sent += 1;
            in_flight += 1;
        }
        // Wake up at least every 5 ms to keep the pace.
        pipe.pump(Some(Instant::now() + Duration::from_millis(5))).await?;
        while let Some(ev) = pipe.poll_event() {
            match ev {
                ClientEvent::Response { body: Reply::Sent(_), .. } => {
                    acked += 1;
                    in_flight -= 1;
                }
                ClientEvent::Response { body: Reply::Error(e), .. } => {
                    bail!("send: {}: {}", confab_protocol::ErrorCode(e.code), e.message)
                }
                ClientEvent::Closed { code, message } => bail!("closed: {code}: {message}"),
                _ => {}
            }
        }
    }
    Ok(acked)
}

/// One round: fresh server, writes, stop, restart. Returns its row.
pub async fn round(opts: &DaemonOpts, r: Round) -> anyhow::Result<Row> {
    let server = Daemon::start(opts).await?;
    let target = server.target();
    let addr = target.addr(Transport::Tcp)?;
    let connector = Connector::confab(&target.fingerprint, 64 * 1024)?;
    let tag = run_tag();
    let (a, b) = (format!("r{tag}a"), format!("r{tag}b"));
    let mut rx = Pipe::connect(&connector, Transport::Tcp, addr).await?;
    rx.signup(&b).await?;
    drop(rx);
    let mut tx = Pipe::connect(&connector, Transport::Tcp, addr).await?;
    let (_, token) = tx.signup(&a).await?;
    let conversation = match tx.call(Body::OpenDirect(pb::OpenDirectRequest { username: b.clone() })).await? {
        Reply::Conversation(c) => c.conversation_id,
        other => bail!("open_direct: unexpected {other:?}"),
    };
    let wrote = Instant::now();
    let acked = write_for(&mut tx, conversation, r.rate, r.seconds).await?;
    let achieved = acked as f64 / wrote.elapsed().as_secs_f64();
    drop(tx);
    let stopping = Instant::now();
    let dir = match r.stop {
        Stop::Kill => server.kill_keep().await?,
        Stop::Term => server.stop_keep().await?,
    };
    let stop_ms = stopping.elapsed().as_secs_f64() * 1e3;
    let journal = journal_bytes(&dir.path().join("db"));
    let db_bytes = dir_bytes(&dir.path().join("db"));
    // The restart: spawn → banner, then the first answered request.
    let spawned = Instant::now();
    let server = Daemon::start_in(opts, dir).await?;
    let listening_ms = spawned.elapsed().as_secs_f64() * 1e3;
    let target = server.target();
    let connector = Connector::confab(&target.fingerprint, 64 * 1024)?;
    let mut pipe = Pipe::connect(&connector, Transport::Tcp, target.addr(Transport::Tcp)?).await?;
    pipe.resume(&token).await?;
    let page = pipe
        .call(Body::History(pb::HistoryRequest { conversation_id: conversation, limit: 1, ..Default::default() }))
        .await?;
    let serving_ms = spawned.elapsed().as_secs_f64() * 1e3;
    let last = match page {
        Reply::HistoryPage(p) => p.messages.first().map_or(0, |m| m.seq),
        other => bail!("history: unexpected {other:?}"),
    };
    server.stop().await;
    let how = match r.stop {
        Stop::Kill => "kill -9",
        Stop::Term => "SIGTERM",
    };
    let rate = if r.rate == 0 { "max".to_string() } else { format!("{}/s", r.rate) };
    let mut row = Row::new(
        "restart",
        "confab",
        format!("{how} after {:.0} s at {rate} ({acked} msgs)", r.seconds),
        serving_ms,
        "ms",
    );
    row.extra = json!({
        "stop": how,
        "rate_asked": r.rate,
        "rate_achieved": achieved,
        "seconds": r.seconds,
        "messages": acked,
        "stop_ms": stop_ms,
        "journal_bytes": journal,
        "db_bytes": db_bytes,
        "listening_ms": listening_ms,
        "serving_ms": serving_ms,
        "last_seq_after": last,
    });
    row.notes.push(format!(
        "listening {listening_ms:.0} ms, serving {serving_ms:.0} ms; journal left {:.1} MiB of {:.1} MiB; \
         {achieved:.0} msgs/s written; stop took {stop_ms:.0} ms",
        journal as f64 / (1 << 20) as f64,
        db_bytes as f64 / (1 << 20) as f64
    ));
    if last < acked {
        row.notes.push(format!("only {last} of {acked} acknowledged messages after the restart"));
    }
    Ok(row)
}

/// Every round of a `restart` run.
pub async fn run(opts: &DaemonOpts, rates: &[u64], seconds: &[f64]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &secs in seconds {
        for &rate in rates {
            for stop in [Stop::Kill, Stop::Term] {
                let r = Round { rate, seconds: secs, stop };
                eprintln!("  restart: {r:?}");
                rows.push(round(opts, r).await.with_context(|| format!("{r:?}"))?);
            }
        }
    }
    Ok(rows)
}
