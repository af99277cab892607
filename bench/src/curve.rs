//! `confab-bench curve`: cost as work grows. Three curves, each a list of
//! points measured with the existing scenarios:
//!
//! - **connections**: dm W = 64 (TCP+TLS, fsync, P pairs) beside N idle,
//!   authenticated, heartbeating TCP+TLS sessions ([`idle::Pool`]) on the
//!   same server; a fresh server per N. Throughput, latency, RSS.
//! - **history**: random pages of 50 ([`catchup::HistoryStore`]) as the
//!   store grows on one server (filled up to each size in turn, never
//!   refilled): warm, and cold after a restart with the page cache dropped.
//! - **sync**: a device catching up with K missed messages
//!   ([`catchup::Backlog`]), the backlog grown on one server; 1 and 8
//!   pages in flight.
//!
//! After each fill, history and sync wait until the server is idle (its
//! flushes and compactions done, see [`settle`]) before reading, so that
//! a point measures the store at that size and not the debt its fill step
//! left (a larger step leaves more).
//!
//! Each curve prints the usual table; `--json FILE` gets the rows and the
//! points, curve by curve, written as each curve finishes. Curves not run
//! this time are kept from an existing FILE, so they can be measured
//! separately. `bench/plot.py FILE DIR` draws them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::daemon::{Daemon, DaemonOpts, status_kib};
use crate::dm::{self, LoadParams, Nodes, load_row};
use crate::load::Shape;
use crate::report::{self, Row};
use crate::wire::{Connector, Transport};
use crate::{Durability, catchup, idle};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct CurveArgs {
    /// Curves to run (comma-separated): connections, history, sync.
    /// Default: all three.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Idle TCP+TLS sessions held beside the dm load, one point each.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 2_000, 5_000, 10_000, 19_000])]
    pub connections: Vec<usize>,
    /// Messages in the history store, one point each (filled in turn).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 2_000_000, 5_000_000, 10_000_000])]
    pub history: Vec<u64>,
    /// Messages a device misses before it syncs, one point each.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000])]
    pub sync: Vec<u64>,
    /// dm sender/receiver pairs.
    #[arg(long, default_value_t = 32)]
    pub pairs: usize,
    /// Measured seconds of each dm run (20 s: one heartbeat interval, so
    /// every held session pings inside the window).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Warm history reads per point.
    #[arg(long, default_value_t = 8_000)]
    pub history_reads: usize,
    /// Cold history reads per point (0: no cold reads, no restarts).
    #[arg(long, default_value_t = 2_000)]
    pub cold_reads: usize,
}

/// The curves, in the order they run.
const CURVES: [&str; 3] = ["connections", "history", "sync"];

/// Runs the curves asked for; prints each one's table and keeps the JSON
/// document in `json` up to date.
pub async fn run(
    args: &CurveArgs,
    confabd: std::path::PathBuf,
    pin: bool,
    json: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    for name in &args.only {
        if !CURVES.contains(&name.as_str()) {
            anyhow::bail!("unknown curve {name:?}: the curves are {}", CURVES.join(", "));
        }
    }
    let opts = |durability| DaemonOpts {
        confabd: confabd.clone(),
        durability,
        pin,
        max_connections: 10_000,
        extra_args: Vec::new(),
        stock_limits: false,
    };
    let mut doc = match json.map(std::fs::read_to_string) {
        Some(Ok(text)) => serde_json::from_str(&text).unwrap_or_else(|_| json!({})),
        _ => json!({}),
    };
    if !doc["curves"].is_object() {
        doc = json!({ "tool": concat!("confab-bench ", env!("CARGO_PKG_VERSION")), "curves": {} });
    }
    for name in CURVES {
        if !(args.only.is_empty() || args.only.iter().any(|o| o == name)) {
            continue;
        }
        let mut out = Out { doc: &mut doc, path: json, name, meta: Meta::now(pin) };
        let (rows, _) = match name {
            "connections" => connections(args, &opts(Durability::Fsync), &mut out).await,
            "history" => history(args, &opts(Durability::Buffered), &mut out).await,
            _ => sync(args, &opts(Durability::Fsync), &mut out).await,
        }
        .with_context(|| format!("curve {name}"))?;
        println!();
        println!("curve {name} — {}", out.meta.finish()["title"].as_str().unwrap_or_default());
        print!("{}", report::table(&rows));
        if let Some(path) = json {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Where a curve's points go: the JSON document, rewritten after every
/// point (a curve cut short keeps what it measured, marked partial).
struct Out<'a> {
    doc: &'a mut serde_json::Value,
    path: Option<&'a std::path::Path>,
    name: &'static str,
    meta: Meta,
}

impl Out<'_> {
    fn save(&mut self, rows: &[Row], points: &[serde_json::Value], complete: bool) -> anyhow::Result<()> {
        self.doc["curves"][self.name] = json!({
            "meta": self.meta.finish(),
            "complete": complete,
            "points": points,
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        if let Some(path) = self.path {
            std::fs::write(path, serde_json::to_string_pretty(self.doc)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Where and when a curve was measured.
struct Meta {
    pin: bool,
    started: String,
    load_before: String,
}

impl Meta {
    fn now(pin: bool) -> Meta {
        Meta { pin, started: crate::chrono_like_now(), load_before: loadavg() }
    }

    fn finish(&self) -> serde_json::Value {
        // The machine's CPUs (this process may be pinned to one of them).
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(1);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find(|l| l.starts_with("model name"))?.split_once(':').map(|(_, m)| m.trim().into())
            })
            .unwrap_or_else(|| "unknown CPU".to_string());
        let mem_gib = status_like("/proc/meminfo", "MemTotal").map_or(0.0, |kib| kib as f64 / 1_048_576.0);
        let machine = format!("{cpus} vCPU {model}, {mem_gib:.0} GiB");
        let commit = command_out("git", &["rev-parse", "--short", "HEAD"]);
        let load_after = loadavg();
        let title = format!(
            "{machine} — {} — commit {} — {} — load {} → {}",
            self.started,
            if commit.is_empty() { "?" } else { &commit },
            if self.pin { "server CPU 0, bench CPU 1" } else { "not pinned" },
            self.load_before,
            load_after
        );
        json!({
            "machine": machine,
            "cpus": cpus,
            "started": self.started,
            "finished": crate::chrono_like_now(),
            "commit": commit,
            "pinned": self.pin,
            "loadavg_before": self.load_before,
            "loadavg_after": load_after,
            "title": title,
        })
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_like(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn command_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The latency percentiles of a row, in µs.
fn percentiles(row: &Row) -> serde_json::Value {
    json!({ "p50_us": row.p(0.50), "p99_us": row.p(0.99), "p999_us": row.p(0.999) })
}

/// dm W = 64 beside N idle sessions, a fresh server per N.
async fn connections(
    args: &CurveArgs,
    base: &DaemonOpts,
    out: &mut Out<'_>,
) -> anyhow::Result<(Vec<Row>, Vec<serde_json::Value>)> {
    let (mut rows, mut points) = (Vec::new(), Vec::new());
    // Each TCP session is a file descriptor on both sides (the idle
    // scenario's bound: see `Suite::idle`).
    let hard = crate::daemon::nofile_hard();
    let fd_cap = (hard as usize).saturating_sub(1000);
    let params = LoadParams {
        shape: Shape::Closed { window: 64 },
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(args.duration.max(0.5)),
    };
    let pairs = args.pairs;
    for &n in &args.connections {
        let held = n.min(fd_cap);
        eprintln!("curve connections: {held} idle sessions beside dm W=64");
        let mut opts = base.clone();
        opts.max_connections = held + 1000;
        let server = Daemon::start(&opts).await?;
        let result = async {
            let target = server.target();
            let rss = || status_kib(server.pid, "VmRSS").unwrap_or(0);
            let mut pool = idle::Pool::new(&target, Transport::Tcp, held).await?;
            let rss_before = rss();
            let growth = pool.grow(held, |_| {}).await?;
            // Let the connects' garbage settle before reading the RSS.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss_idle = rss();
            eprintln!(
                "  {} sessions up in {:.1}s ({} failed), server RSS {} MiB",
                pool.ok,
                growth.seconds,
                pool.failed,
                rss_idle / 1024
            );
            let nodes = Nodes::one(Arc::new(Connector::confab(&target.fingerprint, 16 * 1024)?), target.clone());
            let (outcome, reading) = dm::confab_dm(&nodes, Transport::Tcp, pairs, &params, &[server.pid]).await?;
            let rss_end = rss();
            let secs = params.duration.as_secs_f64();
            let config = format!("tcp fsync W=64 P={pairs} idle={held}");
            let mut row = load_row("dm", "confab", config, "msg/s", outcome, reading, secs);
            row.extra["idle_sessions"] = pool.ok.into();
            row.extra["idle_failed"] = pool.failed.into();
            row.extra["rss_before_idle_kib"] = rss_before.into();
            row.extra["rss_idle_kib"] = rss_idle.into();
            row.extra["connect_per_sec"] = (growth.ok as f64 / growth.seconds.max(1e-6)).into();
            if pool.failed > 0 {
                row.notes.push(format!(
                    "{} idle sessions failed to connect, first: {}",
                    pool.failed,
                    pool.first_error.clone().unwrap_or_default()
                ));
            }
            if held < n {
                row.notes.push(format!(
                    "{held} instead of {n} idle sessions: the open-file hard limit here is {hard} and cannot be raised"
                ));
            }
            let point = json!({
                "asked": n,
                "idle_sessions": pool.ok,
                "msg_per_sec": row.value,
                "latency": percentiles(&row),
                "server_cpu_pct": row.srv_cpu,
                "generator_cpu_pct": row.gen_cpu,
                "server_cpu_us_per_msg": row.cpu_per_msg_us,
                "rss_before_idle_kib": rss_before,
                "rss_idle_kib": rss_idle,
                "rss_end_kib": rss_end,
                "connect_per_sec": row.extra["connect_per_sec"],
            });
            pool.close().await;
            anyhow::Ok((row, point))
        }
        .await;
        server.stop().await;
        let (row, point) = result.with_context(|| format!("{held} idle sessions"))?;
        eprintln!("  {} msg/s, p99 {}", report::figure(row.value), row.p(0.99).map_or("-".into(), report::lat));
        rows.push(row);
        points.push(point);
        out.save(&rows, &points, false)?;
    }
    out.save(&rows, &points, true)?;
    Ok((rows, points))
}

/// History pages as one store grows.
async fn history(
    args: &CurveArgs,
    opts: &DaemonOpts,
    out: &mut Out<'_>,
) -> anyhow::Result<(Vec<Row>, Vec<serde_json::Value>)> {
    let (mut rows, mut points) = (Vec::new(), Vec::new());
    let mut sizes = args.history.clone();
    sizes.sort_unstable();
    let mut store = catchup::HistoryStore::new(opts, Transport::Tcp).await?;
    let result = async {
        for (i, &m) in sizes.iter().enumerate() {
            let fill_secs = store.grow_to(m).await?;
            let stored = store.stored();
            // Read the store, not the flushes and compactions the fill
            // left behind.
            let settle_secs = match store.pid() {
                Some(pid) => settle(pid).await,
                None => 0.0,
            };
            eprintln!(
                "curve history: {stored} messages stored (this step's fill took {fill_secs:.1}s, the server was idle \
                 {settle_secs:.1}s later)"
            );
            let seed = 2 * i as u64 + 1;
            let mut warm = store.warm(args.history_reads, seed).await?;
            warm.extra["fill_seconds"] = fill_secs.into();
            warm.extra["settle_seconds"] = settle_secs.into();
            let mut point = json!({
                "messages": stored,
                "fill_seconds": fill_secs,
                "settle_seconds": settle_secs,
                "warm": { "pages_per_sec": warm.value, "latency": percentiles(&warm), "server_rss_kib": warm.srv_rss_kib },
            });
            let mut cold = None;
            if args.cold_reads > 0 {
                let (row, on_disk) = store.cold(args.cold_reads, seed + 1).await?;
                catchup::on_disk_note(&mut warm, on_disk, stored);
                point["bytes_on_disk"] = on_disk.into();
                point["cold"] = json!({
                    "pages_per_sec": row.value,
                    "latency": percentiles(&row),
                    "server_rss_kib": row.srv_rss_kib,
                });
                cold = Some(row);
            }
            eprintln!(
                "  warm p99 {}, cold p99 {}",
                warm.p(0.99).map_or("-".into(), report::lat),
                cold.as_ref().and_then(|c| c.p(0.99)).map_or("-".into(), report::lat)
            );
            rows.push(warm);
            rows.extend(cold);
            points.push(point);
            out.save(&rows, &points, false)?;
        }
        anyhow::Ok(())
    }
    .await;
    store.stop().await;
    result?;
    out.save(&rows, &points, true)?;
    Ok((rows, points))
}

/// Waits until the server at `pid` uses less than 10 % of a core over a
/// second (its background flushes and compactions done), at most 60 s;
/// returns the seconds waited.
async fn settle(pid: u32) -> f64 {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        let before = crate::daemon::cpu_seconds(Some(pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
        match (before, crate::daemon::cpu_seconds(Some(pid))) {
            (Some(a), Some(b)) if b - a < 0.1 => break,
            (Some(_), Some(_)) => {}
            _ => break,
        }
    }
    t.elapsed().as_secs_f64()
}

/// Catch-up rate as one backlog grows.
async fn sync(
    args: &CurveArgs,
    opts: &DaemonOpts,
    out: &mut Out<'_>,
) -> anyhow::Result<(Vec<Row>, Vec<serde_json::Value>)> {
    let (mut rows, mut points) = (Vec::new(), Vec::new());
    let mut sizes = args.sync.clone();
    sizes.sort_unstable();
    let server = Daemon::start(opts).await?;
    let result = async {
        let mut backlog = catchup::Backlog::new(&server, Transport::Tcp).await?;
        for &k in &sizes {
            let fill_secs = backlog.grow_to(k).await?;
            let settle_secs = settle(server.pid).await;
            eprintln!(
                "curve sync: backlog of {} (this step's fill took {fill_secs:.1}s, the server was idle {settle_secs:.1}s \
                 later)",
                backlog.stored
            );
            let mut point = json!({ "backlog": backlog.stored, "fill_seconds": fill_secs, "settle_seconds": settle_secs });
            for window in [1u64, 8] {
                let row = backlog.catch_up_row(server.pid, window).await?;
                point[format!("window{window}")] = json!({
                    "events_per_sec": row.value,
                    "seconds": row.extra["seconds"],
                    "complete": row.extra["contiguous_and_complete"],
                    "server_cpu_pct": row.srv_cpu,
                    "server_rss_kib": row.srv_rss_kib,
                });
                rows.push(row);
            }
            points.push(point);
            out.save(&rows, &points, false)?;
        }
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    result?;
    out.save(&rows, &points, true)?;
    Ok((rows, points))
}
