//! Text helpers for the terminal: word wrapping and truncation by display
//! width (CJK and emoji take two columns), and UTC dates without a calendar
//! crate.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

const DAY_MS: i64 = 86_400_000;

/// Display width of one char (control characters are shown as a space).
fn width(c: char) -> usize {
    if c.is_control() { 1 } else { c.width().unwrap_or(0) }
}

/// What to put on screen for a char: control characters (which would move
/// the terminal's cursor) become spaces, a tab four.
fn push_visible(line: &mut String, c: char) {
    if c.is_control() { line.push(' ') } else { line.push(c) }
}

/// Wraps text into lines of at most `max` columns: at spaces where
/// possible, inside a word when it is longer than a line. Newlines in the
/// text start new lines; an empty text gives one empty line.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let para = para.replace('\t', "    ");
        let mut line = String::new();
        let mut line_w = 0;
        // Byte offset in `line` just after the last space, and the width
        // before it: where the line can break.
        let mut brk: Option<(usize, usize)> = None;
        for c in para.chars() {
            let w = width(c);
            if line_w + w > max && !line.is_empty() {
                match brk {
                    Some((at, at_w)) if c != ' ' => {
                        let rest = line.split_off(at);
                        out.push(line.trim_end().to_string());
                        line = rest;
                        line_w -= at_w;
                    }
                    _ => {
                        out.push(line.trim_end().to_string());
                        line = String::new();
                        line_w = 0;
                    }
                }
                brk = None;
                if c == ' ' {
                    continue; // a space at a break disappears
                }
            }
            push_visible(&mut line, c);
            line_w += w;
            if c == ' ' {
                brk = Some((line.len(), line_w));
            }
        }
        out.push(line);
    }
    out
}

/// Cuts `s` to at most `max` columns, ending with '…' when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.width() <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = width(c);
        if w + cw + 1 > max {
            break;
        }
        push_visible(&mut out, c);
        w += cw;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// Days since 1970-01-01 (UTC) of a time in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// (year, month 1-12, day 1-31) of a day number (Howard Hinnant's
/// civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// "Wed 25 Nov 2026" for a day number.
pub fn format_day(days: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let (y, m, d) = civil(days);
    format!("{} {d} {} {y}", WEEKDAYS[days.rem_euclid(7) as usize], MONTHS[m as usize - 1])
}

/// "14:05" (UTC).
pub fn format_hm(ms: i64) -> String {
    let mins = ms.div_euclid(60_000);
    format!("{:02}:{:02}", mins.div_euclid(60).rem_euclid(24), mins.rem_euclid(60))
}

/// "25 Nov 14:05" (UTC), for last-seen times.
pub fn format_seen(ms: i64) -> String {
    let (_, m, d) = civil(day_of(ms));
    format!("{d} {} {}", MONTHS[m as usize - 1], format_hm(ms))
}

/// Where `@me` is mentioned in `line`: byte ranges of each `@me` (ASCII
/// case-insensitive; not part of a longer name like `@meg` or
/// `x@me.example`).
pub fn mentions(line: &str, me: &str) -> Vec<(usize, usize)> {
    let name_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    let bytes = line.as_bytes();
    let me = me.as_bytes();
    let mut out = Vec::new();
    if me.is_empty() {
        return out;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'@' || (i > 0 && (name_char(bytes[i - 1]) || bytes[i - 1] == b'@')) {
            continue;
        }
        let end = i + 1 + me.len();
        if end > bytes.len() || !bytes[i + 1..end].eq_ignore_ascii_case(me) {
            continue;
        }
        // A trailing '.' ends a sentence unless a name goes on after it.
        let mut after = end;
        while after < bytes.len() && bytes[after] == b'.' {
            after += 1;
        }
        if after == bytes.len() || !name_char(bytes[after]) {
            out.push((i, end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_inside_long_words() {
        assert_eq!(wrap("hello there world", 11), ["hello there", "world"]);
        assert_eq!(wrap("hello there world", 8), ["hello", "there", "world"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("one\ntwo", 10), ["one", "two"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("a\u{1b}[2Jb", 10), ["a [2Jb"], "escape sequences cannot reach the terminal");
        for line in wrap("日本語のテキストを折り返す", 7) {
            assert!(line.width() <= 7, "{line}");
        }
    }

    #[test]
    fn truncates_by_width() {
        assert_eq!(truncate("alice", 5), "alice");
        assert_eq!(truncate("alexander", 5), "alex…");
        assert_eq!(truncate("日本語", 4), "日…");
    }

    #[test]
    fn dates_in_utc() {
        assert_eq!(format_day(0), "Thu 1 Jan 1970");
        // 2024-02-29T13:45:00Z
        let ms = 1_709_214_300_000;
        assert_eq!(format_day(day_of(ms)), "Thu 29 Feb 2024");
        assert_eq!(format_hm(ms), "13:45");
        assert_eq!(format_seen(ms), "29 Feb 13:45");
    }

    #[test]
    fn mentions_of_me() {
        assert_eq!(mentions("hi @alice!", "alice"), [(3, 9)]);
        assert_eq!(mentions("@Alice: look", "alice"), [(0, 6)]);
        assert_eq!(mentions("end @alice.", "alice"), [(4, 10)]);
        assert_eq!(mentions("@alice @alice", "alice"), [(0, 6), (7, 13)]);
        for no in ["@alicex", "bob@alice", "@alice_b", "@alice.b", "@al", "alice", "x@alice.example"] {
            assert_eq!(mentions(no, "alice"), [], "{no}");
        }
        assert_eq!(mentions("é @alice é", "alice"), [(3, 9)]);
    }
}
