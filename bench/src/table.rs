//! Shared pieces of the workload benchmarks' reports: the run header (machine, load, server),
//! latency rows that may be "not measured", and ratios to the peer.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::report::LatencySummary;

/// Where and when a run happened, printed at the top of each report.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunHeader {
    /// The benchmark's name, e.g. `pods`.
    pub(crate) benchmark: &'static str,
    /// Logical CPUs of this machine.
    pub(crate) cpus: usize,
    /// The 1-minute load average at the start.
    pub(crate) load_average: Option<f64>,
    /// The server's command line extras, e.g. `--max-pods 210`.
    pub(crate) server_args: Vec<String>,
    /// `wasmtime --version` of the peer, if there is one.
    pub(crate) peer: Option<String>,
}

impl RunHeader {
    /// A header for `benchmark` with this machine's figures now.
    pub(crate) fn now(benchmark: &'static str, server_args: &[String]) -> Self {
        Self {
            benchmark,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            load_average: super::report::load_average(),
            server_args: server_args.to_vec(),
            peer: None,
        }
    }

    /// The header lines.
    pub(crate) fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "wasmkube-bench {} {}",
            self.benchmark,
            env!("CARGO_PKG_VERSION")
        );
        let load = self.load_average.map_or_else(String::new, |l| {
            format!(", load average {l:.2} at the start")
        });
        let _ = writeln!(out, "machine: {} logical CPUs{load}", self.cpus);
        let _ = writeln!(
            out,
            "server: wasmkube server {} (embedded agent), started by the bench",
            self.server_args.join(" ")
        );
        let _ = writeln!(
            out,
            "peer: {}",
            self.peer.as_deref().unwrap_or("wasmtime CLI not found")
        );
    }

    /// The header as JSON fields.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "benchmark": self.benchmark,
            "version": env!("CARGO_PKG_VERSION"),
            "cpus": self.cpus,
            "load_average_1m": self.load_average,
            "server_args": self.server_args,
            "peer": self.peer,
        })
    }
}

/// One latency row: figures, or why there are none.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LatencyRow {
    /// What was measured.
    pub(crate) label: String,
    /// The figures, or the reason they are missing.
    pub(crate) outcome: Result<LatencySummary, String>,
}

impl LatencyRow {
    /// A row with figures.
    pub(crate) fn measured(label: impl Into<String>, summary: LatencySummary) -> Self {
        Self {
            label: label.into(),
            outcome: Ok(summary),
        }
    }

    /// A row without figures.
    pub(crate) fn missing(label: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            outcome: Err(why.into()),
        }
    }

    /// The figures, if measured.
    pub(crate) fn summary(&self) -> Option<LatencySummary> {
        self.outcome.as_ref().ok().copied()
    }

    /// The row as JSON.
    pub(crate) fn to_json(&self) -> Value {
        match &self.outcome {
            Ok(summary) => json!({ "what": self.label, "latency": summary.to_json() }),
            Err(why) => json!({ "what": self.label, "not_measured": why }),
        }
    }
}

/// Latency rows as an aligned table (milliseconds).
pub(crate) fn latency_table(out: &mut String, rows: &[LatencyRow]) {
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "  {:<width$} {:>7} {:>9} {:>9} {:>9}",
        "what", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for row in rows {
        match &row.outcome {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "  {:<width$} {:>7} {:>9.3} {:>9.3} {:>9.3}",
                    row.label, s.count, s.p50_ms, s.p99_ms, s.max_ms
                );
            }
            Err(why) => {
                let _ = writeln!(out, "  {:<width$} {why}", row.label);
            }
        }
    }
}

/// `ours / peer`, when both are positive.
pub(crate) fn ratio(ours: f64, peer: f64) -> Option<f64> {
    (ours > 0.0 && peer > 0.0).then(|| ours / peer)
}

/// A ratio for a table: `1.23x`, or `-`.
pub(crate) fn show_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_figures_say_why() {
        let rows = [
            LatencyRow::measured(
                "ours",
                LatencySummary {
                    count: 200,
                    p50_ms: 1.5,
                    p99_ms: 3.25,
                    max_ms: 4.0,
                },
            ),
            LatencyRow::missing("peer", "not measured: wasmtime CLI not found"),
        ];
        let mut out = String::new();
        latency_table(&mut out, &rows);
        assert!(out.contains("200     1.500     3.250     4.000"), "{out}");
        assert!(
            out.contains("peer not measured: wasmtime CLI not found"),
            "{out}"
        );
        assert_eq!(
            rows[1].to_json()["not_measured"],
            "not measured: wasmtime CLI not found"
        );
        assert_eq!(rows[0].to_json()["latency"]["samples"], 200);
    }

    #[test]
    fn ratios_need_two_positive_figures() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(show_ratio(Some(1.234)), "1.23x");
        assert_eq!(show_ratio(None), "-");
    }
}
