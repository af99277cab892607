//! `confabd`: runs the Confab server. See `confabd --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use confab_server::config::Config;
use confab_server::server::Server;
use confab_server::store::Durability;

/// The Confab chat server.
///
/// With no arguments it serves on embedded defaults: data in ./confab-data,
/// a self-signed certificate generated there on first start, QUIC (UDP) and
/// TCP+TLS on 127.0.0.1:7443, HTTP (WebSocket bridge, browser client,
/// /metrics, /healthz, /readyz, /v1/discover) on 127.0.0.1:7080. Settings come from the defaults, then the
/// TOML file given with --config, then these flags (flags win).
#[derive(Debug, Parser)]
#[command(name = "confabd", version, about, long_about)]
struct Args {
    /// TOML config file (keys as in the flags, with '_' for '-'; limits
    /// under a [limits] table).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: the database and the generated certificate.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// QUIC listen address (UDP). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    quic: Option<SocketAddr>,
    /// TCP+TLS listen address. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// HTTP listen address: the WebSocket bridge (/v1/ws), the browser
    /// client (/), /metrics, /healthz, /readyz, /v1/discover. Port 0 picks
    /// a free port.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Disable the QUIC listener.
    #[arg(long)]
    no_quic: bool,
    /// Disable the TCP+TLS listener.
    #[arg(long)]
    no_tcp: bool,
    /// Disable the HTTP listener.
    #[arg(long)]
    no_http: bool,
    /// Serve HTTP over TLS (https://, wss://) with the server's
    /// certificate. Without it HTTP is plain: keep it on loopback or behind
    /// a TLS-terminating proxy.
    #[arg(long)]
    http_tls: bool,
    /// Also let pages from this origin (scheme://host[:port]) open
    /// WebSockets; repeatable; `*` allows any. Default: only the public origins (see --public-origin).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// An address users open the browser client at (scheme://host[:port],
    /// e.g. https://chat.example.com); repeatable. When set, only pages
    /// from these origins (and --allow-origin) may open WebSockets. Without
    /// it, only pages opened at an IP address or localhost may: a DNS name
    /// is never trusted from the Host header (DNS rebinding).
    #[arg(long = "public-origin", value_name = "ORIGIN")]
    public_origin: Vec<String>,
    /// Serve the browser client from DIR instead of the copy built into the
    /// binary (to develop it without rebuilding).
    #[arg(long, value_name = "DIR")]
    web_dir: Option<PathBuf>,
    /// PEM certificate chain (with --key). Default: DATA_DIR/tls/cert.pem,
    /// generated if missing.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// When a write is acknowledged: fsync (survives power loss, default)
    /// or buffered (survives a process crash).
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Most concurrent connections (all transports).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most concurrent connections from one source address.
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<usize>,
    /// Frames queued per session before it is cut off to resync.
    #[arg(long, value_name = "N")]
    outbound_queue: Option<usize>,
    /// Kernel send buffer per TCP connection (SO_SNDBUF), in bytes
    /// (default: the kernel's autotuning).
    #[arg(long, value_name = "BYTES")]
    tcp_send_buffer: Option<usize>,
    /// Bytes queued per session before it is cut off to resync.
    #[arg(long, value_name = "BYTES")]
    outbound_queue_bytes: Option<usize>,
    /// How long a user keeps their presence after their last session ends,
    /// in milliseconds (default 5000), so a quick reconnect does not show
    /// them offline and back (spec §9.1).
    #[arg(long, value_name = "MS")]
    presence_grace_ms: Option<u64>,
    /// Heartbeat interval advertised to clients, in milliseconds (at least
    /// 1000; default 20000). Clients ping after half an interval of quiet
    /// and give up on a silent server 2.5 intervals after a ping; the
    /// server ends sessions silent for 2.5 intervals (spec §4.6). Smaller
    /// finds dead links sooner at the cost of more pings. QUIC clients of
    /// a killed server learn it from the stateless reset its restart
    /// sends, whatever the interval (spec §2.1).
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Deadline for TLS plus a complete Hello, in milliseconds.
    #[arg(long, value_name = "MS")]
    handshake_timeout_ms: Option<u64>,
    /// Deadline for signing up, logging in or resuming after the
    /// handshake, in milliseconds.
    #[arg(long, value_name = "MS")]
    auth_timeout_ms: Option<u64>,
    /// Signups allowed per source address per hour.
    #[arg(long, value_name = "N")]
    signups_per_address_per_hour: Option<u32>,
    /// Logins allowed per source address per minute, whatever their outcome.
    #[arg(long, value_name = "N")]
    logins_per_address_per_minute: Option<u32>,
    /// Logins allowed per username per minute, whatever their outcome.
    #[arg(long, value_name = "N")]
    logins_per_user_per_minute: Option<u32>,
    /// Password checks (Argon2id, 19 MiB each) run at once [default: the
    /// number of cores].
    #[arg(long, value_name = "N")]
    password_check_concurrency: Option<usize>,
    /// Largest message, in characters.
    #[arg(long, value_name = "N")]
    max_message_chars: Option<u32>,
    /// Largest frame, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_frame_bytes: Option<u32>,
    /// Largest group, in members.
    #[arg(long, value_name = "N")]
    max_group_members: Option<u32>,
    /// Sustained sends per second per session.
    #[arg(long, value_name = "N")]
    send_rate: Option<u32>,
    /// Send burst per session (token bucket size).
    #[arg(long, value_name = "N")]
    send_burst: Option<u32>,
    /// Sustained requests per second per session.
    #[arg(long, value_name = "N")]
    request_rate: Option<u32>,
    /// Request burst per session (token bucket size).
    #[arg(long, value_name = "N")]
    request_burst: Option<u32>,
    /// Turn push notifications off (RegisterPush answers
    /// FEATURE_UNAVAILABLE; more settings under [push] in the config file).
    #[arg(long)]
    no_push: bool,
    /// How long a device has to ack a message before it is pushed, in
    /// milliseconds.
    #[arg(long, value_name = "MS")]
    push_delay_ms: Option<u64>,
    /// Least time between two pushes to one device about one conversation,
    /// in milliseconds.
    #[arg(long, value_name = "MS")]
    push_coalesce_ms: Option<u64>,
    /// Put the start of the message text in push payloads (off by default).
    #[arg(long)]
    push_preview: bool,
    /// Accept http:// webhook URLs (receivers on a trusted network only).
    #[arg(long)]
    push_allow_http: bool,
    /// Deliver pushes to loopback and private addresses too.
    #[arg(long)]
    push_allow_private: bool,
    /// The VAPID key pair (PKCS#8 PEM). Default: DATA_DIR/push/vapid.pem,
    /// generated (mode 0600) if missing.
    #[arg(long, value_name = "FILE")]
    vapid_key: Option<PathBuf>,
    /// The VAPID contact (mailto: or https: URL) push services may use.
    #[arg(long, value_name = "URL")]
    vapid_subject: Option<String>,
    /// Cluster mode: the NATS servers (with JetStream) of the cluster,
    /// comma-separated (nats://host:4222,...). Needs --node-id. See
    /// docs/CLUSTER.md.
    #[arg(long, value_name = "URLS", requires = "node_id")]
    cluster: Option<String>,
    /// This node's name in the cluster (letters, digits, '-', '_'; unique).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Partitions of a new cluster (fixed when it is created) [default: 16].
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Replicas of the cluster's streams (3 on a three-server NATS
    /// cluster, 1 on a single server) [default: 3].
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,
    /// How long a dead node keeps its partitions, in milliseconds
    /// [default: 10000].
    #[arg(long, value_name = "MS")]
    lease_ttl_ms: Option<u64>,
    /// The host name clients reach this node by, named to them by other
    /// nodes' /v1/discover (needed when listening on a wildcard address).
    #[arg(long, value_name = "HOST")]
    advertise_host: Option<String>,
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG also works.
    #[arg(long, value_name = "FILTER", default_value = "info,fjall=warn,lsm_tree=warn")]
    log: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Act on the running server's accounts and data, through its admin socket.
    ///
    /// The socket is DATA_DIR/admin.sock, reachable only by the data dir's
    /// owner: give the server's --data-dir (or --config). In cluster mode,
    /// users, disable, enable, export and backup refuse and say what to do
    /// instead.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Print a shell completion script for confabd (bash, zsh, fish,
    /// elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `confabd manpage | man -l -`.
    Manpage,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCmd {
    /// Show an account and its devices (JSON).
    User {
        /// The username.
        username: String,
    },
    /// Give an account a new password and sign out every one of its
    /// devices. The password is generated and printed, or read from stdin
    /// (one line) with --password-stdin.
    ResetPassword {
        /// The username.
        username: String,
        /// Read the new password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Sign out every device of an account (its password is unchanged).
    RevokeDevices {
        /// The username.
        username: String,
    },
    /// List accounts, a page at a time (JSON lines, or --table).
    ///
    /// In username order: username, user id, created, last seen, devices,
    /// disabled. One JSON object per line, or a table with --table. When
    /// more follow, the --after for the next page is said on stderr.
    Users {
        /// Only usernames that start with this.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u64,
        /// Start after this username (the last of the previous page).
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
        /// A table for people instead of JSON lines.
        #[arg(long)]
        table: bool,
    },
    /// Disable an account: no login or resume, its sessions end now.
    ///
    /// An abuse control. The account cannot log in (answered exactly as a
    /// wrong password is) or resume, and every live session of it ends now
    /// with DEVICE_REVOKED. Its devices, conversations and messages stay;
    /// `enable` undoes it. Stored: it survives restarts.
    Disable {
        /// The username.
        username: String,
    },
    /// Enable a disabled account: it logs in again.
    Enable {
        /// The username.
        username: String,
    },
    /// Everything the server holds about one user, as JSON lines.
    ///
    /// The account, devices, block list, privacy settings and push
    /// registrations, every conversation with its members and the user's
    /// read marker, and every message the user can see, read from one
    /// snapshot. No password or token hash, no push keys or secrets. The
    /// last line is of type "end"; the export streams, whatever the
    /// history's size.
    Export {
        /// The username.
        username: String,
        /// Write to this new file (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Back the running server up into DIR, which is a data dir.
    ///
    /// The store as of one instant and the keys beside it (certificate,
    /// VAPID key, QUIC reset key), taken while the server serves. DIR must
    /// be new or empty. To restore, start confabd with --data-dir on a copy
    /// of DIR (offline: nothing else to run).
    Backup {
        /// Where the backup goes (created; outside the data dir).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Drain the server and stop it, exactly as SIGTERM does.
    ///
    /// For when you can reach the data dir but not signal the process. In
    /// a cluster the node first stops being listed by /v1/discover; then
    /// every session gets GoAway (clients ask discovery again and move to
    /// another node), requests in progress are answered, the writers
    /// finish, partitions are handed back and the process exits. Returns
    /// once the server has taken the request.
    Drain,
}

fn set<T>(dst: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *dst = v;
    }
}

impl Args {
    fn into_config(self) -> anyhow::Result<(Config, String)> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        set(&mut c.data_dir, self.data_dir);
        if self.quic.is_some() {
            c.quic = self.quic;
        }
        if self.tcp.is_some() {
            c.tcp = self.tcp;
        }
        if self.http.is_some() {
            c.http = self.http;
        }
        if self.no_quic {
            c.quic = None;
        }
        if self.no_tcp {
            c.tcp = None;
        }
        if self.no_http {
            c.http = None;
        }
        c.http_tls |= self.http_tls;
        c.allowed_origins.extend(self.allow_origin);
        c.public_origins.extend(self.public_origin);
        if self.web_dir.is_some() {
            c.web_dir = self.web_dir;
        }
        if self.cert.is_some() {
            c.cert = self.cert;
            c.key = self.key;
        }
        set(&mut c.durability, self.durability);
        set(&mut c.max_connections, self.max_connections);
        set(&mut c.max_connections_per_address, self.max_connections_per_address);
        set(&mut c.outbound_queue, self.outbound_queue);
        set(&mut c.tcp_send_buffer_bytes, self.tcp_send_buffer);
        set(&mut c.outbound_queue_bytes, self.outbound_queue_bytes);
        set(&mut c.presence_grace_ms, self.presence_grace_ms);
        set(&mut c.auth_timeout_ms, self.auth_timeout_ms);
        set(&mut c.signups_per_address_per_hour, self.signups_per_address_per_hour);
        set(&mut c.logins_per_address_per_minute, self.logins_per_address_per_minute);
        set(&mut c.logins_per_user_per_minute, self.logins_per_user_per_minute);
        set(&mut c.password_check_concurrency, self.password_check_concurrency);
        set(&mut c.heartbeat_interval_ms, self.heartbeat_interval_ms);
        set(&mut c.handshake_timeout_ms, self.handshake_timeout_ms);
        set(&mut c.limits.max_message_chars, self.max_message_chars);
        set(&mut c.limits.max_frame_bytes, self.max_frame_bytes);
        set(&mut c.limits.max_group_members, self.max_group_members);
        set(&mut c.limits.send_rate_per_sec, self.send_rate);
        set(&mut c.limits.request_rate_per_sec, self.request_rate);
        set(&mut c.limits.send_burst, self.send_burst);
        set(&mut c.limits.request_burst, self.request_burst);
        if let Some(urls) = self.cluster {
            let cluster = c.cluster.get_or_insert_with(Default::default);
            cluster.nats = urls;
        }
        if let Some(cluster) = &mut c.cluster {
            set(&mut cluster.node_id, self.node_id);
            set(&mut cluster.partitions, self.partitions);
            set(&mut cluster.replicas, self.replicas);
            if self.advertise_host.is_some() {
                cluster.advertise_host = self.advertise_host;
            }
            if let Some(ttl) = self.lease_ttl_ms {
                cluster.lease_ttl_ms = ttl;
                // An append must give up well within a lease.
                cluster.publish_timeout_ms = cluster.publish_timeout_ms.min(ttl / 2);
            }
        }
        c.push.enabled &= !self.no_push;
        set(&mut c.push.delay_ms, self.push_delay_ms);
        set(&mut c.push.coalesce_ms, self.push_coalesce_ms);
        c.push.preview |= self.push_preview;
        c.push.allow_http |= self.push_allow_http;
        c.push.allow_private_addresses |= self.push_allow_private;
        if self.vapid_key.is_some() {
            c.push.vapid_key = self.vapid_key;
        }
        set(&mut c.push.vapid_subject, self.vapid_subject);
        c.validate()?;
        Ok((c, self.log))
    }
}

/// The runtime's blocking threads at most (store reads, a flush, a backup).
const BLOCKING_THREADS: usize = 32;

/// Libraries that log the bytes they carry at debug and trace: WebSocket
/// frames hold passwords, tokens and message text, which never go to a
/// log at any level (docs/SECURITY.md). Their events above `info` are
/// dropped whatever `--log` asks.
const CARRIERS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Whether an event may be logged: anything at `info` or quieter, and
/// more only from targets that do not log what they carry.
fn not_carried_bytes(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO
        || !CARRIERS
            .iter()
            .any(|c| meta.target().strip_prefix(c).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")))
}

/// With `--features mimalloc`: mimalloc instead of glibc's malloc, about a
/// quarter less CPU per message at W = 64 for 1-2 KiB more per idle
/// session (bench/README.md, "The allocator, second look"). The binary only: the library
/// leaves the choice to whoever embeds it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--help` with each setting's default, read from `Config::default()`
/// (the flags are optional so that a config file can set them too, which
/// hides their defaults from clap).
fn command_with_defaults() -> clap::Command {
    let d = Config::default();
    let shown: Vec<(&str, String)> = vec![
        ("data_dir", d.data_dir.display().to_string()),
        ("quic", d.quic.map_or("off".into(), |a| a.to_string())),
        ("tcp", d.tcp.map_or("off".into(), |a| a.to_string())),
        ("http", d.http.map_or("off".into(), |a| a.to_string())),
        ("durability", format!("{:?}", d.durability).to_lowercase()),
        ("max_connections", d.max_connections.to_string()),
        ("max_connections_per_address", d.max_connections_per_address.to_string()),
        ("outbound_queue", d.outbound_queue.to_string()),
        ("outbound_queue_bytes", d.outbound_queue_bytes.to_string()),
        ("handshake_timeout_ms", d.handshake_timeout_ms.to_string()),
        ("auth_timeout_ms", d.auth_timeout_ms.to_string()),
        ("signups_per_address_per_hour", d.signups_per_address_per_hour.to_string()),
        ("logins_per_address_per_minute", d.logins_per_address_per_minute.to_string()),
        ("logins_per_user_per_minute", d.logins_per_user_per_minute.to_string()),
        ("max_message_chars", d.limits.max_message_chars.to_string()),
        ("max_frame_bytes", d.limits.max_frame_bytes.to_string()),
        ("max_group_members", d.limits.max_group_members.to_string()),
        ("send_rate", d.limits.send_rate_per_sec.to_string()),
        ("send_burst", d.limits.send_burst.to_string()),
        ("request_rate", d.limits.request_rate_per_sec.to_string()),
        ("request_burst", d.limits.request_burst.to_string()),
        ("push_delay_ms", d.push.delay_ms.to_string()),
        ("push_coalesce_ms", d.push.coalesce_ms.to_string()),
    ];
    let mut cmd = <Args as clap::CommandFactory>::command();
    for (id, default) in shown {
        cmd = cmd.mut_arg(id, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            a.help(format!("{help} [default: {default}]"))
        });
    }
    cmd
}

/// Generated text to stdout; a reader that stopped early (`| head`) is
/// not a failure.
fn write_stdout(text: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("writing to stdout")),
        _ => Ok(()),
    }
}

/// Start-up failures: one line on stderr, the causes joined (no backtrace
/// whatever RUST_BACKTRACE says), exit status 1.
fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confabd: {}", plain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error as one line, in words an operator can act on.
fn plain(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("FjallError: Locked") {
        let dir = e
            .chain()
            .find_map(|c| {
                c.to_string()
                    .strip_prefix("opening the store in ")
                    .map(|rest| rest.split(':').next().unwrap_or(rest).to_string())
            })
            .unwrap_or_default();
        return format!(
            "another confabd is using this data dir ({dir} is locked): stop it, or give this one another --data-dir"
        );
    }
    // Causes that repeat what the message before them already said (an
    // io::Error quoted in its context) are said once.
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !parts.last().is_some_and(|prev| prev.ends_with(&cause)) {
            parts.push(cause);
        }
    }
    parts.join(": ")
}

fn start() -> anyhow::Result<()> {
    use clap::FromArgMatches as _;
    let mut args = match Args::from_arg_matches(&command_with_defaults().get_matches()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let command = args.command.take();
    match &command {
        Some(Cmd::Completions { shell }) => {
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut command_with_defaults(), "confabd", &mut text);
            return write_stdout(&text);
        }
        Some(Cmd::Manpage) => {
            let mut text = Vec::new();
            clap_mangen::Man::new(command_with_defaults()).render(&mut text).context("rendering the manual page")?;
            return write_stdout(&text);
        }
        _ => {}
    }
    let (config, log) = args.into_config()?;
    if let Some(Cmd::Admin(op)) = command {
        return admin(&config.data_dir, op);
    }
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        anyhow::bail!("--data-dir {} is a file, not a directory", config.data_dir.display());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log))
        .context("invalid --log filter")?;
    use std::io::IsTerminal as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(tracing_subscriber::filter::filter_fn(not_carried_bytes)));
    tracing_subscriber::registry().with(layer).init();
    // Store reads run on the runtime's blocking threads (one per read in
    // progress): a burst of logins would otherwise start up to tokio's
    // default of 512 of them. 32 keep a burst's threads (and their stacks)
    // bounded; more reads wait their turn.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let durability = config.durability;
    // A first start that fails (a port in use, a bad certificate path)
    // leaves no half-made data dir behind to confuse the next one.
    let fresh = !data_dir.exists();
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            if fresh {
                let _ = std::fs::remove_dir_all(&data_dir);
            }
            return Err(e.into());
        }
    };
    // The startup banner: stdout, one fact per line, for people and scripts.
    #[allow(clippy::print_stdout)]
    {
        println!("confabd {} serving", env!("CARGO_PKG_VERSION"));
        println!("data dir: {}", data_dir.display());
        println!("durability: {durability:?}");
        if let Some(c) = &server.config().cluster {
            println!("cluster: node {} of {} partitions on {}", c.node_id, c.partitions, c.nats);
        }
        if let Some(a) = server.quic_addr() {
            println!("quic: {a}");
        }
        if let Some(a) = server.tcp_addr() {
            println!("tcp: {a}");
        }
        if let Some(a) = server.http_addr() {
            let scheme = if server.config().http_tls { "https" } else { "http" };
            println!("http: {a}");
            println!("browser: {scheme}://{a}/");
        }
        println!("certificate: {}", server.cert_path().display());
        println!("fingerprint: sha256:{}", server.fingerprint());
    }
    tokio::select! {
        r = wait_for_signal() => r?,
        () = server.drain_asked() => tracing::info!("drain asked through the admin socket"),
    }
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}

/// `confabd admin …`: one request to the running server's admin socket.
#[cfg(unix)]
#[allow(clippy::print_stdout)]
fn admin(data_dir: &std::path::Path, op: AdminCmd) -> anyhow::Result<()> {
    use confab_server::admin::client::AdminClient;
    use serde_json::{Value, json};
    use std::io::BufRead;
    use std::time::Duration;
    let mut generated = None;
    let request = match &op {
        AdminCmd::User { username } => json!({"op": "user", "username": username}),
        AdminCmd::RevokeDevices { username } => json!({"op": "revoke-devices", "username": username}),
        AdminCmd::ResetPassword { username, password_stdin } => {
            let password = if *password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                generated.insert(generate_password()).clone()
            };
            json!({"op": "reset-password", "username": username, "password": password})
        }
        AdminCmd::Users { prefix, limit, after, .. } => {
            json!({"op": "users", "prefix": prefix, "limit": limit, "after": after})
        }
        AdminCmd::Disable { username } => json!({"op": "disable", "username": username}),
        AdminCmd::Enable { username } => json!({"op": "enable", "username": username}),
        AdminCmd::Export { username, .. } => json!({"op": "export", "username": username}),
        AdminCmd::Backup { dir } => {
            let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
            json!({"op": "backup", "dir": dir})
        }
        AdminCmd::Drain => json!({"op": "drain"}),
    };
    // A backup answers once it is written, however long that takes.
    let timeout = match op {
        AdminCmd::Backup { .. } => None,
        _ => Some(Duration::from_secs(60)),
    };
    let mut client = AdminClient::connect(data_dir)?;
    let answer = client.ask(&request, timeout)?;
    let count = |key: &str| answer.get(key).and_then(Value::as_u64).unwrap_or(0);
    let revoked = count("revoked_devices");
    match op {
        AdminCmd::User { .. } => println!("{}", serde_json::to_string_pretty(&answer)?),
        AdminCmd::ResetPassword { username, .. } => {
            match generated {
                Some(p) => println!("new password for {username}: {p}"),
                None => println!("password of {username} changed"),
            }
            println!("{revoked} device(s) signed out");
        }
        AdminCmd::RevokeDevices { username } => println!("{revoked} device(s) of {username} signed out"),
        AdminCmd::Users { table, .. } => print_users(&answer, table)?,
        AdminCmd::Disable { username } => {
            let was = if answer.get("changed") == Some(&Value::Bool(false)) { " (it already was)" } else { "" };
            println!("{username} disabled{was}: cannot log in or resume");
            println!("{} device(s) online signed out", count("devices_online"));
        }
        AdminCmd::Enable { username } => {
            let was = if answer.get("changed") == Some(&Value::Bool(false)) { " (it was not disabled)" } else { "" };
            println!("{username} enabled{was}: can log in again");
        }
        AdminCmd::Export { username, out } => export(&mut client, &username, out.as_deref())?,
        AdminCmd::Drain => {
            if answer.get("already") == Some(&Value::Bool(true)) {
                println!("the server is already draining");
            } else {
                println!(
                    "draining: {} session(s) are told to go (GoAway); the server exits once they are done",
                    count("sessions")
                );
            }
        }
        AdminCmd::Backup { dir } => {
            let files: Vec<&str> = answer
                .get("files")
                .and_then(Value::as_array)
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "backup written to {}: {} keys ({} KiB) as of commit {}",
                dir.display(),
                count("keys"),
                count("bytes") >> 10,
                count("commit_seq")
            );
            println!("files: {}", if files.is_empty() { "none".into() } else { files.join(", ") });
            println!("to restore: copy it, then start confabd --data-dir on the copy");
        }
    }
    Ok(())
}

/// `admin users`: JSON lines, or a table; the next page's `--after` on
/// stderr when more follow.
#[cfg(unix)]
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn print_users(answer: &serde_json::Value, table: bool) -> anyhow::Result<()> {
    let users = answer.get("users").and_then(|u| u.as_array()).map(Vec::as_slice).unwrap_or_default();
    let text = |u: &serde_json::Value, key: &str| u.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let number = |u: &serde_json::Value, key: &str| u.get(key).and_then(|v| v.as_i64()).unwrap_or(0);
    if table {
        println!(
            "{:<32} {:>12} {:<17} {:<17} {:>7} DISABLED",
            "USERNAME", "USER_ID", "CREATED", "LAST_SEEN", "DEVICES"
        );
        for u in users {
            let disabled = if u.get("disabled").and_then(|d| d.as_bool()).unwrap_or(false) { "yes" } else { "no" };
            println!(
                "{:<32} {:>12} {:<17} {:<17} {:>7} {disabled}",
                text(u, "username"),
                number(u, "user_id"),
                utc_minute(number(u, "created_at_ms")),
                utc_minute(number(u, "last_seen_ms")),
                number(u, "devices"),
            );
        }
    } else {
        for u in users {
            println!("{u}");
        }
    }
    if answer.get("more").and_then(|m| m.as_bool()).unwrap_or(false)
        && let Some(last) = users.last()
    {
        eprintln!("more accounts follow: --after {}", text(last, "username"));
    }
    Ok(())
}

/// `admin export`: the lines after the answer, to `out` (a new file, mode
/// 0600, removed if the export does not finish) or stdout, until the `end`
/// record.
#[cfg(unix)]
#[allow(clippy::print_stderr)]
fn export(
    client: &mut confab_server::admin::client::AdminClient,
    username: &str,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let file = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
            Box::new(std::io::BufWriter::new(file))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let copied = copy_export(client, &mut sink);
    let flushed = copied.and_then(|end| {
        sink.flush().context("writing the export")?;
        Ok(end)
    });
    drop(sink);
    let end = match flushed {
        Ok(end) => end,
        Err(e) => {
            if let Some(path) = out {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.context(format!("the export of {username} did not finish")));
        }
    };
    if let Some(path) = out {
        std::fs::File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", path.display()))?;
    }
    let count = |key: &str| end.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    eprintln!(
        "exported {username}{}: {} conversation(s), {} message(s), {} device(s)",
        out.map(|p| format!(" to {}", p.display())).unwrap_or_default(),
        count("conversations"),
        count("messages"),
        count("devices"),
    );
    Ok(())
}

/// Copies the export's lines to `sink` up to its `end` record (returned).
#[cfg(unix)]
fn copy_export(
    client: &mut confab_server::admin::client::AdminClient,
    sink: &mut dyn std::io::Write,
) -> anyhow::Result<serde_json::Value> {
    let mut line = String::new();
    loop {
        if !client.next_line(&mut line)? {
            anyhow::bail!("the server closed the connection before the end");
        }
        let record: serde_json::Value =
            serde_json::from_str(&line).context("the server sent a line that is not JSON")?;
        match record.get("type").and_then(|t| t.as_str()) {
            Some("error") => {
                let why = record.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given");
                anyhow::bail!("{why}");
            }
            Some("end") => {
                writeln!(sink, "{line}").context("writing the export")?;
                return Ok(record);
            }
            _ => writeln!(sink, "{line}").context("writing the export")?,
        }
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a time in unix ms; `-` for 0.
#[cfg(unix)]
fn utc_minute(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let (days, minute) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000) / 60_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", minute / 60, minute % 60)
}

#[cfg(not(unix))]
fn admin(_: &std::path::Path, _: AdminCmd) -> anyhow::Result<()> {
    anyhow::bail!("confabd admin needs a Unix socket: not available on this platform")
}

/// 20 characters from a 62-letter alphabet: about 119 bits.
#[cfg(unix)]
fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..20).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}
