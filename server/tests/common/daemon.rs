//! A real `confabd` child process on 127.0.0.1 (port 0 everywhere), for
//! tests that kill it, restart it, or read its memory from /proc.

use std::process::Stdio;
use std::time::Duration;

use confab_client::tls::Trust;
use confab_client::{ConnectOptions, Connection, TransportKind};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Daemon {
    pub child: Child,
    pub tcp: String,
    pub quic: String,
    pub http: String,
    pub fingerprint: String,
}

impl Daemon {
    /// Starts `confabd` on `dir` with `extra` flags, waiting for its banner.
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> Daemon {
        Daemon::spawn(&[], "127.0.0.1", dir, extra, None).await
    }

    /// Like [`Daemon::start`], logging at `filter` into `stderr` (for
    /// tests that read what it logs).
    pub async fn start_logging(dir: &std::path::Path, extra: &[&str], filter: &str, stderr: std::fs::File) -> Daemon {
        Daemon::spawn(&[], "127.0.0.1", dir, extra, Some((filter, stderr))).await
    }

    /// Starts `confabd` inside network namespace `ns` (as root), listening
    /// on every address there; clients reach it at `address`.
    pub async fn start_in_netns(ns: &str, address: &str, dir: &std::path::Path, extra: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(&["ip", "netns", "exec", ns], "0.0.0.0", dir, extra, None).await;
        for a in [&mut d.tcp, &mut d.quic, &mut d.http] {
            *a = a.replacen("0.0.0.0", address, 1);
        }
        d
    }

    /// Starts `confabd` (behind the command `prefix`, if any) bound to
    /// `bind` port 0 everywhere; its log goes to `logs` (filter, file), else
    /// to this process's stderr at `CONFAB_TEST_LOG` (default `warn`).
    async fn spawn(
        prefix: &[&str],
        bind: &str,
        dir: &std::path::Path,
        extra: &[&str],
        logs: Option<(&str, std::fs::File)>,
    ) -> Daemon {
        let binary = env!("CARGO_BIN_EXE_confabd");
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let any = format!("{bind}:0");
        let (log, stderr) = match logs {
            Some((filter, file)) => (filter.to_string(), Stdio::from(file)),
            None => (std::env::var("CONFAB_TEST_LOG").unwrap_or_else(|_| "warn".into()), Stdio::inherit()),
        };
        let mut child = command
            .args(["--data-dir", dir.to_str().unwrap()])
            // CONFAB_TEST_LOG=info (any filter) shows the nodes' logs.
            .args(["--tcp", &any, "--http", &any, "--log", &log])
            // A test may name its QUIC address (to restart on the same one).
            .args(if extra.contains(&"--quic") { vec![] } else { vec!["--quic", &any] })
            // Every test client comes from 127.0.0.1.
            .args(["--signups-per-address-per-hour", "100000"])
            .args(extra)
            .stdout(Stdio::piped())
            .env_remove("RUST_LOG")
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut tcp, mut quic, mut http, mut fingerprint) = (None, None, None, None);
        while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap()
        {
            if let Some(a) = line.strip_prefix("tcp: ") {
                tcp = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("quic: ") {
                quic = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("http: ") {
                http = Some(a.to_string());
            } else if let Some(f) = line.strip_prefix("fingerprint: sha256:") {
                fingerprint = Some(f.to_string());
            }
            if tcp.is_some() && quic.is_some() && http.is_some() && fingerprint.is_some() {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Daemon { child, tcp: tcp.unwrap(), quic: quic.unwrap(), http: http.unwrap(), fingerprint: fingerprint.unwrap() }
    }

    pub fn options(&self, transport: TransportKind) -> ConnectOptions {
        let addr = match transport {
            TransportKind::Tcp => &self.tcp,
            TransportKind::Quic => &self.quic,
            TransportKind::Ws | TransportKind::Wss => &self.http,
        };
        let mut o = ConnectOptions::new(addr.clone(), Trust::Fingerprint(self.fingerprint.clone()));
        o.transport = transport;
        o
    }

    pub async fn connect(&self, transport: TransportKind) -> Connection {
        Connection::connect(&self.options(transport)).await.unwrap()
    }

    /// Connects and resumes with `token`.
    pub async fn resume(&self, transport: TransportKind, token: &str) -> Connection {
        let c = self.connect(transport).await;
        c.resume(token).await.unwrap();
        c
    }

    /// A raw TCP+TLS peer from 127.0.0.1.
    pub async fn raw(&self) -> super::Raw {
        self.raw_from([127, 0, 0, 1].into()).await.unwrap()
    }

    /// A raw TCP+TLS peer from the source address `src`.
    pub async fn raw_from(&self, src: std::net::IpAddr) -> std::io::Result<super::Raw> {
        super::Raw::tcp_from(self.tcp.parse().unwrap(), &self.fingerprint, src).await
    }

    /// A raw peer on a QUIC session stream.
    pub async fn raw_quic(&self) -> super::Raw {
        super::Raw::quic(self.quic.parse().unwrap(), &self.fingerprint).await
    }

    /// The server's resident memory, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}
