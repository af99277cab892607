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
    /// Certificate fingerprint (hex) from the banner.
    pub fingerprint: String,
    /// The data directory; removed when dropped.
    _dir: tempfile::TempDir,
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

impl Daemon {
    /// Starts `confabd` on 127.0.0.1 port 0 (both transports) with the rate
    /// limits raised out of the way, optionally pinned to CPU 0.
    pub async fn start(confabd: &Path, durability: Durability, pin: bool) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("confab-bench-").tempdir().context("temp dir")?;
        let data_dir = dir.path().to_str().ok_or_else(|| anyhow!("non-UTF-8 temp dir"))?.to_string();
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(confabd);
            c
        } else {
            Command::new(confabd)
        };
        cmd.args(["--data-dir", &data_dir, "--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
            .args(["--durability", durability.as_str()])
            // Rate limits are per session; the defaults (50 sends/s) would
            // cap every pair. 1M/s with the default burst never binds.
            .args(["--send-rate", "1000000", "--request-rate", "1000000", "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", confabd.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("confabd exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut tcp, mut quic, mut fingerprint) = (None, None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while fingerprint.is_none() {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .context("confabd printed no banner within 30 s")??
                .ok_or_else(|| anyhow!("confabd exited before its banner (see its stderr above)"))?;
            if let Some(a) = line.strip_prefix("tcp: ") {
                tcp = Some(a.parse().with_context(|| format!("banner: {line}"))?);
            } else if let Some(a) = line.strip_prefix("quic: ") {
                quic = Some(a.parse().with_context(|| format!("banner: {line}"))?);
            } else if let Some(f) = line.strip_prefix("fingerprint: sha256:") {
                fingerprint = Some(f.to_string());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Daemon { child, pid, tcp, quic, fingerprint: fingerprint.unwrap_or_default(), _dir: dir })
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it (SIGKILL: the data dir is thrown away anyway).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
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
