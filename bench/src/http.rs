//! `wasmkube-bench http`: requests/s and latency of the `http-hello` sample (a wasi:http
//! component) served by a pod on the embedded agent, next to `wasmtime serve` of the same
//! component, both loaded by the same generator ([`super::load`]) in the same run.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::counter_bar;
use super::load::{self, LoadPlan, LoadResult};
use super::peer;
use super::podwatch::Milestone;
use super::samples::{container_port, pod_named};
use super::table::{self, RunHeader};
use super::workload::{self, PeerArgs, Workload, WorkloadArgs};

/// The sample served.
const SAMPLE: &str = "http-hello";
/// How long the pod may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What `wasmkube-bench http --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
What is measured (one run, ours and the peer side by side):

The http-hello sample (samples/out/http-hello.wasm, a wasi:http/proxy component; a new
instance per request) is imported into the embedded agent's store and deployed as the pod of
samples/http-hello/pod.yaml; the load goes to the pod's status.podIP (a 127.x.y.z address) and
the manifest's containerPort, straight to the agent's listener. The peer is `wasmtime serve
--addr 127.0.0.1:PORT http-hello.wasm` (a free loopback port; its defaults, which also create
an instance per request for a WASIp2 component), started by the bench.

The load generator (built in): --concurrency workers, each with one keep-alive HTTP/1.1
connection and one GET / in flight, back to back. For each concurrency level, ours then the
peer, each --warmup seconds not counted, then --duration seconds counted. Reported:
requests/s (2xx answers over the counted time), latency p50/p99/max (send to the last byte of
the body), errors, and ours / peer ratios. The generator, the server and `wasmtime serve` share
this machine's CPUs.

Targets (TARGETS.md): >= 1.2x `wasmtime serve` requests/s; p50 <= 100 us at concurrency 1 and
p99 <= 2 ms at concurrency 64.

Examples:
  wasmkube-bench http
  wasmkube-bench http --duration 3 --concurrency 1,16 --json";

/// Requests/s and latency of the http-hello pod next to `wasmtime serve`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct HttpCommand {
    /// Concurrency levels (connections), comma-separated.
    #[arg(long, value_name = "N,N,..", value_delimiter = ',', default_value = "1,64",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: Vec<u64>,
    /// Seconds counted per level and server.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds of load before the counting starts, per level and server.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    warmup: u64,
    /// The request path.
    #[arg(long, value_name = "PATH", default_value = "/")]
    path: String,
    #[command(flatten)]
    peer: PeerArgs,
    #[command(flatten)]
    common: WorkloadArgs,
}

/// One level: ours and the peer's.
struct Level {
    ours: LoadResult,
    peer: Result<LoadResult, String>,
}

impl HttpCommand {
    /// Runs the benchmark and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let samples = self.common.samples(&[SAMPLE])?;
        let wasmtime = self.peer.find().await;
        let server_args = self.common.server_args(16);
        let mut header = RunHeader::now("http", &server_args);
        header.peer = wasmtime.as_ref().map(|w| w.version.clone());
        let mut workload = Workload::start(
            wasmkube,
            self.common.data_dir.clone(),
            &server_args,
            &samples,
            &[SAMPLE],
        )
        .await?;
        let template = samples.pod(SAMPLE)?;
        let port = container_port(&template).context("the http-hello manifest has no port")?;
        let peer_serve = match &wasmtime {
            Some(cli) => {
                let addr =
                    SocketAddr::from((Ipv4Addr::LOCALHOST, super::target::free_loopback_port()?));
                cli.serve(&samples.module(SAMPLE), addr)
                    .await
                    .map(|serve| (serve, addr))
                    .map_err(|e| format!("failed: {e:#}"))
            }
            None => Err(peer::NOT_FOUND.to_owned()),
        };
        let outcome = async {
            let pod = pod_named(&template, workload::NAMESPACE, SAMPLE, |_| {});
            workload.create(&pod).await?;
            let ip = pod_ip(&mut workload).await?;
            let ours = SocketAddr::new(ip, port);
            wait_answering(ours).await?;
            let peer_addr = peer_serve
                .as_ref()
                .map(|(_, addr)| *addr)
                .map_err(Clone::clone);
            let mut levels = Vec::new();
            for &concurrency in &self.concurrency {
                let concurrency = usize::try_from(concurrency).context("--concurrency")?;
                let ours = self.load(ours, concurrency, "wasmkube pod").await?;
                let peer = match &peer_addr {
                    Ok(addr) => self
                        .load(*addr, concurrency, "wasmtime serve")
                        .await
                        .map_err(|e| format!("failed: {e:#}")),
                    Err(why) => Err(why.clone()),
                };
                levels.push(Level { ours, peer });
            }
            workload
                .delete_all(&HashSet::from([SAMPLE.to_owned()]), READY_TIMEOUT)
                .await?;
            Ok::<_, anyhow::Error>((ours, levels))
        }
        .await;
        if let Ok((serve, _)) = peer_serve {
            serve.stop().await;
        }
        workload.shutdown().await;
        let (ours, levels) = outcome?;
        let report = HttpReport {
            header,
            ours_addr: ours,
            path: self.path.clone(),
            duration: self.duration,
            warmup: self.warmup,
            levels,
        };
        if self.common.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_table());
        }
        Ok(())
    }

    /// One load run against `addr`.
    async fn load(
        &self,
        addr: SocketAddr,
        concurrency: usize,
        who: &str,
    ) -> anyhow::Result<LoadResult> {
        let plan = LoadPlan {
            addr,
            path: self.path.clone(),
            host: None,
            concurrency,
            warmup: Duration::from_secs(self.warmup),
            duration: Duration::from_secs(self.duration),
        };
        let bar = counter_bar(format!("{who}, c={concurrency}"));
        let result = load::run(&plan, &bar).await;
        bar.finish_and_clear();
        result
    }
}

/// Waits for the http-hello pod to be Running and returns its IP.
async fn pod_ip(workload: &mut Workload) -> anyhow::Result<IpAddr> {
    let running = workload
        .watch
        .wait_all(
            &HashSet::from([SAMPLE.to_owned()]),
            Milestone::Running,
            READY_TIMEOUT,
            |_| {},
        )
        .await?;
    let ip = match running.first().and_then(|e| e.pod_ip.clone()) {
        Some(ip) => ip,
        None => workload
            .pods()
            .get(SAMPLE)
            .await?
            .status
            .and_then(|s| s.pod_ip)
            .context("the Running http-hello pod has no podIP")?,
    };
    ip.parse()
        .with_context(|| format!("podIP {ip:?} is not an IP address"))
}

/// Polls until `addr` answers a GET with 200.
async fn wait_answering(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let plan = LoadPlan {
            addr,
            path: "/".to_owned(),
            host: None,
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(50),
        };
        if let Ok(result) = load::run(&plan, &indicatif::ProgressBar::hidden()).await
            && result.ok > 0
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{addr} did not answer within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The figures of one run.
struct HttpReport {
    header: RunHeader,
    ours_addr: SocketAddr,
    path: String,
    duration: u64,
    warmup: u64,
    levels: Vec<Level>,
}

impl HttpReport {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "run": self.header.to_json(),
            "pod_address": self.ours_addr.to_string(),
            "path": self.path,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "levels": self.levels.iter().map(|level| {
                let peer = match &level.peer {
                    Ok(peer) => peer.to_json(),
                    Err(why) => json!({ "not_measured": why }),
                };
                let ratio = level.peer.as_ref().ok().and_then(|p| {
                    table::ratio(level.ours.per_second(), p.per_second())
                });
                json!({
                    "concurrency": level.ours.concurrency,
                    "wasmkube": level.ours.to_json(),
                    "wasmtime_serve": peer,
                    "requests_per_s_ratio": ratio,
                })
            }).collect::<Vec<_>>(),
        })
    }

    fn to_table(&self) -> String {
        let mut out = String::new();
        self.header.write(&mut out);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "http-hello, GET {} ({} s counted after {} s warm-up per row; keep-alive HTTP/1.1, one connection per worker)",
            self.path, self.duration, self.warmup
        );
        let _ = writeln!(
            out,
            "  {:<30} {:>5} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8}",
            "server", "conns", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "ours/peer"
        );
        for level in &self.levels {
            let ours = &level.ours;
            let ratio = level
                .peer
                .as_ref()
                .ok()
                .and_then(|p| table::ratio(ours.per_second(), p.per_second()));
            let row = |out: &mut String, who: &str, r: &LoadResult, ratio: String| {
                let _ = writeln!(
                    out,
                    "  {:<30} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>8}",
                    who,
                    r.concurrency,
                    r.per_second(),
                    r.latency.p50_ms,
                    r.latency.p99_ms,
                    r.latency.max_ms,
                    r.errors,
                    ratio
                );
            };
            row(
                &mut out,
                &format!("wasmkube pod {}", self.ours_addr),
                ours,
                table::show_ratio(ratio),
            );
            match &level.peer {
                Ok(peer) => row(&mut out, "wasmtime serve", peer, String::new()),
                Err(why) => {
                    let _ = writeln!(
                        out,
                        "  {:<30} {:>5} {why}",
                        "wasmtime serve", ours.concurrency
                    );
                }
            }
        }
        out
    }
}
