//! `wasmkube-bench same-node`: what a wasm pod calling a Service whose endpoint runs on the
//! same agent would save by skipping the kernel (issue 10: "may skip the kernel; measure
//! whether that pays").
//!
//! A wasm guest's outgoing connection is the agent's own socket, so a call from a wasm pod
//! to a Service with an endpoint on the same agent goes: connect to the ClusterIP -> the
//! nat-output hook's DNAT (kube-proxy, nftables mode) -> TCP over the node's loopback path
//! -> the agent's hyper server for the pod -> `HttpService::handle` -> a fresh instance. A
//! shortcut would hand the request to that `HttpService` directly. This bench measures both
//! ends of that, side by side in alternating rounds of one run:
//!
//! - **ClusterIP from the node**: `wasmkube server --pod-network routed --proxy-mode
//!   nftables` in a network namespace (the `service` bench's lab) with one http-hello pod
//!   behind a ClusterIP Service; the HTTP load generator (`wasmkube-bench load`) runs in
//!   the node's own namespace, so its connections take the same path a wasm pod's would.
//! - **pod IP from the node**: the same, straight to the pod's IP (no DNAT).
//! - **in-process, no socket**: the same http-hello component in this process's own
//!   `wasmkube_runtime::Runtime`, requests handed to `HttpService::handle` by as many
//!   workers, one request in flight each, on the guests' threads as the agent serves them.
//!
//! The in-process figure is the best a shortcut could do (no TCP, no HTTP/1.1 framing on
//! either side); a real shortcut would still build the guest's outgoing request.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use serde_json::json;
use wasmkube_runtime::{HttpService, HttpSpec, Runtime, RuntimeConfig};

use super::load::{LoadPlan, LoadResult};
use super::report::{self, LatencySummary};
use super::samples::Samples;
use super::service::{Lab, combine, serve_http_hello};
use super::table::{LatencyRow, RunHeader, latency_table, ratio};

/// Benchmark a same-node Service call: through the kernel (ClusterIP) versus in-process.
#[derive(clap::Args, Debug)]
pub(crate) struct SameNodeCommand {
    /// Concurrent callers (keep-alive connections, or in-process workers), one request in
    /// flight each.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// Seconds counted per round (after a 1 s warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    duration: u64,
    /// Rounds per path, alternating.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// The samples directory [default: samples/ of the current directory or of the
    /// repository the bench was built in].
    #[arg(long, value_name = "DIR")]
    samples: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// The paths measured, in the order of a round.
const PATHS: [&str; 3] = [
    "ClusterIP from the node (nftables DNAT)",
    "pod IP from the node",
    "in-process HttpService::handle (no socket)",
];

/// `concurrency` workers handing `GET /` to `service` on `handle`'s threads, closed-loop,
/// for `warmup + duration`; the requests of the last `duration` are counted.
async fn in_process(
    service: &HttpService,
    handle: &tokio::runtime::Handle,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let counting_from = Instant::now() + warmup;
    let until = counting_from + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let service = service.clone();
            handle.spawn(async move {
                let mut latency = report::latency_histogram();
                let (mut ok, mut errors) = (0u64, 0u64);
                loop {
                    let start = Instant::now();
                    if start >= until {
                        break;
                    }
                    let counted = start >= counting_from;
                    let request = http::Request::get("/")
                        .header(http::header::HOST, "svc-bench")
                        .body(Empty::<Bytes>::new());
                    let success = match request {
                        Ok(request) => {
                            let response = service.handle(request).await;
                            let status = response.status();
                            response.into_body().collect().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    };
                    if counted {
                        if success {
                            report::record(&mut latency, start.elapsed());
                            ok += 1;
                        } else {
                            errors += 1;
                        }
                    }
                }
                (latency, ok, errors)
            })
        })
        .collect();
    let mut latency = report::latency_histogram();
    let (mut ok, mut errors) = (0, 0);
    for worker in workers {
        let (h, o, e) = worker.await.context("an in-process worker panicked")?;
        latency.add(&h).context("merging latency histograms")?;
        ok += o;
        errors += e;
    }
    Ok(LoadResult {
        concurrency,
        ok,
        errors,
        elapsed: duration,
        latency: LatencySummary::of(&latency),
    })
}

impl SameNodeCommand {
    /// Runs the benchmark and prints its figures.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let samples = Samples::locate(self.samples.as_deref())?;
        samples.require_built("http-hello")?;
        let cache = tempfile::Builder::new()
            .prefix("wasmkube-bench-same-node-")
            .tempdir()?;
        let runtime = Runtime::new(RuntimeConfig::new(cache.path()))
            .context("starting the in-process wasm runtime")?;
        let program = runtime
            .load_file(&samples.module("http-hello"), "")
            .await
            .context("loading the http-hello sample in-process")?;
        let service = runtime.http_service(&program, HttpSpec::default());
        let handle = runtime.guest_handle().clone();

        let concurrency = usize::try_from(self.concurrency).unwrap_or(1);
        let (warmup, duration) = (Duration::from_secs(1), Duration::from_secs(self.duration));
        let wasmkube = wasmkube.to_path_buf();
        let (lab_tx, lab_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<Option<(usize, u64)>>();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<anyhow::Result<LoadResult>>(1);
        // The lab's processes are driven from a blocking thread (as `service` does); this
        // task drives the rounds and runs the in-process ones itself.
        let rounds = self.rounds;
        let lab_thread = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let lab = Lab::new()?;
            let (_server, direct, through) =
                serve_http_hello(&lab, &wasmkube, &samples, "nftables")?;
            let _ = lab_tx.send(Ok(()));
            while let Ok(Some((path, round))) = go_rx.recv() {
                let addr = if path == 0 { through } else { direct };
                eprintln!(
                    "round {}/{rounds} {} ({addr}), {} s...",
                    round + 1,
                    PATHS[path],
                    duration.as_secs()
                );
                let plan = LoadPlan {
                    addr,
                    path: "/".to_owned(),
                    host: None,
                    concurrency,
                    warmup,
                    duration,
                };
                let _ = done_tx.blocking_send(lab.load_in_node(&plan));
            }
            Ok(())
        });
        let ready = tokio::task::spawn_blocking(move || lab_rx.recv()).await?;
        if !matches!(ready, Ok(Ok(()))) {
            drop(go_tx);
            lab_thread.await??;
            anyhow::bail!("the lab stopped before the server was ready");
        }
        let mut results: [Vec<LoadResult>; 3] = Default::default();
        for round in 0..self.rounds {
            for (path, slot) in results.iter_mut().enumerate() {
                let result = if path == 2 {
                    eprintln!(
                        "round {}/{} {}, {} s...",
                        round + 1,
                        self.rounds,
                        PATHS[path],
                        self.duration
                    );
                    in_process(&service, &handle, concurrency, warmup, duration).await?
                } else {
                    go_tx
                        .send(Some((path, round)))
                        .context("the lab thread stopped")?;
                    done_rx.recv().await.context("the lab thread stopped")??
                };
                slot.push(result);
            }
        }
        let _ = go_tx.send(None);
        lab_thread.await??;
        service.stop();
        self.print(&results);
        Ok(())
    }

    fn print(&self, results: &[Vec<LoadResult>; 3]) {
        let mut header = RunHeader::now(
            "same-node",
            &[
                "--pod-network=routed".to_owned(),
                "--proxy-mode=nftables".to_owned(),
            ],
        );
        header.peer = Some("the same http-hello component in-process, no socket".into());
        let figures: Vec<(f64, u64, Option<&LoadResult>)> =
            results.iter().map(|r| combine(r)).collect();
        let kernel = figures[0].0;
        if self.json {
            let paths: Vec<serde_json::Value> = PATHS
                .iter()
                .zip(results.iter().zip(&figures))
                .map(|(name, (rounds, (rps, errors, _)))| {
                    json!({
                        "path": name,
                        "rounds": rounds.iter().map(LoadResult::to_json).collect::<Vec<_>>(),
                        "requests_per_second": rps,
                        "errors": errors,
                        "versus_cluster_ip": ratio(*rps, kernel),
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "run": header.to_json(),
                    "concurrency": self.concurrency,
                    "rounds": self.rounds,
                    "seconds_per_round": self.duration,
                    "paths": paths,
                })
            );
            return;
        }
        let mut out = String::new();
        header.write(&mut out);
        out.push_str(&format!(
            "\nhttp-hello on the same node, {} callers, {} rounds x {} s per path, alternating:\n",
            self.concurrency, self.rounds, self.duration
        ));
        let mut rows = Vec::new();
        for (name, (rps, errors, mid)) in PATHS.iter().zip(&figures) {
            let r = ratio(*rps, kernel).map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}x"));
            out.push_str(&format!(
                "  {name:<44} {rps:>8.0} req/s ({r} of ClusterIP, {errors} errors)\n"
            ));
            if let Some(mid) = mid {
                rows.push(LatencyRow::measured(
                    format!("{name} (median round)"),
                    mid.latency,
                ));
            }
        }
        out.push('\n');
        latency_table(&mut out, &rows);
        print!("{out}");
    }
}
