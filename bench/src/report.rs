//! Results: one row per measured figure, as a table for people and JSON
//! for scripts, with the CPU both sides used.

use std::fmt::Write as _;

use serde_json::json;

use crate::load::Hist;

/// One measured figure.
#[derive(Debug)]
pub struct Row {
    /// Scenario ("dm", "group", "idle", …).
    pub scenario: &'static str,
    /// System under test ("confab", "relay", "nats", "ejabberd", "ejabberd+mam").
    pub system: String,
    /// Settings ("tcp fsync W=64 P=32").
    pub config: String,
    /// The headline figure.
    pub value: f64,
    /// Its unit ("msg/s", "dlv/s", "KiB/conn", …).
    pub unit: &'static str,
    /// Latency distribution (µs), where the scenario has one.
    pub lat: Option<Hist>,
    /// Generator CPU over the window, % of one core.
    pub gen_cpu: Option<f64>,
    /// Server CPU over the window, % of one core.
    pub srv_cpu: Option<f64>,
    /// Server RSS at the end, KiB.
    pub srv_rss_kib: Option<u64>,
    /// Server CPU time per message delivered, µs (every server process
    /// counted: a cluster's confabd nodes and nats-servers alike).
    pub cpu_per_msg_us: Option<f64>,
    /// Things worth saying (errors, losses, integrity).
    pub notes: Vec<String>,
    /// Everything else, for the JSON.
    pub extra: serde_json::Value,
}

impl Row {
    /// A row with only the headline figure.
    pub fn new(scenario: &'static str, system: &str, config: String, value: f64, unit: &'static str) -> Row {
        Row {
            scenario,
            system: system.into(),
            config,
            value,
            unit,
            lat: None,
            gen_cpu: None,
            srv_cpu: None,
            srv_rss_kib: None,
            cpu_per_msg_us: None,
            notes: Vec::new(),
            extra: json!({}),
        }
    }

    /// Percentile `q` of the latency, in µs.
    pub fn p(&self, q: f64) -> Option<u64> {
        self.lat.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q))
    }

    /// Whether the config mentions every word of `words`.
    pub fn is(&self, scenario: &str, system: &str, words: &[&str]) -> bool {
        self.scenario == scenario
            && self.system == system
            && words.iter().all(|w| self.config.split_whitespace().any(|c| c == *w))
    }

    fn label(&self) -> String {
        format!("{:<8} {:<13} {}", self.scenario, self.system, self.config)
    }

    /// JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "scenario": self.scenario,
            "system": self.system,
            "config": self.config,
            "value": self.value,
            "unit": self.unit,
            "latency_us": self.lat.as_ref().map(hist_json),
            "generator_cpu_pct": self.gen_cpu,
            "server_cpu_pct": self.srv_cpu,
            "server_rss_kib": self.srv_rss_kib,
            "server_cpu_us_per_msg": self.cpu_per_msg_us,
            "notes": self.notes,
            "extra": self.extra,
        })
    }
}

/// Percentiles of a histogram, for JSON.
pub fn hist_json(h: &Hist) -> serde_json::Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean(),
    })
}

/// A latency in µs, compactly: "87µs", "1.25ms", "2.31s".
pub fn lat(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// A figure with thousands separators ("1,234,567"), or one decimal
/// below 100.
pub fn figure(v: f64) -> String {
    if v.abs() < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}%"))
}

/// Server CPU per message: "41.2µs", "310µs", "1.25ms".
fn opt_cpu(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us < 100.0 => format!("{us:.1}µs"),
        Some(us) => lat(us.round() as u64),
    }
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}MiB", v as f64 / 1024.0))
}

/// The table: one row per figure, then the notes.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let width = rows.iter().map(|r| r.label().chars().count()).max().unwrap_or(20).max(20);
    let _ = writeln!(
        s,
        "{:<width$} {:>12} {:<8} | {:>8} {:>8} {:>8} {:>8} | {:>5} {:>5} {:>8} {:>7}",
        "scenario system       config",
        "figure",
        "unit",
        "p50",
        "p99",
        "p99.9",
        "max",
        "gen",
        "srv",
        "cpu/msg",
        "srv rss"
    );
    let _ = writeln!(s, "{}", "-".repeat(width + 93));
    for r in rows {
        let [p50, p99, p999, max] = match r.lat.as_ref().filter(|h| !h.is_empty()) {
            Some(h) => {
                [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.value_at_quantile(0.999), h.max()].map(lat)
            }
            None => ["-".into(), "-".into(), "-".into(), "-".into()],
        };
        let _ = writeln!(
            s,
            "{:<width$} {:>12} {:<8} | {:>8} {:>8} {:>8} {:>8} | {:>5} {:>5} {:>8} {:>7}",
            r.label(),
            figure(r.value),
            r.unit,
            p50,
            p99,
            p999,
            max,
            opt_pct(r.gen_cpu),
            opt_pct(r.srv_cpu),
            opt_cpu(r.cpu_per_msg_us),
            opt_mib(r.srv_rss_kib),
        );
    }
    let mut notes = Vec::new();
    for r in rows {
        for n in &r.notes {
            notes.push(format!("{}: {n}", r.label().split_whitespace().collect::<Vec<_>>().join(" ")));
        }
        if r.gen_cpu.is_some_and(|c| c > 90.0) {
            notes.push(format!(
                "{}: the generator used {:.0}% of its core: this figure may be the generator's limit",
                r.label().split_whitespace().collect::<Vec<_>>().join(" "),
                r.gen_cpu.unwrap_or_default()
            ));
        }
    }
    let _ = writeln!(
        s,
        "figure: msg/s = messages delivered to receivers per second; dlv/s = deliveries to group members per second \
         (the sender's own copy included); latency = send (scheduled send, in open loop) → receipt; gen/srv = CPU \
         over the window in % of one core; cpu/msg = server CPU time over the window per message delivered (per \
         delivery in groups); srv rss at the end."
    );
    if rows.iter().any(|r| r.system.starts_with("cluster")) {
        let _ = writeln!(
            s,
            "cluster<N>: N confabd nodes and N nats-servers (JetStream, R = min(N, 3)) on this one machine (with \
             --pin all of them on CPU 0, the core a single confabd gets); srv, cpu/msg and srv rss sum every one of \
             those processes; p50…max are of messages whose sender and receiver were connected to different nodes. \
             The nodes share the cores of one machine: cpu/msg is what a message costs in a cluster, not a scaling \
             claim."
        );
    }
    for n in notes {
        let _ = writeln!(s, "  note {n}");
    }
    s
}

/// The JSON document for `--json`: the rows, and the targets' verdicts
/// (each already in its JSON form, so that `targets`, which reads the rows,
/// is not imported back here).
pub fn json(rows: &[Row], targets: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "tool": concat!("confab-bench ", env!("CARGO_PKG_VERSION")),
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_latencies_read_well() {
        assert_eq!(figure(1_234_567.4), "1,234,567");
        assert_eq!(figure(999.0), "999");
        assert_eq!(figure(12.34), "12.3");
        assert_eq!(lat(87), "87µs");
        assert_eq!(lat(1250), "1.25ms");
        assert_eq!(lat(2_310_000), "2.31s");
    }

    #[test]
    fn rows_match_on_config_words() {
        let r = Row::new("dm", "confab", "tcp fsync W=64 P=32".into(), 1.0, "msg/s");
        assert!(r.is("dm", "confab", &["tcp", "W=64"]));
        assert!(!r.is("dm", "confab", &["W=6"]));
        assert!(!r.is("dm", "relay", &[]));
    }
}
