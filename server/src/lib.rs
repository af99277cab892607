//! # confab-server
//!
//! `confabd`, the Confab chat server. It speaks the protocol in `spec/`
//! (through the sans-IO machines in `confab-protocol`) over QUIC,
//! TCP+TLS and WebSocket, stores everything durably in fjall, and delivers live events to
//! every connected device.
//!
//! ## Layout
//! The crate reads top-down; no module imports one above it (checked by
//! `tests/layers.rs`; see docs/ARCHITECTURE.md):
//! - [`server`]: wiring, startup and graceful shutdown.
//! - [`http`]: the HTTP listener: WebSocket bridge, browser client,
//!   health, metrics, discovery.
//! - [`transport`]: the TCP+TLS and QUIC accept loops, server-side TLS,
//!   and the task that owns one session whatever its transport;
//!   [`admin`]: the operator's socket (`confabd admin`).
//! - [`api`]: one handler per request, by family, and the one place that
//!   maps internal errors to wire codes.
//! - [`state`]: the chat core: the services a request is served with.
//! - Services: [`presence`] (online/away/offline, to subscribers), [`push`]
//!   (notifications for devices that are away), [`hub`] (this node's live
//!   sessions), [`accounts`] (tokens, login and signup throttles),
//!   [`passwords`] (Argon2id on a fixed pool), [`quota`] (windowed
//!   budgets), [`config`], [`metrics`].
//! - Foundations: [`store`] (everything durable, behind a domain-shaped
//!   seam), [`cluster`] (the same seams over a NATS JetStream cluster),
//!   [`delivery`] (the seam to live sessions), [`tls`], [`setup`]
//!   (private files, start errors), [`admission`] (connections per
//!   address), [`link`] (what a transport must do for a session),
//!   [`outbound`] (one session's bounded queue of frames).
//!
//! ## Example
//! ```no_run
//! # async fn run() -> Result<(), confab_server::setup::SetupError> {
//! let mut config = confab_server::config::Config::default();
//! config.data_dir = "/tmp/confab-example".into();
//! let server = confab_server::server::Server::start(config).await?;
//! println!("TCP+TLS on {:?}", server.tcp_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod accounts;
pub mod admin;
pub mod admission;
pub mod api;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod http;
pub mod hub;
pub mod link;
pub mod metrics;
pub mod outbound;
pub mod passwords;
pub mod presence;
pub mod push;
pub mod quota;
pub mod server;
pub mod setup;
pub mod state;
pub mod store;
pub mod tls;
pub mod transport;
