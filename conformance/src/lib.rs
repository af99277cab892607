//! # confab-conformance
//!
//! Conformance suites for the Confab protocol (spec/PROTOCOL.md).
//!
//! - [`server`]: black-box scenarios against any server, over TCP+TLS,
//!   QUIC or WebSocket, each naming the spec section it checks, plus every
//!   invalid golden vector replayed live ([`vectors`]).
//! - [`client`]: a scripted server that grades a client under test, which
//!   a driver command starts for each scenario.
//! - [`report`]: results as text lines and JUnit XML.
//! - [`wire`]: the raw peer the scenarios speak through.
//!
//! The `confab-conformance` binary runs them; confabd's own tests run the
//! server suite on all three transports (server/tests/conformance.rs).
#![deny(missing_docs)]

pub mod client;
pub mod report;
pub mod server;
pub mod vectors;
pub mod wire;
