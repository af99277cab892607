//! Cluster ownership at a size this machine cannot run, in simulated time.
//!
//! Runs the ownership rules of `server/src/cluster/owners.rs` (its
//! `share`, `plan` and `to_take`, the code the nodes run) for hundreds
//! of nodes and thousands of partitions over a day or more, with node
//! crashes and restarts, and reports how long a partition is unwritable
//! after its owner dies or gives it away, how many are ownerless at once,
//! how evenly partitions spread, and what the leases cost NATS.
//!
//! What is modelled: leases with a TTL renewed every TTL/3 by each node's
//! round (rounds of different nodes out of phase); each node's card (the
//! count of partitions it can write) as of its last round or finished
//! takeover, which is what other nodes plan with; a released lease waking
//! every node (the KV watch) after `--watch-ms`; an expired one noticed
//! only at a node's next round (an expiry leaves no delete marker);
//! takeovers one at a time on a node (its leases and card renewed
//! meanwhile; it decides again as soon as one is done), each
//! `--takeover-ms` plus the
//! log tail it must replay at `--replay-rate` records/s (the tail since
//! the node last owned the partition, or the whole log, `--history-days`
//! deep, if it never did); crashes with exponential time between them
//! (`--mtbf-hours` per node) and a restart after an exponential downtime
//! (`--down-s`), keeping the node's data directory. Not modelled: NATS
//! itself failing, clock skew (leases are judged by NATS, not by nodes),
//! network partitions (a cut node is a crashed one here).
//!
//! `--scenario join` (a node joins with an empty data directory) and
//! `--scenario leave` (a node leaves gracefully) replace the crashes with
//! that one event at `--event-at-h`, and report how many partitions were
//! moving at once, how long until they were spread evenly again and how
//! long each moved partition was unwritable. docs/CAPACITY.md has runs.
//!
//!     cargo run -p confab-server --example cluster_sim -- --nodes 200 --partitions 4096
//!     cargo run -p confab-server --example cluster_sim -- --nodes 42 --partitions 1024 --scenario join
#![allow(clippy::print_stdout)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

use confab_server::cluster::owners::{plan, share, to_take};

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    partitions: u32,
    lease_ms: f64,
    max_moves: usize,
    hours: f64,
    mtbf_hours: f64,
    down_s: f64,
    replay_rate: f64,
    records_per_partition_s: f64,
    history_days: f64,
    takeover_ms: f64,
    watch_ms: f64,
    seed: u64,
    scenario: Scenario,
    event_at_h: f64,
}

/// One event instead of random crashes: a node joins the cluster, or one
/// leaves it gracefully (gives its leases back, as on SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Crashes,
    Join,
    Leave,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            nodes: 200,
            partitions: 4096,
            lease_ms: 10_000.0,
            max_moves: 2,
            hours: 24.0,
            mtbf_hours: 720.0,
            down_s: 300.0,
            replay_rate: 20_000.0,
            records_per_partition_s: 50.0,
            history_days: 30.0,
            takeover_ms: 15.0,
            watch_ms: 5.0,
            seed: 1,
            scenario: Scenario::Crashes,
            event_at_h: 1.0,
        }
    }
}

const USAGE: &str = "cluster_sim [--nodes N] [--partitions P] [--lease-ms MS] [--max-moves N] [--hours H] \
[--mtbf-hours H] [--down-s S] [--replay-rate RECORDS_PER_S] [--records-per-partition-s R] [--history-days D] \
[--takeover-ms MS] [--watch-ms MS] [--seed N] [--scenario crashes|join|leave] [--event-at-h H]

--scenario join: --nodes nodes hold the partitions; one more, with an empty
data directory, joins at --event-at-h. --scenario leave: one of --nodes
leaves gracefully then. Either runs without crashes and stops once the
partitions are spread evenly again (or after --hours).";

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--nodes" => a.nodes = num(&value)? as usize,
            "--partitions" => a.partitions = num(&value)? as u32,
            "--lease-ms" => a.lease_ms = num(&value)?,
            "--max-moves" => a.max_moves = num(&value)? as usize,
            "--hours" => a.hours = num(&value)?,
            "--mtbf-hours" => a.mtbf_hours = num(&value)?,
            "--down-s" => a.down_s = num(&value)?,
            "--replay-rate" => a.replay_rate = num(&value)?,
            "--records-per-partition-s" => a.records_per_partition_s = num(&value)?,
            "--history-days" => a.history_days = num(&value)?,
            "--takeover-ms" => a.takeover_ms = num(&value)?,
            "--watch-ms" => a.watch_ms = num(&value)?,
            "--seed" => a.seed = num(&value)? as u64,
            "--event-at-h" => a.event_at_h = num(&value)?,
            "--scenario" => {
                a.scenario = match value.as_str() {
                    "crashes" => Scenario::Crashes,
                    "join" => Scenario::Join,
                    "leave" => Scenario::Leave,
                    _ => return Err(format!("--scenario: crashes, join or leave\n{USAGE}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.nodes == 0 || a.partitions == 0 || a.lease_ms <= 0.0 || a.replay_rate <= 0.0 || a.max_moves == 0 {
        return Err(format!("--nodes, --partitions, --lease-ms, --replay-rate and --max-moves must be > 0\n{USAGE}"));
    }
    Ok(a)
}

/// splitmix64: a small, seeded generator (runs are reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A node's round; `timed`: renew and rebalance, else take only.
    Round {
        node: usize,
        epoch: u64,
        timed: bool,
    },
    TakeDone {
        node: usize,
        epoch: u64,
        partition: u32,
    },
    Expire {
        partition: u32,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Leave {
        node: usize,
    },
}

#[derive(Default)]
struct Node {
    alive: bool,
    epoch: u64,
    /// Leased by this node (ready or being taken over).
    held: BTreeSet<u32>,
    ready: BTreeSet<u32>,
    /// The count of writable partitions its card says.
    card: usize,
    busy_until: f64,
    key_expires: f64,
    /// When this node last stopped owning each partition (its applied
    /// position in the log is the log's length then).
    left: HashMap<u32, f64>,
}

struct Sim {
    a: Args,
    now: f64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    rng: Rng,
    nodes: Vec<Node>,
    /// partition → (node, expires)
    lease: Vec<Option<(usize, f64)>>,
    /// partition → since when it has had no writable owner, and why.
    unowned: HashMap<u32, (f64, Cause)>,
    // Results.
    gaps: HashMap<Cause, Vec<f64>>,
    max_unowned: usize,
    spread: Vec<f64>,
    crashes: u64,
    creates: u64,
    listings: u64,
    renewals: u64,
    replayed: f64,
    /// Partitions moved by rebalancing or a leave and not yet writable
    /// again, at most at once.
    max_moving: usize,
    /// When the scenario's event happened, and when the partitions were
    /// spread evenly again after it.
    event_t: Option<f64>,
    balanced_t: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cause {
    Crash,
    Moved,
    Left,
    Start,
}

impl Sim {
    fn at(&mut self, t: f64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse(((t * 1000.0) as u64, self.seq, e)));
    }

    fn round_ms(&self) -> f64 {
        self.a.lease_ms / 3.0
    }

    fn log_len(&self, t: f64) -> f64 {
        self.a.records_per_partition_s * (t / 1000.0 + self.a.history_days * 86_400.0)
    }

    fn round(&mut self, node: usize, timed: bool) {
        let t = self.now;
        let lease_ms = self.a.lease_ms;
        // Renew (a live node's renewals are on time, also during long
        // takeovers) and say it is alive: its card, with the partitions it
        // can write.
        for p in self.nodes[node].held.clone() {
            self.lease[p as usize] = Some((node, t + lease_ms));
            self.renewals += 1;
        }
        let n = &mut self.nodes[node];
        n.key_expires = t + lease_ms;
        n.card = n.ready.len();
        // A node in the middle of a takeover renews (above) but decides
        // nothing new until it is done, as `owners::run` does.
        if n.busy_until > t {
            if timed {
                let epoch = n.epoch;
                self.at(t + self.round_ms(), Event::Round { node, epoch, timed: true });
            }
            return;
        }
        self.listings += 1;
        // Every live node's count, from the cards (each as of that node's
        // last round or finished takeover).
        let counts: Vec<(String, usize)> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].key_expires > t)
            .map(|i| (format!("n{i}"), self.nodes[i].card))
            .collect();
        let free = self.lease.iter().filter(|l| !l.is_some_and(|(_, exp)| exp > t)).count();
        let me = format!("n{node}");
        let moves = if timed { self.a.max_moves } else { 0 };
        let held = self.nodes[node].ready.len();
        let nodes = counts.len();
        let plan_for = |free| plan(self.a.partitions, nodes, &me, held, Some(&counts), Some(free), moves);
        // The leases are listed when the node may take or would give.
        if held < share(self.a.partitions, nodes) || plan_for(0).give > 0 {
            self.listings += 1;
        }
        let round_plan = plan_for(free);
        let give: Vec<u32> = self.nodes[node].ready.iter().rev().take(round_plan.give).copied().collect();
        for p in give {
            let n = &mut self.nodes[node];
            n.held.remove(&p);
            n.ready.remove(&p);
            n.left.insert(p, t);
            self.lease[p as usize] = None;
            self.unowned.insert(p, (t, Cause::Moved));
            // The KV watch wakes every other live node.
            for other in 0..self.nodes.len() {
                if other != node && self.nodes[other].alive {
                    let epoch = self.nodes[other].epoch;
                    self.at(t + self.a.watch_ms, Event::Round { node: other, epoch, timed: false });
                }
            }
        }
        if round_plan.take == 0 {
            if timed {
                let epoch = self.nodes[node].epoch;
                self.at(t + self.round_ms(), Event::Round { node, epoch, timed: true });
            }
            return;
        }
        let leased: HashSet<u32> =
            (0..self.a.partitions).filter(|p| self.lease[*p as usize].is_some_and(|(_, exp)| exp > t)).collect();
        for p in to_take(self.a.partitions, &leased, round_plan.take) {
            self.creates += 1;
            self.lease[p as usize] = Some((node, t + lease_ms));
            self.unowned.entry(p).or_insert((t, Cause::Start));
            let since = self.nodes[node].left.get(&p).copied();
            let tail = self.log_len(t) - since.map_or(0.0, |s| self.log_len(s));
            self.replayed += tail;
            let took = self.a.takeover_ms + tail / self.a.replay_rate * 1000.0;
            let n = &mut self.nodes[node];
            n.held.insert(p);
            n.busy_until = t + took;
            let (epoch, done) = (n.epoch, n.busy_until);
            self.at(done, Event::TakeDone { node, epoch, partition: p });
        }
        if timed {
            let epoch = self.nodes[node].epoch;
            self.at(t + self.round_ms(), Event::Round { node, epoch, timed: true });
        }
    }

    fn run(&mut self) {
        let end = self.a.hours * 3_600_000.0;
        // Steady state at the start: partitions spread evenly, every node
        // up to date with what it owns.
        let present = self.present();
        for p in 0..self.a.partitions {
            let node = p as usize % present;
            self.lease[p as usize] = Some((node, self.a.lease_ms));
            self.nodes[node].held.insert(p);
            self.nodes[node].ready.insert(p);
        }
        for node in 0..present {
            self.nodes[node].alive = true;
            self.nodes[node].key_expires = self.a.lease_ms;
            self.nodes[node].card = self.nodes[node].ready.len();
            let phase = self.rng.unit() * self.round_ms();
            self.at(phase, Event::Round { node, epoch: 0, timed: true });
            if self.a.scenario == Scenario::Crashes {
                let crash = self.rng.exp(self.a.mtbf_hours * 3_600_000.0);
                self.at(crash, Event::Crash { node });
            }
        }
        let event = self.a.event_at_h * 3_600_000.0;
        match self.a.scenario {
            Scenario::Crashes => {}
            // The node that joins is the last one, absent until then.
            Scenario::Join => self.at(event, Event::Restart { node: present }),
            Scenario::Leave => self.at(event, Event::Leave { node: 0 }),
        }
        let mut next_sample = 60_000.0;
        while let Some(Reverse((t, _, e))) = self.queue.pop() {
            self.now = t as f64 / 1000.0;
            if self.now > end {
                break;
            }
            while next_sample <= self.now {
                self.sample();
                next_sample += 60_000.0;
            }
            match e {
                Event::Round { node, epoch, timed } => {
                    if self.nodes[node].alive && self.nodes[node].epoch == epoch {
                        self.round(node, timed);
                    }
                }
                Event::TakeDone { node, epoch, partition } => {
                    let n = &mut self.nodes[node];
                    if n.alive && n.epoch == epoch && n.held.contains(&partition) {
                        n.ready.insert(partition);
                        // The card says so at once, and the node decides
                        // again at once (`owners::run`).
                        n.card = n.ready.len();
                        self.at(self.now, Event::Round { node, epoch, timed: false });
                        if let Some((since, cause)) = self.unowned.remove(&partition)
                            && cause != Cause::Start
                        {
                            self.gaps.entry(cause).or_default().push(self.now - since);
                        }
                        self.check_balanced();
                    }
                }
                Event::Expire { partition } => {
                    if self.lease[partition as usize].is_some_and(|(_, exp)| exp <= self.now) {
                        self.lease[partition as usize] = None;
                    }
                }
                Event::Crash { node } => self.crash(node),
                Event::Restart { node } => {
                    let n = &mut self.nodes[node];
                    n.alive = true;
                    n.epoch += 1;
                    n.busy_until = self.now;
                    let epoch = n.epoch;
                    self.at(self.now, Event::Round { node, epoch, timed: true });
                    if self.a.scenario == Scenario::Crashes {
                        let crash = self.now + self.rng.exp(self.a.mtbf_hours * 3_600_000.0);
                        self.at(crash, Event::Crash { node });
                    } else {
                        self.event_t = Some(self.now);
                    }
                }
                Event::Leave { node } => self.leave(node),
            }
            self.max_unowned = self.max_unowned.max(self.unowned.len());
            let moving = self.unowned.values().filter(|(_, c)| matches!(c, Cause::Moved | Cause::Left)).count();
            self.max_moving = self.max_moving.max(moving);
            if self.balanced_t.is_some() {
                break;
            }
        }
    }

    /// Nodes present at the start (a joining node is not).
    fn present(&self) -> usize {
        if self.a.scenario == Scenario::Join { self.nodes.len() - 1 } else { self.nodes.len() }
    }

    /// A graceful leave: the node gives every lease back (each release
    /// wakes the other nodes) and deletes its key.
    fn leave(&mut self, node: usize) {
        let t = self.now;
        self.event_t = Some(t);
        for p in std::mem::take(&mut self.nodes[node].held) {
            self.lease[p as usize] = None;
            self.unowned.insert(p, (t, Cause::Left));
        }
        let n = &mut self.nodes[node];
        n.ready.clear();
        n.alive = false;
        n.epoch += 1;
        n.key_expires = t;
        for other in 0..self.nodes.len() {
            if other != node && self.nodes[other].alive {
                let epoch = self.nodes[other].epoch;
                self.at(t + self.a.watch_ms, Event::Round { node: other, epoch, timed: false });
            }
        }
    }

    /// After the scenario's event: whether every partition is writable and
    /// every live node holds its share, rounded down or up.
    fn check_balanced(&mut self) {
        if self.event_t.is_none() || self.balanced_t.is_some() || !self.unowned.is_empty() {
            return;
        }
        let counts: Vec<usize> = self.nodes.iter().filter(|n| n.alive).map(|n| n.ready.len()).collect();
        let p = self.a.partitions as usize;
        let (floor, ceil) = (p / counts.len(), p.div_ceil(counts.len()));
        if counts.iter().all(|c| (floor..=ceil).contains(c)) {
            self.balanced_t = Some(self.now);
        }
    }

    fn crash(&mut self, node: usize) {
        self.crashes += 1;
        let t = self.now;
        let held: Vec<u32> = self.nodes[node].held.iter().copied().collect();
        for p in held {
            self.unowned.entry(p).or_insert((t, Cause::Crash));
            if self.nodes[node].ready.contains(&p) {
                self.nodes[node].left.insert(p, t);
            }
            if let Some((_, exp)) = self.lease[p as usize] {
                self.at(exp, Event::Expire { partition: p });
            }
        }
        let n = &mut self.nodes[node];
        n.alive = false;
        n.epoch += 1;
        n.held.clear();
        n.ready.clear();
        let down = self.rng.exp(self.a.down_s * 1000.0);
        self.at(t + down, Event::Restart { node });
    }

    /// Partitions per live node, max over mean, once a minute.
    fn sample(&mut self) {
        let counts: Vec<usize> = self.nodes.iter().filter(|n| n.alive).map(|n| n.ready.len()).collect();
        if counts.is_empty() {
            return;
        }
        let mean = self.a.partitions as f64 / counts.len() as f64;
        let max = counts.iter().copied().max().unwrap_or(0) as f64;
        self.spread.push(max / mean);
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut sim = Sim {
        now: 0.0,
        queue: BinaryHeap::new(),
        seq: 0,
        rng: Rng(a.seed),
        nodes: (0..a.nodes + usize::from(a.scenario == Scenario::Join)).map(|_| Node::default()).collect(),
        lease: vec![None; a.partitions as usize],
        unowned: HashMap::new(),
        gaps: HashMap::new(),
        max_unowned: 0,
        spread: Vec::new(),
        crashes: 0,
        creates: 0,
        listings: 0,
        renewals: 0,
        replayed: 0.0,
        max_moving: 0,
        event_t: None,
        balanced_t: None,
        a: a.clone(),
    };
    let started = std::time::Instant::now();
    sim.run();
    let secs = sim.now.min(a.hours * 3_600_000.0) / 1000.0;
    println!("cluster_sim: {:?}", a);
    println!(
        "simulated {:.1} h in {:.1} s: {} crashes, {:.0} KV ops/s (renewals {:.0}/s, listings {:.0}/s, creates {:.2}/s)",
        secs / 3600.0,
        started.elapsed().as_secs_f64(),
        sim.crashes,
        (sim.renewals + sim.listings + sim.creates) as f64 / secs,
        sim.renewals as f64 / secs,
        sim.listings as f64 / secs,
        sim.creates as f64 / secs,
    );
    for (cause, label) in [
        (Cause::Crash, "after a crash"),
        (Cause::Moved, "moved by rebalancing"),
        (Cause::Left, "given back by a leave"),
    ] {
        let mut v = sim.gaps.remove(&cause).unwrap_or_default();
        let n = v.len();
        println!(
            "unwritable {label:<21} {n:>6} takeovers   p50 {:>9.1} s   p99 {:>9.1} s   max {:>9.1} s",
            pct(&mut v, 0.5) / 1000.0,
            pct(&mut v, 0.99) / 1000.0,
            pct(&mut v, 1.0) / 1000.0
        );
    }
    println!("ownerless partitions at once: at most {}", sim.max_unowned);
    println!("moved (rebalancing or a leave) and not yet writable again, at once: at most {}", sim.max_moving);
    if let Some(event) = sim.event_t {
        let what = if a.scenario == Scenario::Join { "joined" } else { "left" };
        let live = sim.nodes.iter().filter(|n| n.alive).count();
        match sim.balanced_t {
            Some(t) => println!(
                "a node {what} at {:.2} h ({live} nodes now): partitions spread evenly again {:.1} s later",
                event / 3_600_000.0,
                (t - event) / 1000.0
            ),
            None => println!(
                "a node {what} at {:.2} h ({live} nodes now): not spread evenly within the simulated time",
                event / 3_600_000.0
            ),
        }
    }
    let mut spread = sim.spread.clone();
    println!(
        "partitions per live node, max / mean (sampled each minute): p50 {:.2}  p99 {:.2}  max {:.2}",
        pct(&mut spread, 0.5),
        pct(&mut spread, 0.99),
        pct(&mut spread, 1.0)
    );
    println!(
        "replayed {:.2e} records ({:.0} records/s on average); effects consumers in the cluster: {} ({} per partition owner)",
        sim.replayed,
        sim.replayed / secs,
        u64::from(a.partitions) * u64::from(a.partitions - 1),
        a.partitions - 1
    );
}
