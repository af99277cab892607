//! Results: one row per run, as a table for people and JSON for scripts.

use std::fmt::Write as _;

use serde_json::json;

use crate::dm::{DmOutcome, Hist};

/// One finished run.
#[derive(Debug)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: &'static str,
    /// "tcp" or "quic".
    pub transport: String,
    /// "fsync", "buffered", or "external".
    pub durability: String,
    /// Sender/receiver pairs.
    pub pairs: usize,
    /// Sends in flight per sender.
    pub window: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// What the generator saw.
    pub outcome: DmOutcome,
    /// Generator CPU over the window, % of one core.
    pub gen_cpu_pct: Option<f64>,
    /// Server CPU over the window, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory at the end of the window, KiB.
    pub server_rss_kib: Option<u64>,
    /// Server peak resident memory, KiB.
    pub server_peak_kib: Option<u64>,
}

impl RunReport {
    /// Delivered messages per second.
    pub fn delivered_per_sec(&self) -> f64 {
        self.outcome.delivered as f64 / self.seconds
    }

    /// Acked sends per second.
    pub fn acked_per_sec(&self) -> f64 {
        self.outcome.acked as f64 / self.seconds
    }

    fn label(&self) -> String {
        format!("{} {} {} P={} W={}", self.scenario, self.transport, self.durability, self.pairs, self.window)
    }

    /// JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        let o = &self.outcome;
        json!({
            "scenario": self.scenario,
            "transport": self.transport,
            "durability": self.durability,
            "pairs": self.pairs,
            "window": self.window,
            "body_bytes": crate::dm::BODY_LEN,
            "seconds": self.seconds,
            "delivered": o.delivered,
            "delivered_per_sec": self.delivered_per_sec(),
            "acked": o.acked,
            "acked_per_sec": self.acked_per_sec(),
            "deliver_latency_us": hist_json(&o.deliver_hist),
            "ack_latency_us": hist_json(&o.ack_hist),
            "errors": o.errors,
            "lost": o.lost,
            "seq_anomalies": o.seq_anomalies,
            "receiver_msgs_per_read": o.msgs_per_read,
            "setup_seconds": o.setup_secs,
            "generator_cpu_pct": self.gen_cpu_pct,
            "server_cpu_pct": self.server_cpu_pct,
            "server_rss_kib": self.server_rss_kib,
            "server_peak_rss_kib": self.server_peak_kib,
        })
    }
}

fn hist_json(h: &Hist) -> serde_json::Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean(),
    })
}

/// A latency in µs, compactly: "87µs", "1.25ms", "2.31s".
fn lat(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

fn lats(h: &Hist) -> [String; 4] {
    if h.is_empty() {
        return ["-".into(), "-".into(), "-".into(), "-".into()];
    }
    [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.value_at_quantile(0.999), h.max()].map(lat)
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}%"))
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}MiB", v as f64 / 1024.0))
}

/// The table: one row per run, then notes about anything suspicious.
pub fn table(runs: &[RunReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:>9} {:>9} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>5} {:>5} {:>9}",
        "run",
        "deliv/s",
        "acked/s",
        "dlv p50",
        "p99",
        "p99.9",
        "max",
        "ack p50",
        "p99",
        "p99.9",
        "max",
        "gen",
        "srv",
        "srv rss"
    );
    let _ = writeln!(s, "{}", "-".repeat(150));
    for r in runs {
        let [d50, d99, d999, dmax] = lats(&r.outcome.deliver_hist);
        let [a50, a99, a999, amax] = lats(&r.outcome.ack_hist);
        let _ = writeln!(
            s,
            "{:<26} {:>9.0} {:>9.0} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>5} {:>5} {:>9}",
            r.label(),
            r.delivered_per_sec(),
            r.acked_per_sec(),
            d50,
            d99,
            d999,
            dmax,
            a50,
            a99,
            a999,
            amax,
            opt_pct(r.gen_cpu_pct),
            opt_pct(r.server_cpu_pct),
            opt_mib(r.server_rss_kib),
        );
    }
    let mut notes = Vec::new();
    for r in runs {
        let o = &r.outcome;
        if !o.errors.is_empty() {
            notes.push(format!("{}: send errors {:?}", r.label(), o.errors));
        }
        if o.lost > 0 {
            notes.push(format!("{}: {} acked messages never reached the receiver", r.label(), o.lost));
        }
        if o.seq_anomalies > 0 {
            notes.push(format!("{}: {} deliveries out of seq order or with gaps", r.label(), o.seq_anomalies));
        }
        if r.gen_cpu_pct.is_some_and(|c| c > 85.0) {
            notes.push(format!(
                "{}: the generator used {:.0}% of a core: figures may be the generator's limit, not the server's",
                r.label(),
                r.gen_cpu_pct.unwrap_or_default()
            ));
        }
    }
    let _ = writeln!(
        s,
        "deliv/s: messages received by receivers per second; acked/s: Sent acks per second; dlv = send → InboxEvent \
         at the receiver; ack = send → Sent; gen/srv: CPU over the window, % of one core; rss at the end."
    );
    let details: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{}: setup {:.1}s, receiver msgs/read {:.1}, server peak rss {}",
                r.label(),
                r.outcome.setup_secs,
                r.outcome.msgs_per_read,
                opt_mib(r.server_peak_kib)
            )
        })
        .collect();
    for d in details {
        let _ = writeln!(s, "  {d}");
    }
    if notes.is_empty() {
        let _ = writeln!(s, "no send errors, no lost or out-of-order deliveries.");
    } else {
        for n in notes {
            let _ = writeln!(s, "NOTE {n}");
        }
    }
    s
}

/// The JSON document for `--json`.
pub fn json(runs: &[RunReport]) -> serde_json::Value {
    json!({
        "tool": concat!("confab-bench ", env!("CARGO_PKG_VERSION")),
        "runs": runs.iter().map(RunReport::to_json).collect::<Vec<_>>(),
    })
}
