//! A lab of several hosts on one machine, made of Linux network namespaces, so that tests can
//! send traffic to node, pod and service addresses (private-range ones) without any packet
//! leaving the machine.
//!
//! [`NetnsLab::new(n)`](NetnsLab::new) makes a private "switch" namespace holding a Linux
//! bridge and `n` host namespaces, each joined to the bridge by a veth pair (`eth0` in the
//! host) and given `10.77.0.<i+1>/24` ([`LAB_SUBNET`]; clear of the cluster's 10.42/16 pod and
//! 10.43/16 service CIDRs). Each host has `lo` up, `net.ipv4.ip_forward=1` (for NodePort and
//! host-gw routes) and NO default route: an address the host has no route for is
//! unreachable, never sent out. Every lab has its own switch, so parallel labs may all use the
//! same subnet; the namespace names (`wkl<pid>x<n>s`, `wkl<pid>x<n>h<i>`) are unique per test
//! process and lab, and the namespaces of test processes that died are swept by the next lab.
//!
//! Processes run in a host with `nsenter --net=/var/run/netns/NAME` ([`LabHost::command`]),
//! not `ip netns exec`, which remounts /sys and hides the cgroup mounts; `nsenter` execs the
//! program, so killing the child kills it. [`LabHost::run_blocking`] runs a closure on a thread
//! that entered the host's namespace (sockets it opens live there), and [`NamespaceForward`]
//! relays a loopback port of the test's own namespace to one inside a host (the test process
//! reaches an apiserver in host 0 through it).
//!
//! The lab needs root, `ip` (iproute2) and `nsenter` (util-linux); without them
//! [`NetnsLab::new`] fails saying what is missing. Tests using it may be skipped only when
//! [`OPT_OUT_VAR`] is set ([`lab_tests_opted_out`]); tests/run never sets it. Dropping the lab
//! deletes its namespaces (processes still inside keep theirs alive until they die).

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::Command;

/// The lab's subnet: host `i` is `10.77.0.<i+1>`.
pub(crate) const LAB_SUBNET: &str = "10.77.0.0/24";
/// The environment variable that skips the tests needing a lab (set it to `1` on machines
/// without root or iproute2); tests/run never sets it.
pub(crate) const OPT_OUT_VAR: &str = "WASMKUBE_E2E_SKIP_NETNS";
/// Where `ip netns add` puts the namespaces' bind mounts.
const NETNS_DIR: &str = "/var/run/netns";
/// How long one `ip` or `nsenter` command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// The prefix of every lab namespace's name.
const NAME_PREFIX: &str = "wkl";

/// Labs made by this test process.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Whether the tests that need a lab are to be skipped ([`OPT_OUT_VAR`] is set); says so on
/// stderr. A test calls it first: `if lab_tests_opted_out("my_test") { return Ok(()); }`.
pub(crate) fn lab_tests_opted_out(test: &str) -> bool {
    let opted_out = std::env::var_os(OPT_OUT_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    if opted_out {
        eprintln!("{test}: skipped because {OPT_OUT_VAR} is set (it needs network namespaces)");
    }
    opted_out
}

/// One host of a [`NetnsLab`]: a network namespace with an address on the lab's switch.
#[derive(Debug, Clone)]
pub(crate) struct LabHost {
    netns: String,
    ip: Ipv4Addr,
}

impl LabHost {
    /// The host's address on the lab's switch (`10.77.0.<i+1>`).
    pub(crate) fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The name of the host's network namespace.
    pub(crate) fn netns(&self) -> &str {
        &self.netns
    }

    /// The namespace's bind mount, `/var/run/netns/NAME`.
    pub(crate) fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// `program args...` to run inside this host (`nsenter --net=... -- program args...`),
    /// with stdin closed, stdout and stderr piped and `kill_on_drop`.
    pub(crate) fn command<I, S>(&self, program: impl AsRef<std::ffi::OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `program args...` inside this host to completion; returns its output whatever
    /// its exit status.
    pub(crate) async fn run(&self, program: &str, args: &[&str]) -> Result<std::process::Output> {
        let child = self
            .command(program, args)
            .spawn()
            .with_context(|| format!("spawning {program} in {}", self.netns))?;
        tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!(
                    "{program} {args:?} in {} did not finish within {COMMAND_DEADLINE:?}",
                    self.netns
                )
            })?
            .with_context(|| format!("waiting for {program} in {}", self.netns))
    }

    /// Runs `program args...` inside this host, requires success, returns stdout.
    pub(crate) async fn run_ok(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.run(program, args).await?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} in host {} ({}) failed with {}; stderr:\n{}\nstdout:\n{}",
                self.ip,
                self.netns,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a new thread that entered this host's network namespace (every socket it
    /// opens lives there) and returns its result.
    pub(crate) async fn run_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let netns = self.netns_path();
        tokio::task::spawn_blocking(move || {
            // A fresh thread, so that the tokio blocking pool's thread keeps its namespace.
            std::thread::spawn(move || -> Result<T> {
                enter_netns(&netns)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("the thread inside the namespace panicked"))?
        })
        .await
        .context("joining the thread inside the namespace")?
    }
}

/// A lab of hosts (network namespaces) on one bridge; see the module docs.
#[derive(Debug)]
pub(crate) struct NetnsLab {
    switch: String,
    hosts: Vec<LabHost>,
}

impl NetnsLab {
    /// Makes a lab of `n` hosts. Fails, naming what is missing, without root, `ip` or
    /// `nsenter`.
    pub(crate) async fn new(n: usize) -> Result<NetnsLab> {
        check_prerequisites()?;
        sweep_stale_namespaces().await;
        if n == 0 || n > 250 {
            bail!("a lab has 1 to 250 hosts, not {n}");
        }
        let lab_id = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{NAME_PREFIX}{}x{lab_id}", std::process::id());
        let mut lab = NetnsLab {
            switch: format!("{stem}s"),
            hosts: Vec::new(),
        };
        // From here on, dropping `lab` deletes whatever was made.
        ip(&["netns", "add", &lab.switch]).await?;
        let sw = lab.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", &sw, "link", "set", "br0", "up"]).await?;
        ip(&["-n", &sw, "link", "set", "lo", "up"]).await?;
        for i in 0..n {
            let host = LabHost {
                netns: format!("{stem}h{i}"),
                ip: Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).unwrap_or(u8::MAX)),
            };
            ip(&["netns", "add", &host.netns]).await?;
            lab.hosts.push(host.clone());
            let port = format!("h{i}");
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ])
            .await?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]).await?;
            let h = host.netns.as_str();
            ip(&["-n", h, "link", "set", "lo", "up"]).await?;
            let address = format!("{}/24", host.ip);
            ip(&["-n", h, "addr", "add", &address, "dev", "eth0"]).await?;
            ip(&["-n", h, "link", "set", "eth0", "up"]).await?;
            host.run_ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])
                .await?;
        }
        Ok(lab)
    }

    /// Host `i` (0-based).
    pub(crate) fn host(&self, i: usize) -> Result<&LabHost> {
        self.hosts
            .get(i)
            .ok_or_else(|| anyhow!("the lab has {} hosts, not host {i}", self.hosts.len()))
    }

    /// Every host, in order.
    pub(crate) fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// Every namespace of the lab: the switch's, then the hosts'.
    fn namespaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.switch.as_str()).chain(self.hosts.iter().map(|h| h.netns.as_str()))
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        for name in self.namespaces() {
            // Synchronous: Drop may run outside a runtime, or in one that is shutting down.
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Relays connections to `127.0.0.1:port` of the test's own network namespace to
/// `127.0.0.1:port` inside a host, so that the test process (and kubectl run outside the lab)
/// can reach a server listening there. Stops when dropped.
pub(crate) struct NamespaceForward {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NamespaceForward {
    /// Listens on `127.0.0.1:port` here and relays each connection to `127.0.0.1:port` inside
    /// `host`, from a thread of its own that entered the host's namespace.
    pub(crate) fn start(host: &LabHost, port: u16) -> Result<NamespaceForward> {
        // Bound before the thread enters the host's namespace: the listener stays here.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding the lab forwarder on 127.0.0.1:{port}"))?;
        listener
            .set_nonblocking(true)
            .context("making the forwarder's listener non-blocking")?;
        let netns = host.netns_path();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name(format!("lab-forward-{port}"))
            .spawn(move || {
                let runtime = match enter_netns(&netns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building the forwarder's runtime")
                }) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                runtime.block_on(relay(listener, port, stopped));
            })
            .context("spawning the lab forwarder's thread")?;
        ready_rx
            .recv()
            .context("the lab forwarder's thread died")??;
        Ok(NamespaceForward { stop: Some(stop) })
    }
}

impl Drop for NamespaceForward {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Accepts on `listener` until `stopped`, relaying each connection to `127.0.0.1:port` (in the
/// namespace of the calling thread).
async fn relay(
    listener: std::net::TcpListener,
    port: u16,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((mut outside, _)) = accepted else { continue };
                tokio::spawn(async move {
                    if let Ok(mut inside) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
                    }
                });
            }
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn enter_netns(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns(2) on a valid, open namespace file descriptor changes only the calling
    // thread's network namespace; no memory is shared with the kernel. (rustix's safe
    // wrapper needs its `thread` feature, which would rebuild wasmtime with another rustix.)
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering the network namespace {}", path.display()));
    }
    Ok(())
}

/// Moves the calling thread into the network namespace at `path`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn enter_netns(path: &Path) -> Result<()> {
    let _ = File::open(path);
    bail!("network namespace labs need Linux (glibc)")
}

/// Fails, naming what is missing, unless this process is root and `ip` and `nsenter` exist.
fn check_prerequisites() -> Result<()> {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push(
            "root (network namespaces, veth pairs and bridges need CAP_SYS_ADMIN and \
             CAP_NET_ADMIN; run the tests as root)"
                .to_owned(),
        );
    }
    for (command, package) in [("ip", "iproute2"), ("nsenter", "util-linux")] {
        if !on_path(command) {
            missing.push(format!("`{command}` (Debian package {package})"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "this test runs its cluster in network namespaces and needs {}; \
         set {OPT_OUT_VAR}=1 to skip such tests on this machine",
        missing.join(" and ")
    )
}

/// Whether `command` is an executable file in a directory of `PATH`.
fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(command))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs `ip args...`, requires success.
async fn ip(args: &[&str]) -> Result<()> {
    let child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning `ip` (iproute2)")?;
    let out = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("ip {args:?} did not finish within {COMMAND_DEADLINE:?}"))?
        .with_context(|| format!("waiting for ip {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ip {} failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes the lab namespaces of test processes that no longer run (a test killed before its
/// labs were dropped).
async fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", &name]).await;
        }
    }
}
