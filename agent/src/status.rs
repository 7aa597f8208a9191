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
//! the writer sends it as a JSON patch `test /metadata/uid` + `add /status` (so a status
//! never lands on a newer pod of the same name) and, when the apiserver is away, keeps
//! retrying with back-off, always with the latest status. Nothing is sent when the status has
//! not changed. A written status is not kept (only its digest), and no task waits for an
//! idle pod's next status: a pod's status costs the agent next to nothing once written.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use wasmkube_client::status::{is_invalid, is_not_found};

use crate::pod::lifecycle::{
    ContainerRecord, ContainerState, Phase, PodLifecycle, Role, Termination,
};

/// What the status is built from besides the lifecycle.
#[derive(Debug, Clone)]
pub(crate) struct StatusInputs<'a> {
    /// The pod as last seen.
    pub(crate) pod: &'a Pod,
    /// Its IP, once allocated.
    pub(crate) pod_ip: Option<String>,
    /// The node's IP.
    pub(crate) host_ip: String,
    /// When the agent accepted the pod.
    pub(crate) start_time: Timestamp,
    /// Whether the pod's sandbox (IP, volumes) is ready.
    pub(crate) sandbox_ready: bool,
    /// Prefix of container IDs (`wasmtime://`).
    pub(crate) runtime_scheme: &'static str,
    /// A pod-level reason and message (e.g. `DeadlineExceeded`).
    pub(crate) reason: Option<(String, String)>,
}

/// Builds the status the pod should have now. `previous` is the status last seen on the
/// server, for the conditions' transition times and the conditions others own.
pub(crate) fn build(lc: &PodLifecycle, inputs: &StatusInputs<'_>, now: Timestamp) -> PodStatus {
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
    let current_id = c
        .runtime_id
        .clone()
        .or_else(|| c.ever_started.then(|| id(c.restart_count)));
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
        terminated: Some(terminated(
            t,
            Some(
                c.last_runtime_id
                    .clone()
                    .unwrap_or_else(|| id(c.restart_count.saturating_sub(1))),
            ),
        )),
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
pub(crate) fn qos_class(pod: &Pod) -> &'static str {
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
///
/// As the kubelet's status manager, it holds no task and no status copy for a pod whose
/// status is written: an idle pod costs the digest of its last status. A publish that
/// changes the status keeps it serialized until it is written, by a task that runs only
/// while something is pending (and while the apiserver is away, retrying).
#[derive(Clone)]
pub(crate) struct StatusWriter {
    shared: Arc<WriterShared>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("pod", &self.shared.name)
            .field("uid", &self.shared.uid)
            .finish_non_exhaustive()
    }
}

struct WriterShared {
    client: kube::Client,
    /// `/api/v1/namespaces/<ns>/pods/<name>/status`.
    url: String,
    name: String,
    uid: String,
    state: Mutex<WriterState>,
    /// The version of the latest published status (bumped by every change).
    published: watch::Sender<u64>,
    /// The version last written (`u64::MAX` once the pod is gone).
    written: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct WriterState {
    /// SHA-256 of the latest published status's JSON: an identical publish is a no-op.
    digest: Option<[u8; 32]>,
    /// The latest published status's JSON, until it is written.
    pending: Option<Vec<u8>>,
    /// Whether a task is writing.
    writing: bool,
    /// The pod (with our UID) is gone: nothing more is written.
    gone: bool,
}

impl StatusWriter {
    /// The writer of pod `namespace/name` with UID `uid`.
    pub(crate) fn start(
        client: kube::Client,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> StatusWriter {
        let url = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            percent_encoding::utf8_percent_encode(namespace, percent_encoding::NON_ALPHANUMERIC),
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC),
        );
        StatusWriter {
            shared: Arc::new(WriterShared {
                client,
                url,
                name: name.to_string(),
                uid: uid.to_string(),
                state: Mutex::new(WriterState::default()),
                published: watch::Sender::new(0),
                written: watch::Sender::new(0),
            }),
        }
    }

    /// Asks for `status` to be written (replacing any status not written yet); nothing
    /// happens when it equals the status published last.
    pub(crate) fn publish(&self, status: PodStatus) {
        let json = match serde_json::to_vec(&status) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(pod = %self.shared.name, error = %e, "cannot serialize a pod status");
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&json).into();
        let start_writing = {
            let mut state = self.shared.lock();
            if state.gone || state.digest == Some(digest) {
                return;
            }
            state.digest = Some(digest);
            state.pending = Some(json);
            self.shared.published.send_modify(|v| *v += 1);
            !std::mem::replace(&mut state.writing, true)
        };
        if start_writing {
            tokio::spawn(write_pending(Arc::clone(&self.shared)));
        }
    }

    /// Waits until everything published has been written, or `timeout` passes. Returns
    /// whether it was written.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let want = *self.shared.published.borrow();
        let mut written = self.shared.written.subscribe();
        tokio::time::timeout(timeout, written.wait_for(|w| *w >= want))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl WriterShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // The state holds no invariant a panicking holder could break halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an error means the pod (with our UID) is gone, so writing is pointless: 404, or
/// 422 from the patch's `test` of the UID. A 409 is a concurrent write: retry.
fn pod_gone(e: &kube::Error) -> bool {
    is_not_found(e) || is_invalid(e)
}

/// Writes the pending status until none is left; while the apiserver fails, retries with
/// back-off (sooner when a newer status is published), always with the latest status.
async fn write_pending(shared: Arc<WriterShared>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (version, json) = {
            let mut state = shared.lock();
            match state.pending.take() {
                Some(json) => (*shared.published.borrow(), json),
                None => {
                    state.writing = false;
                    return;
                }
            }
        };
        match patch_status(&shared, &json).await {
            Ok(()) => {
                shared.written.send_replace(version);
                backoff = Duration::from_millis(200);
            }
            Err(e) if pod_gone(&e) => {
                tracing::debug!(pod = %shared.name, error = %e, "pod gone; status writer stops");
                let mut state = shared.lock();
                state.gone = true;
                state.pending = None;
                state.writing = false;
                shared.written.send_replace(u64::MAX);
                return;
            }
            Err(e) => {
                if Arc::strong_count(&shared) == 1 {
                    // The pod's worker is gone (its writer dropped): nobody waits for this.
                    tracing::debug!(pod = %shared.name, error = %e, "status write failed; writer dropped");
                    shared.lock().writing = false;
                    return;
                }
                tracing::debug!(pod = %shared.name, error = %e, "status write failed; retrying");
                let mut newer = {
                    let mut state = shared.lock();
                    if state.pending.is_none() {
                        state.pending = Some(json);
                    }
                    shared.published.subscribe()
                };
                // Retry after the back-off, or sooner with a newer status.
                let _ = tokio::time::timeout(backoff, newer.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// `PATCH pods/<name>/status` with `[test uid, add status]` (`add` replaces an existing
/// member), the status being `status_json`.
async fn patch_status(shared: &WriterShared, status_json: &[u8]) -> Result<(), kube::Error> {
    let mut body = Vec::with_capacity(status_json.len() + 128);
    body.extend_from_slice(br#"[{"op":"test","path":"/metadata/uid","value":"#);
    serde_json::to_writer(&mut body, &shared.uid).map_err(kube::Error::SerdeError)?;
    body.extend_from_slice(br#"},{"op":"add","path":"/status","value":"#);
    body.extend_from_slice(status_json);
    body.extend_from_slice(b"}]");
    let req = http::Request::patch(shared.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    // The answer (the whole pod) is not needed: it is read and dropped unparsed.
    shared.client.request_text(req).await.map(|_| ())
}

#[cfg(test)]
mod tests;
