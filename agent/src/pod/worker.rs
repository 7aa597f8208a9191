//! The worker of one pod: the imperative shell around its [`PodLifecycle`].
//!
//! Each turn of the loop: notice deletion and `activeDeadlineSeconds`, make sure the sandbox
//! (IP, volumes) is ready, ask the lifecycle what to start or stop, act, publish the status;
//! then wait for the next thing to happen — a new version of the pod, a start finishing, an
//! instance ending, a probe result, a timer. Starts run as futures beside the loop, so a slow
//! compilation never delays a deletion.
//!
//! Graceful deletion: once `deletionTimestamp` is set, nothing starts any more; a container
//! with a `preStop` hook keeps running (and its readiness probe keeps deciding Ready, so
//! EndpointSlices show it serving but not ready: Services drain it) until the hook ends
//! ([`hooks`](super::hooks)); every other instance, and each one whose hook ended, is asked to
//! stop with what is left of the pod's grace period (HTTP handlers stop accepting and drain;
//! processes stop at once, see [`crate::runtime::wasm`]) and is cut at the deadline. When nothing runs, the final status is written and the agent confirms the
//! deletion (`gracePeriodSeconds=0`, precondition on the UID), which removes the object.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{mpsc, watch};
use wasmkube_client::events::{EventType, pod_reference};

use super::cri::{self, CriSandbox, PodRuntime};
use super::lifecycle::{ContainerState, Phase, PodLifecycle, PodStage, StartFailure, Termination};
use super::start::{StartFailed, StartRequest, Started, start_container};
use super::{PodContext, PodMessage};
use crate::probes::{ProbeKind, ProbeSet, ProbeUpdate};
use crate::runtime::{Outcome, StopHandle};
use crate::status::{StatusInputs, StatusWriter, build};
use crate::volumes::{self, PodVolumes};

/// Retry interval of volume preparation.
const VOLUME_RETRY: Duration = Duration::from_secs(10);
/// How long the final status may take to be written before the deletion is confirmed anyway.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(5);
mod terminate;

/// The default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;

/// A running instance.
struct Instance {
    generation: u64,
    stopper: Box<dyn StopHandle>,
    started_at: Timestamp,
    probes: Option<ProbeSet>,
    stop_requested: bool,
    /// Its `preStop` hook runs (the pod is being deleted); it is stopped when the hook ends.
    pre_stop_running: bool,
}

/// A probe update of one instance.
#[derive(Debug)]
struct ProbeReport {
    index: usize,
    generation: u64,
    update: ProbeUpdate,
}

/// What the worker does after waiting.
enum Next {
    /// Keep going.
    Continue,
    /// The pod object is gone: stop and clean up.
    Gone,
    /// The agent stops: stop the instances, keep the files.
    Shutdown,
}

/// Something that finished beside the loop.
enum Done {
    Started {
        index: usize,
        generation: u64,
        result: Result<Started, StartFailed>,
    },
    Exited {
        index: usize,
        generation: u64,
        outcome: Outcome,
    },
    /// A `preStop` hook ended; `Err` is why it failed.
    PreStopped {
        index: usize,
        generation: u64,
        result: Result<(), String>,
    },
}

struct Worker {
    ctx: Arc<PodContext>,
    pod: Arc<Pod>,
    rx: watch::Receiver<PodMessage>,
    uid: String,
    name: String,
    namespace: String,
    lc: PodLifecycle,
    instances: HashMap<usize, Instance>,
    starting: HashMap<usize, u64>,
    pending: FuturesUnordered<BoxFuture<'static, Done>>,
    generation: u64,
    writer: StatusWriter,
    /// Probe results, once a container with probes started (most pods have none, and an
    /// idle pod should not hold a channel it never uses).
    probe_tx: Option<mpsc::Sender<ProbeReport>>,
    probe_rx: Option<mpsc::Receiver<ProbeReport>>,
    pod_ip: Option<IpAddr>,
    /// Where the pod runs, once known (its RuntimeClass read).
    runtime: Option<PodRuntime>,
    /// Its sandbox in the container runtime, for a pod that runs there.
    cri_sandbox: Option<CriSandbox>,
    volumes: Option<PodVolumes>,
    volume_retry_at: Option<Instant>,
    start_time: Timestamp,
    terminating: bool,
    grace_deadline: Option<Instant>,
    deadline_exceeded: bool,
    wake_at: Option<Instant>,
}

/// Runs the worker of `pod` until the pod is gone.
pub(crate) async fn run(ctx: Arc<PodContext>, pod: Arc<Pod>, rx: watch::Receiver<PodMessage>) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let span = tracing::info_span!("pod", pod = %format!("{namespace}/{name}"), %uid);
    let writer = StatusWriter::start(ctx.client.clone(), &namespace, &name, &uid);
    let mut lc = PodLifecycle::new(&pod);
    if let Some(status) = &pod.status {
        lc.adopt(status, Instant::now());
    }
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(Timestamp::now, |t| t.0);
    let worker = Worker {
        ctx,
        pod,
        rx,
        uid,
        name,
        namespace,
        lc,
        instances: HashMap::new(),
        starting: HashMap::new(),
        pending: FuturesUnordered::new(),
        generation: 0,
        writer,
        probe_tx: None,
        probe_rx: None,
        pod_ip: None,
        runtime: None,
        cri_sandbox: None,
        volumes: None,
        volume_retry_at: None,
        start_time,
        terminating: false,
        grace_deadline: None,
        deadline_exceeded: false,
        wake_at: None,
    };
    tracing::Instrument::instrument(worker.run(), span).await;
}

impl Worker {
    fn container(&self, index: usize) -> Option<(&Container, bool)> {
        let spec = self.pod.spec.as_ref()?;
        let init = spec.init_containers.as_deref().unwrap_or_default();
        if index < init.len() {
            init.get(index).map(|c| (c, true))
        } else {
            spec.containers.get(index - init.len()).map(|c| (c, false))
        }
    }

    fn event(&self, index: Option<usize>, type_: EventType, reason: &str, message: String) {
        let container = index
            .and_then(|i| self.container(i))
            .map(|(c, init)| (c.name.as_str(), init));
        let involved = pod_reference(&self.pod, container);
        self.ctx.events.record(involved, type_, reason, message);
    }

    async fn run(mut self) {
        let names: Vec<String> = self.lc.containers.iter().map(|c| c.name.clone()).collect();
        self.ctx
            .logs
            .add_pod(&self.namespace, &self.name, &self.uid, names);
        tracing::info!("pod worker started");
        loop {
            let now = Instant::now();
            self.wake_at = None;
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.begin_termination(now);
            }
            self.check_active_deadline(now);
            self.enforce_grace_deadline(now);
            let finished = matches!(self.lc.stage, PodStage::Finished(_));
            if !self.terminating && !finished && !self.sandbox_ready() {
                // Boxed, like the other rare steps below: the worker of an idle pod is a
                // long-lived task, and an inline future would make it as large as its
                // largest step.
                Box::pin(self.ensure_sandbox(now)).await;
            }
            if self.sandbox_ready() || self.terminating || finished {
                self.act(now);
            }
            self.publish();
            if self.terminating
                && self.pod.metadata.deletion_timestamp.is_some()
                && matches!(self.lc.stage, PodStage::Finished(_))
                && self.instances.is_empty()
                && self.starting.is_empty()
            {
                Box::pin(self.confirm_deletion()).await;
                return;
            }
            match self.wait().await {
                Next::Continue => {}
                Next::Gone => {
                    Box::pin(self.stop_all()).await;
                    tracing::info!("pod gone; stopped");
                    Box::pin(self.cleanup()).await;
                    return;
                }
                Next::Shutdown => {
                    // The agent stops: instances end with it; the pod's files and status stay
                    // for the next start to take over. Containers of the container runtime
                    // are left to it (the next start replaces the pod's sandbox).
                    if self.cri_sandbox.is_none() {
                        Box::pin(self.stop_all()).await;
                    }
                    return;
                }
            }
        }
    }

    /// Waits for the next thing to happen.
    async fn wait(&mut self) -> Next {
        let wake = self.wake_at;
        let sleep = async move {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.rx.changed() => {
                if changed.is_err() {
                    // The manager stopped: the agent is shutting down.
                    return Next::Shutdown;
                }
                let message = self.rx.borrow_and_update().clone();
                match message {
                    PodMessage::Update(pod) => {
                        self.pod = pod;
                        Next::Continue
                    }
                    PodMessage::Gone => Next::Gone,
                }
            }
            Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                self.on_done(done);
                Next::Continue
            }
            Some(report) = recv_probe(self.probe_rx.as_mut()) => {
                self.on_probe(report);
                Next::Continue
            }
            () = sleep => Next::Continue,
        }
    }

    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn sandbox_ready(&self) -> bool {
        self.pod_ip.is_some() && self.volumes.is_some()
    }

    /// Allocates the pod's IP and prepares its volumes (retried until they work).
    async fn ensure_sandbox(&mut self, now: Instant) {
        if self.runtime.is_none() {
            match cri::runtime_of(&self.ctx, &self.pod).await {
                Ok(runtime) => self.runtime = Some(runtime),
                Err(message) => {
                    self.event(
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                    self.wake(now + VOLUME_RETRY);
                    return;
                }
            }
        }
        if let Some(PodRuntime::Cri { handler }) = self.runtime.clone()
            && self.cri_sandbox.is_none()
        {
            match cri::run_sandbox(&self.ctx, &self.pod, &handler).await {
                Ok(sandbox) => {
                    let ip = sandbox.ip.unwrap_or(self.ctx.host_ip);
                    self.pod_ip = Some(ip);
                    self.ctx
                        .logs
                        .set_pod_ip(&self.namespace, &self.name, &self.uid, ip);
                    self.cri_sandbox = Some(sandbox);
                }
                Err(message) => {
                    self.event(
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                    self.wake(now + VOLUME_RETRY);
                    return;
                }
            }
        }
        if self.pod_ip.is_none() {
            let preferred = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            match self.ctx.network.allocate(&self.uid, preferred).await {
                Ok(ip) => {
                    self.pod_ip = Some(ip);
                    self.ctx
                        .logs
                        .set_pod_ip(&self.namespace, &self.name, &self.uid, ip);
                }
                Err(e) => {
                    self.event(
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    let at = now + VOLUME_RETRY;
                    self.wake(at);
                }
            }
        }
        if let Some(at) = self.volume_retry_at
            && at > now
        {
            self.wake(at);
            return;
        }
        if let Some(prepared) = &self.volumes {
            // Prepared: again only when a service-account token is due for renewal.
            let Some(refresh) = prepared.token_refresh_at() else {
                return;
            };
            let wait = refresh
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                self.wake(now + wait);
                return;
            }
            self.refresh_volumes(now).await;
            return;
        }
        let dir = self.ctx.pods_dir.join(&self.uid);
        match volumes::prepare(
            &self.pod,
            &dir,
            &self.ctx.client,
            &self.ctx.host_paths,
            &self.ctx.tokens,
        )
        .await
        {
            Ok(v) => {
                if let Some((volume, message)) = v.refused() {
                    // Not retried: the containers fail with CreateContainerConfigError.
                    self.event(
                        None,
                        EventType::Warning,
                        "FailedMount",
                        format!("MountVolume.SetUp failed for volume {volume:?} : {message}"),
                    );
                }
                self.volumes = Some(v);
                self.volume_retry_at = None;
                self.wake_for_token_refresh(now);
            }
            Err(e) => {
                self.event(None, EventType::Warning, "FailedMount", e.to_string());
                let at = now + VOLUME_RETRY;
                self.volume_retry_at = Some(at);
                self.wake(at);
            }
        }
    }

    /// Prepares the volumes again to renew their service-account tokens (the kubelet rewrites
    /// a projected volume when its token is at 80% of its life). On failure the old files
    /// stay (their tokens are still valid for a while) and it is retried.
    async fn refresh_volumes(&mut self, now: Instant) {
        let dir = self.ctx.pods_dir.join(&self.uid);
        match volumes::prepare(
            &self.pod,
            &dir,
            &self.ctx.client,
            &self.ctx.host_paths,
            &self.ctx.tokens,
        )
        .await
        {
            Ok(v) => {
                tracing::debug!("renewed the pod's service-account tokens");
                self.volumes = Some(v);
                self.volume_retry_at = None;
                self.wake_for_token_refresh(now);
            }
            Err(e) => {
                self.event(None, EventType::Warning, "FailedMount", e.to_string());
                let at = now + VOLUME_RETRY;
                self.volume_retry_at = Some(at);
                self.wake(at);
            }
        }
    }

    /// Wakes the loop when the first service-account token of the volumes is due.
    fn wake_for_token_refresh(&mut self, now: Instant) {
        if let Some(refresh) = self.volumes.as_ref().and_then(PodVolumes::token_refresh_at) {
            let wait = refresh
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            self.wake(now + wait.max(Duration::from_secs(1)));
        }
    }

    /// Starts, stops and records back-offs as the lifecycle plans.
    fn act(&mut self, now: Instant) {
        let plan = self.lc.plan(now, &self.name, &self.namespace, &self.uid);
        if self.deadline_exceeded
            && let PodStage::Finished(_) = self.lc.stage
        {
            self.lc.stage = PodStage::Finished(Phase::Failed);
        }
        for i in plan.start {
            self.start(i, now);
        }
        for (i, _) in &plan.backing_off {
            let name = self.lc.containers[*i].name.clone();
            self.event(
                Some(*i),
                EventType::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    self.name, self.namespace, self.uid
                ),
            );
        }
        for i in plan.stop {
            let grace = self.grace_period();
            self.stop(i, grace, "Stopping container");
        }
        if let Some(at) = plan.wake_at {
            self.wake(at);
        }
        for c in &self.lc.containers {
            let reason = match &c.state {
                ContainerState::Waiting { reason, .. } => Some(reason.as_str()),
                ContainerState::Creating => Some("ContainerCreating"),
                _ => None,
            };
            self.ctx
                .logs
                .set_waiting(&self.namespace, &self.name, &c.name, reason);
        }
    }

    fn start(&mut self, index: usize, now: Instant) {
        let Some((container, init)) = self.container(index).map(|(c, i)| (c.clone(), i)) else {
            return;
        };
        if let Err(e) = self.lc.begin_start(index, now) {
            tracing::warn!(error = %e, "refused start");
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        self.starting.insert(index, generation);
        let req = StartRequest {
            pod: Arc::clone(&self.pod),
            container,
            init,
            restart_count: self.lc.containers[index].restart_count,
            pod_ip: self.pod_ip,
            pod_dir: self.ctx.pods_dir.join(&self.uid),
            sandbox: self.cri_sandbox.clone(),
        };
        let ctx = Arc::clone(&self.ctx);
        self.pending.push(
            async move {
                let result = start_container(ctx, req).await;
                Done::Started {
                    index,
                    generation,
                    result,
                }
            }
            .boxed(),
        );
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Started {
                index,
                generation,
                result,
            } => {
                if self.starting.get(&index) != Some(&generation) {
                    if let Ok(started) = result {
                        started.running.stopper.stop(Duration::ZERO);
                    }
                    return;
                }
                self.starting.remove(&index);
                match result {
                    Ok(started) => self.on_started(index, generation, started),
                    Err(failed) => {
                        let outcome = match failed {
                            StartFailed::Image(m) => Err(StartFailure::Image(m)),
                            StartFailed::ImageNeverPull(m) => Err(StartFailure::ImageNeverPull(m)),
                            StartFailed::Signature(m) => Err(StartFailure::Signature(m)),
                            StartFailed::Config(m) => Err(StartFailure::Config(m)),
                            StartFailed::Runtime(m) => Err(StartFailure::Runtime(m)),
                            StartFailed::Workload(m) => Ok(Termination {
                                exit_code: 128,
                                reason: "StartError".into(),
                                message: Some(m),
                                started_at: None,
                                finished_at: Timestamp::now(),
                            }),
                        };
                        let r = match outcome {
                            Err(f) => self.lc.start_failed(index, f, now),
                            Ok(t) => self.lc.exited(index, t, now),
                        };
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "start failure not recorded");
                        }
                    }
                }
            }
            Done::Exited {
                index,
                generation,
                outcome,
            } => {
                let Some(instance) = self.instances.get(&index) else {
                    return;
                };
                if instance.generation != generation {
                    return;
                }
                let Some(instance) = self.instances.remove(&index) else {
                    return;
                };
                let termination = Termination::from_outcome(
                    &outcome,
                    Some(instance.started_at),
                    Timestamp::now(),
                );
                tracing::info!(
                    container = %self.lc.containers[index].name,
                    outcome = %outcome_text(&outcome),
                    "container ended"
                );
                if let Err(e) = self.lc.exited(index, termination, now) {
                    tracing::warn!(error = %e, "exit not recorded");
                }
            }
            Done::PreStopped {
                index,
                generation,
                result,
            } => self.on_pre_stopped(index, generation, result),
        }
    }

    fn on_started(&mut self, index: usize, generation: u64, started: Started) {
        let Started {
            running,
            image_id,
            runtime_id,
        } = started;
        let started_at = Timestamp::now();
        if let Err(e) = self.lc.started(index, started_at, image_id) {
            tracing::warn!(error = %e, "start not recorded");
            running.stopper.stop(Duration::ZERO);
            return;
        }
        if let Some(id) = runtime_id {
            let _ = self.lc.set_runtime_id(index, id);
        }
        let (has_readiness, has_startup) = self
            .container(index)
            .map(|(c, _)| (c.readiness_probe.is_some(), c.startup_probe.is_some()))
            .unwrap_or((false, false));
        self.lc.set_started(index, !has_startup);
        self.lc.set_ready(index, !has_readiness && !has_startup);
        let has_probes = self.container(index).is_some_and(|(c, _)| {
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
        });
        if has_probes && self.probe_tx.is_none() {
            let (tx, rx) = mpsc::channel(64);
            self.probe_tx = Some(tx);
            self.probe_rx = Some(rx);
        }
        let probes = match (self.container(index), self.pod_ip, self.probe_tx.clone()) {
            (Some((c, _)), Some(ip), Some(probe_tx)) => {
                let set = ProbeSet::start(
                    c,
                    ip,
                    running.exec.as_deref().cloned(),
                    tokio::time::Instant::now(),
                    probe_tx,
                    move |update| ProbeReport {
                        index,
                        generation,
                        update,
                    },
                );
                (!set.is_empty()).then_some(set)
            }
            _ => None,
        };
        let outcome = running.outcome;
        self.pending.push(
            async move {
                let outcome = outcome.await;
                Done::Exited {
                    index,
                    generation,
                    outcome,
                }
            }
            .boxed(),
        );
        self.instances.insert(
            index,
            Instance {
                generation,
                stopper: running.stopper,
                started_at,
                probes,
                stop_requested: false,
                pre_stop_running: false,
            },
        );
        if self.terminating {
            let grace = self.remaining_grace(Instant::now());
            self.stop(index, grace, "Stopping container");
        }
    }

    fn on_probe(&mut self, report: ProbeReport) {
        let Some(instance) = self.instances.get(&report.index) else {
            return;
        };
        if instance.generation != report.generation || instance.stop_requested {
            return;
        }
        let index = report.index;
        let update = report.update;
        let name = self.lc.containers[index].name.clone();
        if let Some(message) = &update.message {
            self.event(
                Some(index),
                EventType::Warning,
                "Unhealthy",
                format!("{} probe failed: {message}", update.kind.title()),
            );
        }
        match update.kind {
            ProbeKind::Readiness => {
                let started = self.lc.containers[index].started != Some(false);
                self.lc.set_ready(index, update.success && started);
            }
            ProbeKind::Startup if update.changed && update.success => {
                self.lc.set_started(index, true);
                let has_readiness = self
                    .container(index)
                    .is_some_and(|(c, _)| c.readiness_probe.is_some());
                if !has_readiness {
                    self.lc.set_ready(index, !self.terminating);
                }
            }
            ProbeKind::Startup | ProbeKind::Liveness if update.changed && !update.success => {
                let grace = self.grace_period();
                let which = if update.kind == ProbeKind::Startup {
                    "startup"
                } else {
                    "liveness"
                };
                self.stop(
                    index,
                    grace,
                    &format!("Container {name} failed {which} probe, will be restarted"),
                );
            }
            ProbeKind::Startup | ProbeKind::Liveness => {}
        }
    }

    fn publish(&self) {
        let reason = self.deadline_exceeded.then(|| {
            (
                "DeadlineExceeded".to_string(),
                "Pod was active on the node longer than the specified deadline".to_string(),
            )
        });
        let inputs = StatusInputs {
            pod: &self.pod,
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            host_ip: self.ctx.host_ip.to_string(),
            start_time: self.start_time,
            sandbox_ready: self.sandbox_ready(),
            runtime_scheme: self.ctx.runtime.scheme(),
            reason,
        };
        self.writer
            .publish(build(&self.lc, &inputs, Timestamp::now()));
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Exited(code) => format!("exited with code {code}"),
        Outcome::Trapped { message } => format!("trapped: {message}"),
        Outcome::OutOfMemory => "out of memory".into(),
        Outcome::Stopped => "stopped".into(),
        Outcome::CpuTimeExceeded => "CPU time limit exceeded".into(),
        Outcome::StartFailed { message } => format!("failed to start: {message}"),
    }
}

/// The next probe report, or never when no container has probes.
async fn recv_probe(rx: Option<&mut mpsc::Receiver<ProbeReport>>) -> Option<ProbeReport> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
