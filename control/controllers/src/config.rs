//! The controller-manager's settings and errors.

use std::net::Ipv4Addr;
use std::time::Duration;

pub use ipnet::IpNet;
use ipnet::Ipv4Net;

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
    "nodeipam",
    "tokencleaner",
    "serviceaccount",
    "root-ca-cert-publisher",
    "knative-serving",
];

/// The service account in `kube-system` each controller acts as, as kube-controller-manager's
/// controllers name theirs (its `ClientBuilder.ClientOrDie(...)` names; RBAC binds each to
/// `system:controller:<account>`). The node IPAM controller is kube-controller-manager's
/// `node-controller` too. The token cleaner's `token-cleaner` is bound to a Role in
/// `kube-system` (the Secrets it deletes live there), not a ClusterRole.
pub fn service_account(controller: &str) -> Option<&'static str> {
    Some(match controller {
        "replicaset" => "replicaset-controller",
        "deployment" => "deployment-controller",
        "job" => "job-controller",
        "daemonset" => "daemon-set-controller",
        "garbagecollector" => GARBAGE_COLLECTOR_ACCOUNT,
        "nodelifecycle" | "nodeipam" => "node-controller",
        "resourcequota" => "resourcequota-controller",
        "endpoint" => "endpoint-controller",
        "endpointslice" => "endpointslice-controller",
        "serviceaccount" => "service-account-controller",
        "root-ca-cert-publisher" => "root-ca-cert-publisher",
        "tokencleaner" => "token-cleaner",
        "knative-serving" => "knative-serving-controller",
        _ => return None,
    })
}

/// The account the garbage collector acts as.
const GARBAGE_COLLECTOR_ACCOUNT: &str = "generic-garbage-collector";
/// The account that deletes Jobs whose `ttlSecondsAfterFinished` passed (Kubernetes' TTL
/// after finished controller, part of the `job` controller here).
pub const TTL_AFTER_FINISHED_ACCOUNT: &str = "ttl-after-finished-controller";

/// Every service account a controller acts as ([`service_account`], and
/// [`TTL_AFTER_FINISHED_ACCOUNT`]), once each.
pub fn service_accounts() -> Vec<&'static str> {
    let mut accounts: Vec<&'static str> = ALL_CONTROLLERS
        .iter()
        .filter_map(|c| service_account(c))
        .chain([TTL_AFTER_FINISHED_ACCOUNT])
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

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
    /// Where node IPAM takes the Nodes' pod CIDRs from (`--cluster-cidr`, 10.42.0.0/16 as
    /// k3s).
    pub cluster_cidr: IpNet,
    /// The prefix length of each Node's pod CIDR (`--node-cidr-mask-size`, 24).
    pub node_cidr_mask_size: u8,
    /// The domain of Knative Routes' URLs: `http://NAME.NAMESPACE.DOMAIN`
    /// (`--function-domain`).
    pub function_domain: String,
}

/// The default `--function-domain`: sslip.io names that resolve to 127.0.0.1, so a Route's
/// URL works with curl on the node without DNS set-up.
pub const DEFAULT_FUNCTION_DOMAIN: &str = "127.0.0.1.sslip.io";

/// k3s' default cluster CIDR.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
/// Kubernetes' default node CIDR mask size for IPv4.
pub const DEFAULT_NODE_CIDR_MASK_SIZE: u8 = 24;

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
            cluster_cidr: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 42, 0, 0), 16)),
            node_cidr_mask_size: DEFAULT_NODE_CIDR_MASK_SIZE,
            function_domain: DEFAULT_FUNCTION_DOMAIN.to_string(),
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
        if self.enabled("nodeipam") {
            crate::nodeipam::cidr_set::CidrSet::new(self.cluster_cidr, self.node_cidr_mask_size)
                .map_err(|e| ControllersError::Config(e.to_string()))?;
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
    fn every_controller_acts_as_its_kube_controller_manager_account() {
        for controller in ALL_CONTROLLERS {
            assert!(service_account(controller).is_some(), "{controller}");
        }
        assert_eq!(service_account("tokencleaner"), Some("token-cleaner"));
        assert_eq!(service_account("nodeipam"), Some("node-controller"));
        let accounts = service_accounts();
        assert!(accounts.contains(&TTL_AFTER_FINISHED_ACCOUNT));
        assert!(accounts.contains(&"replicaset-controller"));
        let mut unique = accounts.clone();
        unique.dedup();
        assert_eq!(unique, accounts, "each account once");
    }

    #[test]
    fn default_configuration_enables_every_controller_and_is_valid() {
        let config = ControllersConfig::default();
        assert!(config.validate().is_ok());
        for name in ALL_CONTROLLERS {
            assert!(config.enabled(name));
        }
    }

    #[test]
    fn the_default_cluster_cidr_is_k3s_and_bad_mask_sizes_are_refused() {
        let config = ControllersConfig::default();
        assert_eq!(config.cluster_cidr.to_string(), DEFAULT_CLUSTER_CIDR);
        let bad = ControllersConfig {
            node_cidr_mask_size: 12,
            ..ControllersConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("--node-cidr-mask-size 12"), "{err}");
        let without_ipam = ControllersConfig {
            controllers: vec!["replicaset".into()],
            ..bad
        };
        assert!(without_ipam.validate().is_ok());
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
