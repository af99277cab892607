//! Taking over the terminal and giving it back: raw mode, the alternate
//! screen, bracketed paste and focus reports on the way in; all of it undone
//! on the way out, when the guard drops, and from a panic hook, so a crash
//! never leaves the shell in raw mode. SIGTERM, SIGHUP and SIGINT end the
//! UI the normal way (see [`terminated`]) for the same reason.

use std::io::{self, Stdout, Write};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self, DisableBracketedPaste, DisableFocusChange, EnableBracketedPaste, EnableFocusChange,
};
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::crossterm::{cursor, execute};
use tokio::sync::mpsc;

/// The terminal, restored when dropped.
pub struct Tui {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

/// Whether the terminal is taken over now (so restoring twice is harmless).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Takes over the terminal.
pub fn enter() -> io::Result<Tui> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let was_active = restore();
            previous(info);
            // A panic on another thread (the key reader, a connection task)
            // would leave the UI drawing into a terminal given back: end
            // the process as a panic on the main thread would.
            if was_active {
                std::process::exit(101);
            }
        }));
    });
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut stdout = io::stdout();
    if let Err(e) = execute!(stdout, EnterAlternateScreen, EnableBracketedPaste, EnableFocusChange) {
        restore();
        return Err(e);
    }
    match Terminal::new(CrosstermBackend::new(stdout)) {
        Ok(terminal) => Ok(Tui { terminal }),
        Err(e) => {
            restore();
            Err(e)
        }
    }
}

/// Gives the terminal back (best effort: there is nobody to report to).
/// Returns whether it was taken over.
pub fn restore() -> bool {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return false;
    }
    let mut stdout = io::stdout();
    let _ = execute!(stdout, DisableFocusChange, DisableBracketedPaste, LeaveAlternateScreen, cursor::Show);
    let _ = disable_raw_mode();
    let _ = stdout.flush();
    true
}

/// Resolves when the process is asked to stop by a signal. Raw mode turns
/// Ctrl-C into a key, so SIGINT here comes from `kill`; SIGHUP means the
/// terminal went away.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup), Ok(mut int)) =
            (signal(SignalKind::terminate()), signal(SignalKind::hangup()), signal(SignalKind::interrupt()))
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Deref for Tui {
    type Target = Terminal<CrosstermBackend<Stdout>>;

    fn deref(&self) -> &Self::Target {
        &self.terminal
    }
}

impl DerefMut for Tui {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.terminal
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

/// Reads terminal events on a thread of its own (crossterm's reader
/// blocks) and forwards them until `stop` is set or the receiver is gone.
pub fn spawn_reader(tx: mpsc::UnboundedSender<event::Event>, stop: Arc<AtomicBool>) {
    // The thread polls with a timeout so it notices `stop`; its handle is
    // not joined: at exit it ends within one poll interval.
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(ev) => {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
}
