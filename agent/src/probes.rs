//! Liveness, readiness and startup probes of containers, with Kubernetes' timing.
//!
//! [`probe_once`] runs one attempt (`httpGet` or `tcpSocket` against the pod IP; `exec` runs
//! the command through the CRI runtime's `ExecSync` for container pods ([`ExecTarget`]) and
//! fails with a clear message for wasm containers, which have nothing to exec into; `grpc`
//! fails with a clear message). A
//! [`ProbeWorker`] repeats one probe: first at `initialDelaySeconds` after the container
//! started, then every `periodSeconds`, each attempt bounded by `timeoutSeconds`, and turns
//! results into a state with `successThreshold` / `failureThreshold` consecutive results
//! (Kubernetes' defaults: 0 / 10 / 1 / 1 / 3). A [`ProbeSet`] runs a container's three probes
//! the way the kubelet does: liveness and readiness wait until the startup probe has passed.
//!
//! Workers report on a tokio channel: every failed attempt (the kubelet records an
//! `Unhealthy` event for each) and every change of the thresholded state. A probe set belongs
//! to one container instance: when liveness or startup fails past its threshold the worker
//! stops (the instance is restarted and gets a new set); when startup passes, its worker
//! stops (it is not probed again, as in Kubernetes).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Probe};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

mod check;
#[cfg(test)]
mod test_server;

pub(crate) use check::{ExecTarget, ProbeResult, http_get, probe_once};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ProbeKind {
    /// `livenessProbe`: failing past the threshold restarts the container.
    Liveness,
    /// `readinessProbe`: its state is the container's `ready`.
    Readiness,
    /// `startupProbe`: holds the other probes until it passes; failing restarts.
    Startup,
}

impl ProbeKind {
    /// `Liveness`, `Readiness`, `Startup`: the start of the kubelet's `Unhealthy` messages
    /// (`Readiness probe failed: ...`).
    pub(crate) fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The state before any attempt: live, not ready, not started.
    pub(crate) fn initial_state(self) -> bool {
        matches!(self, ProbeKind::Liveness)
    }
}

/// A probe's timing, from its spec with Kubernetes' defaults and minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Time after the container started before the first attempt (`initialDelaySeconds`, 0).
    pub(crate) initial_delay: Duration,
    /// Time between attempts (`periodSeconds`, default 10, at least 1).
    pub(crate) period: Duration,
    /// Bound of one attempt (`timeoutSeconds`, default 1, at least 1).
    pub(crate) timeout: Duration,
    /// Consecutive successes to count as passing (`successThreshold`, default 1; always 1 for
    /// liveness and startup).
    pub(crate) success_threshold: u32,
    /// Consecutive failures to count as failing (`failureThreshold`, default 3).
    pub(crate) failure_threshold: u32,
}

impl Timing {
    /// The timing of `probe` used as a `kind` probe.
    pub(crate) fn of(probe: &Probe, kind: ProbeKind) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: match kind {
                ProbeKind::Readiness => count(probe.success_threshold, 1),
                ProbeKind::Liveness | ProbeKind::Startup => 1,
            },
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// What a worker reports after an attempt that failed or changed the probe's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeUpdate {
    /// Which probe.
    pub(crate) kind: ProbeKind,
    /// The state after the thresholds: live / ready / started.
    pub(crate) success: bool,
    /// Whether this attempt changed the state (a threshold was reached).
    pub(crate) changed: bool,
    /// Why the attempt failed, for the `Unhealthy` event; `None` on success.
    pub(crate) message: Option<String>,
}

/// Runs one probe of one container instance.
#[derive(Debug, Clone)]
pub(crate) struct ProbeWorker {
    kind: ProbeKind,
    probe: Probe,
    ports: Vec<ContainerPort>,
    pod_ip: IpAddr,
    timing: Timing,
    exec: Option<ExecTarget>,
}

impl ProbeWorker {
    /// A worker for `probe` of a container with `ports`, probing `pod_ip`.
    pub(crate) fn new(
        kind: ProbeKind,
        probe: &Probe,
        ports: &[ContainerPort],
        pod_ip: IpAddr,
    ) -> Self {
        ProbeWorker {
            kind,
            probe: probe.clone(),
            ports: ports.to_vec(),
            pod_ip,
            timing: Timing::of(probe, kind),
            exec: None,
        }
    }

    /// Where `exec` probes run (a container of the CRI runtime; `None` for wasm containers).
    pub(crate) fn with_exec(mut self, exec: Option<ExecTarget>) -> Self {
        self.exec = exec;
        self
    }

    #[cfg(test)]
    /// Replaces the timing (tests use milliseconds).
    pub(crate) fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Probes until the state settles for good (liveness/startup failed, startup passed), the
    /// receiver is gone, or `gate` (the startup probe's "started") is dropped unset. Attempts
    /// begin at `started_at + initialDelay` and wait for `gate` to be true.
    pub(crate) async fn run<T>(
        self,
        started_at: Instant,
        mut gate: Option<watch::Receiver<bool>>,
        tx: mpsc::Sender<T>,
        wrap: impl Fn(ProbeUpdate) -> T,
    ) {
        let kind = self.kind;
        let timing = self.timing;
        tokio::time::sleep_until(started_at + timing.initial_delay).await;
        let mut ticker = tokio::time::interval(timing.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut state = kind.initial_state();
        let mut streak: Option<(bool, u32)> = None;
        loop {
            ticker.tick().await;
            if let Some(gate) = &mut gate
                && gate.wait_for(|started| *started).await.is_err()
            {
                return;
            }
            let result = match (&self.probe.exec, &self.exec) {
                (Some(action), Some(target)) => target.run(action, timing.timeout).await,
                _ => probe_once(&self.probe, self.pod_ip, &self.ports, timing.timeout).await,
            };
            let ok = result == ProbeResult::Success;
            let run = match streak {
                Some((last, n)) if last == ok => n.saturating_add(1),
                _ => 1,
            };
            streak = Some((ok, run));
            let threshold = if ok {
                timing.success_threshold
            } else {
                timing.failure_threshold
            };
            let changed = run >= threshold && state != ok;
            if changed {
                state = ok;
            }
            if !ok || changed {
                let message = match result {
                    ProbeResult::Failure(m) => Some(m),
                    ProbeResult::Success => None,
                };
                let update = ProbeUpdate {
                    kind,
                    success: state,
                    changed,
                    message,
                };
                if tx.send(wrap(update)).await.is_err() {
                    return;
                }
            }
            let settled = changed
                && match kind {
                    ProbeKind::Liveness => !ok,
                    ProbeKind::Startup => true,
                    ProbeKind::Readiness => false,
                };
            if settled {
                return;
            }
        }
    }
}

/// The probes of one container instance; dropping it (or [`ProbeSet::stop`]) stops them.
#[derive(Debug, Default)]
pub(crate) struct ProbeSet {
    tasks: Vec<JoinHandle<()>>,
}

impl ProbeSet {
    /// Starts `container`'s startup, readiness and liveness probes against `pod_ip` for an
    /// instance that started at `started_at`. Updates go through `wrap` (to tag them with the
    /// instance) into `tx`. Liveness and readiness begin once startup has passed.
    pub(crate) fn start<T: Send + 'static>(
        container: &Container,
        pod_ip: IpAddr,
        exec: Option<ExecTarget>,
        started_at: Instant,
        tx: mpsc::Sender<T>,
        wrap: impl Fn(ProbeUpdate) -> T + Send + Sync + 'static,
    ) -> ProbeSet {
        let ports = container.ports.clone().unwrap_or_default();
        let wrap = Arc::new(wrap);
        let (started_tx, started_rx) = watch::channel(container.startup_probe.is_none());
        let mut tasks = Vec::new();
        if let Some(probe) = &container.startup_probe {
            let worker =
                ProbeWorker::new(ProbeKind::Startup, probe, &ports, pod_ip).with_exec(exec.clone());
            let (tx, wrap) = (tx.clone(), wrap.clone());
            tasks.push(tokio::spawn(worker.run(started_at, None, tx, move |u| {
                if u.changed && u.success {
                    started_tx.send_replace(true);
                }
                wrap(u)
            })));
        }
        for (kind, probe) in [
            (ProbeKind::Readiness, &container.readiness_probe),
            (ProbeKind::Liveness, &container.liveness_probe),
        ] {
            let Some(probe) = probe else { continue };
            let worker = ProbeWorker::new(kind, probe, &ports, pod_ip).with_exec(exec.clone());
            let (tx, wrap) = (tx.clone(), wrap.clone());
            let gate = Some(started_rx.clone());
            tasks.push(tokio::spawn(
                worker.run(started_at, gate, tx, move |u| wrap(u)),
            ));
        }
        ProbeSet { tasks }
    }

    /// Whether the container has no probes.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops the probes.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::Full;
    use k8s_openapi::api::core::v1::HTTPGetAction;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::probes::test_server::{self, TestServer};

    /// A server whose status per path the test sets, counting requests per path.
    #[derive(Clone, Default)]
    struct Pod {
        status: Arc<Mutex<HashMap<String, u16>>>,
        hits: Arc<Mutex<HashMap<String, usize>>>,
    }

    impl Pod {
        fn set(&self, path: &str, status: u16) {
            self.status
                .lock()
                .expect("lock")
                .insert(path.into(), status);
        }

        fn hits(&self, path: &str) -> usize {
            self.hits
                .lock()
                .expect("lock")
                .get(path)
                .copied()
                .unwrap_or(0)
        }

        async fn serve(&self, ip: [u8; 4]) -> TestServer {
            let pod = self.clone();
            let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let path = req.uri().path().to_string();
                *pod.hits
                    .lock()
                    .expect("lock")
                    .entry(path.clone())
                    .or_default() += 1;
                let status = pod
                    .status
                    .lock()
                    .expect("lock")
                    .get(&path)
                    .copied()
                    .unwrap_or(404);
                let mut response = http::Response::new(Full::new(Bytes::new()));
                *response.status_mut() =
                    http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::NOT_FOUND);
                std::future::ready(Ok::<_, Infallible>(response))
            });
            test_server::serve(ip, service).await
        }
    }

    fn probe(path: &str, port: u16) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }
    }

    fn fast(success_threshold: u32, failure_threshold: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            success_threshold,
            failure_threshold,
        }
    }

    /// The next update that changed the state, collecting failure messages on the way.
    async fn next_change(rx: &mut mpsc::Receiver<ProbeUpdate>) -> (ProbeUpdate, usize) {
        let mut failures = 0;
        loop {
            let update = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("an update within the deadline")
                .expect("worker alive");
            if update.changed {
                return (update, failures);
            }
            assert!(update.message.is_some(), "unchanged updates are failures");
            failures += 1;
        }
    }

    #[test]
    fn timing_defaults_follow_kubernetes() {
        let t = Timing::of(&Probe::default(), ProbeKind::Readiness);
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        let liveness = Probe {
            success_threshold: Some(5),
            period_seconds: Some(0),
            ..Probe::default()
        };
        let t = Timing::of(&liveness, ProbeKind::Liveness);
        assert_eq!(t.success_threshold, 1, "liveness needs one success");
        assert_eq!(
            t.period,
            Duration::from_secs(1),
            "periodSeconds is at least 1"
        );
    }

    #[tokio::test]
    async fn readiness_follows_its_thresholds_both_ways() {
        let pod = Pod::default();
        pod.set("/ready", 200);
        let server = pod.serve([127, 6, 0, 1]).await;
        let (tx, mut rx) = mpsc::channel(16);
        let worker = ProbeWorker::new(
            ProbeKind::Readiness,
            &probe("/ready", server.local_addr().port()),
            &[],
            server.local_addr().ip(),
        )
        .with_timing(fast(2, 3));
        let task = tokio::spawn(worker.run(Instant::now(), None, tx, |u| u));

        let (ready, failures) = next_change(&mut rx).await;
        assert_eq!(
            (ready.kind, ready.success, failures),
            (ProbeKind::Readiness, true, 0)
        );
        assert!(pod.hits("/ready") >= 2, "two successes needed");

        pod.set("/ready", 503);
        let (not_ready, failures) = next_change(&mut rx).await;
        assert!(!not_ready.success);
        assert_eq!(failures, 2, "the third consecutive failure flips it");
        assert_eq!(
            not_ready.message.as_deref(),
            Some("HTTP probe failed with statuscode: 503")
        );
        pod.set("/ready", 200);
        let (ready, _) = next_change(&mut rx).await;
        assert!(ready.success, "readiness recovers");
        task.abort();
    }

    #[tokio::test]
    async fn liveness_reports_one_failure_past_the_threshold_and_stops() {
        let pod = Pod::default();
        pod.set("/live", 500);
        let server = pod.serve([127, 6, 0, 2]).await;
        let (tx, mut rx) = mpsc::channel(16);
        let worker = ProbeWorker::new(
            ProbeKind::Liveness,
            &probe("/live", server.local_addr().port()),
            &[],
            server.local_addr().ip(),
        )
        .with_timing(fast(1, 2));
        let task = tokio::spawn(worker.run(Instant::now(), None, tx, |u| u));
        let (dead, failures) = next_change(&mut rx).await;
        assert_eq!(
            (dead.kind, dead.success, failures),
            (ProbeKind::Liveness, false, 1)
        );
        task.await
            .expect("the worker ends after the liveness failure");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn liveness_and_readiness_wait_for_the_startup_probe() {
        let pod = Pod::default();
        pod.set("/ready", 200);
        pod.set("/started", 500);
        let server = pod.serve([127, 6, 0, 3]).await;
        let port = server.local_addr().port();
        let container = Container {
            name: "app".into(),
            startup_probe: Some(Probe {
                failure_threshold: Some(1000),
                period_seconds: Some(1),
                ..probe("/started", port)
            }),
            readiness_probe: Some(Probe {
                period_seconds: Some(1),
                ..probe("/ready", port)
            }),
            ..Container::default()
        };
        let (tx, mut rx) = mpsc::channel(64);
        let set = ProbeSet::start(
            &container,
            server.local_addr().ip(),
            None,
            Instant::now(),
            tx,
            |u| ("app", u),
        );
        // The startup probe fails (an update per attempt); readiness is not probed meanwhile.
        let (_, first) = rx.recv().await.expect("startup failure");
        assert_eq!((first.kind, first.changed), (ProbeKind::Startup, false));
        assert_eq!(pod.hits("/ready"), 0);
        pod.set("/started", 200);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let (name, u) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("within the deadline")
                .expect("open");
            assert_eq!(name, "app");
            if u.changed {
                seen.push((u.kind, u.success));
            }
        }
        assert_eq!(
            seen,
            vec![(ProbeKind::Startup, true), (ProbeKind::Readiness, true)]
        );
        set.stop();
    }
}
