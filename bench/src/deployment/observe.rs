//! What `wasmkube-bench deployment` sees of its Deployment: three watches (the Deployment,
//! its ReplicaSets, its pods) merged into one stream of timestamped changes, and the state
//! they add up to: each pod's milestones (first seen, Running, Ready, deletion asked, gone),
//! each ReplicaSet's scaling steps and the Deployment's latest status.
//!
//! The timestamps are the bench process's monotonic clock at the moment a watch stream
//! yields the change, i.e. what a watching client (kubectl) observes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;

/// How long the initial lists of the watches may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The label the Deployment controller puts on its ReplicaSets and their pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// One change a watch delivered.
enum Change {
    Pod(Box<Pod>),
    PodGone(String),
    ReplicaSet(Box<ReplicaSet>),
    ReplicaSetGone(String),
    Deployment(Box<Deployment>),
    DeploymentGone,
    /// One of the three watches finished its initial list.
    Synced,
}

/// A pod's life as the watch saw it.
#[derive(Clone, Debug)]
pub(crate) struct PodLife {
    /// Its `pod-template-hash` label.
    pub(crate) hash: String,
    /// First seen (created).
    pub(crate) created: Instant,
    /// First seen with `spec.nodeName` (bound by the scheduler).
    pub(crate) bound: Option<Instant>,
    /// First seen with container statuses (the agent's first status write).
    pub(crate) agent_status: Option<Instant>,
    /// First seen Running with a running container.
    pub(crate) running: Option<Instant>,
    /// First seen with condition Ready=True.
    pub(crate) ready: Option<Instant>,
    /// Ready=True in the latest version.
    pub(crate) ready_now: bool,
    /// First seen with a deletionTimestamp.
    pub(crate) deleting: Option<Instant>,
    /// Gone from the API.
    pub(crate) gone: Option<Instant>,
}

impl PodLife {
    /// Neither deleting nor gone: a pod the ReplicaSets count.
    fn live(&self) -> bool {
        self.deleting.is_none() && self.gone.is_none()
    }
}

/// A change of a ReplicaSet's `spec.replicas`.
#[derive(Clone, Debug)]
pub(crate) struct ScaleStep {
    /// When the watch delivered it.
    pub(crate) at: Instant,
    /// The ReplicaSet's `pod-template-hash`.
    pub(crate) hash: String,
    /// The size before (0 for a new ReplicaSet).
    pub(crate) from: i32,
    /// The size after.
    pub(crate) to: i32,
}

/// Pod counts of one `pod-template-hash` (or of all pods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Pods ever seen.
    pub(crate) seen: usize,
    /// Pod objects that exist (live or deleting).
    pub(crate) existing: usize,
    /// Pods neither deleting nor gone: the pods the ReplicaSets count.
    pub(crate) live: usize,
    /// Live pods seen Running.
    pub(crate) running: usize,
    /// Live pods Ready now.
    pub(crate) ready: usize,
}

impl Counts {
    /// What one pod adds to the counts.
    fn of(life: &PodLife) -> Self {
        let live = life.live();
        Self {
            seen: 1,
            existing: usize::from(life.gone.is_none()),
            live: usize::from(live),
            running: usize::from(live && life.running.is_some()),
            ready: usize::from(live && life.ready_now),
        }
    }

    fn add(&mut self, other: Self) {
        self.seen += other.seen;
        self.existing += other.existing;
        self.live += other.live;
        self.running += other.running;
        self.ready += other.ready;
    }

    fn sub(&mut self, other: Self) {
        self.seen -= other.seen;
        self.existing -= other.existing;
        self.live -= other.live;
        self.running -= other.running;
        self.ready -= other.ready;
    }
}

/// Everything seen so far.
#[derive(Default)]
pub(crate) struct State {
    /// Every pod ever seen, by name (a name is never reused: generateName).
    pub(crate) pods: HashMap<String, PodLife>,
    /// Pod counts by `pod-template-hash`, kept as the pods change.
    counts: HashMap<String, Counts>,
    /// The latest version of each existing ReplicaSet, by its `pod-template-hash`.
    pub(crate) replica_sets: HashMap<String, ReplicaSet>,
    /// ReplicaSet names to hashes, for deletions.
    rs_hashes: HashMap<String, String>,
    /// Every change of a ReplicaSet's size, in order.
    pub(crate) scale_steps: Vec<ScaleStep>,
    /// The latest version of the Deployment, `None` before its create and after its delete.
    pub(crate) deployment: Option<Deployment>,
}

impl State {
    /// The counts of the pods of one `pod-template-hash`.
    pub(crate) fn of_hash(&self, hash: &str) -> Counts {
        self.counts.get(hash).copied().unwrap_or_default()
    }

    /// The counts of every pod.
    pub(crate) fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.counts.values() {
            total.add(*counts);
        }
        total
    }

    /// The counts of the pods of every hash but `hash`.
    pub(crate) fn other_than(&self, hash: &str) -> Counts {
        let mut total = self.total();
        total.sub(self.of_hash(hash));
        total
    }

    /// Applies one change seen at `at`.
    fn apply(&mut self, change: Change, at: Instant) {
        match change {
            Change::Pod(pod) => self.apply_pod(&pod, at),
            Change::PodGone(name) => self.update_pod(&name, |life| {
                life.gone.get_or_insert(at);
                life.ready_now = false;
            }),
            Change::ReplicaSet(rs) => self.apply_replica_set(*rs, at),
            Change::ReplicaSetGone(name) => {
                if let Some(hash) = self.rs_hashes.remove(&name) {
                    self.replica_sets.remove(&hash);
                }
            }
            Change::Deployment(d) => self.deployment = Some(*d),
            Change::DeploymentGone => self.deployment = None,
            Change::Synced => {}
        }
    }

    fn apply_replica_set(&mut self, rs: ReplicaSet, at: Instant) {
        let hash = label(&rs.metadata, POD_TEMPLATE_HASH);
        let to = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let from = self
            .replica_sets
            .get(&hash)
            .map(|old| old.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1));
        if from != Some(to) {
            self.scale_steps.push(ScaleStep {
                at,
                hash: hash.clone(),
                from: from.unwrap_or(0),
                to,
            });
        }
        if let Some(name) = rs.metadata.name.clone() {
            self.rs_hashes.insert(name, hash.clone());
        }
        self.replica_sets.insert(hash, rs);
    }

    fn apply_pod(&mut self, pod: &Pod, at: Instant) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        if !self.pods.contains_key(name) {
            let life = PodLife {
                hash: label(&pod.metadata, POD_TEMPLATE_HASH),
                created: at,
                bound: None,
                agent_status: None,
                running: None,
                ready: None,
                ready_now: false,
                deleting: None,
                gone: None,
            };
            self.counts
                .entry(life.hash.clone())
                .or_default()
                .add(Counts::of(&life));
            self.pods.insert(name.to_owned(), life);
        }
        let (running, ready) = (is_running(pod), is_ready(pod));
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        let agent_status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| !c.is_empty());
        self.update_pod(name, |life| {
            if bound {
                life.bound.get_or_insert(at);
            }
            if agent_status {
                life.agent_status.get_or_insert(at);
            }
            if running {
                life.running.get_or_insert(at);
            }
            life.ready_now = ready;
            if ready {
                life.ready.get_or_insert(at);
            }
            if deleting {
                life.deleting.get_or_insert(at);
            }
        });
    }

    /// Changes one known pod, keeping the counts.
    fn update_pod(&mut self, name: &str, change: impl FnOnce(&mut PodLife)) {
        let Some(life) = self.pods.get_mut(name) else {
            return;
        };
        let counts = self.counts.entry(life.hash.clone()).or_default();
        counts.sub(Counts::of(life));
        change(life);
        counts.add(Counts::of(life));
    }
}

/// A label's value, or "" without it.
fn label(meta: &kube::api::ObjectMeta, key: &str) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
        .unwrap_or_default()
}

/// Phase Running with a running container.
fn is_running(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status.container_statuses.as_deref().is_some_and(|list| {
            list.iter()
                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
}

/// Condition Ready=True.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The three watches and the state they add up to; dropping it stops the watches.
pub(crate) struct Observer {
    changes: mpsc::UnboundedReceiver<(Instant, Change)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What has been seen.
    pub(crate) state: State,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Observer {
    /// Starts watching the Deployments, ReplicaSets and pods of `namespace`; returns once all
    /// three initial lists are done, so that no later change is missed.
    pub(crate) async fn start(client: &kube::Client, namespace: &str) -> anyhow::Result<Self> {
        let (sender, changes) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(forward(
                Api::<Pod>::namespaced(client.clone(), namespace),
                sender.clone(),
                |pod| Change::Pod(Box::new(pod)),
                |pod| Change::PodGone(pod.metadata.name.unwrap_or_default()),
            )),
            tokio::spawn(forward(
                Api::<ReplicaSet>::namespaced(client.clone(), namespace),
                sender.clone(),
                |rs| Change::ReplicaSet(Box::new(rs)),
                |rs| Change::ReplicaSetGone(rs.metadata.name.unwrap_or_default()),
            )),
            tokio::spawn(forward(
                Api::<Deployment>::namespaced(client.clone(), namespace),
                sender,
                |d| Change::Deployment(Box::new(d)),
                |_| Change::DeploymentGone,
            )),
        ];
        let mut observer = Self {
            changes,
            tasks,
            state: State::default(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut synced = 0;
        while synced < 3 {
            let (at, change) = observer
                .next(deadline)
                .await
                .context("the watches did not start in time")?;
            if matches!(change, Change::Synced) {
                synced += 1;
            }
            observer.state.apply(change, at);
        }
        Ok(observer)
    }

    async fn next(&mut self, deadline: Instant) -> anyhow::Result<(Instant, Change)> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, self.changes.recv()).await {
            Ok(Some(item)) => Ok(item),
            Ok(None) => bail!("the watches ended"),
            Err(_) => bail!("timed out"),
        }
    }

    /// Applies changes until `done` says so after one (it is also asked once before the
    /// first), or fails at `deadline`. `done` gets the state and the time of the change.
    pub(crate) async fn until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&State, Instant) -> bool,
    ) -> anyhow::Result<()> {
        if done(&self.state, Instant::now()) {
            return Ok(());
        }
        loop {
            let (at, change) = self.next(deadline).await?;
            self.state.apply(change, at);
            if done(&self.state, at) {
                return Ok(());
            }
        }
    }
}

/// One watch loop: sends each applied or deleted object, and `Synced` after the initial list.
async fn forward<K>(
    api: Api<K>,
    sender: mpsc::UnboundedSender<(Instant, Change)>,
    applied: impl Fn(K) -> Change,
    deleted: impl Fn(K) -> Change,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let stream = watcher(api, watcher::Config::default());
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let at = Instant::now();
        let change = match item {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => applied(obj),
            Ok(watcher::Event::Delete(obj)) => deleted(obj),
            Ok(watcher::Event::InitDone) => Change::Synced,
            Ok(watcher::Event::Init) => continue,
            Err(e) => {
                eprintln!("warning: watch: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if sender.send((at, change)).is_err() {
            return;
        }
    }
}
