//! Reads and logins: `sync` (a device offline for K messages catches up),
//! `history` (random pages of 50 over a large store, warm and cold) and
//! `login` (full TLS handshake + token resume, per second).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::ClientEvent;
use serde_json::json;

use crate::daemon::{self, Daemon, DaemonOpts, Meter};
use crate::load::{Hist, micros, new_hist};
use crate::pipe::{Pipe, run_tag};
use crate::report::Row;
use crate::wire::{Connector, Transport};

/// Sends in flight while filling a store.
const FILL_WINDOW: usize = 64;
/// Page size of a catch-up sync (the default `max_page_size`).
const SYNC_PAGE: u32 = 100;
/// Page size of a history read.
const HISTORY_PAGE: u32 = 50;

/// A small deterministic PRNG (xorshift64*), for random page choice.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Sends `count` messages round-robin over `conversations` from `pipe`,
/// `FILL_WINDOW` in flight; returns when all are acked.
async fn fill(pipe: &mut Pipe, conversations: &[u64], count: u64, prefix: &str) -> anyhow::Result<()> {
    let (mut sent, mut acked, mut in_flight) = (0u64, 0u64, 0usize);
    let text = "x".repeat(crate::load::BODY_LEN);
    while acked < count {
        while in_flight < FILL_WINDOW && sent < count {
            let conversation_id = conversations[(sent % conversations.len() as u64) as usize];
            pipe.queue(Body::Send(pb::SendRequest {
                conversation_id,
                client_msg_id: format!("{prefix}-{sent}"),
                text: text.clone(),
            }))?;
            sent += 1;
            in_flight += 1;
        }
        pipe.pump(None).await?;
        while let Some(ev) = pipe.poll_event() {
            match ev {
                ClientEvent::Response { body: Reply::Sent(_), .. } => {
                    acked += 1;
                    in_flight -= 1;
                }
                ClientEvent::Response { body: Reply::Error(e), .. } => {
                    bail!("fill: {}: {}", confab_protocol::ErrorCode(e.code), e.message)
                }
                ClientEvent::Closed { code, message } => bail!("fill: closed: {code}: {message}"),
                _ => {}
            }
        }
    }
    Ok(())
}

async fn open_direct(pipe: &mut Pipe, username: &str) -> anyhow::Result<u64> {
    match pipe.call(Body::OpenDirect(pb::OpenDirectRequest { username: username.into() })).await? {
        Reply::Conversation(c) => Ok(c.conversation_id),
        other => bail!("open_direct: unexpected {other:?}"),
    }
}

/// One catch-up: resume `token`, then page through the inbox from the
/// stored cursor with `window` syncs in flight (the head is known from
/// AuthOk, so pages can be asked for ahead). Returns (events, seconds).
async fn catch_up(
    connector: &Connector,
    transport: Transport,
    addr: std::net::SocketAddr,
    token: &str,
    window: u64,
) -> anyhow::Result<(u64, f64, bool)> {
    let mut pipe = Pipe::connect(connector, transport, addr).await?;
    let t0 = Instant::now();
    let ok = pipe.resume(token).await?;
    let (cursor, head) = (ok.cursor, ok.inbox_head);
    let pages = (head - cursor).div_ceil(u64::from(SYNC_PAGE));
    let mut next_page = 0u64;
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut got: BTreeMap<u64, u64> = BTreeMap::new();
    let mut events = 0u64;
    let mut contiguous = true;
    while (got.len() as u64) < pages {
        while (pending.len() as u64) < window && next_page < pages {
            let after = cursor + next_page * u64::from(SYNC_PAGE);
            let id = pipe.queue(Body::Sync(pb::SyncRequest { after, limit: SYNC_PAGE }))?;
            pending.insert(id, next_page);
            next_page += 1;
        }
        pipe.pump(None).await?;
        while let Some(ev) = pipe.poll_event() {
            match ev {
                ClientEvent::Response { request_id, body: Reply::SyncPage(p) } => {
                    let Some(page) = pending.remove(&request_id) else { continue };
                    let first = cursor + page * u64::from(SYNC_PAGE) + 1;
                    for (i, e) in p.events.iter().enumerate() {
                        if e.inbox_seq != first + i as u64 {
                            contiguous = false;
                        }
                    }
                    events += p.events.len() as u64;
                    got.insert(page, p.events.len() as u64);
                }
                ClientEvent::Response { body: Reply::Error(e), .. } => {
                    bail!("sync: {}: {}", confab_protocol::ErrorCode(e.code), e.message)
                }
                ClientEvent::Closed { code, message } => bail!("sync: closed: {code}: {message}"),
                _ => {}
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((events, secs, contiguous && events == head - cursor))
}

/// The `sync` scenario.
pub async fn sync(server: &Daemon, transport: Transport, k: u64) -> anyhow::Result<Vec<Row>> {
    let target = server.target();
    let addr = target.addr(transport)?;
    let connector = Connector::confab(&target.fingerprint, 64 * 1024)?;
    let tag = run_tag();
    let (a, b) = (format!("s{tag}a"), format!("s{tag}b"));
    let mut rx = Pipe::connect(&connector, transport, addr).await?;
    let (_, token) = rx.signup(&b).await?;
    drop(rx); // the device goes offline
    let mut tx = Pipe::connect(&connector, transport, addr).await?;
    tx.signup(&a).await?;
    let conversation = open_direct(&mut tx, &b).await?;
    let t = Instant::now();
    fill(&mut tx, &[conversation], k, "s").await?;
    eprintln!("  sync: {k} messages stored in {:.1}s", t.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    // The cursor is never acked, so every catch-up starts from the same
    // place: the first is the one right after the writes.
    for window in [1u64, 8] {
        let meter = Meter::start(Some(server.pid));
        let (events, secs, exact) = catch_up(&connector, transport, addr, &token, window).await?;
        let reading = meter.read();
        let mut row = Row::new(
            "sync",
            "confab",
            format!("{} K={k} pages={SYNC_PAGE} window={window}", transport.name()),
            events as f64 / secs,
            "ev/s",
        );
        row.gen_cpu = reading.gen_cpu;
        row.srv_cpu = reading.srv_cpu;
        row.srv_rss_kib = reading.srv_rss_kib;
        row.extra = json!({ "events": events, "seconds": secs, "contiguous_and_complete": exact });
        if !exact {
            row.notes.push("the catch-up was not contiguous or not complete".into());
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Conversations the history store is spread over.
const HISTORY_CONVERSATIONS: usize = 20;
/// Readers with one page request in flight each.
const READERS: usize = 4;

/// What the history readers read.
struct Store<'a> {
    token: &'a str,
    conversations: &'a [u64],
    /// Messages per conversation.
    per: u64,
}

/// Reads `reads` random pages of 50 (before a random seq) over the
/// store's conversations; returns the latencies.
async fn random_pages(
    connector: &Arc<Connector>,
    transport: Transport,
    addr: std::net::SocketAddr,
    store: &Store<'_>,
    reads: usize,
    seed: u64,
) -> anyhow::Result<(Hist, f64)> {
    let (token, conversations, per) = (store.token, store.conversations, store.per);
    let mut set = tokio::task::JoinSet::new();
    let started = Instant::now();
    for r in 0..READERS {
        let (connector, token, conversations) = (Arc::clone(connector), token.to_string(), conversations.to_vec());
        set.spawn(async move {
            let mut pipe = Pipe::connect(&connector, transport, addr).await?;
            pipe.resume(&token).await?;
            let mut rng = Rng::new(seed * 31 + r as u64 + 1);
            let mut hist = new_hist()?;
            for _ in 0..reads / READERS {
                let conversation_id = conversations[rng.below(conversations.len() as u64) as usize];
                let before_seq = u64::from(HISTORY_PAGE) + 1 + rng.below(per.saturating_sub(u64::from(HISTORY_PAGE)));
                let t = Instant::now();
                let body = Body::History(pb::HistoryRequest {
                    conversation_id,
                    before_seq,
                    limit: HISTORY_PAGE,
                    ..Default::default()
                });
                match pipe.call(body).await? {
                    Reply::HistoryPage(p) if p.messages.len() == HISTORY_PAGE as usize => {}
                    Reply::HistoryPage(p) => bail!("history page of {} messages", p.messages.len()),
                    other => bail!("history: unexpected {other:?}"),
                }
                hist.saturating_record(micros(t.elapsed()));
            }
            anyhow::Ok(hist)
        });
    }
    let mut hist = new_hist()?;
    while let Some(h) = set.join_next().await {
        hist.add(&h??).context("merging histograms")?;
    }
    Ok((hist, started.elapsed().as_secs_f64()))
}

/// The `history` scenario: fill, read warm, restart with the page cache
/// dropped, read cold.
pub async fn history(opts: &DaemonOpts, transport: Transport, messages: u64) -> anyhow::Result<Vec<Row>> {
    let server = Daemon::start(opts).await?;
    let target = server.target();
    let addr = target.addr(transport)?;
    let connector = Arc::new(Connector::confab(&target.fingerprint, 64 * 1024)?);
    let tag = run_tag();
    let mut owner = Pipe::connect(&connector, transport, addr).await?;
    let (_, token) = owner.signup(&format!("h{tag}")).await?;
    let mut conversations = Vec::new();
    for i in 0..HISTORY_CONVERSATIONS {
        let mut peer = Pipe::connect(&connector, transport, addr).await?;
        let name = format!("h{tag}-{i}");
        peer.signup(&name).await?;
        conversations.push(open_direct(&mut owner, &name).await?);
    }
    drop(owner);
    let per = messages / HISTORY_CONVERSATIONS as u64;
    let t = Instant::now();
    // Several sessions of the owner fill in parallel, each its own share
    // of the conversations.
    let mut fills = tokio::task::JoinSet::new();
    for (f, chunk) in conversations.chunks(HISTORY_CONVERSATIONS / 4).enumerate() {
        let (connector, token, chunk) = (Arc::clone(&connector), token.clone(), chunk.to_vec());
        fills.spawn(async move {
            let mut p = Pipe::connect(&connector, transport, addr).await?;
            p.resume(&token).await?;
            fill(&mut p, &chunk, per * chunk.len() as u64, &format!("f{f}")).await
        });
    }
    while let Some(r) = fills.join_next().await {
        r??;
    }
    eprintln!("  history: {} messages stored in {:.1}s", per * HISTORY_CONVERSATIONS as u64, t.elapsed().as_secs_f64());
    let reads = 8_000;
    let mut rows = Vec::new();
    let meter = Meter::start(Some(server.pid));
    let store = Store { token: &token, conversations: &conversations, per };
    let (hist, secs) = random_pages(&connector, transport, addr, &store, reads, 1).await?;
    rows.push(history_row(transport, "warm", messages, hist, secs, meter.read()));
    let dir = server.stop_keep().await?;
    let on_disk = crate::daemon::dir_bytes(&dir.path().join("db"));
    let stored = per * HISTORY_CONVERSATIONS as u64;
    if let Some(warm) = rows.first_mut()
        && stored > 0
    {
        warm.notes.push(format!(
            "store on disk after a clean stop: {} bytes per message ({on_disk} bytes for {stored} messages of 100 bytes)",
            on_disk / stored
        ));
        warm.extra["store_bytes_on_disk"] = on_disk.into();
    }
    let dropped = daemon::drop_page_cache();
    let server = Daemon::start_in(opts, dir).await?;
    let target = server.target();
    let connector = Arc::new(Connector::confab(&target.fingerprint, 64 * 1024)?);
    let meter = Meter::start(Some(server.pid));
    let cold_reads = 2_000;
    let result = random_pages(&connector, transport, target.addr(transport)?, &store, cold_reads, 2).await;
    let reading = meter.read();
    server.stop().await;
    let (hist, secs) = result?;
    let mut cold = history_row(transport, "cold", messages, hist, secs, reading);
    cold.notes.push(if dropped {
        "cold: a fresh server process (empty block cache) after the kernel page cache was dropped".into()
    } else {
        "cold: a fresh server process, but the page cache could not be dropped (not root): only half cold".into()
    });
    rows.push(cold);
    Ok(rows)
}

fn history_row(transport: Transport, temp: &str, messages: u64, hist: Hist, secs: f64, r: daemon::Reading) -> Row {
    let reads = hist.len();
    let mut row = Row::new(
        "history",
        "confab",
        format!("{} {temp} M={messages} page={HISTORY_PAGE} C={READERS}", transport.name()),
        reads as f64 / secs,
        "pages/s",
    );
    row.lat = Some(hist);
    row.gen_cpu = r.gen_cpu;
    row.srv_cpu = r.srv_cpu;
    row.srv_rss_kib = r.srv_rss_kib;
    row.extra = json!({ "reads": reads, "seconds": secs });
    row
}

/// Logins at once.
const LOGIN_CONCURRENCY: usize = 16;

/// The `login` scenario: new TCP connection, full TLS 1.3 handshake (no
/// session resumption), Hello, Resume by token, per second.
pub async fn login(server: &Daemon, duration: Duration) -> anyhow::Result<Row> {
    let target = server.target();
    let addr = target.addr(Transport::Tcp)?;
    let base = Connector::confab(&target.fingerprint, 4 * 1024)?;
    let connector = Arc::new(base.without_resumption()?);
    let mut p = Pipe::connect(&connector, Transport::Tcp, addr).await?;
    let (_, token) = p.signup(&format!("l{}", run_tag())).await?;
    drop(p);
    let meter = Meter::start(Some(server.pid));
    let end = Instant::now() + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..LOGIN_CONCURRENCY {
        let (connector, token) = (Arc::clone(&connector), token.clone());
        set.spawn(async move {
            let mut hist = new_hist()?;
            while Instant::now() < end {
                let t = Instant::now();
                let mut p = Pipe::connect(&connector, Transport::Tcp, addr).await?;
                p.resume(&token).await?;
                hist.saturating_record(micros(t.elapsed()));
            }
            anyhow::Ok(hist)
        });
    }
    let mut hist = new_hist()?;
    while let Some(h) = set.join_next().await {
        hist.add(&h??).context("merging histograms")?;
    }
    let reading = meter.read();
    let secs = duration.as_secs_f64();
    let mut row = Row::new(
        "login",
        "confab",
        format!("tcp full-tls+resume C={LOGIN_CONCURRENCY}"),
        hist.len() as f64 / secs,
        "logins/s",
    );
    row.lat = Some(hist);
    row.gen_cpu = reading.gen_cpu;
    row.srv_cpu = reading.srv_cpu;
    row.srv_rss_kib = reading.srv_rss_kib;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stays_in_range_and_varies() {
        let mut r = Rng::new(7);
        let v: Vec<u64> = (0..1000).map(|_| r.below(10)).collect();
        assert!(v.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| v.contains(&d)));
    }
}
