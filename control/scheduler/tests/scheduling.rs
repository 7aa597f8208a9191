//! The scheduler against the real apiserver, in process: nodes and pods are created with
//! kube-rs, the scheduler runs as `wasmkube server` runs it, and placement is read back from
//! the API (polling with a deadline; no test depends on how fast anything is).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeSpec, Pod, PodSpec, ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::oneshot;
use wasmkube_apiserver::testing::TestApiserver;
use wasmkube_client::LeaderElectionConfig;
use wasmkube_scheduler::{Metrics, SchedulerConfig};

/// Generous bound so a broken scheduler fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// An apiserver on a random port with its own data directory.
struct Cluster {
    client: kube::Client,
    _api: TestApiserver,
}

/// A running scheduler; dropping `stop` shuts it down.
struct RunningScheduler {
    identity: String,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), wasmkube_scheduler::SchedulerError>>,
}

impl RunningScheduler {
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .context("scheduler did not stop")?
            .context("scheduler task panicked")?
            .context("scheduler failed")?;
        Ok(())
    }
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        let api = TestApiserver::start().await?;
        // Pods need their namespace's `default` ServiceAccount (the ServiceAccount
        // admission); its controller makes it, as in every cluster.
        let accounts = wasmkube_controllers::ControllersConfig {
            controllers: vec!["serviceaccount".into()],
            leader_election: None,
            ..wasmkube_controllers::ControllersConfig::default()
        };
        tokio::spawn(wasmkube_controllers::run(
            api.client(),
            accounts,
            std::future::pending::<()>(),
        ));
        Ok(Cluster {
            client: api.client(),
            _api: api,
        })
    }

    /// Starts a scheduler; with `lease`, it competes for the Lease with fast timings.
    fn scheduler(&self, identity: &str, lease: bool) -> RunningScheduler {
        let metrics = Arc::new(Metrics::default());
        let leader_election = lease.then(|| LeaderElectionConfig {
            lease_duration: Duration::from_secs(6),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_millis(250),
            ..LeaderElectionConfig::new("kube-system", "wasmkube-scheduler", identity)
        });
        let config = SchedulerConfig {
            identity: identity.to_string(),
            leader_election,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            metrics: metrics.clone(),
            ..SchedulerConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmkube_scheduler::run(
            self.client.clone(),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        RunningScheduler {
            identity: identity.to_string(),
            metrics,
            stop: Some(stop),
            task,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a node and sets its allocatable resources the way an agent would.
    async fn node(&self, node: NodeBuilder) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = node.name.clone();
        api.create(&PostParams::default(), &node.object()).await?;
        let allocatable = json!({
            "cpu": node.cpu, "memory": node.memory, "pods": "110",
        });
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"capacity": allocatable, "allocatable": allocatable}})),
        )
        .await?;
        Ok(())
    }

    async fn cordon(&self, node: &str, cordoned: bool) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": cordoned}})),
        )
        .await?;
        Ok(())
    }

    async fn pod(
        &self,
        name: &str,
        cpu: &str,
        memory: &str,
        f: impl FnOnce(&mut PodSpec),
    ) -> Result<()> {
        let mut requests = BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !memory.is_empty() {
            requests.insert("memory".to_string(), Quantity(memory.into()));
        }
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("hello.wasm".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        f(&mut spec);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        self.pods().create(&PostParams::default(), &pod).await?;
        Ok(())
    }

    /// Waits until the pod is bound and returns its node.
    async fn bound(&self, name: &str) -> Result<String> {
        poll(&format!("pod {name} to be bound"), || async {
            let pod = self.pods().get(name).await?;
            Ok(pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()))
        })
        .await
    }

    /// Waits until the pod carries PodScheduled=False/Unschedulable and returns the message.
    async fn unschedulable(&self, name: &str) -> Result<String> {
        poll(
            &format!("pod {name} to be marked unschedulable"),
            || async {
                let pod = self.pods().get(name).await?;
                let condition = pod
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False");
                Ok(condition
                    .filter(|c| c.reason.as_deref() == Some("Unschedulable"))
                    .and_then(|c| c.message))
            },
        )
        .await
    }

    async fn events_of(&self, pod: &str) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let list = api
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
            .await?;
        Ok(list.items)
    }

    /// Waits for an event of `reason` about `pod` and returns it.
    async fn event(&self, pod: &str, reason: &str) -> Result<Event> {
        poll(&format!("a {reason} event for {pod}"), || async {
            Ok(self
                .events_of(pod)
                .await?
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason)))
        })
        .await
    }

    /// The pod is still unbound (checked once; used after something else was observed).
    async fn still_pending(&self, name: &str) -> Result<bool> {
        let pod = self.pods().get(name).await?;
        Ok(pod
            .spec
            .and_then(|s| s.node_name)
            .is_none_or(|n| n.is_empty()))
    }
}

async fn poll<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last_error = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what} (last error: {last_error})");
        }
        tokio::time::sleep(POLL).await;
    }
}

struct NodeBuilder {
    name: String,
    cpu: String,
    memory: String,
    labels: Vec<(String, String)>,
    taints: Vec<Taint>,
}

fn node(name: &str, cpu: &str, memory: &str) -> NodeBuilder {
    NodeBuilder {
        name: name.into(),
        cpu: cpu.into(),
        memory: memory.into(),
        labels: vec![("kubernetes.io/hostname".into(), name.into())],
        taints: Vec::new(),
    }
}

impl NodeBuilder {
    fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        });
        self
    }

    fn object(&self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.iter().cloned().collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: None,
        }
    }
}

fn toleration(key: &str, value: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Equal".into()),
        value: Some(value.into()),
        effect: Some(effect.into()),
        toleration_seconds: None,
    }
}

fn select(key: &str, value: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(key.to_string(), value.to_string())]))
}

#[tokio::test]
async fn node_selector_tolerations_and_resource_fit_decide_placement() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster
        .node(node("small", "1", "1Gi").label("disk", "hdd"))
        .await?;
    cluster
        .node(node("big", "4", "8Gi").label("disk", "ssd"))
        .await?;
    cluster
        .node(node("gpu", "8", "16Gi").taint("dedicated", "gpu", "NoSchedule"))
        .await?;
    let scheduler = cluster.scheduler("solo", false);

    cluster
        .pod("wants-ssd", "100m", "64Mi", |s| {
            s.node_selector = select("disk", "ssd")
        })
        .await?;
    cluster
        .pod("tolerates-gpu", "100m", "64Mi", |s| {
            s.node_selector = select("kubernetes.io/hostname", "gpu");
            s.tolerations = Some(vec![toleration("dedicated", "gpu", "NoSchedule")]);
        })
        .await?;
    cluster.pod("needs-3-cpus", "3", "1Gi", |_| {}).await?;
    cluster
        .pod("intolerant", "100m", "64Mi", |s| {
            s.node_selector = select("kubernetes.io/hostname", "gpu")
        })
        .await?;

    assert_eq!(cluster.bound("wants-ssd").await?, "big");
    assert_eq!(cluster.bound("tolerates-gpu").await?, "gpu");
    // 3 cpus: not the small node, and the gpu node's taint is not tolerated.
    assert_eq!(cluster.bound("needs-3-cpus").await?, "big");

    let message = cluster.unschedulable("intolerant").await?;
    assert_eq!(
        message,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) \
         didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 \
         Preemption is not helpful for scheduling."
    );
    let scheduled = cluster.event("wants-ssd", "Scheduled").await?;
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/wants-ssd to big")
    );
    assert_eq!(scheduled.type_.as_deref(), Some("Normal"));
    assert_eq!(
        scheduled.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    scheduler.stop().await
}

#[tokio::test]
async fn a_pod_too_big_for_every_node_waits_until_a_bigger_node_joins() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster.node(node("small", "1", "1Gi")).await?;
    cluster
        .node(node("tainted", "16", "64Gi").taint("dedicated", "gpu", "NoSchedule"))
        .await?;
    let scheduler = cluster.scheduler("solo", false);
    cluster.pod("huge", "2", "4Gi", |_| {}).await?;

    let message = cluster.unschedulable("huge").await?;
    assert_eq!(
        message,
        "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had \
         untolerated taint {dedicated: gpu}. preemption: 0/2 nodes are available: 1 No \
         preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
    );
    let failed = cluster.event("huge", "FailedScheduling").await?;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message.as_deref(), Some(message.as_str()));
    assert_eq!(
        failed.reporting_component.as_deref(),
        Some("default-scheduler")
    );
    assert_eq!(failed.involved_object.kind.as_deref(), Some("Pod"));
    assert!(cluster.still_pending("huge").await?);

    cluster.node(node("bigger", "4", "8Gi")).await?;
    assert_eq!(cluster.bound("huge").await?, "bigger");
    // The binding sets PodScheduled=True right after spec.nodeName; the stale verdict of an
    // earlier attempt must not overwrite it.
    poll("PodScheduled=True on huge", || async {
        let pod = cluster.pods().get("huge").await?;
        let scheduled = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True");
        Ok(scheduled.then_some(()))
    })
    .await?;
    cluster.event("huge", "Scheduled").await?;
    scheduler.stop().await
}

#[tokio::test]
async fn cordoned_nodes_are_skipped_and_equal_pods_spread() -> Result<()> {
    let cluster = Cluster::start().await?;
    for name in ["a", "b", "c"] {
        cluster.node(node(name, "4", "8Gi")).await?;
    }
    cluster.cordon("c", true).await?;
    let scheduler = cluster.scheduler("solo", false);
    for i in 0..10 {
        cluster
            .pod(&format!("web-{i}"), "100m", "128Mi", |_| {})
            .await?;
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..10 {
        *per_node
            .entry(cluster.bound(&format!("web-{i}")).await?)
            .or_default() += 1;
    }
    assert_eq!(
        per_node.get("c"),
        None,
        "cordoned node got pods: {per_node:?}"
    );
    assert_eq!(per_node.get("a"), Some(&5), "uneven spread: {per_node:?}");
    assert_eq!(per_node.get("b"), Some(&5), "uneven spread: {per_node:?}");

    // Only a pod pinned to the cordoned node is left pending, with the reason.
    cluster
        .pod("pinned", "100m", "128Mi", |s| {
            s.node_selector = select("kubernetes.io/hostname", "c")
        })
        .await?;
    let message = cluster.unschedulable("pinned").await?;
    assert!(
        message.starts_with(
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match \
             Pod's node affinity/selector."
        ),
        "{message}"
    );
    cluster.cordon("c", false).await?;
    assert_eq!(cluster.bound("pinned").await?, "c");
    scheduler.stop().await
}

#[tokio::test]
async fn runtime_classes_pick_nodes_and_a_missing_class_keeps_the_pod_pending() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster.node(node("plain", "4", "8Gi")).await?;
    cluster
        .node(
            node("wasm", "4", "8Gi")
                .label("wasmkube.io/runtime-wasmtime", "true")
                .taint("wasm-only", "true", "NoSchedule"),
        )
        .await?;
    let classes: Api<RuntimeClass> = Api::all(cluster.client.clone());
    classes
        .create(&PostParams::default(), &runtime_class("wasm-dedicated"))
        .await?;
    let scheduler = cluster.scheduler("solo", false);

    cluster
        .pod("wasm-pod", "100m", "64Mi", |s| {
            s.runtime_class_name = Some("wasm-dedicated".into())
        })
        .await?;
    assert_eq!(cluster.bound("wasm-pod").await?, "wasm");

    cluster
        .pod("future", "100m", "64Mi", |s| {
            s.runtime_class_name = Some("wasm-next".into())
        })
        .await?;
    let message = cluster.unschedulable("future").await?;
    assert!(
        message.starts_with("0/2 nodes are available: RuntimeClass \"wasm-next\" not found."),
        "{message}"
    );
    classes
        .create(&PostParams::default(), &runtime_class("wasm-next"))
        .await?;
    assert_eq!(cluster.bound("future").await?, "wasm");
    scheduler.stop().await
}

fn runtime_class(name: &str) -> RuntimeClass {
    RuntimeClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        handler: "wasmtime".into(),
        overhead: None,
        scheduling: Some(Scheduling {
            node_selector: select("wasmkube.io/runtime-wasmtime", "true"),
            tolerations: Some(vec![toleration("wasm-only", "true", "NoSchedule")]),
        }),
    }
}

#[tokio::test]
async fn two_schedulers_with_leader_election_never_bind_a_pod_twice() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster.node(node("n1", "64", "128Gi")).await?;
    cluster.node(node("n2", "64", "128Gi")).await?;
    let first = cluster.scheduler("scheduler-a", true);
    let second = cluster.scheduler("scheduler-b", true);

    let pods: Vec<String> = (0..60).map(|i| format!("burst-{i}")).collect();
    for name in &pods {
        cluster.pod(name, "10m", "16Mi", |_| {}).await?;
    }
    for name in &pods {
        cluster.bound(name).await?;
    }
    poll("both schedulers to count 60 bindings", || async {
        let (a, b) = (first.metrics.snapshot(), second.metrics.snapshot());
        Ok((a.bound + b.bound >= 60).then_some(()))
    })
    .await?;
    let (a, b) = (first.metrics.snapshot(), second.metrics.snapshot());
    assert_eq!(a.bound + b.bound, 60, "a: {a:?}, b: {b:?}");
    assert_eq!(a.bind_conflicts + b.bind_conflicts, 0, "a: {a:?}, b: {b:?}");
    assert!(
        a.bound == 0 || b.bound == 0,
        "both schedulers bound pods: a: {a:?}, b: {b:?}"
    );
    for name in &pods {
        let scheduled = cluster
            .events_of(name)
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count();
        assert!(scheduled <= 1, "{name} has {scheduled} Scheduled events");
    }

    // The leader stops (releasing its Lease); the other takes over and schedules new pods.
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-system");
    let holder = leases
        .get("wasmkube-scheduler")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .context("the lease has no holder")?;
    let (leader, follower) = if holder == first.identity {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        leader.metrics.snapshot().bound == 60,
        "the lease holder did not do the binding"
    );
    leader.stop().await?;
    cluster.pod("after-failover", "10m", "16Mi", |_| {}).await?;
    cluster.bound("after-failover").await?;
    // The pod shows as bound a moment before the binding's response reaches the scheduler.
    poll("the new leader to count its binding", || async {
        Ok((follower.metrics.snapshot().bound == 1).then_some(()))
    })
    .await?;
    let lease = leases.get("wasmkube-scheduler").await?;
    let spec = lease.spec.context("lease without spec")?;
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(follower.identity.as_str())
    );
    assert!(spec.lease_transitions.unwrap_or(0) >= 1);
    follower.stop().await
}
