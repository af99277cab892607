//! # confab-client
//!
//! An async client for Confab servers over QUIC, TCP+TLS or WebSocket,
//! built on the
//! sans-IO session machine in `confab-protocol`, plus the `confab` command
//! line client (`src/main.rs`).
//!
//! ## Layout
//! - [`Connection`]: one session: connect, handshake, requests, events,
//!   automatic heartbeats.
//! - [`InboxTracker`]: applies inbox events once each, in order, and spots
//!   gaps to sync.
//! - [`Profile`]: a device's saved token, cursor and trusted fingerprints.
//! - [`tls`]: fingerprint pinning (trust on first use).
//!
//! ## Example
//! ```no_run
//! # async fn run() -> Result<(), confab_client::ClientError> {
//! use confab_client::{ConnectOptions, Connection, tls::Trust};
//! let conn = Connection::connect(&ConnectOptions::new("127.0.0.1:7443", Trust::FirstUse)).await?;
//! let me = conn.signup("alice", "correct horse battery", "laptop").await?;
//! let dm = conn.open_direct("bob").await?;
//! let sent = conn.send(dm.conversation_id, "m-1", "hello bob").await?;
//! println!("stored as seq {}", sent.message.unwrap().seq);
//! # let _ = me; Ok(()) }
//! ```
#![deny(missing_docs)]

mod connection;
pub mod discover;
mod error;
mod inbox;
mod profile;
pub mod tls;
mod ws;

pub use connection::{ConnectOptions, Connection, Event, TransportKind, finish_closing};
pub use error::ClientError;
pub use inbox::{InboxTracker, Offered};
pub use profile::Profile;

/// A fresh client_msg_id: 32 hex characters of randomness.
pub fn new_client_msg_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}
