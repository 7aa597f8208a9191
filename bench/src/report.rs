//! The figures a benchmark run produces and how they are shown: a plain table for people
//! (stdout) and JSON for machines (`--json`).
//!
//! Latencies are recorded in microseconds in HDR histograms (3 significant digits) and
//! reported in milliseconds.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The largest latency a histogram records exactly (one hour, in microseconds); longer
/// samples are clamped to it.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// The 1-minute load average from `/proc/loadavg`, where there is one.
pub(crate) fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A new latency histogram in microseconds.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
        .expect("constant histogram bounds are valid")
}

/// Records one latency sample.
pub(crate) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_MICROS);
    histogram.saturating_record(micros);
}

/// Percentiles of one set of latency samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LatencySummary {
    /// Number of samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// Largest sample.
    pub(crate) max_ms: f64,
}

impl LatencySummary {
    /// Summarises a histogram of microseconds.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }

    /// The figures as JSON.
    pub(crate) fn to_json(self) -> Value {
        json!({ "samples": self.count, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms })
    }

    /// The figures back from [`LatencySummary::to_json`]'s JSON.
    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            count: value["samples"].as_u64()?,
            p50_ms: value["p50_ms"].as_f64()?,
            p99_ms: value["p99_ms"].as_f64()?,
            max_ms: value["max_ms"].as_f64()?,
        })
    }
}

/// One row of the create benchmark: one path (HTTP API or raw store) at one concurrency.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CreateResult {
    /// What was measured: `"https api"` or `"redb store"`.
    pub(crate) path: &'static str,
    /// Concurrent clients (connections, or tasks for the in-process store).
    pub(crate) clients: usize,
    /// Creates that succeeded.
    pub(crate) creates: u64,
    /// Creates that failed.
    pub(crate) errors: u64,
    /// Wall-clock time of the whole level.
    pub(crate) elapsed: Duration,
    /// Latency of each successful create.
    pub(crate) latency: LatencySummary,
}

impl CreateResult {
    /// Successful creates per second of wall-clock time.
    pub(crate) fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.creates as f64 / secs
        } else {
            0.0
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "clients": self.clients,
            "creates": self.creates,
            "errors": self.errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "creates_per_s": self.per_second(),
            "latency": self.latency.to_json(),
        })
    }
}

/// The watch fan-out benchmark's outcome.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WatchResult {
    /// Concurrent watches.
    pub(crate) watchers: usize,
    /// Writes made (each one event for every watcher).
    pub(crate) events: usize,
    /// Target write rate (events per second), `None` for back to back.
    pub(crate) rate: Option<u32>,
    /// Events received over all watchers; `watchers * events` when nothing was lost.
    pub(crate) delivered: u64,
    /// Events received more than once or unexpected (must be 0).
    pub(crate) unexpected: u64,
    /// Latency from just before a write was sent to its arrival at a watcher.
    pub(crate) delivery: LatencySummary,
    /// Latency of the writes themselves (send to acknowledgement).
    pub(crate) write: LatencySummary,
}

impl WatchResult {
    /// Deliveries a lossless run makes.
    pub(crate) fn expected(&self) -> u64 {
        (self.watchers as u64).saturating_mul(self.events as u64)
    }

    /// Whether every watcher saw every event exactly once.
    pub(crate) fn complete(&self) -> bool {
        self.delivered == self.expected() && self.unexpected == 0
    }

    fn to_json(&self) -> Value {
        json!({
            "watchers": self.watchers,
            "events": self.events,
            "event_rate_per_s": self.rate,
            "delivered": self.delivered,
            "expected": self.expected(),
            "unexpected": self.unexpected,
            "complete": self.complete(),
            "delivery_latency": self.delivery.to_json(),
            "write_latency": self.write.to_json(),
        })
    }
}

/// Everything one `wasmkube-bench` run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Report {
    /// A line describing the target (started server or `--kubeconfig`).
    pub(crate) target: String,
    /// The API server URL.
    pub(crate) url: String,
    /// Logical CPUs of this machine.
    pub(crate) cpus: usize,
    /// The 1-minute load average when the run started (other work on the machine), if known.
    pub(crate) load_average: Option<f64>,
    /// Creates per concurrency level.
    pub(crate) creates_per_level: usize,
    /// Rows of the create benchmark, HTTP rows first.
    pub(crate) creates: Vec<CreateResult>,
    /// Why the raw store row is missing, when it is.
    pub(crate) store_note: Option<String>,
    /// The watch benchmark, when it ran.
    pub(crate) watch: Option<WatchResult>,
    /// Resident memory of the server the bench started, just after it was ready.
    pub(crate) server_idle_rss_kib: Option<u64>,
    /// Peak resident memory of the server the bench started, at the end of the run.
    pub(crate) server_peak_rss_kib: Option<u64>,
    /// Size of the `wasmkube` binary, in bytes.
    pub(crate) binary_bytes: Option<u64>,
}

impl Report {
    /// The report as one JSON document.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "target": self.target,
            "url": self.url,
            "cpus": self.cpus,
            "load_average_1m": self.load_average,
            "creates_per_level": self.creates_per_level,
            "creates": self.creates.iter().map(CreateResult::to_json).collect::<Vec<_>>(),
            "store_note": self.store_note,
            "api_to_store_ratios": self
                .api_to_store_ratios()
                .iter()
                .map(|(clients, ratio)| json!({ "clients": clients, "ratio": ratio }))
                .collect::<Vec<_>>(),
            "watch": self.watch.as_ref().map(WatchResult::to_json),
            "server_idle_rss_kib": self.server_idle_rss_kib,
            "server_peak_rss_kib": self.server_peak_rss_kib,
            "binary_bytes": self.binary_bytes,
        })
    }

    /// For each API row with a raw store row of the same level (the next store row with the
    /// same client count): `(clients, api creates/s / store creates/s)`.
    pub(crate) fn api_to_store_ratios(&self) -> Vec<(usize, f64)> {
        let mut used = vec![false; self.creates.len()];
        let mut ratios = Vec::new();
        for api in self.creates.iter().filter(|row| row.path == "https api") {
            let store = self.creates.iter().enumerate().find(|(i, row)| {
                !used[*i] && row.path == "redb store" && row.clients == api.clients
            });
            if let Some((i, store)) = store
                && store.per_second() > 0.0
            {
                used[i] = true;
                ratios.push((api.clients, api.per_second() / store.per_second()));
            }
        }
        ratios
    }

    /// The report as a table for a terminal.
    pub(crate) fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "wasmkube-bench {}", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "target: {} at {}", self.target, self.url);
        let load = self.load_average.map_or_else(String::new, |l| {
            format!(", load average {l:.2} at the start")
        });
        let _ = writeln!(out, "machine: {} logical CPUs{load}", self.cpus);
        let mib = |v: Option<u64>, unit: f64| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{:.1} MiB", v as f64 / unit))
        };
        if self.server_idle_rss_kib.is_some() || self.binary_bytes.is_some() {
            let _ = writeln!(
                out,
                "server: RSS {} when ready, peak {}; binary {}",
                mib(self.server_idle_rss_kib, 1024.0),
                mib(self.server_peak_rss_kib, 1024.0),
                mib(self.binary_bytes, 1024.0 * 1024.0)
            );
        }
        if !self.creates.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "durable creates ({} ConfigMaps per level, each client its own connection)",
                self.creates_per_level
            );
            let _ = writeln!(
                out,
                "  {:<11} {:>7} {:>11} {:>9} {:>9} {:>9} {:>7}",
                "path", "clients", "creates/s", "p50 ms", "p99 ms", "max ms", "errors"
            );
            // Grouped by path (API rows first), each group in run order.
            let mut rows: Vec<&CreateResult> = self.creates.iter().collect();
            rows.sort_by_key(|row| row.path != "https api");
            for row in rows {
                let _ = writeln!(
                    out,
                    "  {:<11} {:>7} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                    row.path,
                    row.clients,
                    row.per_second(),
                    row.latency.p50_ms,
                    row.latency.p99_ms,
                    row.latency.max_ms,
                    row.errors
                );
            }
        }
        let ratios = self.api_to_store_ratios();
        if !ratios.is_empty() {
            let ratios: Vec<String> = ratios
                .iter()
                .map(|(clients, ratio)| format!("{clients} clients {ratio:.2}"))
                .collect();
            let _ = writeln!(
                out,
                "  creates/s of the API relative to the raw store: {}",
                ratios.join(", ")
            );
        }
        if let Some(note) = &self.store_note {
            let _ = writeln!(out, "  (redb store row: {note})");
        }
        if let Some(watch) = &self.watch {
            let rate = watch
                .rate
                .map_or_else(|| "back to back".to_owned(), |r| format!("{r}/s"));
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "watch delivery ({} watchers, {} writes at {rate}, latency = arrival - send)",
                watch.watchers, watch.events
            );
            let _ = writeln!(
                out,
                "  {:<11} {:>9} {:>9} {:>9} {:>19}",
                "what", "p50 ms", "p99 ms", "max ms", "samples"
            );
            let _ = writeln!(
                out,
                "  {:<11} {:>9.3} {:>9.3} {:>9.3} {:>19}",
                "delivery",
                watch.delivery.p50_ms,
                watch.delivery.p99_ms,
                watch.delivery.max_ms,
                format!("{}/{}", watch.delivered, watch.expected())
            );
            let _ = writeln!(
                out,
                "  {:<11} {:>9.3} {:>9.3} {:>9.3} {:>19}",
                "write",
                watch.write.p50_ms,
                watch.write.p99_ms,
                watch.write.max_ms,
                watch.write.count
            );
            if !watch.complete() {
                let _ = writeln!(
                    out,
                    "  INCOMPLETE: {} of {} deliveries arrived, {} unexpected",
                    watch.delivered,
                    watch.expected(),
                    watch.unexpected
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let mut histogram = latency_histogram();
        for ms in 1..=100 {
            record(&mut histogram, Duration::from_millis(ms));
        }
        Report {
            target: "test".to_owned(),
            url: "https://127.0.0.1:1/".to_owned(),
            cpus: 2,
            load_average: Some(0.5),
            creates_per_level: 100,
            creates: vec![CreateResult {
                path: "https api",
                clients: 8,
                creates: 100,
                errors: 0,
                elapsed: Duration::from_millis(500),
                latency: LatencySummary::of(&histogram),
            }],
            store_note: None,
            watch: Some(WatchResult {
                watchers: 2,
                events: 3,
                rate: Some(100),
                delivered: 5,
                unexpected: 0,
                delivery: LatencySummary::of(&histogram),
                write: LatencySummary::of(&histogram),
            }),
            server_idle_rss_kib: Some(30 * 1024),
            server_peak_rss_kib: Some(60 * 1024),
            binary_bytes: Some(20 * 1024 * 1024),
        }
    }

    #[test]
    fn latency_summary_reports_percentiles_in_milliseconds() {
        let mut histogram = latency_histogram();
        for ms in 1..=100 {
            record(&mut histogram, Duration::from_millis(ms));
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeroes() {
        assert_eq!(
            LatencySummary::of(&latency_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn sub_microsecond_and_huge_samples_are_clamped_not_lost() {
        let mut histogram = latency_histogram();
        record(&mut histogram, Duration::from_nanos(10));
        record(&mut histogram, Duration::from_secs(10 * 3600));
        assert_eq!(histogram.len(), 2);
    }

    #[test]
    fn creates_per_second_divides_by_wall_clock_time() {
        let report = sample_report();
        assert!((report.creates[0].per_second() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn an_incomplete_watch_run_is_flagged_in_the_table_and_json() {
        let report = sample_report();
        let watch = report.watch.as_ref().expect("watch row");
        assert_eq!(watch.expected(), 6);
        assert!(!watch.complete());
        assert!(
            report.to_table().contains("INCOMPLETE: 5 of 6"),
            "{}",
            report.to_table()
        );
        assert_eq!(report.to_json()["watch"]["complete"], json!(false));
    }

    #[test]
    fn the_table_has_one_line_per_create_level() {
        let table = sample_report().to_table();
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.trim_start().starts_with("https api"))
            .collect();
        assert_eq!(rows.len(), 1, "{table}");
        assert!(rows[0].contains("200"), "{table}");
    }

    #[test]
    fn the_api_is_compared_with_the_store_row_of_the_same_level() {
        let mut report = sample_report();
        let api = report.creates[0].clone();
        let store = CreateResult {
            path: "redb store",
            elapsed: Duration::from_millis(250),
            ..api.clone()
        };
        report.creates = vec![
            api.clone(),
            store.clone(),
            CreateResult { clients: 64, ..api },
        ];
        assert_eq!(report.api_to_store_ratios(), vec![(8, 0.5)]);
        let table = report.to_table();
        assert!(
            table.contains("relative to the raw store: 8 clients 0.50"),
            "{table}"
        );
        let first_store_line = table
            .lines()
            .position(|l| l.contains("redb store"))
            .expect("store row");
        let last_api_line = table
            .lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.contains("https api"))
            .expect("api row");
        assert!(
            last_api_line < first_store_line,
            "API rows come first:\n{table}"
        );
    }

    #[test]
    fn the_table_shows_server_memory_and_binary_size_in_mib() {
        let table = sample_report().to_table();
        assert!(
            table.contains("RSS 30.0 MiB when ready, peak 60.0 MiB; binary 20.0 MiB"),
            "{table}"
        );
    }

    #[test]
    fn the_table_shows_the_load_average_at_the_start() {
        let table = sample_report().to_table();
        assert!(
            table.contains("2 logical CPUs, load average 0.50"),
            "{table}"
        );
    }

    #[test]
    fn the_json_report_carries_creates_per_second() {
        let json = sample_report().to_json();
        assert_eq!(json["creates"][0]["clients"], json!(8));
        assert_eq!(json["creates"][0]["creates_per_s"], json!(200.0));
        assert_eq!(json["watch"]["delivered"], json!(5));
    }
}
