//! The cluster a benchmark talks to: a `wasmkube server` child process that the bench
//! starts and stops itself, or a running cluster named by a kubeconfig.
//!
//! Every benchmark client is a real API client: a `kube::Client` built from the
//! kubeconfig, over HTTPS with the admin client certificate, one connection each.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long a freshly started server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the benchmark sends its requests.
pub(crate) struct Target {
    /// The client configuration every benchmark client is built from.
    config: kube::Config,
    /// The server process the bench started, if it started one.
    server: Option<ServerProcess>,
}

impl Target {
    /// Starts `wasmkube server` (of the binary `wasmkube`) on a free loopback port with a data
    /// dir under `data_dir` (a fresh temporary directory when `None`), `extra_args` appended
    /// to its command line (e.g. `--max-pods 2000` for the embedded agent), and waits until
    /// it is ready.
    pub(crate) async fn start_server_with(
        wasmkube: &Path,
        data_dir: Option<PathBuf>,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let server = ServerProcess::start(wasmkube, data_dir, extra_args).await?;
        let config = match load_config(&server.kubeconfig_path()).await {
            Ok(config) => config,
            Err(e) => {
                server.stop().await;
                return Err(e);
            }
        };
        Ok(Self {
            config,
            server: Some(server),
        })
    }

    /// Targets the running cluster of the kubeconfig at `path` (its current context).
    pub(crate) async fn from_kubeconfig(path: &Path) -> anyhow::Result<Self> {
        let config = load_config(path).await?;
        Ok(Self {
            config,
            server: None,
        })
    }

    /// A new client with its own connection pool, as a separate process would have.
    pub(crate) fn new_client(&self) -> anyhow::Result<kube::Client> {
        kube::Client::try_from(self.config.clone())
            .context("cannot build a kube client from the kubeconfig")
    }

    /// The API server's URL, for the report.
    pub(crate) fn url(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// A line describing the target, for the report.
    pub(crate) fn describe(&self) -> String {
        match &self.server {
            Some(server) => format!(
                "wasmkube server started by the bench (pid {}, data dir {})",
                server.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                server.data_dir.display()
            ),
            None => "an already running cluster (--kubeconfig)".to_owned(),
        }
    }

    /// Whether the bench started the server itself (and may therefore leave its data behind).
    pub(crate) fn owns_server(&self) -> bool {
        self.server.is_some()
    }

    /// The memory of the server the bench started, from `/proc`; `None` for `--kubeconfig`
    /// or where `/proc` cannot tell.
    pub(crate) fn server_memory(&self) -> Option<ServerMemory> {
        let pid = self.server.as_ref()?.pid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        ServerMemory::parse(&status)
    }

    /// The data directory of the server the bench started.
    pub(crate) fn server_data_dir(&self) -> Option<&Path> {
        Some(&self.server.as_ref()?.data_dir)
    }

    /// The CPU time (user + system, every thread) the server the bench started has used so
    /// far, in seconds, from `/proc/<pid>/stat` (10 ms ticks); `None` where it cannot tell.
    pub(crate) fn server_cpu_seconds(&self) -> Option<f64> {
        let pid = self.server_pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        cpu_seconds(&stat)
    }

    /// The process id of the server the bench started.
    pub(crate) fn server_pid(&self) -> Option<u32> {
        self.server.as_ref()?.pid
    }

    /// The size in bytes of the `wasmkube` binary of the server the bench started.
    pub(crate) fn server_binary_bytes(&self) -> Option<u64> {
        let server = self.server.as_ref()?;
        std::fs::metadata(&server.binary).ok().map(|m| m.len())
    }

    /// Imports an OCI image layout (directory or archive) into the image store of the
    /// server's embedded agent, with `wasmkube image import --data-dir DIR PATH` (the binary
    /// that runs the server). Only for a server the bench started.
    pub(crate) async fn import_image(&self, layout: &Path) -> anyhow::Result<()> {
        let Some(server) = &self.server else {
            bail!("images can only be imported into a server the bench started");
        };
        let (exe, data_dir) = (&server.binary, &server.data_dir);
        let output = tokio::process::Command::new(exe)
            .arg("image")
            .arg("import")
            .arg("--data-dir")
            .arg(data_dir)
            .arg(layout)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {} image import", exe.display()))?;
        if !output.status.success() {
            bail!(
                "wasmkube image import {} failed ({}): {}",
                layout.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// A numeric field of the server's `/proc/<pid>/status`, e.g. `Threads:` or `VmRSS:`
    /// (in KiB for the memory fields).
    pub(crate) fn server_status_field(&self, name: &str) -> Option<u64> {
        let pid = self.server_pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        proc_field_kib(&status, name)
    }

    /// The proportional set size of the server the bench started, in KiB, from
    /// `/proc/<pid>/smaps_rollup` (`None` where it cannot be read).
    pub(crate) fn server_pss_kib(&self) -> Option<u64> {
        let pid = self.server_pid()?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        proc_field_kib(&rollup, "Pss:")
    }

    /// Stops the server the bench started (SIGTERM, then wait); nothing for `--kubeconfig`.
    pub(crate) async fn shutdown(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
    }
}

/// Resident memory of the server process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServerMemory {
    /// Resident set size now (`VmRSS`).
    pub(crate) rss_kib: u64,
    /// Peak resident set size since the start (`VmHWM`).
    pub(crate) peak_rss_kib: u64,
}

impl ServerMemory {
    /// Reads `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`.
    fn parse(status: &str) -> Option<Self> {
        Some(Self {
            rss_kib: proc_field_kib(status, "VmRSS:")?,
            peak_rss_kib: proc_field_kib(status, "VmHWM:")?,
        })
    }
}

/// `utime + stime` of the text of a `/proc/<pid>/stat`, in seconds (Linux counts them in
/// USER_HZ = 100 ticks a second).
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The value of a `Name:   1234 kB` line of a `/proc` file, in KiB.
fn proc_field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads a kubeconfig file into a client configuration.
async fn load_config(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {} is not usable", path.display()))
}

/// A `wasmkube server` child process with its data directory.
struct ServerProcess {
    /// The `wasmkube` binary it runs.
    binary: PathBuf,
    child: tokio::process::Child,
    pid: Option<u32>,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Keeps a temporary data directory alive until the server has stopped.
    _temp_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Spawns the server and waits for its kubeconfig and a 200 from `/readyz`.
    async fn start(
        wasmkube: &Path,
        data_dir: Option<PathBuf>,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        if !wasmkube.is_file() {
            bail!(
                "the wasmkube binary {} does not exist: build it with `cargo build --release \
                 --bin wasmkube` (scripts/bench does), or pass --wasmkube PATH",
                wasmkube.display()
            );
        }
        let (data_dir, temp_dir) = match data_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("wasmkube-bench-")
                    .tempdir()
                    .context("cannot create a temporary data directory")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let port = free_loopback_port()?;
        let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let exe = wasmkube.to_path_buf();
        let log_path = data_dir.join("bench-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create server log {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot duplicate the server log handle")?;
        let child = tokio::process::Command::new(&exe)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--bind")
            .arg(bind.to_string())
            .args(agent_port_args(extra_args)?)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} server", exe.display()))?;
        let pid = child.id();
        let mut server = Self {
            binary: exe,
            child,
            pid,
            data_dir,
            log_path,
            _temp_dir: temp_dir,
        };
        if let Err(e) = server.wait_ready().await {
            let log_tail = server.log_tail();
            server.stop().await;
            return Err(e.context(format!("server log (last lines):\n{log_tail}")));
        }
        Ok(server)
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Polls until the kubeconfig exists and `/readyz` answers 200, the process dies or
    /// [`READY_TIMEOUT`] passes.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::from("kubeconfig not written yet");
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("cannot poll the server process")?
            {
                bail!("wasmkube server exited before it was ready ({status})");
            }
            if self.kubeconfig_path().exists() {
                match readyz(&self.kubeconfig_path()).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!("wasmkube server was not ready within {READY_TIMEOUT:?}: {last_error}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the server's log, to explain a failed start.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait up to [`STOP_TIMEOUT`], then SIGKILL.
    async fn stop(mut self) {
        if let Some(pid) = self
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
            && self.child.try_wait().ok().flatten().is_none()
            && let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        {
            eprintln!("warning: cannot send SIGTERM to the server (pid {pid:?}): {e}");
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                eprintln!(
                    "warning: wasmkube server exited with {status}; log: {}",
                    self.log_path.display()
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("warning: cannot wait for the server: {e}"),
            Err(_) => {
                eprintln!(
                    "warning: wasmkube server did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it"
                );
                let _ = self.child.kill().await;
            }
        }
    }
}

/// `--agent-port PORT` with a free port, unless `extra_args` choose one: the embedded agent's
/// default port (10250) may be taken by another cluster on this machine, or still be in
/// TIME_WAIT after the previous benchmark's server.
fn agent_port_args(extra_args: &[String]) -> anyhow::Result<Vec<String>> {
    if extra_args.iter().any(|a| a.starts_with("--agent-port")) {
        return Ok(Vec::new());
    }
    Ok(vec![
        "--agent-port".to_owned(),
        free_loopback_port()?.to_string(),
    ])
}

/// One GET of `/readyz` with the kubeconfig's CA (the endpoint needs no credentials).
async fn readyz(kubeconfig: &Path) -> anyhow::Result<()> {
    let client = kube::Client::try_from(load_config(kubeconfig).await?)?;
    let request = http::Request::get("/readyz").body(Vec::new())?;
    client.request_text(request).await.context("GET /readyz")?;
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit (the server the bench
/// starts inherits it): every benchmark client and watch holds a socket of its own.
pub(crate) fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            ..limit
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("warning: cannot raise the open files limit: {e}");
        }
    }
}

/// The `wasmkube` binary the benchmarks start: `explicit` (`--wasmkube`, `WASMKUBE_BIN`) if
/// given, else `wasmkube` in this binary's directory (`cargo build --release` puts both in
/// `target/release/`), else `wasmkube` on `PATH`. Its existence is checked when a server is
/// started, so `--kubeconfig` runs need none.
pub(crate) fn wasmkube_binary(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(path) = explicit {
        return path;
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("wasmkube")));
    if let Some(sibling) = sibling.filter(|p| p.is_file()) {
        return sibling;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("wasmkube"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("wasmkube"))
}

/// A loopback port nothing listens on right now (the OS picks it).
pub(crate) fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot bind a loopback port to find a free one")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_loopback_port_can_be_bound_again() {
        let port = free_loopback_port().expect("a free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .expect("the port is free after the probe is dropped");
    }

    #[test]
    fn server_memory_is_read_from_proc_status_lines() {
        let status = "Name:\twasmkube\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads:\t4\n";
        let memory = ServerMemory::parse(status).expect("parses");
        assert_eq!(
            memory,
            ServerMemory {
                rss_kib: 40960,
                peak_rss_kib: 51200
            }
        );
        assert_eq!(ServerMemory::parse("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        let stat = "4713 (wasm kube) S 1 4713 4713 0 -1 4194560 1234 0 0 0 250 115 0 0 20 0 14 0";
        assert_eq!(cpu_seconds(stat), Some(3.65));
        assert_eq!(cpu_seconds("4713 (x) S 1"), None);
    }

    #[test]
    fn the_agent_gets_a_free_port_unless_one_is_given() {
        let args = agent_port_args(&[]).expect("a port");
        assert_eq!(args[0], "--agent-port");
        assert!(args[1].parse::<u16>().expect("a number") > 0);
        assert!(
            agent_port_args(&["--agent-port=1234".to_owned()])
                .expect("no port needed")
                .is_empty()
        );
    }

    #[test]
    fn pss_is_read_from_smaps_rollup_lines() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:   9000 kB\nPss:   8123 kB\n";
        assert_eq!(proc_field_kib(rollup, "Pss:"), Some(8123));
        assert_eq!(proc_field_kib(rollup, "Swap:"), None);
    }

    #[test]
    fn an_explicit_wasmkube_binary_wins() {
        let path = PathBuf::from("/opt/wasmkube/bin/wasmkube");
        assert_eq!(wasmkube_binary(Some(path.clone())), path);
    }

    #[tokio::test]
    async fn a_missing_wasmkube_binary_names_the_build_command() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Err(e) = Target::start_server_with(&dir.path().join("wasmkube"), None, &[]).await
        else {
            panic!("a missing binary must fail");
        };
        assert!(
            format!("{e:#}").contains("cargo build --release --bin wasmkube"),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Err(e) = Target::from_kubeconfig(&dir.path().join("nope.yaml")).await else {
            panic!("a missing kubeconfig must fail");
        };
        assert!(format!("{e:#}").contains("cannot read kubeconfig"), "{e:#}");
    }
}
