//! The input line: a small multi-line editor with history, in the spirit of
//! a shell prompt. Up and Down move between lines of a multi-line message and
//! walk the history from its first and last line; what was being typed is
//! kept while browsing.

use unicode_width::UnicodeWidthChar;

/// Sent messages and commands remembered for Up/Down.
const HISTORY: usize = 200;

/// The text being typed.
#[derive(Debug, Default)]
pub struct InputLine {
    chars: Vec<char>,
    /// Cursor position in `chars`.
    cursor: usize,
    history: Vec<String>,
    /// Browsing `history[i]`; `None`: editing the draft.
    browsing: Option<usize>,
    /// The draft while browsing.
    draft: String,
}

impl InputLine {
    /// The text.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// Whether nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Inserts a char at the cursor.
    pub fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Inserts text (a paste) at the cursor. Carriage returns become
    /// newlines.
    pub fn insert_str(&mut self, s: &str) {
        let s = s.replace("\r\n", "\n").replace('\r', "\n");
        for c in s.chars() {
            self.insert(c);
        }
    }

    /// Deletes the char before the cursor.
    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the char under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1] == ' ' {
            start -= 1;
        }
        while start > 0 && !matches!(self.chars[start - 1], ' ' | '\n') {
            start -= 1;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U).
    pub fn delete_to_line_start(&mut self) {
        let start = self.line_start(self.cursor);
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Deletes from the cursor to the end of the line (Ctrl-K).
    pub fn delete_to_line_end(&mut self) {
        let end = self.line_end(self.cursor);
        self.chars.drain(self.cursor..end);
    }

    /// Cursor one char left.
    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Cursor one char right.
    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    /// Cursor to the start of its line.
    pub fn home(&mut self) {
        self.cursor = self.line_start(self.cursor);
    }

    /// Cursor to the end of its line.
    pub fn end(&mut self) {
        self.cursor = self.line_end(self.cursor);
    }

    fn line_start(&self, at: usize) -> usize {
        self.chars[..at].iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self, at: usize) -> usize {
        self.chars[at..].iter().position(|&c| c == '\n').map_or(self.chars.len(), |i| at + i)
    }

    /// Up: the line above, or the previous history entry from the first line.
    pub fn up(&mut self) {
        let start = self.line_start(self.cursor);
        if start == 0 {
            self.history_back();
            return;
        }
        let col = self.cursor - start;
        let prev_start = self.line_start(start - 1);
        self.cursor = (prev_start + col).min(start - 1);
    }

    /// Down: the line below, or the next history entry from the last line.
    pub fn down(&mut self) {
        let end = self.line_end(self.cursor);
        if end == self.chars.len() {
            self.history_forward();
            return;
        }
        let col = self.cursor - self.line_start(self.cursor);
        let next_end = self.line_end(end + 1);
        self.cursor = (end + 1 + col).min(next_end);
    }

    fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }

    fn history_back(&mut self) {
        let i = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(i);
        let entry = self.history[i].clone();
        self.set(&entry);
    }

    fn history_forward(&mut self) {
        let Some(i) = self.browsing else { return };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            let entry = self.history[i + 1].clone();
            self.set(&entry);
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.set(&draft);
        }
    }

    /// Takes the text (Enter), remembering it in the history.
    pub fn take(&mut self) -> String {
        let text = self.text();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        text
    }

    /// The text before the cursor.
    pub fn before_cursor(&self) -> String {
        self.chars[..self.cursor].iter().collect()
    }

    /// Replaces `len` chars from `start` with `text`; the cursor goes after
    /// it (Tab completion).
    pub fn replace(&mut self, start: usize, len: usize, text: &str) {
        let start = start.min(self.chars.len());
        let end = (start + len).min(self.chars.len());
        self.chars.splice(start..end, text.chars());
        self.cursor = start + text.chars().count();
    }

    /// Puts text back (a command that could not run), cursor at the end.
    pub fn restore(&mut self, text: &str) {
        self.set(text);
    }

    /// The text wrapped to `width` columns, and the cursor's (column, row)
    /// in it.
    pub fn layout(&self, width: usize) -> (Vec<String>, (usize, usize)) {
        let width = width.max(2);
        let mut lines = vec![String::new()];
        let (mut col, mut row) = (0, 0);
        let mut cursor = (0, 0);
        for (i, &c) in self.chars.iter().enumerate() {
            if i == self.cursor {
                cursor = (col, row);
            }
            if c == '\n' {
                lines.push(String::new());
                (col, row) = (0, row + 1);
                continue;
            }
            let (shown, w) = if c.is_control() { (' ', 1) } else { (c, c.width().unwrap_or(0)) };
            if col + w > width {
                lines.push(String::new());
                (col, row) = (0, row + 1);
                if i == self.cursor {
                    cursor = (0, row);
                }
            }
            lines[row].push(shown);
            col += w;
        }
        if self.cursor == self.chars.len() {
            cursor = if col >= width { (0, row + 1) } else { (col, row) };
            if cursor.1 == lines.len() {
                lines.push(String::new());
            }
        }
        (lines, cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> InputLine {
        let mut i = InputLine::default();
        i.insert_str(s);
        i
    }

    #[test]
    fn editing() {
        let mut i = typed("helo");
        i.left();
        i.insert('l');
        assert_eq!(i.text(), "hello");
        i.end();
        i.insert_str(" big world");
        i.delete_word();
        assert_eq!(i.text(), "hello big ");
        i.home();
        i.delete();
        assert_eq!(i.text(), "ello big ");
        i.delete_to_line_end();
        assert!(i.is_empty());
    }

    #[test]
    fn multi_line_cursor_moves_between_lines() {
        let mut i = typed("first line\nsecond");
        assert_eq!(i.layout(40), (vec!["first line".into(), "second".into()], (6, 1)));
        i.up();
        assert_eq!(i.layout(40).1, (6, 0));
        i.down();
        assert_eq!(i.layout(40).1, (6, 1));
        i.delete_to_line_start();
        assert_eq!(i.text(), "first line\n");
    }

    #[test]
    fn history_keeps_the_draft() {
        let mut i = typed("one");
        assert_eq!(i.take(), "one");
        i.insert_str("two");
        i.take();
        i.insert_str("draft");
        i.up();
        assert_eq!(i.text(), "two");
        i.up();
        assert_eq!(i.text(), "one");
        i.up();
        assert_eq!(i.text(), "one", "stops at the oldest");
        i.down();
        i.down();
        assert_eq!(i.text(), "draft");
    }

    #[test]
    fn layout_wraps_and_places_the_cursor() {
        let i = typed("abcdef");
        assert_eq!(i.layout(4), (vec!["abcd".into(), "ef".into()], (2, 1)));
        let i = typed("abcd");
        assert_eq!(i.layout(4), (vec!["abcd".into(), String::new()], (0, 1)), "cursor past a full line");
        assert_eq!(InputLine::default().layout(4), (vec![String::new()], (0, 0)));
    }
}
