//! The agent's Node: registration, status and heartbeat.
//!
//! On start the agent creates its Node (labels, taints, then status) or, when it exists,
//! updates the labels it owns and the status. [`run_status`] then refreshes the status every
//! [`STATUS_CHECK`], posting it when something besides heartbeat times changed or every
//! [`STATUS_REPORT`]; [`lease::run`] renews the Lease in `kube-node-lease` every 10 s, the
//! heartbeat the node lifecycle controller watches. Both keep retrying through apiserver
//! outages.
//!
//! The status carries capacity and allocatable (cpu, memory, pods, ephemeral-storage;
//! allocatable memory is capacity minus the kubelet's default 100Mi hard eviction
//! threshold), addresses (InternalIP and Hostname), nodeInfo, the conditions Ready,
//! MemoryPressure, DiskPressure and PIDPressure with the kubelet's reasons and messages, and
//! `daemonEndpoints.kubeletEndpoint.port`, the agent's log server.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeRuntimeHandler,
    NodeRuntimeHandlerFeatures, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use wasmkube_client::status::{is_already_exists, is_not_found};

pub mod eviction;
pub mod info;
pub(crate) mod lease;

use eviction::EvictionHard;
use info::{CONTAINER_RUNTIME_VERSION, KUBELET_VERSION, MachineInfo};

/// How often the node status is recomputed.
pub const STATUS_CHECK: Duration = Duration::from_secs(10);
/// The status is posted at least this often, even unchanged.
pub const STATUS_REPORT: Duration = Duration::from_secs(60);
/// The label saying this node runs wasm with wasmtime.
pub const RUNTIME_LABEL_WASMTIME: &str = "wasmkube.io/runtime.wasmtime";
/// The annotation that names the node's container runtime (`containerd 1.6.20 at
/// unix:///run/containerd/containerd.sock`), or says the node is wasm-only.
pub const CONTAINER_RUNTIME_ANNOTATION: &str = "wasmkube.io/container-runtime";
/// The value of [`CONTAINER_RUNTIME_ANNOTATION`] on a node without a container runtime.
pub const WASM_ONLY: &str = "none: wasm-only node (no --container-runtime-endpoint)";
/// The handler of the wasm runtime in `status.runtimeHandlers` and RuntimeClasses.
pub const WASMTIME_HANDLER: &str = "wasmtime";

/// The label saying this node runs the runtime handler `handler` (`wasmkube.io/runtime.runc`),
/// what a RuntimeClass's `scheduling.nodeSelector` selects; `None` when the handler's name
/// cannot be a label name.
pub fn runtime_label(handler: &str) -> Option<String> {
    let valid = !handler.is_empty()
        && handler.len() <= 63 - "runtime.".len()
        && handler
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && handler.starts_with(|c: char| c.is_ascii_alphanumeric())
        && handler.ends_with(|c: char| c.is_ascii_alphanumeric());
    valid.then(|| format!("wasmkube.io/runtime.{handler}"))
}

/// The container runtime behind `--container-runtime-endpoint`, as the Node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntimeInfo {
    /// `unix:///...`.
    pub endpoint: String,
    /// The runtime's name (`containerd`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its runtime handlers (RuntimeClass handlers).
    pub handlers: Vec<RuntimeHandlerInfo>,
}

/// One runtime handler (`status.runtimeHandlers[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHandlerInfo {
    /// Its name (`runc`).
    pub name: String,
    /// Whether it supports recursively read-only mounts.
    pub recursive_read_only_mounts: bool,
    /// Whether it supports user namespaces.
    pub user_namespaces: bool,
}

/// Default pods per node, as the kubelet's `--max-pods`.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// Resources the node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Most pods.
    pub pods: i64,
    /// Disk of the data directory, bytes.
    pub ephemeral_storage_bytes: i64,
}

impl Capacity {
    /// The machine's real CPUs, memory and disk, with [`DEFAULT_MAX_PODS`].
    pub fn of_machine(info: &MachineInfo) -> Capacity {
        Capacity {
            cpu_millis: info.cpus * 1000,
            memory_bytes: info.memory_bytes,
            pods: DEFAULT_MAX_PODS,
            ephemeral_storage_bytes: info.disk_bytes,
        }
    }

    /// Allocatable: capacity minus the hard eviction thresholds.
    pub fn allocatable(&self, eviction: &EvictionHard) -> Capacity {
        let held = |t: Option<eviction::Threshold>, capacity: i64| {
            t.map_or(0, |t| t.bytes(capacity)).clamp(0, capacity.max(0))
        };
        Capacity {
            memory_bytes: self.memory_bytes - held(eviction.memory_available, self.memory_bytes),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes
                - held(eviction.nodefs_available, self.ephemeral_storage_bytes),
            ..*self
        }
    }

    fn quantities(&self) -> BTreeMap<String, Quantity> {
        let cpu = if self.cpu_millis % 1000 == 0 {
            (self.cpu_millis / 1000).to_string()
        } else {
            format!("{}m", self.cpu_millis)
        };
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu)),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", self.memory_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity(self.pods.to_string())),
            (
                "ephemeral-storage".to_string(),
                Quantity(format!("{}Ki", self.ephemeral_storage_bytes / 1024)),
            ),
        ])
    }
}

/// What the agent says about its node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Node name.
    pub name: String,
    /// Labels besides the well-known ones.
    pub labels: BTreeMap<String, String>,
    /// Taints set when the node is created.
    pub taints: Vec<Taint>,
    /// Capacity.
    pub capacity: Capacity,
    /// The InternalIP address.
    pub address: IpAddr,
    /// The log server's port.
    pub log_port: u16,
    /// Where disk pressure is measured.
    pub data_dir: PathBuf,
    /// The hard eviction thresholds (`--eviction-hard`).
    pub eviction: EvictionHard,
    /// The container runtime (CRI); `None`: a wasm-only node.
    pub container_runtime: Option<ContainerRuntimeInfo>,
    /// The container runtime's health as the agent last saw it (condition
    /// [`CONTAINER_RUNTIME_CONDITION`]); `None` on a wasm-only node.
    pub runtime_health: Option<tokio::sync::watch::Receiver<crate::runtime::cri::RuntimeHealth>>,
}

/// The Node condition saying whether the container runtime answers: wasmkube's own, beside
/// Ready (the kubelet folds a runtime that is down into Ready=False; here the node keeps
/// running wasm pods, so it stays Ready and says what it cannot run).
pub const CONTAINER_RUNTIME_CONDITION: &str = "ContainerRuntimeReady";

impl NodeSettings {
    /// All labels: the well-known ones, the runtime label, then the configured ones.
    pub fn all_labels(&self, info: &MachineInfo) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), info.architecture.clone()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "beta.kubernetes.io/arch".to_string(),
                info.architecture.clone(),
            ),
            (
                "node.kubernetes.io/instance-type".to_string(),
                "wasmkube".to_string(),
            ),
            (RUNTIME_LABEL_WASMTIME.to_string(), "true".to_string()),
        ]);
        for handler in self.container_runtime.iter().flat_map(|r| &r.handlers) {
            if let Some(label) = runtime_label(&handler.name) {
                labels.insert(label, "true".to_string());
            }
        }
        labels.extend(self.labels.clone());
        labels
    }

    /// The annotations the agent owns: the node's TTL and [`CONTAINER_RUNTIME_ANNOTATION`].
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let runtime = match &self.container_runtime {
            Some(r) => format!("{} {} at {}", r.name, r.version, r.endpoint),
            None => WASM_ONLY.to_string(),
        };
        BTreeMap::from([
            ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
            (CONTAINER_RUNTIME_ANNOTATION.to_string(), runtime),
        ])
    }

    /// `status.runtimeHandlers`: `wasmtime`, then the container runtime's handlers.
    fn runtime_handlers(&self) -> Vec<NodeRuntimeHandler> {
        let features = |rro: bool, userns: bool| {
            Some(NodeRuntimeHandlerFeatures {
                recursive_read_only_mounts: Some(rro),
                user_namespaces: Some(userns),
            })
        };
        let mut handlers = vec![NodeRuntimeHandler {
            name: Some(WASMTIME_HANDLER.to_string()),
            features: features(false, false),
        }];
        for h in self.container_runtime.iter().flat_map(|r| &r.handlers) {
            if h.name != WASMTIME_HANDLER {
                handlers.push(NodeRuntimeHandler {
                    name: Some(h.name.clone()),
                    features: features(h.recursive_read_only_mounts, h.user_namespaces),
                });
            }
        }
        handlers
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let before = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match before {
        Some(b) if b.status == status && b.last_transition_time.is_some() => {
            b.last_transition_time.clone()
        }
        _ => Some(Time(now)),
    };
    NodeCondition {
        type_: type_.to_string(),
        status,
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: transition,
    }
}

/// The node status now. `previous` (the status last posted) keeps transition times.
pub fn node_status(
    settings: &NodeSettings,
    info: &MachineInfo,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let eviction = &settings.eviction;
    let memory_pressure = info.memory_available_bytes > 0
        && EvictionHard::under(
            eviction.memory_available,
            info.memory_available_bytes,
            info.memory_bytes,
        );
    let disk_pressure = EvictionHard::under(
        eviction.nodefs_available,
        info.disk_available_bytes,
        info.disk_bytes,
    );
    let conditions = vec![
        if memory_pressure {
            condition(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                previous,
                now,
            )
        } else {
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                previous,
                now,
            )
        },
        if disk_pressure {
            condition(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                previous,
                now,
            )
        } else {
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                previous,
                now,
            )
        },
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            previous,
            now,
        ),
        condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            previous,
            now,
        ),
    ];
    let mut conditions = conditions;
    if let Some(health) = &settings.runtime_health {
        let health = health.borrow().clone();
        conditions.push(match health {
            crate::runtime::cri::RuntimeHealth::Ready => condition(
                CONTAINER_RUNTIME_CONDITION,
                true,
                "ContainerRuntimeReady",
                "the container runtime answers and is ready",
                previous,
                now,
            ),
            crate::runtime::cri::RuntimeHealth::Down(why) => condition(
                CONTAINER_RUNTIME_CONDITION,
                false,
                "ContainerRuntimeDown",
                &format!("{why}; container pods cannot start or stop until it is back, wasm pods are unaffected"),
                previous,
                now,
            ),
        });
    }
    NodeStatus {
        capacity: Some(settings.capacity.quantities()),
        allocatable: Some(
            settings
                .capacity
                .allocatable(&settings.eviction)
                .quantities(),
        ),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: settings.address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: settings.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(settings.log_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: info.architecture.clone(),
            boot_id: info.boot_id.clone(),
            // The kubelet's `<runtime>://<version>` of its CRI runtime; the wasm runtime's
            // on a wasm-only node.
            container_runtime_version: settings.container_runtime.as_ref().map_or_else(
                || CONTAINER_RUNTIME_VERSION.into(),
                |r| format!("{}://{}", r.name, r.version),
            ),
            kernel_version: info.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: info.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: info.os_image.clone(),
            system_uuid: info.machine_id.clone(),
            swap: None,
        }),
        runtime_handlers: Some(settings.runtime_handlers()),
        ..Default::default()
    }
}

/// The status with heartbeat times removed, to tell whether anything changed.
fn without_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
    }
    s
}

/// Creates the node, or updates the labels the agent owns on an existing one, then posts its
/// status. Returns the posted status.
pub async fn register(
    client: &kube::Client,
    settings: &NodeSettings,
    info: &MachineInfo,
) -> Result<NodeStatus, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = settings.all_labels(info);
    let existing = nodes.get_opt(&settings.name).await?;
    let previous = match existing {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    labels: Some(labels),
                    annotations: Some(settings.annotations()),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    taints: (!settings.taints.is_empty()).then(|| settings.taints.clone()),
                    ..Default::default()
                }),
                status: None,
            };
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => tracing::info!(node = %settings.name, "registered the node"),
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(e),
            }
            None
        }
        Some(node) => {
            let patch = serde_json::json!({"metadata": {
                "labels": labels,
                "annotations": settings.annotations(),
            }});
            nodes
                .patch(
                    &settings.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            node.status
        }
    };
    let status = node_status(settings, info, previous.as_ref(), Timestamp::now());
    post_status(&nodes, &settings.name, &status).await?;
    Ok(status)
}

async fn post_status(
    nodes: &Api<Node>,
    name: &str,
    status: &NodeStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "status": status });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Keeps the node status fresh until `shutdown` resolves: recomputed every
/// [`STATUS_CHECK`], posted on change or every [`STATUS_REPORT`]; errors are retried at the
/// next check. If the node object disappears, it is registered again.
pub async fn run_status(
    client: kube::Client,
    settings: NodeSettings,
    mut info: MachineInfo,
    mut last: Option<NodeStatus>,
    shutdown: impl Future<Output = ()>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last_post = Instant::now();
    let mut runtime_health = settings.runtime_health.clone();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(STATUS_CHECK) => {}
            // The container runtime went down or came back: said at once.
            Ok(()) = async {
                match runtime_health.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        info.refresh(&settings.data_dir);
        let status = node_status(&settings, &info, last.as_ref(), Timestamp::now());
        let changed = last
            .as_ref()
            .is_none_or(|l| without_heartbeats(l) != without_heartbeats(&status));
        if !changed && last_post.elapsed() < STATUS_REPORT {
            continue;
        }
        match post_status(&nodes, &settings.name, &status).await {
            Ok(()) => {
                last = Some(status);
                last_post = Instant::now();
            }
            Err(e) if is_not_found(&e) => {
                tracing::warn!(node = %settings.name, "the node object is gone; registering again");
                if let Ok(s) = register(&client, &settings, &info).await {
                    last = Some(s);
                    last_post = Instant::now();
                }
            }
            Err(e) => tracing::warn!(error = %e, "posting the node status failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NodeSettings {
        NodeSettings {
            name: "n1".into(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            taints: Vec::new(),
            capacity: Capacity {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
                pods: 110,
                ephemeral_storage_bytes: 100 << 30,
            },
            address: "127.0.0.1".parse().unwrap(),
            log_port: 10250,
            data_dir: PathBuf::from("/tmp"),
            eviction: EvictionHard::default(),
            container_runtime: None,
            runtime_health: None,
        }
    }

    fn info() -> MachineInfo {
        MachineInfo {
            cpus: 2,
            memory_bytes: 4 << 30,
            memory_available_bytes: 2 << 30,
            disk_bytes: 100 << 30,
            disk_available_bytes: 50 << 30,
            os_image: "Debian".into(),
            kernel_version: "6.1".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            architecture: "amd64".into(),
            hostname: "h".into(),
        }
    }

    #[test]
    fn status_reports_capacity_allocatable_and_kubelet_conditions() {
        let s = node_status(&settings(), &info(), None, Timestamp::now());
        let cap = s.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        let alloc = s.allocatable.unwrap();
        assert_eq!(alloc["memory"].0, format!("{}Ki", (4 << 20) - 100 * 1024));
        let conds = s.conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let mem = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.reason.as_deref(), Some("KubeletHasSufficientMemory"));
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        assert_eq!(s.node_info.unwrap().kubelet_version, KUBELET_VERSION);
    }

    #[test]
    fn transition_times_stay_while_conditions_hold() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let first = node_status(&settings(), &info(), None, t0);
        let second = node_status(&settings(), &info(), Some(&first), t1);
        let ready = |s: &NodeStatus| {
            s.conditions
                .clone()
                .unwrap()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
        };
        assert_eq!(ready(&second).last_transition_time, Some(Time(t0)));
        assert_eq!(ready(&second).last_heartbeat_time, Some(Time(t1)));
        assert_eq!(without_heartbeats(&first), without_heartbeats(&second));
        let mut low = info();
        low.memory_available_bytes = 10 << 20;
        let third = node_status(&settings(), &low, Some(&second), t1);
        assert_ne!(without_heartbeats(&second), without_heartbeats(&third));
    }

    #[test]
    fn labels_include_well_known_and_runtime_labels() {
        let labels = settings().all_labels(&info());
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels[RUNTIME_LABEL_WASMTIME], "true");
        assert_eq!(labels["zone"], "a");
    }

    #[test]
    fn a_wasm_only_node_says_so_and_lists_only_wasmtime() {
        let s = settings();
        let status = node_status(&s, &info(), None, Timestamp::now());
        let handlers = status.runtime_handlers.unwrap();
        assert_eq!(handlers.len(), 1);
        assert_eq!(handlers[0].name.as_deref(), Some("wasmtime"));
        assert_eq!(s.annotations()[CONTAINER_RUNTIME_ANNOTATION], WASM_ONLY);
        assert!(
            !s.all_labels(&info())
                .contains_key("wasmkube.io/runtime.runc")
        );
    }

    #[test]
    fn a_node_with_a_container_runtime_lists_its_handlers_and_labels_them() {
        let mut s = settings();
        s.container_runtime = Some(ContainerRuntimeInfo {
            endpoint: "unix:///run/containerd/containerd.sock".into(),
            name: "containerd".into(),
            version: "1.6.20".into(),
            handlers: vec![
                RuntimeHandlerInfo {
                    name: "runc".into(),
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                },
                RuntimeHandlerInfo {
                    name: "bad/name".into(),
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                },
            ],
        });
        let status = node_status(&s, &info(), None, Timestamp::now());
        let names: Vec<_> = status
            .runtime_handlers
            .unwrap()
            .into_iter()
            .filter_map(|h| h.name)
            .collect();
        assert_eq!(names, ["wasmtime", "runc", "bad/name"]);
        assert_eq!(
            status.node_info.unwrap().container_runtime_version,
            "containerd://1.6.20"
        );
        let labels = s.all_labels(&info());
        assert_eq!(labels["wasmkube.io/runtime.runc"], "true");
        assert_eq!(labels[RUNTIME_LABEL_WASMTIME], "true");
        assert_eq!(labels.keys().filter(|k| k.contains("bad")).count(), 0);
        assert_eq!(
            s.annotations()[CONTAINER_RUNTIME_ANNOTATION],
            "containerd 1.6.20 at unix:///run/containerd/containerd.sock"
        );
    }
}
