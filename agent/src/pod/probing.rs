//! Probes of one container instance, as the pod worker sees them: a [`ProbeRunner`] per
//! instance reports results on a channel; the worker turns them into readiness, startup and
//! liveness decisions (`Unhealthy` events, restarts).
//!
//! The probing itself (httpGet, tcpSocket, the timing fields) is [`crate::probes`]'s.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Container;
use tokio::sync::mpsc;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `livenessProbe`: failing restarts the container.
    Liveness,
    /// `readinessProbe`: gates Ready.
    Readiness,
    /// `startupProbe`: holds the other probes until it passes; failing restarts.
    Startup,
}

impl ProbeKind {
    /// `Liveness`, `Readiness`, `Startup` (event messages).
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// A probe result of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The container's index in the lifecycle.
    pub index: usize,
    /// The instance's generation.
    pub generation: u64,
    /// Which probe.
    pub kind: ProbeKind,
    /// The probe's state after its thresholds (success or failure).
    pub success: bool,
    /// Whether the failure threshold was just reached (a liveness/startup failure acts).
    pub failed_threshold: bool,
    /// The failed attempt's message, for the `Unhealthy` event.
    pub message: Option<String>,
}

/// The probes of one instance; dropping or [`ProbeRunner::stop`] ends them.
#[derive(Debug)]
pub struct ProbeRunner {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ProbeRunner {
    /// Starts `container`'s probes against `pod_ip`; `None` when it has none.
    pub fn start(
        container: &Container,
        pod_ip: Option<IpAddr>,
        index: usize,
        generation: u64,
        tx: mpsc::Sender<ProbeReport>,
    ) -> Option<ProbeRunner> {
        let _ = (pod_ip, &tx);
        let probes = [
            (ProbeKind::Startup, container.startup_probe.as_ref()),
            (ProbeKind::Readiness, container.readiness_probe.as_ref()),
            (ProbeKind::Liveness, container.liveness_probe.as_ref()),
        ];
        let mut tasks = Vec::new();
        for (kind, probe) in probes {
            if probe.is_none() || kind == ProbeKind::Liveness {
                continue;
            }
            // Until crate::probes is wired in: report success at once.
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = tx
                    .send(ProbeReport {
                        index,
                        generation,
                        kind,
                        success: true,
                        failed_threshold: false,
                        message: None,
                    })
                    .await;
            }));
        }
        (!tasks.is_empty()).then_some(ProbeRunner { tasks })
    }

    /// Stops the probes.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ProbeRunner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
