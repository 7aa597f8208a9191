//! `wasmkube-bench containers`: how fast a Linux container starts on containerd, the peer
//! figure of issue 12's "startup p50/p99 of a container pod against `ctr run` of the same
//! image on the same containerd".
//!
//! The bench makes a network namespace (`wkbench-ctr-<pid>`, loopback only) and starts a
//! private containerd in it ([`BenchContainerd`]: `nsenter --net=...`, its own config, root,
//! state and sockets in a temporary directory; never the machine's containerd), the very
//! config the end-to-end tests use (`tests/e2e/harness/containerd_host.rs`, included here),
//! and imports the offline busybox and pause images the tests build from busybox-static
//! (`tests/e2e/harness/linux_images.rs`, included too). Then [`ctr_run_startup`] runs
//! `ctr run --rm busybox ID true` `--runs` times, one after the other, each timed from the
//! spawn of `ctr` to its exit (container and snapshot made, task created and started, exit
//! awaited, everything deleted), after one unmeasured warm-up run; and [`ctr_start`] as many
//! `ctr run -d busybox ID sleep 3600`, timed until `ctr` returns with the task started (the
//! closer peer of a pod's create -> Running), each deleted untimed before the next.
//!
//! The wasmkube side: a `wasmkube server` whose embedded agent runs container pods on the
//! same containerd (`--container-runtime-endpoint`, the agent's CNI configuration list on a
//! private range inside the bench's namespace): a busybox `sleep` pod, create -> Running,
//! `--runs` times one at a time after a warm-up; then the pod churn, `--runs` pods created
//! ten at a time -> all Running -> deleted -> all gone, of the `counter` wasm sample and of
//! the busybox container, pods/s each (issue 12's "wasm >= 10x containers").

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::process::{Child, Command};

use std::collections::HashSet;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;

use super::podwatch::Milestone;
use super::report::{LatencySummary, latency_histogram, record};
use super::samples::{Samples, pod_named};
use super::table::{LatencyRow, latency_table};
use super::workload::{self, Workload, capacity_args};

#[path = "../../tests/e2e/harness/containerd_host.rs"]
#[allow(dead_code)]
mod containerd_host;
#[path = "../../tests/e2e/harness/linux_images.rs"]
#[allow(dead_code)]
mod linux_images;

pub(crate) use linux_images::{BUSYBOX_IMAGE, PAUSE_IMAGE};

/// The containerd namespace the CRI plugin (and so the agent) uses.
const NAMESPACE: &str = "k8s.io";
/// How long containerd may take to answer with its CRI plugin loaded.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `ctr` command may take.
const CTR_DEADLINE: Duration = Duration::from_secs(120);
/// The command that installs what the bench needs.
const INSTALL: &str = "apt-get install containerd runc containernetworking-plugins busybox-static";

/// Benchmark container startup on a private containerd: `ctr run` of busybox.
#[derive(clap::Args, Debug)]
pub(crate) struct ContainersCommand {
    /// Sequential `ctr run --rm` of busybox `true` to time.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// The repository's samples directory, built with `samples/build --oci` (the wasm side
    /// of the churn runs the `counter` sample) [default: ./samples, else the one next to
    /// this binary's target directory].
    #[arg(long, value_name = "DIR")]
    samples: Option<PathBuf>,
}

/// The wasm sample of the churn: a command module that keeps running.
const WASM_SAMPLE: &str = "counter";
/// How long one phase of the pod measurements may take.
const POD_PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// Pods created at once in the churn.
const CHURN_CONCURRENCY: usize = 10;

impl ContainersCommand {
    /// Starts the private containerd, times the runs and prints the figures.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let samples = Samples::locate(self.samples.as_deref())?;
        samples.require_built(WASM_SAMPLE)?;
        let cni = tempfile::tempdir().context("creating a CNI configuration directory")?;
        // The agent's own CNI configuration list, on a private range inside the bench's
        // network namespace; host-local's reservations in the bench's directory.
        let network = wasmkube_agent::network::cni::CniNetwork::upper_half(
            std::net::Ipv4Addr::new(10, 88, 0, 0),
            16,
            cni.path().join("ipam"),
        );
        wasmkube_agent::network::cni::write_conflist(
            cni.path(),
            wasmkube_agent::network::cni::CONFLIST_FILE,
            &network,
        )?;
        let containerd = BenchContainerd::start(cni.path()).await?;
        containerd.import_test_images().await?;
        let versions = containerd.versions().await;
        let load_average = super::report::load_average();
        let ctr_run = ctr_run_startup(&containerd, self.runs).await?;
        let started = ctr_start(&containerd, self.runs).await?;
        let pods = pod_figures(wasmkube, &samples, &containerd, self.runs).await?;
        let rows = [
            LatencyRow::measured(
                format!("`ctr run --rm` {BUSYBOX_IMAGE} true, one at a time"),
                ctr_run,
            ),
            LatencyRow::measured(
                "`ctr run -d` busybox sleep, until started".to_owned(),
                started,
            ),
            LatencyRow::measured(
                "container pod, create -> Running, one at a time (agent -> CRI)".to_owned(),
                pods.container_start,
            ),
        ];
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if self.json {
            let report = json!({
                "benchmark": "containers",
                "version": env!("CARGO_PKG_VERSION"),
                "cpus": cpus,
                "load_average_1m": load_average,
                "containerd": versions,
                "snapshotter": containerd.snapshotter,
                "rows": rows.iter().map(LatencyRow::to_json).collect::<Vec<_>>(),
                "churn": pods.churn.iter().map(Churn::to_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let mut out = String::new();
            out.push_str(&format!(
                "wasmkube-bench containers {}\n",
                env!("CARGO_PKG_VERSION")
            ));
            let load = load_average.map_or_else(String::new, |l| {
                format!(", load average {l:.2} at the start")
            });
            out.push_str(&format!("machine: {cpus} logical CPUs{load}\n"));
            out.push_str(&format!(
                "containerd: {versions}; snapshotter {}; private, in network namespace {}\n",
                containerd.snapshotter, containerd.netns
            ));
            latency_table(&mut out, &rows);
            out.push_str(&format!(
                "\npod churn: {} pods created ({CHURN_CONCURRENCY} at a time) -> all Running -> \
                 deleted (grace 0) -> all gone, on this node\n",
                self.runs
            ));
            out.push_str(
                "| pods | kind | all Running | all gone (total) | pods/s |\n|---|---|---|---|---|\n",
            );
            for c in &pods.churn {
                out.push_str(&format!(
                    "| {} | {} | {:.0} ms | {:.0} ms | {:.1} |\n",
                    c.pods,
                    c.kind,
                    c.running.as_secs_f64() * 1000.0,
                    c.total.as_secs_f64() * 1000.0,
                    c.pods_per_second()
                ));
            }
            if let [wasm, container] = pods.churn.as_slice() {
                out.push_str(&format!(
                    "wasm / container churn: {:.1}x\n",
                    wasm.pods_per_second() / container.pods_per_second().max(f64::MIN_POSITIVE)
                ));
            }
            print!("{out}");
        }
        Ok(())
    }
}

/// The wasmkube side: container pods through the agent's CRI runtime on this containerd,
/// and the churn of wasm and container pods on the same node.
struct PodFigures {
    container_start: LatencySummary,
    churn: Vec<Churn>,
}

/// One churn run.
struct Churn {
    kind: &'static str,
    pods: u64,
    /// From the first create until every pod was Running.
    running: Duration,
    /// From the first create until every pod was gone again.
    total: Duration,
}

impl Churn {
    fn pods_per_second(&self) -> f64 {
        self.pods as f64 / self.total.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "kind": self.kind,
            "pods": self.pods,
            "all_running_ms": self.running.as_secs_f64() * 1000.0,
            "total_ms": self.total.as_secs_f64() * 1000.0,
            "pods_per_second": self.pods_per_second(),
        })
    }
}

/// Starts `wasmkube server` whose embedded agent runs container pods on `containerd`, times
/// `runs` container pods one at a time (after a warm-up), then the churn of `runs` wasm
/// pods and of `runs` container pods.
async fn pod_figures(
    wasmkube: &Path,
    samples: &Samples,
    containerd: &BenchContainerd,
    runs: u64,
) -> anyhow::Result<PodFigures> {
    let pods = usize::try_from(runs).context("--runs is too large")?;
    let mut args = capacity_args(pods * 2);
    args.push(format!(
        "--container-runtime-endpoint={}",
        containerd.endpoint()
    ));
    let mut workload = Workload::start(wasmkube, None, &args, samples, &[WASM_SAMPLE]).await?;
    let figures = measure_pods(&mut workload, samples, runs).await;
    workload.shutdown().await;
    figures
}

async fn measure_pods(
    workload: &mut Workload,
    samples: &Samples,
    runs: u64,
) -> anyhow::Result<PodFigures> {
    let container_template: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"]}]}
    }))?;
    let mut wasm_template = samples.pod(WASM_SAMPLE)?;
    // On a node with a container runtime a pod without a RuntimeClass goes to CRI.
    if let Some(spec) = wasm_template.spec.as_mut() {
        spec.runtime_class_name = Some("wasmtime".to_owned());
    }
    let container = |name: &str| pod_named(&container_template, workload::NAMESPACE, name, |_| {});
    let wasm = |name: &str| pod_named(&wasm_template, workload::NAMESPACE, name, |_| {});

    // The wasm module is compiled once before its churn (the agent caches it).
    let warm = HashSet::from(["wasm-warmup".to_owned()]);
    workload.create(&wasm("wasm-warmup")).await?;
    workload
        .watch
        .wait_all(&warm, Milestone::Running, POD_PHASE_TIMEOUT, |_| {})
        .await?;
    workload.delete_all(&warm, POD_PHASE_TIMEOUT).await?;
    let mut churn = Vec::new();
    let mut container_start = None;
    for (kind, prefix) in [("wasm", "churn-wasm"), ("container (runc)", "churn-ctr")] {
        if prefix == "churn-ctr" {
            // Before the container churn (so that the wasm churn runs on a quiet node): the
            // sandbox image and first snapshot are warmed up by the first pod, not counted.
            container_start = Some(container_pods_one_at_a_time(workload, &container, runs).await?);
        }
        let make = |i: u64| {
            let name = format!("{prefix}-{i}");
            if prefix == "churn-wasm" {
                wasm(&name)
            } else {
                container(&name)
            }
        };
        let manifests: Vec<Pod> = (0..runs).map(make).collect();
        let names: HashSet<String> = manifests
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let api = workload.pods();
        let bar = super::progress_bar(runs, format!("{kind} churn"));
        let start = Instant::now();
        let created: Vec<anyhow::Result<()>> = futures::stream::iter(manifests.iter().map(|pod| {
            let api = api.clone();
            async move { workload::create_pod(&api, pod).await }
        }))
        .buffer_unordered(CHURN_CONCURRENCY)
        .collect()
        .await;
        created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        workload
            .watch
            .wait_all(&names, Milestone::Running, POD_PHASE_TIMEOUT, |e| {
                if e.milestone == Milestone::Running {
                    bar.inc(1);
                }
            })
            .await
            .with_context(|| format!("{kind} churn"))?;
        let running = start.elapsed();
        workload.delete_all(&names, POD_PHASE_TIMEOUT).await?;
        let total = start.elapsed();
        bar.finish_and_clear();
        churn.push(Churn {
            kind,
            pods: runs,
            running,
            total,
        });
    }
    Ok(PodFigures {
        container_start: container_start.context("the container phase ran")?,
        churn,
    })
}

/// `runs` container pods created one after the other, each timed until Running (after one
/// warm-up pod), then all deleted.
async fn container_pods_one_at_a_time(
    workload: &mut Workload,
    container: &impl Fn(&str) -> Pod,
    runs: u64,
) -> anyhow::Result<LatencySummary> {
    let mut histogram = latency_histogram();
    let bar = super::progress_bar(runs, "container pods one at a time".to_owned());
    let mut names = HashSet::new();
    for i in 0..=runs {
        let name = format!("ctr-{i}");
        let start = Instant::now();
        workload.create(&container(&name)).await?;
        workload
            .watch
            .wait_all(
                &HashSet::from([name.clone()]),
                Milestone::Running,
                POD_PHASE_TIMEOUT,
                |_| {},
            )
            .await
            .with_context(|| format!("container pod {name}"))?;
        // The first one (sandbox image, first snapshot) is a warm-up.
        if i > 0 {
            record(&mut histogram, start.elapsed());
            bar.inc(1);
        }
        names.insert(name);
    }
    bar.finish_and_clear();
    workload.delete_all(&names, POD_PHASE_TIMEOUT).await?;
    Ok(LatencySummary::of(&histogram))
}

/// `runs` sequential `ctr run --rm BUSYBOX ID true` on `containerd` (after one warm-up run
/// that is not counted), each from the spawn of `ctr` to its exit.
pub(crate) async fn ctr_run_startup(
    containerd: &BenchContainerd,
    runs: u64,
) -> anyhow::Result<LatencySummary> {
    let mut histogram = latency_histogram();
    let bar = super::progress_bar(runs, "ctr run --rm".to_owned());
    for i in 0..=runs {
        let id = format!("wkbench-{}-{i}", std::process::id());
        let start = Instant::now();
        containerd
            .ctr_ok(&["run", "--rm", BUSYBOX_IMAGE, &id, "true"])
            .await
            .with_context(|| format!("run {i}"))?;
        if i > 0 {
            record(&mut histogram, start.elapsed());
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(LatencySummary::of(&histogram))
}

/// `runs` sequential `ctr run -d BUSYBOX ID sleep 3600` on `containerd` (after one warm-up
/// run), each from the spawn of `ctr` until it returns with the task started; each container
/// is then killed and deleted, untimed.
pub(crate) async fn ctr_start(
    containerd: &BenchContainerd,
    runs: u64,
) -> anyhow::Result<LatencySummary> {
    let mut histogram = latency_histogram();
    let bar = super::progress_bar(runs, "ctr run -d".to_owned());
    for i in 0..=runs {
        let id = format!("wkbench-{}-d{i}", std::process::id());
        let start = Instant::now();
        containerd
            .ctr_ok(&["run", "-d", BUSYBOX_IMAGE, &id, "sleep", "3600"])
            .await
            .with_context(|| format!("run -d {i}"))?;
        let elapsed = start.elapsed();
        containerd
            .ctr_ok(&["tasks", "delete", "--force", &id])
            .await?;
        containerd.ctr_ok(&["containers", "delete", &id]).await?;
        if i > 0 {
            record(&mut histogram, elapsed);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(LatencySummary::of(&histogram))
}

/// A private containerd in a network namespace the bench made; stopped, cleaned up and the
/// namespace deleted when dropped.
pub(crate) struct BenchContainerd {
    netns: String,
    dir: tempfile::TempDir,
    snapshotter: &'static str,
    child: Option<Child>,
}

impl BenchContainerd {
    /// Makes the namespace, writes the config (CNI configuration read from `cni_conf_dir`)
    /// and starts containerd; returns once its CRI plugin is loaded.
    pub(crate) async fn start(cni_conf_dir: &Path) -> anyhow::Result<BenchContainerd> {
        check_prerequisites()?;
        let dir = tempfile::Builder::new()
            .prefix("wkbench-containerd-")
            .tempdir()
            .context("creating containerd's directory")?;
        let snapshotter = if containerd_host::overlay_mount_works(dir.path()) {
            "overlayfs"
        } else {
            "native"
        };
        let netns = format!("wkbench-ctr-{}", std::process::id());
        let mut containerd = BenchContainerd {
            netns,
            dir,
            snapshotter,
            child: None,
        };
        ip(&["netns", "add", &containerd.netns]).await?;
        ip(&["-n", &containerd.netns, "link", "set", "lo", "up"]).await?;
        let config = containerd.dir.path().join("config.toml");
        std::fs::write(
            &config,
            containerd_host::config_toml(
                containerd.dir.path(),
                cni_conf_dir,
                snapshotter,
                PAUSE_IMAGE,
            ),
        )
        .context("writing containerd's config.toml")?;
        let log = std::fs::File::create(containerd.log_path()).context("creating the log")?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", containerd.netns_path().display()))
            .arg("--")
            .arg("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawning containerd")?;
        containerd.child = Some(child);
        containerd.wait_ready().await?;
        Ok(containerd)
    }

    /// `unix:///...`, what the agent's `--container-runtime-endpoint` takes.
    #[allow(dead_code)]
    pub(crate) fn endpoint(&self) -> String {
        format!(
            "unix://{}",
            containerd_host::socket_path(self.dir.path()).display()
        )
    }

    /// `/var/run/netns/NAME` of the namespace containerd runs in (an agent using it runs
    /// there too).
    pub(crate) fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The last lines of containerd's log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `ctr args...` in the namespace against this containerd (namespace `k8s.io`, its
    /// snapshotter); requires success, returns stdout.
    pub(crate) async fn ctr_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg("ctr")
            .arg("--address")
            .arg(containerd_host::socket_path(self.dir.path()))
            .args(args)
            .env("CONTAINERD_NAMESPACE", NAMESPACE)
            .env("CONTAINERD_SNAPSHOTTER", self.snapshotter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning ctr")?;
        let out = tokio::time::timeout(CTR_DEADLINE, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("ctr {args:?} did not finish within {CTR_DEADLINE:?}"))??;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports the busybox and pause images into namespace `k8s.io`.
    pub(crate) async fn import_test_images(&self) -> anyhow::Result<()> {
        let images = linux_images::test_images()?;
        let archive = images.archive().to_string_lossy().into_owned();
        self.ctr_ok(&["images", "import", &archive])
            .await
            .context("importing the busybox and pause images")?;
        Ok(())
    }

    /// containerd's and runc's versions, for the report.
    async fn versions(&self) -> String {
        let containerd = self
            .ctr_ok(&["version"])
            .await
            .ok()
            .and_then(|v| {
                v.lines()
                    .skip_while(|l| !l.starts_with("Server"))
                    .find_map(|l| l.trim().strip_prefix("Version:").map(str::trim))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "?".to_owned());
        let runc = Command::new("runc")
            .arg("--version")
            .output()
            .await
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "runc ?".to_owned());
        format!("containerd {containerd}, {runc}")
    }

    /// Polls until `ctr version` answers and `ctr plugins ls` shows the CRI plugin `ok`.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + READY_DEADLINE;
        loop {
            let last = match self.ctr_ok(&["plugins", "ls"]).await {
                Ok(plugins) => {
                    let cri_ok = plugins.lines().any(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields.first() == Some(&"io.containerd.grpc.v1")
                            && fields.get(1) == Some(&"cri")
                            && fields.last() == Some(&"ok")
                    });
                    if cri_ok {
                        return Ok(());
                    }
                    format!("the CRI plugin is not loaded: {plugins}")
                }
                Err(e) => format!("{e:#}"),
            };
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if exited.is_some() || Instant::now() >= until {
                bail!(
                    "containerd did not start ({}; last: {last}); its log:\n{}",
                    exited.map_or_else(
                        || format!("not ready within {READY_DEADLINE:?}"),
                        |s| format!("exited with {s}")
                    ),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BenchContainerd {
    fn drop(&mut self) {
        let socket = containerd_host::socket_path(self.dir.path());
        let alive = self
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        if alive {
            containerd_host::delete_tasks(&socket);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if let Some(pid) = child.id() {
                containerd_host::wait_gone(pid);
            }
        }
        containerd_host::delete_containers_of(&socket, &self.dir.path().join("runc"));
        containerd_host::unmount_under(self.dir.path());
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Fails, naming the install command, without root, containerd, ctr, runc, nsenter or a
/// static busybox.
fn check_prerequisites() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the containers bench needs root (network namespaces, containerd, runc)");
    }
    let on_path = |command: &str| {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(command).is_file())
        })
    };
    let missing: Vec<&str> = [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "nsenter",
    ]
    .into_iter()
    .filter(|c| !on_path(c))
    .collect();
    if !missing.is_empty() {
        bail!(
            "the containers bench needs {}: `{INSTALL}`",
            missing.join(", ")
        );
    }
    linux_images::check_busybox()?;
    Ok(())
}

/// Runs `ip args...`, requires success.
async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed with {}: {} (the bench needs root)",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
