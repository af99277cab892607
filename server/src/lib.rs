//! # confab-server
//!
//! `confabd`, the Confab chat server. It speaks the protocol in `spec/`
//! (through the sans-IO machines in `confab-protocol`) over QUIC,
//! TCP+TLS and WebSocket, stores everything durably in fjall, and delivers live events to
//! every connected device.
//!
//! ## Layout
//! - [`config`]: settings from flags and the TOML file, with defaults.
//! - [`tls`]: certificates (generated on first start) and rustls configs.
//! - [`tls_stream`]: server-side TLS on rustls' unbuffered API (no
//!   buffers held by idle connections).
//! - [`store`]: fjall behind a domain-shaped interface; one writer thread
//!   with group commit; all key layouts.
//! - [`hub`]: the in-memory session table; live delivery to sessions.
//! - [`outbound`]: one session's bounded queue of frames to write.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`presence`]: online/away/offline with a grace period, to subscribers.
//! - [`push`]: push notifications for devices that are away (Web Push,
//!   webhooks) and the outbox worker.
//! - [`accounts`]: password hashing, tokens, login throttling.
//! - [`admission`]: connections per address, the password-check queue.
//! - [`api`]: one handler per request, and the one place that maps
//!   internal errors to wire codes.
//! - [`connection`]: the task that owns one session's transport.
//! - [`link`]: what a transport must do for a session (streams, messages).
//! - [`listen`]: TCP+TLS and QUIC accept loops.
//! - [`http`]: the HTTP listener: WebSocket bridge, browser client,
//!   health, metrics, discovery.
//! - [`server`]: wiring, startup and graceful shutdown.
//!
//! ## Example
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let mut config = confab_server::config::Config::default();
//! config.data_dir = "/tmp/confab-example".into();
//! let server = confab_server::server::Server::start(config).await?;
//! println!("TCP+TLS on {:?}", server.tcp_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod admission;
pub mod api;
pub mod config;
pub mod connection;
pub mod http;
pub mod hub;
pub mod link;
pub mod listen;
pub mod metrics;
pub mod outbound;
pub mod presence;
pub mod push;
pub mod server;
pub mod store;
pub mod tls;
pub mod tls_stream;
