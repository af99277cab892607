//! The suite: which scenario runs against which system with which
//! settings, each on a freshly started server (same pinning for all), in
//! one table.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cluster::{self, ClusterOpts};
use crate::daemon::{Daemon, DaemonOpts};
use crate::dm::{self, LoadParams, Nodes, load_row};
use crate::load::Shape;
use crate::report::Row;
use crate::wire::{Connector, Transport};
use crate::{Cli, Durability, catchup, idle, nats, relay, xmpp};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// Short runs and fewer connections: a first look in about 3 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run (comma-separated): dm, soak, group, idle,
    /// sync, history, login, overload. Default: all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Systems to run (comma-separated): confab, relay, nats, ejabberd,
    /// cluster2, cluster3 (dm and group on 2 or 3 confabd nodes over as
    /// many nats-servers). Default: all that are installed.
    #[arg(long, value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Partitions of the cluster systems.
    #[arg(long, default_value_t = 16)]
    pub cluster_partitions: u32,
    /// dm sender/receiver pairs.
    #[arg(long, default_value_t = 32)]
    pub pairs: usize,
    /// Groups of 100 members.
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    /// Measured seconds per load run (default 5; 2 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Idle connections per transport (default 50,000; 5,000 with --quick).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Messages a device misses before it syncs (default 100,000).
    #[arg(long)]
    pub sync_messages: Option<u64>,
    /// Messages in the history store (default 1,000,000; 200,000 with --quick).
    #[arg(long)]
    pub history_messages: Option<u64>,
    /// Measured seconds of the soak row: dm at full speed on one store
    /// for long enough that merges into a grown level 1 (and the writers'
    /// waits for them) show (default 40; 10 with --quick).
    #[arg(long)]
    pub soak: Option<f64>,
    /// Run the dm open-loop rows at this many messages per second in all,
    /// instead of at 25 % of the W=64 row's rate: to compare two builds'
    /// latency at the same offered load (rows tagged `open@RATE`, which
    /// no target reads).
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = positive_rate)]
    pub open_rate: Option<f64>,
    /// Also run dm W=64 over QUIC and WebSocket (always in a full `all`).
    #[arg(long)]
    pub quic: bool,
    /// Transports of the idle scenario (comma-separated): tcp, ws, quic.
    /// Default: all three.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub idle_transports: Vec<Transport>,
}

/// A suite in progress.
pub struct Suite {
    args: SuiteArgs,
    pin: bool,
    confabd: std::path::PathBuf,
    rows: Vec<Row>,
    all: bool,
    /// The per-sender rate of Confab's first open-loop row (fsync), which
    /// the relay is also run at: the generator's and the network's own
    /// latency at the same offered load.
    open_rate: Option<f64>,
}

impl Suite {
    /// Checks what is installed.
    pub fn new(cli: &Cli, args: SuiteArgs, all: bool) -> anyhow::Result<Suite> {
        let confabd = crate::daemon::locate(cli.confabd.as_deref())?;
        Ok(Suite { args, pin: cli.pin, confabd, rows: Vec::new(), all, open_rate: None })
    }

    fn wants(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }

    fn system(&self, system: &str) -> bool {
        self.args.systems.is_empty() || self.args.systems.iter().any(|s| s == system)
    }

    fn params(&self, shape: Shape) -> LoadParams {
        let secs = self.args.duration.unwrap_or(if self.args.quick { 2.0 } else { 5.0 });
        LoadParams { shape, warmup: Duration::from_secs(1), duration: Duration::from_secs_f64(secs.max(0.5)) }
    }

    fn opts(&self, durability: Durability) -> DaemonOpts {
        DaemonOpts {
            confabd: self.confabd.clone(),
            durability,
            pin: self.pin,
            max_connections: 10_000,
            extra_args: Vec::new(),
            stock_limits: false,
        }
    }

    fn push(&mut self, row: Row) {
        eprintln!(
            "  {} {} {}: {} {}",
            row.scenario,
            row.system,
            row.config,
            crate::report::figure(row.value),
            row.unit
        );
        self.rows.push(row);
    }

    /// Runs everything asked for; returns the rows.
    pub async fn run(&mut self) -> anyhow::Result<Vec<Row>> {
        if self.wants("dm") || self.wants("overload") {
            self.dm().await?;
        }
        if self.wants("soak") {
            self.soak().await?;
        }
        if self.wants("group") {
            self.group().await?;
        }
        if self.wants("dm") || self.wants("group") {
            self.cluster().await?;
        }
        if self.wants("idle") {
            self.idle().await?;
        }
        if self.wants("sync") {
            self.sync().await?;
        }
        if self.wants("history") {
            self.history().await?;
        }
        if self.wants("login") {
            self.login().await?;
        }
        if self.all || self.args.systems.iter().any(|s| s != "confab") {
            self.baselines().await?;
        }
        Ok(std::mem::take(&mut self.rows))
    }

    async fn confab_dm(
        &mut self,
        transport: Transport,
        durability: Durability,
        shape: Shape,
        tag: &str,
    ) -> anyhow::Result<f64> {
        let scenario = if tag == "over2x" { "overload" } else { "dm" };
        self.confab_dm_for(transport, durability, self.params(shape), scenario, tag).await
    }

    /// A dm row with its own load parameters, named `scenario`.
    async fn confab_dm_for(
        &mut self,
        transport: Transport,
        durability: Durability,
        params: LoadParams,
        scenario: &'static str,
        tag: &str,
    ) -> anyhow::Result<f64> {
        let pairs = self.args.pairs;
        let shape = params.shape;
        let server = Daemon::start(&self.opts(durability)).await?;
        let nodes = Nodes::one(Arc::new(Connector::confab(&server.fingerprint, 16 * 1024)?), server.target());
        let result = dm::confab_dm(&nodes, transport, pairs, &params, &[server.pid]).await;
        server.stop().await;
        let (outcome, reading) =
            result.with_context(|| format!("dm {} {} {tag}", transport.name(), durability.as_str()))?;
        let config = format!("{} {} {tag} P={pairs}", transport.name(), durability.as_str());
        let mut row = load_row(scenario, "confab", config, "msg/s", outcome, reading, params.duration.as_secs_f64());
        if let Shape::Open { rate } = shape {
            row.extra["offered_per_sec"] = (rate * pairs as f64).into();
            let shed: u64 = row.extra["errors"].as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
            let pushed = row.extra["pushed_back"].as_u64().unwrap_or(0);
            row.extra["shed_or_pushed_back"] = (shed + pushed).into();
        }
        let value = row.value;
        self.push(row);
        Ok(value)
    }

    async fn dm(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        eprintln!("dm (confab)");
        let pairs = self.args.pairs as f64;
        for durability in [Durability::Fsync, Durability::Buffered] {
            if self.wants("dm") {
                self.confab_dm(Transport::Tcp, durability, Shape::Closed { window: 1 }, "W=1").await?;
            }
            let max = self.confab_dm(Transport::Tcp, durability, Shape::Closed { window: 64 }, "W=64").await?;
            if self.wants("dm") {
                let (rate, tag) = match self.args.open_rate {
                    Some(total) => (total / pairs, format!("open@{total:.0}")),
                    None => (0.25 * max / pairs, "open25".to_string()),
                };
                self.open_rate.get_or_insert(rate);
                self.confab_dm(Transport::Tcp, durability, Shape::Open { rate }, &tag).await?;
            }
            if durability == Durability::Fsync && self.wants("overload") {
                let rate = 2.0 * max / pairs;
                self.confab_dm(Transport::Tcp, durability, Shape::Open { rate }, "over2x").await?;
            }
        }
        if (self.args.quic || (self.all && !self.args.quick)) && self.wants("dm") {
            for transport in [Transport::Quic, Transport::Ws] {
                self.confab_dm(transport, Durability::Fsync, Shape::Closed { window: 64 }, "W=64").await?;
            }
        }
        Ok(())
    }

    /// dm at full speed (fsync, W = 64) for `--soak` seconds on one
    /// store. The dm rows' windows are a few seconds on a fresh store,
    /// where every merge rewrites a small level 1; a node under load for
    /// hours merges into a large one, and its writers wait (up to the
    /// store's flush wait bound) when merges fall behind. The row's p99.9,
    /// maximum and latency halves show those waits.
    async fn soak(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        let secs = self.args.soak.unwrap_or(if self.args.quick { 10.0 } else { 40.0 }).max(1.0);
        eprintln!("soak (confab, dm fsync W=64 for {secs} s on one store)");
        let mut params = self.params(Shape::Closed { window: 64 });
        params.duration = Duration::from_secs_f64(secs);
        let tag = format!("W=64 {secs}s");
        self.confab_dm_for(Transport::Tcp, Durability::Fsync, params, "soak", &tag).await?;
        Ok(())
    }

    async fn group(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        eprintln!("group (confab)");
        let groups = self.args.groups;
        for (durability, w) in [(Durability::Fsync, 1), (Durability::Fsync, 64), (Durability::Buffered, 64)] {
            let params = self.params(Shape::Closed { window: w });
            let server = Daemon::start(&self.opts(durability)).await?;
            let nodes = Nodes::one(Arc::new(Connector::confab(&server.fingerprint, 16 * 1024)?), server.target());
            let result = dm::confab_group(&nodes, Transport::Tcp, groups, &params, &[server.pid]).await;
            server.stop().await;
            let (outcome, reading, exact) = result.context("group")?;
            let config = format!("tcp {} W={w} G={groups}", durability.as_str());
            let mut row = load_row("group", "confab", config, "dlv/s", outcome, reading, params.duration.as_secs_f64());
            row.extra["one_write_one_entry"] = exact.into();
            if !exact {
                row.notes.push("message writes or inbox entries did not match one per member".into());
            }
            self.push(row);
        }
        Ok(())
    }

    /// dm and group on 2 and 3 nodes, each row on a fresh cluster:
    /// buffered durability (the replicated log is what makes a write
    /// durable there), W = 1 for latency and W = 64 for throughput.
    async fn cluster(&mut self) -> anyhow::Result<()> {
        let sizes: Vec<usize> = [2, 3].into_iter().filter(|n| self.system(&format!("cluster{n}"))).collect();
        if sizes.is_empty() {
            return Ok(());
        }
        let named = self.args.systems.iter().any(|s| s.starts_with("cluster"));
        let nats = match cluster::nats_binary() {
            Ok(bin) => bin,
            Err(e) if !named => {
                eprintln!("cluster: skipped ({e:#})");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (pairs, groups) = (self.args.pairs, self.args.groups);
        for nodes in sizes {
            eprintln!("cluster{nodes} (dm and group across {nodes} confabd nodes and {nodes} nats-servers)");
            let opts = ClusterOpts {
                nats: nats.clone(),
                daemon: self.opts(Durability::Buffered),
                nodes,
                partitions: self.args.cluster_partitions,
            };
            for (load, name, count) in [(cluster::Load::Dm, "dm", pairs), (cluster::Load::Group, "group", groups)] {
                if !self.wants(name) {
                    continue;
                }
                for w in [1, 64] {
                    let params = self.params(Shape::Closed { window: w });
                    let row = cluster::row(&opts, load, count, &params)
                        .await
                        .with_context(|| format!("cluster{nodes} {name} W={w}"))?;
                    self.push(row);
                }
            }
        }
        Ok(())
    }

    async fn idle(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        let n = self.args.connections.unwrap_or(if self.args.quick { 5_000 } else { 50_000 });
        eprintln!("idle (confab, {n} connections per transport)");
        // Each TCP connection is a file descriptor on both sides; QUIC
        // shares a few UDP sockets. Where the hard limit is fixed (no
        // CAP_SYS_RESOURCE), it caps the TCP and WS figures.
        let fd_cap = (crate::daemon::nofile_hard() as usize).saturating_sub(1000);
        for transport in [Transport::Tcp, Transport::Ws, Transport::Quic] {
            if !self.args.idle_transports.is_empty() && !self.args.idle_transports.contains(&transport) {
                continue;
            }
            let held = if transport == Transport::Quic { n } else { n.min(fd_cap) };
            let mut opts = self.opts(Durability::Fsync);
            opts.max_connections = n + 1000;
            let server = Daemon::start(&opts).await?;
            let result = idle::run(&server, transport, held).await;
            server.stop().await;
            for mut row in result.with_context(|| format!("idle {}", transport.name()))? {
                if held < n {
                    row.notes.push(format!(
                        "{held} instead of {n} connections: the open-file hard limit here is {} and cannot be raised",
                        crate::daemon::nofile_hard()
                    ));
                }
                self.push(row);
            }
        }
        Ok(())
    }

    async fn sync(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        let k = self.args.sync_messages.unwrap_or(100_000);
        eprintln!("sync (confab, {k} missed messages)");
        let server = Daemon::start(&self.opts(Durability::Fsync)).await?;
        let result = catchup::sync(&server, Transport::Tcp, k).await;
        server.stop().await;
        for row in result.context("sync")? {
            self.push(row);
        }
        Ok(())
    }

    async fn history(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        let m = self.args.history_messages.unwrap_or(if self.args.quick { 200_000 } else { 1_000_000 });
        eprintln!("history (confab, {m} stored messages)");
        let rows = catchup::history(&self.opts(Durability::Buffered), Transport::Tcp, m).await.context("history")?;
        for row in rows {
            self.push(row);
        }
        Ok(())
    }

    async fn login(&mut self) -> anyhow::Result<()> {
        if !self.system("confab") {
            return Ok(());
        }
        eprintln!("login (confab)");
        let server = Daemon::start(&self.opts(Durability::Fsync)).await?;
        let seconds = self.params(Shape::Closed { window: 1 }).duration;
        let result = catchup::login(&server, seconds).await;
        server.stop().await;
        self.push(result.context("login")?);
        Ok(())
    }

    async fn baselines(&mut self) -> anyhow::Result<()> {
        let (pairs, groups) = (self.args.pairs, self.args.groups);
        let dm_on = self.wants("dm");
        let group_on = self.wants("group");
        if self.system("relay") && (dm_on || group_on) {
            eprintln!("baseline: bare relay");
            for w in [1, 64] {
                let params = self.params(Shape::Closed { window: w });
                if dm_on {
                    let r = relay::dm(self.pin, pairs, &params).await.context("relay dm")?;
                    self.push(load_row(
                        "dm",
                        "relay",
                        format!("tcp W={w} P={pairs}"),
                        "msg/s",
                        r.0,
                        r.1,
                        secs(&params),
                    ));
                }
                if group_on {
                    let r = relay::group(self.pin, groups, &params).await.context("relay group")?;
                    self.push(load_row(
                        "group",
                        "relay",
                        format!("tcp W={w} G={groups}"),
                        "dlv/s",
                        r.0,
                        r.1,
                        secs(&params),
                    ));
                }
            }
        }
        if self.system("relay") && dm_on {
            match self.open_rate {
                Some(rate) => {
                    let params = self.params(Shape::Open { rate });
                    let r = relay::dm(self.pin, pairs, &params).await.context("relay dm, open loop")?;
                    let tag = self.args.open_rate.map_or("open25".to_string(), |total| format!("open@{total:.0}"));
                    let mut row =
                        load_row("dm", "relay", format!("tcp {tag} P={pairs}"), "msg/s", r.0, r.1, secs(&params));
                    row.extra["offered_per_sec"] = (rate * pairs as f64).into();
                    row.notes.push("open loop at the rate of confab's fsync open-loop row: the generator's and the network's own latency at that load".into());
                    self.push(row);
                }
                None => eprintln!("baseline: no confab open-loop row ran, so the relay's open-loop row is skipped"),
            }
        }
        if self.system("nats") && (dm_on || group_on) {
            match nats::installed() {
                None => eprintln!("baseline: nats-server is not installed (bench/run.sh installs it); skipped"),
                Some(bin) => {
                    eprintln!("baseline: nats-server");
                    for w in [1, 64] {
                        let params = self.params(Shape::Closed { window: w });
                        if dm_on {
                            let r = nats::dm(&bin, self.pin, pairs, &params).await.context("nats dm")?;
                            self.push(load_row(
                                "dm",
                                "nats",
                                format!("tcp W={w} P={pairs}"),
                                "msg/s",
                                r.0,
                                r.1,
                                secs(&params),
                            ));
                        }
                        if group_on {
                            let r = nats::group(&bin, self.pin, groups, &params).await.context("nats group")?;
                            self.push(load_row(
                                "group",
                                "nats",
                                format!("tcp W={w} G={groups}"),
                                "dlv/s",
                                r.0,
                                r.1,
                                secs(&params),
                            ));
                        }
                    }
                }
            }
        }
        if self.system("ejabberd") && (dm_on || group_on || self.wants("idle")) {
            if !xmpp::installed() {
                eprintln!("baseline: ejabberd is not installed (bench/run.sh installs it); skipped");
                return Ok(());
            }
            for mam in [false, true] {
                let system = if mam { "ejabberd+mam" } else { "ejabberd" };
                eprintln!("baseline: {system}");
                let server =
                    xmpp::Ejabberd::start(self.pin, mam).await.with_context(|| format!("starting {system}"))?;
                let outcome = self.ejabberd_runs(&server, system).await;
                server.stop().await;
                outcome?;
            }
        }
        Ok(())
    }

    async fn ejabberd_runs(&mut self, server: &xmpp::Ejabberd, system: &str) -> anyhow::Result<()> {
        let (pairs, groups) = (self.args.pairs, self.args.groups);
        for w in [1, 64] {
            let params = self.params(Shape::Closed { window: w });
            if self.wants("dm") {
                let r = xmpp::dm(server, pairs, &params).await.context("xmpp dm")?;
                self.push(load_row("dm", system, format!("tcp W={w} P={pairs}"), "msg/s", r.0, r.1, secs(&params)));
            }
            if self.wants("group") {
                let r = xmpp::group(server, groups, &params).await.context("xmpp group")?;
                self.push(load_row("group", system, format!("tcp W={w} G={groups}"), "dlv/s", r.0, r.1, secs(&params)));
            }
        }
        if self.wants("idle") && system == "ejabberd" {
            let n = 2_000;
            let row = xmpp::idle(server, n).await.context("xmpp idle")?;
            self.push(row);
        }
        Ok(())
    }
}

fn secs(p: &LoadParams) -> f64 {
    p.duration.as_secs_f64()
}

/// A rate of the command line: a number of messages per second above 0.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a number of messages per second above 0".into()),
        Err(e) => Err(format!("not a number: {e}")),
    }
}
