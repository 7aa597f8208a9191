//! Two servers side by side: the engine of the benchmarks that compare one server
//! configuration with another (`authz`: authorization modes, `encryption`: providers at rest).
//!
//! The work is cut into rounds; in each, both servers get the same slice (durable creates at
//! `clients`, then GETs of one probe object), in alternating order, so the noise of a shared
//! machine hits both alike and both stores grow in step. Creates/s and GET/s are over all
//! rounds; latencies are percentiles over all GETs and the median of the rounds' create p99s.
//! The report ends with the second side's ratio to the first, over all rounds and as the
//! median of the rounds' ratios (which a burst of noise in one round does not move). Beside
//! the rates, the server's CPU time (`/proc/<pid>/stat`, every thread) per create and per GET:
//! on a machine shared with other work it moves far less than the rates do, and on a
//! CPU-bound server it is what the rates come down to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use futures::future::try_join_all;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::creates::{self, BenchKind};
use super::progress_bar;
use super::report::{LatencySummary, latency_histogram, record};
use super::target::Target;

/// The name of the object every GET reads.
pub(crate) const PROBE: &str = "probe";

/// How much work both sides get, and how it is cut.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Objects created per side.
    pub(crate) creates: u64,
    /// GETs per side.
    pub(crate) gets: u64,
    /// Concurrent clients (connections).
    pub(crate) clients: u64,
    /// Rounds the work is cut into.
    pub(crate) rounds: u64,
    /// What is created and read.
    pub(crate) kind: BenchKind,
}

/// One server, the client the work is sent as, and what it measured so far.
pub(crate) struct Side {
    /// What tells this side from the other (an authorization mode, a provider).
    pub(crate) label: String,
    server: Target,
    /// The client the work is sent as; the server's admin when `None`.
    user: Option<Target>,
    creates: u64,
    create_seconds: f64,
    create_p99s: Vec<f64>,
    gets: Histogram<u64>,
    get_seconds: f64,
    errors: u64,
    round_creates_per_s: Vec<f64>,
    round_gets_per_s: Vec<f64>,
    /// Server CPU seconds spent in the create and the GET slices.
    create_cpu_seconds: f64,
    get_cpu_seconds: f64,
}

/// The figures of one side over every round.
#[derive(Clone, Debug, Default)]
pub(crate) struct SideRun {
    pub(crate) creates_per_s: f64,
    pub(crate) create: LatencySummary,
    pub(crate) gets_per_s: f64,
    pub(crate) get: LatencySummary,
    pub(crate) errors: u64,
    /// The server's CPU time per create and per GET, in microseconds (0 where `/proc`
    /// cannot tell).
    pub(crate) cpu_us_per_create: f64,
    pub(crate) cpu_us_per_get: f64,
    /// Each round's creates/s.
    pub(crate) round_creates_per_s: Vec<f64>,
    /// Each round's GETs/s.
    pub(crate) round_gets_per_s: Vec<f64>,
}

/// The second side's figures over the first's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Ratios {
    pub(crate) creates_per_s: f64,
    pub(crate) gets_per_s: f64,
    pub(crate) get_p99: f64,
    pub(crate) cpu_per_create: f64,
    pub(crate) cpu_per_get: f64,
    /// The median of the rounds' creates/s ratios.
    pub(crate) median_round_creates_per_s: f64,
    /// The median of the rounds' GETs/s ratios.
    pub(crate) median_round_gets_per_s: f64,
}

impl Side {
    /// A side that sends its work to `server` as `user` (the server's admin when `None`).
    pub(crate) fn new(label: &str, server: Target, user: Option<Target>) -> Side {
        Side {
            label: label.to_owned(),
            server,
            user,
            creates: 0,
            create_seconds: 0.0,
            create_p99s: Vec::new(),
            gets: latency_histogram(),
            get_seconds: 0.0,
            errors: 0,
            round_creates_per_s: Vec::new(),
            round_gets_per_s: Vec::new(),
            create_cpu_seconds: 0.0,
            get_cpu_seconds: 0.0,
        }
    }

    fn client(&self) -> &Target {
        self.user.as_ref().unwrap_or(&self.server)
    }

    /// Stops the side's server.
    pub(crate) async fn shutdown(self) {
        self.server.shutdown().await;
    }

    fn summary(&self) -> SideRun {
        let get = LatencySummary::of(&self.gets);
        SideRun {
            creates_per_s: ratio(self.creates as f64, self.create_seconds),
            create: LatencySummary {
                count: self.creates,
                p99_ms: median(&self.create_p99s),
                ..LatencySummary::default()
            },
            gets_per_s: ratio(get.count as f64, self.get_seconds),
            get,
            errors: self.errors,
            cpu_us_per_create: ratio(self.create_cpu_seconds * 1e6, self.creates as f64),
            cpu_us_per_get: ratio(self.get_cpu_seconds * 1e6, get.count as f64),
            round_creates_per_s: self.round_creates_per_s.clone(),
            round_gets_per_s: self.round_gets_per_s.clone(),
        }
    }
}

/// Runs every round of `plan` on both sides (in `namespace`, where the probe object exists),
/// stops both servers and returns their figures; fails when a request failed.
pub(crate) async fn run(
    plan: &Plan,
    namespace: &str,
    sides: [Side; 2],
) -> anyhow::Result<[SideRun; 2]> {
    let mut sides = sides;
    let outcome = run_rounds(plan, namespace, &mut sides).await;
    let [first, second] = sides;
    let summary = [first.summary(), second.summary()];
    first.shutdown().await;
    second.shutdown().await;
    outcome?;
    let errors: u64 = summary.iter().map(|r| r.errors).sum();
    if errors > 0 {
        anyhow::bail!("{errors} requests failed");
    }
    Ok(summary)
}

async fn run_rounds(plan: &Plan, namespace: &str, sides: &mut [Side; 2]) -> anyhow::Result<()> {
    let clients = usize::try_from(plan.clients).context("--clients is too large")?;
    let rounds = usize::try_from(plan.rounds).context("--rounds is too large")?;
    let creates = usize::try_from(plan.creates).context("--creates is too large")?;
    let gets = usize::try_from(plan.gets).context("--gets is too large")?;
    let bar = progress_bar(
        2 * (plan.creates + plan.gets),
        format!(
            "{} creates and GETs, {} and {}",
            plan.kind.name(),
            sides[0].label,
            sides[1].label
        ),
    );
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let share = |total: usize| total / rounds + usize::from(round < total % rounds);
        for index in order {
            let side = &mut sides[index];
            let cpu_before = side.server.server_cpu_seconds();
            let row = creates::run_level(
                side.client(),
                plan.kind,
                namespace,
                round,
                clients,
                share(creates),
                &bar,
            )
            .await?;
            side.creates += row.creates;
            side.errors += row.errors;
            side.create_seconds += row.elapsed.as_secs_f64();
            side.create_p99s.push(row.latency.p99_ms);
            side.round_creates_per_s
                .push(ratio(row.creates as f64, row.elapsed.as_secs_f64()));
            let cpu_between = side.server.server_cpu_seconds();
            let (latency, seconds, errors) = get_level(
                side.client(),
                plan.kind,
                namespace,
                clients,
                share(gets),
                &bar,
            )
            .await?;
            let cpu_after = side.server.server_cpu_seconds();
            if let (Some(before), Some(between), Some(after)) = (cpu_before, cpu_between, cpu_after)
            {
                side.create_cpu_seconds += between - before;
                side.get_cpu_seconds += after - between;
            }
            side.round_gets_per_s
                .push(ratio(latency.len() as f64, seconds));
            side.gets
                .add(&latency)
                .context("merging latency histograms")?;
            side.get_seconds += seconds;
            side.errors += errors;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The report as a table: `heading`, one row per side (its label under `label_title`), and
/// the ratios.
pub(crate) fn to_table(
    heading: &str,
    label_title: &str,
    labels: [&str; 2],
    summary: &[SideRun; 2],
) -> String {
    let mut out = format!("{heading}\n");
    out.push_str(&format!(
        "{:<12} {:>10} {:>11} {:>8} {:>9} {:>9} {:>15} {:>12}\n",
        label_title,
        "creates/s",
        "create p99",
        "GET/s",
        "GET p50",
        "GET p99",
        "CPU/create",
        "CPU/GET"
    ));
    for (label, run) in labels.iter().zip(summary) {
        out.push_str(&format!(
            "{:<12} {:>10.0} {:>9.2}ms {:>8.0} {:>7.2}ms {:>7.2}ms {:>13.1}us {:>10.1}us\n",
            label,
            run.creates_per_s,
            run.create.p99_ms,
            run.gets_per_s,
            run.get.p50_ms,
            run.get.p99_ms,
            run.cpu_us_per_create,
            run.cpu_us_per_get
        ));
    }
    let r = ratios(summary);
    out.push_str(&format!(
        "{} / {}: creates/s {:.2}x (median of the rounds' ratios {:.2}x), GET/s {:.2}x ({:.2}x), GET p99 {:.2}x; server CPU per create {:.2}x, per GET {:.2}x (lower is better for p99 and CPU)\n",
        labels[1],
        labels[0],
        r.creates_per_s,
        r.median_round_creates_per_s,
        r.gets_per_s,
        r.median_round_gets_per_s,
        r.get_p99,
        r.cpu_per_create,
        r.cpu_per_get
    ));
    out
}

/// The report as JSON: `fields` (the benchmark's parameters), each side under `sides` with
/// its label as `label_key`, and the ratios under `second_over_first`.
pub(crate) fn to_json(
    mut fields: serde_json::Map<String, Value>,
    label_key: &str,
    labels: [&str; 2],
    summary: &[SideRun; 2],
) -> Value {
    let side = |label: &str, run: &SideRun| {
        json!({
            label_key: label,
            "creates_per_s": run.creates_per_s,
            "create_latency": run.create.to_json(),
            "gets_per_s": run.gets_per_s,
            "get_latency": run.get.to_json(),
            "server_cpu_us_per_create": run.cpu_us_per_create,
            "server_cpu_us_per_get": run.cpu_us_per_get,
            "round_creates_per_s": run.round_creates_per_s,
            "round_gets_per_s": run.round_gets_per_s,
        })
    };
    let r = ratios(summary);
    fields.insert(
        "sides".into(),
        json!([side(labels[0], &summary[0]), side(labels[1], &summary[1])]),
    );
    fields.insert(
        "second_over_first".into(),
        json!({
            "creates_per_s": r.creates_per_s,
            "gets_per_s": r.gets_per_s,
            "get_p99": r.get_p99,
            "server_cpu_per_create": r.cpu_per_create,
            "server_cpu_per_get": r.cpu_per_get,
            "median_round_creates_per_s": r.median_round_creates_per_s,
            "median_round_gets_per_s": r.median_round_gets_per_s,
        }),
    );
    Value::Object(fields)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The second side's figures over the first's.
pub(crate) fn ratios(summary: &[SideRun; 2]) -> Ratios {
    let [first, second] = summary;
    let round_ratios = |a: &[f64], b: &[f64]| {
        let each: Vec<f64> = a.iter().zip(b).map(|(a, b)| ratio(*b, *a)).collect();
        median(&each)
    };
    Ratios {
        creates_per_s: ratio(second.creates_per_s, first.creates_per_s),
        gets_per_s: ratio(second.gets_per_s, first.gets_per_s),
        get_p99: ratio(second.get.p99_ms, first.get.p99_ms),
        cpu_per_create: ratio(second.cpu_us_per_create, first.cpu_us_per_create),
        cpu_per_get: ratio(second.cpu_us_per_get, first.cpu_us_per_get),
        median_round_creates_per_s: round_ratios(
            &first.round_creates_per_s,
            &second.round_creates_per_s,
        ),
        median_round_gets_per_s: round_ratios(&first.round_gets_per_s, &second.round_gets_per_s),
    }
}

/// The median of some figures (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// `clients` clients GET the probe object of `kind` in `namespace` `gets` times in total: the
/// latencies, the wall-clock seconds and the failures.
async fn get_level(
    user: &Target,
    kind: BenchKind,
    namespace: &str,
    clients: usize,
    gets: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Histogram<u64>, f64, u64)> {
    let apis = try_join_all((0..clients).map(|_| async {
        let api = kind.api(user.new_client()?, namespace);
        api.get(PROBE).await.context("warm-up GET failed")?;
        anyhow::Ok(api)
    }))
    .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = apis
        .into_iter()
        .map(|api| {
            let next = Arc::clone(&next);
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut latency: Histogram<u64> = latency_histogram();
                let mut errors = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < gets {
                    let sent = Instant::now();
                    match api.get(PROBE).await {
                        Ok(_) => record(&mut latency, sent.elapsed()),
                        Err(_) => errors += 1,
                    }
                    progress.inc(1);
                }
                (latency, errors)
            })
        })
        .collect();
    let results = try_join_all(tasks).await.context("a GET task panicked")?;
    let seconds = started.elapsed().as_secs_f64();
    let mut all = latency_histogram();
    let mut errors = 0;
    for (latency, e) in results {
        all.add(&latency).context("merging latency histograms")?;
        errors += e;
    }
    Ok((all, seconds, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
        let run = |c: f64, p99: f64, rounds: Vec<f64>| SideRun {
            creates_per_s: c,
            get: LatencySummary {
                p99_ms: p99,
                ..LatencySummary::default()
            },
            round_creates_per_s: rounds,
            ..SideRun::default()
        };
        let r = ratios(&[
            run(200.0, 2.0, vec![100.0, 200.0, 300.0]),
            run(190.0, 2.2, vec![50.0, 200.0, 330.0]),
        ]);
        assert!((r.creates_per_s - 0.95).abs() < 1e-9 && (r.get_p99 - 1.1).abs() < 1e-9);
        assert!((r.median_round_creates_per_s - 1.0).abs() < 1e-9);
        assert_eq!(r.median_round_gets_per_s, 0.0);
    }

    #[test]
    fn the_table_names_both_sides_and_the_ratio() {
        let run = |c: f64| SideRun {
            creates_per_s: c,
            ..SideRun::default()
        };
        let table = to_table(
            "heading",
            "provider",
            ["identity", "secretbox"],
            &[run(100.0), run(90.0)],
        );
        assert!(table.starts_with("heading\nprovider"), "{table}");
        assert!(
            table.contains("secretbox / identity: creates/s 0.90x"),
            "{table}"
        );
    }
}
