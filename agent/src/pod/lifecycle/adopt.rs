//! Taking a pod over after an agent restart: the lifecycle rebuilt from the pod's last status.

use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, PodStatus};

use super::{ContainerState, Phase, PodLifecycle, PodStage, Termination};

impl PodLifecycle {
    /// Takes over a pod that a previous run of the agent already ran, from its last status.
    ///
    /// Instances cannot survive the agent's process: a container the status shows running
    /// ended with the agent (exit code 137, message saying so) and restarts as its restart
    /// policy says, counted as a restart; nothing runs twice. A pod already Succeeded or
    /// Failed stays so.
    pub(crate) fn adopt(&mut self, status: &PodStatus, now: Instant) {
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        let final_phase = match status.phase.as_deref() {
            Some("Succeeded") => Some(Phase::Succeeded),
            Some("Failed") => Some(Phase::Failed),
            _ => None,
        };
        let initialized = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Initialized" && c.status == "True");
        if initialized || final_phase.is_some() {
            self.init_done = true;
            if self.stage == PodStage::Initializing {
                self.stage = PodStage::Running;
            }
        }
        let agent_restart = |started_at: Option<Timestamp>| Termination {
            exit_code: 137,
            reason: "Error".into(),
            message: Some("the node agent restarted; the instance ended with it".into()),
            started_at,
            finished_at: Timestamp::now(),
        };
        for cs in statuses {
            let Some(i) = self.index_of(&cs.name) else {
                continue;
            };
            let c = &mut self.containers[i];
            c.restart_count = u32::try_from(cs.restart_count).unwrap_or(0);
            c.image_id = Some(cs.image_id.clone()).filter(|s| !s.is_empty());
            c.last_termination = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(termination_from_api);
            let state = cs.state.clone().unwrap_or_default();
            let ended = if let Some(t) = &state.terminated {
                Some(termination_from_api(t))
            } else if let Some(r) = &state.running {
                Some(agent_restart(r.started_at.as_ref().map(|t| t.0)))
            } else if state.waiting.is_some() && c.last_termination.is_some() {
                c.ever_started = true;
                c.finished_instant = Some(now);
                c.state = ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                    retry_at: Some(now),
                };
                None
            } else {
                None
            };
            let Some(ended) = ended else { continue };
            c.ever_started = true;
            if final_phase.is_some() {
                c.state = ContainerState::Terminated(ended);
                continue;
            }
            // Replay the exit through the ordinary transition so the policy decides.
            c.state = ContainerState::Running {
                started_at: ended.started_at.unwrap_or(ended.finished_at),
            };
            if let Err(e) = self.exited(i, ended, now) {
                tracing::debug!(error = %e, "adopting a container status");
            }
        }
        if let Some(phase) = final_phase {
            self.stage = PodStage::Finished(phase);
        }
    }
}

/// A `ContainerStateTerminated` read back from the API.
fn termination_from_api(t: &ContainerStateTerminated) -> Termination {
    Termination {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone(),
        started_at: t.started_at.as_ref().map(|s| s.0),
        finished_at: t.finished_at.as_ref().map_or_else(Timestamp::now, |f| f.0),
    }
}
