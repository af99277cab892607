//! The server under test: a `confabd` child process in a temp dir (or an
//! external server given with `--server`), and CPU/memory readings from
//! `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::Durability;

/// A running `confabd` we started; killed when dropped.
pub struct Daemon {
    child: Child,
    /// Its pid (for `/proc`).
    pub pid: u32,
    /// TCP+TLS address from the banner.
    pub tcp: Option<std::net::SocketAddr>,
    /// QUIC address from the banner.
    pub quic: Option<std::net::SocketAddr>,
    /// HTTPS address from the banner (the WebSocket bridge).
    pub http: Option<std::net::SocketAddr>,
    /// Certificate fingerprint (hex) from the banner.
    pub fingerprint: String,
    /// The data directory; removed when dropped.
    dir: Option<tempfile::TempDir>,
}

/// Finds `confabd`: `--confabd`, else next to this binary.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let candidate = exe.parent().map(|d| d.join("confabd")).ok_or_else(|| anyhow!("no parent dir"))?;
    if candidate.exists() {
        Ok(candidate)
    } else {
        bail!(
            "{} not found: build it with `cargo build --release -p confab-server` or pass --confabd PATH",
            candidate.display()
        )
    }
}

/// The hard open-file limit of this process (`/proc/self/limits`):
/// where it is fixed (a container without CAP_SYS_RESOURCE), it bounds
/// the TCP connections either side can hold.
pub fn nofile_hard() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?.to_string();
            let hard = line.split_whitespace().nth(4)?.to_string();
            if hard == "unlimited" { Some(1 << 20) } else { hard.parse().ok() }
        })
        .unwrap_or(1024)
}

/// How to start `confabd`.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    /// The binary.
    pub confabd: PathBuf,
    /// Durability.
    pub durability: Durability,
    /// Pin it to CPU 0.
    pub pin: bool,
    /// Connection cap (raised for the idle scenario).
    pub max_connections: usize,
    /// Flags after the bench's own (cluster mode: `--cluster`, `--node-id`, …).
    pub extra_args: Vec<String>,
    /// Keep confabd's own rate limits and abuse controls (the abuse
    /// scenarios measure them); otherwise they are raised out of the way.
    pub stock_limits: bool,
}

impl Daemon {
    /// Starts `confabd` in a new temp dir.
    pub async fn start(opts: &DaemonOpts) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("confab-bench-").tempdir().context("temp dir")?;
        Daemon::start_in(opts, dir).await
    }

    /// Starts `confabd` on 127.0.0.1 port 0 (both transports) in `dir`
    /// (new or left by an earlier run), with the rate limits raised out of
    /// the way, its fd limit raised, optionally pinned to CPU 0.
    pub async fn start_in(opts: &DaemonOpts, dir: tempfile::TempDir) -> anyhow::Result<Daemon> {
        let data_dir = dir.path().to_str().ok_or_else(|| anyhow!("non-UTF-8 temp dir"))?.to_string();
        // Settings with no flag go in a config file. Rate limits are per
        // session; the defaults (50 sends/s) would cap every pair, and the
        // failed-login throttle would refuse the login scenario's
        // thousands of resumes from one address.
        let config = dir.path().join("bench.toml");
        let settings = if opts.stock_limits {
            format!("max_connections = {}\n", opts.max_connections)
        } else {
            format!(
                "max_connections = {0}\nmax_connections_per_address = {1}\n\
                 login_failures_per_address = 1000000\nlogin_failures_per_user = 1000000\n\
                 signups_per_address_per_hour = 1000000\npassword_check_queue = 1000000\n\
                 password_checks_per_address = 1000000\nlogins_per_user_per_minute = 1000000\n\
                 logins_per_address_per_minute = 1000000\n\
                 groups_per_user_per_hour = 1000000\ngroups_per_address_per_hour = 1000000\n\
                 members_added_per_user_per_hour = 1000000\nmembers_added_per_address_per_hour = 1000000\n\
                 directs_per_user_per_hour = 1000000\ndirects_per_address_per_hour = 1000000\n\
                 [limits]\nsend_rate_per_sec = 10000000\nsend_burst = 10000000\n\
                 request_rate_per_sec = 10000000\nrequest_burst = 10000000\n",
                opts.max_connections,
                // Four times the total: every bench client is on 127.0.0.x, and
                // an address with half its slots taken gets QUIC Retries.
                // That is the abuse control, not the load under test.
                opts.max_connections.saturating_mul(4)
            )
        };
        std::fs::write(&config, settings).context("writing the bench config")?;
        // It inherits our open-file limit (raised to the hard limit).
        let mut cmd = pinned(&opts.confabd, opts.pin);
        cmd.args(["--config", config.to_str().unwrap_or_default()])
            .args(["--data-dir", &data_dir, "--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--http-tls"])
            .args(["--durability", opts.durability.as_str()])
            // CONFAB_BENCH_LOG=info shows what the server logs (its start).
            .args(["--log", &std::env::var("CONFAB_BENCH_LOG").unwrap_or_else(|_| "warn".into())])
            .args(&opts.extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", opts.confabd.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("confabd exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut tcp, mut quic, mut http, mut fingerprint) = (None, None, None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while fingerprint.is_none() {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .context("confabd printed no banner within 60 s")??
                .ok_or_else(|| anyhow!("confabd exited before its banner (see its stderr above)"))?;
            if let Some(a) = line.strip_prefix("tcp: ") {
                tcp = Some(a.parse().with_context(|| format!("banner: {line}"))?);
            } else if let Some(a) = line.strip_prefix("http: ") {
                http = Some(a.parse().with_context(|| format!("banner: {line}"))?);
            } else if let Some(a) = line.strip_prefix("quic: ") {
                quic = Some(a.parse().with_context(|| format!("banner: {line}"))?);
            } else if let Some(f) = line.strip_prefix("fingerprint: sha256:") {
                fingerprint = Some(f.to_string());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Daemon { child, pid, tcp, quic, http, fingerprint: fingerprint.unwrap_or_default(), dir: Some(dir) })
    }

    /// Its data directory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Where it listens.
    pub fn target(&self) -> crate::pipe::Target {
        crate::pipe::Target { tcp: self.tcp, quic: self.quic, http: self.http, fingerprint: self.fingerprint.clone() }
    }

    /// Stops it (SIGKILL: the data dir is thrown away anyway).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Kills it (SIGKILL, nothing flushed) and hands back the data dir, to
    /// start it again on what a crash leaves.
    pub async fn kill_keep(mut self) -> anyhow::Result<tempfile::TempDir> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.dir.take().ok_or_else(|| anyhow!("no data dir"))
    }

    /// Stops it gracefully (SIGTERM: it flushes the store) and hands back
    /// the data dir, to start it again on the same data.
    pub async fn stop_keep(mut self) -> anyhow::Result<tempfile::TempDir> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        self.dir.take().ok_or_else(|| anyhow!("no data dir"))
    }
}

/// Raises this process's open-file limit to its hard limit (via
/// `prlimit`, no unsafe code); children inherit it.
pub fn raise_nofile() {
    let pid = std::process::id().to_string();
    let hard = nofile_hard();
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: could not raise the open-file limit (prlimit); large idle runs may fail");
    }
}

/// Drops the kernel's page cache (root only), for cold reads.
pub fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// User+system CPU time of a process so far, in seconds (`/proc/PID/stat`).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// USER_HZ (`getconf CLK_TCK`; 100 on every mainstream Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Pins this process (all threads started from now on) to one CPU.
pub fn pin_self(cpu: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (is util-linux installed?)")?;
    if !status.success() {
        bail!("taskset failed: {status}");
    }
    Ok(())
}

/// CPU use of the generator and the server over a window, from `/proc`.
/// `perf record` of the server over one measured window, when
/// `CONFAB_BENCH_PERF` names a directory: window n (counted over the run)
/// goes to DIR/n.data, so a profile holds the steady state only (no
/// set-up, signups or warm-up). Call graphs by DWARF unwinding (release
/// builds keep their unwind tables); `CONFAB_BENCH_PERF_ARGS` replaces the
/// default `-F 499 --call-graph dwarf,32768`.
pub struct Profile {
    child: std::process::Child,
    file: PathBuf,
}

impl Profile {
    /// Starts recording `pids`, if asked to; says so on stderr.
    pub fn start(pids: &[u32]) -> Option<Profile> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static WINDOW: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(std::env::var_os("CONFAB_BENCH_PERF")?);
        let n = WINDOW.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("profile: cannot create {}: {e}", dir.display());
            return None;
        }
        let file = dir.join(format!("{n}.data"));
        let args = std::env::var("CONFAB_BENCH_PERF_ARGS").unwrap_or_else(|_| "-F 499 --call-graph dwarf,32768".into());
        let pid_list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = std::process::Command::new("perf")
            .arg("record")
            .args(args.split_whitespace())
            .args(["-p", &pid_list, "-o"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                eprintln!("profile: window {n} of pids {pid_list} -> {}", file.display());
                Some(Profile { child, file })
            }
            Err(e) => {
                eprintln!("profile: cannot start perf: {e}");
                None
            }
        }
    }

    /// Stops recording (SIGINT, so perf writes its file) and waits for it.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        match self.child.wait() {
            // perf ends on the SIGINT it was sent, having written its file.
            Ok(status) if status.success() || std::os::unix::process::ExitStatusExt::signal(&status) == Some(2) => {}
            Ok(status) => eprintln!("profile: perf ended with {status} ({})", self.file.display()),
            Err(e) => eprintln!("profile: {e}"),
        }
    }
}

/// The server may be several processes (a cluster: every confabd and
/// every nats-server); its figures are their sums.
#[derive(Debug, Clone)]
pub struct Meter {
    pids: Vec<u32>,
    generator: Option<f64>,
    server: Vec<Option<f64>>,
    started: std::time::Instant,
}

/// What a [`Meter`] read: CPU in % of one core, server RSS in KiB.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Generator CPU.
    pub gen_cpu: Option<f64>,
    /// Server CPU (summed over its processes).
    pub srv_cpu: Option<f64>,
    /// Server CPU time over the window, in seconds (summed over its
    /// processes): divided by what was delivered, the cost of a message.
    pub srv_cpu_seconds: Option<f64>,
    /// Each server process's CPU, in % of one core, by pid.
    pub srv_cpu_by_pid: Vec<(u32, f64)>,
    /// Server RSS at the end (summed over its processes).
    pub srv_rss_kib: Option<u64>,
}

impl Meter {
    /// Starts measuring (the server's pid, if known).
    pub fn start(pid: Option<u32>) -> Meter {
        Meter::over(pid.into_iter().collect())
    }

    /// Starts measuring a server made of the processes `pids`.
    pub fn over(pids: Vec<u32>) -> Meter {
        Meter {
            generator: cpu_seconds(None),
            server: pids.iter().map(|p| cpu_seconds(Some(*p))).collect(),
            pids,
            started: std::time::Instant::now(),
        }
    }

    /// Reads the CPU used since `start`. A server figure is `None` when
    /// any of its processes could not be read (it died): a partial sum
    /// would flatter it.
    pub fn read(&self) -> Reading {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        let used: Vec<Option<f64>> =
            self.pids.iter().zip(&self.server).map(|(p, before)| Some(cpu_seconds(Some(*p))? - (*before)?)).collect();
        let total: Option<f64> = if self.pids.is_empty() { None } else { used.iter().copied().sum::<Option<f64>>() };
        let rss: Option<u64> =
            if self.pids.is_empty() { None } else { self.pids.iter().map(|p| status_kib(*p, "VmRSS")).sum() };
        Reading {
            gen_cpu: cpu_seconds(None).zip(self.generator).map(|(b, a)| (b - a) / secs * 100.0),
            srv_cpu: total.map(|t| t / secs * 100.0),
            srv_cpu_seconds: total,
            srv_cpu_by_pid: self.pids.iter().zip(&used).filter_map(|(p, u)| Some((*p, (*u)? / secs * 100.0))).collect(),
            srv_rss_kib: rss,
        }
    }
}

/// Spawns `cmd` (stdout piped, killed on drop) and reads `key: value`
/// lines from its stdout until every key in `keys` was seen.
pub async fn spawn_with_banner(
    mut cmd: Command,
    keys: &[&str],
) -> anyhow::Result<(Child, std::collections::HashMap<String, String>)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null()).kill_on_drop(true);
    let mut child = cmd.spawn().context("starting a child process")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !keys.iter().all(|k| seen.contains_key(*k)) {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .context("no banner within 60 s")??
            .ok_or_else(|| anyhow!("the child exited before its banner"))?;
        if let Some((k, v)) = line.split_once(": ") {
            seen.insert(k.to_string(), v.to_string());
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, seen))
}

/// A command running `bin`, on CPU 0 when `pin` (taskset execs it, so the
/// child's pid is the program's own).
pub fn pinned(bin: impl AsRef<std::ffi::OsStr>, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Bytes of the files under `dir`, recursively.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
