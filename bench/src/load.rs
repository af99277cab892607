//! The load engine every system is driven by: actors (one per session),
//! each optionally sending in one of two shapes and counting what it
//! receives, over a [`Link`] that speaks one system's protocol.
//!
//! - **Closed loop**: each sender keeps W messages in flight. A message
//!   stops being in flight when the system acknowledges it (Confab's
//!   `Sent`, the relay's ack), when the sender sees its own copy (systems
//!   without acks that reflect to the sender: NATS with echo, an XMPP
//!   MUC), or when the receiver got it (NATS and XMPP 1:1: the receiver
//!   tells its sender in memory).
//! - **Open loop**: each sender sends at a fixed rate on a schedule; the
//!   timestamp in the body is the *scheduled* time, so a stall anywhere
//!   (generator included) shows in the latency (no coordinated omission).
//!   A sender whose unwritten bytes pile up past [`BACKLOG_LIMIT`] skips
//!   its turns and counts them as pushed back (the socket is not draining).
//!   Senders are woken at their due times by a [`Pacer`] thread, not by
//!   tokio's timer (which rounds every deadline up to a whole
//!   millisecond); how late each send still was is kept
//!   ([`Outcome::late_hist`]), so a reader can tell the generator's share
//!   of the latency from the system's.
//!
//! Latency is measured at the receiver: receive time minus the timestamp
//! carried in the first 20 bytes of the body.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, mpsc};

/// Message body length in bytes (timestamp and ids included).
pub const BODY_LEN: usize = 100;
/// Unwritten bytes past which an open-loop sender skips its turn.
pub const BACKLOG_LIMIT: usize = 64 * 1024;
/// How long senders wait for their last acks after the run.
const DRAIN: Duration = Duration::from_secs(5);
/// How long receivers wait, after that, for everything acknowledged.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Latencies in microseconds.
pub type Hist = Histogram<u64>;

/// A fresh latency histogram: 1 µs to 100 s, 3 significant digits.
pub fn new_hist() -> anyhow::Result<Hist> {
    Histogram::new_with_bounds(1, 100_000_000, 3).context("histogram")
}

/// The instant all message timestamps count from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// A duration in µs, at least 1.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A BODY_LEN-byte text: "<stamp nanos, 20 digits> s<sender> n<n> xxxx…".
/// Plain ASCII with no XML or NATS specials, so every driver can carry it
/// verbatim.
pub fn body_text(stamp: Instant, sender: u32, n: u64) -> String {
    let mut s = format!("{:020} s{sender} n{n} ", nanos(stamp));
    s.extend(std::iter::repeat_n('x', BODY_LEN.saturating_sub(s.len())));
    s
}

/// Parses (stamp, sender) out of a body made by [`body_text`].
pub fn parse_body(text: &[u8]) -> Option<(u64, u32)> {
    let stamp = std::str::from_utf8(text.get(..20)?).ok()?.parse().ok()?;
    let rest = text.get(22..)?;
    let end = rest.iter().position(|&b| b == b' ')?;
    let sender = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
    Some((stamp, sender))
}

/// Something a link produced.
#[derive(Debug)]
pub enum LinkEvent {
    /// A send was acknowledged.
    Ack(u64),
    /// A send was refused (error code name).
    Failed(u64, String),
    /// A message arrived: (stamp nanos, sender id).
    Msg(u64, u32),
}

/// Integrity counters a link keeps (Confab: sequence and inbox checks).
#[derive(Debug, Default, Clone, Copy)]
pub struct Checks {
    /// Deliveries whose conversation seq was not the previous + 1.
    pub seq_anomalies: u64,
    /// Live inbox events whose inbox_seq was not the previous + 1.
    pub inbox_gaps: u64,
    /// Inbox events that were not messages (there should be none).
    pub other_events: u64,
}

impl Checks {
    /// Sum of two.
    pub fn add(&mut self, o: Checks) {
        self.seq_anomalies += o.seq_anomalies;
        self.inbox_gaps += o.inbox_gaps;
        self.other_events += o.other_events;
    }
}

/// One session of one system, as the engine drives it.
pub trait Link: Send + 'static {
    /// Queues one message with this text to the link's destination;
    /// returns the token its ack will carry (ignored by systems without
    /// acks).
    fn send(&mut self, text: String) -> anyhow::Result<u64>;
    /// Bytes queued and not yet written.
    fn backlog(&self) -> usize;
    /// Writes what is queued and waits for input (or `deadline`).
    /// Cancel-safe.
    fn pump(&mut self, deadline: Option<Instant>) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// What arrived since the last call.
    fn poll(&mut self, out: &mut Vec<LinkEvent>);
    /// Integrity counters so far.
    fn checks(&self) -> Checks {
        Checks::default()
    }
    /// Socket reads that returned data.
    fn reads(&self) -> u64;
}

/// Wakes open-loop senders at their due times, to within the kernel's
/// timer slack (about 50 µs) rather than tokio's millisecond: one thread
/// sleeps on a condition variable until the earliest due time and then
/// notifies that sender. With tokio's timer alone every send was up to a
/// millisecond late, which the latency (measured from the scheduled time)
/// counted as the system's.
pub struct Pacer {
    state: Mutex<PacerState>,
    changed: Condvar,
    stop: AtomicBool,
}

struct PacerState {
    /// (due, sender slot), earliest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Each sender slot's wake-up.
    wakes: Vec<Arc<Notify>>,
}

impl Pacer {
    /// A pacer and its thread; the thread ends once [`Pacer::stop`] is
    /// called.
    pub fn start() -> anyhow::Result<Arc<Pacer>> {
        let pacer = Arc::new(Pacer {
            state: Mutex::new(PacerState { due: BinaryHeap::new(), wakes: Vec::new() }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let p = Arc::clone(&pacer);
        std::thread::Builder::new().name("bench-pacer".into()).spawn(move || p.serve()).context("pacer thread")?;
        Ok(pacer)
    }

    /// A slot for one sender: the notification it waits on.
    fn slot(&self) -> (usize, Arc<Notify>) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let wake = Arc::new(Notify::new());
        st.wakes.push(Arc::clone(&wake));
        (st.wakes.len() - 1, wake)
    }

    /// Notify `slot` at `due` (or at once if that is past).
    fn wake_at(&self, slot: usize, due: Instant) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = st.due.peek().is_none_or(|Reverse((d, _))| due < *d);
        st.due.push(Reverse((due, slot)));
        drop(st);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Ends the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.changed.notify_one();
    }

    fn serve(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !self.stop.load(Ordering::Acquire) {
            while let Some(&Reverse((due, slot))) = st.due.peek()
                && due <= Instant::now()
            {
                st.due.pop();
                if let Some(w) = st.wakes.get(slot) {
                    w.notify_one();
                }
            }
            st = match st.due.peek() {
                Some(&Reverse((due, _))) => {
                    self.changed
                        .wait_timeout(st, due.saturating_duration_since(Instant::now()))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.changed.wait(st).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// Stops a pacer when dropped.
struct StopOnDrop(Arc<Pacer>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Progress of one receiver, for senders whose system does not ack.
#[derive(Debug, Default)]
pub struct Progress {
    received: AtomicU64,
    notify: Notify,
}

/// How a sender learns that a message is no longer in flight.
#[derive(Debug, Clone)]
pub enum AckMode {
    /// The system acknowledges each send.
    Response,
    /// The sender receives its own copy.
    Echo,
    /// The receiver tells it (in memory).
    Peer(Arc<Progress>),
}

/// How an actor sends.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// W messages in flight.
    Closed {
        /// In flight.
        window: usize,
    },
    /// A fixed rate, in messages per second.
    Open {
        /// Messages per second.
        rate: f64,
    },
}

/// What one actor does.
pub struct Role {
    /// Its id, written into the bodies it sends.
    pub id: u32,
    /// Sending, if it sends.
    pub send: Option<(Shape, AckMode)>,
    /// Whether deliveries to it are counted.
    pub count: bool,
    /// The progress it reports to its peer (1:1 without acks).
    pub feeds: Option<Arc<Progress>>,
    /// Senders connected to another node than this actor (cluster runs):
    /// the latency of their messages is also kept on its own.
    pub remote: Vec<u32>,
}

/// The shared clock of a run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Warm-up ends, measuring starts.
    pub warm: Instant,
    /// Measuring (and sending) ends.
    pub end: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Clock {
        let start = Instant::now();
        Clock { warm: start + warmup, end: start + warmup + duration }
    }

    fn measuring(&self, t: Instant) -> bool {
        t >= self.warm && t < self.end
    }

    /// 0 in the first half of the window, 1 in the second.
    fn half(&self, t: Instant) -> usize {
        usize::from(t >= self.warm + (self.end - self.warm) / 2)
    }
}

/// What one actor measured.
#[derive(Debug)]
pub struct ActorStats {
    /// Its id.
    pub id: u32,
    /// Messages sent in total.
    pub sent: u64,
    /// Messages sent inside the window.
    pub sent_window: u64,
    /// Acks (or echoes, or peer progress) in total.
    pub acked: u64,
    /// Acks inside the window.
    pub acked_window: u64,
    /// Open-loop turns skipped because the socket was not draining.
    pub pushed_back: u64,
    /// Open loop: how late each send was against its schedule (µs),
    /// window only.
    pub late_hist: Hist,
    /// Refused sends by error code.
    pub errors: BTreeMap<String, u64>,
    /// Messages received in total (counted actors).
    pub received: u64,
    /// Messages received inside the window.
    pub received_window: u64,
    /// Send → receive latency (µs), window only.
    pub deliver_hist: Hist,
    /// The same, split by the half of the window it was received in.
    pub halves: [Hist; 2],
    /// The same, of messages from [`Role::remote`] senders only.
    pub remote_hist: Hist,
    /// Send → ack latency (µs), window only.
    pub ack_hist: Hist,
    /// Link integrity counters.
    pub checks: Checks,
    /// Socket reads that returned data.
    pub reads: u64,
}

/// Totals a sender reports once its sending is over.
#[derive(Debug, Clone, Copy)]
pub struct SendReport {
    /// The actor.
    pub id: u32,
    /// Acked.
    pub acked: u64,
}

/// Runs one actor until its sends are drained and it has received
/// `expect` messages (set by the caller once every sender reported), or
/// the catch-up deadline passes.
pub async fn actor<L: Link>(
    mut link: L,
    role: Role,
    clock: Clock,
    done_sending: mpsc::UnboundedSender<SendReport>,
    expect: Arc<AtomicU64>,
    pacer: Arc<Pacer>,
) -> anyhow::Result<(ActorStats, L)> {
    let mut s = ActorStats {
        id: role.id,
        sent: 0,
        sent_window: 0,
        acked: 0,
        acked_window: 0,
        pushed_back: 0,
        late_hist: new_hist()?,
        errors: BTreeMap::new(),
        received: 0,
        received_window: 0,
        deliver_hist: new_hist()?,
        halves: [new_hist()?, new_hist()?],
        remote_hist: new_hist()?,
        ack_hist: new_hist()?,
        checks: Checks::default(),
        reads: 0,
    };
    let mut in_flight: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    // Echo and peer modes: send times in order (acks come in order).
    let mut fifo: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut events = Vec::with_capacity(256);
    let mut n = 0u64;
    let drain_deadline = clock.end + DRAIN;
    let hard_deadline = clock.end + DRAIN + CATCH_UP;
    let interval = match role.send {
        Some((Shape::Open { rate }, _)) if rate > 0.0 => Some(Duration::from_secs_f64(1.0 / rate)),
        _ => None,
    };
    // Spread the first sends of open-loop actors over one interval: the
    // fractional part of id × the golden ratio's inverse places any set of
    // ids (the senders' are 0, 2, 4, …) nearly evenly, where `id / 1000`
    // bunched 32 senders into the first 6 % of the interval.
    let phase = (f64::from(role.id) * 0.618_033_988_749_894_9).fract();
    let mut next_due = clock.warm.min(Instant::now()) + interval.map_or(Duration::ZERO, |i| i.mul_f64(phase));
    // Open loop: woken by the pacer at each due time.
    let paced = interval.map(|_| pacer.slot());
    let mut asked_for: Option<Instant> = None;
    let mut sending = role.send.is_some();
    if !sending {
        let _ = done_sending.send(SendReport { id: role.id, acked: 0 });
    }
    loop {
        let now = Instant::now();
        let outstanding = match &role.send {
            Some((_, AckMode::Response)) => in_flight.len() as u64,
            Some(_) => fifo.len() as u64,
            None => 0,
        };
        if sending {
            let stop = now >= clock.end || (now >= drain_deadline);
            if stop && (outstanding == 0 || now >= drain_deadline) {
                sending = false;
                let _ = done_sending.send(SendReport { id: role.id, acked: s.acked });
            } else if !stop && let Some((shape, mode)) = &role.send {
                match *shape {
                    Shape::Closed { window } => {
                        let mut k = outstanding as usize;
                        while k < window {
                            let t = Instant::now();
                            let token = link.send(body_text(t, role.id, n))?;
                            n += 1;
                            note_sent(&mut s, &clock, t);
                            match mode {
                                AckMode::Response => {
                                    in_flight.insert(token, t);
                                }
                                _ => fifo.push_back(t),
                            }
                            k += 1;
                        }
                    }
                    Shape::Open { .. } => {
                        let step = interval.unwrap_or(Duration::from_secs(1));
                        while next_due <= now {
                            if link.backlog() > BACKLOG_LIMIT {
                                s.pushed_back += 1;
                            } else {
                                if clock.measuring(next_due) {
                                    s.late_hist.saturating_record(micros(Instant::now() - next_due));
                                }
                                let token = link.send(body_text(next_due, role.id, n))?;
                                n += 1;
                                note_sent(&mut s, &clock, next_due);
                                match mode {
                                    AckMode::Response => {
                                        in_flight.insert(token, next_due);
                                    }
                                    _ => fifo.push_back(next_due),
                                }
                            }
                            next_due += step;
                        }
                    }
                }
            }
        }
        if !sending && s.received >= expect.load(Ordering::Acquire) {
            break;
        }
        if now >= hard_deadline {
            break;
        }
        let wake = if sending {
            match interval {
                // Sending is over: wait for the last acks (input), not for
                // a deadline already past.
                Some(_) if now >= clock.end => drain_deadline,
                Some(_) => next_due.min(clock.end),
                None => {
                    if now < clock.end {
                        clock.end
                    } else {
                        drain_deadline
                    }
                }
            }
        } else {
            // Wake now and then to see whether the expected count is known.
            now + Duration::from_millis(50)
        };
        let peer_wait = match &role.send {
            Some((_, AckMode::Peer(p))) if sending => Some(Arc::clone(p)),
            _ => None,
        };
        // An open-loop sender asks the pacer for its next due time (once
        // per due time); tokio's timer, a millisecond coarser, stays as
        // the fallback.
        let pace = match &paced {
            Some((slot, notify)) if sending && wake < clock.end => {
                if asked_for != Some(wake) {
                    pacer.wake_at(*slot, wake);
                    asked_for = Some(wake);
                }
                Some(Arc::clone(notify))
            }
            _ => None,
        };
        match (peer_wait, pace) {
            (Some(p), Some(n)) => {
                tokio::select! {
                    r = link.pump(Some(wake)) => r?,
                    _ = p.notify.notified() => {}
                    _ = n.notified() => {}
                }
            }
            (Some(p), None) => {
                tokio::select! {
                    r = link.pump(Some(wake)) => r?,
                    _ = p.notify.notified() => {}
                }
            }
            (None, Some(n)) => {
                tokio::select! {
                    r = link.pump(Some(wake)) => r?,
                    _ = n.notified() => {}
                }
            }
            (None, None) => link.pump(Some(wake)).await?,
        }
        // Peer progress: everything the receiver has counted is acked.
        if let Some((_, AckMode::Peer(p))) = &role.send {
            let got = p.received.load(Ordering::Acquire);
            while s.acked < got {
                let Some(t) = fifo.pop_front() else { break };
                note_ack(&mut s, &clock, t);
            }
        }
        let now = Instant::now();
        link.poll(&mut events);
        let mut got_any = false;
        for ev in events.drain(..) {
            match ev {
                LinkEvent::Ack(token) => {
                    if let Some(t) = in_flight.remove(&token) {
                        note_ack(&mut s, &clock, t);
                    }
                }
                LinkEvent::Failed(token, code) => {
                    in_flight.remove(&token);
                    *s.errors.entry(code).or_default() += 1;
                }
                LinkEvent::Msg(stamp, sender) => {
                    if sender == role.id
                        && let Some((_, AckMode::Echo)) = &role.send
                        && let Some(t) = fifo.pop_front()
                    {
                        note_ack(&mut s, &clock, t);
                    }
                    if role.count {
                        s.received += 1;
                        got_any = true;
                        if clock.measuring(now) {
                            s.received_window += 1;
                            let lat = (nanos(now).saturating_sub(stamp) / 1000).max(1);
                            s.deliver_hist.saturating_record(lat);
                            s.halves[clock.half(now)].saturating_record(lat);
                            if role.remote.contains(&sender) {
                                s.remote_hist.saturating_record(lat);
                            }
                        }
                    }
                }
            }
        }
        if got_any && let Some(p) = &role.feeds {
            p.received.store(s.received, Ordering::Release);
            p.notify.notify_one();
        }
    }
    if sending {
        let _ = done_sending.send(SendReport { id: role.id, acked: s.acked });
    }
    s.checks = link.checks();
    s.reads = link.reads();
    Ok((s, link))
}

fn note_sent(s: &mut ActorStats, clock: &Clock, t: Instant) {
    s.sent += 1;
    if clock.measuring(t) {
        s.sent_window += 1;
    }
}

fn note_ack(s: &mut ActorStats, clock: &Clock, sent: Instant) {
    let now = Instant::now();
    s.acked += 1;
    if clock.measuring(now) {
        s.acked_window += 1;
        s.ack_hist.saturating_record(micros(now - sent));
    }
}

/// Everything a run measured, summed over actors.
#[derive(Debug)]
pub struct Outcome {
    /// Messages sent (window).
    pub sent: u64,
    /// Acked (window).
    pub acked: u64,
    /// Received at counted actors (window).
    pub delivered: u64,
    /// Send → receive (µs).
    pub deliver_hist: Hist,
    /// The same by half of the window (does latency grow during the run?).
    pub halves: [Hist; 2],
    /// The same, of messages whose sender and receiver were on different
    /// nodes (empty on one node).
    pub remote_hist: Hist,
    /// Send → ack (µs).
    pub ack_hist: Hist,
    /// Refused sends by code.
    pub errors: BTreeMap<String, u64>,
    /// Open-loop turns skipped (socket not draining).
    pub pushed_back: u64,
    /// Open loop: how late sends were against their schedule (µs): the
    /// generator's own share of the latency.
    pub late_hist: Hist,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Integrity counters.
    pub checks: Checks,
    /// Messages per receiving socket read.
    pub msgs_per_read: f64,
    /// Total messages received (whole run, counted actors).
    pub received_total: u64,
}

/// One actor to start: its link, its role, and the senders whose
/// messages it expects.
pub struct Cast<L> {
    /// The link.
    pub link: L,
    /// The role.
    pub role: Role,
    /// Ids of the senders whose every acked message it must receive.
    pub sources: Vec<u32>,
}

/// Runs every actor; `on_window(true/false)` is called at the start and
/// end of the measured window (CPU readings).
pub async fn run<L: Link>(
    cast: Vec<Cast<L>>,
    warmup: Duration,
    duration: Duration,
    mut on_window: impl FnMut(bool),
) -> anyhow::Result<(Outcome, Vec<(u32, L)>)> {
    epoch();
    let clock = Clock::starting_now(warmup, duration);
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let mut set = tokio::task::JoinSet::new();
    let mut expects = Vec::new();
    let actors = cast.len();
    let pacer = Pacer::start()?;
    // The pacer's thread ends with the run, however it ends.
    let _stop_pacer = StopOnDrop(Arc::clone(&pacer));
    for c in cast {
        let expect = Arc::new(AtomicU64::new(if c.role.count { u64::MAX } else { 0 }));
        expects.push((Arc::clone(&expect), c.sources, c.role.count));
        let tx = report_tx.clone();
        set.spawn(actor(c.link, c.role, clock, tx, expect, Arc::clone(&pacer)));
    }
    drop(report_tx);
    tokio::time::sleep_until(clock.warm.into()).await;
    on_window(true);
    tokio::time::sleep_until(clock.end.into()).await;
    on_window(false);
    // Every actor reports once its sending is over (receivers at once).
    let mut acked_by: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for _ in 0..actors {
        let Some(r) = report_rx.recv().await else { break };
        // Peer-mode senders count as acked what their receiver got, so
        // `acked` is the right expectation for every mode.
        acked_by.insert(r.id, r.acked);
    }
    let mut expected_total = 0u64;
    for (expect, sources, count) in &expects {
        if *count {
            let e: u64 = sources.iter().map(|id| acked_by.get(id).copied().unwrap_or(0)).sum();
            expected_total += e;
            expect.store(e, Ordering::Release);
        }
    }
    let mut out = Outcome {
        sent: 0,
        acked: 0,
        delivered: 0,
        deliver_hist: new_hist()?,
        halves: [new_hist()?, new_hist()?],
        remote_hist: new_hist()?,
        ack_hist: new_hist()?,
        errors: BTreeMap::new(),
        pushed_back: 0,
        late_hist: new_hist()?,
        lost: 0,
        checks: Checks::default(),
        msgs_per_read: 0.0,
        received_total: 0,
    };
    let (mut reads, mut received_counted) = (0u64, 0u64);
    let mut links = Vec::with_capacity(actors);
    while let Some(r) = set.join_next().await {
        let (s, link) = r??;
        links.push((s.id, link));
        out.sent += s.sent_window;
        out.acked += s.acked_window;
        out.delivered += s.received_window;
        out.deliver_hist.add(&s.deliver_hist).context("merging histograms")?;
        for (h, sh) in out.halves.iter_mut().zip(&s.halves) {
            h.add(sh).context("merging histograms")?;
        }
        out.remote_hist.add(&s.remote_hist).context("merging histograms")?;
        out.ack_hist.add(&s.ack_hist).context("merging histograms")?;
        for (k, v) in s.errors {
            *out.errors.entry(k).or_default() += v;
        }
        out.pushed_back += s.pushed_back;
        out.late_hist.add(&s.late_hist).context("merging histograms")?;
        out.checks.add(s.checks);
        out.received_total += s.received;
        if s.received > 0 {
            reads += s.reads;
            received_counted += s.received;
        }
    }
    out.lost = expected_total.saturating_sub(out.received_total);
    out.msgs_per_read = if reads == 0 { 0.0 } else { received_counted as f64 / reads as f64 };
    links.sort_by_key(|(id, _)| *id);
    Ok((out, links))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_fixed_length_and_parse_back() {
        let t = Instant::now();
        let b = body_text(t, 4242, 17);
        assert_eq!(b.len(), BODY_LEN);
        assert!(b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b' '));
        let (stamp, sender) = parse_body(b.as_bytes()).unwrap();
        assert_eq!(stamp, nanos(t));
        assert_eq!(sender, 4242);
        assert!(parse_body(b"short").is_none());
    }

    #[test]
    fn histogram_percentiles_are_in_microseconds() {
        let mut h = new_hist().unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        assert_eq!(h.value_at_quantile(0.5), 500);
        assert!((989..=991).contains(&h.value_at_quantile(0.99)));
    }
}
