//! `confab chat`: an interactive terminal client (ratatui + crossterm).
//!
//! A thin layer over `confab-client`. The state lives in a model that does
//! no I/O and is tested on its own; drawing is a function of that state; the
//! network side owns the connection and reconnects by itself.
//!
//! ## Layout
//! - `model`: conversations, pending sends, presence, the link (events in,
//!   state and requests out; time is an argument).
//! - `conversation`: one conversation: counters, messages by seq, typing.
//! - `view`: draws the model (conversation list, messages, input, status).
//! - `input`: the line editor (multi-line, history).
//! - `command`: slash commands.
//! - `complete`: Tab completion of /commands and @names.
//! - `text`: wrapping, truncation and UTC dates by display width.
//! - `net`: the connection: resume, catch up, live events, reconnect.
//! - `app`: the loop between terminal, model and network.
//! - `headless`: `--headless`, the same loop scripted, with no terminal
//!   (for the client conformance suite).
//! - `terminal`: raw mode and the alternate screen, restored on exit and on
//!   panic.

mod app;
mod command;
mod complete;
mod conversation;
mod headless;
mod input;
mod model;
mod net;
mod terminal;
mod text;
mod view;

pub use app::{run, run_headless};
pub(crate) use view::membership_text;
