//! `wasmkube agent`: joins a node to a cluster and runs its pods.

use std::path::PathBuf;

use anyhow::Context;
use wasmkube_agent::certificates::{self, CertificateSlot, client, request, rotation};

use super::cluster::{
    LogFormat, NodeArgs, Shutdown, default_data_dir, index_from_name, init_logging,
};

/// Join this machine (or another node on it) to a cluster and run the pods bound to it.
///
/// The first start joins with a bootstrap token from `wasmkube server token create`: it pins
/// the cluster CA and lets the agent ask for the node's own client certificate, which is
/// kept in the data directory and renewed before it expires. Later starts need no token.
#[derive(clap::Args, Debug)]
pub(crate) struct AgentCommand {
    /// The apiserver, e.g. https://10.0.0.1:6443.
    #[arg(
        long,
        env = "WASMKUBE_SERVER",
        value_name = "URL",
        required_unless_present = "cleanup"
    )]
    server: Option<String>,
    /// Remove what this node's kube-proxy programmed (the `ip wasmkube` nftables table) and
    /// what the routed pod network made (the device wasmkube0 with the pod IPs, the routes
    /// to other Nodes' pod CIDRs), then exit, as kube-proxy's --cleanup. Stop the agent
    /// first.
    #[arg(long)]
    cleanup: bool,
    /// The join token printed by `wasmkube server token create` (needed to join; ignored
    /// once the node has its certificate, unless it names another cluster's CA).
    #[arg(
        long,
        env = "WASMKUBE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Where the agent keeps its certificates, images, pod files and logs (under DIR/agent)
    /// [default: the user's data directory, e.g. ~/.local/share/wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A kubeconfig of the user `system:kube-proxy` (ClusterRoles system:node-proxier: read
    /// every Node, Service and EndpointSlice; wasmkube:network-policy: list every pod,
    /// namespace and NetworkPolicy), for what the agent watches cluster-wide and a node's own
    /// credentials may not read: the routed pod network's routes to the other Nodes, and
    /// what NetworkPolicy for wasm pods is decided from [default: the agent asks the cluster
    /// for a `system:kube-proxy` certificate as itself, which the server approves for nodes,
    /// as k3s provisions its agents; kept in DIR/agent/pki/ and renewed]. Make one by hand on
    /// the server with `wasmkube server kubeconfig --user system:kube-proxy --server URL`.
    #[arg(long, value_name = "FILE")]
    kube_proxy_kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl AgentCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        init_logging(self.log_format);
        self.node.image_gc_policy()?;
        if self.cleanup {
            let nft = wasmkube_agent::proxy::Nft::default();
            let removed = wasmkube_agent::proxy::cleanup(&nft)
                .await
                .context("removing the kube-proxy rules")?;
            eprintln!(
                "wasmkube agent: {}",
                if removed {
                    "removed the nftables table ip wasmkube"
                } else {
                    "no nftables table ip wasmkube to remove"
                }
            );
            let network = wasmkube_agent::network::cleanup()
                .await
                .context("removing the routed pod network's device and routes")?;
            for route in &network.routes {
                eprintln!("wasmkube agent: removed the route {route}");
            }
            eprintln!(
                "wasmkube agent: {} {}",
                if network.device {
                    "removed the device"
                } else {
                    "no device to remove:"
                },
                wasmkube_agent::network::POD_DEVICE
            );
            return Ok(());
        }
        let server = self
            .server
            .clone()
            .context("--server is required to join a cluster")?;
        let data_dir = match self.data_dir.clone() {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let server = server.trim_end_matches('/').to_string();
        let name = self
            .node
            .node_name
            .clone()
            .unwrap_or_else(wasmkube_client::identity::default_node_name);
        let shutdown = Shutdown::on_signals();
        crate::process::prepare(shutdown.wait());
        let pki = certificates::pki_dir(&data_dir);
        let request = request::CertificateRequest::node_client(&name);
        let pinned = match self.token.as_deref() {
            Some(token) => Some(wasmkube_apiserver::join::parse(token)?),
            None => None,
        };
        let stored =
            certificates::load_node_identity(&pki, &request.common_name).filter(|(ca, _)| {
                pinned
                    .as_ref()
                    .is_none_or(|(hash, _)| *hash == wasmkube_apiserver::join::ca_hash(ca))
            });
        let (ca_pem, credentials) = match stored {
            Some(identity) => identity,
            None => {
                let token = self.token.as_deref().with_context(|| {
                    format!(
                        "node {name} has no usable client certificate in {}: join it with \
                         --token (create one on the server with `wasmkube server token create`)",
                        pki.display()
                    )
                })?;
                let (ca_pem, bootstrap) =
                    wasmkube_apiserver::join::fetch_cluster_ca(&server, token).await?;
                eprintln!("wasmkube agent: node {name} asks {server} for its certificate");
                let credentials = certificates::bootstrap(
                    &server,
                    &ca_pem,
                    &bootstrap.to_string(),
                    &name,
                    &pki,
                    shutdown.wait(),
                )
                .await
                .context("joining the cluster")?;
                (ca_pem, credentials)
            }
        };
        let slot = CertificateSlot::new(Some(credentials));
        let api = client::api_client(&server, &ca_pem, slot.clone())?;
        let mut agent = self
            .node
            .agent_config(&data_dir, api, &ca_pem, index_from_name(&name))?;
        agent.api_server = Some(server.clone());
        if let Some(path) = &self.kube_proxy_kubeconfig {
            agent.kube_proxy_client = Some(
                super::cluster::client_from_kubeconfig(path)
                    .await
                    .context("--kube-proxy-kubeconfig")?,
            );
        } else {
            // The cluster-wide watches (the routed network's Nodes, NetworkPolicy's pods,
            // namespaces and policies) need more than a node may read: the agent asks for a
            // system:kube-proxy certificate as itself (the server approves it for nodes),
            // keeps it beside its own and renews it; until it arrives the watches retry.
            let request = request::CertificateRequest::kube_proxy();
            let stored = certificates::load(
                &pki,
                certificates::KUBE_PROXY_FILE,
                &ca_pem,
                &request.common_name,
            );
            // Asked for now when there is none yet (the server approves it at once): a
            // client made with an empty slot would keep its first, certificate-less
            // connections. Without one within 30 s, the rotation keeps asking.
            let stored = match stored {
                Some(credentials) => Some(credentials),
                None => {
                    let give_up = async {
                        tokio::select! {
                            () = shutdown.wait() => {}
                            () = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                        }
                    };
                    match request::request_certificate(&agent.client, &request, give_up).await {
                        Ok(credentials) => {
                            certificates::store(&pki, certificates::KUBE_PROXY_FILE, &credentials)
                                .context("storing the kube-proxy certificate")?;
                            Some(credentials)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "no system:kube-proxy certificate yet; the routed network's Node watch and NetworkPolicy wait for it");
                            None
                        }
                    }
                }
            };
            let proxy_slot = CertificateSlot::new(stored);
            agent.kube_proxy_client =
                Some(client::api_client(&server, &ca_pem, proxy_slot.clone())?);
            agent.kube_proxy_rotation = Some(rotation::Rotation {
                slot: proxy_slot,
                request,
                dir: pki.clone(),
                file: certificates::KUBE_PROXY_FILE,
            });
        }
        agent.client_rotation = Some(rotation::Rotation {
            slot,
            request,
            dir: pki,
            file: certificates::CLIENT_FILE,
        });
        match agent.pod_network {
            wasmkube_agent::PodNetwork::Loopback => eprintln!(
                "wasmkube agent: node {} joining {server}; pods get IPs 127.{}.x.y",
                agent.node_name, agent.node_index
            ),
            wasmkube_agent::PodNetwork::Routed => eprintln!(
                "wasmkube agent: node {} joining {server}; pods get IPs from its pod CIDR \
                 (routed pod network)",
                agent.node_name
            ),
        }
        let running = wasmkube_agent::start(agent, shutdown.wait())
            .await
            .context("starting the node agent")?;
        let _ = running.task.await;
        Ok(())
    }
}
