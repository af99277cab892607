//! # confab-fuzz
//!
//! Harnesses for the fuzz targets in `fuzz_targets/` (see README.md). The
//! protocol targets need nothing but `confab-protocol` and live in their
//! target files; the whole-server target, `server_e2e`, has its parts here
//! so the seed generator (`examples/gen_e2e_seeds.rs`) and the seed replay
//! test (`tests/e2e_seeds.rs`) use the same code as the fuzzer.
//!
//! ## Layout
//! - [`script`]: the input format: client actions decoded from bytes, and
//!   the encoder seeds are written with.
//! - [`world`]: the in-process server and the users each input gets.
//! - [`contract`]: the invariants every server frame is checked against.
//! - [`e2e`]: plays a script against the server and checks the contract.

pub mod contract;
pub mod e2e;
pub mod script;
pub mod world;
