//! `wasmkube controllers`: the controller-manager on its own, against any cluster; and the
//! controller flags `wasmkube server` shares with it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::cluster::{LogFormat, Shutdown, config_from_kubeconfig, init_logging};

/// Controller-manager flags shared by `server` (embedded controllers) and `controllers`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ControllerArgs {
    /// Controllers to run (comma-separated): replicaset, deployment, job, daemonset,
    /// garbagecollector, nodelifecycle, resourcequota, endpoint, endpointslice, nodeipam,
    /// tokencleaner, serviceaccount, root-ca-cert-publisher, knative-serving [default: all].
    #[arg(long, value_name = "NAME,..", value_delimiter = ',')]
    pub(crate) controllers: Vec<String>,
    /// Concurrent reconciles per controller.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrent_syncs: u16,
    /// A node whose lease is not renewed for this many seconds becomes NotReady (Ready=Unknown)
    /// and gets the unreachable taints. Agents renew their lease every 10 s, so keep this
    /// well above 10 (healthy nodes flap otherwise).
    #[arg(long, value_name = "SECS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) node_monitor_grace_period: u64,
    /// How often node leases are checked, in seconds (shorter than the grace period).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) node_monitor_period: u64,
    /// The range node IPAM (the nodeipam controller) takes every Node's pod CIDR from
    /// (spec.podCIDR): one IPv4 or IPv6 CIDR. Pods' addresses come from their Node's pod
    /// CIDR where agents route them (not yet: agents give pods 127.N.x.y addresses).
    #[arg(long, value_name = "CIDR", default_value = wasmkube_controllers::DEFAULT_CLUSTER_CIDR)]
    pub(crate) cluster_cidr: wasmkube_controllers::IpNet,
    /// The prefix length of each Node's pod CIDR, cut from --cluster-cidr (a /24 is 254 pod
    /// addresses per node, and a /16 cluster CIDR has 256 of them). At least the cluster
    /// CIDR's prefix length; at most 16 bits longer.
    #[arg(long, value_name = "BITS", default_value_t = wasmkube_controllers::DEFAULT_NODE_CIDR_MASK_SIZE, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub(crate) node_cidr_mask_size: u8,
    /// The domain of Knative Routes' URLs, http://NAME.NAMESPACE.DOMAIN (the function
    /// ingress routes requests by that Host).
    #[arg(long, value_name = "DOMAIN", default_value = wasmkube_controllers::DEFAULT_FUNCTION_DOMAIN)]
    pub(crate) function_domain: String,
    /// Run the controllers unconditionally, without taking the controller-manager Lease
    /// (only when exactly one controller-manager runs).
    #[arg(long)]
    pub(crate) no_leader_elect: bool,
}

impl ControllerArgs {
    /// The controller-manager configuration these flags describe.
    pub(crate) fn config(&self) -> anyhow::Result<wasmkube_controllers::ControllersConfig> {
        let mut config = wasmkube_controllers::ControllersConfig::default();
        if !self.controllers.is_empty() {
            config.controllers = self.controllers.clone();
        }
        config.concurrency = self.concurrent_syncs;
        config.node_monitor_grace_period = Duration::from_secs(self.node_monitor_grace_period);
        config.node_monitor_period = Duration::from_secs(self.node_monitor_period);
        config.cluster_cidr = self.cluster_cidr;
        config.node_cidr_mask_size = self.node_cidr_mask_size;
        config.function_domain = self.function_domain.clone();
        if self.no_leader_elect {
            config.leader_election = None;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Run the controller-manager (ReplicaSets, Deployments, Jobs, DaemonSets, garbage
/// collection, node lifecycle, Services' EndpointSlices and Endpoints, Nodes' pod CIDRs,
/// bootstrap token cleanup) against the cluster of a kubeconfig.
///
/// `wasmkube server` runs the same controllers in its own process unless
/// --disable-controllers; several controller-managers may run, one acts at a time (Lease
/// `kube-system/wasmkube-controller-manager`).
#[derive(clap::Args, Debug)]
pub(crate) struct ControllersCommand {
    /// The kubeconfig to reach the cluster with (e.g. the server's DATA_DIR/kubeconfig.yaml).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: PathBuf,
    #[command(flatten)]
    args: ControllerArgs,
    /// The cluster CA (PEM) published in every namespace's kube-root-ca.crt ConfigMap
    /// [default: the kubeconfig's certificate authority].
    #[arg(long, value_name = "FILE")]
    root_ca_file: Option<PathBuf>,
    /// Run each controller as its service account in kube-system
    /// (system:serviceaccount:kube-system:<controller>-controller, bound to its
    /// system:controller:<name> role), with tokens this process asks the TokenRequest API for
    /// and renews; the kubeconfig's user needs `create serviceaccounts/token` in kube-system,
    /// as system:kube-controller-manager has. `=false`: every controller acts as the
    /// kubeconfig's user.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    use_service_account_credentials: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The CA bundle (PEM) of the kubeconfig's current cluster, if it names one.
fn kubeconfig_ca(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    use base64::Engine;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let context = kubeconfig.current_context.as_deref().and_then(|name| {
        kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.context.as_ref())
    });
    let cluster = context.and_then(|c| {
        kubeconfig
            .clusters
            .iter()
            .find(|n| n.name == c.cluster)
            .and_then(|n| n.cluster.as_ref())
    });
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("the kubeconfig's certificate-authority-data is not base64")?;
        return Ok(Some(
            String::from_utf8(pem).context("the kubeconfig's CA is not PEM")?,
        ));
    }
    match &cluster.certificate_authority {
        Some(file) => Ok(Some(std::fs::read_to_string(file).with_context(|| {
            format!("reading the kubeconfig's certificate-authority {file}")
        })?)),
        None => Ok(None),
    }
}

impl ControllersCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        init_logging(self.log_format);
        let mut config = self.args.config()?;
        config.root_ca = match &self.root_ca_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading --root-ca-file {}", file.display()))?,
            ),
            None => kubeconfig_ca(&self.kubeconfig)?,
        };
        let shutdown = Shutdown::on_signals();
        crate::process::prepare(shutdown.wait());
        let kube_config = config_from_kubeconfig(&self.kubeconfig).await?;
        let client = wasmkube_client::connection::client(kube_config.clone())
            .context("building the API client")?;
        // Dropped (renewals stopped) once the controllers have stopped.
        let credentials = if self.use_service_account_credentials {
            let accounts = wasmkube_controllers::service_accounts();
            let credentials = tokio::select! {
                credentials = wasmkube_controllers::credentials::service_account_clients(
                    &client, &kube_config, &accounts,
                ) => credentials?,
                () = shutdown.wait() => return Ok(()),
            };
            Some(credentials)
        } else {
            None
        };
        let accounts = credentials
            .as_ref()
            .map(|c| c.clients())
            .unwrap_or_default();
        wasmkube_controllers::run_with_service_accounts(client, accounts, config, shutdown.wait())
            .await
            .context("running the controllers")?;
        drop(credentials);
        Ok(())
    }
}
