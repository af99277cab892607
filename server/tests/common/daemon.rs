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
        let mut child = Command::new(env!("CARGO_BIN_EXE_confabd"))
            .args(["--data-dir", dir.to_str().unwrap()])
            .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log", "warn"])
            // Every test client comes from 127.0.0.1.
            .args(["--signups-per-address-per-hour", "100000"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
