//! The `dm` scenario: P pairs of users, each sender keeping W sends in
//! flight to its own DM (closed loop), each receiver on its own session
//! timing send → deliver from a timestamp carried in the message text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use confab_protocol::session::ClientEvent;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant as TokioInstant;

use crate::pipe::{Pipe, Target};

/// Message body length in bytes (timestamp and ids included).
pub const BODY_LEN: usize = 100;
/// Pairs set up concurrently (signup hashes a password on the server).
const SETUP_CONCURRENCY: usize = 8;
/// How long senders wait for their last acks after the run.
const DRAIN: Duration = Duration::from_secs(5);
/// How long receivers wait, after that, for every acked message.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct DmParams {
    /// Sender/receiver pairs.
    pub pairs: usize,
    /// Sends in flight per sender.
    pub window: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
}

/// Latencies in microseconds.
pub type Hist = Histogram<u64>;

/// A fresh latency histogram: 1 µs to 100 s, 3 significant digits.
pub fn new_hist() -> anyhow::Result<Hist> {
    Histogram::new_with_bounds(1, 100_000_000, 3).context("histogram")
}

/// What one run measured (generator side; the caller adds the CPU and
/// memory readings).
#[derive(Debug)]
pub struct DmOutcome {
    /// Messages received by receivers inside the measured window.
    pub delivered: u64,
    /// `Sent` acks received inside the measured window.
    pub acked: u64,
    /// Send → InboxEvent at the receiver (µs).
    pub deliver_hist: Hist,
    /// Send → Sent (µs).
    pub ack_hist: Hist,
    /// Error responses to sends, by code name.
    pub errors: BTreeMap<String, u64>,
    /// Acked messages that never reached the receiver (after catching up).
    pub lost: u64,
    /// Messages a receiver saw with a seq other than last + 1.
    pub seq_anomalies: u64,
    /// Messages per socket read at the receivers (how well the server
    /// batches its writes).
    pub msgs_per_read: f64,
    /// Seconds spent in setup (connect + signup + open DM).
    pub setup_secs: f64,
}

/// The instant all message timestamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch_nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// A BODY_LEN-byte text: "<send nanos, 20 digits> <pair> <n> xxxx…".
fn body_text(sent_at: Instant, pair: usize, n: u64) -> String {
    let mut s = format!("{:020} p{pair} n{n} ", since_epoch_nanos(sent_at));
    s.extend(std::iter::repeat_n('x', BODY_LEN.saturating_sub(s.len())));
    s
}

fn sent_at(text: &str) -> Option<u64> {
    text.get(..20)?.parse().ok()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

struct Pair {
    index: usize,
    tx: Pipe,
    rx: Pipe,
    conversation_id: u64,
}

/// A tag making usernames unique per run, so an external server can be
/// benchmarked repeatedly.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut n = (nanos / 1000) as u64 % 36u64.pow(6);
    let mut tag = String::new();
    for _ in 0..6 {
        let d = (n % 36) as u32;
        tag.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    tag
}

async fn signup(pipe: &mut Pipe, username: &str) -> anyhow::Result<()> {
    let body = Body::Signup(pb::SignupRequest {
        username: username.into(),
        password: "bench-password".into(),
        device_name: "bench".into(),
    });
    match pipe.call(body).await.with_context(|| format!("signup {username}"))? {
        Reply::AuthOk(_) => Ok(()),
        other => bail!("signup {username}: unexpected {other:?}"),
    }
}

async fn setup_pair(target: Target, tag: String, index: usize) -> anyhow::Result<Pair> {
    let (a, b) = (format!("b{tag}-{index}a"), format!("b{tag}-{index}b"));
    let mut rx = Pipe::connect(&target).await?;
    signup(&mut rx, &b).await?;
    let mut tx = Pipe::connect(&target).await?;
    signup(&mut tx, &a).await?;
    let conversation_id = match tx.call(Body::OpenDirect(pb::OpenDirectRequest { username: b.clone() })).await? {
        Reply::Conversation(c) => c.conversation_id,
        other => bail!("open_direct {b}: unexpected {other:?}"),
    };
    Ok(Pair { index, tx, rx, conversation_id })
}

/// Shared clock of a run.
#[derive(Debug, Clone, Copy)]
struct Clock {
    warm: Instant,
    end: Instant,
}

impl Clock {
    fn measuring(&self, t: Instant) -> bool {
        t >= self.warm && t < self.end
    }
}

struct SenderStats {
    ack_hist: Hist,
    acked_window: u64,
    acked_total: u64,
    errors: BTreeMap<String, u64>,
}

async fn sender(
    mut pipe: Pipe,
    pair: usize,
    conversation_id: u64,
    window: usize,
    clock: Clock,
) -> anyhow::Result<SenderStats> {
    let mut stats = SenderStats { ack_hist: new_hist()?, acked_window: 0, acked_total: 0, errors: BTreeMap::new() };
    let mut in_flight: std::collections::HashMap<u64, Instant> = std::collections::HashMap::with_capacity(window * 2);
    let mut n = 0u64;
    let drain_deadline = clock.end + DRAIN;
    loop {
        let now = Instant::now();
        let stopping = now >= clock.end;
        if !stopping {
            while in_flight.len() < window {
                let t = Instant::now();
                let body = Body::Send(pb::SendRequest {
                    conversation_id,
                    client_msg_id: format!("p{pair}-{n}"),
                    text: body_text(t, pair, n),
                });
                n += 1;
                in_flight.insert(pipe.queue(body)?, t);
            }
        } else if in_flight.is_empty() || now >= drain_deadline {
            break;
        }
        let wake = TokioInstant::from_std(if stopping { drain_deadline } else { clock.end });
        match tokio::time::timeout_at(wake, pipe.pump()).await {
            Ok(r) => r.with_context(|| format!("sender {pair}"))?,
            Err(_) => continue,
        }
        while let Some(ev) = pipe.poll_event() {
            match ev {
                ClientEvent::Response { request_id, body } => {
                    let Some(t) = in_flight.remove(&request_id) else { continue };
                    let now = Instant::now();
                    match body {
                        Reply::Sent(_) => {
                            stats.acked_total += 1;
                            if clock.measuring(now) {
                                stats.acked_window += 1;
                                stats.ack_hist.saturating_record(micros(now - t));
                            }
                        }
                        Reply::Error(e) => {
                            let code = confab_protocol::ErrorCode(e.code);
                            *stats.errors.entry(code.to_string()).or_default() += 1;
                        }
                        other => *stats.errors.entry(format!("unexpected {other:?}")).or_default() += 1,
                    }
                }
                // The echo of our own messages (and anything else): drop.
                ClientEvent::Event(_) | ClientEvent::Welcome(_) => {}
                ClientEvent::Closed { code, message } => bail!("sender {pair}: session closed: {code}: {message}"),
            }
        }
    }
    Ok(stats)
}

struct ReceiverStats {
    hist: Hist,
    delivered_window: u64,
    received_total: u64,
    seq_anomalies: u64,
    reads: u64,
    read_msgs: u64,
}

async fn receiver(
    mut pipe: Pipe,
    pair: usize,
    conversation_id: u64,
    clock: Clock,
    target: Arc<AtomicU64>,
) -> anyhow::Result<ReceiverStats> {
    let mut stats = ReceiverStats {
        hist: new_hist()?,
        delivered_window: 0,
        received_total: 0,
        seq_anomalies: 0,
        reads: 0,
        read_msgs: 0,
    };
    let hard_deadline = clock.end + DRAIN + CATCH_UP;
    let mut last_seq = None;
    loop {
        let now = Instant::now();
        if stats.received_total >= target.load(Ordering::Acquire) || now >= hard_deadline {
            break;
        }
        // Wake at least every 100 ms to check whether we are done.
        let wake = TokioInstant::from_std(now + Duration::from_millis(100));
        match tokio::time::timeout_at(wake, pipe.pump()).await {
            Ok(r) => r.with_context(|| format!("receiver {pair}"))?,
            Err(_) => continue,
        }
        let now = Instant::now();
        let mut msgs = 0;
        while let Some(ev) = pipe.poll_event() {
            match ev {
                ClientEvent::Event(Reply::Event(pb::InboxEvent {
                    event: Some(pb::inbox_event::Event::Message(m)),
                    ..
                })) if m.conversation_id == conversation_id => {
                    let Some(pb::message::Content::Text(text)) = &m.content else { continue };
                    let Some(sent) = sent_at(text) else { continue };
                    msgs += 1;
                    stats.received_total += 1;
                    if last_seq.is_some_and(|s: u64| m.seq != s + 1) {
                        stats.seq_anomalies += 1;
                    }
                    last_seq = Some(m.seq);
                    if clock.measuring(now) {
                        stats.delivered_window += 1;
                        let latency = since_epoch_nanos(now).saturating_sub(sent) / 1000;
                        stats.hist.saturating_record(latency.max(1));
                    }
                }
                ClientEvent::Closed { code, message } => bail!("receiver {pair}: session closed: {code}: {message}"),
                _ => {}
            }
        }
        if msgs > 0 {
            stats.reads += 1;
            stats.read_msgs += msgs;
        }
    }
    Ok(stats)
}

/// Sets up the pairs; returns them with the setup time.
async fn setup(target: &Target, pairs: usize) -> anyhow::Result<Vec<Pair>> {
    let tag = run_tag();
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..pairs {
        let (target, tag, permits) = (target.clone(), tag.clone(), Arc::clone(&permits));
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            setup_pair(target, tag, i).await.with_context(|| format!("setting up pair {i}"))
        });
    }
    let mut out = Vec::with_capacity(pairs);
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    out.sort_by_key(|p| p.index);
    Ok(out)
}

/// Runs the scenario. `on_window` is called at the start and at the end of
/// the measured window (for CPU readings).
pub async fn run(target: &Target, params: &DmParams, mut on_window: impl FnMut(bool)) -> anyhow::Result<DmOutcome> {
    epoch();
    let setup_start = Instant::now();
    let pairs = setup(target, params.pairs).await?;
    let setup_secs = setup_start.elapsed().as_secs_f64();
    if let Some(p) = pairs.first() {
        let max = p.tx.limits().max_in_flight;
        if params.window as u64 >= u64::from(max) {
            bail!("window {} must be below the server's max_in_flight ({max}): heartbeats need a slot", params.window);
        }
    }

    let start = Instant::now();
    let clock = Clock { warm: start + params.warmup, end: start + params.warmup + params.duration };
    let mut senders = tokio::task::JoinSet::new();
    let mut receivers = tokio::task::JoinSet::new();
    let mut targets = Vec::with_capacity(pairs.len());
    let window = params.window;
    for p in pairs {
        let target = Arc::new(AtomicU64::new(u64::MAX));
        targets.push(Arc::clone(&target));
        let idx = p.index;
        receivers.spawn(async move { (idx, receiver(p.rx, idx, p.conversation_id, clock, target).await) });
        senders.spawn(async move { (idx, sender(p.tx, idx, p.conversation_id, window, clock).await) });
    }

    tokio::time::sleep_until(TokioInstant::from_std(clock.warm)).await;
    on_window(true);
    tokio::time::sleep_until(TokioInstant::from_std(clock.end)).await;
    on_window(false);

    let mut acked = 0;
    let mut ack_hist = new_hist()?;
    let mut errors = BTreeMap::new();
    let mut expected = vec![0u64; targets.len()];
    while let Some(r) = senders.join_next().await {
        let (idx, stats) = r?;
        let stats = stats?;
        acked += stats.acked_window;
        if let Some(e) = expected.get_mut(idx) {
            *e = stats.acked_total;
        }
        ack_hist.add(&stats.ack_hist).context("merging histograms")?;
        for (k, v) in stats.errors {
            *errors.entry(k).or_default() += v;
        }
        if let Some(t) = targets.get(idx) {
            t.store(stats.acked_total, Ordering::Release);
        }
    }
    let mut delivered = 0;
    let mut lost = 0;
    let mut deliver_hist = new_hist()?;
    let (mut seq_anomalies, mut reads, mut read_msgs) = (0, 0, 0);
    while let Some(r) = receivers.join_next().await {
        let (idx, stats) = r?;
        let stats = stats?;
        delivered += stats.delivered_window;
        lost += expected.get(idx).copied().unwrap_or(0).saturating_sub(stats.received_total);
        seq_anomalies += stats.seq_anomalies;
        reads += stats.reads;
        read_msgs += stats.read_msgs;
        deliver_hist.add(&stats.hist).context("merging histograms")?;
    }
    Ok(DmOutcome {
        delivered,
        acked,
        deliver_hist,
        ack_hist,
        errors,
        lost,
        seq_anomalies,
        msgs_per_read: if reads == 0 { 0.0 } else { read_msgs as f64 / reads as f64 },
        setup_secs,
    })
}
