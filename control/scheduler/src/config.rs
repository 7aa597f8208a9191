//! The scheduler's settings and errors.

use std::sync::Arc;
use std::time::Duration;

use wasmkube_client::identity::default_identity;
use wasmkube_client::{LeaderElectionConfig, LeaderElectionError};

use crate::metrics::Metrics;

/// The scheduler name pods get when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// The namespace of the scheduler's Lease.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
/// The name of the scheduler's Lease.
pub const DEFAULT_LEASE_NAME: &str = "wasmkube-scheduler";

/// Everything [`crate::run`] needs besides the client.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this are ours (`default-scheduler`); it is also
    /// the `source.component` of our Events.
    pub scheduler_name: String,
    /// This process's identity: the Lease holder and the Events' `reportingInstance`.
    pub identity: String,
    /// Leader election; `None` schedules unconditionally (only one scheduler may run then).
    /// Its `identity` should be [`SchedulerConfig::identity`].
    pub leader_election: Option<LeaderElectionConfig>,
    /// Evaluate this percentage of nodes per pod (at least 100 nodes); `None` is
    /// kube-scheduler's adaptive default (50% minus 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: Option<u32>,
    /// At most this many bindings in flight at once.
    pub max_concurrent_binds: usize,
    /// Backoff after a pod's first failed attempt; doubles per attempt.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often, even if nothing changed.
    pub unschedulable_retry: Duration,
    /// Counters of what the scheduler does.
    pub metrics: Arc<Metrics>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let identity = default_identity();
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            leader_election: Some(LeaderElectionConfig::new(
                DEFAULT_LEASE_NAMESPACE,
                DEFAULT_LEASE_NAME,
                identity.clone(),
            )),
            identity,
            percentage_of_nodes_to_score: None,
            max_concurrent_binds: 256,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_retry: Duration::from_secs(30),
            metrics: Arc::new(Metrics::default()),
        }
    }
}

impl SchedulerConfig {
    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        let fail = |m: &str| Err(SchedulerError::Config(m.to_string()));
        if self.scheduler_name.is_empty() {
            return fail("scheduler name must not be empty");
        }
        if self.identity.is_empty() {
            return fail("identity must not be empty");
        }
        if self.max_concurrent_binds == 0 {
            return fail("max_concurrent_binds must be at least 1");
        }
        if self.initial_backoff.is_zero() || self.initial_backoff > self.max_backoff {
            return fail("initial backoff must be positive and at most the maximum backoff");
        }
        if self.unschedulable_retry.is_zero() {
            return fail("unschedulable retry interval must be positive");
        }
        if let Some(le) = &self.leader_election {
            le.validate()?;
        }
        Ok(())
    }
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The configuration cannot work.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    /// Leader election cannot start.
    #[error(transparent)]
    LeaderElection(#[from] LeaderElectionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid_and_elects_with_its_own_identity() {
        let c = SchedulerConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.leader_election.as_ref().map(|l| l.identity.as_str()),
            Some(c.identity.as_str())
        );
        assert_eq!(c.scheduler_name, "default-scheduler");
    }

    #[test]
    fn zero_concurrent_binds_is_rejected() {
        let c = SchedulerConfig {
            max_concurrent_binds: 0,
            ..SchedulerConfig::default()
        };
        assert!(matches!(c.validate(), Err(SchedulerError::Config(_))));
    }
}
