//! `confab chat --headless` (hidden): the chat UI without a terminal, for
//! the client conformance suite (conformance/drivers/confab-chat.sh).
//!
//! The UI loop, the model and the network side are the ones `confab chat`
//! runs; only the screen is an off-screen buffer (ratatui's `TestBackend`)
//! and the keyboard is a [`Script`] read from the suite's variables:
//! `CONFAB_CONFORMANCE_CONVERSATION` (the conversation to open) and
//! `CONFAB_CONFORMANCE_SEND` (texts, one per line). Once the link is up and
//! the conversation is in the list, it types `/go N` (the conversation's
//! number in the list) and Enter, then each text and Enter, as keys the UI
//! handles like a user's. Every event from the network side is logged on
//! stderr.

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

use super::model::ChatModel;
use super::net::NetEvent;

/// The off-screen terminal's size.
pub const WIDTH: u16 = 100;
/// The off-screen terminal's size.
pub const HEIGHT: u16 = 30;

/// What the headless UI types, and when.
#[derive(Debug)]
pub struct Script {
    conversation: u64,
    lines: Vec<String>,
    step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the link and the conversation, then `/go N`.
    Open,
    /// The texts, once the conversation is open.
    Type,
    /// Everything typed.
    Done,
}

impl Script {
    /// Opens `conversation` and sends `lines` (blank ones are skipped, as
    /// Enter on an empty input does nothing).
    pub fn new(conversation: u64, lines: Vec<String>) -> Script {
        let lines = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
        Script { conversation, lines, step: Step::Open }
    }

    /// The script from `CONFAB_CONFORMANCE_CONVERSATION` and
    /// `CONFAB_CONFORMANCE_SEND`.
    pub fn from_env() -> Result<Script, String> {
        let var = "CONFAB_CONFORMANCE_CONVERSATION";
        let conversation = std::env::var(var).map_err(|_| format!("--headless needs {var}"))?;
        let conversation =
            conversation.trim().parse().map_err(|_| format!("{var}: '{conversation}' is not a conversation id"))?;
        let send = std::env::var("CONFAB_CONFORMANCE_SEND").unwrap_or_default();
        Ok(Script::new(conversation, send.lines().map(str::to_string).collect()))
    }

    /// The keys a user would press now, given what the screen shows:
    /// nothing until the link is up and the conversation is in the list;
    /// then `/go N` and Enter; once it is open, each text and Enter.
    pub fn keys(&mut self, model: &ChatModel) -> Vec<Event> {
        match self.step {
            Step::Open => {
                if !model.connected() {
                    return Vec::new();
                }
                let Some(i) = model.order().iter().position(|&id| id == self.conversation) else {
                    return Vec::new();
                };
                self.step = Step::Type;
                let go = format!("/go {}", i + 1);
                log(&format!("typing {go:?}"));
                typed(&go)
            }
            Step::Type if model.selected() != Some(self.conversation) => {
                log(&format!("conversation {} is not open; opening it again", self.conversation));
                self.step = Step::Open;
                Vec::new()
            }
            Step::Type => {
                self.step = Step::Done;
                self.lines
                    .iter()
                    .flat_map(|l| {
                        log(&format!("typing {l:?}"));
                        typed(l)
                    })
                    .collect()
            }
            Step::Done => Vec::new(),
        }
    }

    /// Logs an event from the network side.
    pub fn saw(&self, ev: &NetEvent) {
        log(&format!("{ev:?}"));
    }
}

/// The key presses that type `text`, then Enter.
fn typed(text: &str) -> Vec<Event> {
    let key = |code| Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
    text.chars().map(|c| key(KeyCode::Char(c))).chain([key(KeyCode::Enter)]).collect()
}

/// The headless mode's only output.
fn log(line: &str) {
    eprintln!("headless: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::Link;
    use confab_client::TransportKind;
    use confab_protocol::pb;

    fn conversation(id: u64, peer: &str, activity_ms: i64) -> pb::Conversation {
        pb::Conversation {
            conversation_id: id,
            kind: pb::ConversationKind::Direct as i32,
            peer_user_id: id + 100,
            peer_username: peer.into(),
            activity_ms,
            member_count: 2,
            ..Default::default()
        }
    }

    fn text_of(keys: &[Event]) -> String {
        keys.iter()
            .map(|k| match k {
                Event::Key(KeyEvent { code: KeyCode::Char(c), .. }) => *c,
                Event::Key(KeyEvent { code: KeyCode::Enter, .. }) => '⏎',
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn opens_the_conversation_by_its_number_once_online_then_types_each_line() {
        let mut m = ChatModel::new("me", 1);
        let mut s = Script::new(7, vec!["one".into(), "".into(), "two words".into()]);
        assert!(s.keys(&m).is_empty(), "nothing to see yet");
        m.handle_snapshot(&[conversation(3, "newer", 2_000), conversation(7, "peer", 1_000)], true);
        assert!(s.keys(&m).is_empty(), "listed, but not online");
        m.set_link(Link::Connected { server: "x:1".into(), transport: TransportKind::Tcp }, std::time::Instant::now());
        assert_eq!(text_of(&s.keys(&m)), "/go 2⏎", "the second in the list");
        // The UI did not open it (as if the keys were lost): asked again.
        assert!(s.keys(&m).is_empty());
        assert_eq!(text_of(&s.keys(&m)), "/go 2⏎");
        m.select(7);
        assert_eq!(text_of(&s.keys(&m)), "one⏎two words⏎", "the blank line is not typed");
        assert!(s.keys(&m).is_empty(), "typed once");
    }
}
