//! `wasmkube-bench density`: the memory of the server (apiserver, scheduler, controllers and
//! the embedded agent in one process) per idle running wasm pod, over 1,000 pods, and how long it takes
//! until all of them are Running.
//!
//! Two kinds of idle pod, each on a fresh server: a command module that blocks (the `counter`
//! sample with an interval of an hour: it prints once, then sleeps in `poll_oneoff`), and the
//! `http-hello` wasi:http component (an idle listener; an instance is made per request, so an
//! idle pod has no instance), with its probes removed so the pods really are idle.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Container;
use serde_json::json;

use super::podwatch::Milestone;
use super::progress_bar;
use super::samples::{Samples, pod_named};
use super::table::RunHeader;
use super::workload::{self, Workload, WorkloadArgs};

/// How long one pod may take to be Running (or gone).
const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
/// The extra time allowed per pod of a kind, on top of [`RUNNING_TIMEOUT`]: 20 pods/s is far
/// below what the agent does, so pods that never start (e.g. their containers trap because
/// the runtime ran out of instance slots) end the run instead of stalling it.
const RUNNING_TIMEOUT_PER_POD: Duration = Duration::from_millis(50);
/// The pause before a memory reading, so that transient allocations have been returned.
const SETTLE: Duration = Duration::from_secs(5);

/// What `wasmkube-bench density --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
What is measured, for each kind of idle pod on a fresh `wasmkube server` (apiserver,
scheduler, controllers and the embedded agent in one process, started with --max-pods, --cpu
and --memory raised so that all pods fit):

  counter      the counter sample with args [\"3600000\"]: prints one line, then sleeps an hour
               in poll_oneoff (a blocked command module with a live instance).
  http-hello   the http-hello wasi:http component, probes removed: an idle listener per pod
               (an instance is made per request, so no instance while idle).

1. The image is imported, one pod is started and deleted (the module is compiled and cached),
   then after a pause the server's VmRSS (/proc/<pid>/status) and Pss (/proc/<pid>/smaps_rollup)
   are read: \"before\".
2. --pods pods are created with --concurrency creates in flight; reported: the time from the
   first create until a pod watch has seen all of them Running, and pods/s.
3. After a pause, VmRSS and Pss again: \"after\". (after - before) / pods = KiB per pod.

Target (TARGETS.md): <= 100 KiB RSS per idle pod (10,000 pods on one agent).

Examples:
  wasmkube-bench density
  wasmkube-bench density --pods 200 --kinds counter --json";

/// Server memory per idle running wasm pod over 1,000 pods.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct DensityCommand {
    /// Idle pods per kind.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pods: u64,
    /// Creates in flight.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// The kinds of idle pod, comma-separated.
    #[arg(long, value_name = "KIND,..", value_delimiter = ',', default_value = "counter,http-hello",
          value_parser = ["counter", "http-hello"])]
    kinds: Vec<String>,
    #[command(flatten)]
    common: WorkloadArgs,
}

/// Memory of the server at one moment, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Memory {
    rss_kib: u64,
    pss_kib: Option<u64>,
    threads: Option<u64>,
}

/// The figures of one kind.
#[derive(Clone, Debug)]
struct KindResult {
    kind: String,
    pods: usize,
    before: Memory,
    after: Memory,
    all_running: Duration,
}

impl KindResult {
    fn rss_per_pod_kib(&self) -> f64 {
        (self.after.rss_kib as f64 - self.before.rss_kib as f64) / self.pods as f64
    }

    fn pss_per_pod_kib(&self) -> Option<f64> {
        Some((self.after.pss_kib? as f64 - self.before.pss_kib? as f64) / self.pods as f64)
    }

    fn pods_per_second(&self) -> f64 {
        self.pods as f64 / self.all_running.as_secs_f64().max(1e-9)
    }
}

impl DensityCommand {
    /// Runs the benchmark and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let pods = usize::try_from(self.pods).context("--pods is too large")?;
        let kinds: Vec<&str> = self.kinds.iter().map(String::as_str).collect();
        let samples = self.common.samples(&kinds)?;
        let server_args = self.common.server_args(pods);
        let mut header = RunHeader::now("density", &server_args);
        header.peer = Some("none (the server's own memory is measured)".to_owned());
        let mut results = Vec::new();
        for kind in &kinds {
            let mut workload = Workload::start(
                wasmkube,
                self.common.data_dir.clone(),
                &server_args,
                &samples,
                &[kind],
            )
            .await?;
            let result = self.measure(&mut workload, &samples, kind, pods).await;
            workload.shutdown().await;
            results.push(result?);
        }
        if self.common.json {
            let json = json!({
                "run": header.to_json(),
                "kinds": results.iter().map(|r| json!({
                    "kind": r.kind,
                    "pods": r.pods,
                    "before": memory_json(r.before),
                    "after": memory_json(r.after),
                    "rss_per_pod_kib": r.rss_per_pod_kib(),
                    "pss_per_pod_kib": r.pss_per_pod_kib(),
                    "all_running_s": r.all_running.as_secs_f64(),
                    "pods_per_s": r.pods_per_second(),
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            print!("{}", to_table(&header, &results));
        }
        Ok(())
    }

    async fn measure(
        &self,
        workload: &mut Workload,
        samples: &Samples,
        kind: &str,
        pods: usize,
    ) -> anyhow::Result<KindResult> {
        let template = samples.pod(kind)?;
        let make = |name: &str| pod_named(&template, workload::NAMESPACE, name, idle(kind));

        let warmup = HashSet::from(["warmup".to_owned()]);
        workload.create(&make("warmup")).await?;
        workload
            .watch
            .wait_all(&warmup, Milestone::Running, RUNNING_TIMEOUT, |_| {})
            .await?;
        workload.delete_all(&warmup, RUNNING_TIMEOUT).await?;
        tokio::time::sleep(SETTLE).await;
        let before = memory(workload)?;

        let names: Vec<String> = (0..pods).map(|i| format!("{kind}-{i}")).collect();
        let manifests: Vec<_> = names.iter().map(|n| make(n)).collect();
        let api = workload.pods();
        let bar = progress_bar(self.pods, format!("{kind} pods Running"));
        let start = Instant::now();
        let creates = futures::stream::iter(manifests.iter().map(|pod| {
            let api = api.clone();
            async move { workload::create_pod(&api, pod).await }
        }))
        .buffer_unordered(usize::try_from(self.concurrency).unwrap_or(1))
        .collect::<Vec<_>>();
        let all: HashSet<String> = names.into_iter().collect();
        let watch = &mut workload.watch;
        let timeout =
            RUNNING_TIMEOUT + RUNNING_TIMEOUT_PER_POD * u32::try_from(pods).unwrap_or(u32::MAX);
        let running = watch.wait_all(&all, Milestone::Running, timeout, |event| {
            if event.milestone == Milestone::Running {
                bar.inc(1);
            }
        });
        let (created, running) = tokio::join!(creates, running);
        bar.finish_and_clear();
        created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let running = running?;
        let last = running.iter().map(|e| e.at).max().unwrap_or(start);
        let all_running = last.saturating_duration_since(start);
        eprintln!(
            "{kind}: {pods} pods Running in {:.1} s; reading memory after {SETTLE:?}",
            all_running.as_secs_f64()
        );
        tokio::time::sleep(SETTLE).await;
        let after = memory(workload)?;
        Ok(KindResult {
            kind: kind.to_owned(),
            pods,
            before,
            after,
            all_running,
        })
    }
}

/// The edit that makes a pod of `kind` idle: an hour between counter lines; no probes.
fn idle(kind: &str) -> impl Fn(&mut Container) + '_ {
    move |container| {
        if kind == "counter" {
            container.args = Some(vec!["3600000".to_owned()]);
        }
        container.readiness_probe = None;
        container.liveness_probe = None;
        container.startup_probe = None;
    }
}

/// The server's memory now.
fn memory(workload: &Workload) -> anyhow::Result<Memory> {
    let target = &workload.target;
    Ok(Memory {
        rss_kib: target
            .server_status_field("VmRSS:")
            .context("cannot read the server's VmRSS")?,
        pss_kib: target.server_pss_kib(),
        threads: target.server_status_field("Threads:"),
    })
}

fn memory_json(memory: Memory) -> serde_json::Value {
    json!({ "rss_kib": memory.rss_kib, "pss_kib": memory.pss_kib, "threads": memory.threads })
}

/// The results as a table.
fn to_table(header: &RunHeader, results: &[KindResult]) -> String {
    let mut out = String::new();
    header.write(&mut out);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "server memory per idle running pod (after - before) / pods"
    );
    let _ = writeln!(
        out,
        "  {:<11} {:>6} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10} {:>9} {:>11} {:>7}",
        "kind",
        "pods",
        "RSS before",
        "RSS after",
        "KiB/pod",
        "PSS before",
        "PSS after",
        "KiB/pod",
        "threads",
        "all Running",
        "pods/s"
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for r in results {
        let pss = |m: Memory| m.pss_kib.map_or_else(|| "-".to_owned(), mib);
        let threads = match (r.before.threads, r.after.threads) {
            (Some(b), Some(a)) => format!("{b}->{a}"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<11} {:>6} {:>12} {:>12} {:>10.1} {:>12} {:>12} {:>10} {:>9} {:>9.1} s {:>7.0}",
            r.kind,
            r.pods,
            mib(r.before.rss_kib),
            mib(r.after.rss_kib),
            r.rss_per_pod_kib(),
            pss(r.before),
            pss(r.after),
            r.pss_per_pod_kib()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            threads,
            r.all_running.as_secs_f64(),
            r.pods_per_second()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pod_memory_is_the_growth_divided_by_the_pods() {
        let result = KindResult {
            kind: "counter".to_owned(),
            pods: 1000,
            before: Memory {
                rss_kib: 40_000,
                pss_kib: Some(39_000),
                threads: Some(10),
            },
            after: Memory {
                rss_kib: 90_000,
                pss_kib: None,
                threads: Some(12),
            },
            all_running: Duration::from_secs(4),
        };
        assert!((result.rss_per_pod_kib() - 50.0).abs() < 1e-9);
        assert_eq!(result.pss_per_pod_kib(), None);
        assert!((result.pods_per_second() - 250.0).abs() < 1e-9);
        let table = to_table(&RunHeader::default(), &[result]);
        assert!(table.contains("50.0"), "{table}");
        assert!(table.contains("10->12"), "{table}");
    }

    #[test]
    fn idle_pods_have_no_probes_and_a_counter_sleeps_an_hour() {
        let mut container = Container {
            readiness_probe: Some(Default::default()),
            args: Some(vec!["1000".to_owned()]),
            ..Container::default()
        };
        idle("counter")(&mut container);
        assert_eq!(container.args, Some(vec!["3600000".to_owned()]));
        assert!(container.readiness_probe.is_none());
        let mut container = Container::default();
        idle("http-hello")(&mut container);
        assert!(container.args.is_none());
    }
}
