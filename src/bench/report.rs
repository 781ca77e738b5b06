//! Scenario results: one [`Report`] per scenario (per rate for `latency`), printed as a table
//! or as JSON lines, and the machine every run states.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// The machine and build a run happened on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// CPUs available to this process.
    pub cores: usize,
    /// `MemTotal` from `/proc/meminfo`.
    pub memory_gib: f64,
    /// The CPU's model name.
    pub cpu: String,
    /// The kernel release.
    pub kernel: String,
    /// `release` or `debug` (how this code was compiled).
    pub profile: String,
    /// This package's version.
    pub version: String,
}

impl Machine {
    /// Reads cores, memory, CPU model and kernel from the system.
    pub fn detect() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: round(mem_kib / (1024.0 * 1024.0), 1),
            cpu,
            kernel,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The figures of one scenario run. Figures that do not apply are absent from the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// `ok` or `skipped`.
    pub status: String,
    /// What the reader should know to read the figures (or why the scenario was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Sends answered `sent` (durably stored) per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_per_sec: Option<f64>,
    /// Messages received by recipients per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_per_sec: Option<f64>,
    /// End-to-end latency percentiles and maximum, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Reconnect → everything received and the last ack committed (backlog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_secs: Option<f64>,
    /// Idle connections held open (connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Server resident memory per idle connection, KiB (connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_kib_per_conn: Option<f64>,
    /// Successful password logins per second (login).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logins_per_sec: Option<f64>,
    /// Further scenario-specific figures (e.g. `offered_per_sec`, `fd_limit`).
    #[serde(flatten)]
    pub figures: BTreeMap<String, Value>,
    /// The parameters this scenario ran with.
    pub params: BTreeMap<String, Value>,
    /// The database behind the server: `sqlite` or `postgres` (absent for a server that is
    /// not chatd's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Where the server ran.
    pub server: String,
    /// The server's durability mode.
    pub durability: String,
    /// The machine the run happened on.
    pub machine: Machine,
}

impl Report {
    /// An empty report for a scenario that ran.
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            status: "ok".to_string(),
            ..Report::default()
        }
    }

    /// A report for a scenario that could not run, saying why.
    pub fn skipped(scenario: &str, why: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            status: "skipped".to_string(),
            note: Some(why.to_string()),
            ..Report::default()
        }
    }

    /// Sets p50, p99, p99.9 and max from a histogram of microseconds (left absent when it
    /// is empty).
    pub fn set_latency(&mut self, hist: &Histogram<u64>) {
        if hist.is_empty() {
            return;
        }
        let ms = |us: u64| round(us as f64 / 1000.0, 3);
        self.p50_ms = Some(ms(hist.value_at_quantile(0.50)));
        self.p99_ms = Some(ms(hist.value_at_quantile(0.99)));
        self.p999_ms = Some(ms(hist.value_at_quantile(0.999)));
        self.max_ms = Some(ms(hist.max()));
    }

    /// Adds a scenario-specific figure.
    pub fn figure(&mut self, key: &str, value: impl Into<Value>) {
        self.figures.insert(key.to_string(), value.into());
    }

    /// Adds a parameter.
    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.to_string(), value.into());
    }
}

/// Rounds to `places` decimals (for stable JSON).
pub(crate) fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Formats a count with thousands separators.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints one report as a JSON line.
pub fn print_json(report: &Report) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(report)?)?;
    out.flush()?;
    Ok(())
}

/// Prints the reports as a table, then the notes.
pub fn print_table(reports: &[Report]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render_table(reports).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The table: one row per report, the common figures in columns, the rest in `other`; a
/// `backend` column after the scenario when some report ran on PostgreSQL.
pub fn render_table(reports: &[Report]) -> String {
    let with_backend = reports
        .iter()
        .any(|r| r.backend.as_deref() == Some("postgres"));
    let mut header = vec![
        "scenario",
        "acked/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "other",
    ];
    if with_backend {
        header.insert(1, "backend");
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut cells = row(r).to_vec();
            if with_backend {
                cells.insert(1, r.backend.clone().unwrap_or_else(|| "-".to_string()));
            }
            cells
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The scenario, the backend and `other` are text, aligned left; the figures right.
    let left = |i: usize| i == 0 || (with_backend && i == 1) || i == header.len() - 1;
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if left(i) {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            }
            l.push_str("  ");
        }
        text.push_str(l.trim_end());
        text.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in &rows {
        line(r);
    }
    let notes: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let note = r.note.as_ref()?;
            Some(match (&r.backend, with_backend) {
                (Some(b), true) => format!("{} ({b}): {note}", r.scenario),
                _ => format!("{}: {note}", r.scenario),
            })
        })
        .collect();
    if !notes.is_empty() {
        text.push('\n');
        for n in notes {
            text.push_str(&n);
            text.push('\n');
        }
    }
    text
}

fn row(r: &Report) -> [String; 8] {
    let rate = |v: Option<f64>| v.map_or("-".to_string(), |v| thousands(v.round() as u64));
    let ms = |v: Option<f64>| v.map_or("-".to_string(), fmt_ms);
    let mut other = Vec::new();
    if r.status != "ok" {
        other.push(r.status.clone());
    }
    if let Some(v) = r.drain_secs {
        other.push(format!("drain {v:.2} s"));
    }
    if let Some(v) = r.connections {
        other.push(format!("{} connections", thousands(v)));
    }
    if let Some(v) = r.server_kib_per_conn {
        other.push(format!("{v:.1} KiB/conn"));
    }
    if let Some(v) = r.logins_per_sec {
        other.push(format!("{v:.0} logins/s"));
    }
    for (k, v) in &r.figures {
        let shown = match v {
            Value::Number(n) => match n.as_u64() {
                Some(u) => thousands(u),
                None => n.as_f64().map_or(n.to_string(), |f| format!("{f}")),
            },
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        other.push(format!("{k}={shown}"));
    }
    [
        r.scenario.clone(),
        rate(r.acked_per_sec),
        rate(r.delivered_per_sec),
        ms(r.p50_ms),
        ms(r.p99_ms),
        ms(r.p999_ms),
        ms(r.max_ms),
        other.join(", "),
    ]
}

/// Milliseconds with three significant digits (at least two decimals below 10 ms).
fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_report_and_skips_show_why() {
        let mut ok = Report::new("throughput");
        ok.acked_per_sec = Some(12345.6);
        ok.p50_ms = Some(0.456);
        ok.figure("pairs", 50);
        let skipped = Report::skipped("fanout", "rooms not available");
        let text = render_table(&[ok, skipped]);
        assert!(text.contains("12,346"), "{text}");
        assert!(text.contains("0.46"), "{text}");
        assert!(text.contains("pairs=50"), "{text}");
        assert!(text.contains("fanout: rooms not available"), "{text}");
    }

    #[test]
    fn a_backend_column_appears_when_postgres_ran() {
        let mut lite = Report::new("throughput");
        lite.backend = Some("sqlite".to_string());
        lite.note = Some("closed loop".to_string());
        let only_sqlite = render_table(std::slice::from_ref(&lite));
        assert!(!only_sqlite.contains("backend"), "{only_sqlite}");
        assert!(
            only_sqlite.contains("throughput: closed loop"),
            "{only_sqlite}"
        );
        let mut pg = lite.clone();
        pg.backend = Some("postgres".to_string());
        let both = render_table(&[lite, pg]);
        let lines: Vec<&str> = both.lines().collect();
        assert!(lines[0].starts_with("scenario    backend  "), "{both}");
        assert!(lines[1].starts_with("throughput  sqlite "), "{both}");
        assert!(lines[2].starts_with("throughput  postgres "), "{both}");
        assert!(
            both.contains("throughput (postgres): closed loop"),
            "{both}"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn json_leaves_out_figures_that_do_not_apply() {
        let mut r = Report::new("backlog");
        r.drain_secs = Some(0.5);
        let v: Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scenario"], "backlog");
        assert_eq!(v["drain_secs"], 0.5);
        assert!(v.get("p99_ms").is_none());
    }
}
