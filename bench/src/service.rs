//! `wasmkube-bench service`: requests through a Service's ClusterIP versus straight to the
//! pod IP, with kube-proxy's nftables mode and its userspace relay.
//!
//! The bench makes two network namespaces joined by a veth pair, a node (10.78.0.1) and a
//! client (10.78.0.2), neither with a default route, so nothing it sends can leave the
//! machine. In the node it starts `wasmkube server --pod-network routed --proxy-mode MODE`
//! (through `nsenter --net`), with the http-hello sample imported, and runs one http-hello
//! pod behind a ClusterIP Service; the client routes the pod and service CIDRs to the node.
//! From inside the client namespace the HTTP load generator (`wasmkube-bench load`, this
//! binary run through `nsenter`) then alternates rounds straight to `POD_IP:8080` and through `CLUSTER_IP:80`, so both see the
//! same machine noise; requests/s and latency of each, and their ratio. Then the same with
//! the other proxy mode (a fresh server).
//!
//! The bench talks to its server only with `kubectl` run inside the node's namespace (the
//! apiserver listens on the node's loopback there). It needs root, iproute2, util-linux
//! (nsenter), nftables, curl, kubectl and the samples (`samples/build --oci --quiet`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::load::{LoadPlan, LoadResult};
use super::samples::Samples;
use super::table::{LatencyRow, RunHeader, latency_table, ratio};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const NAME: &str = "svc-bench";
/// How long the server, the pod and the first request through the Service may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Benchmark Service traffic: a ClusterIP versus the pod IP, nftables and userspace.
#[derive(clap::Args, Debug)]
pub(crate) struct ServiceCommand {
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// Seconds counted per round (after a 1 s warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    duration: u64,
    /// Rounds per path (direct, ClusterIP), alternating.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// The proxy modes to measure, comma-separated.
    #[arg(long, value_name = "MODE,..", value_delimiter = ',', default_values_t = ["nftables".to_owned(), "userspace".to_owned()])]
    modes: Vec<String>,
    /// The samples directory [default: samples/ of the current directory or of the
    /// repository the bench was built in].
    #[arg(long, value_name = "DIR")]
    samples: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Two namespaces joined by a veth pair; deleted when dropped.
pub(super) struct Lab {
    node: String,
    client: String,
}

/// Runs `program args` and fails with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    pub(super) fn new() -> anyhow::Result<Lab> {
        if !rustix::process::geteuid().is_root() {
            bail!("the service bench makes network namespaces: run it as root");
        }
        let id = std::process::id();
        let lab = Lab {
            node: format!("wkbench-svc-{id}-node"),
            client: format!("wkbench-svc-{id}-cli"),
        };
        run("ip", &["netns", "add", &lab.node])
            .context("the service bench needs iproute2 (apt-get install iproute2)")?;
        run("ip", &["netns", "add", &lab.client])?;
        let (veth_node, veth_client) = (format!("wkbs{id}n"), format!("wkbs{id}c"));
        run(
            "ip",
            &[
                "link",
                "add",
                &veth_node,
                "netns",
                &lab.node,
                "type",
                "veth",
                "peer",
                "name",
                &veth_client,
                "netns",
                &lab.client,
            ],
        )?;
        for (ns, dev, ip) in [
            (&lab.node, &veth_node, NODE_IP),
            (&lab.client, &veth_client, CLIENT_IP),
        ] {
            lab.ip(ns, &["link", "set", "lo", "up"])?;
            lab.ip(ns, &["link", "set", dev, "name", "eth0"])?;
            lab.ip(ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            lab.ip(ns, &["link", "set", "eth0", "up"])?;
        }
        // The client reaches pods and services through the node, as a host of a flat network
        // with host-gw routes would; there is no other route.
        for cidr in ["10.42.0.0/16", "10.43.0.0/16"] {
            lab.ip(
                &lab.client,
                &["route", "add", cidr, "via", &NODE_IP.to_string()],
            )?;
        }
        // The node's own connections to a cluster IP need a route before the nat-output
        // hook's DNAT (a real host's default route); it leads nowhere but the veth.
        lab.ip(&lab.node, &["route", "add", "10.43.0.0/16", "dev", "eth0"])?;
        Ok(lab)
    }

    fn ip(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn netns_path(ns: &str) -> String {
        format!("/var/run/netns/{ns}")
    }

    /// `program args` inside the node's namespace.
    fn in_node(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new("nsenter");
        command.arg(format!("--net={}", Lab::netns_path(&self.node)));
        command.arg(program);
        command
    }

    /// `program` inside the client's namespace.
    fn in_client(&self, program: &Path) -> std::process::Command {
        let mut command = std::process::Command::new("nsenter");
        command.arg(format!("--net={}", Lab::netns_path(&self.client)));
        command.arg(program);
        command
    }

    /// Whether `GET http://addr/` from the client answers 200 (curl, within 2 s).
    fn client_gets(&self, addr: SocketAddr) -> anyhow::Result<bool> {
        let status = self
            .in_client(Path::new("curl"))
            .args(["-sf", "-o", "/dev/null", "--max-time", "2"])
            .arg(format!("http://{addr}/"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running curl in the client's namespace (apt-get install curl)")?;
        Ok(status.success())
    }

    /// `wasmkube-bench load` (this binary) run inside the client's namespace with `plan`.
    fn load(&self, plan: &LoadPlan) -> anyhow::Result<LoadResult> {
        self.load_from(&self.client, plan)
    }

    /// `wasmkube-bench load` run inside the node's namespace (a client on the same node as
    /// the pod, as a wasm pod's outgoing connection is the agent's).
    pub(super) fn load_in_node(&self, plan: &LoadPlan) -> anyhow::Result<LoadResult> {
        self.load_from(&self.node, plan)
    }

    fn load_from(&self, ns: &str, plan: &LoadPlan) -> anyhow::Result<LoadResult> {
        let bench = std::env::current_exe().context("the bench's own path")?;
        let mut command = std::process::Command::new("nsenter");
        command.arg(format!("--net={}", Lab::netns_path(ns)));
        command.arg(&bench);
        let out = command
            .args([
                "load",
                &plan.addr.to_string(),
                "--path",
                &plan.path,
                "--concurrency",
                &plan.concurrency.to_string(),
                "--warmup",
                &plan.warmup.as_secs().to_string(),
                "--duration",
                &plan.duration.as_secs().to_string(),
                "--json",
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running wasmkube-bench load in namespace {ns}"))?;
        if !out.status.success() {
            bail!(
                "wasmkube-bench load {} failed: {}",
                plan.addr,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .context("the output of wasmkube-bench load --json")?;
        LoadResult::from_json(&value).context("the figures of wasmkube-bench load --json")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.node, &self.client] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

/// `wasmkube server` in the node's namespace; killed when dropped.
pub(super) struct NodeServer {
    child: std::process::Child,
    data_dir: tempfile::TempDir,
}

impl NodeServer {
    fn start(lab: &Lab, wasmkube: &Path, samples: &Samples, mode: &str) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("wasmkube-bench-service-")
            .tempdir()?;
        let layout = samples.oci_layout("http-hello");
        let layout = layout.to_string_lossy().into_owned();
        let dir = data_dir.path().to_string_lossy().into_owned();
        run(
            &wasmkube.to_string_lossy(),
            &["image", "import", "--data-dir", &dir, &layout],
        )
        .context("importing the http-hello sample")?;
        let log = std::fs::File::create(data_dir.path().join("server.log"))?;
        let child = lab
            .in_node(&wasmkube.to_string_lossy())
            .args([
                "server",
                "--data-dir",
                &dir,
                "--bind",
                "127.0.0.1:6443",
                "--node-ip",
                &NODE_IP.to_string(),
                "--pod-network=routed",
                &format!("--proxy-mode={mode}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting wasmkube server in the node's namespace")?;
        Ok(NodeServer { child, data_dir })
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("kubeconfig.yaml")
    }

    /// `kubectl args` against the server, inside the node's namespace.
    fn kubectl(&self, lab: &Lab, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut child = lab
            .in_node("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl (the service bench needs it on PATH)")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `check` succeeds, the server dies or [`SETUP_TIMEOUT`] passes.
    fn wait(
        &mut self,
        what: &str,
        mut check: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let mut last = String::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("wasmkube server exited ({status}):\n{}", self.log_tail());
            }
            match check(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} not within {SETUP_TIMEOUT:?}: {last}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod and its Service.
fn manifests() -> String {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": NAME, "labels": {"app": NAME}},
        "spec": {
            "runtimeClassName": "wasmtime",
            "containers": [{
                "name": "http-hello",
                "image": "wasmkube.local/samples/http-hello:v1",
                "ports": [{"name": "http", "containerPort": 8080}],
            }],
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME},
        "spec": {
            "selector": {"app": NAME},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    });
    format!("{pod}\n---\n{service}\n")
}

/// Starts `wasmkube server --proxy-mode MODE` in the node's namespace with one http-hello
/// pod behind a ClusterIP Service, and waits until the client gets answers from both; the
/// server, the pod's address and the Service's.
pub(super) fn serve_http_hello(
    lab: &Lab,
    wasmkube: &Path,
    samples: &Samples,
    mode: &str,
) -> anyhow::Result<(NodeServer, SocketAddr, SocketAddr)> {
    eprintln!("{mode}: starting the server in the node's namespace...");
    let mut server = NodeServer::start(lab, wasmkube, samples, mode)?;
    server.wait("the apiserver ready", |s| {
        Ok(s.kubeconfig().exists() && s.kubectl(lab, &["get", "--raw", "/readyz"], None)? == "ok")
    })?;
    server.wait("the default ServiceAccount", |s| {
        Ok(s.kubectl(lab, &["get", "serviceaccount", "default"], None)
            .is_ok())
    })?;
    server.kubectl(lab, &["apply", "-f", "-"], Some(&manifests()))?;
    server.wait("the pod Ready", |s| {
        Ok(s.kubectl(
            lab,
            &[
                "get",
                "pod",
                NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        )? == "True")
    })?;
    let pod_ip: Ipv4Addr = server
        .kubectl(
            lab,
            &["get", "pod", NAME, "-o", "jsonpath={.status.podIP}"],
            None,
        )?
        .parse()
        .context("the pod's IP")?;
    let cluster_ip: Ipv4Addr = server
        .kubectl(
            lab,
            &["get", "service", NAME, "-o", "jsonpath={.spec.clusterIP}"],
            None,
        )?
        .parse()
        .context("the Service's cluster IP")?;
    let direct = SocketAddr::from((pod_ip, 8080));
    let through = SocketAddr::from((cluster_ip, 80));
    server.wait("a request through the ClusterIP", |_| {
        Ok(lab.client_gets(direct)? && lab.client_gets(through)?)
    })?;
    Ok((server, direct, through))
}

/// One mode's figures.
struct ModeFigures {
    mode: String,
    direct: Vec<LoadResult>,
    cluster_ip: Vec<LoadResult>,
}

/// Requests/s over rounds, and the latency of the middle round by requests/s.
pub(super) fn combine(results: &[LoadResult]) -> (f64, u64, Option<&LoadResult>) {
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let errors = results.iter().map(|r| r.errors).sum();
    let secs: f64 = results.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let mut sorted: Vec<&LoadResult> = results.iter().collect();
    sorted.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    (
        ok as f64 / secs.max(f64::EPSILON),
        errors,
        sorted.get(sorted.len() / 2).copied(),
    )
}

impl ServiceCommand {
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let samples = Samples::locate(self.samples.as_deref())?;
        samples.require_built("http-hello")?;
        for mode in &self.modes {
            if mode != "nftables" && mode != "userspace" {
                bail!("--modes takes nftables and userspace, not {mode:?}");
            }
        }
        let header = {
            let mut h = RunHeader::now(
                "service",
                &[
                    "--pod-network=routed".to_owned(),
                    "--proxy-mode=MODE".to_owned(),
                ],
            );
            h.peer = Some("the same pod straight at its IP, from the same client".into());
            h
        };
        let wasmkube = wasmkube.to_path_buf();
        let command = self.clone_args();
        let figures = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<ModeFigures>> {
            let lab = Lab::new()?;
            let mut all = Vec::new();
            for mode in &command.modes {
                all.push(command.measure_mode(&lab, &wasmkube, &samples, mode)?);
            }
            Ok(all)
        })
        .await??;
        self.print(&header, &figures);
        Ok(())
    }

    fn clone_args(&self) -> ServiceCommand {
        ServiceCommand {
            concurrency: self.concurrency,
            duration: self.duration,
            rounds: self.rounds,
            modes: self.modes.clone(),
            samples: self.samples.clone(),
            json: self.json,
        }
    }

    fn measure_mode(
        &self,
        lab: &Lab,
        wasmkube: &Path,
        samples: &Samples,
        mode: &str,
    ) -> anyhow::Result<ModeFigures> {
        let (_server, direct, through) = serve_http_hello(lab, wasmkube, samples, mode)?;
        let mut figures = ModeFigures {
            mode: mode.to_owned(),
            direct: Vec::new(),
            cluster_ip: Vec::new(),
        };
        for round in 0..self.rounds {
            for (addr, what) in [(direct, "direct"), (through, "ClusterIP")] {
                eprintln!(
                    "{mode}: round {}/{} {what} ({addr}), {} s...",
                    round + 1,
                    self.rounds,
                    self.duration
                );
                let plan = LoadPlan {
                    addr,
                    path: "/".to_owned(),
                    host: None,
                    concurrency: usize::try_from(self.concurrency).unwrap_or(1),
                    warmup: Duration::from_secs(1),
                    duration: Duration::from_secs(self.duration),
                };
                let result = lab.load(&plan)?;
                if what == "direct" {
                    figures.direct.push(result);
                } else {
                    figures.cluster_ip.push(result);
                }
            }
        }
        Ok(figures)
    }

    fn print(&self, header: &RunHeader, figures: &[ModeFigures]) {
        if self.json {
            let modes: Vec<serde_json::Value> = figures
                .iter()
                .map(|f| {
                    let (direct_rps, direct_errors, _) = combine(&f.direct);
                    let (cluster_rps, cluster_errors, _) = combine(&f.cluster_ip);
                    json!({
                        "mode": f.mode,
                        "direct": f.direct.iter().map(LoadResult::to_json).collect::<Vec<_>>(),
                        "cluster_ip": f.cluster_ip.iter().map(LoadResult::to_json).collect::<Vec<_>>(),
                        "direct_requests_per_second": direct_rps,
                        "cluster_ip_requests_per_second": cluster_rps,
                        "errors": direct_errors + cluster_errors,
                        "ratio": ratio(cluster_rps, direct_rps),
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "run": header.to_json(),
                    "concurrency": self.concurrency,
                    "rounds": self.rounds,
                    "seconds_per_round": self.duration,
                    "modes": modes,
                })
            );
            return;
        }
        let mut out = String::new();
        header.write(&mut out);
        out.push_str(&format!(
            "\nhttp-hello, {} keep-alive connections, {} rounds x {} s per path, alternating:\n",
            self.concurrency, self.rounds, self.duration
        ));
        let mut rows = Vec::new();
        for f in figures {
            let (direct_rps, direct_errors, direct_mid) = combine(&f.direct);
            let (cluster_rps, cluster_errors, cluster_mid) = combine(&f.cluster_ip);
            let r = ratio(cluster_rps, direct_rps)
                .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}x"));
            out.push_str(&format!(
                "  {:<9} direct {direct_rps:>8.0} req/s, ClusterIP {cluster_rps:>8.0} req/s: {r} \
                 ({} errors)\n",
                f.mode,
                direct_errors + cluster_errors
            ));
            if let Some(mid) = direct_mid {
                rows.push(LatencyRow::measured(
                    format!("{} direct (median round)", f.mode),
                    mid.latency,
                ));
            }
            if let Some(mid) = cluster_mid {
                rows.push(LatencyRow::measured(
                    format!("{} ClusterIP (median round)", f.mode),
                    mid.latency,
                ));
            }
        }
        out.push('\n');
        latency_table(&mut out, &rows);
        print!("{out}");
    }
}
