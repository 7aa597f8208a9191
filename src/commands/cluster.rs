//! What `wasmkube server` and `wasmkube agent` share: the node name, logging, signals,
//! kube clients and the node agent's settings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::watch;

/// How logs are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default data directory: `$XDG_DATA_HOME/wasmkube` or `~/.local/share/wasmkube`.
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("wasmkube"))
        .context("cannot find the user's data directory; pass --data-dir")
}

/// Sets up `tracing` (filter from `WASMKUBE_LOG`, default `info`, with hickory's DNS server
/// at `warn`: it logs every query it answers at `info`).
pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A shutdown signal many tasks can wait on: flips on SIGINT or SIGTERM.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listens for SIGINT and SIGTERM.
    pub(crate) fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term => {},
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves once shutdown was asked for.
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Parses a duration flag as Go writes them (`24h`, `30m`, `1h30m`, `90s`; `0` is zero).
pub(crate) fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    if value.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let parsed: jiff::SignedDuration = value
        .trim()
        .parse()
        .map_err(|e| format!("{value:?} is not a duration like 24h, 30m or 1h30m: {e}"))?;
    std::time::Duration::try_from(parsed).map_err(|_| format!("{value:?} must not be negative"))
}

/// Parses `key=value` labels.
pub(crate) fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("node label {l:?} must be KEY=VALUE"))
        })
        .collect()
}

/// Parses `key=value:Effect` (or `key:Effect`) taints, as `kubectl taint` writes them.
pub(crate) fn parse_taints(
    taints: &[String],
) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Taint>> {
    taints
        .iter()
        .map(|t| {
            let (kv, effect) = t
                .rsplit_once(':')
                .with_context(|| format!("taint {t:?} must be KEY[=VALUE]:EFFECT"))?;
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                anyhow::bail!(
                    "taint {t:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
                );
            }
            let (key, value) = match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (kv.to_string(), None),
            };
            Ok(k8s_openapi::api::core::v1::Taint {
                key,
                value,
                effect: effect.to_string(),
                time_added: None,
            })
        })
        .collect()
}

/// A kube client from a kubeconfig file.
pub(crate) async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let config = config_from_kubeconfig(path).await?;
    wasmkube_client::connection::client(config).context("building the API client")
}

/// The client configuration of the kubeconfig at `path` (its current context).
pub(crate) async fn config_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))
}

/// A client for an in-process component acting as its own user (`system:kube-scheduler`,
/// `system:kube-controller-manager`, a controller's service account) in `groups`: a client
/// certificate the cluster CA in `data_dir` issues now, so that RBAC's role for the
/// component applies to it instead of the admin's system:masters.
pub(crate) async fn component_client(
    data_dir: &Path,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<kube::Client> {
    let yaml = wasmkube_apiserver::pki::user_kubeconfig(data_dir, user, groups, None)
        .with_context(|| format!("issuing the client certificate of {user}"))?;
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&yaml).context("reading the component kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("loading the component kubeconfig")?;
    wasmkube_client::connection::client(config).context("building the API client")
}

/// Node agent flags shared by `server` (embedded agent) and `agent`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// The node's name [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(crate) node_name: Option<String>,
    /// Extra node label (repeatable), e.g. `--node-label disk=ssd`.
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    pub(crate) node_labels: Vec<String>,
    /// Taint the node registers with (repeatable), e.g. `--node-taint dedicated=gpu:NoSchedule`.
    #[arg(long = "node-taint", value_name = "KEY[=VALUE]:EFFECT")]
    pub(crate) node_taints: Vec<String>,
    /// The node agent's HTTPS port (container logs); `kubectl logs` reaches it through the apiserver.
    #[arg(long, value_name = "PORT")]
    pub(crate) agent_port: Option<u16>,
    /// The node's address: its InternalIP, the pods' hostIP, where the apiserver reaches the agent.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub(crate) node_ip: IpAddr,
    /// How pods get their IPs. `loopback`: 127.N.x.y (N = --node-index), reachable only on
    /// this machine; needs nothing. `routed`: from the Node's spec.podCIDR (the
    /// controller-manager's node IPAM assigns a /24 of --cluster-cidr), each a /32 on the
    /// device wasmkube0, with a route to every other Node's pod CIDR via its InternalIP
    /// (host-gw: all nodes on one L2 segment); needs CAP_NET_ADMIN (root), and for
    /// `wasmkube agent` --kube-proxy-kubeconfig.
    #[arg(long, value_enum, default_value_t = PodNetworkArg::Loopback, value_name = "MODE")]
    pub(crate) pod_network: PodNetworkArg,
    /// The container runtime's CRI endpoint, as the kubelet's flag
    /// (`unix:///run/containerd/containerd.sock`): pods whose RuntimeClass handler is not
    /// `wasmtime` (and pods without a runtimeClassName) run there as Linux containers.
    /// Without it the node runs wasm pods only and says so in its Node
    /// (annotation wasmkube.io/container-runtime).
    #[arg(long, value_name = "ENDPOINT")]
    pub(crate) container_runtime_endpoint: Option<String>,
    /// The deadline of every CRI call except image pulls, as the kubelet's (plus the grace
    /// period for a stop).
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) runtime_request_timeout: std::time::Duration,
    /// Where the agent writes the CNI configuration of its container pods (the directory
    /// containerd's CRI plugin reads: its `conf_dir`). Written with --pod-network=routed
    /// and a --container-runtime-endpoint: container pods get the upper half of the Node's
    /// pod CIDR on the bridge wkcni0 (bridge + host-local + portmap), wasm pods the lower.
    #[arg(long, default_value = wasmkube_agent::DEFAULT_CNI_CONF_DIR, value_name = "DIR")]
    pub(crate) cni_conf_dir: std::path::PathBuf,
    /// This node's number on the machine (1-254): its pods get IPs 127.N.x.y.
    /// Several agents on one machine need different numbers [default: 1 for the server's
    /// embedded agent, derived from the node name for `wasmkube agent`].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub(crate) node_index: Option<u8>,
    /// CPU capacity of the node, e.g. `4` or `1500m` [default: the machine's CPUs].
    #[arg(long, value_name = "QUANTITY")]
    pub(crate) cpu: Option<String>,
    /// Memory capacity of the node, e.g. `8Gi`; allocatable is 100Mi less, kept for the
    /// agent itself [default: the machine's memory].
    #[arg(long, value_name = "QUANTITY")]
    pub(crate) memory: Option<String>,
    /// How many pods the node accepts.
    #[arg(long, value_name = "N")]
    pub(crate) max_pods: Option<u32>,
    /// A host directory pods may mount as a hostPath volume, with everything beneath it
    /// (repeatable); `PATH:ro` makes those mounts read-only. Without it no hostPath volume
    /// is mounted; the data directory never is.
    #[arg(long = "allowed-host-path", value_name = "PATH[:ro]")]
    pub(crate) allowed_host_paths: Vec<wasmkube_agent::volumes::AllowedHostPath>,
    /// Hard eviction thresholds, as the kubelet's: below them the node reports MemoryPressure
    /// or DiskPressure (and is tainted), and they are held back from allocatable. Signals:
    /// memory.available, nodefs.available (the data directory's filesystem); values are
    /// quantities or percentages of capacity. Given, it replaces the default: a signal it does
    /// not name has no threshold (`nodefs.available<0%` turns disk pressure off).
    #[arg(long, value_name = "SIGNAL<VALUE,...", default_value = wasmkube_agent::node::eviction::DEFAULT_EVICTION_HARD)]
    pub(crate) eviction_hard: wasmkube_agent::node::eviction::EvictionHard,
    /// How long a container start waits for its wasm module or component to be compiled;
    /// past it the container waits in CreateContainerError and is retried while the
    /// compilation goes on (like the kubelet's --runtime-request-timeout, 2m by default).
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) wasm_compile_timeout: u64,
    /// How the kernel schedules the threads that run wasm guests: `nice` (10 above the
    /// agent's; a busy guest still gets a tenth of a CPU against a busy agent thread) or
    /// `idle` (Linux's SCHED_IDLE: guests run only when nothing else on the CPU wants to).
    #[arg(long, value_enum, default_value_t = GuestSchedulingArg::Nice, value_name = "POLICY")]
    pub(crate) guest_scheduling: GuestSchedulingArg,
    /// How this node's kube-proxy makes Services' cluster IPs and node ports reach their
    /// endpoints. `nftables`: rules in an `ip wasmkube` table (needs CAP_NET_ADMIN and the
    /// `nft` tool, Debian package nftables). `userspace`: the agent relays TCP and UDP on
    /// each cluster IP, which it adds to `lo` (needs CAP_NET_ADMIN and the `ip` tool; only
    /// this node's clients, no NodePorts or session affinity). `none`: no proxy. `auto`:
    /// nftables where it can run and the node has a routable address (`--node-ip` not a
    /// loopback one: loopback pod IPs cannot be proxied to), else none.
    #[arg(long, value_enum, default_value_t = ProxyModeArg::Auto, value_name = "MODE")]
    pub(crate) proxy_mode: ProxyModeArg,
    /// A registry (HOST:PORT) pods' images are pulled from over plain HTTP although it is not
    /// on this machine (repeatable). Registries on this machine (localhost, 127.0.0.0/8, ::1)
    /// are always reached over HTTP; all others over HTTPS.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub(crate) insecure_registries: Vec<String>,
    /// An extra CA certificate (PEM) trusted for registries' HTTPS, besides the web PKI.
    #[arg(long, value_name = "FILE")]
    pub(crate) registry_ca_file: Option<PathBuf>,
    /// Which namespaces run only signed images: a YAML (or JSON) file of rules
    /// `{namespaces: [NS... or "*"], keys: [PUBLIC-KEY.pem...]}` (key paths relative to the
    /// file). A container in such a namespace starts only when the image digest it runs
    /// carries a cosign signature (as `wasmkube image sign` or cosign make) by one of its
    /// rule's keys; otherwise it waits with SignatureValidationFailed and is retried. Read at
    /// start; other namespaces run unsigned images.
    #[arg(long, value_name = "FILE")]
    pub(crate) image_signature_policy: Option<PathBuf>,
    /// The cluster DNS Service's address: the nameserver of pods with the ClusterFirst
    /// dnsPolicy (the kubelet's and k3s' flag); the server keeps kube-system/kube-dns there.
    #[arg(long, default_value = "10.43.0.10", value_name = "IP")]
    pub(crate) cluster_dns: IpAddr,
    /// The cluster's DNS domain: pods search `<ns>.svc.<domain> svc.<domain> <domain>`, the
    /// server's DNS answers for it.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub(crate) cluster_domain: String,
    /// The host's resolver configuration, which pods with the Default dnsPolicy get (as the
    /// kubelet's flag; empty: none, pods then get `nameserver 127.0.0.1`).
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub(crate) resolv_conf: PathBuf,
    /// Disk usage (percent of the image store's filesystem) at or above which the agent
    /// removes images no pod on the node uses, least recently used first, as the kubelet's
    /// flag; 100 turns image garbage collection off.
    #[arg(long, default_value_t = 85, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_high_threshold: u8,
    /// Disk usage (percent) image garbage collection frees down to; must be less than
    /// --image-gc-high-threshold.
    #[arg(long, default_value_t = 80, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_low_threshold: u8,
    /// Unused images first seen less than this long ago are never collected (the kubelet's
    /// flag), e.g. 2m, 1h, 0.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) minimum_image_gc_age: std::time::Duration,
    /// How often image garbage collection looks at disk usage (fixed at 5m in the kubelet).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) image_gc_period: std::time::Duration,
}

/// `--proxy-mode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyModeArg {
    /// nftables if it can run here, else none.
    Auto,
    /// nftables rules.
    Nftables,
    /// A relay in the agent.
    Userspace,
    /// No proxy.
    None,
}

impl ProxyModeArg {
    /// The mode to run: `auto` decided for this node.
    fn mode(self, node_ip: IpAddr) -> wasmkube_agent::proxy::ProxyMode {
        use wasmkube_agent::proxy::ProxyMode;
        match self {
            Self::Nftables => ProxyMode::Nftables,
            Self::Userspace => ProxyMode::Userspace,
            Self::None => ProxyMode::None,
            Self::Auto if node_ip.is_loopback() => {
                tracing::info!(
                    "kube-proxy off: the node's address {node_ip} is a loopback one, and so are \
                     its pods' (--proxy-mode nftables or userspace with a routable --node-ip)"
                );
                ProxyMode::None
            }
            Self::Auto => match wasmkube_agent::proxy::Nft::default().probe() {
                Ok(()) => ProxyMode::Nftables,
                Err(e) => {
                    tracing::warn!(error = %e, "kube-proxy off: nftables cannot be used here");
                    ProxyMode::None
                }
            },
        }
    }
}

/// `--pod-network`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodNetworkArg {
    /// 127.N.x.y on loopback.
    Loopback,
    /// The Node's pod CIDR, routed host-gw.
    Routed,
}

/// `--guest-scheduling`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestSchedulingArg {
    /// Nice +10.
    Nice,
    /// SCHED_IDLE.
    Idle,
}

impl GuestSchedulingArg {
    fn policy(self) -> wasmkube_runtime::GuestScheduling {
        match self {
            Self::Nice => wasmkube_runtime::DEFAULT_GUEST_SCHEDULING,
            Self::Idle => wasmkube_runtime::GuestScheduling::Idle,
        }
    }
}

impl NodeArgs {
    /// The node's DNS settings: `--cluster-dns`, `--cluster-domain`, and the host's
    /// resolv.conf (unreadable: none, with a warning, as the kubelet goes on without it).
    pub(crate) fn node_dns(&self) -> wasmkube_agent::dns::NodeDns {
        let host = if self.resolv_conf.as_os_str().is_empty() {
            None
        } else {
            match std::fs::read_to_string(&self.resolv_conf)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    wasmkube_agent::dns::ResolvConf::parse(&text).map_err(|e| e.to_string())
                }) {
                Ok(conf) => Some(conf),
                Err(error) => {
                    tracing::warn!(path = %self.resolv_conf.display(), %error, "cannot read the host's resolver configuration; pods with the Default dnsPolicy get none");
                    None
                }
            }
        };
        wasmkube_agent::dns::NodeDns {
            cluster_dns: vec![self.cluster_dns],
            cluster_domain: self.cluster_domain.trim_end_matches('.').to_string(),
            host,
        }
    }
}

/// A node index from a node name, in 2..=254 (1 is the server's embedded agent).
pub(crate) fn index_from_name(name: &str) -> u8 {
    let hash = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    2 + (hash % 253) as u8
}

impl NodeArgs {
    /// The image garbage collection policy of `--image-gc-*`, validated (checked before the
    /// server or agent starts anything).
    pub(crate) fn image_gc_policy(&self) -> anyhow::Result<wasmkube_agent::images::ImageGcPolicy> {
        let policy = wasmkube_agent::images::ImageGcPolicy {
            high_threshold_percent: self.image_gc_high_threshold,
            low_threshold_percent: self.image_gc_low_threshold,
            minimum_age: self.minimum_image_gc_age,
            period: self.image_gc_period,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The agent configuration for these flags.
    pub(crate) fn agent_config(
        &self,
        data_dir: &Path,
        client: kube::Client,
        ca_pem: &str,
        default_index: u8,
    ) -> anyhow::Result<wasmkube_agent::AgentConfig> {
        let node_name = self
            .node_name
            .clone()
            .unwrap_or_else(wasmkube_client::identity::default_node_name);
        let mut config = wasmkube_agent::AgentConfig::new(node_name.clone(), data_dir, client);
        config.node_index = self.node_index.unwrap_or(default_index);
        config.labels = parse_labels(&self.node_labels)?;
        config.taints = parse_taints(&self.node_taints)?;
        config.node_ip = self.node_ip;
        config.pod_network = match self.pod_network {
            PodNetworkArg::Loopback => wasmkube_agent::PodNetwork::Loopback,
            PodNetworkArg::Routed => wasmkube_agent::PodNetwork::Routed,
        };
        config.allowed_host_paths = self.allowed_host_paths.clone();
        config.container_runtime_endpoint = self.container_runtime_endpoint.clone();
        config.runtime_request_timeout = self.runtime_request_timeout;
        config.cni_conf_dir = self.cni_conf_dir.clone();
        config.eviction_hard = self.eviction_hard;
        config.image_gc = self.image_gc_policy()?;
        let port = self.agent_port.unwrap_or(wasmkube_agent::DEFAULT_LOG_PORT);
        let bind_ip = if self.node_ip.is_loopback() {
            self.node_ip
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        config.log_server.bind = SocketAddr::new(bind_ip, port);
        config.log_server.client_ca_pem = Some(ca_pem.to_string());
        config.server_tls_bootstrap = true;
        config.cluster_ca_pem = Some(ca_pem.to_string());
        config.compile_timeout = std::time::Duration::from_secs(self.wasm_compile_timeout);
        config.guest_scheduling = self.guest_scheduling.policy();
        config.proxy_mode = self.proxy_mode.mode(self.node_ip);
        config.registries.insecure_registries = self.insecure_registries.clone();
        if let Some(file) = &self.registry_ca_file {
            config.registries.extra_ca_pem.push(
                std::fs::read(file)
                    .with_context(|| format!("reading --registry-ca-file {}", file.display()))?,
            );
        }
        if let Some(file) = &self.image_signature_policy {
            config.image_signature_policy = Some(
                wasmkube_agent::images::signature::SignaturePolicy::load(file)
                    .context("--image-signature-policy")?,
            );
        }
        config.dns = self.node_dns();
        if self.cpu.is_some() || self.memory.is_some() || self.max_pods.is_some() {
            let machine = wasmkube_agent::node::info::MachineInfo::detect(data_dir);
            let mut capacity = wasmkube_agent::Capacity::of_machine(&machine);
            if let Some(cpu) = &self.cpu {
                let q = wasmkube_api::parse_quantity(cpu)
                    .with_context(|| format!("--cpu {cpu:?} is not a quantity"))?;
                capacity.cpu_millis =
                    i64::try_from(q.milli_value()).context("--cpu is too large")?;
            }
            if let Some(memory) = &self.memory {
                let q = wasmkube_api::parse_quantity(memory)
                    .with_context(|| format!("--memory {memory:?} is not a quantity"))?;
                capacity.memory_bytes =
                    i64::try_from(q.value()).context("--memory is too large")?;
            }
            if let Some(pods) = self.max_pods {
                capacity.pods = i64::from(pods);
            }
            config.capacity = Some(capacity);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_kubectl_taint() {
        let t = parse_taints(&[
            "dedicated=gpu:NoSchedule".into(),
            "spot:PreferNoSchedule".into(),
        ])
        .unwrap();
        assert_eq!(t[0].key, "dedicated");
        assert_eq!(t[0].value.as_deref(), Some("gpu"));
        assert_eq!(t[1].value, None);
        assert!(parse_taints(&["x=y".into()]).is_err());
        assert!(parse_taints(&["x=y:Sometimes".into()]).is_err());
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        use std::time::Duration;
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1h").is_err());
    }

    #[test]
    fn node_indexes_from_names_stay_clear_of_the_server() {
        for name in ["a", "node-2", "worker.example.com"] {
            let i = index_from_name(name);
            assert!((2..=254).contains(&i));
        }
    }
}
