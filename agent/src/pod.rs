//! The pods bound to this node: one watch, one worker task per pod.
//!
//! [`run`] watches pods with `fieldSelector=spec.nodeName=<node>` (kube-runtime's watcher,
//! with its back-off: an apiserver outage only pauses the watch; running pods keep running).
//! Each pod UID gets a [`worker`] that drives the pod's [`lifecycle`] and owns everything of
//! that pod (its instances, IP, volumes, probes, status writes). The manager only routes the
//! latest pod object to the worker, and tells it when the object is gone. After a re-list
//! (the watch restarted, or the agent itself restarted) pods missing from the list are gone.
//!
//! ```text
//! watcher ──Apply/Delete──▶ manager ──watch::Sender<PodMessage>──▶ worker (per pod UID)
//!                                                                   ├─ lifecycle (pure)
//!                                                                   ├─ runtime: start/stop
//!                                                                   ├─ probes
//!                                                                   └─ StatusWriter ─▶ pods/status
//! ```

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmkube_client::events::EventRecorder;

use crate::images::ImageStore;
use crate::logs::LogRegistry;
use crate::node::Capacity;
use crate::runtime::ContainerRuntime;

pub(crate) mod backoff;
pub(crate) mod cri;
pub(crate) mod env;
pub(crate) mod hooks;
pub(crate) mod lifecycle;
pub(crate) mod sandbox;
pub(crate) mod signature;
pub(crate) mod start;
pub(crate) mod worker;

/// What every pod worker shares.
pub(crate) struct PodContext {
    /// The apiserver.
    pub(crate) client: kube::Client,
    /// This node.
    pub(crate) node_name: String,
    /// The node's IP (`status.hostIP`).
    pub(crate) host_ip: IpAddr,
    /// Runs containers.
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
    /// The container runtime (CRI) of `--container-runtime-endpoint`; `None`: wasm only.
    pub(crate) cri: Option<wasmkube_cri::Client>,
    /// The node's images.
    pub(crate) images: ImageStore,
    /// Where images missing from the store are pulled from.
    pub(crate) registries: Arc<crate::images::registry::Registries>,
    /// The image signature policy: which namespaces need signed images.
    pub(crate) signatures: Arc<crate::images::signature::SignatureVerifier>,
    /// Events.
    pub(crate) events: EventRecorder,
    /// Log files and pod names for the log server.
    pub(crate) logs: LogRegistry,
    /// `<agent-dir>/pods`: per-pod volumes and logs.
    pub(crate) pods_dir: PathBuf,
    /// Allocatable resources (defaults of `resourceFieldRef` without limits).
    pub(crate) allocatable: Capacity,
    /// Pod IPs.
    pub(crate) network: sandbox::Network,
    /// Which host directories hostPath volumes may mount.
    pub(crate) host_paths: crate::volumes::HostPathPolicy,
    /// The apiserver as containers reach it: `KUBERNETES_SERVICE_HOST`/`_PORT`.
    pub(crate) api_server: Option<(String, String)>,
    /// Service-account tokens of projected volumes (requested, cached, renewed).
    pub(crate) tokens: crate::volumes::ServiceAccountTokens,
    /// The node's DNS settings: wasm pods resolve names as their resolv.conf says.
    pub(crate) dns: crate::dns::NodeDns,
    /// NetworkPolicy: each wasm pod's connect policy comes from here (its informers run
    /// while the agent does).
    pub(crate) policies: crate::network::policy::NetworkPolicies,
}

impl std::fmt::Debug for PodContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodContext")
            .field("node_name", &self.node_name)
            .field("pods_dir", &self.pods_dir)
            .finish_non_exhaustive()
    }
}

/// What the manager tells a worker.
#[derive(Debug, Clone)]
pub(crate) enum PodMessage {
    /// The latest object.
    Update(Arc<Pod>),
    /// The object is gone from the API: stop everything now.
    Gone,
}

struct WorkerHandle {
    tx: watch::Sender<PodMessage>,
    task: JoinHandle<()>,
}

/// Watches this node's pods and runs a worker per pod until `shutdown` resolves.
pub(crate) async fn run(ctx: Arc<PodContext>, shutdown: impl Future<Output = ()>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut stream = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    // UIDs whose worker finished (the pod was deleted): late events must not revive them.
    let mut retired: HashSet<String> = HashSet::new();
    let mut listing: Option<Vec<Pod>> = None;
    let mut first_listing = true;
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            event = stream.next() => event,
        };
        workers.retain(|uid, w| {
            let done = w.task.is_finished();
            if done {
                ctx.images.pod_gone(uid);
                retired.insert(uid.clone());
            }
            !done
        });
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching pods failed; retrying");
                continue;
            }
            None => break,
        };
        match event {
            Event::Init => listing = Some(Vec::new()),
            Event::InitApply(pod) => match listing.as_mut() {
                Some(list) => list.push(pod),
                None => dispatch(&ctx, &mut workers, &retired, pod),
            },
            Event::InitDone => {
                if let Some(list) = listing.take() {
                    // Pods keep the IPs their status shows: register them all before any
                    // worker allocates one for a new pod.
                    for pod in &list {
                        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
                        if let (Some(uid), Some(Ok(ip))) =
                            (pod.metadata.uid.as_deref(), ip.map(str::parse))
                        {
                            ctx.network.restore(uid, ip);
                        }
                    }
                    if first_listing {
                        // Before any worker allocates: what no pod holds now is stale.
                        ctx.network.remove_stale_addresses().await;
                    }
                    let seen: HashSet<String> =
                        list.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                    for pod in list {
                        dispatch(&ctx, &mut workers, &retired, pod);
                    }
                    if first_listing {
                        first_listing = false;
                        remove_stale_pod_dirs(&ctx.pods_dir, &seen).await;
                        // Sandboxes (and their containers) of pods deleted while the agent
                        // was down; a bound pod's worker replaces its own old sandbox.
                        if let Some(cri) = &ctx.cri {
                            cri::remove_orphans(cri, &seen).await;
                        }
                    }
                    retired.retain(|uid| seen.contains(uid));
                    for (uid, w) in &workers {
                        if !seen.contains(uid) {
                            w.tx.send_replace(PodMessage::Gone);
                        }
                    }
                }
            }
            Event::Apply(pod) => dispatch(&ctx, &mut workers, &retired, pod),
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_ref() {
                    retired.remove(uid);
                    if let Some(w) = workers.get(uid) {
                        w.tx.send_replace(PodMessage::Gone);
                    }
                }
            }
        }
    }
    // The agent is stopping: each worker stops its instances (they would end with the
    // process anyway) and leaves its pod's files and status for the next start to adopt.
    let tasks: Vec<JoinHandle<()>> = workers.into_values().map(|w| w.task).collect();
    let stopping = futures::future::join_all(tasks);
    if tokio::time::timeout(std::time::Duration::from_secs(15), stopping)
        .await
        .is_err()
    {
        tracing::warn!("some pod workers did not stop in time");
    }
}

/// Sends the pod to its worker, starting one for a new UID.
fn dispatch(
    ctx: &Arc<PodContext>,
    workers: &mut HashMap<String, WorkerHandle>,
    retired: &HashSet<String>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if retired.contains(&uid) {
        return;
    }
    // Image GC keeps what the node's pods use, from before their workers start.
    ctx.images.pod_uses(&uid, container_images(&pod));
    let pod = Arc::new(pod);
    if let Some(w) = workers.get(&uid) {
        w.tx.send_replace(PodMessage::Update(pod));
        return;
    }
    let (tx, rx) = watch::channel(PodMessage::Update(Arc::clone(&pod)));
    let worker_ctx = Arc::clone(ctx);
    let worker_uid = uid.clone();
    let task = tokio::spawn(async move {
        worker::run(Arc::clone(&worker_ctx), pod, rx).await;
        // The pod's images are free for image GC once its worker is done.
        worker_ctx.images.pod_gone(&worker_uid);
    });
    workers.insert(uid, WorkerHandle { tx, task });
}

/// The `image` of every container of `pod` (init, app and ephemeral).
fn container_images(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut images: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.clone())
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .filter_map(|c| c.image.clone()),
        )
        .collect();
    images.sort();
    images.dedup();
    images
}

/// Removes the directories of pods that are no longer bound to this node (deleted while the
/// agent was down).
async fn remove_stale_pod_dirs(pods_dir: &std::path::Path, current: &HashSet<String>) {
    let Ok(mut entries) = tokio::fs::read_dir(pods_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !current.contains(&name) {
            tracing::info!(uid = %name, "removing the files of a pod that is gone");
            if let Err(e) = tokio::fs::remove_dir_all(entry.path()).await {
                tracing::warn!(error = %e, uid = %name, "removing a stale pod directory failed");
            }
        }
    }
}
