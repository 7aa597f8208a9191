//! The test harness: a real `wasmkube server` process on a free loopback port with a temporary
//! data directory, plus the clients the tests drive it with (the real `kubectl` with the
//! generated kubeconfig, and kube-rs clients built from the same kubeconfig).
//!
//! Tests read like stories: `TestCluster::builder().history_max_events(20).start().await?`,
//! then `cluster.kubectl_ok(&["get", "ns"])`, `cluster.client()`, `cluster.kill9()`,
//! `cluster.restart()`. The server's stdout and stderr go to `server.log` in the data directory;
//! its tail is printed when a test panics while the cluster is alive, and attached to start-up
//! errors. Nothing here sleeps for a fixed time: every wait is a poll with a deadline.
//!
//! Without nodes asked for, the server runs with `--disable-agent` (the apiserver tests need
//! none). `.agents(2)` / `.agent(NodeSpec::named("a").label("disk", "ssd").cpu("1"))` join
//! separate `wasmkube agent` processes and `.embedded_agent(spec)` runs the server's own node
//! ([`nodes`]); `.start_with_samples(test)` also imports the sample images into every node, and
//! fails naming `samples/build --oci` when they are not built ([`pods`]); [`images`] packages modules written at
//! test time. `cluster.kill9_agent(i)` / `cluster.restart_agent(i)` act on agent processes.
//!
//! `.in_netns_lab()` runs the cluster in a lab of network namespaces ([`netns`]): the server
//! (and its embedded agent) in host 0, agent `i` in host `i + 1`, each node with its host's
//! address as `--node-ip`; `cluster.host(i)` runs curl or dig inside a host and
//! `cluster.kubectl_on(i, args)` runs kubectl there. The test process itself reaches the
//! apiserver through a loopback relay, so `cluster.kubectl(...)` and `cluster.client()` work
//! as usual.
//!
//! [`Containerd::start(host, cni_conf_dir)`](containerd::Containerd::start) runs a private
//! containerd inside a lab host for the tests of Linux container pods ([`containerd`]), with
//! `import_test_images()` bringing in the offline [`BUSYBOX_IMAGE`] and [`PAUSE_IMAGE`]
//! ([`linux_images`]); `kill9()` and `restart()` act on it.
//!
//! The tests of the binary run in parallel, and every cluster shares the machine with the
//! others'. A test that measures the machine (the guest isolation test compares the API's
//! latency under load with its idle latency) asks for `.exclusive()`: its cluster waits until
//! no other cluster is alive and no other cluster starts until it is dropped (see
//! [`MACHINE`]).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

mod containerd;
mod containerd_host;
mod images;
mod lab_apps;
mod linux_images;
mod netns;
mod nodes;
mod pods;
mod port_forward;
mod registry;

#[allow(unused_imports)]
pub(crate) use containerd::{CRI_OPT_OUT_VAR, Containerd, K8S_NAMESPACE, cri_tests_opted_out};
#[allow(unused_imports)]
pub(crate) use containerd_host::CNI_BIN_DIR;
pub(crate) use images::{WasmImage, module_with_data_segment};
pub(crate) use lab_apps::{dnat_targets, http_hello_deployment, http_service, routed_node};
#[allow(unused_imports)]
pub(crate) use linux_images::{BUSYBOX_IMAGE, PAUSE_IMAGE, TestImages, test_images};
use netns::NamespaceForward;
#[allow(unused_imports)]
pub(crate) use netns::{LAB_SUBNET, LabHost, NetnsLab, lab_tests_opted_out};
use nodes::{AgentProcess, EmbeddedNode};
pub(crate) use nodes::{NodeSpec, node_is_ready};
pub(crate) use pods::{container_status, events_of, pod_is_ready, ready_app_pods, sample_layout};
pub(crate) use port_forward::{PortForward, curl};
pub(crate) use registry::{REGISTRY_PASSWORD, REGISTRY_USER, TestRegistry, which};

/// How long a server may take to answer `/readyz` after it was spawned. Generous: a 2-core CI
/// machine may be compiling something else at the same time.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `kubectl` invocation may take before the test gives up on it.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(90);
/// How long a server may take to exit after SIGTERM or SIGINT.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two polls of a condition.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Every live [`TestCluster`] holds this lock: for reading, shared with the other tests'
/// clusters, or for writing when its test asked for [`TestClusterBuilder::exclusive`]. Tokio's
/// lock is fair, so an exclusive cluster waiting for the clusters alive now keeps new ones from
/// starting. A test holds at most one cluster at a time (a second read while a writer waits
/// would wait for the writer, which waits for the first read).
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A cluster's hold on [`MACHINE`], released when the cluster is dropped.
enum MachineClaim {
    Shared {
        _guard: tokio::sync::RwLockReadGuard<'static, ()>,
    },
    Exclusive {
        _guard: tokio::sync::RwLockWriteGuard<'static, ()>,
    },
}

impl MachineClaim {
    async fn take(exclusive: bool) -> Self {
        if exclusive {
            Self::Exclusive {
                _guard: MACHINE.write().await,
            }
        } else {
            Self::Shared {
                _guard: MACHINE.read().await,
            }
        }
    }
}

/// Options for a [`TestCluster`] before it starts.
#[derive(Debug, Default, Clone)]
pub(crate) struct TestClusterBuilder {
    exclusive: bool,
    history_max_events: Option<u64>,
    history_max_age_secs: Option<u64>,
    embedded_agent: Option<NodeSpec>,
    agents: Vec<NodeSpec>,
    server_args: Vec<String>,
    data_dir_parent: Option<PathBuf>,
    netns_lab: bool,
    given_lab: Option<Arc<NetnsLab>>,
}

impl TestClusterBuilder {
    /// Keep at most `n` watch events in the store's history (forces compaction in tests).
    pub(crate) fn history_max_events(mut self, n: u64) -> Self {
        self.history_max_events = Some(n);
        self
    }

    /// Keep watch history for at most `secs` seconds.
    #[allow(dead_code)]
    pub(crate) fn history_max_age_secs(mut self, secs: u64) -> Self {
        self.history_max_age_secs = Some(secs);
        self
    }

    /// Run this cluster alone: it starts once every other test's cluster is gone, and no other
    /// cluster starts until it is dropped. For tests whose measurements another test's load
    /// would spoil; the rest share the machine.
    pub(crate) fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Run the server's embedded node agent, described by `spec` (without this the server
    /// runs with `--disable-agent`: the apiserver tests need no node).
    pub(crate) fn embedded_agent(mut self, spec: NodeSpec) -> Self {
        self.embedded_agent = Some(spec);
        self
    }

    /// Join `n` more nodes, each a separate `wasmkube agent` process with default settings
    /// (named `node-<i>`).
    pub(crate) fn agents(mut self, n: usize) -> Self {
        self.agents.extend((0..n).map(|_| NodeSpec::default()));
        self
    }

    /// Join one more node, a separate `wasmkube agent` process described by `spec`.
    pub(crate) fn agent(mut self, spec: NodeSpec) -> Self {
        self.agents.push(spec);
        self
    }

    /// Run the server without its workload controllers: the apiserver tests check what the
    /// API stores and serves, which a controller writing status would blur. Only the two
    /// every pod needs run (the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap
    /// of each namespace), without taking the controller-manager Lease, so standalone
    /// `wasmkube controllers` can still lead.
    pub(crate) fn without_controllers(self) -> Self {
        self.server_arg("--controllers=serviceaccount,root-ca-cert-publisher")
            .server_arg("--no-leader-elect")
    }

    /// Run the cluster in a lab of network namespaces ([`NetnsLab`]): the server and its
    /// embedded agent in host 0, agent `i` in host `i + 1`, every node with `--node-ip` its
    /// host's address. The apiserver listens on every address of host 0 and its certificate
    /// names host 0's address; agents and `kubectl_on` reach it there. Needs root, `ip` and
    /// `nsenter` (a test calls [`lab_tests_opted_out`] first).
    #[allow(dead_code)]
    pub(crate) fn in_netns_lab(mut self) -> Self {
        self.netns_lab = true;
        self
    }

    /// [`in_netns_lab`](Self::in_netns_lab) in a lab the test made first (with one host per
    /// node), for what must run in a node's host before its agent starts (containerd).
    pub(crate) fn in_given_netns_lab(mut self, lab: Arc<NetnsLab>) -> Self {
        self.netns_lab = true;
        self.given_lab = Some(lab);
        self
    }

    /// Make the data directory inside `parent` (a small filesystem, for instance) instead
    /// of the system's temporary directory.
    pub(crate) fn data_dir_in(mut self, parent: impl Into<PathBuf>) -> Self {
        self.data_dir_parent = Some(parent.into());
        self
    }

    /// Pass one more argument to `wasmkube server` (e.g. `--node-monitor-grace-period`).
    #[allow(dead_code)]
    pub(crate) fn server_arg(mut self, arg: impl Into<String>) -> Self {
        self.server_args.push(arg.into());
        self
    }

    /// Spawn the server and wait until `/readyz` answers 200.
    pub(crate) async fn start(self) -> Result<TestCluster> {
        let claim = MachineClaim::take(self.exclusive).await;
        let mut data_dir = tempfile::Builder::new();
        data_dir.prefix("wasmkube-e2e-");
        let data_dir = match &self.data_dir_parent {
            Some(parent) => data_dir.tempdir_in(parent),
            None => data_dir.tempdir(),
        }
        .context("creating the temporary data directory")?;
        let port = free_port()?;
        let lab = if let Some(lab) = self.given_lab.clone() {
            Some(lab)
        } else if self.netns_lab {
            Some(Arc::new(NetnsLab::new(1 + self.agents.len()).await?))
        } else {
            None
        };
        let mut extra_args = self.server_args.clone();
        let mut bind = format!("127.0.0.1:{port}");
        let mut forward = None;
        if let Some(lab) = &lab {
            let server_host = lab.host(0)?;
            // Every address of host 0: its lab address for agents and kubectl in other hosts,
            // 127.0.0.1 (the kubeconfig's) for the relay from the test's namespace.
            bind = format!("0.0.0.0:{port}");
            extra_args.extend(["--tls-san".to_owned(), server_host.ip().to_string()]);
            forward = Some(NamespaceForward::start(server_host, port)?);
        }
        if let Some(n) = self.history_max_events {
            extra_args.push("--history-max-events".to_owned());
            extra_args.push(n.to_string());
        }
        if let Some(secs) = self.history_max_age_secs {
            extra_args.push("--history-max-age".to_owned());
            extra_args.push(secs.to_string());
        }
        // The cluster DNS on a free loopback port, forwarding to a closed loopback port: no
        // test's DNS query leaves the machine, and parallel servers do not collide on 53.
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--cluster-dns-listen"))
        {
            extra_args.push("--cluster-dns-listen=127.0.0.1:0".to_owned());
        }
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--cluster-dns-upstream"))
        {
            extra_args.push(format!("--cluster-dns-upstream=127.0.0.1:{}", free_port()?));
        }
        // The function ingress on a free loopback port unless the test asks for one: parallel
        // servers would collide on port 80 of every address.
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--function-ingress-listen"))
        {
            extra_args.push("--function-ingress-listen=127.0.0.1:0".to_owned());
        }
        let embedded = match self.embedded_agent {
            Some(mut spec) => {
                if let Some(lab) = &lab {
                    spec = spec.node_ip(lab.host(0)?.ip());
                }
                let node = EmbeddedNode::new(spec)?;
                extra_args.extend(node.server_args());
                Some(node)
            }
            None => {
                extra_args.push("--disable-agent".to_owned());
                None
            }
        };
        let mut cluster = TestCluster {
            data_dir,
            port,
            bind,
            extra_args,
            child: None,
            embedded,
            agents: Vec::new(),
            imported: std::sync::Mutex::new(Vec::new()),
            _forward: forward,
            lab,
            _claim: claim,
        };
        cluster.spawn_and_wait_ready().await?;
        if !self.agents.is_empty() {
            let token = cluster.join_token().await?;
            let url = cluster.agents_server_url();
            for (i, mut spec) in self.agents.into_iter().enumerate() {
                let host = match &cluster.lab {
                    Some(lab) => Some(lab.host(i + 1)?.clone()),
                    None => None,
                };
                if let Some(host) = &host {
                    spec = spec.node_ip(host.ip());
                }
                let agent = AgentProcess::spawn(spec, i + 1, &url, &token, host)?;
                cluster.agents.push(agent);
            }
        }
        cluster.wait_nodes_ready().await?;
        Ok(cluster)
    }
}

/// The captured result of one `kubectl` run.
#[derive(Debug, Clone)]
pub(crate) struct KubectlOutput {
    /// The exit status of kubectl.
    pub(crate) status: ExitStatus,
    /// Everything kubectl wrote to stdout.
    pub(crate) stdout: String,
    /// Everything kubectl wrote to stderr.
    pub(crate) stderr: String,
}

/// A running `wasmkube server` on a free port with its own temporary data directory, and the
/// node agents of the cluster: the server's embedded one (when asked for) and separate
/// `wasmkube agent` processes.
///
/// Dropping it kills the server and the agents (SIGKILL), removes their data directories and
/// then lets other clusters have the machine.
pub(crate) struct TestCluster {
    data_dir: tempfile::TempDir,
    port: u16,
    /// The server's `--bind`.
    bind: String,
    extra_args: Vec<String>,
    child: Option<Child>,
    embedded: Option<EmbeddedNode>,
    agents: Vec<AgentProcess>,
    /// The OCI layouts imported so far, for nodes that join later.
    imported: std::sync::Mutex<Vec<PathBuf>>,
    /// The relay from the test's 127.0.0.1:port to the server in host 0 of the lab.
    _forward: Option<NamespaceForward>,
    /// The network namespaces the cluster runs in; dropped after every process was killed.
    lab: Option<Arc<NetnsLab>>,
    /// The last field: dropped after the processes are killed and the directories removed.
    _claim: MachineClaim,
}

impl TestCluster {
    /// Start describing a cluster.
    pub(crate) fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// The server's data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The kubeconfig the server wrote on first start.
    pub(crate) fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir().join("kubeconfig.yaml")
    }

    /// Where the server's stdout and stderr go.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.data_dir().join("server.log")
    }

    /// The process id of the running server.
    #[allow(dead_code)]
    pub(crate) fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The port the server listens on.
    #[allow(dead_code)]
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The last `lines` lines of the server log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(self.log_path()) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                let start = all.len().saturating_sub(lines);
                all[start..].join("\n")
            }
            Err(e) => format!("(no server log: {e})"),
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--bind".into(),
            self.bind.clone(),
        ];
        args.extend(self.extra_args.iter().cloned());
        let host = self.lab.as_ref().map(|lab| lab.host(0)).transpose()?;
        let child = spawn_wasmkube_in(&args, &self.log_path(), host)
            .context("spawning `wasmkube server`")?;
        self.child = Some(child);
        Ok(())
    }

    async fn spawn_and_wait_ready(&mut self) -> Result<()> {
        self.spawn()?;
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last_error = String::from("the kubeconfig was not written yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling the server process")?
            {
                bail!(
                    "`wasmkube server` exited during start-up with {status}; log tail:\n{}",
                    self.log_tail(60)
                );
            }
            if self.kubeconfig_path().exists() {
                match self.readyz().await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "`wasmkube server` did not become ready within {READY_DEADLINE:?} \
                     (last error: {last_error}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn readyz(&self) -> Result<()> {
        let client = self.client().await?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .context("building the /readyz request")?;
        client.request_text(request).await.context("GET /readyz")?;
        Ok(())
    }

    /// The kube-rs configuration from the generated kubeconfig (admin client certificate).
    pub(crate) async fn kube_config(&self) -> Result<kube::Config> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path())
            .context("reading the generated kubeconfig")?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("loading the generated kubeconfig")
    }

    /// A fresh kube-rs client authenticated as admin (its own connection pool).
    pub(crate) async fn client(&self) -> Result<kube::Client> {
        let config = self.kube_config().await?;
        kube::Client::try_from(config).context("building a kube client")
    }

    /// A kube-rs client that trusts the cluster CA but presents no credentials at all.
    pub(crate) async fn client_without_credentials(&self) -> Result<kube::Client> {
        let mut config = self.kube_config().await?;
        config.auth_info = kube::config::AuthInfo::default();
        kube::Client::try_from(config).context("building an anonymous kube client")
    }

    /// A kube-rs client that trusts the cluster CA and sends `Authorization: Bearer <token>`.
    pub(crate) async fn client_with_bearer_token(&self, token: &str) -> Result<kube::Client> {
        let mut config = self.kube_config().await?;
        config.auth_info = kube::config::AuthInfo::default();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        config.headers.push((http::header::AUTHORIZATION, value));
        kube::Client::try_from(config).context("building a bearer-token kube client")
    }

    /// A kubeconfig for `user` (in `group`, if given) that authenticates with a client
    /// certificate the cluster CA issued, made by `wasmkube server kubeconfig --user U
    /// [--group G]` and written next to the admin kubeconfig. Pass it to kubectl as
    /// `--kubeconfig=<path>` after the harness's own.
    pub(crate) async fn user_kubeconfig(&self, user: &str, group: Option<&str>) -> Result<PathBuf> {
        let data_dir = self.data_dir().display().to_string();
        let mut args = vec![
            "server",
            "kubeconfig",
            "--data-dir",
            &data_dir,
            "--user",
            user,
        ];
        if let Some(group) = group {
            args.extend(["--group", group]);
        }
        let yaml = nodes::run_cli(&args).await?;
        let path = self
            .data_dir()
            .join(format!("kubeconfig-{}.yaml", user.replace(':', "-")));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A kubeconfig that trusts the cluster CA and authenticates with bearer `token` only (no
    /// client certificate, which would win over a token), written next to the admin one as
    /// `kubeconfig-<name>.yaml`. Pass it to kubectl as `--kubeconfig=<path>`.
    pub(crate) fn token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        use base64::Engine;
        let pki = wasmkube_apiserver::pki::Pki::load_or_create(self.data_dir(), &[])
            .context("loading the cluster PKI")?;
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "wasmkube", "cluster": {
                "server": format!("https://127.0.0.1:{}", self.port),
                "certificate-authority-data":
                    base64::engine::general_purpose::STANDARD.encode(pki.ca_pem()),
            }}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "wasmkube", "context": {"cluster": "wasmkube", "user": name}}],
            "current-context": "wasmkube",
        });
        let path = self.data_dir().join(format!("kubeconfig-{name}.yaml"));
        std::fs::write(&path, serde_yaml_ng::to_string(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A `kubectl` command pointed at this cluster, with its own discovery cache.
    pub(crate) fn kubectl_command(&self, args: &[&str]) -> Command {
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
        let mut cmd = Command::new(kubectl);
        cmd.env_remove("KUBECONFIG")
            .arg(format!("--kubeconfig={}", self.kubeconfig_path().display()))
            .arg(format!(
                "--cache-dir={}",
                self.data_dir().join("kubectl-cache").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Host `i` of the cluster's lab (0 runs the server, `i + 1` agent `i`).
    #[allow(dead_code)]
    pub(crate) fn host(&self, i: usize) -> Result<&LabHost> {
        self.lab
            .as_ref()
            .ok_or_else(|| anyhow!("the cluster was not started with .in_netns_lab()"))?
            .host(i)
    }

    /// A `kubectl` command that runs inside lab host `i` and reaches the apiserver at host
    /// 0's lab address.
    fn kubectl_command_on(&self, i: usize, args: &[&str]) -> Result<Command> {
        let host = self.host(i)?;
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
        let mut full = vec![
            format!("--kubeconfig={}", self.kubeconfig_path().display()),
            format!("--server={}", self.agents_server_url()),
            format!(
                "--cache-dir={}",
                self.data_dir().join(format!("kubectl-cache-{i}")).display()
            ),
        ];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let mut cmd = host.command(kubectl, full);
        cmd.env_remove("KUBECONFIG");
        Ok(cmd)
    }

    /// Run `kubectl args...` inside lab host `i` and capture its output, whatever its exit
    /// status.
    #[allow(dead_code)]
    pub(crate) async fn kubectl_on(&self, i: usize, args: &[&str]) -> Result<KubectlOutput> {
        let cmd = self.kubectl_command_on(i, args)?;
        self.run_kubectl(cmd, args, None).await
    }

    /// Run `kubectl args...` inside lab host `i`, require success, return stdout.
    #[allow(dead_code)]
    pub(crate) async fn kubectl_ok_on(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.kubectl_on(i, args).await?;
        self.require_success(args, out)
    }

    /// Run `kubectl args...`, optionally feeding `stdin`, and capture its output.
    pub(crate) async fn kubectl_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput> {
        let cmd = self.kubectl_command(args);
        self.run_kubectl(cmd, args, stdin).await
    }

    /// Runs a kubectl command, optionally feeding `stdin`, and captures its output.
    async fn run_kubectl(
        &self,
        mut cmd: Command,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput> {
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().context("spawning kubectl")?;
        if let Some(input) = stdin {
            let mut pipe = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("kubectl has no stdin pipe"))?;
            pipe.write_all(input.as_bytes())
                .await
                .context("writing kubectl's stdin")?;
            drop(pipe);
        }
        let output = tokio::time::timeout(KUBECTL_DEADLINE, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("kubectl {args:?} did not finish within {KUBECTL_DEADLINE:?}"))?
            .context("waiting for kubectl")?;
        Ok(KubectlOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Run `kubectl args...` and capture its output, whatever its exit status.
    pub(crate) async fn kubectl(&self, args: &[&str]) -> Result<KubectlOutput> {
        self.kubectl_with_stdin(args, None).await
    }

    /// Run `kubectl args...`, require success, return stdout.
    pub(crate) async fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args).await?;
        self.require_success(args, out)
    }

    /// Run `kubectl args...` with `stdin` (for `apply -f -`), require success, return stdout.
    pub(crate) async fn kubectl_ok_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = self.kubectl_with_stdin(args, Some(stdin)).await?;
        self.require_success(args, out)
    }

    /// Run `kubectl args...`, require failure, return stderr.
    pub(crate) async fn kubectl_fails(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args).await?;
        if out.status.success() {
            bail!(
                "kubectl {args:?} succeeded but was expected to fail; stdout:\n{}",
                out.stdout
            );
        }
        Ok(out.stderr)
    }

    /// Run `kubectl args... -o json` and parse the output.
    pub(crate) async fn kubectl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["-o", "json"]);
        let stdout = self.kubectl_ok(&full).await?;
        serde_json::from_str(&stdout)
            .with_context(|| format!("kubectl {full:?} printed invalid JSON:\n{stdout}"))
    }

    fn require_success(&self, args: &[&str], out: KubectlOutput) -> Result<String> {
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed with {}; stderr:\n{}\nstdout:\n{}\nserver log tail:\n{}",
                out.status,
                out.stderr,
                out.stdout,
                self.log_tail(30)
            );
        }
        Ok(out.stdout)
    }

    /// Whether the server process is alive (it was started and has not exited or crashed).
    pub(crate) fn server_is_running(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait().context("checking the server")?.is_none()),
            None => Ok(false),
        }
    }

    /// Kill the server with SIGKILL (no chance to flush anything) and reap it.
    pub(crate) async fn kill9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("the server is not running"))?;
        child.start_kill().context("sending SIGKILL")?;
        tokio::time::timeout(SHUTDOWN_DEADLINE, child.wait())
            .await
            .map_err(|_| anyhow!("the server did not die after SIGKILL"))?
            .context("reaping the killed server")?;
        Ok(())
    }

    /// Stop the server with SIGTERM and wait for it to exit; returns its exit status.
    pub(crate) async fn terminate(&mut self) -> Result<ExitStatus> {
        self.stop_with_signal("TERM").await
    }

    /// Stop the server with SIGINT (Ctrl-C) and wait for it to exit; returns its exit status.
    pub(crate) async fn interrupt(&mut self) -> Result<ExitStatus> {
        self.stop_with_signal("INT").await
    }

    /// Sends `SIG<signal>` to the server and waits for it to exit.
    async fn stop_with_signal(&mut self, signal: &str) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("the server is not running"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server already exited"))?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .with_context(|| format!("running kill -{signal}"))?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed with {status}");
        }
        match tokio::time::timeout(SHUTDOWN_DEADLINE, child.wait()).await {
            Ok(status) => status.context("waiting for the server to exit"),
            Err(_) => {
                let _ = child.start_kill();
                bail!(
                    "the server did not exit within {SHUTDOWN_DEADLINE:?} after SIG{signal}; log tail:\n{}",
                    self.log_tail(30)
                )
            }
        }
    }

    /// Adds `arg` to the server's command line from its next [`TestCluster::restart`] on.
    pub(crate) fn add_server_arg(&mut self, arg: impl Into<String>) {
        self.extra_args.push(arg.into());
    }

    /// Start the server again on the same data directory and port; wait until it is ready.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("restart() needs a stopped server: call kill9() or terminate() first");
        }
        self.spawn_and_wait_ready().await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- wasmkube server log tail ({}) ----\n{}\n---- end of server log ----",
                self.log_path().display(),
                self.log_tail(80)
            );
            for agent in &self.agents {
                eprintln!(
                    "---- agent {} log tail ({}) ----\n{}\n---- end of agent log ----",
                    agent.node_name(),
                    agent.log_path().display(),
                    agent.log_tail(60)
                );
            }
        }
    }
}

/// Spawns `wasmkube args...` with stdout and stderr appended to `log`, none of the
/// `WASMKUBE_*`/`KUBECONFIG` variables of the test's environment, and `kill_on_drop`.
pub(crate) fn spawn_wasmkube(args: &[String], log: &Path) -> Result<Child> {
    spawn_wasmkube_in(args, log, None)
}

/// [`spawn_wasmkube`], inside lab host `host` when given (`nsenter --net=...`, which execs
/// wasmkube: the child is the wasmkube process itself).
pub(crate) fn spawn_wasmkube_in(
    args: &[String],
    log: &Path,
    host: Option<&LabHost>,
) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log handle")?;
    let mut command = match host {
        Some(host) => host.command(env!("CARGO_BIN_EXE_wasmkube"), args),
        None => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_wasmkube"));
            command.args(args);
            command
        }
    };
    for var in [
        "WASMKUBE_DATA_DIR",
        "WASMKUBE_BIND",
        "WASMKUBE_SERVER",
        "WASMKUBE_TOKEN",
        "KUBECONFIG",
    ] {
        command.env_remove(var);
    }
    command
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "spawning wasmkube {}",
                args.first().map_or("", String::as_str)
            )
        })
}

/// A port on 127.0.0.1 that nothing listens on right now, and that this test process has
/// not handed out before: the kernel may give the same ephemeral port to two binds in a
/// row once the first is closed, and a server and its embedded agent then collide.
pub(crate) fn free_port() -> Result<u16> {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
        let port = listener
            .local_addr()
            .context("reading the bound port")?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}

/// Poll `check` until it returns `Ok(Some(value))` or `deadline` passes; the last error or
/// `None` is reported in the failure.
pub(crate) async fn poll_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let until = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("condition not met"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= until {
            bail!("{what}: not reached within {deadline:?} (last: {last})");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Raw HTTPS access for status-code level checks, through a kube client's TLS and auth.
pub(crate) mod raw {
    use anyhow::{Context, Result};
    use http_body_util::BodyExt;

    /// A response as the tests look at it.
    #[derive(Debug)]
    pub(crate) struct RawResponse {
        /// The HTTP status code.
        pub(crate) status: u16,
        /// The response headers.
        #[allow(dead_code)]
        pub(crate) headers: http::HeaderMap,
        /// The body, as text.
        pub(crate) body: String,
    }

    impl RawResponse {
        /// The body as JSON (e.g. a `metav1.Status`).
        pub(crate) fn json(&self) -> Result<serde_json::Value> {
            serde_json::from_str(&self.body)
                .with_context(|| format!("the body is not JSON: {}", self.body))
        }
    }

    /// Send `method path` with an optional body and content type; never fails on 4xx/5xx.
    pub(crate) async fn send(
        client: &kube::Client,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<RawResponse> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::ACCEPT, "application/json");
        if let Some(ct) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(kube::client::Body::from(body))
            .context("building the request")?;
        let response = client
            .send(request)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the body of {method} {path}"))?
            .to_bytes();
        Ok(RawResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// `GET path`.
    pub(crate) async fn get(client: &kube::Client, path: &str) -> Result<RawResponse> {
        send(client, http::Method::GET, path, None, Vec::new()).await
    }
}
