//! Pod status: built from the lifecycle (pure), written to `pods/status` only when it
//! changes.
//!
//! [`build`] turns a [`PodLifecycle`] and the pod's addresses into a `PodStatus` the way the
//! kubelet fills it: phase, per-container `state`/`lastState`/`restartCount`/`ready`/`started`,
//! conditions `PodReadyToStartContainers`, `Initialized`, `ContainersReady`, `Ready` and the
//! scheduler's `PodScheduled` (kept), each with a `lastTransitionTime` that moves only when the
//! condition's status does; `podIP(s)`, `hostIP(s)`, `startTime`, `qosClass`.
//!
//! A [`StatusWriter`] owns the writes of one pod: the worker publishes the status it wants,
//! the writer sends it as a JSON patch `test /metadata/uid` + `replace /status` (so a status
//! never lands on a newer pod of the same name) and, when the apiserver is away, keeps
//! retrying with back-off, always with the latest status. Nothing is sent when the status has
//! not changed.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::watch;
use wasmkube_client::status::{is_invalid, is_not_found};

use crate::pod::lifecycle::{
    ContainerRecord, ContainerState, Phase, PodLifecycle, Role, Termination,
};

/// What the status is built from besides the lifecycle.
#[derive(Debug, Clone)]
pub struct StatusInputs<'a> {
    /// The pod as last seen.
    pub pod: &'a Pod,
    /// Its IP, once allocated.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// When the agent accepted the pod.
    pub start_time: Timestamp,
    /// Whether the pod's sandbox (IP, volumes) is ready.
    pub sandbox_ready: bool,
    /// Prefix of container IDs (`wasmtime://`).
    pub runtime_scheme: &'static str,
    /// A pod-level reason and message (e.g. `DeadlineExceeded`).
    pub reason: Option<(String, String)>,
}

/// Builds the status the pod should have now. `previous` is the status last seen on the
/// server, for the conditions' transition times and the conditions others own.
pub fn build(lc: &PodLifecycle, inputs: &StatusInputs<'_>, now: Timestamp) -> PodStatus {
    let previous = inputs.pod.status.as_ref();
    let phase = lc.phase();
    let uid = inputs.pod.metadata.uid.clone().unwrap_or_default();
    let statuses = |role_init: bool| -> Vec<ContainerStatus> {
        lc.containers
            .iter()
            .filter(|c| (c.role != Role::App) == role_init)
            .map(|c| container_status(c, inputs.runtime_scheme, &uid))
            .collect()
    };
    let init_statuses = statuses(true);
    let app_statuses = statuses(false);

    let mut conditions: Vec<PodCondition> = Vec::new();
    let finished = matches!(phase, Phase::Succeeded | Phase::Failed);
    conditions.push(condition(
        "PodReadyToStartContainers",
        inputs.sandbox_ready && !finished,
        None,
        None,
    ));
    let incomplete: Vec<&str> = lc
        .containers
        .iter()
        .filter(|c| c.role == Role::Init && !c.completed())
        .map(|c| c.name.as_str())
        .collect();
    let initialized = lc.initialized() || incomplete.is_empty();
    conditions.push(if initialized {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    });
    let unready: Vec<&str> = lc
        .containers
        .iter()
        .filter(|c| c.role != Role::Init && !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let (ready, reason, message) = if phase == Phase::Succeeded {
        (false, Some("PodCompleted"), None)
    } else if !unready.is_empty() {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    } else {
        (true, None, None)
    };
    conditions.push(condition("ContainersReady", ready, reason, message.clone()));
    let gates_unready = readiness_gates_unready(inputs.pod);
    conditions.push(if ready && !gates_unready.is_empty() {
        condition(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gates_unready.join(", ")
            )),
        )
    } else {
        condition("Ready", ready, reason, message)
    });
    // Conditions owned by others (PodScheduled, readiness gates, DisruptionTarget) are kept.
    let ours = [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ];
    let mut theirs: Vec<PodCondition> = previous
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !ours.contains(&c.type_.as_str()))
        .collect();
    if !theirs.iter().any(|c| c.type_ == "PodScheduled") {
        theirs.push(condition("PodScheduled", true, None, None));
    }
    conditions.extend(theirs);
    // Transition times move only when a condition's status changes.
    for c in &mut conditions {
        let before = previous
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
        c.last_transition_time = match before {
            Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                p.last_transition_time.clone()
            }
            _ => Some(Time(truncate(now))),
        };
    }
    conditions.sort_by_key(|c| condition_rank(&c.type_));

    let pod_ip = inputs.pod_ip.clone().filter(|_| inputs.sandbox_ready);
    PodStatus {
        phase: Some(phase.as_str().into()),
        conditions: Some(conditions),
        host_ip: Some(inputs.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: inputs.host_ip.clone(),
        }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(truncate(inputs.start_time))),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        qos_class: Some(qos_class(inputs.pod).into()),
        reason: inputs.reason.as_ref().map(|(r, _)| r.clone()),
        message: inputs.reason.as_ref().map(|(_, m)| m.clone()),
        nominated_node_name: previous.and_then(|s| s.nominated_node_name.clone()),
        ..Default::default()
    }
}

/// API timestamps have whole seconds; comparing statuses needs the same precision.
fn truncate(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn condition_rank(type_: &str) -> usize {
    match type_ {
        "PodReadyToStartContainers" => 0,
        "Initialized" => 1,
        "Ready" => 2,
        "ContainersReady" => 3,
        "PodScheduled" => 4,
        _ => 5,
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

/// Readiness gates whose condition is not `True`.
fn readiness_gates_unready(pod: &Pod) -> Vec<String> {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .filter(|g| {
            !conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        })
        .map(|g| g.condition_type.clone())
        .collect()
}

fn terminated(t: &Termination, container_id: Option<String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(|s| Time(truncate(s))),
        finished_at: Some(Time(truncate(t.finished_at))),
        container_id,
        signal: None,
    }
}

fn container_status(c: &ContainerRecord, scheme: &str, uid: &str) -> ContainerStatus {
    let id = |n: u32| format!("{scheme}{uid}/{}/{n}", c.name);
    let current_id = c.ever_started.then(|| id(c.restart_count));
    let state = match &c.state {
        ContainerState::Waiting {
            reason, message, ..
        } => ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ContainerState::Creating => ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(
                    if c.role == Role::App || c.restart_count > 0 {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    }
                    .into(),
                ),
                message: None,
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => ApiState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(truncate(*started_at))),
            }),
            ..Default::default()
        },
        ContainerState::Terminated(t) => ApiState {
            terminated: Some(terminated(t, current_id.clone())),
            ..Default::default()
        },
    };
    let last_state = c.last_termination.as_ref().map(|t| ApiState {
        terminated: Some(terminated(t, Some(id(c.restart_count.saturating_sub(1))))),
        ..Default::default()
    });
    let running = matches!(c.state, ContainerState::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone().unwrap_or_default(),
        container_id: current_id,
        ready: c.ready,
        restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
        started: Some(running && c.started != Some(false)),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// The pod's QoS class: `Guaranteed` when every container's cpu and memory limits equal its
/// requests, `BestEffort` when no container asks for anything, else `Burstable`.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let res = c.resources.clone().unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let limit = limits.get(name);
            let request = requests.get(name).or(limit);
            if limit.is_some() || request.is_some() {
                any = true;
            }
            let equal = match (limit, request) {
                (Some(l), Some(r)) => {
                    wasmkube_api::quantity::Quantity::parse(&l.0).ok()
                        == wasmkube_api::quantity::Quantity::parse(&r.0).ok()
                }
                _ => false,
            };
            if !equal {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The statuses a pod's writer is asked to write; clones share the writer.
#[derive(Debug, Clone)]
pub struct StatusWriter {
    desired: watch::Sender<(u64, Option<PodStatus>)>,
    written: watch::Receiver<u64>,
}

impl StatusWriter {
    /// Starts the writer of pod `namespace/name` with UID `uid`.
    pub fn start(client: kube::Client, namespace: &str, name: &str, uid: &str) -> StatusWriter {
        let (desired, rx) = watch::channel((0, None));
        let (written_tx, written) = watch::channel(0);
        tokio::spawn(write_loop(
            client,
            namespace.to_string(),
            name.to_string(),
            uid.to_string(),
            rx,
            written_tx,
        ));
        StatusWriter { desired, written }
    }

    /// Asks for `status` to be written (replacing any status not written yet).
    pub fn publish(&self, status: PodStatus) {
        self.desired.send_if_modified(|(version, current)| {
            if current.as_ref() == Some(&status) {
                return false;
            }
            *version += 1;
            *current = Some(status);
            true
        });
    }

    /// Waits until everything published has been written, or `timeout` passes. Returns
    /// whether it was written.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let want = self.desired.borrow().0;
        let mut written = self.written.clone();
        tokio::time::timeout(timeout, written.wait_for(|w| *w >= want))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Whether an error means the pod (with our UID) is gone, so writing is pointless: 404, or
/// 422 from the patch's `test` of the UID. A 409 is a concurrent write: retry.
fn pod_gone(e: &kube::Error) -> bool {
    is_not_found(e) || is_invalid(e)
}

async fn write_loop(
    client: kube::Client,
    namespace: String,
    name: String,
    uid: String,
    mut desired: watch::Receiver<(u64, Option<PodStatus>)>,
    written: watch::Sender<u64>,
) {
    let mut last: Option<PodStatus> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let (version, status) = desired.borrow_and_update().clone();
        let Some(status) = status else {
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        };
        if last.as_ref() == Some(&status) {
            written.send_replace(version);
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        }
        match patch_status(&client, &namespace, &name, &uid, &status).await {
            Ok(()) => {
                last = Some(status);
                written.send_replace(version);
                backoff = Duration::from_millis(200);
            }
            Err(e) if pod_gone(&e) => {
                tracing::debug!(pod = %name, error = %e, "pod gone; status writer stops");
                written.send_replace(u64::MAX);
                return;
            }
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "status write failed; retrying");
                // Retry after the back-off, or sooner with a newer status.
                let _ = tokio::time::timeout(backoff, desired.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if desired.has_changed().is_err() {
                    return;
                }
            }
        }
    }
}

/// `PATCH pods/<name>/status` with `[test uid, replace status]`.
async fn patch_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    status: &PodStatus,
) -> Result<(), kube::Error> {
    let body = serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/status", "value": status},
    ]);
    let url = format!(
        "/api/v1/namespaces/{}/pods/{}/status",
        percent_encoding::utf8_percent_encode(namespace, percent_encoding::NON_ALPHANUMERIC),
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC),
    );
    let req = http::Request::patch(url)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
        .map_err(kube::Error::HttpError)?;
    client.request::<Pod>(req).await.map(|_| ())
}

#[cfg(test)]
mod tests;
