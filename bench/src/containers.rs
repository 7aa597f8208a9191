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
//! The wasmkube side (a container pod, create -> Running, on the same containerd through the
//! agent's CRI runtime) joins this report once the agent runs container pods; until then its
//! row says it was not measured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::process::{Child, Command};

use super::report::{LatencySummary, latency_histogram, record};
use super::table::{LatencyRow, latency_table};

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
}

impl ContainersCommand {
    /// Starts the private containerd, times the runs and prints the figures.
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        let cni = tempfile::tempdir().context("creating a CNI configuration directory")?;
        let containerd = BenchContainerd::start(cni.path()).await?;
        containerd.import_test_images().await?;
        let versions = containerd.versions().await;
        let load_average = super::report::load_average();
        let ctr_run = ctr_run_startup(&containerd, self.runs).await?;
        let started = ctr_start(&containerd, self.runs).await?;
        let rows = [
            LatencyRow::measured(
                format!("`ctr run --rm` {BUSYBOX_IMAGE} true, one at a time"),
                ctr_run,
            ),
            LatencyRow::measured(
                "`ctr run -d` busybox sleep, until started".to_owned(),
                started,
            ),
            LatencyRow::missing(
                "container pod, create -> Running",
                "not measured yet: needs the agent's CRI runtime (issue 12)",
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
            print!("{out}");
        }
        Ok(())
    }
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
