//! Server settings: defaults that run out of the box, a TOML file
//! (`--config`), and command-line flags that win over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_protocol::Limits;
use serde::Deserialize;

use crate::store::Durability;

/// Everything `confabd` can be told. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database and the generated certificate live.
    pub data_dir: PathBuf,
    /// QUIC (UDP) listen address; `None` disables QUIC.
    pub quic: Option<SocketAddr>,
    /// TCP+TLS listen address; `None` disables TCP.
    pub tcp: Option<SocketAddr>,
    /// HTTP listen address (WebSocket bridge, browser client, health,
    /// metrics, discovery); `None` disables HTTP.
    pub http: Option<SocketAddr>,
    /// Serve HTTP over TLS (https/wss) with the server's certificate.
    pub http_tls: bool,
    /// The addresses users open the browser client at
    /// (`scheme://host[:port]`). When set, only these (and
    /// `allowed_origins`) may open WebSockets; when empty, a page may when
    /// its origin is the address the request was sent to and that is an IP
    /// literal or `localhost` (DNS names are not trusted from `Host`).
    pub public_origins: Vec<String>,
    /// Origins allowed to open WebSockets besides the server's own pages
    /// (`scheme://host[:port]`; `*` allows any).
    pub allowed_origins: Vec<String>,
    /// Serve the browser client from this directory instead of the copy
    /// built into the binary (for developing it).
    pub web_dir: Option<PathBuf>,
    /// PEM certificate chain; default: `DATA_DIR/tls/cert.pem`, generated
    /// (self-signed) on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key; default: `DATA_DIR/tls/key.pem`.
    pub key: Option<PathBuf>,
    /// When a write is acknowledged.
    pub durability: Durability,
    /// Most concurrent connections over all transports.
    pub max_connections: usize,
    /// Most concurrent connections from one source address.
    pub max_connections_per_address: usize,
    /// The kernel send buffer of each TCP connection (SO_SNDBUF), in bytes;
    /// 0 leaves it to the kernel's autotuning. A small one bounds how much
    /// a peer that stops reading can park in the kernel before its queue
    /// overflows and it is told to resync.
    pub tcp_send_buffer_bytes: usize,
    /// Frames queued for one session before it is cut off with
    /// RESYNC_REQUIRED.
    pub outbound_queue: usize,
    /// Bytes queued for one session before it is cut off with
    /// RESYNC_REQUIRED.
    pub outbound_queue_bytes: usize,
    /// Commands queued for the store writer before requests are shed with
    /// SERVER_BUSY.
    pub writer_queue: usize,
    /// Advertised heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Deadline for the TLS handshake plus a complete Hello, in
    /// milliseconds.
    pub handshake_timeout_ms: u64,
    /// Deadline for authenticating after the Welcome (or a logout), in
    /// milliseconds.
    pub auth_timeout_ms: u64,
    /// How long shutdown waits for requests in flight, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Failed logins allowed per username per minute.
    pub login_failures_per_user: u32,
    /// Failed logins allowed per source address per minute.
    pub login_failures_per_address: u32,
    /// Signups allowed per source address per hour.
    pub signups_per_address_per_hour: u32,
    /// Groups one user may create per hour.
    pub groups_per_user_per_hour: u32,
    /// Groups created from one source address per hour.
    pub groups_per_address_per_hour: u32,
    /// Members one user may add per hour (at creation too).
    pub members_added_per_user_per_hour: u32,
    /// Members added from one source address per hour.
    pub members_added_per_address_per_hour: u32,
    /// Direct conversations one user may open per hour.
    pub directs_per_user_per_hour: u32,
    /// Direct conversations opened from one source address per hour.
    pub directs_per_address_per_hour: u32,
    /// Logins allowed per username per minute, whatever their outcome.
    pub logins_per_user_per_minute: u32,
    /// Logins allowed per source address per minute, whatever their
    /// outcome.
    pub logins_per_address_per_minute: u32,
    /// Password hashes (signup, login) computed at once: the threads of
    /// the password pool, each holding 19 MiB of Argon2 memory while busy.
    pub password_check_concurrency: usize,
    /// Password checks waiting beyond those; more get SERVER_BUSY.
    pub password_check_queue: usize,
    /// Most password checks (running or waiting) from one source address;
    /// more get SERVER_BUSY, so one address cannot fill the queue.
    pub password_checks_per_address: usize,
    /// How long a user stays online after their last session ends, in
    /// milliseconds (so quick reconnects do not flap).
    pub presence_grace_ms: u64,
    /// Least time between two presence updates about one user to one
    /// subscriber, in milliseconds.
    pub presence_coalesce_ms: u64,
    /// How long receivers show a typing indicator, in milliseconds.
    pub typing_expiry_ms: u32,
    /// Protocol limits, enforced and advertised in Welcome (the `[limits]`
    /// table; see `spec/PROTOCOL.md` §12).
    pub limits: Limits,
    /// Push notifications (the `[push]` table).
    pub push: PushConfig,
    /// Cluster mode (the `[cluster]` table; `--cluster`): `None` runs one
    /// node on its own fjall.
    pub cluster: Option<ClusterConfig>,
}

/// Push notification settings (see docs/OPERATING.md, "Push
/// notifications", and spec/PROTOCOL.md §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Offer push at all (RegisterPush, the outbox worker).
    pub enabled: bool,
    /// Offer Web Push targets (and advertise the VAPID key).
    pub web_push: bool,
    /// Offer webhook targets.
    pub webhook: bool,
    /// How long a device has to ack a message before it is notified, in
    /// milliseconds; also gathers a burst into one notification.
    pub delay_ms: u64,
    /// Least time between two notifications of one device about one
    /// conversation, in milliseconds.
    pub coalesce_ms: u64,
    /// Put the start of the message text in notifications (off: payloads
    /// carry no message text).
    pub preview: bool,
    /// Longest preview, in characters.
    pub preview_chars: usize,
    /// Deadline for one delivery attempt (connect, TLS, request, response),
    /// in milliseconds.
    pub timeout_ms: u64,
    /// First retry delay, in milliseconds; doubled per attempt, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Attempts before a notification is given up.
    pub max_attempts: u32,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How long a push service may hold an undelivered notification (the
    /// `TTL` header), in seconds.
    pub ttl_secs: u32,
    /// The VAPID key pair (PKCS#8 PEM, P-256); default
    /// `DATA_DIR/push/vapid.pem`, generated (mode 0600) on first start.
    pub vapid_key: Option<PathBuf>,
    /// The VAPID `sub` claim: a `mailto:` or `https:` contact for push
    /// services (some, like Apple's, require one). Empty: not sent.
    pub vapid_subject: String,
    /// Accept `http://` webhook URLs (for receivers on a trusted network).
    pub allow_http: bool,
    /// Deliver to loopback, private and link-local addresses (off: such
    /// destinations are refused, so devices cannot aim the server at the
    /// operator's internal network).
    pub allow_private_addresses: bool,
    /// Extra trusted root certificates (PEM) for push receivers, besides
    /// the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            web_push: true,
            webhook: true,
            delay_ms: 3000,
            coalesce_ms: 10_000,
            preview: false,
            preview_chars: 100,
            timeout_ms: 10_000,
            retry_base_ms: 1000,
            retry_max_ms: 600_000,
            max_attempts: 12,
            concurrency: 32,
            ttl_secs: 86_400,
            vapid_key: None,
            vapid_subject: String::new(),
            allow_http: false,
            allow_private_addresses: false,
            ca_file: None,
        }
    }
}

impl PushConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(format!("push: {s}")));
        if self.delay_ms > 3_600_000 || self.coalesce_ms > 3_600_000 {
            return bad("delay_ms and coalesce_ms are at most one hour");
        }
        if self.timeout_ms < 100 || self.retry_base_ms < 10 || self.retry_max_ms < self.retry_base_ms {
            return bad("timeout_ms >= 100, retry_base_ms >= 10, retry_max_ms >= retry_base_ms");
        }
        if self.max_attempts == 0 || self.concurrency == 0 || self.ttl_secs == 0 {
            return bad("max_attempts, concurrency and ttl_secs > 0");
        }
        if self.preview_chars == 0 || self.preview_chars > 1000 {
            return bad("preview_chars is 1 to 1000");
        }
        let s = &self.vapid_subject;
        if !s.is_empty() && !s.starts_with("mailto:") && !s.starts_with("https://") {
            return bad("vapid_subject is a mailto: or https: URL");
        }
        Ok(())
    }
}

/// The default port, for QUIC (UDP) and TCP+TLS alike.
pub const DEFAULT_PORT: u16 = 7443;
/// The default HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 7080;

impl Default for Config {
    fn default() -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT));
        Config {
            data_dir: PathBuf::from("confab-data"),
            quic: Some(local),
            tcp: Some(local),
            http: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))),
            http_tls: false,
            public_origins: Vec::new(),
            allowed_origins: Vec::new(),
            web_dir: None,
            cert: None,
            key: None,
            durability: Durability::Fsync,
            max_connections: 10_000,
            max_connections_per_address: 256,
            tcp_send_buffer_bytes: 0,
            outbound_queue: 4096,
            outbound_queue_bytes: 8 << 20,
            writer_queue: 65_536,
            heartbeat_interval_ms: u64::from(confab_protocol::limits::DEFAULT_HEARTBEAT_INTERVAL_MS),
            handshake_timeout_ms: u64::from(confab_protocol::limits::DEFAULT_HANDSHAKE_TIMEOUT_MS),
            auth_timeout_ms: u64::from(confab_protocol::limits::DEFAULT_AUTH_TIMEOUT_MS),
            shutdown_grace_ms: 5000,
            login_failures_per_user: 5,
            login_failures_per_address: 30,
            signups_per_address_per_hour: 50,
            groups_per_user_per_hour: 60,
            groups_per_address_per_hour: 300,
            members_added_per_user_per_hour: 2_000,
            members_added_per_address_per_hour: 10_000,
            directs_per_user_per_hour: 200,
            directs_per_address_per_hour: 1_000,
            password_check_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            password_check_queue: 64,
            password_checks_per_address: 8,
            logins_per_user_per_minute: 10,
            logins_per_address_per_minute: 60,
            presence_grace_ms: 5000,
            presence_coalesce_ms: 1000,
            typing_expiry_ms: 6000,
            limits: Limits::default(),
            push: PushConfig::default(),
            cluster: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if self.quic.is_none() && self.tcp.is_none() && self.http.is_none() {
            return bad("at least one of QUIC, TCP and HTTP must be enabled");
        }
        if let Some(o) = self.allowed_origins.iter().find(|o| *o != "*" && !o.contains("://")) {
            return Err(ConfigError::Invalid(format!("allowed_origins: {o:?} is not scheme://host[:port] or *")));
        }
        let origin_ok = |o: &str| {
            let Some((scheme, rest)) = o.trim_end_matches('/').split_once("://") else { return false };
            matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' '])
        };
        if let Some(o) = self.public_origins.iter().find(|o| !origin_ok(o)) {
            return Err(ConfigError::Invalid(format!(
                "public_origins: {o:?} is not http(s)://host[:port] (no path), e.g. https://chat.example.com"
            )));
        }
        if (l.max_frame_bytes as u64) < u64::from(l.max_message_chars) * 4 + 1024 {
            return bad("limits.max_frame_bytes must hold a message of max_message_chars 4-byte characters plus 1 KiB");
        }
        if l.max_group_members < 2
            || l.max_page_size == 0
            || l.max_in_flight == 0
            || l.max_list_items == 0
            || l.max_devices == 0
        {
            return bad(
                "limits: max_group_members >= 2 and max_page_size, max_in_flight, max_list_items, max_devices > 0",
            );
        }
        let growth = [
            self.groups_per_user_per_hour,
            self.groups_per_address_per_hour,
            self.members_added_per_user_per_hour,
            self.members_added_per_address_per_hour,
            self.directs_per_user_per_hour,
            self.directs_per_address_per_hour,
        ];
        if growth.contains(&0) {
            return bad("groups_*, members_added_* and directs_* per hour must be at least 1");
        }
        if self.heartbeat_interval_ms < 1000 || self.handshake_timeout_ms < 100 {
            return bad("heartbeat_interval_ms >= 1000 and handshake_timeout_ms >= 100");
        }
        if self.outbound_queue < 16 || self.writer_queue < 16 || self.max_connections == 0 {
            return bad("outbound_queue and writer_queue >= 16, max_connections > 0");
        }
        if self.max_connections_per_address == 0
            || self.password_check_concurrency == 0
            || self.password_checks_per_address == 0
        {
            return bad("max_connections_per_address, password_check_concurrency, password_checks_per_address > 0");
        }
        if (self.outbound_queue_bytes as u64) < u64::from(l.max_frame_bytes) * 2 {
            return bad("outbound_queue_bytes must hold at least two frames of limits.max_frame_bytes");
        }
        if self.auth_timeout_ms < 100 {
            return bad("auth_timeout_ms >= 100");
        }
        if self.cert.is_some() != self.key.is_some() {
            return bad("cert and key must be given together");
        }
        self.push.validate()?;
        if let Some(c) = &self.cluster {
            c.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The authentication deadline.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.tcp.unwrap().to_string(), "127.0.0.1:7443");
        assert_eq!(c.durability, Durability::Fsync);
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("durability = \"buffered\"\n[limits]\nmax_group_members = 50\n").unwrap();
        assert_eq!(c.durability, Durability::Buffered);
        assert_eq!(c.limits.max_group_members, 50);
        assert_eq!(c.limits.max_page_size, 100);
        let c: Config = toml::from_str("[push]\ndelay_ms = 500\nallow_http = true\n").unwrap();
        assert_eq!(c.push.delay_ms, 500);
        assert!(c.push.allow_http && c.push.enabled);
        assert!(toml::from_str::<Config>("[push]\nno_such_key = 1").is_err());
        let mut c = Config::default();
        c.push.vapid_subject = "admin@example.com".into();
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
        let mut c = Config::default();
        c.limits.max_frame_bytes = 1000;
        assert!(c.validate().is_err());
    }
}

/// The settings of a cluster node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated (`nats://host:4222,...`).
    pub nats: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// Partitions (fixed when the cluster is created).
    pub partitions: u32,
    /// Replicas of every stream and bucket (3 for a three-server NATS
    /// cluster; 1 on a single NATS server).
    pub replicas: usize,
    /// How long a partition's lease lasts without renewal, in milliseconds:
    /// how soon a dead node's partitions move.
    pub lease_ttl_ms: u64,
    /// How long a log append may take before its outcome counts as
    /// unknown (answered UNAVAILABLE), in milliseconds.
    pub publish_timeout_ms: u64,
    /// How long startup waits for NATS, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Partitions moved between live nodes for balance at most at once,
    /// cluster-wide: given back by their owners and not yet writable on
    /// the node that takes them over (which replays their log). Given
    /// only when no other move or takeover is in progress, one per node
    /// that needs partitions, at most this many; every node should have
    /// the same value. A dead or leaving node's partitions are taken at
    /// once whatever this says.
    pub max_moves: usize,
    /// The host name (or address) other nodes give clients for this one
    /// in `/v1/discover` when it listens on a wildcard address.
    pub advertise_host: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: String::new(),
            node_id: String::new(),
            partitions: 16,
            replicas: 3,
            lease_ttl_ms: 10_000,
            publish_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            max_moves: 2,
            advertise_host: None,
        }
    }
}

impl ClusterConfig {
    /// Checks the settings; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats.trim().is_empty() {
            return Err("cluster.nats: give the NATS URLs (--cluster nats://host:4222)".into());
        }
        if self.node_id.is_empty() || !self.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err("cluster.node_id: 1 or more of [A-Za-z0-9_-] (--node-id), unique in the cluster".into());
        }
        if !(1..=4096).contains(&self.partitions) {
            return Err("cluster.partitions: 1 to 4096".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err("cluster.replicas: 1 to 5".into());
        }
        if self.lease_ttl_ms < 1000 || self.publish_timeout_ms < 100 || self.publish_timeout_ms >= self.lease_ttl_ms {
            return Err("cluster: lease_ttl_ms >= 1000 and 100 <= publish_timeout_ms < lease_ttl_ms".into());
        }
        if self.max_moves == 0 {
            return Err("cluster.max_moves > 0".into());
        }
        if let Some(h) = &self.advertise_host
            && (h.is_empty()
                || h.len() > 253
                || h.chars().any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#')))
        {
            return Err("cluster.advertise_host: a host name or IP address (--advertise-host)".into());
        }
        Ok(())
    }

    /// The partitioning.
    pub fn partitioning(&self) -> crate::store::Partitioning {
        crate::store::Partitioning::new(self.partitions)
    }
}
