//! The pod lifecycle as an explicit state machine, free of I/O.
//!
//! A [`PodLifecycle`] holds the pod's [`PodStage`] and one [`ContainerRecord`] per container
//! (init containers first, in order, then the app containers). The pod worker feeds it what
//! happened (a start began, a container started, exited or failed to start, deletion was
//! requested) and asks [`PodLifecycle::plan`] what to start now and when to look again.
//!
//! ```text
//!                 all init containers done              every app container finished
//!  Initializing ───────────────────────────▶ Running ───────────────────────────▶ Finished
//!       │   an init container failed, restartPolicy Never                           ▲
//!       ├───────────────────────────────────────────────────────────────────────────┤
//!       │ deletion                          │ deletion                              │
//!       └──────────────────▶ Terminating ◀──┘──────── nothing runs any more ────────┘
//! ```
//!
//! A container moves Waiting → Creating → Running → (Waiting with `CrashLoopBackOff` |
//! Terminated). Restart decisions follow `restartPolicy` (init containers restart unless the
//! policy is Never; native sidecars — init containers with `restartPolicy: Always` — always
//! restart) with [`CrashBackoff`]. Transitions that make no sense in the current state are
//! refused with [`Illegal`] rather than corrupting the record.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::backoff::{CrashBackoff, go_duration};
use crate::runtime::Outcome;

/// How long an image or configuration problem waits before the next attempt, first and at most.
const RETRY_INITIAL: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// A pod's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    /// Restart every container whenever it exits (the default).
    Always,
    /// Restart containers that exit with an error.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses `spec.restartPolicy` (missing or unknown = Always, the default).
    pub(crate) fn from_spec(value: Option<&str>) -> RestartPolicy {
        match value {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }
}

/// What a container is to its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// An init container: runs to completion before the next one starts.
    Init,
    /// A native sidecar (`initContainers[*].restartPolicy: Always`): started in init order,
    /// then runs beside the app containers and always restarts.
    Sidecar,
    /// An app container (`spec.containers`).
    App,
}

/// The pod's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodStage {
    /// Init containers are running one after the other.
    Initializing,
    /// App containers run (and restart as the policy says).
    Running,
    /// Deletion was requested: nothing starts, running containers are being stopped.
    Terminating,
    /// Nothing will run any more; the pod's phase is final.
    Finished(Phase),
}

/// A pod's phase, as in `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted but not all containers have started.
    Pending,
    /// At least one container runs or is restarting.
    Running,
    /// Every container ended successfully and none will restart.
    Succeeded,
    /// Every container ended and at least one failed.
    Failed,
}

impl Phase {
    /// The phase as the API writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// How one instance of a container ended, as `state.terminated` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Termination {
    /// Exit code (137 for OOM kills and stops, like a SIGKILLed process).
    pub(crate) exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`.
    pub(crate) reason: String,
    /// Details (a trap message, why the start failed).
    pub(crate) message: Option<String>,
    /// When the instance started, if it did.
    pub(crate) started_at: Option<Timestamp>,
    /// When it ended.
    pub(crate) finished_at: Timestamp,
}

impl Termination {
    /// The termination of an instance that ended with `outcome`.
    pub(crate) fn from_outcome(
        outcome: &Outcome,
        started_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        let (exit_code, reason, message) = match outcome {
            Outcome::Exited(0) => (0, "Completed", None),
            Outcome::Exited(code) => (*code, "Error", None),
            Outcome::Trapped { message } => (134, "Error", Some(message.clone())),
            Outcome::OutOfMemory => (137, "OOMKilled", None),
            Outcome::Stopped => (137, "Error", None),
            Outcome::CpuTimeExceeded => (152, "Error", Some("CPU time limit exceeded".to_string())),
            Outcome::StartFailed { message } => (128, "StartError", Some(message.clone())),
        };
        Termination {
            exit_code,
            reason: reason.to_string(),
            message,
            started_at,
            finished_at: now,
        }
    }

    /// Whether the instance succeeded (exit code 0).
    pub(crate) fn succeeded(&self) -> bool {
        self.exit_code == 0
    }
}

/// Why a start attempt failed before anything ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartFailure {
    /// The image cannot be resolved (`ErrImagePull`, then `ImagePullBackOff`).
    Image(String),
    /// The image is absent and the pull policy is `Never` (`ErrImageNeverPull`, every time:
    /// the kubelet has no back-off reason for it).
    ImageNeverPull(String),
    /// The image has no valid signature where the policy asks for one
    /// (`SignatureValidationFailed`, the kubelet's reason, then `ImagePullBackOff`).
    Signature(String),
    /// The environment or volumes cannot be built (`CreateContainerConfigError`).
    Config(String),
    /// The runtime failed on its own (`CreateContainerError`).
    Runtime(String),
}

/// The API-visible state of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerState {
    /// Not running. `retry_at` = do not start before then; `None` = start when its turn comes.
    Waiting {
        /// `PodInitializing`, `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`...
        reason: String,
        /// Details.
        message: Option<String>,
        /// Earliest next start.
        retry_at: Option<Instant>,
    },
    /// A start is under way (image, compilation, instantiation); shown as `ContainerCreating`.
    Creating,
    /// An instance runs.
    Running {
        /// When it started.
        started_at: Timestamp,
    },
    /// Ended for good: it will not be restarted.
    Terminated(Termination),
}

/// One container's record.
#[derive(Debug, Clone)]
pub(crate) struct ContainerRecord {
    /// Container name.
    pub(crate) name: String,
    /// `image` from the spec.
    pub(crate) image: String,
    /// The resolved image digest, once known.
    pub(crate) image_id: Option<String>,
    /// Init, sidecar or app.
    pub(crate) role: Role,
    /// The state now.
    pub(crate) state: ContainerState,
    /// How the previous instance ended.
    pub(crate) last_termination: Option<Termination>,
    /// Restarts so far (the current instance's attempt number).
    pub(crate) restart_count: u32,
    /// Whether any instance has been started since the agent took the pod over.
    pub(crate) ever_started: bool,
    /// Readiness (readiness probe passed, or no probe and running).
    pub(crate) ready: bool,
    /// Startup probe passed (or none); `None` while not running.
    pub(crate) started: Option<bool>,
    /// CrashLoopBackOff state.
    pub(crate) backoff: CrashBackoff,
    /// When the last instance ended (for the back-off).
    pub(crate) finished_instant: Option<Instant>,
    /// Consecutive start failures (image/config) for their retry delay.
    pub(crate) start_failures: u32,
    /// The container runtime's ID of the current instance (`containerd://<id>`) for a
    /// container the CRI runtime runs; `None` for wasm (its IDs are derived).
    pub(crate) runtime_id: Option<String>,
    /// The same of the instance before it (`lastState`).
    pub(crate) last_runtime_id: Option<String>,
}

impl ContainerRecord {
    /// A container that has not started yet.
    pub(crate) fn new(name: &str, image: &str, role: Role) -> Self {
        ContainerRecord {
            name: name.to_string(),
            image: image.to_string(),
            image_id: None,
            role,
            state: ContainerState::Waiting {
                reason: "PodInitializing".into(),
                message: None,
                retry_at: None,
            },
            last_termination: None,
            restart_count: 0,
            ever_started: false,
            ready: false,
            started: None,
            backoff: CrashBackoff::new(),
            finished_instant: None,
            start_failures: 0,
            runtime_id: None,
            last_runtime_id: None,
        }
    }

    /// Whether an instance runs or is being started.
    pub(crate) fn is_active(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Creating | ContainerState::Running { .. }
        )
    }

    /// Whether the container finished with exit code 0 and will not run again.
    pub(crate) fn completed(&self) -> bool {
        matches!(&self.state, ContainerState::Terminated(t) if t.succeeded())
    }
}

/// A transition that does not apply to the container's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {container}: cannot {transition} while {state}")]
pub(crate) struct Illegal {
    /// The container.
    pub(crate) container: String,
    /// The attempted transition.
    pub(crate) transition: &'static str,
    /// Its state.
    pub(crate) state: &'static str,
}

/// What the worker should do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Containers (indices) to start now, in order.
    pub(crate) start: Vec<usize>,
    /// Containers (indices) to stop now (sidecars once the app containers are done).
    pub(crate) stop: Vec<usize>,
    /// Containers that just entered back-off: (index, delay), for the `BackOff` event.
    pub(crate) backing_off: Vec<(usize, Duration)>,
    /// When to call `plan` again (the earliest pending restart).
    pub(crate) wake_at: Option<Instant>,
}

/// The lifecycle of one pod.
#[derive(Debug, Clone)]
pub(crate) struct PodLifecycle {
    /// The pod's restart policy.
    pub(crate) restart_policy: RestartPolicy,
    /// The stage.
    pub(crate) stage: PodStage,
    /// Init containers (in order) then app containers.
    pub(crate) containers: Vec<ContainerRecord>,
    /// Whether the init containers are done (they never run again once they are).
    pub(crate) init_done: bool,
}

impl PodLifecycle {
    /// The lifecycle of a pod the agent has just taken over: nothing runs yet.
    pub(crate) fn new(pod: &Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut containers = Vec::new();
        for c in spec.init_containers.iter().flatten() {
            let role = if c.restart_policy.as_deref() == Some("Always") {
                Role::Sidecar
            } else {
                Role::Init
            };
            containers.push(ContainerRecord::new(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                role,
            ));
        }
        for c in &spec.containers {
            containers.push(ContainerRecord::new(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                Role::App,
            ));
        }
        let has_init = containers.iter().any(|c| c.role != Role::App);
        PodLifecycle {
            restart_policy: RestartPolicy::from_spec(spec.restart_policy.as_deref()),
            stage: if has_init {
                PodStage::Initializing
            } else {
                PodStage::Running
            },
            containers,
            init_done: !has_init,
        }
    }

    /// The index of the container named `name`.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.containers.iter().position(|c| c.name == name)
    }

    /// Whether the init phase is over (all init containers completed, sidecars started).
    pub(crate) fn initialized(&self) -> bool {
        self.init_done
    }

    /// A start of container `i` begins: Waiting → Creating. A restart counts here.
    pub(crate) fn begin_start(&mut self, i: usize, now: Instant) -> Result<(), Illegal> {
        let c = self.record(i)?;
        if !matches!(c.state, ContainerState::Waiting { .. }) {
            return Err(illegal(c, "start"));
        }
        if c.ever_started || c.last_termination.is_some() {
            if let Some(finished) = c.finished_instant {
                c.backoff.record_restart(finished, now);
            }
            c.restart_count += 1;
        }
        c.state = ContainerState::Creating;
        Ok(())
    }

    /// The runtime started container `i`: Creating → Running.
    pub(crate) fn started(
        &mut self,
        i: usize,
        at: Timestamp,
        image_id: String,
    ) -> Result<(), Illegal> {
        let c = self.record(i)?;
        if c.state != ContainerState::Creating {
            return Err(illegal(c, "mark started"));
        }
        c.state = ContainerState::Running { started_at: at };
        c.ever_started = true;
        c.last_runtime_id = c.runtime_id.take();
        c.image_id = Some(image_id);
        c.ready = false;
        c.started = Some(false);
        c.start_failures = 0;
        Ok(())
    }

    /// Records the runtime's ID of container `i`'s current instance (after [`started`]).
    ///
    /// [`started`]: PodLifecycle::started
    pub(crate) fn set_runtime_id(&mut self, i: usize, id: String) -> Result<(), Illegal> {
        self.record(i)?.runtime_id = Some(id);
        Ok(())
    }

    /// A start attempt of container `i` failed before anything ran: Creating → Waiting with
    /// the failure's reason, retried later (image and configuration problems are retried
    /// whatever the restart policy, as the kubelet does).
    pub(crate) fn start_failed(
        &mut self,
        i: usize,
        failure: StartFailure,
        now: Instant,
    ) -> Result<(), Illegal> {
        let c = self.record(i)?;
        if c.state != ContainerState::Creating {
            return Err(illegal(c, "fail to start"));
        }
        // A failed attempt is not an instance: undo the restart count of begin_start.
        if c.ever_started || c.last_termination.is_some() {
            c.restart_count = c.restart_count.saturating_sub(1);
        }
        // An image a pod may not pull is looked for again at the kubelet's pod worker
        // back-off (10 s), not a growing one: it appears when someone imports it.
        let delay = match failure {
            StartFailure::ImageNeverPull(_) => RETRY_INITIAL,
            _ => retry_delay(c.start_failures),
        };
        let repeated = c.start_failures > 0;
        c.start_failures += 1;
        let (reason, message) = match failure {
            StartFailure::Image(m) if repeated => ("ImagePullBackOff", m),
            StartFailure::Image(m) => ("ErrImagePull", m),
            StartFailure::ImageNeverPull(m) => ("ErrImageNeverPull", m),
            StartFailure::Signature(m) if repeated => ("ImagePullBackOff", m),
            StartFailure::Signature(m) => ("SignatureValidationFailed", m),
            StartFailure::Config(m) => ("CreateContainerConfigError", m),
            StartFailure::Runtime(m) => ("CreateContainerError", m),
        };
        c.state = ContainerState::Waiting {
            reason: reason.to_string(),
            message: Some(message),
            retry_at: Some(now + delay),
        };
        Ok(())
    }

    /// Container `i`'s instance ended (`termination` says how; a start error of the runtime
    /// is an instance that ended with `StartError`). Decides, with the restart policy and
    /// back-off, whether it will run again.
    pub(crate) fn exited(
        &mut self,
        i: usize,
        termination: Termination,
        now: Instant,
    ) -> Result<(), Illegal> {
        let terminating =
            self.stage == PodStage::Terminating || matches!(self.stage, PodStage::Finished(_));
        let policy = self.restart_policy;
        let c = self.record(i)?;
        if !c.is_active() {
            return Err(illegal(c, "exit"));
        }
        c.ready = false;
        c.started = None;
        c.finished_instant = Some(now);
        let restart = !terminating
            && match c.role {
                Role::Sidecar => true,
                Role::Init => !termination.succeeded() && policy != RestartPolicy::Never,
                Role::App => match policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !termination.succeeded(),
                    RestartPolicy::Never => false,
                },
            };
        if restart {
            c.last_termination = Some(termination);
            c.state = ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_at: Some(now),
            };
        } else {
            c.state = ContainerState::Terminated(termination);
        }
        Ok(())
    }

    /// Sets container `i`'s readiness (only a running container can be ready).
    pub(crate) fn set_ready(&mut self, i: usize, ready: bool) {
        if let Some(c) = self.containers.get_mut(i) {
            c.ready = ready && matches!(c.state, ContainerState::Running { .. });
        }
    }

    /// Records that container `i`'s startup probe passed (or that it has none).
    pub(crate) fn set_started(&mut self, i: usize, started: bool) {
        if let Some(c) = self.containers.get_mut(i)
            && matches!(c.state, ContainerState::Running { .. })
        {
            c.started = Some(started);
        }
    }

    /// Deletion was requested: stop starting anything. Returns the containers to stop.
    pub(crate) fn terminate(&mut self) -> Vec<usize> {
        if !matches!(self.stage, PodStage::Finished(_)) {
            self.stage = PodStage::Terminating;
        }
        for c in &mut self.containers {
            c.ready = false;
        }
        self.active()
    }

    /// Indices of containers that run or are being started.
    pub(crate) fn active(&self) -> Vec<usize> {
        (0..self.containers.len())
            .filter(|&i| self.containers[i].is_active())
            .collect()
    }

    /// Decides what to start now, what enters back-off and when to look again; moves the
    /// stage forward (init done → Running, everything finished → Finished).
    pub(crate) fn plan(
        &mut self,
        now: Instant,
        pod_name: &str,
        pod_ns: &str,
        pod_uid: &str,
    ) -> Plan {
        let mut plan = Plan::default();
        match self.stage {
            PodStage::Finished(_) => return plan,
            PodStage::Terminating => {
                if self.active().is_empty() {
                    self.stage = PodStage::Finished(self.phase_when_terminal());
                }
                return plan;
            }
            PodStage::Initializing => {
                for i in 0..self.containers.len() {
                    let c = &self.containers[i];
                    match c.role {
                        Role::App => break,
                        Role::Init if c.completed() => continue,
                        Role::Init => {
                            if let ContainerState::Terminated(_) = c.state {
                                // Failed and not restarted (restartPolicy Never).
                                self.stop_sidecars(&mut plan);
                                self.stage = PodStage::Finished(Phase::Failed);
                                return plan;
                            }
                            self.consider_start(i, now, pod_name, pod_ns, pod_uid, &mut plan);
                            return plan;
                        }
                        Role::Sidecar => {
                            let ready_to_go = matches!(c.state, ContainerState::Running { .. })
                                && c.started != Some(false);
                            if ready_to_go {
                                continue;
                            }
                            self.consider_start(i, now, pod_name, pod_ns, pod_uid, &mut plan);
                            return plan;
                        }
                    }
                }
                self.stage = PodStage::Running;
                self.init_done = true;
                for c in &mut self.containers {
                    if let ContainerState::Waiting { reason, .. } = &mut c.state
                        && c.role == Role::App
                        && reason == "PodInitializing"
                    {
                        *reason = "ContainerCreating".into();
                    }
                }
            }
            PodStage::Running => {}
        }
        // Running: app containers and sidecars.
        for i in 0..self.containers.len() {
            if self.containers[i].role != Role::Init {
                self.consider_start(i, now, pod_name, pod_ns, pod_uid, &mut plan);
            }
        }
        let apps_done = self
            .containers
            .iter()
            .filter(|c| c.role == Role::App)
            .all(|c| matches!(c.state, ContainerState::Terminated(_)));
        if apps_done {
            plan.start.clear();
            self.stop_sidecars(&mut plan);
            if self.active().is_empty() {
                self.stage = PodStage::Finished(self.phase_when_terminal());
            }
        }
        plan
    }

    /// Plans sidecars to stop once nothing else needs them.
    fn stop_sidecars(&mut self, plan: &mut Plan) {
        for (i, c) in self.containers.iter_mut().enumerate() {
            if c.role == Role::Sidecar {
                if c.is_active() {
                    plan.stop.push(i);
                } else if let ContainerState::Waiting { .. } = c.state {
                    // Not running: it will not be started again.
                    let t = c.last_termination.clone().unwrap_or(Termination {
                        exit_code: 0,
                        reason: "Completed".into(),
                        message: None,
                        started_at: None,
                        finished_at: Timestamp::now(),
                    });
                    c.state = ContainerState::Terminated(t);
                }
            }
        }
        if !plan.stop.is_empty() {
            self.stage = PodStage::Terminating;
        }
    }

    /// Starts container `i` now if it waits and its retry time has come.
    fn consider_start(
        &mut self,
        i: usize,
        now: Instant,
        pod_name: &str,
        pod_ns: &str,
        pod_uid: &str,
        plan: &mut Plan,
    ) {
        let c = &mut self.containers[i];
        let ContainerState::Waiting {
            reason, retry_at, ..
        } = &c.state
        else {
            return;
        };
        let reason = reason.clone();
        let retry_at = *retry_at;
        // Back-off of a crashed container.
        if reason == "ContainerCreating"
            && c.last_termination.is_some()
            && let Some(finished) = c.finished_instant
        {
            let wait = c.backoff.remaining(finished, now);
            if !wait.is_zero() {
                let until = now + wait;
                let delay = c.backoff.current_delay();
                c.state = ContainerState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        go_duration(delay),
                        c.name,
                        pod_name,
                        pod_ns,
                        pod_uid
                    )),
                    retry_at: Some(until),
                };
                plan.backing_off.push((i, delay));
                wake(plan, until);
                return;
            }
        }
        match retry_at {
            Some(at) if at > now => wake(plan, at),
            _ => plan.start.push(i),
        }
    }

    /// The phase now, computed like the kubelet's `getPhase`.
    pub(crate) fn phase(&self) -> Phase {
        match self.stage {
            PodStage::Finished(phase) => phase,
            PodStage::Initializing => Phase::Pending,
            PodStage::Terminating => self.app_phase(false),
            PodStage::Running => self.app_phase(false),
        }
    }

    /// The final phase once nothing runs: Succeeded when every app container succeeded.
    fn phase_when_terminal(&self) -> Phase {
        let failed_init = self
            .containers
            .iter()
            .any(|c| c.role == Role::Init && !c.completed());
        if failed_init {
            return Phase::Failed;
        }
        self.app_phase(true)
    }

    fn app_phase(&self, terminal: bool) -> Phase {
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in self.containers.iter().filter(|c| c.role == Role::App) {
            match &c.state {
                ContainerState::Running { .. } => running += 1,
                ContainerState::Terminated(t) => {
                    stopped += 1;
                    if t.succeeded() {
                        succeeded += 1;
                    }
                }
                ContainerState::Waiting { .. } | ContainerState::Creating => {
                    match &c.last_termination {
                        Some(t) if terminal => {
                            stopped += 1;
                            if t.succeeded() {
                                succeeded += 1;
                            }
                        }
                        Some(_) => stopped += 1,
                        None if terminal => stopped += 1,
                        None => waiting += 1,
                    }
                }
            }
        }
        if terminal {
            return if stopped == succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        if waiting > 0 {
            return Phase::Pending;
        }
        if running > 0 {
            return Phase::Running;
        }
        if stopped > 0 {
            return match self.restart_policy {
                RestartPolicy::Always => Phase::Running,
                _ if stopped == succeeded => Phase::Succeeded,
                RestartPolicy::Never => Phase::Failed,
                RestartPolicy::OnFailure => Phase::Running,
            };
        }
        Phase::Pending
    }

    fn record(&mut self, i: usize) -> Result<&mut ContainerRecord, Illegal> {
        self.containers.get_mut(i).ok_or(Illegal {
            container: format!("#{i}"),
            transition: "find",
            state: "absent",
        })
    }
}

fn illegal(c: &ContainerRecord, transition: &'static str) -> Illegal {
    Illegal {
        container: c.name.clone(),
        transition,
        state: match c.state {
            ContainerState::Waiting { .. } => "waiting",
            ContainerState::Creating => "creating",
            ContainerState::Running { .. } => "running",
            ContainerState::Terminated(_) => "terminated",
        },
    }
}

fn wake(plan: &mut Plan, at: Instant) {
    plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
}

/// The delay before retrying a start that failed for the `failures`-th time in a row.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    RETRY_INITIAL.saturating_mul(factor).min(RETRY_MAX)
}

mod adopt;
#[cfg(test)]
mod tests;
