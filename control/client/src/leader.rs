//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it, so that of several replicas of a component exactly one acts at a time.
//!
//! - A candidate reads the Lease. It takes the Lease when there is none, when it has no
//!   holder (released), or when the holder has not renewed it for `leaseDurationSeconds`
//!   — measured on the candidate's own clock from when it *observed* the last change, so
//!   clock skew between machines does not matter.
//! - Every write carries the `resourceVersion` that was read: of two candidates racing for
//!   an expired Lease, the apiserver lets exactly one win (the other gets 409 Conflict).
//! - The leader renews every `retry_period`. If it cannot renew within `renew_deadline`
//!   (shorter than the lease duration) it stops leading *before* anyone else may take over.
//! - On shutdown the leader releases the Lease (empty holder) so a successor starts at once.
//!
//! [`LeaderElector::subscribe`] hands out a `watch` channel that says whether this process
//! leads right now; components gate their work on it. [`LeaderElector::spawn_or_always`]
//! is what a component's `run` calls: it campaigns when leader election is configured and
//! leads at once when it is not.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::status::{is_already_exists, is_conflict, is_not_found};

/// Where the Lease is and how it is kept.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease (`kube-system`).
    pub namespace: String,
    /// Name of the Lease (`wasmkube-scheduler`, `wasmkube-controller-manager`).
    pub name: String,
    /// This candidate's `holderIdentity`; unique per process.
    pub identity: String,
    /// How long a Lease stays valid without renewal (`leaseDurationSeconds`, 15 s).
    pub lease_duration: Duration,
    /// The leader steps down if it cannot renew for this long (10 s); less than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often to renew or retry acquiring (2 s).
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Kubernetes' default timings (15 s lease, 10 s renew deadline, 2 s retry).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks the timings and names.
    pub fn validate(&self) -> Result<(), LeaderElectionError> {
        let fail = |m: &str| Err(LeaderElectionError::Config(m.to_string()));
        if self.identity.is_empty() {
            return fail("identity must not be empty");
        }
        if self.namespace.is_empty() || self.name.is_empty() {
            return fail("the lease namespace and name must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return fail("lease duration must be at least one second");
        }
        if self.renew_deadline >= self.lease_duration {
            return fail("renew deadline must be shorter than the lease duration");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return fail("retry period must be positive and shorter than the renew deadline");
        }
        Ok(())
    }
}

/// Leader election failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    /// The configuration cannot work.
    #[error("invalid leader election configuration: {0}")]
    Config(String),
    /// The apiserver refused or could not be reached.
    #[error("lease request failed: {0}")]
    Api(#[source] kube::Error),
    /// The request did not finish in time.
    #[error("lease request timed out")]
    Timeout,
}

/// What this candidate last saw of the Lease.
#[derive(Clone, Debug)]
struct Observed {
    holder: String,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    duration: Duration,
    /// Our clock when the record last changed.
    at: Instant,
}

/// Runs the election for one candidate. See the module documentation.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    observed: Option<Observed>,
    leading: watch::Sender<bool>,
}

impl LeaderElector {
    /// A candidate that does not lead yet.
    pub fn new(
        client: kube::Client,
        config: LeaderElectionConfig,
    ) -> Result<Self, LeaderElectionError> {
        config.validate()?;
        let (leading, _) = watch::channel(false);
        Ok(LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            leading,
        })
    }

    /// Starts leading: with `config`, campaigns for the Lease on a spawned task until `stop`
    /// turns `true` (then releases it); without, leads at once (a component run with
    /// `--no-leader-elect`). Returns whether this process leads now and every change of it,
    /// and the task to await after sending `stop` (it keeps the channel open until then, so
    /// the receiver never reports a closed channel as lost leadership).
    pub fn spawn_or_always(
        client: kube::Client,
        config: Option<LeaderElectionConfig>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(watch::Receiver<bool>, JoinHandle<()>), LeaderElectionError> {
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        Ok(match config {
            Some(config) => {
                let elector = LeaderElector::new(client, config)?;
                let leading = elector.subscribe();
                (leading, tokio::spawn(elector.run(stopped)))
            }
            None => {
                let (always, leading) = watch::channel(true);
                let task = tokio::spawn(async move {
                    stopped.await;
                    drop(always);
                });
                (leading, task)
            }
        })
    }

    /// Whether this candidate leads now, and every change of it.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Whether this candidate leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// The identity of the current holder, as last observed.
    pub fn observed_holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .map(|o| o.holder.as_str())
            .filter(|h| !h.is_empty())
    }

    /// One round: creates, takes over or renews the Lease if this candidate may. `true` if
    /// this candidate holds the Lease afterwards. Does not change [`LeaderElector::subscribe`].
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderElectionError> {
        let now = MicroTime(Timestamp::now());
        let Some(current) = self.api.get_opt(&self.config.name).await.map_err(api)? else {
            let lease = self.lease(None, now.clone(), now, 0);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_already_exists(&e) || is_conflict(&e) => Ok(false),
                Err(e) => Err(api(e)),
            };
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.config.identity;
        if !holder.is_empty() && !ours && !self.observed_expired() {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let (acquire_time, transitions) = if ours {
            (
                spec.acquire_time.clone().unwrap_or(now.clone()),
                transitions,
            )
        } else {
            (now.clone(), transitions.saturating_add(1))
        };
        let lease = self.lease(
            current.metadata.resource_version.clone(),
            acquire_time,
            now,
            transitions,
        );
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(api(e)),
        }
    }

    /// Gives the Lease up if this candidate holds it, so another can take it at once.
    pub async fn release(&mut self) -> Result<(), LeaderElectionError> {
        let _ = self.leading.send_replace(false);
        let Some(current) = self.api.get_opt(&self.config.name).await.map_err(api)? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        let mut lease = current.clone();
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..Default::default()
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(()),
            Err(e) => Err(api(e)),
        }
    }

    /// Campaigns and renews until `shutdown`, publishing leadership on
    /// [`LeaderElector::subscribe`]; releases the Lease on shutdown.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_renewal: Option<Instant> = None;
        loop {
            let started = Instant::now();
            // While leading, an attempt may only take until the renew deadline runs out.
            let budget = match last_renewal {
                Some(at) if self.is_leader() => {
                    (at + self.config.renew_deadline).saturating_duration_since(started)
                }
                _ => self.config.renew_deadline,
            };
            let attempt = tokio::select! {
                () = &mut shutdown => break,
                r = tokio::time::timeout(budget, self.try_acquire_or_renew()) => {
                    r.unwrap_or(Err(LeaderElectionError::Timeout))
                }
            };
            match attempt {
                Ok(true) => {
                    last_renewal = Some(started);
                    if !self.is_leader() {
                        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                        let _ = self.leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if self.is_leader() {
                        tracing::warn!(lease = %self.config.name, holder = ?self.observed_holder(), "lost the lease to another candidate");
                        let _ = self.leading.send_replace(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "lease renewal failed");
                    let expired =
                        last_renewal.is_none_or(|at| at.elapsed() >= self.config.renew_deadline);
                    if self.is_leader() && expired {
                        tracing::warn!(lease = %self.config.name, "renew deadline passed; stepping down");
                        let _ = self.leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        if self.is_leader()
            && let Err(e) = self.release().await
        {
            tracing::warn!(lease = %self.config.name, error = %e, "could not release the lease");
        }
        let _ = self.leading.send_replace(false);
    }

    fn lease(
        &self,
        resource_version: Option<String>,
        acquire_time: MicroTime,
        renew_time: MicroTime,
        transitions: i32,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version,
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(acquire_time),
                renew_time: Some(renew_time),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// Remembers the record, restarting the expiry clock when it changed.
    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let resource_version = lease.metadata.resource_version.clone();
        let unchanged = self.observed.as_ref().is_some_and(|o| {
            o.holder == holder
                && o.renew_time == spec.renew_time
                && o.resource_version == resource_version
        });
        if unchanged {
            return;
        }
        self.observed = Some(Observed {
            holder,
            renew_time: spec.renew_time,
            resource_version,
            duration,
            at: Instant::now(),
        });
    }

    fn observed_expired(&self) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|o| o.at.elapsed() >= o.duration)
    }
}

fn api(e: kube::Error) -> LeaderElectionError {
    LeaderElectionError::Api(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timings_are_kubernetes_and_valid() {
        let c = LeaderElectionConfig::new("kube-system", "wasmkube-scheduler", "me");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_renew_deadline_not_shorter_than_the_lease_is_rejected() {
        let mut c = LeaderElectionConfig::new("kube-system", "l", "me");
        c.renew_deadline = c.lease_duration;
        assert!(matches!(c.validate(), Err(LeaderElectionError::Config(_))));
    }

    #[tokio::test]
    async fn without_leader_election_a_component_leads_until_stopped() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a valid URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let (stop_tx, stop_rx) = watch::channel(false);
        let (mut leading, task) =
            LeaderElector::spawn_or_always(client, None, stop_rx).expect("no config to reject");
        assert!(*leading.borrow());
        tokio::task::yield_now().await;
        assert!(
            leading.has_changed().is_ok(),
            "the channel stays open while running"
        );
        stop_tx.send(true).expect("the task listens");
        task.await.expect("the task ends");
        assert!(
            leading.wait_for(|l| !*l).await.is_err(),
            "closed after stop"
        );
    }

    #[tokio::test]
    async fn an_invalid_config_is_rejected_before_campaigning() {
        let c = LeaderElectionConfig::new("kube-system", "l", "");
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a valid URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let (_stop_tx, stop_rx) = watch::channel(false);
        assert!(matches!(
            LeaderElector::spawn_or_always(client, Some(c), stop_rx),
            Err(LeaderElectionError::Config(_))
        ));
    }

    #[test]
    fn an_empty_identity_is_rejected() {
        let c = LeaderElectionConfig::new("kube-system", "l", "");
        assert!(matches!(c.validate(), Err(LeaderElectionError::Config(_))));
    }
}
