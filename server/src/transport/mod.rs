//! Transports: accepting connections and serving sessions over them.
//!
//! ## Layout
//! - `tcp`: the TCP+TLS accept loop (a connection permit before each
//!   accept, then the per-address check).
//! - `quic`: the QUIC accept loop and its Retry policy.
//! - `streams`: a QUIC session's request streams, read by its session's task.
//! - `tls_stream`: server-side TLS on rustls' unbuffered API.
//! - `connection`: the task that owns one session, whatever its transport.

pub mod connection;
pub mod quic;
pub mod streams;
pub mod tcp;
pub mod tls_stream;

use std::sync::Arc;
use std::time::Duration;

use confab_protocol::session::ServerConfig;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::admission::AddressLimits;
use crate::state::Core;

/// What accepting and serving connections needs, on every transport.
pub struct Ingress {
    /// The chat core requests are served with.
    pub core: Arc<Core>,
    /// Connection permits (over all transports).
    pub connections: Arc<Semaphore>,
    /// Connections per source address.
    pub per_address: Arc<AddressLimits>,
    /// Session settings for QUIC sessions.
    pub quic_session: Arc<ServerConfig>,
    /// Session settings for TCP+TLS and WebSocket sessions.
    pub tcp_session: Arc<ServerConfig>,
    /// TLS + Hello deadline.
    pub handshake_timeout: Duration,
    /// How long shutdown lets requests finish.
    pub shutdown_grace: Duration,
    /// SO_SNDBUF for accepted TCP connections (0: the kernel's choice).
    pub tcp_send_buffer_bytes: usize,
    /// Every connection task, for shutdown.
    pub tracker: TaskTracker,
}
