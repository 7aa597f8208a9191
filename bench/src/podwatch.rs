//! A watch on the pods of one namespace that timestamps each pod's milestones as the watch
//! delivers them: bound to a node, Running (phase Running with a running container), gone.
//!
//! The timestamps are the bench process's monotonic clock at the moment the watch stream
//! yields the event, so "create -> Running" is what a client watching the pod observes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher;
use tokio::sync::{mpsc, oneshot};

/// How long the initial list of the watch may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A point in a pod's life the watch saw for the first time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Milestone {
    /// `spec.nodeName` is set: the scheduler bound it.
    Bound,
    /// The agent has written a status with container statuses (e.g. waiting,
    /// `ContainerCreating`), before the pod is Running.
    AgentStatus,
    /// Phase Running and a container in state running.
    Running,
    /// The pod object is gone.
    Gone,
}

/// One milestone of one pod.
#[derive(Clone, Debug)]
pub(crate) struct PodEvent {
    /// The pod's name.
    pub(crate) name: String,
    /// What happened.
    pub(crate) milestone: Milestone,
    /// When the watch delivered it.
    pub(crate) at: Instant,
    /// The pod's IP at that moment.
    pub(crate) pod_ip: Option<String>,
}

/// A running watch; dropping it stops the watch.
pub(crate) struct PodWatch {
    events: mpsc::UnboundedReceiver<PodEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Starts watching the pods of `namespace` and returns once the initial list is done, so
    /// that no later change is missed.
    pub(crate) async fn start(client: kube::Client, namespace: &str) -> anyhow::Result<Self> {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let (sender, events) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run_watch(api, sender, ready_tx));
        tokio::time::timeout(START_TIMEOUT, ready_rx)
            .await
            .context("the pod watch did not start in time")?
            .context("the pod watch stopped before it started")?;
        Ok(Self { events, task })
    }

    /// The next milestone, or an error once `deadline` passes.
    pub(crate) async fn next(&mut self, deadline: Instant) -> anyhow::Result<PodEvent> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, self.events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => bail!("the pod watch ended"),
            Err(_) => bail!("timed out waiting for pods"),
        }
    }

    /// Waits until every pod of `names` has reached `milestone`; returns the events in the
    /// order they came. Other events are dropped.
    pub(crate) async fn wait_all(
        &mut self,
        names: &HashSet<String>,
        milestone: Milestone,
        timeout: Duration,
        mut on_event: impl FnMut(&PodEvent),
    ) -> anyhow::Result<Vec<PodEvent>> {
        let deadline = Instant::now() + timeout;
        let mut pending = names.clone();
        let mut reached = Vec::with_capacity(names.len());
        while !pending.is_empty() {
            let event = self.next(deadline).await.with_context(|| {
                format!(
                    "{} of {} pods did not reach {milestone:?} within {timeout:?}",
                    pending.len(),
                    names.len()
                )
            })?;
            on_event(&event);
            if event.milestone == milestone && pending.remove(&event.name) {
                reached.push(event);
            }
        }
        Ok(reached)
    }
}

/// The watch loop: emits each milestone of each pod once (again after the pod is gone and
/// comes back under the same name).
async fn run_watch(
    api: Api<Pod>,
    sender: mpsc::UnboundedSender<PodEvent>,
    ready: oneshot::Sender<()>,
) {
    let mut seen: HashSet<(String, Milestone)> = HashSet::new();
    let mut ready = Some(ready);
    let stream = watcher(api, watcher::Config::default());
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let at = Instant::now();
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                eprintln!("warning: pod watch: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match event {
            watcher::Event::InitDone => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            watcher::Event::Init => {}
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                for milestone in milestones(&pod) {
                    let Some(name) = pod.metadata.name.clone() else {
                        continue;
                    };
                    if seen.insert((name.clone(), milestone)) {
                        let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
                        let event = PodEvent {
                            name,
                            milestone,
                            at,
                            pod_ip,
                        };
                        if sender.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                seen.retain(|(n, _)| *n != name);
                let event = PodEvent {
                    name,
                    milestone: Milestone::Gone,
                    at,
                    pod_ip: None,
                };
                if sender.send(event).is_err() {
                    return;
                }
            }
        }
    }
}

/// The milestones a pod object shows, in life order.
fn milestones(pod: &Pod) -> Vec<Milestone> {
    let mut reached = Vec::new();
    if pod
        .spec
        .as_ref()
        .is_some_and(|spec| spec.node_name.is_some())
    {
        reached.push(Milestone::Bound);
    }
    let status = pod.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_deref());
    if statuses.is_some_and(|s| !s.is_empty()) {
        reached.push(Milestone::AgentStatus);
    }
    let running_phase = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let container_running = statuses.is_some_and(|list| {
        list.iter()
            .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    });
    if running_phase && container_running {
        reached.push(Milestone::Running);
    }
    reached
}

/// Deletes the pods of `names` with grace period 0 and waits until the watch saw each gone.
pub(crate) async fn delete_and_wait(
    client: &kube::Client,
    namespace: &str,
    watch: &mut PodWatch,
    names: &HashSet<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .with_context(|| format!("cannot delete the pods of namespace {namespace}"))?;
    watch
        .wait_all(names, Milestone::Gone, timeout, |_| {})
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus,
    };

    use super::*;

    fn pod(node: Option<&str>, phase: Option<&str>, running: bool) -> Pod {
        let state = running.then(|| ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        });
        Pod {
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                container_statuses: phase.map(|_| {
                    vec![ContainerStatus {
                        state,
                        ..ContainerStatus::default()
                    }]
                }),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn running_needs_the_phase_and_a_running_container() {
        assert_eq!(milestones(&pod(None, None, false)), vec![]);
        assert_eq!(
            milestones(&pod(Some("n"), None, false)),
            vec![Milestone::Bound]
        );
        assert_eq!(
            milestones(&pod(Some("n"), Some("Pending"), false)),
            vec![Milestone::Bound, Milestone::AgentStatus]
        );
        assert_eq!(
            milestones(&pod(Some("n"), Some("Running"), false)),
            vec![Milestone::Bound, Milestone::AgentStatus]
        );
        assert_eq!(
            milestones(&pod(Some("n"), Some("Running"), true)),
            vec![Milestone::Bound, Milestone::AgentStatus, Milestone::Running]
        );
    }
}
