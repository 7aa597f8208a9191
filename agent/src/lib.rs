//! `wasmkube-agent`: the node agent, our kubelet. It registers its Node, watches the pods bound
//! to it and runs their wasm containers through `wasmkube-runtime`.
//!
//! # Pieces
//! - [`node`]: the Node object (registration, status every minute or on change) and its Lease
//!   in `kube-node-lease` (renewed every 10 s).
//! - [`pod`]: one watch of this node's pods and one worker per pod driving the pod's
//!   [`pod::lifecycle`] (a pure state machine): init containers, restarts with
//!   CrashLoopBackOff, graceful deletion with `preStop` hooks; [`status`] writes `pods/status`
//!   when it changes.
//! - [`runtime`]: the [`runtime::ContainerRuntime`] seam and its wasmtime implementation.
//! - [`logs`]: CRI-format log files and the HTTPS server behind `kubectl logs` and
//!   `kubectl port-forward` ([`portforward`], over the [`spdy`] framing).
//! - Events (source `kubelet`, the node as host) go through `wasmkube_client::events`.
//! - [`images`], [`volumes`], [`probes`], [`network`]: the image store, volumes, probes and
//!   pod IPs.
//! - [`proxy`]: kube-proxy, which makes Services' cluster IPs and node ports reach their
//!   endpoints on this node (nftables rules or a userspace relay).
//! - [`dns`]: a pod's resolver configuration from its dnsPolicy and dnsConfig, as the
//!   kubelet forms it.
//!
//! # Files
//! Everything lives under `<data-dir>/agent/`: `images/` (the image store), `pods/<uid>/`
//! (volumes and `<container>/<restartCount>.log`), `wasm-cache/` (compiled code).
//!
//! # Restarts and outages
//! Wasm instances run inside the agent's process, so they end with it. After a restart the
//! agent lists its pods, takes each over from its last status ([`pod::lifecycle::PodLifecycle::adopt`])
//! and starts again what was running (counted as a restart, exit code 137 in `lastState`),
//! so nothing runs twice. While the apiserver is unreachable, running pods keep running; the
//! watch, status writes, lease and events retry with back-off.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use tokio::sync::watch;
use wasmkube_client::events::{EventMetrics, EventRecorder, Reporter};

pub mod certificates;
pub mod dns;
pub mod images;
pub(crate) mod logs;
pub mod network;
pub mod node;
pub(crate) mod pod;
pub(crate) mod portforward;
pub(crate) mod probes;
pub mod proxy;
pub(crate) mod runtime;
pub(crate) mod spdy;
pub(crate) mod status;
pub mod volumes;

pub use logs::server::{LogServerConfig, ServerTls};
pub use network::PodNetwork;
pub use node::{Capacity, RUNTIME_LABEL_WASMTIME};
pub use runtime::cri::CriError;

/// The kubelet's `--runtime-request-timeout` default.
pub const DEFAULT_RUNTIME_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the agent writes its container pods' CNI configuration by default (containerd's).
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// The kubelet's port, the default of the log server.
pub const DEFAULT_LOG_PORT: u16 = 10250;

/// The `source.component` of the agent's Events, as the kubelet's.
pub(crate) const EVENT_COMPONENT: &str = "kubelet";

/// Settings of an agent.
#[derive(Clone)]
pub struct AgentConfig {
    /// The Node's name (the host name by default in the CLI).
    pub node_name: String,
    /// The data directory; the agent keeps its files under `<data_dir>/agent/`.
    pub data_dir: PathBuf,
    /// The apiserver.
    pub client: kube::Client,
    /// This node's number on the machine (1-254): pod IPs are `127.<node_index>.x.y`.
    pub node_index: u8,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Taints the node is registered with.
    pub taints: Vec<Taint>,
    /// Capacity; `None` = the machine's CPUs, memory and disk, 110 pods.
    pub capacity: Option<Capacity>,
    /// The node's address (InternalIP, the pods' hostIP).
    pub node_ip: IpAddr,
    /// How pods get their IPs: loopback (`127.<node_index>.x.y`, the default) or routed (from
    /// the Node's pod CIDR, with host-gw routes to the other Nodes'; needs CAP_NET_ADMIN).
    pub pod_network: PodNetwork,
    /// A client allowed to list and watch every Node (as `system:kube-proxy`, ClusterRole
    /// `system:node-proxier`): the routed pod network's routes follow the other Nodes, which a
    /// node's own credentials may not read. `None` = `client`. NetworkPolicy enforcement
    /// watches every pod, namespace and NetworkPolicy through it (ClusterRole
    /// `wasmkube:network-policy`); without it, no policy is enforced on this node.
    pub kube_proxy_client: Option<kube::Client>,
    /// The log server (`bind` port is the node's `kubeletEndpoint` port).
    pub log_server: LogServerConfig,
    /// A wasm runtime to share (one per process); `None` = the agent makes its own.
    pub runtime: Option<wasmkube_runtime::Runtime>,
    /// Host directories hostPath volumes may mount (`--allowed-host-path`); none by default.
    pub allowed_host_paths: Vec<volumes::AllowedHostPath>,
    /// The cluster CA (PEM): guests' outgoing HTTPS requests trust it besides the web PKI,
    /// as a pod trusts the `ca.crt` beside its service-account token.
    pub cluster_ca_pem: Option<String>,
    /// The apiserver's URL: containers find it in `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT` (the kubelet puts the `kubernetes` Service's ClusterIP
    /// there; until Services are proxied the agent gives the address it uses itself).
    pub api_server: Option<String>,
    /// Hard eviction thresholds (`--eviction-hard`); the kubelet's by default.
    pub eviction_hard: node::eviction::EvictionHard,
    /// How long a container start waits for its wasm program to be compiled (for a runtime
    /// the agent makes); past it the container waits in `CreateContainerError` and is
    /// retried.
    pub compile_timeout: Duration,
    /// How the kernel schedules the guests' threads (for a runtime the agent makes).
    pub guest_scheduling: wasmkube_runtime::GuestScheduling,
    /// Renewal of the client certificate `client` presents (a joined agent's); `None` for
    /// credentials someone else keeps current.
    pub client_rotation: Option<certificates::rotation::Rotation>,
    /// Getting and renewing the `system:kube-proxy` certificate `kube_proxy_client`
    /// presents (a joined agent's, asked for with the node's own credentials; an empty slot
    /// is filled at once); `None` when someone else keeps those credentials.
    pub kube_proxy_rotation: Option<certificates::rotation::Rotation>,
    /// Ask the cluster for the log server's serving certificate (signer
    /// `kubernetes.io/kubelet-serving`, for the node's name and address) and renew it, as
    /// the kubelet's `serverTLSBootstrap`; it is kept in `<data-dir>/agent/pki/`. Needs
    /// `log_server.client_ca_pem` (the cluster CA). Off: `log_server.tls` or a self-signed
    /// certificate.
    pub server_tls_bootstrap: bool,
    /// How this node proxies Services (its embedded kube-proxy); [`proxy::ProxyMode::None`]
    /// by default.
    pub proxy_mode: proxy::ProxyMode,
    /// How images are pulled from OCI registries (plain-HTTP registries, extra CAs).
    pub registries: images::registry::RegistryConfig,
    /// Which namespaces run only images signed by which keys (`--image-signature-policy`);
    /// `None`: every namespace runs unsigned images.
    pub image_signature_policy: Option<images::signature::SignaturePolicy>,
    /// The node's DNS settings (`--cluster-dns`, `--cluster-domain`, the host's
    /// resolv.conf), what pods' resolver configurations are formed from
    /// ([`dns::pod_resolv_conf`]); no cluster DNS and `cluster.local` by default.
    pub dns: dns::NodeDns,
    /// Image garbage collection (`--image-gc-high-threshold`, ...); the kubelet's defaults.
    pub image_gc: images::ImageGcPolicy,
    /// The container runtime's CRI endpoint (`--container-runtime-endpoint`,
    /// `unix:///...`); `None`: a wasm-only node.
    pub container_runtime_endpoint: Option<String>,
    /// The deadline of CRI calls (`--runtime-request-timeout`, 2 minutes).
    pub runtime_request_timeout: Duration,
    /// Where the agent writes the CNI configuration of its container pods (`--cni-conf-dir`,
    /// containerd's CRI `conf_dir`; `/etc/cni/net.d`), on a routed node with a container
    /// runtime.
    pub cni_conf_dir: PathBuf,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("data_dir", &self.data_dir)
            .field("node_index", &self.node_index)
            .field("labels", &self.labels)
            .field("capacity", &self.capacity)
            .field("node_ip", &self.node_ip)
            .field("pod_network", &self.pod_network)
            .field("log_server", &self.log_server)
            .field("allowed_host_paths", &self.allowed_host_paths)
            .field("eviction_hard", &self.eviction_hard)
            .field("compile_timeout", &self.compile_timeout)
            .field("server_tls_bootstrap", &self.server_tls_bootstrap)
            .field("proxy_mode", &self.proxy_mode)
            .field("registries", &self.registries)
            .field("image_gc", &self.image_gc)
            .field("image_signature_policy", &self.image_signature_policy)
            .field(
                "container_runtime_endpoint",
                &self.container_runtime_endpoint,
            )
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Defaults: node index 1, no extra labels or taints, the machine's capacity, node IP
    /// 127.0.0.1, log server on 0.0.0.0:10250 with a self-signed certificate and no clients
    /// allowed until a client CA is configured.
    pub fn new(
        node_name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        client: kube::Client,
    ) -> Self {
        let node_name = node_name.into();
        AgentConfig {
            node_name: node_name.clone(),
            data_dir: data_dir.into(),
            client,
            node_index: 1,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            capacity: None,
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pod_network: PodNetwork::Loopback,
            kube_proxy_client: None,
            log_server: LogServerConfig {
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_LOG_PORT),
                tls: None,
                client_ca_pem: None,
                names: vec![node_name],
            },
            runtime: None,
            allowed_host_paths: Vec::new(),
            cluster_ca_pem: None,
            api_server: None,
            eviction_hard: node::eviction::EvictionHard::default(),
            compile_timeout: wasmkube_runtime::DEFAULT_COMPILE_TIMEOUT,
            guest_scheduling: wasmkube_runtime::DEFAULT_GUEST_SCHEDULING,
            client_rotation: None,
            kube_proxy_rotation: None,
            server_tls_bootstrap: false,
            proxy_mode: proxy::ProxyMode::None,
            registries: images::registry::RegistryConfig::default(),
            image_signature_policy: None,
            dns: dns::NodeDns {
                cluster_domain: "cluster.local".into(),
                ..dns::NodeDns::default()
            },
            image_gc: images::ImageGcPolicy::default(),
            container_runtime_endpoint: None,
            runtime_request_timeout: DEFAULT_RUNTIME_REQUEST_TIMEOUT,
            cni_conf_dir: PathBuf::from(DEFAULT_CNI_CONF_DIR),
        }
    }

    /// `<data_dir>/agent`.
    pub(crate) fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory cannot be used.
    #[error("cannot use {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The wasm runtime cannot be created.
    #[error("cannot start the wasm runtime: {0}")]
    Runtime(#[from] wasmkube_runtime::RuntimeError),
    /// The image store cannot be opened.
    #[error("cannot open the image store: {0}")]
    Images(#[from] images::ImageError),
    /// The log server cannot start.
    #[error(transparent)]
    LogServer(#[from] logs::server::LogServerError),
    /// The node index is out of range.
    #[error("node index {0} is out of range (1-254)")]
    NodeIndex(u8),
    /// Pod networking cannot be set up.
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// An `--allowed-host-path` cannot be used.
    #[error(transparent)]
    HostPaths(#[from] volumes::host_path::HostPathPolicyError),
    /// The image garbage collection policy cannot work.
    #[error(transparent)]
    ImageGc(#[from] images::ImageGcPolicyError),
    /// The container runtime (`--container-runtime-endpoint`) cannot be used.
    #[error(transparent)]
    ContainerRuntime(#[from] CriError),
}

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// The node's name.
    pub node_name: String,
    /// Where the log server listens.
    pub log_addr: SocketAddr,
    /// The log server's certificate (empty until the cluster issued it, with
    /// [`AgentConfig::server_tls_bootstrap`]).
    pub serving_certificate: Arc<certificates::CertificateSlot>,
    /// Ends when the agent has stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the agent; it runs until `shutdown` resolves. Registration with an unreachable
/// apiserver is retried in the background, so this returns once local setup is done.
pub async fn start(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningAgent, AgentError> {
    if config.node_index == 0 || config.node_index == 255 {
        return Err(AgentError::NodeIndex(config.node_index));
    }
    config.image_gc.validate()?;
    let agent_dir = config.agent_dir();
    let pods_dir = agent_dir.join("pods");
    for dir in [&config.data_dir, &agent_dir, &pods_dir] {
        create_private_dir(dir).map_err(|source| AgentError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let host_paths = volumes::HostPathPolicy::new(&config.allowed_host_paths, &config.data_dir)?;
    let mut info = node::info::MachineInfo::detect(&agent_dir);
    info.hostname = config.node_name.clone();
    let capacity = config
        .capacity
        .unwrap_or_else(|| Capacity::of_machine(&info));
    let runtime = match config.runtime.clone() {
        Some(r) => r,
        None => {
            let mut runtime = runtime_config(
                agent_dir.join(images::CODE_CACHE_DIR),
                capacity.pods,
                config.cluster_ca_pem.as_deref(),
            );
            runtime.compile_timeout = config.compile_timeout;
            runtime.guest_scheduling = config.guest_scheduling;
            wasmkube_runtime::Runtime::new(runtime)?
        }
    };
    let images = images::ImageStore::open(&images::ImageStore::dir_in_data_dir(&config.data_dir))?;
    import_airgap_images(&images, &agent_dir).await;
    let cri = match config.container_runtime_endpoint.as_deref() {
        Some(endpoint) => {
            Some(runtime::cri::connect(endpoint, config.runtime_request_timeout).await?)
        }
        None => {
            tracing::info!(
                "no --container-runtime-endpoint: this node runs wasm pods only (Node annotation {})",
                node::CONTAINER_RUNTIME_ANNOTATION
            );
            None
        }
    };

    let network = match config.pod_network {
        PodNetwork::Loopback => pod::sandbox::Network::loopback(config.node_index)?,
        PodNetwork::Routed => pod::sandbox::Network::routed().await?,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let log_registry = logs::LogRegistry::new();
    let serving_certificate = certificates::CertificateSlot::new(None);
    let serving_rotation = if config.server_tls_bootstrap {
        Some(serving_rotation(&config, &serving_certificate))
    } else {
        serving_certificate.set(logs::server::static_certificate(&config.log_server)?);
        None
    };
    let log_server = logs::server::start(
        config.log_server.clone(),
        Arc::clone(&serving_certificate),
        logs::auth::NodeAuthorizer::new(config.client.clone(), config.node_name.clone()),
        log_registry.clone(),
        pods_dir.clone(),
        cri.as_ref().map(|(client, _)| client.clone()),
        stopped(),
    )
    .await?;

    // Ready at start: the handshake has just succeeded.
    let runtime_health = cri
        .as_ref()
        .map(|_| tokio::sync::watch::channel(runtime::cri::RuntimeHealth::Ready));
    let settings = node::NodeSettings {
        name: config.node_name.clone(),
        labels: config.labels.clone(),
        taints: config.taints.clone(),
        capacity,
        address: config.node_ip,
        log_port: log_server.addr.port(),
        data_dir: agent_dir.clone(),
        eviction: config.eviction_hard,
        container_runtime: cri.as_ref().map(|(_, info)| info.clone()),
        runtime_health: runtime_health.as_ref().map(|(_, rx)| rx.clone()),
    };
    let policies = match &config.kube_proxy_client {
        Some(cluster_wide) => {
            network::policy::NetworkPolicies::start(cluster_wide.clone(), vec![config.node_ip])
        }
        None => {
            tracing::warn!(
                "NetworkPolicy is not enforced for this node's wasm pods: it needs a cluster-wide \
                 identity to watch pods, namespaces and policies (system:kube-proxy)"
            );
            network::policy::NetworkPolicies::disabled()
        }
    };
    let ctx = Arc::new(pod::PodContext {
        client: config.client.clone(),
        node_name: config.node_name.clone(),
        host_ip: config.node_ip,
        runtime: Arc::new(runtime::wasm::WasmRuntime::new(runtime)),
        cri: cri.map(|(client, _)| client),
        images,
        registries: Arc::new(images::registry::Registries::new(config.registries.clone())),
        signatures: Arc::new(images::signature::SignatureVerifier::new(
            config.image_signature_policy.clone(),
        )),
        events: EventRecorder::new(
            config.client.clone(),
            Reporter {
                component: EVENT_COMPONENT.to_string(),
                host: Some(config.node_name.clone()),
                instance: config.node_name.clone(),
            },
            Arc::new(EventMetrics::default()),
        ),
        logs: log_registry,
        pods_dir,
        allocatable: capacity.allocatable(&config.eviction_hard),
        network,
        host_paths,
        api_server: config.api_server.as_deref().and_then(service_host_port),
        tokens: volumes::ServiceAccountTokens::new(config.client.clone()),
        dns: config.dns.clone(),
        policies,
    });
    let runtime_monitor = match (ctx.cri.clone(), runtime_health) {
        (Some(cri_client), Some((tx, _))) => {
            let events = ctx.events.clone();
            let node = node_reference(&config.node_name);
            Some(tokio::spawn(runtime::cri::monitor(
                cri_client,
                tx,
                move |health| {
                    let (type_, reason, message) = match health {
                        runtime::cri::RuntimeHealth::Ready => (
                            wasmkube_client::events::EventType::Normal,
                            "ContainerRuntimeReady",
                            "the container runtime is back".to_owned(),
                        ),
                        runtime::cri::RuntimeHealth::Down(why) => (
                            wasmkube_client::events::EventType::Warning,
                            "ContainerRuntimeUnhealthy",
                            why.clone(),
                        ),
                    };
                    events.record(node.clone(), type_, reason, message);
                },
                stopped(),
            )))
        }
        _ => None,
    };
    let image_gc = {
        let events = ctx.events.clone();
        let node = node_reference(&config.node_name);
        tokio::spawn(images::gc::run(
            ctx.images.clone(),
            config.image_gc,
            move |message| {
                tracing::warn!(%message, "image garbage collection could not free enough");
                events.record(
                    node.clone(),
                    wasmkube_client::events::EventType::Warning,
                    "FreeDiskSpaceFailed",
                    message,
                );
            },
            stopped(),
        ))
    };
    let proxy = proxy::start(
        config.client.clone(),
        proxy::ProxyConfig::new(
            config.proxy_mode,
            config.node_name.clone(),
            match config.node_ip {
                IpAddr::V4(ip) => vec![ip],
                IpAddr::V6(_) => Vec::new(),
            },
        ),
        stopped(),
    );
    let client = config.client.clone();
    let node_name = config.node_name.clone();
    let nodes_client = config
        .kube_proxy_client
        .clone()
        .unwrap_or_else(|| client.clone());
    let rotation = config.client_rotation.map(|rotation| {
        tokio::spawn(certificates::rotation::run(
            client.clone(),
            rotation,
            stopped.clone(),
        ))
    });
    let kube_proxy_rotation = config.kube_proxy_rotation.map(|rotation| {
        tokio::spawn(certificates::rotation::run(
            client.clone(),
            rotation,
            stopped.clone(),
        ))
    });
    let cni_conf_dir = config.cni_conf_dir.clone();
    let cni_ipam_dir = agent_dir.join("cni").join("networks");
    let task = tokio::spawn(async move {
        let registration = register_until_done(&client, &settings, &info, stopped());
        let Some(status) = registration.await else {
            return;
        };
        // Asked for once the Node has its addresses: the server approves a serving
        // certificate only for the names and addresses the Node reports.
        let serving = serving_rotation.map(|rotation| {
            tokio::spawn(certificates::rotation::run(
                client.clone(),
                rotation,
                stopped.clone(),
            ))
        });
        let lease = tokio::spawn(node::lease::run(
            client.clone(),
            node_name.clone(),
            stopped(),
        ));
        let node_status = tokio::spawn(node::run_status(
            client.clone(),
            settings,
            info,
            Some(status),
            stopped(),
        ));
        let mut routes = None;
        if let Some(netlink) = ctx.network.netlink() {
            // Pods start once their IPs can be had, and keep those their status shows.
            let Some((network, prefix)) =
                network::host_gw::wait_for_pod_cidr(&client, &node_name, stopped()).await
            else {
                return;
            };
            let shared = ctx.cri.is_some();
            match ctx.network.set_pod_cidr(network, prefix, shared) {
                Ok(()) => {
                    tracing::info!(pod_cidr = %format!("{network}/{prefix}"), "pods get IPs from the Node's pod CIDR");
                    if shared {
                        write_cni_config(&cni_conf_dir, &cni_ipam_dir, network, prefix);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the Node's pod CIDR is not usable; pods get no IPs")
                }
            }
            routes = Some(tokio::spawn(network::host_gw::run(
                netlink.clone(),
                nodes_client,
                node_name.clone(),
                stopped(),
            )));
        }
        pod::run(ctx, stopped()).await;
        if let Some(routes) = routes {
            let _ = routes.await;
        }
        for rotation in [rotation, kube_proxy_rotation, serving]
            .into_iter()
            .flatten()
        {
            let _ = rotation.await;
        }
        let _ = lease.await;
        let _ = node_status.await;
        let _ = log_server.task.await;
        let _ = proxy.task.await;
        let _ = image_gc.await;
        if let Some(monitor) = runtime_monitor {
            let _ = monitor.await;
        }
    });
    let supervisor = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = task.await;
    });
    Ok(RunningAgent {
        node_name: config.node_name,
        log_addr: log_server.addr,
        serving_certificate,
        task: supervisor,
    })
}

/// The serving certificate's renewal: for the node's name and address, stored in the pki
/// directory; a stored certificate still usable for them is put in `slot` at once.
/// Imports the images of the air-gap directory (`<data-dir>/agent/image-imports/`) before
/// any pod starts; each failure is logged and skipped.
/// The reference of the node's own events (the kubelet's uses the node's name as its UID).
fn node_reference(node_name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node_name.to_owned()),
        uid: Some(node_name.to_owned()),
        ..Default::default()
    }
}

/// Writes the CNI configuration of the node's container pods (the upper half of its pod
/// CIDR, `network::cni`) where the container runtime reads it; a failure is logged (the
/// runtime then says "cni plugin not initialized" for every sandbox, which names the cause).
fn write_cni_config(conf_dir: &Path, ipam_dir: &Path, network: std::net::Ipv4Addr, prefix: u8) {
    let cni = network::cni::CniNetwork::upper_half(network, prefix, ipam_dir.to_owned());
    match network::cni::write_conflist(conf_dir, network::cni::CONFLIST_FILE, &cni) {
        Ok((path, _)) => tracing::info!(
            path = %path.display(),
            range = %format!("{}-{}", cni.range_start, cni.range_end),
            "container pods get IPs from the upper half of the pod CIDR through CNI"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot write the CNI configuration of container pods")
        }
    }
}

async fn import_airgap_images(images: &images::ImageStore, agent_dir: &Path) {
    let dir = agent_dir.join(images::airgap::AIRGAP_DIR);
    let store = images.clone();
    let scan = dir.clone();
    let results = tokio::task::spawn_blocking(move || images::airgap::import_dir(&store, &scan))
        .await
        .unwrap_or_default();
    for import in results {
        match import.result {
            Ok(imported) => {
                for image in imported {
                    tracing::info!(
                        path = %import.path.display(),
                        image = image.name.as_deref().unwrap_or(&image.digest),
                        "imported an image from the air-gap directory"
                    );
                }
            }
            Err(error) => tracing::warn!(
                path = %import.path.display(),
                %error,
                "an entry of the air-gap image directory could not be imported; skipped"
            ),
        }
    }
}

fn serving_rotation(
    config: &AgentConfig,
    slot: &Arc<certificates::CertificateSlot>,
) -> certificates::rotation::Rotation {
    let request = certificates::request::CertificateRequest::node_serving(
        &config.node_name,
        vec![config.node_name.clone()],
        vec![config.node_ip],
    );
    let dir = certificates::pki_dir(&config.data_dir);
    if let Some(ca_pem) = config.log_server.client_ca_pem.as_deref()
        && let Some(stored) = certificates::load_serving(&dir, ca_pem, &request)
    {
        slot.set(stored);
    }
    certificates::rotation::Rotation {
        slot: Arc::clone(slot),
        request,
        dir,
        file: certificates::SERVING_FILE,
    }
}

/// Creates `dir` (and its parents) readable only by this user (0700), or makes an existing
/// one so: the data directory holds keys, the store, compiled code and pods' secrets.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        if std::fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Registers the node, retrying with back-off until it works or `stopped` resolves.
async fn register_until_done(
    client: &kube::Client,
    settings: &node::NodeSettings,
    info: &node::info::MachineInfo,
    stopped: impl Future<Output = ()>,
) -> Option<k8s_openapi::api::core::v1::NodeStatus> {
    tokio::pin!(stopped);
    let mut retry = Duration::from_millis(200);
    loop {
        match node::register(client, settings, info).await {
            Ok(status) => return Some(status),
            Err(e) => {
                tracing::warn!(error = %e, node = %settings.name, "registering the node failed; retrying")
            }
        }
        tokio::select! {
            () = &mut stopped => return None,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(10));
    }
}

/// Instances the runtime's pool holds beyond one per pod: in-flight HTTP requests of
/// instance-per-request pods and init containers.
const RUNTIME_INSTANCE_HEADROOM: u32 = 512;

/// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` of an apiserver URL.
fn service_host_port(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let authority = uri.authority()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(443);
    Some((host, port.to_string()))
}

/// The runtime settings for a node of `pods` pods: the instance pool holds one running
/// instance per pod plus headroom, and never less than the runtime's default; guests'
/// outgoing HTTPS trusts `cluster_ca` too.
fn runtime_config(
    cache_dir: PathBuf,
    pods: i64,
    cluster_ca: Option<&str>,
) -> wasmkube_runtime::RuntimeConfig {
    let mut config = wasmkube_runtime::RuntimeConfig::new(cache_dir);
    if let Some(ca) = cluster_ca {
        match wasmkube_runtime::TlsRoots::with_pem(ca) {
            Ok(roots) => config.outgoing_tls_roots = roots,
            Err(e) => tracing::warn!(error = %e, "guests' HTTPS will not trust the cluster CA"),
        }
    }
    let pods = u32::try_from(pods.max(0)).unwrap_or(u32::MAX);
    config.total_instances = config
        .total_instances
        .max(pods.saturating_add(RUNTIME_INSTANCE_HEADROOM));
    config
}

#[cfg(test)]
mod runtime_pool_tests {
    use super::*;

    #[test]
    fn the_instance_pool_grows_with_the_nodes_pod_capacity() {
        let small = runtime_config(PathBuf::from("c"), 110, None);
        assert_eq!(
            small.total_instances,
            wasmkube_runtime::RuntimeConfig::new("c").total_instances
        );
        let big = runtime_config(PathBuf::from("c"), 5000, None);
        assert_eq!(big.total_instances, 5000 + RUNTIME_INSTANCE_HEADROOM);
    }

    #[test]
    fn a_runtime_for_ten_thousand_pods_can_reserve_its_pool() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = runtime_config(dir.path().join("cache"), 10_000, None);
        if let Err(e) = wasmkube_runtime::Runtime::new(config) {
            panic!("a pool for 10,000 pods: {e}");
        }
    }
}
