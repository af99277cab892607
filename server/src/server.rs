//! Wiring: open the store, start the writer, bind the listeners; and the
//! one shutdown signal (a CancellationToken every task selects on, plus a
//! TaskTracker to wait for them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use confab_protocol::Limits;
use confab_protocol::session::ServerConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{LoginThrottle, SignupThrottle};
use crate::admission::{AddressLimits, PasswordGate};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::push::Push;
use crate::store::{Store, Writer};
use crate::{http, listen, tls};

/// State shared by every task of the server.
pub struct Shared {
    /// The settings in force.
    pub config: Config,
    /// Limits enforced (from the config).
    pub limits: Limits,
    /// Committed-data reads.
    pub store: Arc<Store>,
    /// The single writer.
    pub writer: Writer,
    /// Live sessions.
    pub hub: Arc<Hub>,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Who is online, and who wants to know.
    pub presence: Arc<Presence>,
    /// Failed-login throttle.
    pub throttle: LoginThrottle,
    /// Push notifications; `None` when disabled.
    pub push: Option<Arc<Push>>,
    /// Signups per address.
    pub signups: SignupThrottle,
    /// The queue in front of password hashing.
    pub password_gate: PasswordGate,
    /// Connections per source address.
    pub per_address: Arc<AddressLimits>,
    /// Session settings for QUIC sessions.
    pub quic_session_config: Arc<ServerConfig>,
    /// Session settings for TCP+TLS sessions.
    pub tcp_session_config: Arc<ServerConfig>,
    /// Connection permits.
    pub connections: Arc<Semaphore>,
    /// Every spawned task, for shutdown.
    pub tracker: TaskTracker,
    /// TLS + Hello deadline.
    pub handshake_timeout: Duration,
    /// How long shutdown lets requests finish.
    pub shutdown_grace: Duration,
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    quic: Option<(quinn::Endpoint, SocketAddr)>,
    tcp: Option<SocketAddr>,
    http: Option<SocketAddr>,
    fingerprint: String,
    cert_path: std::path::PathBuf,
}

impl Server {
    /// Opens everything and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let identity = tls::load_or_generate(&config.data_dir, config.cert.as_deref(), config.key.as_deref())?;
        if identity.generated {
            tracing::info!(path = %identity.cert_path.display(), "generated a self-signed certificate");
        }
        let tls_config = tls::server_config(&identity)?;
        let db_dir = config.data_dir.join("db");
        let durability = config.durability;
        let store = tokio::task::spawn_blocking(move || Store::open(&db_dir, durability))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening the store in {}", config.data_dir.join("db").display()))?;
        let store = Arc::new(store);
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(config.outbound_queue, config.outbound_queue_bytes, Arc::clone(&metrics)));
        let observe = {
            let m = Arc::clone(&metrics);
            Arc::new(move |commands: usize, messages: u64, took: Duration| m.committed(commands, messages, took))
        };
        let (writer, writer_thread) = Writer::start(Arc::clone(&store), hub.clone(), observe, config.writer_queue)
            .context("starting the writer")?;

        let push = Push::new(&config.push, &config.data_dir).context("setting up push notifications")?.map(Arc::new);
        let vapid_public_key = push.as_ref().map(|p| p.vapid_public_key()).unwrap_or_default();
        let limits = Limits::from(&config.limits);
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
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            limits: limits.clone(),
            store,
            writer,
            metrics,
            presence: Arc::new(Presence::new(
                Arc::clone(&hub),
                Duration::from_millis(config.presence_grace_ms),
                Duration::from_millis(config.presence_coalesce_ms),
            )),
            hub,
            throttle: LoginThrottle::new(config.login_failures_per_user, config.login_failures_per_address),
            push,
            signups: SignupThrottle::new(config.signups_per_address_per_hour),
            password_gate: PasswordGate::new(config.password_check_concurrency, config.password_check_queue),
            per_address: AddressLimits::new(config.max_connections_per_address),
            quic_session_config: session(vec![
                confab_protocol::session::REQUEST_STREAMS.into(),
                confab_protocol::session::TYPING_DATAGRAM.into(),
            ]),
            tcp_session_config: session(vec![]),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            tracker: TaskTracker::new(),
            handshake_timeout: config.handshake_timeout(),
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            config,
        });

        {
            let (presence, stop) = (Arc::clone(&shared.presence), shutdown.clone());
            shared.tracker.spawn(async move {
                let mut tick = tokio::time::interval(crate::presence::TICK);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => presence.tick(std::time::Instant::now()),
                    }
                }
            });
        }
        if let Some(push) = shared.push.clone() {
            shared.tracker.spawn(crate::push::worker::run(Arc::clone(&shared), push, shutdown.clone()));
        }
        let mut server = Server {
            shared: Arc::clone(&shared),
            shutdown: shutdown.clone(),
            writer_thread: Some(writer_thread),
            quic: None,
            tcp: None,
            http: None,
            fingerprint: identity.fingerprint(),
            cert_path: identity.cert_path.clone(),
        };
        if let Some(addr) = shared.config.tcp {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding TCP {addr}"))?;
            let bound = listen::bound(listener.local_addr(), "TCP")?;
            shared.tracker.spawn(listen::tcp(Arc::clone(&shared), listener, Arc::clone(&tls_config), shutdown.clone()));
            server.tcp = Some(bound);
        }
        if let Some(addr) = shared.config.quic {
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::clone(&tls_config))
                .context("QUIC TLS settings")?;
            let mut quic_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            let mut transport = quinn::TransportConfig::default();
            transport
                .max_concurrent_bidi_streams(32u32.into())
                .max_concurrent_uni_streams(0u32.into())
                // Datagrams carry typing notices only (typing-datagram):
                // a small buffer; what overflows it is dropped, as
                // datagrams may be.
                .datagram_receive_buffer_size(Some(64 * 1024))
                .max_idle_timeout(Some(
                    quinn::IdleTimeout::try_from(shared.config.heartbeat_interval() * 3).context("idle timeout")?,
                ));
            quic_config.transport_config(Arc::new(transport));
            let endpoint =
                quinn::Endpoint::server(quic_config, addr).with_context(|| format!("binding QUIC {addr}"))?;
            let bound = listen::bound(endpoint.local_addr(), "QUIC")?;
            shared.tracker.spawn(listen::quic(Arc::clone(&shared), endpoint.clone(), shutdown.clone()));
            server.quic = Some((endpoint, bound));
        }
        if let Some(addr) = shared.config.http {
            server.http = Some(server.start_http(addr, &tls_config).await?);
        }
        Ok(server)
    }

    async fn start_http(&self, addr: SocketAddr, tls_config: &Arc<rustls::ServerConfig>) -> anyhow::Result<SocketAddr> {
        let shared = &self.shared;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding HTTP {addr}"))?;
        let bound = listen::bound(listener.local_addr(), "HTTP")?;
        let tls = shared.config.http_tls.then(|| {
            let mut c = (**tls_config).clone();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        });
        if tls.is_none() && !bound.ip().is_loopback() {
            tracing::warn!(%bound, "plain HTTP beyond loopback: put a TLS proxy in front or use --http-tls");
        }
        let assets = match &shared.config.web_dir {
            Some(d) => http::assets::Assets::Dir(d.clone()),
            None => http::assets::Assets::Embedded,
        };
        let app = Arc::new(http::App {
            shared: Arc::clone(shared),
            shutdown: self.shutdown.clone(),
            origins: http::Origins::from_config(&shared.config.allowed_origins),
            assets,
            endpoints: http::Endpoints {
                quic: self.quic_addr(),
                tcp: self.tcp,
                http: Some(bound),
                http_tls: shared.config.http_tls,
                fingerprint: self.fingerprint.clone(),
            },
        });
        // Silence longer than a client that heartbeats may keep ends an
        // HTTP connection (WebSocket sessions included).
        let deadlines = http::listener::Deadlines {
            first_request: shared.handshake_timeout,
            idle: (shared.config.heartbeat_interval() * 3).max(Duration::from_secs(60)),
        };
        let incoming = http::listener::start(Arc::clone(shared), listener, tls, deadlines, self.shutdown.clone())
            .context("starting the HTTP listener")?;
        let service = http::router(app).into_make_service_with_connect_info::<http::listener::PeerAddr>();
        let stop = self.shutdown.clone();
        shared.tracker.spawn(async move {
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

    /// Shared state (for tests and tools).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Resolves when shutdown has been requested.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Graceful shutdown: stop accepting, GoAway to every session, let
    /// requests in flight finish (up to the grace period), then flush and
    /// close the store.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.shared.tracker.close();
        let grace = self.shared.shutdown_grace + Duration::from_secs(2);
        if tokio::time::timeout(grace, self.shared.tracker.wait()).await.is_err() {
            tracing::warn!("some tasks did not finish within the grace period");
        }
        if let Some((endpoint, _)) = &self.quic {
            endpoint.close(quinn::VarInt::from_u32(confab_protocol::ErrorCode::SHUTTING_DOWN.0), b"shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        self.shared.writer.stop().await;
        if let Some(thread) = self.writer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        tracing::info!("stopped");
    }
}
