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
    /// Starts `wasmkube server` (this same binary) on a free loopback port with a data dir
    /// under `data_dir` (a fresh temporary directory when `None`) and waits until it is ready.
    pub(crate) async fn start_server(data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let server = ServerProcess::start(data_dir).await?;
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
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some(Self {
            rss_kib: field("VmRSS:")?,
            peak_rss_kib: field("VmHWM:")?,
        })
    }
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
    child: tokio::process::Child,
    pid: Option<u32>,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Keeps a temporary data directory alive until the server has stopped.
    _temp_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Spawns the server and waits for its kubeconfig and a 200 from `/readyz`.
    async fn start(data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
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
        let exe = std::env::current_exe().context("cannot find the wasmkube binary")?;
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
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} server", exe.display()))?;
        let pid = child.id();
        let mut server = Self {
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

/// A loopback port nothing listens on right now (the OS picks it).
fn free_loopback_port() -> anyhow::Result<u16> {
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

    #[tokio::test]
    async fn a_missing_kubeconfig_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Err(e) = Target::from_kubeconfig(&dir.path().join("nope.yaml")).await else {
            panic!("a missing kubeconfig must fail");
        };
        assert!(format!("{e:#}").contains("cannot read kubeconfig"), "{e:#}");
    }
}
