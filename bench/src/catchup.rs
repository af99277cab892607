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
/// A fill that gets no ack for this long fails (the server stalled).
const FILL_STALL: Duration = Duration::from_secs(60);
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
    let mut progress = Instant::now();
    while acked < count {
        if progress.elapsed() > FILL_STALL {
            bail!(
                "fill: no ack for {} s with {in_flight} sends in flight ({acked} of {count} acked): the server stalled",
                FILL_STALL.as_secs()
            );
        }
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
        pipe.pump(Some(Instant::now() + Duration::from_secs(1))).await?;
        while let Some(ev) = pipe.poll_event() {
            match ev {
                ClientEvent::Response { body: Reply::Sent(_), .. } => {
                    acked += 1;
                    in_flight -= 1;
                    progress = Instant::now();
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

/// A device offline while messages pile up in its inbox: one sender, one
/// DM, the receiver's token kept to resume and catch up with. Grows on
/// demand; the cursor is never acked, so every catch-up starts from the
/// first message.
pub struct Backlog {
    connector: Connector,
    transport: Transport,
    addr: std::net::SocketAddr,
    token: String,
    tx: Pipe,
    conversation: u64,
    /// Messages stored so far.
    pub stored: u64,
}

impl Backlog {
    /// Signs up the two users and opens their DM; the receiver goes offline.
    pub async fn new(server: &Daemon, transport: Transport) -> anyhow::Result<Backlog> {
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
        Ok(Backlog { connector, transport, addr, token, tx, conversation, stored: 0 })
    }

    /// Sends until `k` messages are stored; returns the seconds it took.
    pub async fn grow_to(&mut self, k: u64) -> anyhow::Result<f64> {
        let t = Instant::now();
        let more = k.saturating_sub(self.stored);
        fill(&mut self.tx, &[self.conversation], more, &format!("s{}", self.stored)).await?;
        self.stored += more;
        Ok(t.elapsed().as_secs_f64())
    }

    /// One catch-up of the whole backlog with `window` pages in flight,
    /// as a row (the server's CPU and RSS from `pid`).
    pub async fn catch_up_row(&self, pid: u32, window: u64) -> anyhow::Result<Row> {
        let transport = self.transport;
        let meter = Meter::start(Some(pid));
        let (events, secs, exact) = catch_up(&self.connector, transport, self.addr, &self.token, window).await?;
        let reading = meter.read();
        let mut row = Row::new(
            "sync",
            "confab",
            format!("{} K={} pages={SYNC_PAGE} window={window}", transport.name(), self.stored),
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
        Ok(row)
    }
}

/// The `sync` scenario.
pub async fn sync(server: &Daemon, transport: Transport, k: u64) -> anyhow::Result<Vec<Row>> {
    let mut backlog = Backlog::new(server, transport).await?;
    let secs = backlog.grow_to(k).await?;
    eprintln!("  sync: {k} messages stored in {secs:.1}s");
    let mut rows = Vec::new();
    // The first catch-up is the one right after the writes.
    for window in [1u64, 8] {
        rows.push(backlog.catch_up_row(server.pid, window).await?);
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

/// A history store on a running server: one owner with DMs to
/// `HISTORY_CONVERSATIONS` peers, the messages spread evenly over them.
/// Grows on demand; survives a cold restart.
pub struct HistoryStore {
    opts: DaemonOpts,
    server: Option<Daemon>,
    transport: Transport,
    connector: Arc<Connector>,
    token: String,
    conversations: Vec<u64>,
    /// Messages per conversation.
    per: u64,
    fills: u64,
}

impl HistoryStore {
    /// Starts a server and sets the conversations up (empty).
    pub async fn new(opts: &DaemonOpts, transport: Transport) -> anyhow::Result<HistoryStore> {
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
        Ok(HistoryStore {
            opts: opts.clone(),
            server: Some(server),
            transport,
            connector,
            token,
            conversations,
            per: 0,
            fills: 0,
        })
    }

    fn server(&self) -> anyhow::Result<&Daemon> {
        self.server.as_ref().context("the history server is not running")
    }

    /// Messages stored.
    pub fn stored(&self) -> u64 {
        self.per * HISTORY_CONVERSATIONS as u64
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid)
    }

    /// Sends until about `messages` are stored (a multiple of the
    /// conversations); returns the seconds it took.
    pub async fn grow_to(&mut self, messages: u64) -> anyhow::Result<f64> {
        let per = messages / HISTORY_CONVERSATIONS as u64;
        let more = per.saturating_sub(self.per);
        let addr = self.server()?.target().addr(self.transport)?;
        let t = Instant::now();
        // Several sessions of the owner fill in parallel, each its own
        // share of the conversations.
        let mut fills = tokio::task::JoinSet::new();
        for (f, chunk) in self.conversations.chunks(HISTORY_CONVERSATIONS / 4).enumerate() {
            let (connector, token, chunk) = (Arc::clone(&self.connector), self.token.clone(), chunk.to_vec());
            let (transport, prefix) = (self.transport, format!("f{}-{f}", self.fills));
            fills.spawn(async move {
                let mut p = Pipe::connect(&connector, transport, addr).await?;
                p.resume(&token).await?;
                fill(&mut p, &chunk, more * chunk.len() as u64, &prefix).await
            });
        }
        while let Some(r) = fills.join_next().await {
            r??;
        }
        self.fills += 1;
        self.per += more;
        Ok(t.elapsed().as_secs_f64())
    }

    /// `reads` random pages with the store as it is (warm: right after
    /// writing, the server's caches and the page cache full).
    pub async fn warm(&self, reads: usize, seed: u64) -> anyhow::Result<Row> {
        let server = self.server()?;
        let target = server.target();
        let meter = Meter::start(Some(server.pid));
        let store = Store { token: &self.token, conversations: &self.conversations, per: self.per };
        let (hist, secs) =
            random_pages(&self.connector, self.transport, target.addr(self.transport)?, &store, reads, seed).await?;
        Ok(history_row(self.transport, "warm", self.stored(), hist, secs, meter.read()))
    }

    /// Stops the server gracefully, drops the kernel's page cache, starts
    /// a fresh process on the same data and reads `reads` random pages;
    /// the server stays up (cold no more) for further growth. Returns the
    /// row and the store's bytes on disk after the clean stop.
    pub async fn cold(&mut self, reads: usize, seed: u64) -> anyhow::Result<(Row, u64)> {
        let server = self.server.take().context("the history server is not running")?;
        let dir = server.stop_keep().await?;
        let on_disk = crate::daemon::dir_bytes(&dir.path().join("db"));
        let dropped = daemon::drop_page_cache();
        let server = Daemon::start_in(&self.opts, dir).await?;
        let target = server.target();
        self.connector = Arc::new(Connector::confab(&target.fingerprint, 64 * 1024)?);
        let meter = Meter::start(Some(server.pid));
        let store = Store { token: &self.token, conversations: &self.conversations, per: self.per };
        let addr = target.addr(self.transport)?;
        self.server = Some(server);
        let (hist, secs) = random_pages(&self.connector, self.transport, addr, &store, reads, seed).await?;
        let reading = meter.read();
        let mut cold = history_row(self.transport, "cold", self.stored(), hist, secs, reading);
        cold.notes.push(if dropped {
            "cold: a fresh server process (empty block cache) after the kernel page cache was dropped".into()
        } else {
            "cold: a fresh server process, but the page cache could not be dropped (not root): only half cold".into()
        });
        Ok((cold, on_disk))
    }

    /// Stops the server (the data is thrown away).
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

/// The note on a warm row: the store's size on disk.
pub fn on_disk_note(row: &mut Row, on_disk: u64, stored: u64) {
    if let Some(per) = on_disk.checked_div(stored) {
        row.notes.push(format!(
            "store on disk after a clean stop: {per} bytes per message ({on_disk} bytes for {stored} messages of 100 bytes)"
        ));
        row.extra["store_bytes_on_disk"] = on_disk.into();
    }
}

/// The `history` scenario: fill, read warm, restart with the page cache
/// dropped, read cold.
pub async fn history(opts: &DaemonOpts, transport: Transport, messages: u64) -> anyhow::Result<Vec<Row>> {
    let mut store = HistoryStore::new(opts, transport).await?;
    let result = async {
        let secs = store.grow_to(messages).await?;
        eprintln!("  history: {} messages stored in {secs:.1}s", store.stored());
        let mut warm = store.warm(8_000, 1).await?;
        let (cold, on_disk) = store.cold(2_000, 2).await?;
        on_disk_note(&mut warm, on_disk, store.stored());
        anyhow::Ok(vec![warm, cold])
    }
    .await;
    store.stop().await;
    result
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
