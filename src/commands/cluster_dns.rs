//! `wasmkube server`'s cluster DNS (k3s runs CoreDNS as an addon; here it is a task of the
//! server): its flags, the listener bound before the apiserver starts (so the apiserver can
//! point `kube-system/kube-dns` at it, port 0 included), then `wasmkube_dns` serving from
//! informers of its own, as the `kube-system/coredns` service account.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;

use super::cluster::NodeArgs;

/// The DNS server's user: k3s' CoreDNS service account, bound to `system:coredns`.
const COREDNS_USER: &str = "system:serviceaccount:kube-system:coredns";
/// The listen port without root (53 needs it, or CAP_NET_BIND_SERVICE).
pub(crate) const UNPRIVILEGED_PORT: u16 = 10053;

/// The cluster DNS flags of `wasmkube server`.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Cluster DNS")]
pub(crate) struct ClusterDnsArgs {
    /// Do not run the cluster DNS server (as k3s' `--disable coredns`); the
    /// kube-system/kube-dns Service, Endpoints and EndpointSlice an earlier start made are
    /// removed (a kube-dns Service with a selector, a CoreDNS of your own, is left alone).
    #[arg(long)]
    disable_cluster_dns: bool,
    /// Where the cluster DNS server listens, UDP and TCP: the endpoint of
    /// kube-system/kube-dns (--cluster-dns), which kube-proxy forwards to. Port 0 picks a
    /// free port [default: the node IP, port 53 when running as root, else 10053].
    #[arg(long, value_name = "ADDR:PORT")]
    cluster_dns_listen: Option<SocketAddr>,
    /// An upstream resolver for names outside the cluster domain (repeatable), `IP` or
    /// `IP:PORT` [default: the nameservers of /etc/resolv.conf, as CoreDNS's
    /// `forward . /etc/resolv.conf`].
    #[arg(long = "cluster-dns-upstream", value_name = "IP[:PORT]", value_parser = parse_upstream)]
    upstreams: Vec<SocketAddr>,
}

/// Parses `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
fn parse_upstream(value: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    value
        .parse::<SocketAddr>()
        .map_err(|_| format!("{value:?} is not an IP address or IP:PORT"))
}

/// A cluster DNS server bound and not serving yet.
pub(crate) struct PreparedDns {
    listener: wasmkube_dns::DnsListener,
    config: wasmkube_dns::DnsConfig,
    service_ip: Ipv4Addr,
}

impl ClusterDnsArgs {
    /// Checks the flags and binds the listener; `None` when disabled.
    pub(crate) async fn prepare(&self, node: &NodeArgs) -> anyhow::Result<Option<PreparedDns>> {
        if self.disable_cluster_dns {
            return Ok(None);
        }
        let IpAddr::V4(service_ip) = node.cluster_dns else {
            anyhow::bail!(
                "--cluster-dns {}: the cluster DNS Service's address must be an IPv4 address in the service range 10.43.0.0/16",
                node.cluster_dns
            );
        };
        if !wasmkube_apiserver::services::in_service_range(service_ip) {
            anyhow::bail!(
                "--cluster-dns {service_ip} is outside the service range 10.43.0.0/16; choose an address in it (default 10.43.0.10) or --disable-cluster-dns"
            );
        }
        let listen = self.cluster_dns_listen.unwrap_or_else(|| {
            let port = if rustix::process::geteuid().is_root() {
                53
            } else {
                UNPRIVILEGED_PORT
            };
            SocketAddr::new(node.node_ip, port)
        });
        let upstreams = if self.upstreams.is_empty() {
            match wasmkube_dns::upstreams_from_resolv_conf(Path::new("/etc/resolv.conf")) {
                Ok(upstreams) => upstreams,
                Err(error) => {
                    tracing::warn!(%error, "names outside the cluster domain will not resolve; give --cluster-dns-upstream");
                    Vec::new()
                }
            }
        } else {
            self.upstreams.clone()
        };
        let listener = wasmkube_dns::DnsListener::bind(listen)
            .await
            .context("starting the cluster DNS server (--disable-cluster-dns runs none)")?;
        let mut config = wasmkube_dns::DnsConfig::new(listener.local_addr(), upstreams);
        config.cluster_domain = node.cluster_domain.clone();
        config.cluster_dns = Some(IpAddr::V4(service_ip));
        Ok(Some(PreparedDns {
            listener,
            config,
            service_ip,
        }))
    }
}

impl PreparedDns {
    /// What the apiserver keeps `kube-system/kube-dns` as.
    pub(crate) fn service(&self) -> wasmkube_apiserver::services::ClusterDns {
        wasmkube_apiserver::services::ClusterDns {
            ip: self.service_ip,
            endpoint: self.listener.local_addr(),
        }
    }

    /// Serves, with informers of its own as the coredns service account, until `stop`.
    pub(crate) async fn run(
        self,
        data_dir: &Path,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let client =
            super::cluster::component_client(data_dir, COREDNS_USER, &["system:serviceaccounts"])
                .await?;
        let informers = wasmkube_client::informers::SharedInformerFactory::new(client);
        let server = wasmkube_dns::DnsServer::serve(self.listener, self.config, &informers)
            .context("starting the cluster DNS server")?;
        informers.start();
        Ok(tokio::spawn(async move {
            stop.await;
            server.shutdown().await;
            drop(informers);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_default_to_port_53() {
        assert_eq!(
            parse_upstream("127.0.0.53"),
            Ok("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[::1]:5353"),
            Ok("[::1]:5353".parse().unwrap())
        );
        assert!(parse_upstream("dns.example").is_err());
    }
}
