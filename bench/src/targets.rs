//! The targets of issue 9, checked against the rows of this run:
//! PASS/MISS (or "-" when the run did not measure what a target needs).
//! They are printed, never asserted: figures on a shared 2-core machine
//! are noisy.

use std::fmt::Write as _;

use crate::report::{Row, figure, lat};

/// One target's outcome.
#[derive(Debug)]
pub struct Verdict {
    /// What is measured.
    pub what: String,
    /// The goal.
    pub goal: String,
    /// What this run measured.
    pub measured: String,
    /// `None`: not measured in this run.
    pub pass: Option<bool>,
}

impl Verdict {
    /// "PASS", "MISS" or "-".
    pub fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        }
    }

    /// JSON form, for the `--json` document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.what, "goal": self.goal, "measured": self.measured, "verdict": self.verdict(),
        })
    }
}

/// The soak row's bound on its slowest message: about three times the
/// short W = 64 rows' maxima on the reference box, so a writer stopped
/// for the store's flush wait (up to 1 s) fails it.
const SOAK_MAX_US: u64 = 500_000;

fn find<'a>(rows: &'a [Row], scenario: &str, system: &str, words: &[&str]) -> Option<&'a Row> {
    rows.iter().find(|r| r.is(scenario, system, words))
}

fn v(what: &str, goal: &str, measured: Option<(String, bool)>) -> Verdict {
    let (measured, pass) = match measured {
        Some((m, p)) => (m, Some(p)),
        None => ("not measured".into(), None),
    };
    Verdict { what: what.into(), goal: goal.into(), measured, pass }
}

/// Every target, in the order.
pub fn check(rows: &[Row]) -> Vec<Verdict> {
    let mut out = Vec::new();
    let dm64 = find(rows, "dm", "confab", &["tcp", "fsync", "W=64"]);
    out.push(v(
        "dm, TCP+TLS, fsync group commit, W=64",
        "≥ 100,000 delivered msgs/s",
        dm64.map(|r| (format!("{} msg/s", figure(r.value)), r.value >= 100_000.0)),
    ));
    let mam = rows
        .iter()
        .filter(|r| r.scenario == "dm" && r.system == "ejabberd+mam")
        .max_by(|a, b| a.value.total_cmp(&b.value));
    out.push(v(
        "dm, TCP+TLS, fsync, W=64 vs archived ejabberd",
        "≥ 35× ejabberd with mod_mam",
        dm64.zip(mam).map(|(c, e)| {
            let x = c.value / e.value.max(1.0);
            (format!("{x:.1}× ({} vs {} msg/s)", figure(c.value), figure(e.value)), x >= 35.0)
        }),
    ));
    for durability in ["fsync", "buffered"] {
        let c = find(rows, "dm", "confab", &["tcp", durability, "W=1"]);
        let relay = find(rows, "dm", "relay", &["tcp", "W=1"]);
        out.push(v(
            &format!("dm, W=1, {durability}"),
            "≥ 0.5× the bare relay in the same run",
            c.zip(relay).map(|(c, r)| {
                let x = c.value / r.value.max(1.0);
                (format!("{x:.2}× ({} vs {} msg/s)", figure(c.value), figure(r.value)), x >= 0.5)
            }),
        ));
    }
    for (durability, goal_us) in [("buffered", 2000), ("fsync", 3000)] {
        let r = find(rows, "dm", "confab", &["tcp", durability, "open25"]);
        out.push(v(
            &format!("dm latency, open loop at 25% of max, {durability}"),
            &format!("p99 ≤ {}", lat(goal_us)),
            r.and_then(|r| r.p(0.99)).map(|p| (format!("p99 {}", lat(p)), p <= goal_us)),
        ));
    }
    let g = find(rows, "group", "confab", &["tcp", "fsync", "W=64"]);
    out.push(v(
        "group of 100, W=64",
        "≥ 250,000 deliveries/s per core, one message write and one inbox entry per member",
        g.and_then(|r| {
            let cores = r.srv_cpu? / 100.0;
            let per_core = r.value / cores.max(0.01);
            let exact = r.extra.get("one_write_one_entry").and_then(|b| b.as_bool()).unwrap_or(false);
            Some((
                format!(
                    "{} dlv/s per core ({} dlv/s at {:.0}% CPU); writes {}",
                    figure(per_core),
                    figure(r.value),
                    cores * 100.0,
                    if exact { "exact" } else { "NOT verified" }
                ),
                per_core >= 250_000.0 && exact,
            ))
        }),
    ));
    for (transport, goal) in [("tcp", 8.0), ("ws", 8.0), ("quic", 24.0)] {
        let r = find(rows, "idle", "confab", &[transport]);
        out.push(v(
            &format!("idle memory per connection, {transport}"),
            &format!("≤ {goal} KiB with 50,000 connections held"),
            r.map(|r| {
                let n = r.extra.get("connections").and_then(|n| n.as_u64()).unwrap_or(0);
                // Held fewer because the open-file limit says so: the
                // figure is still a MISS, but says why.
                let capped = r.notes.iter().any(|note| note.contains("open-file"));
                let why = if capped && n < 50_000 { " (the open-file limit allows no more)" } else { "" };
                (format!("{:.1} KiB with {} held{why}", r.value, figure(n as f64)), r.value <= goal && n >= 50_000)
            }),
        ));
    }
    let held = find(rows, "idle", "confab", &["quic"]).and_then(|r| r.extra.get("connections")?.as_u64()).unwrap_or(0);
    out.push(v(
        "QUIC connects",
        "≥ 3,000 connects/s (handshake, Hello, Resume) with p99 ≤ 100ms, 50,000 sessions held",
        find(rows, "connect", "confab", &["quic"]).and_then(|r| {
            let p99 = r.p(0.99)?;
            // At the generator's limit the figure is a floor, not the
            // server's ceiling: say so.
            let generator = match r.gen_cpu {
                Some(g) if g >= 90.0 => format!("; the generator's core at {g:.0}%"),
                _ => String::new(),
            };
            Some((
                format!("{} conn/s, p99 {} with {} held{generator}", figure(r.value), lat(p99), figure(held as f64)),
                r.value >= 3000.0 && p99 <= 100_000 && held >= 50_000,
            ))
        }),
    ));
    let s =
        rows.iter().filter(|r| r.scenario == "sync" && r.system == "confab").max_by(|a, b| a.value.total_cmp(&b.value));
    out.push(v(
        "sync catch-up",
        "≥ 200,000 events/s",
        s.map(|r| (format!("{} ev/s ({})", figure(r.value), r.config), r.value >= 200_000.0)),
    ));
    for (temp, goal_us) in [("warm", 1000), ("cold", 5000)] {
        let r = find(rows, "history", "confab", &[temp]);
        out.push(v(
            &format!("history page of 50, {temp}"),
            &format!("p99 ≤ {}", lat(goal_us)),
            r.and_then(|r| r.p(0.99)).map(|p| (format!("p99 {}", lat(p)), p <= goal_us)),
        ));
    }
    let soak = find(rows, "soak", "confab", &["tcp", "fsync"]);
    out.push(v(
        "dm soak, fsync W=64 on one store",
        &format!("rate ≥ 80% of the short W=64 row's, max latency ≤ {} (no writer stall)", lat(SOAK_MAX_US)),
        soak.and_then(|r| {
            let max = r.lat.as_ref().filter(|h| !h.is_empty())?.max();
            let short = dm64?.value;
            Some((
                format!(
                    "{} msg/s over {:.0} s ({:.0}% of {}), p99.9 {}, max {}",
                    figure(r.value),
                    r.extra.get("seconds").and_then(|s| s.as_f64()).unwrap_or(0.0),
                    100.0 * r.value / short,
                    figure(short),
                    lat(r.p(0.999)?),
                    lat(max)
                ),
                r.value >= 0.8 * short && max <= SOAK_MAX_US,
            ))
        }),
    ));
    let o = find(rows, "overload", "confab", &[]);
    out.push(v(
        "overload at 2× the max rate",
        "p99 of admitted messages bounded: no higher in the second half of the run than in the first (+50%); excess shed or pushed back",
        o.and_then(|r| {
            let p99 = |k: &str| r.extra.get(k)?.get("p99")?.as_u64();
            let (first, second) = (p99("latency_first_half_us")?, p99("latency_second_half_us")?);
            let shed = r.extra.get("shed_or_pushed_back").and_then(|n| n.as_u64()).unwrap_or(0);
            Some((
                format!(
                    "admitted p99 {} then {} (halves), {} sends shed or pushed back",
                    lat(first),
                    lat(second),
                    figure(shed as f64)
                ),
                second <= first + first / 2 && shed > 0,
            ))
        }),
    ));
    out
}

/// The PASS/MISS table.
pub fn table(verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    let w = verdicts.iter().map(|v| v.what.chars().count()).max().unwrap_or(10);
    let _ = writeln!(s, "targets (printed, not asserted):");
    for t in verdicts {
        let _ = writeln!(s, "  {:<4} {:<w$}  goal {}; measured {}", t.verdict(), t.what, t.goal, t.measured);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak_verdict(rows: &[Row]) -> Option<bool> {
        check(rows).into_iter().find(|v| v.what.starts_with("dm soak")).and_then(|v| v.pass)
    }

    fn row(scenario: &'static str, config: &str, value: f64, latencies_us: &[u64]) -> Row {
        let mut r = Row::new(scenario, "confab", config.into(), value, "msg/s");
        let mut h = crate::load::new_hist().unwrap();
        for l in latencies_us {
            h.record(*l).unwrap();
        }
        r.lat = Some(h);
        r
    }

    #[test]
    fn the_soak_target_wants_the_rate_held_and_no_stall() {
        let short = row("dm", "tcp fsync W=64 P=32", 50_000.0, &[40_000, 150_000]);
        let held = row("soak", "tcp fsync W=64 40s P=32", 45_000.0, &[40_000, 300_000]);
        assert_eq!(soak_verdict(&[short, held]), Some(true));

        let short = row("dm", "tcp fsync W=64 P=32", 50_000.0, &[40_000, 150_000]);
        let stalled = row("soak", "tcp fsync W=64 40s P=32", 45_000.0, &[40_000, 1_400_000]);
        assert_eq!(soak_verdict(&[short, stalled]), Some(false), "a 1.4 s stall");

        let short = row("dm", "tcp fsync W=64 P=32", 50_000.0, &[40_000, 150_000]);
        let slowed = row("soak", "tcp fsync W=64 40s P=32", 35_000.0, &[40_000, 300_000]);
        assert_eq!(soak_verdict(&[short, slowed]), Some(false), "70 % of the short row's rate");

        // Without the short row (`--only soak`) it is not judged.
        let alone = row("soak", "tcp fsync W=64 40s P=32", 45_000.0, &[40_000]);
        assert_eq!(soak_verdict(&[alone]), None);
    }
}
