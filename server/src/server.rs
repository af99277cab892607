//! Wiring, and nothing else: open the store, build the core's services,
//! bind the listeners; and the one shutdown signal (a CancellationToken
//! every task selects on, plus a TaskTracker to wait for them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use confab_protocol::session::ServerConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{GrowthLimits, GrowthThrottle, LoginLimits, LoginThrottle, SignupThrottle};
use crate::admission::AddressLimits;
use crate::cluster::{ClusterNode, NodeParts};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::passwords::{PasswordPool, PoolSettings};
use crate::presence::Presence;
use crate::push::Push;
use crate::setup::SetupError;
use crate::state::{Core, Credentials};
use crate::store::{CommitHook, Db, Durability, LocalStore, Partitioning, Store, StoreSettings};
use crate::transport::{Ingress, quic, tcp};
use crate::{http, tls};

/// A running server.
pub struct Server {
    ingress: Arc<Ingress>,
    cluster: Option<ClusterNode>,
    config: Config,
    shutdown: CancellationToken,
    quic: Option<(quinn::Endpoint, SocketAddr)>,
    tcp: Option<SocketAddr>,
    http: Option<SocketAddr>,
    fingerprint: String,
    cert_path: std::path::PathBuf,
    /// The store, flushed last at shutdown.
    db: Arc<Db>,
    /// Cancelled when an operator asks for a drain (`confabd admin drain`).
    drain_asked: CancellationToken,
}

/// The address a listener actually bound (port 0 resolved).
fn bound(addr: std::io::Result<SocketAddr>, what: &'static str) -> Result<SocketAddr, SetupError> {
    addr.map_err(|source| SetupError::Io { what, source })
}

impl Server {
    /// Opens everything and starts serving.
    pub async fn start(config: Config) -> Result<Server, SetupError> {
        config.validate()?;
        // The data dir holds message bodies, password and token hashes and
        // webhook secrets: a new one is private to this user (0700), and an
        // existing one that others can enter is named in the log.
        crate::setup::create_private_dir(&config.data_dir)?;
        data_dir_warning(&config.data_dir);
        let identity = tls::load_or_generate(&config.data_dir, config.cert.as_deref(), config.key.as_deref())?;
        if identity.generated {
            tracing::info!(path = %identity.cert_path.display(), "generated a self-signed certificate");
        }
        let tls_config = tls::server_config(&identity)?;
        let quic_tls_config = tls::quic_config(&identity)?;
        let http_tls_config = tls::http_config(&identity)?;
        // The HTTP port answers from the start: `/readyz` says "not ready"
        // (503) while the store opens, instead of refusing connections.
        let starting = match config.http {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| SetupError::Bind {
                    what: "HTTP",
                    addr,
                    source,
                })?;
                let tls = config.http_tls.then(|| Arc::clone(&http_tls_config));
                Some(http::starting::Starting::start(listener, tls))
            }
            None => None,
        };
        let db_dir = config.data_dir.join("db");
        let durability = config.durability;
        let partitioning = config.cluster.as_ref().map_or(Partitioning::SINGLE, |c| c.partitioning());
        let db = open_store(&config.data_dir, db_dir, durability).await?.with_partitioning(partitioning);
        let db = Arc::new(db);
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(config.outbound_queue, config.outbound_queue_bytes, Arc::clone(&metrics)));
        // In a cluster, NATS first: the nodes share facts (the VAPID key)
        // that the services below are built with.
        let nats = match &config.cluster {
            Some(c) => Some(ClusterNode::connect(c).await?),
            None => None,
        };
        if let Some(n) = &nats
            && config.push.enabled
            && config.push.web_push
        {
            let path =
                config.push.vapid_key.clone().unwrap_or_else(|| crate::push::default_vapid_path(&config.data_dir));
            crate::cluster::share_vapid_key(&n.facts, &path, config.push.vapid_key.is_some(), Duration::from_secs(10))
                .await?;
        }
        let push = Push::new(&config.push, &config.data_dir)?.map(Arc::new);
        let limits = config.limits.clone();
        let hook = commit_hook(Arc::clone(&metrics), push.clone());
        let settings = StoreSettings {
            writer_queue: config.writer_queue,
            max_group_members: limits.max_group_members,
            max_devices: limits.max_devices,
            max_blocked: limits.max_blocked,
            max_reply_bytes: limits.max_frame_bytes as usize,
            push: push.as_ref().map(|p| p.timing()),
        };
        // One node: the store on this machine. A cluster: the same seams
        // over every node's partitions.
        // Presence updates go to this node's own subscribers (in a cluster,
        // other nodes learn of presence through announcements instead).
        let presence = Arc::new(Presence::new(
            hub.clone(),
            Duration::from_millis(config.presence_grace_ms),
            Duration::from_millis(config.presence_coalesce_ms),
        ));
        let (store, delivery, cluster): (Arc<dyn Store>, Arc<dyn Delivery>, _) = match &config.cluster {
            None => {
                let store = LocalStore::start(Arc::clone(&db), hub.clone(), hook, settings)
                    .map_err(|source| SetupError::Io { what: "starting the writer thread", source })?;
                (Arc::new(store), hub.clone(), None)
            }
            Some(c) => {
                let stats = Arc::clone(&metrics.cluster);
                // A partition taken over brings its pending push jobs.
                let rescan = push.clone();
                let on_takeover = Arc::new(move || {
                    if let Some(p) = &rescan {
                        p.rescan.notify_one();
                    }
                });
                let parts = NodeParts {
                    db: Arc::clone(&db),
                    sessions: hub.clone(),
                    hook,
                    settings,
                    stats,
                    presence: Arc::clone(&presence),
                    on_takeover,
                };
                let Some(nats) = nats else {
                    return Err(SetupError::Invalid("cluster mode without its NATS connection".into()));
                };
                let node = ClusterNode::start(c, parts, nats).await?;
                (Arc::clone(&node.store), Arc::clone(&node.delivery), Some(node))
            }
        };
        let passwords = PasswordPool::start(PoolSettings {
            concurrency: config.password_check_concurrency,
            queue: config.password_check_queue,
            per_address: config.password_checks_per_address,
        })
        .map_err(|source| SetupError::Io { what: "starting the password-check threads", source })?;
        let tracker = TaskTracker::new();
        let core = Arc::new(Core {
            limits: limits.clone(),
            store,
            delivery,
            presence,
            hub,
            push,
            credentials: Credentials {
                logins: LoginThrottle::new(LoginLimits {
                    failures_per_user: config.login_failures_per_user,
                    failures_per_address: config.login_failures_per_address,
                    logins_per_user: config.logins_per_user_per_minute,
                    logins_per_address: config.logins_per_address_per_minute,
                }),
                signups: SignupThrottle::new(config.signups_per_address_per_hour),
                growth: GrowthThrottle::new(GrowthLimits {
                    groups_per_user: config.groups_per_user_per_hour,
                    groups_per_address: config.groups_per_address_per_hour,
                    members_per_user: config.members_added_per_user_per_hour,
                    members_per_address: config.members_added_per_address_per_hour,
                    directs_per_user: config.directs_per_user_per_hour,
                    directs_per_address: config.directs_per_address_per_hour,
                }),
                passwords,
            },
            metrics,
            typing_expiry_ms: config.typing_expiry_ms,
            tracker: tracker.clone(),
        });
        let vapid_public_key = core.push.as_ref().map(|p| p.vapid_public_key()).unwrap_or_default();
        let session = |capabilities: Vec<String>| {
            Arc::new(ServerConfig {
                limits: limits.clone(),
                heartbeat_interval: config.heartbeat_interval(),
                handshake_timeout: config.handshake_timeout(),
                auth_timeout: config.auth_timeout(),
                server_name: concat!("confabd/", env!("CARGO_PKG_VERSION")).into(),
                capabilities,
                vapid_public_key: vapid_public_key.clone(),
                typing_rate_per_sec: 1,
            })
        };
        let ingress = Arc::new(Ingress {
            core: Arc::clone(&core),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            per_address: AddressLimits::new(config.max_connections_per_address),
            quic_session: session(vec![
                confab_protocol::session::REQUEST_STREAMS.into(),
                confab_protocol::session::TYPING_DATAGRAM.into(),
            ]),
            tcp_session: session(vec![]),
            handshake_timeout: config.handshake_timeout(),
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            tcp_send_buffer_bytes: config.tcp_send_buffer_bytes,
            tracker,
        });
        let shutdown = CancellationToken::new();
        start_background(&core, &shutdown);
        let mut server = Server {
            ingress: Arc::clone(&ingress),
            cluster,
            config,
            shutdown: shutdown.clone(),
            quic: None,
            tcp: None,
            http: None,
            fingerprint: identity.fingerprint(),
            cert_path: identity.cert_path.clone(),
            db,
            drain_asked: CancellationToken::new(),
        };
        if let Some(addr) = server.config.tcp {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| SetupError::Bind {
                what: "TCP",
                addr,
                source,
            })?;
            server.tcp = Some(bound(listener.local_addr(), "reading the bound TCP address")?);
            let task = tcp::serve(Arc::clone(&ingress), listener, Arc::clone(&tls_config), shutdown.clone());
            ingress.tracker.spawn(task);
        }
        if let Some(addr) = server.config.quic {
            let endpoint = quic_endpoint(&server.config, addr, &quic_tls_config)?;
            let bound = bound(endpoint.local_addr(), "reading the bound QUIC address")?;
            ingress.tracker.spawn(quic::serve(Arc::clone(&ingress), endpoint.clone(), shutdown.clone()));
            server.quic = Some((endpoint, bound));
        }
        #[cfg(unix)]
        match crate::admin::bind(&server.config.data_dir) {
            Ok(listener) => {
                let path = crate::admin::socket_path(&server.config.data_dir);
                let task = crate::admin::serve(
                    Arc::clone(&ingress.core),
                    listener,
                    path,
                    shutdown.clone(),
                    server.drain_asked.clone(),
                );
                ingress.tracker.spawn(task);
            }
            // Not fatal: the chat service does not need it.
            Err(e) => tracing::warn!(error = %e, "no admin socket: `confabd admin` will not reach this server"),
        }
        if let Some(starting) = starting {
            let listener = starting
                .finish()
                .await
                .map_err(|source| SetupError::Io { what: "taking over the HTTP listener", source })?;
            server.http = Some(server.start_http(listener, &http_tls_config).await?);
        }
        if let Some(node) = &server.cluster {
            // What this node's card tells clients (through /v1/discover on
            // every node): where it listens and how loaded it is.
            node.view.nodes.set_listening(crate::cluster::nodes::Listening {
                quic: server.quic_addr(),
                tcp: server.tcp,
                http: server.http,
                http_tls: server.config.http_tls,
                fingerprint: server.fingerprint.clone(),
            });
            let (ingress, max) = (Arc::clone(&server.ingress), server.config.max_connections as u64);
            node.view.nodes.set_load(Arc::new(move || crate::cluster::nodes::Load {
                sessions: ingress.core.hub.sessions() as u64,
                connections_free: ingress.connections.available_permits() as u64,
                connections_max: max,
                cpu: 0.0,
                queued_bytes: ingress.core.hub.queued_bytes(),
            }));
        }
        Ok(server)
    }

    async fn start_http(
        &self,
        listener: tokio::net::TcpListener,
        tls_config: &Arc<rustls::ServerConfig>,
    ) -> Result<SocketAddr, SetupError> {
        let ingress = &self.ingress;
        let bound = bound(listener.local_addr(), "reading the bound HTTP address")?;
        let tls = self.config.http_tls.then(|| Arc::clone(tls_config));
        if tls.is_none() && !bound.ip().is_loopback() {
            tracing::warn!(%bound, "plain HTTP beyond loopback: put a TLS proxy in front or use --http-tls");
        }
        let assets = match &self.config.web_dir {
            Some(d) => http::assets::Assets::Dir(d.clone()),
            None => http::assets::Assets::Embedded,
        };
        let app = Arc::new(http::App {
            ingress: Arc::clone(ingress),
            shutdown: self.shutdown.clone(),
            origins: http::Origins::from_config(
                &self.config.public_origins,
                &self.config.allowed_origins,
                self.config.http_tls,
            ),
            assets,
            cluster: self.cluster.as_ref().map(|n| Arc::clone(&n.view)),
            endpoints: http::Endpoints {
                quic: self.quic_addr(),
                tcp: self.tcp,
                http: Some(bound),
                http_tls: self.config.http_tls,
                fingerprint: self.fingerprint.clone(),
            },
        });
        // Silence longer than a client that heartbeats may keep ends an
        // HTTP connection (WebSocket sessions included).
        let deadlines = http::listener::Deadlines {
            first_request: ingress.handshake_timeout,
            idle: (self.config.heartbeat_interval() * 3).max(Duration::from_secs(60)),
        };
        let incoming = http::listener::start(Arc::clone(ingress), listener, tls, deadlines, self.shutdown.clone())
            .map_err(|source| SetupError::Io { what: "starting the HTTP listener", source })?;
        let service = http::router(app).into_make_service_with_connect_info::<http::listener::PeerAddr>();
        let stop = self.shutdown.clone();
        ingress.tracker.spawn(async move {
            let served = axum::serve(incoming, service).with_graceful_shutdown(stop.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        Ok(bound)
    }

    /// The bound HTTP address, if HTTP is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The bound TCP+TLS address, if TCP is enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The bound QUIC address, if QUIC is enabled.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().map(|(_, a)| *a)
    }

    /// SHA-256 fingerprint (hex) of the certificate clients should pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the certificate is.
    pub fn cert_path(&self) -> &std::path::Path {
        &self.cert_path
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The chat core (for tests and tools).
    pub fn core(&self) -> &Arc<Core> {
        &self.ingress.core
    }

    /// What serving connections needs (for tests and tools that serve
    /// sessions over their own links).
    pub fn ingress(&self) -> &Arc<Ingress> {
        &self.ingress
    }

    /// Resolves when shutdown has been requested.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when an operator asked for a drain through the admin
    /// socket (`confabd admin drain`); the caller then runs
    /// [`Server::shutdown`], as on SIGTERM.
    pub async fn drain_asked(&self) {
        self.drain_asked.cancelled().await;
    }

    /// Graceful shutdown (SIGTERM, or a drain asked for): in a cluster the
    /// node stops being listed by discovery first; then stop accepting,
    /// GoAway to every session, let requests in flight finish (up to the
    /// grace period), then flush and close the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        if let Some(node) = &self.cluster {
            // Other nodes stop sending clients here before this node's
            // sessions are told to go.
            node.drain().await;
        }
        self.shutdown.cancel();
        let tracker = &self.ingress.tracker;
        tracker.close();
        let grace = self.ingress.shutdown_grace + Duration::from_secs(2);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("some tasks did not finish within the grace period");
        }
        if let Some((endpoint, _)) = &self.quic {
            endpoint.close(quinn::VarInt::from_u32(confab_protocol::ErrorCode::SHUTTING_DOWN.0), b"shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        if let Some(node) = self.cluster {
            node.shutdown().await;
        }
        if let Err(e) = self.ingress.core.store.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
        // Every memtable written out, so the next start replays nothing;
        // then the mark that says so.
        let (db, data_dir) = (Arc::clone(&self.db), self.config.data_dir.clone());
        let started = std::time::Instant::now();
        let flushed = tokio::task::spawn_blocking(move || db.flush()).await;
        match flushed {
            Ok(Ok(())) => {
                tracing::info!(took_ms = started.elapsed().as_millis() as u64, "store flushed");
                if let Err(e) = std::fs::write(data_dir.join(CLEAN_STOP), b"") {
                    tracing::warn!(error = %e, "cannot mark the stop as clean");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "flushing the store failed; the next start replays its journal"),
            Err(e) => tracing::error!(error = %e, "flushing the store failed; the next start replays its journal"),
        }
        tracing::info!("stopped");
    }
}

/// A file in the data dir: the last stop flushed the store. Removed when
/// the store is opened, so its absence at a start means a crash or a kill.
const CLEAN_STOP: &str = "clean-stop";

/// Opens the store, and logs how long recovery took and why.
async fn open_store(
    data_dir: &std::path::Path,
    db_dir: std::path::PathBuf,
    durability: Durability,
) -> Result<Db, SetupError> {
    let marker = data_dir.join(CLEAN_STOP);
    let clean = marker.exists();
    let existed = db_dir.exists();
    let journal = Db::journal_bytes(&db_dir);
    let started = std::time::Instant::now();
    let dir = db_dir.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&dir, durability))
        .await
        .map_err(|e| SetupError::Io { what: "opening the store", source: std::io::Error::other(e) })?
        .map_err(|source| SetupError::Store { path: db_dir, source })?;
    let took_ms = started.elapsed().as_millis() as u64;
    // The journal on disk, and what of it was not yet in tables (replayed
    // into memory): the replay is what takes time.
    let journal_kib = journal >> 10;
    let replayed_kib = db.unflushed_bytes() >> 10;
    if !existed {
        tracing::info!(took_ms, "created the store");
    } else if clean {
        tracing::info!(took_ms, journal_kib, replayed_kib, "opened the store after a clean stop");
    } else {
        // No mark: the last run was killed or crashed (or is older than
        // the mark): what its journal held beyond the tables was replayed.
        tracing::info!(took_ms, journal_kib, replayed_kib, "recovered the store after an unclean stop");
    }
    if clean && let Err(e) = std::fs::remove_file(&marker) {
        tracing::warn!(error = %e, "cannot remove the clean-stop mark");
    }
    Ok(db)
}

/// Logs a warning when other users can enter the data directory.
fn data_dir_warning(dir: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %dir.display(), "the data directory is open to other users; chmod 700 it");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// After each commit: the writer's metrics, and a wake-up for the push
/// worker when notification jobs were queued.
fn commit_hook(metrics: Arc<Metrics>, push: Option<Arc<Push>>) -> CommitHook {
    Arc::new(move |c| {
        metrics.committed(c.commands, c.messages, c.took, c.paused_before);
        if let Some(push) = &push
            && c.pushes_queued > 0
        {
            metrics.push.queued.fetch_add(u64::from(c.pushes_queued), Relaxed);
            push.wake.notify_one();
        }
    })
}

/// The presence ticker and the push worker.
fn start_background(core: &Arc<Core>, shutdown: &CancellationToken) {
    let (presence, stop) = (Arc::clone(&core.presence), shutdown.clone());
    core.tracker.spawn(async move {
        let mut tick = tokio::time::interval(crate::presence::TICK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => presence.tick(std::time::Instant::now()),
            }
        }
    });
    if let Some(push) = core.push.clone() {
        let handles = crate::push::worker::Handles {
            outbox: core.store.clone(),
            metrics: Arc::clone(&core.metrics),
            tracker: core.tracker.clone(),
        };
        core.tracker.spawn(crate::push::worker::run(handles, push, shutdown.clone()));
    }
}

/// The QUIC endpoint: its transport settings and the TLS config.
fn quic_endpoint(
    config: &Config,
    addr: SocketAddr,
    tls_config: &Arc<rustls::ServerConfig>,
) -> Result<quinn::Endpoint, SetupError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::clone(tls_config))
        .map_err(|e| SetupError::Invalid(format!("QUIC TLS settings: {e}")))?;
    let mut quic_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.heartbeat_interval() * 3)
        .map_err(|e| SetupError::Invalid(format!("QUIC idle timeout: {e}")))?;
    transport
        .max_concurrent_bidi_streams(quic::MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        // Datagrams carry typing notices only (typing-datagram): a small
        // buffer; what overflows it is dropped, as datagrams may be.
        .datagram_receive_buffer_size(Some(64 * 1024))
        .max_idle_timeout(Some(idle));
    quic_config.transport_config(Arc::new(transport));
    let endpoint_config = quic::endpoint_config(&config.data_dir)?;
    let socket = std::net::UdpSocket::bind(addr).map_err(|source| SetupError::Bind { what: "QUIC", addr, source })?;
    quic::size_receive_buffer(&socket);
    quinn::Endpoint::new(endpoint_config, Some(quic_config), socket, Arc::new(quinn::TokioRuntime))
        .map_err(|source| SetupError::Bind { what: "QUIC", addr, source })
}
