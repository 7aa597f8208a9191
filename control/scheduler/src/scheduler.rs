//! The scheduling loop: one task owns the [`Snapshot`], the [`SchedulingQueue`] and the
//! [`Framework`], and alternates between applying cluster events and scheduling pods.
//!
//! ```text
//! watch pods ─┐                          ┌─> framework.schedule(pod, snapshot)
//! watch nodes ├─> events ─> snapshot ────┤     ok:  assume on node, spawn binding ──┐
//! watch RCs  ─┘             queue  <─────┤     err: unschedulable queue, condition,  │
//!                                        │          FailedScheduling event           │
//!                       binding results <┴──────────────────────────────────────────┘
//! ```
//!
//! Pods are scheduled one at a time (the decision is cheap and must see the previous one),
//! bindings run concurrently (up to `max_concurrent_binds`), and the pod is *assumed* on its
//! node the moment it is decided so the next decision already counts it. Scheduling waits
//! until every watch has listed once and pauses while another replica leads.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Semaphore, mpsc, watch};
use wasmkube_client::events::{EventRecorder, EventType, Reporter, pod_reference};

use crate::binding::{self, BindOutcome};
use crate::config::SchedulerConfig;
use crate::framework::Framework;
use crate::metrics::Metrics;
use crate::plugins::default_framework;
use crate::queue::{QueueTimings, SchedulingQueue};
use crate::snapshot::{NodeChange, PodInfo, Snapshot};

/// Pods decided per turn before events are looked at again.
const BATCH: usize = 256;
/// Events applied per turn before scheduling continues.
const EVENT_DRAIN: usize = 4096;
/// Buffer between the watches and the loop.
const EVENT_BUFFER: usize = 8192;
/// Status writes (PodScheduled=False) in flight at once.
const MAX_STATUS_WRITES: usize = 64;
/// Pods in these phases hold no resources; the pod watch leaves them out.
const TERMINAL_PHASES_EXCLUDED: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// What the watches report (boxed: a Pod is large, and most events are pods).
pub(crate) enum ClusterEvent {
    Pod(Box<Event<Pod>>),
    Node(Box<Event<Node>>),
    RuntimeClass(Box<Event<RuntimeClass>>),
}

struct BindResult {
    pod: Arc<PodInfo>,
    node: String,
    outcome: BindOutcome,
}

/// Relist bookkeeping for one watch: names seen since `Init`, and whether it ever finished.
#[derive(Default)]
struct Relist {
    seen: Option<HashSet<String>>,
    synced: bool,
}

impl Relist {
    fn start(&mut self) {
        self.seen = Some(HashSet::new());
    }

    fn saw(&mut self, key: &str) {
        if let Some(seen) = self.seen.as_mut() {
            seen.insert(key.to_string());
        }
    }

    /// Ends a relist: returns the keys seen, marks the watch synced.
    fn finish(&mut self) -> HashSet<String> {
        self.synced = true;
        self.seen.take().unwrap_or_default()
    }
}

/// The state the loop owns.
pub(crate) struct Scheduler {
    client: kube::Client,
    config: SchedulerConfig,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    framework: Framework,
    recorder: EventRecorder,
    metrics: Arc<Metrics>,
    status_writes: Arc<Semaphore>,
    binds_in_flight: usize,
    pods: Relist,
    nodes: Relist,
    classes: Relist,
}

impl Scheduler {
    pub(crate) fn new(client: kube::Client, config: SchedulerConfig) -> Self {
        let metrics = config.metrics.clone();
        let framework = default_framework()
            .with_percentage_of_nodes_to_score(config.percentage_of_nodes_to_score);
        let queue = SchedulingQueue::new(QueueTimings {
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            unschedulable_retry: config.unschedulable_retry,
        });
        let recorder = EventRecorder::new(
            client.clone(),
            Reporter {
                component: config.scheduler_name.clone(),
                host: None,
                instance: config.identity.clone(),
            },
            metrics.events.clone(),
        );
        Scheduler {
            client,
            config,
            snapshot: Snapshot::new(),
            queue,
            framework,
            recorder,
            metrics,
            status_writes: Arc::new(Semaphore::new(MAX_STATUS_WRITES)),
            binds_in_flight: 0,
            pods: Relist::default(),
            nodes: Relist::default(),
            classes: Relist::default(),
        }
    }

    fn synced(&self) -> bool {
        self.pods.synced && self.nodes.synced && self.classes.synced
    }

    /// Runs until `shutdown`.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<ClusterEvent>,
        mut leading: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let (bind_tx, mut bind_rx) = mpsc::unbounded_channel::<BindResult>();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut was_leading = false;
        loop {
            let is_leading = *leading.borrow();
            if is_leading != was_leading {
                tracing::info!(
                    leading = is_leading,
                    "scheduling {}",
                    if is_leading { "started" } else { "paused" }
                );
                was_leading = is_leading;
            }
            let mut more = false;
            if is_leading && self.synced() {
                more = self.schedule_batch(&bind_tx);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.handle(event);
                    for _ in 0..EVENT_DRAIN {
                        match events.try_recv() {
                            Ok(event) => self.handle(event),
                            Err(_) => break,
                        }
                    }
                }
                Some(result) = bind_rx.recv() => {
                    self.bind_done(result);
                    while let Ok(result) = bind_rx.try_recv() {
                        self.bind_done(result);
                    }
                }
                Ok(()) = leading.changed() => {}
                _ = tick.tick() => self.queue.flush(Instant::now()),
                () = std::future::ready(()), if more => {}
            }
        }
    }

    /// Decides up to [`BATCH`] pods; `true` if more could be decided right away.
    fn schedule_batch(&mut self, bind_tx: &mpsc::UnboundedSender<BindResult>) -> bool {
        for _ in 0..BATCH {
            if self.binds_in_flight >= self.config.max_concurrent_binds {
                return false;
            }
            let Some(pod) = self.queue.pop() else {
                return false;
            };
            if self.snapshot.placement(&pod.uid).is_some() {
                self.queue.remove(&pod.uid);
                continue;
            }
            Metrics::inc(&self.metrics.attempts);
            match self.framework.schedule(&pod, &self.snapshot) {
                Ok(node) => {
                    self.snapshot.assume(pod.clone(), &node);
                    self.binds_in_flight += 1;
                    let client = self.client.clone();
                    let tx = bind_tx.clone();
                    tokio::spawn(async move {
                        let outcome = binding::bind(client, &pod, &node).await;
                        let _ = tx.send(BindResult { pod, node, outcome });
                    });
                }
                Err(fit) => {
                    Metrics::inc(&self.metrics.unschedulable);
                    self.queue.mark_unschedulable(&pod.uid, Instant::now());
                    let message = fit.to_string();
                    tracing::debug!(pod = %pod.name, namespace = %pod.namespace, %message, "unschedulable");
                    self.report_unschedulable(&pod, message);
                }
            }
        }
        true
    }

    /// Records an Event about `pod` (with the scheduler's `action`).
    fn record(&self, pod: &PodInfo, type_: EventType, reason: &str, action: &str, message: String) {
        self.recorder.record_action(
            pod_reference(&pod.pod, None),
            type_,
            reason,
            Some(action),
            message,
        );
    }

    fn report_unschedulable(&self, pod: &Arc<PodInfo>, message: String) {
        self.record(
            pod,
            EventType::Warning,
            "FailedScheduling",
            "Scheduling",
            message.clone(),
        );
        if binding::unschedulable_condition_is_current(pod, &message) {
            return;
        }
        let client = self.client.clone();
        let pod = pod.clone();
        let permits = self.status_writes.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            if let Err(e) = binding::set_unschedulable(client, &pod, &message).await {
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, error = %e, "could not set PodScheduled=False");
            }
        });
    }

    fn bind_done(&mut self, result: BindResult) {
        self.binds_in_flight = self.binds_in_flight.saturating_sub(1);
        let BindResult { pod, node, outcome } = result;
        let now = Instant::now();
        match outcome {
            BindOutcome::Bound => {
                Metrics::inc(&self.metrics.bound);
                self.queue.remove(&pod.uid);
                self.record(
                    &pod,
                    EventType::Normal,
                    "Scheduled",
                    "Binding",
                    format!(
                        "Successfully assigned {}/{} to {node}",
                        pod.namespace, pod.name
                    ),
                );
            }
            BindOutcome::Conflict(message) => {
                Metrics::inc(&self.metrics.bind_conflicts);
                tracing::debug!(pod = %pod.name, %message, "binding conflict");
                self.snapshot.forget(&pod.uid);
                self.queue.backoff(&pod.uid, now);
            }
            BindOutcome::Gone => {
                self.snapshot.forget(&pod.uid);
                self.queue.remove(&pod.uid);
            }
            BindOutcome::Failed(message) => {
                Metrics::inc(&self.metrics.bind_errors);
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, %node, %message, "binding failed");
                self.snapshot.forget(&pod.uid);
                self.queue.backoff(&pod.uid, now);
                self.record(
                    &pod,
                    EventType::Warning,
                    "FailedScheduling",
                    "Scheduling",
                    format!("Binding rejected: {message}"),
                );
            }
        }
    }

    pub(crate) fn handle(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Pod(event) => self.handle_pod(*event),
            ClusterEvent::Node(event) => self.handle_node(*event),
            ClusterEvent::RuntimeClass(event) => self.handle_runtime_class(*event),
        }
    }

    fn handle_pod(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.pods.start(),
            Event::InitApply(pod) => {
                let info = PodInfo::new(strip(pod));
                self.pods.saw(&info.uid);
                self.apply_pod(info);
            }
            Event::Apply(pod) => self.apply_pod(PodInfo::new(strip(pod))),
            Event::Delete(pod) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                self.delete_pod(&uid);
            }
            Event::InitDone => {
                let seen = self.pods.finish();
                let mut gone: Vec<String> = self.snapshot.bound_pod_uids();
                gone.extend(self.queue.uids());
                for uid in gone.into_iter().filter(|uid| !seen.contains(uid)) {
                    self.delete_pod(&uid);
                }
            }
        }
    }

    fn apply_pod(&mut self, info: PodInfo) {
        let phase = info.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            let uid = info.uid.clone();
            self.delete_pod(&uid);
            return;
        }
        let info = Arc::new(info);
        if info.node_name().is_some() {
            self.queue.remove(&info.uid);
            self.snapshot.add_bound_pod(info);
            return;
        }
        if self.snapshot.is_assumed(&info.uid) {
            // Our binding is on its way; this is an older state of the pod.
            return;
        }
        if !self.responsible_for(&info) {
            self.queue.remove(&info.uid);
            return;
        }
        self.queue.add_or_update(info, Instant::now());
    }

    fn delete_pod(&mut self, uid: &str) {
        self.queue.remove(uid);
        if self.snapshot.remove_pod(uid) {
            // Resources were freed: pods waiting for room may fit now.
            self.queue.move_all_unschedulable(Instant::now());
        }
    }

    /// Whether a pending pod is for this scheduler and ready to be scheduled.
    fn responsible_for(&self, info: &PodInfo) -> bool {
        if info.pod.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let Some(spec) = info.pod.spec.as_ref() else {
            return false;
        };
        let name = spec
            .scheduler_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        name == self.config.scheduler_name
            && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
    }

    fn handle_node(&mut self, event: Event<Node>) {
        match event {
            Event::Init => self.nodes.start(),
            Event::InitApply(node) => {
                self.nodes.saw(node.metadata.name.as_deref().unwrap_or(""));
                self.apply_node(node);
            }
            Event::Apply(node) => self.apply_node(node),
            Event::Delete(node) => {
                self.snapshot
                    .remove_node(node.metadata.name.as_deref().unwrap_or(""));
            }
            Event::InitDone => {
                let seen = self.nodes.finish();
                for name in self.snapshot.node_names() {
                    if !seen.contains(&name) {
                        self.snapshot.remove_node(&name);
                    }
                }
            }
        }
    }

    fn apply_node(&mut self, mut node: Node) {
        node.metadata.managed_fields = None;
        match self.snapshot.upsert_node(node) {
            NodeChange::Added | NodeChange::SchedulingRelevant => {
                self.queue.move_all_unschedulable(Instant::now());
            }
            NodeChange::Other => {}
        }
    }

    fn handle_runtime_class(&mut self, event: Event<RuntimeClass>) {
        match event {
            Event::Init => self.classes.start(),
            Event::InitApply(class) => {
                self.classes
                    .saw(class.metadata.name.as_deref().unwrap_or(""));
                self.snapshot.upsert_runtime_class(class);
                self.queue.move_all_unschedulable(Instant::now());
            }
            Event::Apply(class) => {
                self.snapshot.upsert_runtime_class(class);
                self.queue.move_all_unschedulable(Instant::now());
            }
            Event::Delete(class) => {
                self.snapshot
                    .remove_runtime_class(class.metadata.name.as_deref().unwrap_or(""));
            }
            Event::InitDone => {
                let seen = self.classes.finish();
                for name in self.snapshot.runtime_class_names() {
                    if !seen.contains(&name) {
                        self.snapshot.remove_runtime_class(&name);
                    }
                }
            }
        }
    }
}

/// Drops what no scheduling decision reads (managed fields, annotations, container
/// commands, environment, probes, mounts), to keep hundreds of thousands of cached pods
/// small. Kept: metadata identity and labels, the scheduling-relevant spec (resources,
/// ports, affinity, tolerations, selectors, volumes) and the status conditions.
fn strip(mut pod: Pod) -> Pod {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            c.command = None;
            c.args = None;
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            c.security_context = None;
        }
        spec.ephemeral_containers = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
    pod
}

/// Starts the pod, node and RuntimeClass watches; they feed `tx` until it closes.
pub(crate) fn spawn_watches(
    client: &kube::Client,
) -> (
    mpsc::Receiver<ClusterEvent>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    let tasks = vec![
        tokio::spawn(forward(
            pods,
            watcher::Config::default().fields(TERMINAL_PHASES_EXCLUDED),
            tx.clone(),
            ClusterEvent::Pod,
        )),
        tokio::spawn(forward(
            nodes,
            watcher::Config::default(),
            tx.clone(),
            ClusterEvent::Node,
        )),
        tokio::spawn(forward(
            classes,
            watcher::Config::default(),
            tx,
            ClusterEvent::RuntimeClass,
        )),
    ];
    (rx, tasks)
}

async fn forward<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::Sender<ClusterEvent>,
    wrap: fn(Box<Event<K>>) -> ClusterEvent,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if tx.send(wrap(Box::new(event))).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PodRequests;
    use k8s_openapi::api::core::v1::{EnvVar, PodStatus, Probe};

    #[test]
    fn stripping_keeps_what_scheduling_reads_and_drops_the_rest() {
        let mut pod = crate::testing::pod_with_requests("p", "1", "1Gi");
        pod.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers[0].env = Some(vec![EnvVar {
                name: "X".into(),
                ..Default::default()
            }]);
            spec.containers[0].liveness_probe = Some(Probe::default());
            spec.node_selector = Some([("zone".to_string(), "a".to_string())].into());
        }
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(Vec::new()),
            ..Default::default()
        });
        let before = PodRequests::of(&pod);
        let stripped = strip(pod);
        assert_eq!(PodRequests::of(&stripped), before);
        let spec = stripped.spec.as_ref().expect("spec");
        assert!(spec.containers[0].env.is_none());
        assert!(spec.containers[0].liveness_probe.is_none());
        assert!(spec.node_selector.is_some());
        assert!(stripped.metadata.annotations.is_none());
        let status = stripped.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert!(status.container_statuses.is_none());
    }
}
