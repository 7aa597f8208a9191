//! `wasmkube-bench images`: what OCI distribution costs a pod (issue 11). Pod startup cold
//! (the image pulled from a registry and compiled) versus warm (both cached on the node), for
//! a small and a large module; `wasmkube image pull` throughput next to `skopeo copy` of the
//! same artifact from the same registry; and 50 pods of one new image created at once, with
//! how many times the registry served its layer and how many compilations the agent ran.
//!
//! The registry is Debian's `docker-registry` (the CNCF distribution registry) on a loopback
//! port with a temporary storage directory; the modules are made by the bench
//! ([`module::sleeper`]): each run's image is new (a nonce), so a cold start is cold.

mod module;
mod registry;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use self::module::Shape;
use self::registry::Registry;
use super::podwatch::Milestone;
use super::progress_bar;
use super::report::{self, LatencySummary};
use super::table::{self, LatencyRow, RunHeader};
use super::workload::{self, Workload, WorkloadArgs};

/// How long one pod (or the 50) may take to run before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
const MIB: usize = 1024 * 1024;

/// What `wasmkube-bench images --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
What is measured (one run; needs docker-registry and skopeo: apt-get install docker-registry
skopeo):

1. Pod startup, create -> Running as a pod watch sees it, for a small module (--small-kib of
   code) and a large one (--large-code-mib of code plus --large-data-mib of data). Each run
   builds a new image of that size (a nonce makes its digest new), pushes it to the registry
   with `wasmkube image push`, then: a cold pod (the node pulls the image and compiles it) and,
   once it is gone, a warm pod of the same image (image and compiled code on the node).
   imagePullPolicy IfNotPresent. --small-runs and --large-runs runs.
2. Pull throughput: the large artifact pulled --pull-rounds times into an empty store with
   `wasmkube image pull` and copied with `skopeo copy docker://... oci:DIR` (an independent
   client, same registry, same artifact), alternating; MB/s of the whole process each, the
   median of each, and the ratio ours / skopeo.
3. --pods pods of one new (large) image created at once on the one node: the time until all
   are Running, the GETs of its layer the registry served (from its access log) and the
   compilations the agent ran (its compiled_total log field).

The modules sleep in poll_oneoff once started, so Running pods use no CPU.

Examples:
  wasmkube-bench images
  wasmkube-bench images --small-runs 5 --large-runs 2 --pods 20 --json";

/// Pod startup cold vs warm, pull throughput next to skopeo, 50 pods of one new image.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct ImagesCommand {
    /// Runs (one cold and one warm pod each) with the small module.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    small_runs: u64,
    /// Runs with the large module.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    large_runs: u64,
    /// Code in the small module, KiB.
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    small_kib: u64,
    /// Code in the large module, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=256))]
    large_code_mib: u64,
    /// Data (one active segment) in the large module, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=1024))]
    large_data_mib: u64,
    /// Pulls of the large artifact by each client.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pull_rounds: u64,
    /// Pods of one new image created at once.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pods: u64,
    #[command(flatten)]
    common: WorkloadArgs,
}

/// One size of module.
struct Size {
    label: &'static str,
    shape: Shape,
    runs: usize,
}

/// The figures of one run.
struct ImagesReport {
    header: RunHeader,
    startup: Vec<StartupRows>,
    pull: PullFigures,
    burst: BurstFigures,
}

/// Cold and warm startup of one size.
struct StartupRows {
    label: String,
    bytes: usize,
    cold: LatencySummary,
    warm: LatencySummary,
}

/// Pull throughput, ours and skopeo's.
struct PullFigures {
    bytes: usize,
    ours_mb_s: Vec<f64>,
    skopeo_mb_s: Vec<f64>,
}

/// The burst of pods of one new image.
struct BurstFigures {
    pods: usize,
    bytes: usize,
    all_running: Duration,
    latency: LatencySummary,
    layer_gets: usize,
    compilations: Option<u64>,
}

impl ImagesCommand {
    /// Runs the benchmark and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let skopeo = registry::which("skopeo")
            .context("skopeo is not installed: `apt-get install skopeo`")?;
        let registry = Registry::start().await?;
        let work = tempfile::Builder::new()
            .prefix("wasmkube-bench-images-")
            .tempdir()
            .context("cannot create a work directory")?;
        let pods = usize::try_from(self.pods).context("--pods is too large")?;
        let server_args = self.common.server_args(pods);
        let mut header = RunHeader::now("images", &server_args);
        header.peer = Some(
            run(&skopeo, &["--version"])
                .await
                .map_or_else(|_| "skopeo".to_owned(), |v| v.trim().to_owned()),
        );
        let samples = self.common.samples(&[])?;
        let mut workload = Workload::start(
            wasmkube,
            self.common.data_dir.clone(),
            &server_args,
            &samples,
            &[],
        )
        .await?;
        let builder = Builder {
            wasmkube: wasmkube.to_path_buf(),
            store: work.path().join("builder"),
            modules: work.path().join("modules"),
            registry: registry.addr().to_owned(),
        };
        let outcome = self
            .measure(&mut workload, &builder, &registry, &skopeo, work.path())
            .await;
        workload.shutdown().await;
        let (startup, pull, burst) = outcome?;
        let report = ImagesReport {
            header,
            startup,
            pull,
            burst,
        };
        if self.common.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_table());
        }
        Ok(())
    }

    fn sizes(&self) -> [Size; 2] {
        let mib = |n: u64| usize::try_from(n).unwrap_or(usize::MAX / MIB) * MIB;
        [
            Size {
                label: "small",
                shape: Shape {
                    code_bytes: usize::try_from(self.small_kib).unwrap_or(64) * 1024,
                    data_bytes: 0,
                },
                runs: usize::try_from(self.small_runs).unwrap_or(1),
            },
            Size {
                label: "large",
                shape: Shape {
                    code_bytes: mib(self.large_code_mib),
                    data_bytes: mib(self.large_data_mib),
                },
                runs: usize::try_from(self.large_runs).unwrap_or(1),
            },
        ]
    }

    async fn measure(
        &self,
        workload: &mut Workload,
        builder: &Builder,
        registry: &Registry,
        skopeo: &Path,
        work: &Path,
    ) -> anyhow::Result<(Vec<StartupRows>, PullFigures, BurstFigures)> {
        let mut startup = Vec::new();
        let mut large = None;
        for size in self.sizes() {
            let total = u64::try_from(size.runs * 2).unwrap_or(u64::MAX);
            let bar = progress_bar(total, format!("{} cold/warm", size.label));
            let (mut cold, mut warm) = (report::latency_histogram(), report::latency_histogram());
            let mut bytes = 0;
            for run in 0..size.runs {
                let image = builder
                    .push(&format!("{}-{run}", size.label), size.shape)
                    .await?;
                bytes = image.bytes;
                for (hist, kind) in [(&mut cold, "cold"), (&mut warm, "warm")] {
                    let name = format!("{kind}-{}-{run}", size.label);
                    let took = one_pod(workload, &pod(&name, &image.reference)).await?;
                    report::record(hist, took);
                    bar.inc(1);
                }
                if size.label == "large" && large.is_none() {
                    large = Some(image);
                }
            }
            bar.finish_and_clear();
            startup.push(StartupRows {
                label: format!(
                    "{} ({} code, {} data)",
                    size.label,
                    human(size.shape.code_bytes),
                    human(size.shape.data_bytes)
                ),
                bytes,
                cold: LatencySummary::of(&cold),
                warm: LatencySummary::of(&warm),
            });
        }
        let large = large.context("no large image was pushed")?;
        let pull = self.pull(builder, &large, skopeo, work).await?;
        let burst = self.burst(workload, builder, registry).await?;
        Ok((startup, pull, burst))
    }

    /// `wasmkube image pull` and `skopeo copy` of `image`, alternating, each into an empty
    /// directory.
    async fn pull(
        &self,
        builder: &Builder,
        image: &Pushed,
        skopeo: &Path,
        work: &Path,
    ) -> anyhow::Result<PullFigures> {
        let rounds = usize::try_from(self.pull_rounds).unwrap_or(1);
        let bar = progress_bar(self.pull_rounds * 2, "pulls".to_owned());
        let mb = image.bytes as f64 / 1e6;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let store = work.join(format!("pull-ours-{round}"));
            let started = Instant::now();
            run(
                &builder.wasmkube,
                &[
                    "image",
                    "pull",
                    &image.reference,
                    "--data-dir",
                    &store.display().to_string(),
                ],
            )
            .await?;
            ours.push(mb / started.elapsed().as_secs_f64());
            bar.inc(1);
            let layout = work.join(format!("pull-skopeo-{round}"));
            let started = Instant::now();
            run(
                skopeo,
                &[
                    "copy",
                    "--src-tls-verify=false",
                    &format!("docker://{}", image.reference),
                    &format!("oci:{}:bench", layout.display()),
                ],
            )
            .await?;
            theirs.push(mb / started.elapsed().as_secs_f64());
            bar.inc(1);
            for dir in [store, layout] {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        bar.finish_and_clear();
        Ok(PullFigures {
            bytes: image.bytes,
            ours_mb_s: ours,
            skopeo_mb_s: theirs,
        })
    }

    /// `--pods` pods of one new large image at once.
    async fn burst(
        &self,
        workload: &mut Workload,
        builder: &Builder,
        registry: &Registry,
    ) -> anyhow::Result<BurstFigures> {
        let [_, large] = self.sizes();
        let image = builder.push("burst", large.shape).await?;
        let log = workload
            .target
            .server_data_dir()
            .map(|d| d.join("bench-server.log"));
        let compiled_before = log.as_deref().and_then(compiled_total);
        let pods = usize::try_from(self.pods).unwrap_or(1);
        let names: Vec<String> = (0..pods).map(|i| format!("burst-{i}")).collect();
        let bar = progress_bar(self.pods, "pods of one new image".to_owned());
        let api = workload.pods();
        let start = Instant::now();
        let mut created = std::collections::HashMap::new();
        for name in &names {
            created.insert(name.clone(), Instant::now());
            workload::create_pod(&api, &pod(name, &image.reference)).await?;
        }
        let all: HashSet<String> = names.iter().cloned().collect();
        let running = workload
            .watch
            .wait_all(&all, Milestone::Running, PHASE_TIMEOUT, |event| {
                if event.milestone == Milestone::Running {
                    bar.inc(1);
                }
            })
            .await?;
        bar.finish_and_clear();
        let mut latency = report::latency_histogram();
        let mut last = start;
        for event in &running {
            if let Some(at) = created.get(&event.name) {
                report::record(&mut latency, event.at.saturating_duration_since(*at));
            }
            last = last.max(event.at);
        }
        let compiled_after = log.as_deref().and_then(compiled_total);
        workload.delete_all(&all, PHASE_TIMEOUT).await?;
        Ok(BurstFigures {
            pods,
            bytes: image.bytes,
            all_running: last - start,
            latency: LatencySummary::of(&latency),
            layer_gets: registry.blob_gets(&image.layer)?,
            compilations: compiled_after.map(|after| after - compiled_before.unwrap_or(0)),
        })
    }
}

/// A pod running `image` (pulled if absent) in the bench's namespace.
fn pod(name: &str, image: &str) -> Pod {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": workload::NAMESPACE },
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "app",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {
                    "requests": { "cpu": "10m", "memory": "16Mi" },
                    "limits": { "memory": "256Mi" },
                },
            }],
        },
    });
    serde_json::from_value(value).unwrap_or_default()
}

/// Creates `pod`, waits until the watch sees it Running, deletes it and waits until it is
/// gone; returns create -> Running.
async fn one_pod(workload: &mut Workload, pod: &Pod) -> anyhow::Result<Duration> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let names = HashSet::from([name]);
    let created = Instant::now();
    workload.create(pod).await?;
    let running = workload
        .watch
        .wait_all(&names, Milestone::Running, PHASE_TIMEOUT, |_| {})
        .await?;
    let at = running.first().map_or_else(Instant::now, |e| e.at);
    workload.delete_all(&names, PHASE_TIMEOUT).await?;
    Ok(at.saturating_duration_since(created))
}

/// Builds and pushes images with the `wasmkube image` CLI, from a store of its own.
struct Builder {
    wasmkube: PathBuf,
    store: PathBuf,
    modules: PathBuf,
    registry: String,
}

/// An image in the registry.
struct Pushed {
    reference: String,
    /// The wasm layer's digest.
    layer: String,
    /// The layer's size.
    bytes: usize,
}

impl Builder {
    /// Makes a module of `shape` named `name` (its nonce), builds and pushes
    /// `REGISTRY/bench/NAME:v1`.
    async fn push(&self, name: &str, shape: Shape) -> anyhow::Result<Pushed> {
        std::fs::create_dir_all(&self.modules)?;
        let wasm = module::sleeper(shape, name);
        let file = self.modules.join(format!("{name}.wasm"));
        std::fs::write(&file, &wasm).with_context(|| format!("writing {}", file.display()))?;
        let reference = format!("{}/bench/{name}:v1", self.registry);
        let store = self.store.display().to_string();
        run(
            &self.wasmkube,
            &[
                "image",
                "build",
                &file.display().to_string(),
                "-t",
                &reference,
                "--data-dir",
                &store,
            ],
        )
        .await?;
        run(
            &self.wasmkube,
            &["image", "push", &reference, "--data-dir", &store],
        )
        .await?;
        let _ = std::fs::remove_file(&file);
        Ok(Pushed {
            reference,
            layer: format!("sha256:{}", sha256_hex(&wasm)),
            bytes: wasm.len(),
        })
    }
}

/// Runs `program args`, which must succeed; its stdout.
async fn run(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `compiled_total=N` of the agent's last "wasm program loaded" log line (its colours,
/// if the log has them, stripped).
fn compiled_total(log: &Path) -> Option<u64> {
    let text = strip_ansi(&std::fs::read_to_string(log).ok()?);
    text.lines().rev().find_map(|line| {
        let rest = line.split("compiled_total=").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `12.0 MiB`, `64 KiB`.
fn human(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

impl ImagesReport {
    fn pull_ratio(&self) -> Option<f64> {
        table::ratio(median(&self.pull.ours_mb_s), median(&self.pull.skopeo_mb_s))
    }

    fn to_json(&self) -> Value {
        json!({
            "run": self.header.to_json(),
            "startup": self.startup.iter().map(|s| json!({
                "module": s.label,
                "bytes": s.bytes,
                "cold": s.cold.to_json(),
                "warm": s.warm.to_json(),
            })).collect::<Vec<_>>(),
            "pull": {
                "bytes": self.pull.bytes,
                "wasmkube_mb_s": self.pull.ours_mb_s,
                "skopeo_mb_s": self.pull.skopeo_mb_s,
                "median_ratio": self.pull_ratio(),
            },
            "burst": {
                "pods": self.burst.pods,
                "bytes": self.burst.bytes,
                "all_running_ms": self.burst.all_running.as_secs_f64() * 1000.0,
                "create_to_running": self.burst.latency.to_json(),
                "layer_gets": self.burst.layer_gets,
                "compilations": self.burst.compilations,
            },
        })
    }

    fn to_table(&self) -> String {
        let mut out = String::new();
        self.header.write(&mut out);
        let _ = writeln!(
            out,
            "\npod startup, create -> Running (cold: pulled and compiled; warm: both cached)"
        );
        let rows: Vec<LatencyRow> = self
            .startup
            .iter()
            .flat_map(|s| {
                [
                    LatencyRow::measured(format!("{}, {} B: cold", s.label, s.bytes), s.cold),
                    LatencyRow::measured(format!("{}: warm", s.label), s.warm),
                ]
            })
            .collect();
        table::latency_table(&mut out, &rows);
        let _ = writeln!(
            out,
            "\npull of the large artifact ({} B), MB/s per process, {} rounds each",
            self.pull.bytes,
            self.pull.ours_mb_s.len()
        );
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "  wasmkube image pull: median {:.1} MB/s ({})",
            median(&self.pull.ours_mb_s),
            list(&self.pull.ours_mb_s)
        );
        let _ = writeln!(
            out,
            "  skopeo copy:         median {:.1} MB/s ({})",
            median(&self.pull.skopeo_mb_s),
            list(&self.pull.skopeo_mb_s)
        );
        let _ = writeln!(
            out,
            "  ratio wasmkube / skopeo: {}",
            self.pull_ratio()
                .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
        );
        let b = &self.burst;
        let _ = writeln!(
            out,
            "\n{} pods of one new image ({} B) created at once: all Running after {:.0} ms \
             (create -> Running p50 {:.0} ms, p99 {:.0} ms)",
            b.pods,
            b.bytes,
            b.all_running.as_secs_f64() * 1000.0,
            b.latency.p50_ms,
            b.latency.p99_ms
        );
        let _ = writeln!(
            out,
            "  layer GETs served by the registry: {}; compilations by the agent: {}",
            b.layer_gets,
            b.compilations.map_or_else(
                || "not measured (no compiled_total in the server log)".to_owned(),
                |n| n.to_string()
            )
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_compiled_total_of_the_log_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "x INFO wasm program loaded compiled_total=3 disk_hits_total=0\n\
             y INFO other line\n\
             z INFO wasm program loaded compiled_total=12 disk_hits_total=4\n",
        )
        .unwrap();
        assert_eq!(compiled_total(&log), Some(12));
        std::fs::write(
            &log,
            "z \u{1b}[32m INFO\u{1b}[0m wasm program loaded \u{1b}[3mcompiled_total\u{1b}[0m\u{1b}[2m=\u{1b}[0m7\n",
        )
        .unwrap();
        assert_eq!(compiled_total(&log), Some(7), "a coloured log");
        std::fs::write(&log, "nothing here\n").unwrap();
        assert_eq!(compiled_total(&log), None);
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }
}
