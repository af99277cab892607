//! # confab-protocol
//!
//! The Confab wire protocol, without I/O: the generated message types, the
//! framing, the limits, the error codes and the per-connection session
//! state machines. The server (`confabd`), the client library, the bench and
//! the fuzz targets all build on this crate, so there is one implementation
//! of the rules in `spec/PROTOCOL.md`.
//!
//! It deliberately does **not** open sockets, spawn tasks, read clocks or
//! store anything: time is passed in, bytes go in and out as buffers.
//!
//! ## Layout
//! - [`pb`]: types generated from `spec/confab.proto` (package `confab.v1`).
//! - [`framing`]: varint length-delimited frames, decoded in two steps
//!   (completeness and limit, then parse).
//! - [`ErrorCode`]: the open error-code type, constants generated from
//!   `spec/errors.md`.
//! - [`validate`]: rules for every peer-controlled field, mapped to codes.
//! - [`Limits`]: v1 defaults and their wire form.
//! - [`session`]: [`ServerSession`] and [`ClientSession`], `handle_*`/`poll_*`.
//!
//! ## Example
//! A client and a server session talking through memory:
//! ```
//! use std::{sync::Arc, time::Instant};
//! use bytes::BytesMut;
//! use confab_protocol::{pb, session::*};
//!
//! let t = Instant::now();
//! let now = Now { instant: t, unix_ms: 1_700_000_000_000 };
//! let mut client = ClientSession::new(&ClientConfig::default(), t);
//! let mut server = ServerSession::new(Arc::new(ServerConfig::default()), t);
//!
//! // Client → server: the Hello queued by `ClientSession::new`.
//! let mut wire = BytesMut::from(&client.poll_transmit().unwrap()[..]);
//! server.handle_input(&mut wire, now);
//! assert!(matches!(server.poll_event(), Some(ServerEvent::Handshaken { version: 1, .. })));
//!
//! // Server → client: the Welcome.
//! let mut wire = BytesMut::from(&server.poll_transmit().unwrap()[..]);
//! client.handle_input(&mut wire, t);
//! let Some(ClientEvent::Welcome(welcome)) = client.poll_event() else { panic!() };
//! assert_eq!(welcome.limits.unwrap().max_message_chars, 100_000);
//! ```
#![deny(missing_docs)]

pub mod error_code;
pub mod framing;
pub mod limits;
pub mod session;
pub mod validate;

pub use error_code::{ErrorClass, ErrorCode};
pub use framing::{FrameDecoder, FramingError, MalformedFrame};
pub use limits::Limits;
pub use session::{ClientSession, Now, ServerSession};

/// Types generated from `spec/confab.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/confab.v1.rs"));

    /// The schema as a serialized `FileDescriptorSet` (for reflection, JSON
    /// test vectors and tools).
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/confab.fds"));
}
