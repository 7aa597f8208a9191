//! A private containerd for a test: Debian's `containerd` (with `runc` and the reference CNI
//! plugins of `containernetworking-plugins`) started inside a host of a [`NetnsLab`](super::NetnsLab), with its
//! own `config.toml`, root, state directory and sockets in a temporary directory. The
//! machine's own containerd is never used or started.
//!
//! [`Containerd::start(host, cni_conf_dir)`](Containerd::start) writes the config (version 2):
//! the CRI plugin's `sandbox_image` is the offline [`PAUSE_IMAGE`], CNI plugins from
//! `/usr/lib/cni` with their configuration read from `cni_conf_dir` (where the agent writes
//! its conflist), runc with cgroupfs (`SystemdCgroup = false`, cgroup v1 works here), the
//! runc state under the test's directory, pod network namespaces mounted under the state
//! directory (not `/var/run/netns`), registry hosts from [`Containerd::registry_config_dir`],
//! the `overlayfs` snapshotter when an overlay mount works in the temporary directory, else
//! `native`. It runs as `nsenter --net=/var/run/netns/HOST containerd --config ...` — not `ip
//! netns exec`, which remounts /sys and hides the cgroup mounts (runc then fails with "no
//! cgroup mount found") — so containers and sandboxes live in the host's network namespace and
//! their private addresses never leave the machine.
//!
//! Start-up waits, by polling, until `ctr version` answers and `ctr plugins ls` shows the CRI
//! plugin `ok`. [`Containerd::endpoint`] is what `--container-runtime-endpoint` takes;
//! [`Containerd::ctr`] runs `ctr` against it (namespace `k8s.io`, the one CRI uses);
//! [`Containerd::import_test_images`] imports the busybox and pause images
//! ([`super::linux_images`]). [`Containerd::kill9`] kills the daemon with SIGKILL (its
//! shims and containers live on, as with a real crash) and [`Containerd::restart`] starts it
//! again with the same root, state and socket. The daemon's output goes to `containerd.log`
//! in the directory; its tail is in start-up errors and printed when a test panics. Dropping
//! the handle deletes its tasks, kills the daemon and the shims it started, unmounts what it
//! left mounted and removes the directory.
//!
//! Missing `containerd`, `runc`, the CNI plugins or busybox-static fail the test naming the
//! command that installs them (tests/run does). Only [`CRI_OPT_OUT_VAR`] (or the lab's own
//! opt-out) skips such tests ([`cri_tests_opted_out`]); tests/run sets neither.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::POLL_INTERVAL;
use super::containerd_host::{
    CNI_BIN_DIR, config_toml, delete_containers_of, delete_tasks, overlay_mount_works,
    registry_config_dir, socket_path, unmount_under, wait_gone,
};
use super::linux_images::{PAUSE_IMAGE, check_busybox, test_images};
use super::netns::{LabHost, OPT_OUT_VAR as NETNS_OPT_OUT_VAR, lab_tests_opted_out};
use super::registry::which;

/// The environment variable that skips the tests needing containerd (set it to `1` on
/// machines that cannot run it); tests/run never sets it.
pub(crate) const CRI_OPT_OUT_VAR: &str = "WASMKUBE_E2E_SKIP_CRI";
/// The containerd namespace the CRI plugin keeps pods, containers and images in.
pub(crate) const K8S_NAMESPACE: &str = "k8s.io";
/// The CNI plugins a node's conflist uses (bridge + host-local + loopback + portmap).
const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];
/// How long containerd may take to answer with its CRI plugin loaded. Generous: a 2-core
/// machine may be compiling at the same time.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `ctr` command may take (an import, a `run --rm` of a short command).
const CTR_DEADLINE: Duration = Duration::from_secs(120);
/// The command that installs what this module needs.
const INSTALL: &str = "apt-get install containerd runc containernetworking-plugins busybox-static";

/// Whether the tests that need containerd are to be skipped ([`CRI_OPT_OUT_VAR`] or the
/// network-namespace lab's opt-out is set); says so on stderr. A test calls it first.
pub(crate) fn cri_tests_opted_out(test: &str) -> bool {
    if lab_tests_opted_out(test) {
        return true;
    }
    let opted_out = std::env::var_os(CRI_OPT_OUT_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    if opted_out {
        eprintln!("{test}: skipped because {CRI_OPT_OUT_VAR} is set (it needs containerd)");
    }
    opted_out
}

/// A private containerd running in a lab host; see the module docs.
pub(crate) struct Containerd {
    host: LabHost,
    dir: tempfile::TempDir,
    cni_conf_dir: PathBuf,
    snapshotter: &'static str,
    child: Option<Child>,
}

impl Containerd {
    /// Writes a private config and starts containerd in `host`, its CRI plugin reading CNI
    /// configuration from `cni_conf_dir`; returns once the CRI plugin is loaded. Fails naming
    /// the install command when containerd, runc, the CNI plugins or busybox-static are
    /// missing.
    pub(crate) async fn start(host: &LabHost, cni_conf_dir: &Path) -> Result<Containerd> {
        check_prerequisites()?;
        let dir = tempfile::Builder::new()
            .prefix("wk-containerd-")
            .tempdir()
            .context("creating containerd's directory")?;
        std::fs::create_dir_all(cni_conf_dir)
            .with_context(|| format!("creating {}", cni_conf_dir.display()))?;
        let snapshotter = if overlay_mount_works(dir.path()) {
            "overlayfs"
        } else {
            "native"
        };
        let mut containerd = Containerd {
            host: host.clone(),
            dir,
            cni_conf_dir: cni_conf_dir.to_owned(),
            snapshotter,
            child: None,
        };
        std::fs::create_dir_all(containerd.registry_config_dir())?;
        std::fs::write(containerd.config_path(), containerd.config())
            .context("writing containerd's config.toml")?;
        containerd.spawn().await?;
        Ok(containerd)
    }

    /// `unix:///...`: the CRI endpoint, as `--container-runtime-endpoint` takes it.
    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The path of containerd's gRPC socket (`ctr --address`).
    pub(crate) fn socket(&self) -> PathBuf {
        socket_path(self.dir.path())
    }

    /// The lab host containerd runs in.
    #[allow(dead_code)]
    pub(crate) fn host(&self) -> &LabHost {
        &self.host
    }

    /// The directory the CRI plugin reads CNI configuration from.
    #[allow(dead_code)]
    pub(crate) fn cni_conf_dir(&self) -> &Path {
        &self.cni_conf_dir
    }

    /// The CRI plugin's registry hosts directory (`config_path`): a test that pulls from a
    /// registry writes `HOST:PORT/hosts.toml` here.
    pub(crate) fn registry_config_dir(&self) -> PathBuf {
        registry_config_dir(self.dir.path())
    }

    /// `overlayfs`, or `native` where overlay mounts fail.
    pub(crate) fn snapshotter(&self) -> &str {
        self.snapshotter
    }

    /// containerd's stdout and stderr.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The last `lines` lines of containerd's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(self.log_path()) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no containerd log: {e})"),
        }
    }

    /// The daemon's process id, while it runs.
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `ctr --address SOCKET args...` inside the lab host, in namespace `k8s.io` and with this
    /// containerd's snapshotter unless `args` say otherwise; stdout and stderr piped.
    pub(crate) fn ctr_command(&self, args: &[&str]) -> Command {
        let socket = self.socket();
        let mut full: Vec<&std::ffi::OsStr> = vec!["--address".as_ref(), socket.as_os_str()];
        full.extend(args.iter().map(std::ffi::OsStr::new));
        let mut cmd = self.host.command("ctr", full);
        cmd.env("CONTAINERD_NAMESPACE", K8S_NAMESPACE)
            .env("CONTAINERD_SNAPSHOTTER", self.snapshotter);
        cmd
    }

    /// Runs `ctr args...` (see [`Containerd::ctr_command`]) to completion, whatever its exit
    /// status.
    pub(crate) async fn ctr(&self, args: &[&str]) -> Result<Output> {
        let child = self.ctr_command(args).spawn().context("spawning ctr")?;
        tokio::time::timeout(CTR_DEADLINE, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("ctr {args:?} did not finish within {CTR_DEADLINE:?}"))?
            .with_context(|| format!("waiting for ctr {args:?}"))
    }

    /// Runs `ctr args...`, requires success, returns stdout. The error has ctr's output and
    /// the tail of containerd's log.
    pub(crate) async fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr(args).await?;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed with {}; stderr:\n{}\nstdout:\n{}\ncontainerd log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                self.log_tail(30)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports [`super::BUSYBOX_IMAGE`] and [`PAUSE_IMAGE`] into namespace `k8s.io`, unpacked
    /// for this containerd's snapshotter: pods can then start without any registry.
    pub(crate) async fn import_test_images(&self) -> Result<()> {
        let archive = test_images()?.archive().to_string_lossy().into_owned();
        self.ctr_ok(&["images", "import", &archive])
            .await
            .context("importing the test images")?;
        Ok(())
    }

    /// Kills the daemon with SIGKILL and waits until it is gone. Its shims, and the
    /// containers they hold, keep running, as after a real crash.
    pub(crate) async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("killing containerd")?;
            child
                .wait()
                .await
                .context("waiting for containerd to die")?;
        }
        Ok(())
    }

    /// Starts the daemon again (after [`Containerd::kill9`]) with the same config, root,
    /// state and socket; returns once the CRI plugin is loaded.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        self.kill9().await?;
        self.spawn().await
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// config.toml (version 2); see the module docs.
    fn config(&self) -> String {
        config_toml(
            self.dir.path(),
            &self.cni_conf_dir,
            self.snapshotter,
            PAUSE_IMAGE,
        )
    }

    /// Starts the daemon and waits until its CRI plugin is loaded.
    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening containerd.log")?;
        let config = self.config_path();
        let mut cmd = self.host.command(
            "containerd",
            [std::ffi::OsStr::new("--config"), config.as_os_str()],
        );
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().context("spawning containerd")?;
        self.child = Some(child);
        let until = Instant::now() + READY_DEADLINE;
        loop {
            let last = match self.ready().await {
                Ok(true) => return Ok(()),
                Ok(false) => String::from("ctr version does not answer yet"),
                Err(e) => format!("{e:#}"),
            };
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("checking on containerd")?,
                None => None,
            };
            if exited.is_some() || Instant::now() >= until {
                let why = match exited {
                    Some(status) => format!("containerd exited with {status}"),
                    None => format!("not ready within {READY_DEADLINE:?} (last: {last})"),
                };
                bail!(
                    "starting containerd in {}: {why}; containerd log tail ({}):\n{}",
                    self.host.netns(),
                    self.log_path().display(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether the daemon answers (false while it does not), with its CRI plugin loaded (an
    /// error when it answers without).
    async fn ready(&self) -> Result<bool> {
        let version = self.ctr(&["version"]).await?;
        if !version.status.success() {
            return Ok(false);
        }
        let plugins = self.ctr(&["plugins", "ls"]).await?;
        let plugins = String::from_utf8_lossy(&plugins.stdout);
        let cri_ok = plugins.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.first() == Some(&"io.containerd.grpc.v1")
                && fields.get(1) == Some(&"cri")
                && fields.last() == Some(&"ok")
        });
        if !cri_ok {
            bail!("the CRI plugin is not loaded: {plugins}");
        }
        Ok(true)
    }

    /// Deletes every task (killing its processes) while the daemon answers, then kills the
    /// daemon and whatever shims of it are left, and unmounts what is mounted under the
    /// directory. Synchronous, bounded by `timeout`: Drop may run outside a runtime.
    fn clean_up(&mut self) {
        let socket = self.socket();
        let alive = self
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        if alive {
            delete_tasks(&socket);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if let Some(pid) = child.id() {
                wait_gone(pid);
            }
        }
        delete_containers_of(&socket, &self.dir.path().join("runc"));
        unmount_under(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- containerd log tail ({}) ----\n{}\n---- end of containerd log ----",
                self.log_path().display(),
                self.log_tail(60)
            );
        }
        self.clean_up();
    }
}

/// Fails, naming the install command, unless containerd, its runc shim, ctr, runc, the CNI
/// plugins and busybox-static are there.
fn check_prerequisites() -> Result<()> {
    let mut missing = Vec::new();
    for (command, package) in [
        ("containerd", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("nsenter", "util-linux"),
    ] {
        if which(command).is_none() {
            missing.push(format!("`{command}` (Debian package {package})"));
        }
    }
    for plugin in CNI_PLUGINS {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            missing.push(format!(
                "the CNI plugin {CNI_BIN_DIR}/{plugin} (Debian package \
                 containernetworking-plugins)"
            ));
        }
    }
    if let Err(e) = check_busybox() {
        missing.push(format!("{e:#}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "this test runs containers through a private containerd and needs {}: run tests/run, \
         which installs them, or `{INSTALL}`; set {CRI_OPT_OUT_VAR}=1 (or {NETNS_OPT_OUT_VAR}=1) \
         to skip such tests on this machine",
        missing.join(", ")
    )
}
