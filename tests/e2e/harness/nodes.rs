//! The nodes of a test cluster: the server's embedded node agent (`wasmkube server` without
//! `--disable-agent`) and separate `wasmkube agent` processes that join with the server's
//! token, each with its own temporary data directory, free agent port and node index (so their
//! pod IPs, `127.<index>.x.y`, never collide with another cluster's in the same test run).
//!
//! Agents are numbered from 0 in the order the builder added them; `kill9_agent(i)` and
//! `restart_agent(i)` act on one of them, the embedded agent lives and dies with the server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{LabHost, POLL_INTERVAL, TestCluster, free_port, poll_until};

/// How long nodes may take to register and report Ready after their process started.
const NODE_READY_DEADLINE: Duration = Duration::from_secs(90);
/// How long a restarted agent may take to listen on its port again.
const AGENT_LISTEN_DEADLINE: Duration = Duration::from_secs(60);
/// How long `wasmkube image import` and `wasmkube server token create` may take.
const CLI_DEADLINE: Duration = Duration::from_secs(120);

/// Node indexes handed out in this test process, starting at an offset derived from the
/// process id so that two test processes on one machine rarely share one.
static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

/// A node index (2..=253) no other node of this test process has.
fn next_node_index() -> u8 {
    let n = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
    let base = std::process::id() % 252;
    // 2 + (0..252) = 2..=253: 1 is every server's default, 254 stays free.
    u8::try_from(2 + (base + n) % 252).unwrap_or(2)
}

/// How a node registers: its name, labels, taints and allocatable resources.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeSpec {
    name: Option<String>,
    labels: Vec<String>,
    taints: Vec<String>,
    cpu: Option<String>,
    memory: Option<String>,
    max_pods: Option<u32>,
    allowed_host_paths: Vec<String>,
    node_ip: Option<std::net::Ipv4Addr>,
    extra: Vec<String>,
}

impl NodeSpec {
    /// A node called `name`.
    pub(crate) fn named(name: &str) -> NodeSpec {
        NodeSpec {
            name: Some(name.to_owned()),
            ..NodeSpec::default()
        }
    }

    /// An extra node label `key=value` (`--node-label`).
    pub(crate) fn label(mut self, key: &str, value: &str) -> NodeSpec {
        self.labels.push(format!("{key}={value}"));
        self
    }

    /// A taint the node registers with, `key[=value]:Effect` (`--node-taint`).
    pub(crate) fn taint(mut self, taint: &str) -> NodeSpec {
        self.taints.push(taint.to_owned());
        self
    }

    /// Allocatable CPU (`--cpu`), e.g. `1` or `500m`.
    pub(crate) fn cpu(mut self, quantity: &str) -> NodeSpec {
        self.cpu = Some(quantity.to_owned());
        self
    }

    /// Allocatable memory (`--memory`), e.g. `256Mi`.
    pub(crate) fn memory(mut self, quantity: &str) -> NodeSpec {
        self.memory = Some(quantity.to_owned());
        self
    }

    /// How many pods the node accepts (`--max-pods`).
    #[allow(dead_code)]
    pub(crate) fn max_pods(mut self, n: u32) -> NodeSpec {
        self.max_pods = Some(n);
        self
    }

    /// A host directory hostPath volumes may mount (`--allowed-host-path PATH[:ro]`).
    #[allow(dead_code)]
    pub(crate) fn allowed_host_path(mut self, path: &str) -> NodeSpec {
        self.allowed_host_paths.push(path.to_owned());
        self
    }

    /// The node's address (`--node-ip`); the lab sets it to the node's host's address.
    pub(crate) fn node_ip(mut self, ip: std::net::Ipv4Addr) -> NodeSpec {
        self.node_ip = Some(ip);
        self
    }

    /// One more flag (and its value) for the node's agent, e.g.
    /// `.arg("--wasm-compile-timeout").arg("1")`.
    #[allow(dead_code)]
    pub(crate) fn arg(mut self, arg: &str) -> NodeSpec {
        self.extra.push(arg.to_owned());
        self
    }

    /// The node flags shared by `server` and `agent`.
    fn args(&self, name: &str, port: u16, index: u8) -> Vec<String> {
        let mut args = vec![
            "--node-name".to_owned(),
            name.to_owned(),
            "--agent-port".to_owned(),
            port.to_string(),
            "--node-index".to_owned(),
            index.to_string(),
            // As kind does: a test node never reports DiskPressure because the machine's
            // disk, shared with everything else on it, is nearly full.
            "--eviction-hard".to_owned(),
            TEST_EVICTION_HARD.to_owned(),
        ];
        for label in &self.labels {
            args.extend(["--node-label".to_owned(), label.clone()]);
        }
        for taint in &self.taints {
            args.extend(["--node-taint".to_owned(), taint.clone()]);
        }
        for (flag, value) in [("--cpu", &self.cpu), ("--memory", &self.memory)] {
            if let Some(v) = value {
                args.extend([flag.to_owned(), v.clone()]);
            }
        }
        if let Some(n) = self.max_pods {
            args.extend(["--max-pods".to_owned(), n.to_string()]);
        }
        if let Some(ip) = self.node_ip {
            args.extend(["--node-ip".to_owned(), ip.to_string()]);
        }
        for path in &self.allowed_host_paths {
            args.extend(["--allowed-host-path".to_owned(), path.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// The test nodes' `--eviction-hard`: the kubelet's memory threshold, no disk threshold.
pub(crate) const TEST_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<0%";

/// The server's embedded node agent.
#[derive(Debug)]
pub(super) struct EmbeddedNode {
    name: String,
    port: u16,
    index: u8,
    spec: NodeSpec,
}

impl EmbeddedNode {
    /// Picks a port and an index for the embedded agent described by `spec`.
    pub(super) fn new(spec: NodeSpec) -> Result<EmbeddedNode> {
        Ok(EmbeddedNode {
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| "server-node".to_owned()),
            port: free_port()?,
            index: next_node_index(),
            spec,
        })
    }

    /// The `wasmkube server` flags of this node.
    pub(super) fn server_args(&self) -> Vec<String> {
        self.spec.args(&self.name, self.port, self.index)
    }
}

/// A `wasmkube agent` process joined to the cluster.
pub(super) struct AgentProcess {
    name: String,
    args: Vec<String>,
    data_dir: tempfile::TempDir,
    port: u16,
    /// The lab host the agent runs in, if the cluster runs in a lab.
    host: Option<LabHost>,
    child: Option<Child>,
}

impl AgentProcess {
    /// Starts agent number `ordinal` (1-based; its default name is `node-<ordinal>`).
    pub(super) fn spawn(
        spec: NodeSpec,
        ordinal: usize,
        server_url: &str,
        token: &str,
        host: Option<LabHost>,
    ) -> Result<AgentProcess> {
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("node-{ordinal}"));
        let data_dir = tempfile::Builder::new()
            .prefix("wasmkube-e2e-agent-")
            .tempdir()
            .context("creating an agent data directory")?;
        let port = free_port()?;
        let mut args = vec![
            "agent".to_owned(),
            "--server".to_owned(),
            server_url.to_owned(),
            "--token".to_owned(),
            token.to_owned(),
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
        ];
        args.extend(spec.args(&name, port, next_node_index()));
        let mut agent = AgentProcess {
            name,
            args,
            data_dir,
            port,
            host,
            child: None,
        };
        agent.start()?;
        Ok(agent)
    }

    fn start(&mut self) -> Result<()> {
        let child = super::spawn_wasmkube_in(&self.args, &self.log_path(), self.host.as_ref())
            .with_context(|| format!("spawning `wasmkube agent` for node {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The node's name.
    pub(super) fn node_name(&self) -> &str {
        &self.name
    }

    /// The agent's data directory (its image store is under `agent/images`).
    pub(super) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Where the agent's stdout and stderr go.
    pub(super) fn log_path(&self) -> PathBuf {
        self.data_dir().join("agent.log")
    }

    /// The last `lines` lines of the agent log.
    pub(super) fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(self.log_path()) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no agent log: {e})"),
        }
    }
}

impl TestCluster {
    /// The apiserver's URL, as the test process reaches it.
    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The apiserver's URL as agents reach it: host 0's lab address in a lab, else
    /// [`TestCluster::url`].
    pub(crate) fn agents_server_url(&self) -> String {
        match self.lab.as_ref().and_then(|lab| lab.host(0).ok()) {
            Some(host) => format!("https://{}:{}", host.ip(), self.port),
            None => self.url(),
        }
    }

    /// A new join token, as `wasmkube server token create --data-dir` prints it.
    pub(crate) async fn join_token(&self) -> Result<String> {
        let out = run_cli(&[
            "server",
            "token",
            "create",
            "--data-dir",
            &self.data_dir().display().to_string(),
        ])
        .await?;
        let token = out.trim().to_owned();
        if token.is_empty() {
            bail!("`wasmkube server token create` printed nothing");
        }
        Ok(token)
    }

    /// Runs `wasmkube server token ARGS... --data-dir <the server's>`; returns stdout.
    #[allow(dead_code)]
    pub(crate) async fn token_cli(&self, args: &[&str]) -> Result<String> {
        let data_dir = self.data_dir().display().to_string();
        let mut all = vec!["server", "token"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", &data_dir]);
        run_cli(&all).await
    }

    /// The names of every node: the embedded agent's first, then the agents' in order.
    pub(crate) fn node_names(&self) -> Vec<String> {
        self.embedded
            .iter()
            .map(|e| e.name.clone())
            .chain(self.agents.iter().map(|a| a.name.clone()))
            .collect()
    }

    /// The node name of agent `i` (0-based, in the order the builder added them).
    pub(crate) fn agent_node_name(&self, i: usize) -> Result<String> {
        Ok(self.agent(i)?.name.clone())
    }

    /// The data directory of every node's agent (the server's for the embedded agent).
    pub(crate) fn node_data_dirs(&self) -> Vec<PathBuf> {
        self.embedded
            .iter()
            .map(|_| self.data_dir().to_path_buf())
            .chain(self.agents.iter().map(|a| a.data_dir().to_path_buf()))
            .collect()
    }

    /// The last `lines` lines of agent `i`'s log.
    pub(crate) fn agent_log_tail(&self, i: usize, lines: usize) -> String {
        self.agent(i)
            .map(|a| a.log_tail(lines))
            .unwrap_or_else(|e| format!("{e:#}"))
    }

    /// The tails of the server's and every agent's log, for failure messages.
    pub(crate) fn logs_tail(&self, lines: usize) -> String {
        let mut text = format!("---- server log ----\n{}", self.log_tail(lines));
        for (i, agent) in self.agents.iter().enumerate() {
            text.push_str(&format!(
                "\n---- agent {i} ({}) log ----\n{}",
                agent.name,
                agent.log_tail(lines)
            ));
        }
        text
    }

    fn agent(&self, i: usize) -> Result<&AgentProcess> {
        self.agents
            .get(i)
            .ok_or_else(|| anyhow!("the cluster has no agent {i}"))
    }

    fn agent_mut(&mut self, i: usize) -> Result<&mut AgentProcess> {
        self.agents
            .get_mut(i)
            .ok_or_else(|| anyhow!("the cluster has no agent {i}"))
    }

    /// Whether agent `i`'s process is alive (it was started and has not exited).
    pub(crate) fn agent_is_running(&mut self, i: usize) -> Result<bool> {
        let agent = self.agent_mut(i)?;
        match agent.child.as_mut() {
            Some(child) => Ok(child.try_wait().context("polling the agent")?.is_none()),
            None => Ok(false),
        }
    }

    /// Kills agent `i` with SIGKILL (its wasm instances die with it) and reaps it.
    pub(crate) async fn kill9_agent(&mut self, i: usize) -> Result<()> {
        let agent = self.agent_mut(i)?;
        let mut child = agent
            .child
            .take()
            .ok_or_else(|| anyhow!("agent {i} is not running"))?;
        child.start_kill().context("sending SIGKILL to the agent")?;
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .map_err(|_| anyhow!("agent {i} did not die after SIGKILL"))?
            .context("reaping the killed agent")?;
        Ok(())
    }

    /// Starts agent `i` again with the same data directory and flags, and waits until it
    /// listens on its port again.
    pub(crate) async fn restart_agent(&mut self, i: usize) -> Result<()> {
        let agent = self.agent_mut(i)?;
        if agent.child.is_some() {
            bail!("restart_agent({i}) needs a stopped agent: call kill9_agent({i}) first");
        }
        agent.start()?;
        let port = agent.port;
        let host = agent.host.clone();
        let deadline = Instant::now() + AGENT_LISTEN_DEADLINE;
        loop {
            if !self.agent_is_running(i)? {
                bail!(
                    "agent {i} exited during its restart; log tail:\n{}",
                    self.agent_log_tail(i, 40)
                );
            }
            let listening = match &host {
                Some(host) => {
                    let addr = std::net::SocketAddr::from((host.ip(), port));
                    host.run_blocking(move || {
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                    })
                    .await?
                }
                None => tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok(),
            };
            if listening {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "agent {i} did not listen on port {port} within {AGENT_LISTEN_DEADLINE:?}; \
                     log tail:\n{}",
                    self.agent_log_tail(i, 40)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Joins one more `wasmkube agent` node to the running cluster (index `agents().len()`)
    /// with every image imported so far, and waits until every node is Ready; returns the
    /// new agent's index.
    #[allow(dead_code)]
    pub(crate) async fn join_agent(&mut self, spec: NodeSpec) -> Result<usize> {
        let token = self.join_token().await?;
        let i = self.agents.len();
        if self.lab.is_some() {
            bail!(
                "join_agent: a lab's hosts are made when the cluster starts; ask for the agent then"
            );
        }
        let agent = AgentProcess::spawn(spec, i + 1, &self.url(), &token, None)?;
        let layouts = self.imported.lock().map(|l| l.clone()).unwrap_or_default();
        import_into(agent.data_dir(), &layouts).await?;
        self.agents.push(agent);
        self.wait_nodes_ready().await?;
        Ok(i)
    }

    /// Waits until every node of the cluster is registered with `Ready=True`.
    pub(super) async fn wait_nodes_ready(&mut self) -> Result<()> {
        let names = self.node_names();
        if names.is_empty() {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(self.client().await?);
        let result = poll_until("every node Ready", NODE_READY_DEADLINE, || {
            let nodes = nodes.clone();
            let names = names.clone();
            async move {
                for name in &names {
                    let Some(node) = nodes.get_opt(name).await? else {
                        return Ok(None);
                    };
                    if !node_is_ready(&node) {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        })
        .await;
        if let Err(e) = result {
            bail!("{e:#}\n{}", self.logs_tail(30));
        }
        Ok(())
    }

    /// Imports the OCI image layout at `layout` into every node's image store, with
    /// `wasmkube image import --data-dir <the node's data dir>` (it works while agents run).
    pub(crate) async fn import_image(&self, layout: &Path) -> Result<()> {
        self.import_layouts(&[layout.to_path_buf()]).await
    }

    /// Imports several OCI image layouts into every node's image store; nodes joined later
    /// with [`TestCluster::join_agent`] get them too.
    pub(crate) async fn import_layouts(&self, layouts: &[PathBuf]) -> Result<()> {
        for dir in self.node_data_dirs() {
            import_into(&dir, layouts).await?;
        }
        if let Ok(mut imported) = self.imported.lock() {
            imported.extend(layouts.iter().cloned());
        }
        Ok(())
    }
}

/// Runs `wasmkube image import --data-dir dir layouts...`.
async fn import_into(dir: &Path, layouts: &[PathBuf]) -> Result<()> {
    if layouts.is_empty() {
        return Ok(());
    }
    let mut args = vec![
        "image".to_owned(),
        "import".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    args.extend(layouts.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cli(&args).await?;
    Ok(())
}

/// Whether `node` reports the condition `Ready=True`.
pub(crate) fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Runs `wasmkube args...` to completion, requires success, returns stdout.
pub(super) async fn run_cli(args: &[&str]) -> Result<String> {
    let child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(args)
        .env_remove("WASMKUBE_DATA_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning wasmkube {args:?}"))?;
    let out = tokio::time::timeout(CLI_DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("wasmkube {args:?} did not finish within {CLI_DEADLINE:?}"))?
        .with_context(|| format!("waiting for wasmkube {args:?}"))?;
    if !out.status.success() {
        bail!(
            "wasmkube {args:?} failed with {}; stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
