//! Per-connection session state machines, sans I/O.
//!
//! Both sides follow quinn-proto's shape: feed input with `handle_*`, take
//! output with `poll_*`, pass time in (`Instant` for deadlines, Unix
//! milliseconds where a timestamp goes on the wire). Nothing here reads a
//! clock or touches a socket, so the server, the client library, the bench
//! and the fuzz targets all drive the same code, and tests run it in memory.
//!
//! Call order for a transport driver:
//! 1. bytes arrive → `handle_input(&mut buf, now)`;
//! 2. drain `poll_event()` and act on each event;
//! 3. write everything `poll_transmit()` returns;
//! 4. sleep until `poll_timeout()` (or the next input) → `handle_timeout(now)`.

mod bucket;
mod client;
mod server;

pub use bucket::TokenBucket;
pub use client::{ClientConfig, ClientEvent, ClientSession};
pub use server::{Phase, ServerConfig, ServerEvent, ServerSession, StreamOutcome};

/// The capability that lets typing notices and events travel as QUIC
/// datagrams (spec §2.1, §11).
pub const TYPING_DATAGRAM: &str = "typing-datagram";
/// The capability for QUIC request streams (spec §2.1, §11).
pub const REQUEST_STREAMS: &str = "request-streams";

use std::time::Instant;

/// The current time as a session needs it: a monotonic instant for
/// deadlines and the wall clock for timestamps sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

impl Now {
    /// Reads both clocks. For drivers only; the machines never call it.
    pub fn system() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Now { instant: Instant::now(), unix_ms }
    }
}
