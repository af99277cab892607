//! `confab-bench`: load generator and scenarios for `confabd`.
//!
//! Starts its own `confabd` (a child process in a temp dir, found next to
//! this binary) unless `--server` points at one, runs a scenario, and prints
//! a table (and `--json FILE`). See `bench/README.md`.
// Printing results is this binary's job.
#![allow(clippy::print_stdout)]

mod daemon;
mod dm;
mod pipe;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use confab_client::TransportKind;

use crate::daemon::Daemon;
use crate::dm::DmParams;
use crate::pipe::Target;
use crate::report::RunReport;

/// Load generator and scenarios for confabd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Pin the server to CPU 0 and this generator to CPU 1 (taskset).
    #[arg(long, global = true)]
    pin: bool,
    /// Also write the figures as JSON to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The confabd binary to start (default: next to this binary).
    #[arg(long, global = true, value_name = "PATH")]
    confabd: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Direct messages: P pairs, each sender keeping W sends in flight to
    /// its DM, each receiver timing send → delivery.
    Dm(DmArgs),
    /// The standard set: dm with W=1 and W=64, fsync and buffered, over TCP
    /// (plus QUIC unless --quick), in one table.
    All(AllArgs),
}

#[derive(Debug, Args)]
struct DmArgs {
    /// Sender/receiver pairs (each pair: two users, two sessions).
    #[arg(long, default_value_t = 32)]
    pairs: usize,
    /// Sends in flight per sender (closed loop).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportKind::Tcp)]
    transport: TransportKind,
    /// Durability of the server we start (ignored with --server).
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// Use a running server (HOST:PORT for the chosen transport) instead of
    /// starting one; needs --fingerprint.
    #[arg(long, value_name = "HOST:PORT", requires = "fingerprint")]
    server: Option<String>,
    /// The external server's certificate fingerprint (hex, "sha256:" ok).
    #[arg(long, value_name = "HEX")]
    fingerprint: Option<String>,
    /// The external server's pid, to read its CPU and memory from /proc.
    #[arg(long, value_name = "PID", requires = "server")]
    server_pid: Option<u32>,
}

#[derive(Debug, Args)]
struct AllArgs {
    /// A few seconds per run, TCP only: the first thing to run.
    #[arg(long)]
    quick: bool,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 32)]
    pairs: usize,
}

/// When confabd acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// After fsync (group commit).
    Fsync,
    /// After the write reaches the OS.
    Buffered,
}

impl Durability {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Buffered => "buffered",
        }
    }
}

fn transport_name(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Tcp => "tcp",
        TransportKind::Quic => "quic",
    }
}

/// One run to do.
#[derive(Debug, Clone)]
struct Plan {
    transport: TransportKind,
    durability: Durability,
    params: DmParams,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let external = matches!(&cli.command, Command::Dm(a) if a.server.is_some());
    if cli.pin {
        if cpus < 2 {
            bail!("--pin needs at least 2 CPUs");
        }
        // Before the runtime exists, so every worker thread inherits it.
        daemon::pin_self(1)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let runs = runtime.block_on(run(&cli, external))?;
    print!("{}", report::table(&runs));
    if let Some(path) = &cli.json {
        let mut doc = report::json(&runs);
        doc["cpus"] = cpus.into();
        doc["pinned"] = cli.pin.into();
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn run(cli: &Cli, external: bool) -> anyhow::Result<Vec<RunReport>> {
    let secs = |s: f64| Duration::try_from_secs_f64(s).map_err(|e| anyhow!("bad duration {s}: {e}"));
    let plans: Vec<Plan> = match &cli.command {
        Command::Dm(a) => {
            if a.pairs == 0 || a.window == 0 {
                bail!("--pairs and --window must be at least 1");
            }
            let params =
                DmParams { pairs: a.pairs, window: a.window, duration: secs(a.duration)?, warmup: secs(a.warmup)? };
            vec![Plan { transport: a.transport, durability: a.durability, params }]
        }
        Command::All(a) => {
            let (duration, warmup) = if a.quick { (3.0, 1.0) } else { (10.0, 1.0) };
            let transports: &[TransportKind] =
                if a.quick { &[TransportKind::Tcp] } else { &[TransportKind::Tcp, TransportKind::Quic] };
            let mut plans = Vec::new();
            for &transport in transports {
                for durability in [Durability::Fsync, Durability::Buffered] {
                    for window in [1, 64] {
                        let params =
                            DmParams { pairs: a.pairs, window, duration: secs(duration)?, warmup: secs(warmup)? };
                        plans.push(Plan { transport, durability, params });
                    }
                }
            }
            plans
        }
    };

    let mut reports = Vec::new();
    for plan in plans {
        let report = if external { run_external(cli, &plan).await? } else { run_local(cli, &plan).await? };
        eprintln!(
            "done: dm {} {} P={} W={}: {:.0} delivered/s",
            transport_name(plan.transport),
            report.durability,
            plan.params.pairs,
            plan.params.window,
            report.delivered_per_sec()
        );
        reports.push(report);
    }
    Ok(reports)
}

/// CPU readings at the start and end of the measured window.
#[derive(Debug, Default)]
struct CpuWindow {
    generator: [Option<f64>; 2],
    server: [Option<f64>; 2],
    server_rss: Option<u64>,
    server_peak: Option<u64>,
}

impl CpuWindow {
    fn pct(a: [Option<f64>; 2], secs: f64) -> Option<f64> {
        Some((a[1]? - a[0]?) / secs * 100.0)
    }
}

async fn measure(
    target: &Target,
    plan: &Plan,
    server_pid: Option<u32>,
    durability: String,
) -> anyhow::Result<RunReport> {
    let mut cpu = CpuWindow::default();
    let outcome = dm::run(target, &plan.params, |start| {
        let i = usize::from(!start);
        cpu.generator[i] = daemon::cpu_seconds(None);
        if let Some(pid) = server_pid {
            cpu.server[i] = daemon::cpu_seconds(Some(pid));
            if !start {
                cpu.server_rss = daemon::status_kib(pid, "VmRSS");
                cpu.server_peak = daemon::status_kib(pid, "VmHWM");
            }
        }
    })
    .await?;
    let seconds = plan.params.duration.as_secs_f64();
    Ok(RunReport {
        scenario: "dm",
        transport: transport_name(plan.transport).into(),
        durability,
        pairs: plan.params.pairs,
        window: plan.params.window,
        seconds,
        outcome,
        gen_cpu_pct: CpuWindow::pct(cpu.generator, seconds),
        server_cpu_pct: CpuWindow::pct(cpu.server, seconds),
        server_rss_kib: cpu.server_rss,
        server_peak_kib: cpu.server_peak,
    })
}

async fn run_local(cli: &Cli, plan: &Plan) -> anyhow::Result<RunReport> {
    let confabd = daemon::locate(cli.confabd.as_deref())?;
    let mut server = Daemon::start(&confabd, plan.durability, cli.pin).await?;
    let target = Target {
        tcp: server.tcp,
        quic: server.quic,
        fingerprint: server.fingerprint.clone(),
        transport: plan.transport,
    };
    let result = measure(&target, plan, Some(server.pid), plan.durability.as_str().into()).await;
    if !server.alive() {
        eprintln!("warning: confabd exited during the run (see its stderr above)");
    }
    server.stop().await;
    result
}

async fn run_external(cli: &Cli, plan: &Plan) -> anyhow::Result<RunReport> {
    let Command::Dm(a) = &cli.command else { bail!("--server is a dm option") };
    let (Some(server), Some(fp)) = (&a.server, &a.fingerprint) else { bail!("--server needs --fingerprint") };
    let addr = tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("resolving {server}"))?
        .next()
        .ok_or_else(|| anyhow!("{server}: no address"))?;
    let (tcp, quic) = match plan.transport {
        TransportKind::Tcp => (Some(addr), None),
        TransportKind::Quic => (None, Some(addr)),
    };
    let fingerprint = confab_client::tls::normalize_fingerprint(fp);
    let target = Target { tcp, quic, fingerprint, transport: plan.transport };
    measure(&target, plan, a.server_pid, "external".into()).await
}
