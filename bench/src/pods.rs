//! `wasmkube-bench pods`: wasm pod startup latency, create -> Running as a watching client
//! sees it, next to `wasmtime run` of the same module in the same run.
//!
//! Our figure for one pod is the time from just before the create request is sent until the
//! pod watch delivers the pod with phase Running and its container running. The peer's is the
//! time from just before `wasmtime run MODULE ARGS` is spawned until its first byte on stdout
//! (the guest has started and printed; the `counter` sample prints before it first sleeps).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::peer::{self, Wasmtime};
use super::podwatch::Milestone;
use super::progress_bar;
use super::report::{self, LatencySummary};
use super::samples::{Samples, pod_named};
use super::table::{self, LatencyRow, RunHeader};
use super::workload::{self, PeerArgs, Workload, WorkloadArgs};

/// How long one phase may take before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// What `wasmkube-bench pods --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
What is measured (one run, ours and the peer side by side):

1. One at a time: --pods pods of the sample (default counter, from samples/<name>/pod.yaml with
   image wasmkube.local/samples/<name>:v1, imported into the embedded agent's store first) are
   created one after the other; each latency is from just before the create request is sent
   until a pod watch (opened before) delivers the pod with phase Running and its container in
   state running. A first pod, which compiles the module, is measured apart and not counted.
   Also reported: where the time goes, from the same watch: create -> bound (scheduler),
   bound -> first agent status, agent status -> Running.
2. Burst: --pods pods created at once with --burst-concurrency creates in flight; the same
   latency per pod (from just before its own create), its phases, and the time from the first
   create until all are Running.
   Between phases all pods are deleted with grace period 0 and the bench waits until the
   watch saw each one gone.
3. Peer: `wasmtime run MODULE ARGS` of the same .wasm with the same args, --peer-runs times
   one after the other; the latency is from just before the process is spawned until its
   first byte on stdout (the guest runs). Three rows: the CLI's defaults (its compile cache is
   on, and warm after a first run that is not counted), `-C cache=n` (compiles every time), and
   a module precompiled with `wasmtime compile` run with --allow-precompiled.

Prints p50/p99/max per row and the ratios ours / `wasmtime run` (one at a time vs the CLI's
defaults). Targets (TARGETS.md): p99 <= 20 ms on one node, within 3x of `wasmtime run`.

Examples:
  wasmkube-bench pods
  wasmkube-bench pods --pods 50 --peer-runs 50 --json";

/// Wasm pod startup latency (create -> Running via a watch) next to `wasmtime run`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct PodsCommand {
    /// Pods per phase (one at a time, burst).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pods: u64,
    /// Creates in flight during the burst.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    burst_concurrency: u64,
    /// `wasmtime run` invocations per peer row.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    peer_runs: u64,
    /// The sample to run: a command module that keeps running and prints at its start.
    #[arg(long, value_name = "NAME", default_value = "counter")]
    sample: String,
    #[command(flatten)]
    peer: PeerArgs,
    #[command(flatten)]
    common: WorkloadArgs,
}

/// The figures of one run.
struct PodsReport {
    header: RunHeader,
    pods: usize,
    burst_concurrency: usize,
    ours: Ours,
    peer: Vec<LatencyRow>,
}

/// Our figures.
struct Ours {
    first_pod_ms: f64,
    sequential: LatencySummary,
    /// create -> bound, bound -> agent status, agent status -> Running (one at a time).
    sequential_phases: Vec<LatencyRow>,
    burst: LatencySummary,
    /// The same phases in the burst.
    burst_phases: Vec<LatencyRow>,
    burst_all_running_ms: f64,
}

/// Histograms of create -> bound, bound -> agent status, agent status -> Running.
type PhaseHistograms = [Histogram<u64>; 3];

fn phase_histograms() -> PhaseHistograms {
    [(); 3].map(|()| report::latency_histogram())
}

fn phase_rows(phases: &PhaseHistograms) -> Vec<LatencyRow> {
    let labels = [
        "create -> bound (scheduler)",
        "bound -> first agent status",
        "agent status -> Running",
    ];
    labels
        .iter()
        .zip(phases)
        .map(|(label, h)| LatencyRow::measured(*label, LatencySummary::of(h)))
        .collect()
}

impl PodsCommand {
    /// Runs the benchmark and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let pods = usize::try_from(self.pods).context("--pods is too large")?;
        let samples = self.common.samples(&[&self.sample])?;
        let wasmtime = self.peer.find().await;
        let server_args = self.common.server_args(pods);
        let mut header = RunHeader::now("pods", &server_args);
        header.peer = wasmtime.as_ref().map(|w| w.version.clone());
        let mut workload = Workload::start(
            wasmkube,
            self.common.data_dir.clone(),
            &server_args,
            &samples,
            &[&self.sample],
        )
        .await?;
        let outcome = self.measure(&mut workload, &samples, pods).await;
        workload.shutdown().await;
        let ours = outcome?;
        let peer = self.measure_peer(wasmtime.as_ref(), &samples).await;
        let report = PodsReport {
            header,
            pods,
            burst_concurrency: usize::try_from(self.burst_concurrency).unwrap_or(usize::MAX),
            ours,
            peer,
        };
        if self.common.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_table());
        }
        Ok(())
    }

    /// Our two phases: one at a time, then the burst.
    async fn measure(
        &self,
        workload: &mut Workload,
        samples: &Samples,
        pods: usize,
    ) -> anyhow::Result<Ours> {
        let template = samples.pod(&self.sample)?;
        let make = |name: &str| pod_named(&template, workload::NAMESPACE, name, |_| {});

        // A first pod compiles the module (the agent caches it); measured apart.
        let first = one_pod(workload, &make("warmup")).await?;
        let first_pod_ms = first.running_ms();
        workload
            .delete_all(&HashSet::from(["warmup".to_owned()]), PHASE_TIMEOUT)
            .await?;

        let bar = progress_bar(self.pods, "pods one at a time".to_owned());
        let mut sequential = report::latency_histogram();
        let mut phases = phase_histograms();
        let mut names = HashSet::new();
        for i in 0..pods {
            let name = format!("seq-{i}");
            let timing = one_pod(workload, &make(&name)).await?;
            report::record(&mut sequential, timing.running - timing.created);
            timing.record_phases(&mut phases);
            names.insert(name);
            bar.inc(1);
        }
        bar.finish_and_clear();
        workload.delete_all(&names, PHASE_TIMEOUT).await?;
        settle().await;

        let mut burst_phases = phase_histograms();
        let (burst, all_running) = self.burst(workload, &make, pods, &mut burst_phases).await?;
        Ok(Ours {
            first_pod_ms,
            sequential: LatencySummary::of(&sequential),
            sequential_phases: phase_rows(&phases),
            burst,
            burst_phases: phase_rows(&burst_phases),
            burst_all_running_ms: all_running.as_secs_f64() * 1000.0,
        })
    }

    /// All pods created at once, `--burst-concurrency` in flight.
    async fn burst(
        &self,
        workload: &mut Workload,
        make: &impl Fn(&str) -> Pod,
        pods: usize,
        phases: &mut PhaseHistograms,
    ) -> anyhow::Result<(LatencySummary, Duration)> {
        let names: Vec<String> = (0..pods).map(|i| format!("burst-{i}")).collect();
        let manifests: Vec<Pod> = names.iter().map(|n| make(n)).collect();
        let api = workload.pods();
        let bar = progress_bar(self.pods, "pods in a burst".to_owned());
        let start = Instant::now();
        let created: Vec<anyhow::Result<(String, Instant)>> =
            futures::stream::iter(manifests.iter().map(|pod| {
                let api = api.clone();
                async move {
                    let at = Instant::now();
                    workload::create_pod(&api, pod).await?;
                    Ok((pod.metadata.name.clone().unwrap_or_default(), at))
                }
            }))
            .buffer_unordered(usize::try_from(self.burst_concurrency).unwrap_or(1))
            .collect()
            .await;
        let created: HashMap<String, Instant> =
            created.into_iter().collect::<anyhow::Result<_>>()?;
        let all: HashSet<String> = names.into_iter().collect();
        let mut seen: HashMap<(String, Milestone), Instant> = HashMap::new();
        let running = workload
            .watch
            .wait_all(&all, Milestone::Running, PHASE_TIMEOUT, |event| {
                if event.milestone == Milestone::Running {
                    bar.inc(1);
                }
                seen.insert((event.name.clone(), event.milestone), event.at);
            })
            .await?;
        bar.finish_and_clear();
        let mut latency = report::latency_histogram();
        let mut last = start;
        for event in &running {
            if let Some(&at) = created.get(&event.name) {
                report::record(&mut latency, event.at.saturating_duration_since(at));
                let milestone = |m| seen.get(&(event.name.clone(), m)).copied();
                PodTiming {
                    created: at,
                    bound: milestone(Milestone::Bound),
                    agent_status: milestone(Milestone::AgentStatus),
                    running: event.at,
                }
                .record_phases(phases);
            }
            last = last.max(event.at);
        }
        workload.delete_all(&all, PHASE_TIMEOUT).await?;
        Ok((LatencySummary::of(&latency), last - start))
    }

    /// The `wasmtime run` rows.
    async fn measure_peer(
        &self,
        wasmtime: Option<&Wasmtime>,
        samples: &Samples,
    ) -> Vec<LatencyRow> {
        let labels = [
            "wasmtime run (CLI defaults, compile cache warm)",
            "wasmtime run -C cache=n (compiles each run)",
            "wasmtime run --allow-precompiled .cwasm",
        ];
        let Some(wasmtime) = wasmtime else {
            return labels
                .iter()
                .map(|l| LatencyRow::missing(*l, peer::NOT_FOUND))
                .collect();
        };
        let module = samples.module(&self.sample);
        let guest_args = samples
            .pod(&self.sample)
            .ok()
            .and_then(|pod| pod.spec?.containers.first()?.args.clone())
            .unwrap_or_default();
        let dir = tempfile::tempdir();
        let cwasm = dir
            .as_ref()
            .map(|d| d.path().join(format!("{}.cwasm", self.sample)))
            .ok();
        let mut rows = Vec::new();
        for (i, label) in labels.iter().enumerate() {
            let mut args: Vec<std::ffi::OsString> = vec!["run".into()];
            match i {
                0 => args.push(module.clone().into()),
                1 => {
                    args.extend(["-C".into(), "cache=n".into()]);
                    args.push(module.clone().into());
                }
                _ => {
                    let Some(cwasm) = &cwasm else {
                        rows.push(LatencyRow::missing(*label, "no temporary directory"));
                        continue;
                    };
                    if let Err(e) = wasmtime.compile(&module, cwasm).await {
                        rows.push(LatencyRow::missing(*label, format!("{e:#}")));
                        continue;
                    }
                    args.push("--allow-precompiled".into());
                    args.push(cwasm.clone().into());
                }
            }
            args.extend(guest_args.iter().map(Into::into));
            rows.push(match self.peer_row(wasmtime, &args, label).await {
                Ok(h) => LatencyRow::measured(*label, LatencySummary::of(&h)),
                Err(e) => LatencyRow::missing(*label, format!("failed: {e:#}")),
            });
        }
        rows
    }

    /// One warm-up run (not counted), then `--peer-runs` timed runs.
    async fn peer_row(
        &self,
        wasmtime: &Wasmtime,
        args: &[std::ffi::OsString],
        label: &str,
    ) -> anyhow::Result<Histogram<u64>> {
        wasmtime.time_to_first_byte(args).await?;
        let bar = progress_bar(self.peer_runs, label.to_owned());
        let mut latency = report::latency_histogram();
        for _ in 0..self.peer_runs {
            report::record(&mut latency, wasmtime.time_to_first_byte(args).await?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(latency)
    }
}

/// The milestones of one pod started on its own.
struct PodTiming {
    created: Instant,
    bound: Option<Instant>,
    agent_status: Option<Instant>,
    running: Instant,
}

impl PodTiming {
    fn running_ms(&self) -> f64 {
        (self.running - self.created).as_secs_f64() * 1000.0
    }

    /// Records create -> bound, bound -> agent status, agent status -> Running where seen.
    fn record_phases(&self, phases: &mut [Histogram<u64>; 3]) {
        if let Some(bound) = self.bound {
            report::record(
                &mut phases[0],
                bound.saturating_duration_since(self.created),
            );
            if let Some(status) = self.agent_status {
                report::record(&mut phases[1], status.saturating_duration_since(bound));
                report::record(
                    &mut phases[2],
                    self.running.saturating_duration_since(status),
                );
            }
        }
    }
}

/// Creates one pod and waits for the watch to deliver it Running.
async fn one_pod(workload: &mut Workload, pod: &Pod) -> anyhow::Result<PodTiming> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let created = Instant::now();
    workload.create(pod).await?;
    let (mut bound, mut agent_status) = (None, None);
    let running = workload
        .watch
        .wait_all(
            &HashSet::from([name.clone()]),
            Milestone::Running,
            PHASE_TIMEOUT,
            |event| {
                if event.name == name {
                    match event.milestone {
                        Milestone::Bound => bound = Some(event.at),
                        Milestone::AgentStatus => agent_status = Some(event.at),
                        _ => {}
                    }
                }
            },
        )
        .await?;
    let running = running.first().map_or_else(Instant::now, |e| e.at);
    Ok(PodTiming {
        created,
        bound,
        agent_status,
        running,
    })
}

/// A pause after a mass delete, so the agent has stopped the deleted pods' instances before
/// the next phase is timed.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

impl PodsReport {
    /// The ratio of our one-at-a-time figures to `wasmtime run` with the CLI's defaults:
    /// (p50 ratio, p99 ratio).
    fn ratios(&self) -> (Option<f64>, Option<f64>) {
        let Some(peer) = self.peer.first().and_then(LatencyRow::summary) else {
            return (None, None);
        };
        (
            table::ratio(self.ours.sequential.p50_ms, peer.p50_ms),
            table::ratio(self.ours.sequential.p99_ms, peer.p99_ms),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        let (p50, p99) = self.ratios();
        json!({
            "run": self.header.to_json(),
            "pods": self.pods,
            "first_pod_ms": self.ours.first_pod_ms,
            "one_at_a_time": self.ours.sequential.to_json(),
            "one_at_a_time_phases": self.ours.sequential_phases.iter().map(LatencyRow::to_json).collect::<Vec<_>>(),
            "burst": {
                "concurrency": self.burst_concurrency,
                "latency": self.ours.burst.to_json(),
                "phases": self.ours.burst_phases.iter().map(LatencyRow::to_json).collect::<Vec<_>>(),
                "all_running_ms": self.ours.burst_all_running_ms,
            },
            "peer": self.peer.iter().map(LatencyRow::to_json).collect::<Vec<_>>(),
            "ratio_to_wasmtime_run": { "p50": p50, "p99": p99 },
        })
    }

    fn to_table(&self) -> String {
        let mut out = String::new();
        self.header.write(&mut out);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "pod startup, create -> Running via a watch ({} pods per row; first pod {:.1} ms, not counted)",
            self.pods, self.ours.first_pod_ms
        );
        let mut rows = vec![
            LatencyRow::measured("wasmkube pod, one at a time", self.ours.sequential),
            LatencyRow::measured(
                format!("wasmkube pod, burst ({} in flight)", self.burst_concurrency),
                self.ours.burst,
            ),
        ];
        rows.extend(self.peer.iter().cloned());
        table::latency_table(&mut out, &rows);
        let _ = writeln!(
            out,
            "  burst: all {} Running {:.0} ms after the first create",
            self.pods, self.ours.burst_all_running_ms
        );
        let (p50, p99) = self.ratios();
        let _ = writeln!(
            out,
            "  ours / wasmtime run: p50 {}, p99 {}",
            table::show_ratio(p50),
            table::show_ratio(p99)
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "where a pod's time goes, one at a time");
        table::latency_table(&mut out, &self.ours.sequential_phases);
        let _ = writeln!(out, "where a pod's time goes, in the burst");
        table::latency_table(&mut out, &self.ours.burst_phases);
        out
    }
}
