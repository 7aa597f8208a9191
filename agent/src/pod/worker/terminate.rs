//! Stopping a pod's instances: `Killing`, graceful deletion within the grace period,
//! `activeDeadlineSeconds`, confirming the deletion, and cleaning up after the pod.

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use wasmkube_client::events::EventType;
use wasmkube_client::status::{is_conflict, is_not_found};

use super::{DEFAULT_GRACE, Done, FINAL_STATUS_WAIT, Worker};
use crate::pod::PodMessage;
use crate::pod::hooks;
use crate::pod::lifecycle::PodStage;

impl Worker {
    /// Asks instance `index` to stop, with a `Killing` event.
    pub(super) fn stop(&mut self, index: usize, grace: Duration, why: &str) {
        let Some(instance) = self.instances.get_mut(&index) else {
            return;
        };
        if instance.stop_requested {
            return;
        }
        instance.stop_requested = true;
        if let Some(p) = instance.probes.take() {
            p.stop();
        }
        instance.stopper.stop(grace);
        let name = self.lc.containers[index].name.clone();
        let message = if why == "Stopping container" {
            format!("Stopping container {name}")
        } else {
            why.to_string()
        };
        self.event(Some(index), EventType::Normal, "Killing", message);
    }

    /// The grace period of the pod: `deletionGracePeriodSeconds` once deleted, else
    /// `terminationGracePeriodSeconds` (default 30 s).
    pub(super) fn grace_period(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE)
            .max(0);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    pub(super) fn remaining_grace(&self, now: Instant) -> Duration {
        self.grace_deadline
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
    }

    /// Deletion was requested: stop everything within the grace period.
    pub(super) fn begin_termination(&mut self, now: Instant) {
        let grace = self.grace_period();
        let deadline = now + grace;
        if self.terminating {
            // A second delete may shorten the grace period.
            if self.grace_deadline.is_some_and(|d| deadline < d) {
                self.grace_deadline = Some(deadline);
            }
            return;
        }
        self.terminating = true;
        self.grace_deadline = Some(deadline);
        tracing::info!(grace_seconds = grace.as_secs(), "pod deletion requested");
        let ready: Vec<bool> = self.lc.containers.iter().map(|c| c.ready).collect();
        for i in self.lc.terminate() {
            if self.start_pre_stop(i) {
                // Still serving while its hook runs: readiness stays what its probe says.
                self.lc.set_ready(i, ready[i]);
            } else {
                self.stop(i, grace, "Stopping container");
            }
        }
    }

    /// Starts the `preStop` hook of running instance `index`, if its container has one.
    fn start_pre_stop(&mut self, index: usize) -> bool {
        let Some(pod_ip) = self.pod_ip else {
            return false;
        };
        let Some((container, _)) = self.container(index) else {
            return false;
        };
        let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.clone())
        else {
            return false;
        };
        let ports = container.ports.clone().unwrap_or_default();
        let Some(instance) = self.instances.get_mut(&index) else {
            return false;
        };
        if instance.stop_requested || instance.pre_stop_running {
            return false;
        }
        instance.pre_stop_running = true;
        let generation = instance.generation;
        tracing::info!(container = %self.lc.containers[index].name, "running the preStop hook");
        self.pending.push(
            async move {
                let result = hooks::run_pre_stop(&handler, pod_ip, &ports).await;
                Done::PreStopped {
                    index,
                    generation,
                    result,
                }
            }
            .boxed(),
        );
        true
    }

    /// The `preStop` hook of instance `index` ended: stop it with the grace that is left.
    pub(super) fn on_pre_stopped(
        &mut self,
        index: usize,
        generation: u64,
        result: Result<(), String>,
    ) {
        let Some(instance) = self.instances.get_mut(&index) else {
            return;
        };
        if instance.generation != generation {
            return;
        }
        instance.pre_stop_running = false;
        if let Err(message) = result {
            let name = self.lc.containers[index].name.clone();
            self.event(
                Some(index),
                EventType::Warning,
                "FailedPreStopHook",
                format!("PreStopHook failed for container {name}: {message}"),
            );
        }
        let grace = self.remaining_grace(Instant::now());
        self.stop(index, grace, "Stopping container");
    }

    /// Cuts whatever still runs once the grace period is over.
    pub(super) fn enforce_grace_deadline(&mut self, now: Instant) {
        let Some(deadline) = self.grace_deadline else {
            return;
        };
        if deadline > now {
            self.wake(deadline);
            return;
        }
        for instance in self.instances.values() {
            instance.stopper.stop(Duration::ZERO);
        }
    }

    /// `activeDeadlineSeconds`: a pod active longer than that is stopped and fails.
    pub(super) fn check_active_deadline(&mut self, now: Instant) {
        if self.terminating || self.deadline_exceeded {
            return;
        }
        if matches!(self.lc.stage, PodStage::Finished(_)) {
            return;
        }
        let Some(limit) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        else {
            return;
        };
        let end = self
            .start_time
            .checked_add(jiff::SignedDuration::from_secs(limit))
            .unwrap_or(Timestamp::MAX);
        let left = end.duration_since(Timestamp::now());
        if left.is_positive() {
            self.wake(now + left.unsigned_abs());
            return;
        }
        self.deadline_exceeded = true;
        self.event(
            None,
            EventType::Normal,
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline".into(),
        );
        let grace = self.grace_period();
        self.grace_deadline = Some(now + grace);
        for i in self.lc.terminate() {
            self.stop(i, grace, "Stopping container");
        }
    }

    /// Everything stopped after a deletion: write the final status, confirm the deletion and
    /// clean up.
    pub(super) async fn confirm_deletion(mut self) {
        self.writer.flush(FINAL_STATUS_WAIT).await;
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let mut retry = Duration::from_millis(200);
        loop {
            match pods.delete(&self.name, &params).await {
                Ok(_) => break,
                Err(e) if is_not_found(&e) || is_conflict(&e) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "confirming the pod deletion failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        changed = self.rx.changed() => {
                            if changed.is_err() || matches!(*self.rx.borrow(), PodMessage::Gone) {
                                break;
                            }
                        }
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!("pod deleted");
        self.cleanup().await;
    }

    /// Stops every instance now and waits (briefly) for them to end.
    pub(super) async fn stop_all(&mut self) {
        for instance in self.instances.values() {
            instance.stopper.stop(Duration::ZERO);
        }
        for instance in self.instances.values_mut() {
            if let Some(p) = instance.probes.take() {
                p.stop();
            }
        }
        // Let the instances end (a stopped guest ends at its next epoch tick) before the pod's
        // files go; starts in flight are stopped as they finish.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.instances.is_empty() || !self.starting.is_empty() {
            let next = tokio::time::timeout_at(deadline, self.pending.next()).await;
            match next {
                Ok(Some(Done::Exited { index, .. })) => {
                    self.instances.remove(&index);
                }
                Ok(Some(Done::Started { index, result, .. })) => {
                    self.starting.remove(&index);
                    if let Ok(started) = result {
                        started.running.stopper.stop(Duration::ZERO);
                        let _ = tokio::time::timeout_at(deadline, started.running.outcome).await;
                    }
                }
                // A preStop hook that ended: the instance was stopped above anyway.
                Ok(Some(Done::PreStopped { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    pub(super) async fn cleanup(self) {
        if let (Some(sandbox), Some(client)) = (&self.cri_sandbox, &self.ctx.cri) {
            super::cri::remove_sandbox(client, &sandbox.id).await;
        }
        self.ctx.network.release(&self.uid).await;
        self.ctx.tokens.forget_pod(&self.uid);
        self.ctx
            .logs
            .remove_pod(&self.namespace, &self.name, &self.uid);
        let dir = self.ctx.pods_dir.join(&self.uid);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, dir = %dir.display(), "removing the pod directory failed");
        }
    }
}
