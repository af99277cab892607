//! `confab-bench`: load generator and scenarios for `confabd`, with the
//! baselines (a bare relay, nats-server, ejabberd) measured in the same
//! run on the same machine.
//!
//! Starts its own `confabd` (a child process in a temp dir, found next to
//! this binary) for every run, pinned to CPU 0 with `--pin` while the
//! generator runs on CPU 1, and prints a table (and `--json FILE`).
//! `confab-bench all` runs everything. See `bench/README.md`.
//!
//! Layout: `wire` (transports and the pump), `pipe` (a pipelined Confab
//! session), `load` (the engine: closed and open loop over any
//! [`load::Link`]), one module per system (`confab`, `relay`, `nats`,
//! `xmpp`), one per scenario family (`dm`, `idle`, `catchup`), `curve`
//! (the same scenarios as work grows), `daemon`
//! (child processes and /proc), `cluster` (N nats-servers and N confabd
//! nodes), `report` and `targets`.
// Printing results is this binary's job.
#![allow(clippy::print_stdout)]

mod abuse;
mod catchup;
mod cluster;
mod confab;
mod curve;
mod daemon;
mod dm;
mod idle;
mod load;
mod nats;
mod pipe;
mod relay;
mod report;
mod restart;
mod suite;
mod targets;
mod wire;
mod ws;
mod xmpp;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::suite::{Suite, SuiteArgs};

/// Load generator and scenarios for confabd, with baselines.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Pin the server to CPU 0 and this generator to CPU 1 (taskset).
    #[arg(long, global = true)]
    pub pin: bool,
    /// Also write the figures as JSON to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print each figure's target with PASS/MISS.
    #[arg(long, global = true)]
    pub target: bool,
    /// The confabd binary to start (default: next to this binary).
    #[arg(long, global = true, value_name = "PATH")]
    pub confabd: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything: every scenario and every baseline, one table.
    All(SuiteArgs),
    /// Only the scenarios and systems named (comma-separated), e.g.
    /// `run --only dm,group --systems confab,relay`.
    Run(SuiteArgs),
    /// Hold N idle sessions on a running confabd (for profiling its
    /// memory), then print the idle and connect rows.
    Hold {
        /// Its address for the transport.
        #[arg(long)]
        server: std::net::SocketAddr,
        /// Its certificate fingerprint (hex; "sha256:" ok).
        #[arg(long)]
        fingerprint: String,
        /// Its pid (for /proc readings).
        #[arg(long)]
        pid: Option<u32>,
        /// Transport.
        #[arg(long, value_enum, default_value_t = wire::Transport::Tcp)]
        transport: wire::Transport,
        /// Sessions.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
    },
    /// Restart time: write at each rate for a while, stop confabd
    /// (SIGKILL, then SIGTERM in a second round), start it again on the
    /// same data, and time spawn → listening → first answered request.
    Restart {
        /// Write rates in messages per second (0: as fast as acks come).
        #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 5000, 0])]
        rates: Vec<u64>,
        /// Seconds of writes before each stop.
        #[arg(long, value_delimiter = ',', default_values_t = [10.0f64, 30.0])]
        seconds: Vec<f64>,
        /// When confabd acknowledges a write.
        #[arg(long, value_enum, default_value_t = Durability::Fsync)]
        durability: Durability,
    },
    /// The security review's attacks (login bursts, concurrent guesses, one
    /// account's login flood, a group-creation flood) against confabd with
    /// its stock limits: memory, checks, who still gets in, a bystander's
    /// latency. Takes about three minutes.
    Abuse {
        /// Only these attacks (comma-separated): login-burst, guesses,
        /// login-flood, group-flood.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Cost as work grows: dm throughput and latency against idle
    /// connections held, history latency against store size, catch-up
    /// rate against backlog; one table per curve (and the points with
    /// `--json`, for `bench/plot.py`).
    Curve(curve::CurveArgs),
    /// Serve the bare relay (used by the bench itself, as a child).
    #[command(hide = true)]
    Relay {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Certificate directory (cert.pem, key.pem are generated there).
        #[arg(long)]
        dir: PathBuf,
    },
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Relay { listen, dir } = &cli.command {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("runtime")?;
        return runtime.block_on(relay::serve(*listen, dir));
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    daemon::raise_nofile();
    if cli.pin {
        if cpus < 2 {
            bail!("--pin needs at least 2 CPUs");
        }
        // Before the runtime exists, so every worker thread inherits it.
        daemon::pin_self(1)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let args = match &cli.command {
        Command::All(a) | Command::Run(a) => a.clone(),
        Command::Hold { server, fingerprint, pid, transport, connections } => {
            let fingerprint = confab_client::tls::normalize_fingerprint(fingerprint);
            let target = pipe::Target { tcp: Some(*server), quic: Some(*server), http: Some(*server), fingerprint };
            let rows = runtime.block_on(idle::hold(&target, *pid, *transport, *connections))?;
            print!("{}", report::table(&rows));
            return Ok(());
        }
        Command::Restart { rates, seconds, durability } => {
            let opts = daemon::DaemonOpts {
                confabd: daemon::locate(cli.confabd.as_deref())?,
                durability: *durability,
                pin: cli.pin,
                max_connections: 1000,
                extra_args: Vec::new(),
                stock_limits: false,
            };
            let rows = runtime.block_on(restart::run(&opts, rates, seconds))?;
            return print_rows(&rows, cli.json.as_deref());
        }
        Command::Abuse { only } => {
            let opts = daemon::DaemonOpts {
                confabd: daemon::locate(cli.confabd.as_deref())?,
                durability: Durability::Fsync,
                pin: cli.pin,
                max_connections: 10_000,
                extra_args: Vec::new(),
                stock_limits: true,
            };
            let rows = runtime.block_on(abuse::run(&opts, only))?;
            return print_rows(&rows, cli.json.as_deref());
        }
        Command::Curve(args) => {
            let confabd = daemon::locate(cli.confabd.as_deref())?;
            return runtime.block_on(curve::run(args, confabd, cli.pin, cli.json.as_deref()));
        }
        Command::Relay { .. } => unreachable_relay()?,
    };
    let all = matches!(cli.command, Command::All(_));
    let started = chrono_like_now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut suite = Suite::new(&cli, args, all)?;
    let rows = runtime.block_on(suite.run())?;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "confab-bench {} — {} — {} CPUs, pinned: {} — load average before: {} after: {}",
        env!("CARGO_PKG_VERSION"),
        started,
        cpus,
        if cli.pin { "server CPU 0, generator CPU 1" } else { "no" },
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_after.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    print!("{}", report::table(&rows));
    let verdicts = targets::check(&rows);
    if cli.target {
        println!();
        print!("{}", targets::table(&verdicts));
    }
    if let Some(path) = &cli.json {
        let mut doc = report::json(&rows, verdicts.iter().map(targets::Verdict::to_json).collect());
        doc["cpus"] = cpus.into();
        doc["pinned"] = cli.pin.into();
        doc["started"] = started.into();
        doc["loadavg_before"] = load_before.trim().into();
        doc["loadavg_after"] = load_after.trim().into();
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Prints the table of a single-scenario command, and its JSON to `json`.
fn print_rows(rows: &[report::Row], json: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!();
    print!("{}", report::table(rows));
    if let Some(path) = json {
        let doc = report::json(rows, Vec::new());
        std::fs::write(path, serde_json::to_string_pretty(&doc)?).with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}

fn unreachable_relay() -> anyhow::Result<SuiteArgs> {
    bail!("relay is handled above")
}

/// The current UTC time as "2026-12-01 06:40 UTC" (from `date`, to need no
/// time crate).
fn chrono_like_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
