//! Results: one line per check as it finishes, a summary, and JUnit XML.

use std::fmt::Write as _;
use std::time::Duration;

/// How one check ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It holds.
    Pass,
    /// It does not (and what was seen).
    Fail(String),
    /// It could not run here (and why).
    Skip(String),
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stable id.
    pub id: String,
    /// Spec section.
    pub section: String,
    /// What it checks.
    pub title: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub took: Duration,
}

/// Every result of a run.
pub struct Report {
    /// The suite's name in JUnit (`confab-conformance server tcp`).
    pub suite: String,
    /// Results in the order they finished.
    pub entries: Vec<Entry>,
    /// Print each result as it comes.
    pub live: bool,
}

impl Report {
    /// An empty report.
    pub fn new(suite: impl Into<String>, live: bool) -> Self {
        Report { suite: suite.into(), entries: Vec::new(), live }
    }

    /// Records (and, when live, prints) one result.
    pub fn add(&mut self, id: &str, section: &str, title: &str, outcome: Outcome, took: Duration) {
        let e = Entry { id: id.into(), section: section.into(), title: title.into(), outcome, took };
        if self.live {
            eprintln!("{}", line(&e));
        }
        self.entries.push(e);
    }

    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in &self.entries {
            match e.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail(_) => c.1 += 1,
                Outcome::Skip(_) => c.2 += 1,
            }
        }
        c
    }

    /// The failures, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.entries.iter().filter(|e| matches!(e.outcome, Outcome::Fail(_))).map(line).collect()
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let (p, f, s) = self.counts();
        format!("{}: {p} passed, {f} failed, {s} skipped", self.suite)
    }

    /// JUnit XML (one testsuite; a skipped check is `<skipped>`).
    pub fn junit(&self) -> String {
        let (_, f, s) = self.counts();
        let total: f64 = self.entries.iter().map(|e| e.took.as_secs_f64()).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" skipped=\"{s}\" time=\"{total:.3}\">",
            esc(&self.suite),
            self.entries.len()
        );
        for e in &self.entries {
            let _ = write!(
                x,
                "  <testcase classname=\"{}\" name=\"{} {} {}\" time=\"{:.3}\"",
                esc(&self.suite),
                esc(&e.id),
                esc(&e.section),
                esc(&e.title),
                e.took.as_secs_f64()
            );
            match &e.outcome {
                Outcome::Pass => x.push_str("/>\n"),
                Outcome::Fail(why) => {
                    let _ = writeln!(x, ">\n    <failure message=\"{}\"/>\n  </testcase>", esc(why));
                }
                Outcome::Skip(why) => {
                    let _ = writeln!(x, ">\n    <skipped message=\"{}\"/>\n  </testcase>", esc(why));
                }
            }
        }
        x.push_str("</testsuite>\n");
        x
    }
}

/// One result as a line: `ok   §8.2  send.idempotent  title`.
pub fn line(e: &Entry) -> String {
    let (tag, why) = match &e.outcome {
        Outcome::Pass => ("ok  ", String::new()),
        Outcome::Fail(w) => ("FAIL", format!("\n       {w}")),
        Outcome::Skip(w) => ("skip", format!(" ({w})")),
    };
    format!("{tag} {:<18} {:<40} {}{why}", e.section, e.id, e.title)
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counts_and_escapes() {
        let mut r = Report::new("s", false);
        r.add("a", "§1", "t<1>", Outcome::Pass, Duration::from_millis(5));
        r.add("b", "§2", "t2", Outcome::Fail("got \"x\" & y".into()), Duration::ZERO);
        r.add("c", "§3", "t3", Outcome::Skip("needs z".into()), Duration::ZERO);
        let x = r.junit();
        assert!(x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""), "{x}");
        assert!(x.contains("t&lt;1&gt;"), "{x}");
        assert!(x.contains("message=\"got &quot;x&quot; &amp; y\""), "{x}");
        assert_eq!(r.counts(), (1, 1, 1));
        assert_eq!(r.failures().len(), 1);
    }
}
