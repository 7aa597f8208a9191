//! The controller-manager's settings and errors.

use std::time::Duration;

use wasmkube_client::identity::default_identity;
use wasmkube_client::{LeaderElectionConfig, LeaderElectionError};

/// The namespace of the controller-manager's Lease.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
/// The name of the controller-manager's Lease.
pub const DEFAULT_LEASE_NAME: &str = "wasmkube-controller-manager";
/// The `source.component` of the controllers' Events, as kube-controller-manager's
/// controllers report (`replicaset-controller`, ...) use this prefix.
pub const COMPONENT: &str = "wasmkube-controller-manager";

/// The controllers [`crate::run`] can start, by the names kube-controller-manager's
/// `--controllers` flag uses.
pub const ALL_CONTROLLERS: &[&str] = &[
    "replicaset",
    "deployment",
    "job",
    "daemonset",
    "garbagecollector",
    "nodelifecycle",
    "resourcequota",
    "endpoint",
    "endpointslice",
    "tokencleaner",
    "serviceaccount",
    "root-ca-cert-publisher",
];

/// Everything [`crate::run`] needs besides the client.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// This process's identity: the Lease holder and the Events' `reportingInstance`.
    pub identity: String,
    /// Leader election; `None` runs the controllers unconditionally (only one
    /// controller-manager may run then).
    pub leader_election: Option<LeaderElectionConfig>,
    /// Which controllers run (names from [`ALL_CONTROLLERS`]).
    pub controllers: Vec<String>,
    /// Concurrent reconciles per controller (kube-controller-manager's
    /// `--concurrent-*-syncs`, default 5 there).
    pub concurrency: u16,
    /// A node whose Lease was not renewed for this long becomes `Ready=Unknown`
    /// (`--node-monitor-grace-period`, 50 s).
    pub node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller checks the nodes' Leases
    /// (`--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// The cluster CA (PEM) the root-CA publisher puts in every namespace's
    /// `kube-root-ca.crt` (kube-controller-manager's `--root-ca-file`); `None` disables it.
    pub root_ca: Option<String>,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        let identity = default_identity();
        ControllersConfig {
            leader_election: Some(LeaderElectionConfig::new(
                DEFAULT_LEASE_NAMESPACE,
                DEFAULT_LEASE_NAME,
                identity.clone(),
            )),
            identity,
            controllers: ALL_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
            concurrency: 5,
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
            root_ca: None,
        }
    }
}

impl ControllersConfig {
    /// Checks names and timings.
    pub fn validate(&self) -> Result<(), ControllersError> {
        if let Some(le) = &self.leader_election {
            le.validate()?;
        }
        for name in &self.controllers {
            if !ALL_CONTROLLERS.contains(&name.as_str()) {
                return Err(ControllersError::Config(format!(
                    "unknown controller {name:?}; known: {}",
                    ALL_CONTROLLERS.join(", ")
                )));
            }
        }
        if self.concurrency == 0 {
            return Err(ControllersError::Config(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.node_monitor_period.is_zero()
            || self.node_monitor_period >= self.node_monitor_grace_period
        {
            return Err(ControllersError::Config(
                "the node monitor period must be positive and shorter than the grace period".into(),
            ));
        }
        Ok(())
    }

    /// Whether the controller `name` is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }
}

/// Why the controller-manager could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControllersError {
    /// The configuration is invalid.
    #[error("invalid controller-manager configuration: {0}")]
    Config(String),
    /// The leader election configuration is invalid.
    #[error(transparent)]
    LeaderElection(#[from] LeaderElectionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configuration_enables_every_controller_and_is_valid() {
        let config = ControllersConfig::default();
        assert!(config.validate().is_ok());
        for name in ALL_CONTROLLERS {
            assert!(config.enabled(name));
        }
    }

    #[test]
    fn unknown_controller_names_are_rejected_with_the_known_ones() {
        let config = ControllersConfig {
            controllers: vec!["replicaset".into(), "cronjob".into()],
            ..ControllersConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("\"cronjob\""), "{err}");
        assert!(err.contains("daemonset"), "{err}");
    }
}
