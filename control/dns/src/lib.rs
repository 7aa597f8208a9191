//! Cluster DNS, as CoreDNS's `kubernetes` plugin answers it in a k3s cluster (the default
//! Corefile: `kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure; fallthrough
//! in-addr.arpa ip6.arpa; ttl 5 }` then `forward . /etc/resolv.conf`):
//!
//! * `<svc>.<ns>.svc.<zone>`: A/AAAA of a Service's cluster IPs; for a headless Service its
//!   ready endpoint addresses (NXDOMAIN while it has none); for an ExternalName Service a
//!   CNAME to its `externalName` (followed: in-zone from the cache, else upstream).
//! * `<endpoint>.<svc>.<ns>.svc.<zone>`: an endpoint by its `hostname`, or its address with
//!   dashes (`10-42-0-5`).
//! * SRV `_<port>._<proto>.<svc>.<ns>.svc.<zone>` for named ports (and every port on the
//!   Service name): one target (the Service name) for a ClusterIP Service, one per endpoint
//!   (its endpoint name) for a headless one, the targets' addresses in the additional section.
//! * PTR of cluster IPs and endpoint addresses; unknown addresses go upstream.
//! * `<a-b-c-d>.<ns>.pod.<zone>` is a.b.c.d ("pods insecure": not checked against pods).
//! * The apex's SOA and NS (`ns.dns.<zone>`, the cluster DNS address), `dns-version.<zone>`
//!   TXT `1.1.0`. TTL 5 s everywhere. NODATA (NOERROR + SOA) for names that exist without the
//!   asked type, NXDOMAIN for names that do not.
//! * Every other name is forwarded to the upstream resolvers ([`forward`]).
//!
//! Answers come from a watch cache ([`index`]) the shared informers of Services and
//! EndpointSlices keep; a query never reaches the API. Until both informers have listed,
//! names of the zone are answered SERVFAIL (not a wrong NXDOMAIN). UDP and TCP on one
//! address; the protocol work (parsing, encoding, truncation, FORMERR for malformed
//! messages) is hickory's.

mod forward;
mod handler;
mod index;
mod lookup;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use wasmkube_client::informers::{Change, HandlerRegistration, SharedInformerFactory, Synced};

pub use forward::upstreams_from_resolv_conf;

/// The TTL of every answer, CoreDNS's default.
pub const DEFAULT_TTL: u32 = 5;
/// The cluster domain, as Kubernetes' default.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// How long a TCP connection may stay idle (CoreDNS's `idle` timeout for TCP is 10 s).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at finding a port free for both UDP and TCP when the listen port is 0.
const BIND_ATTEMPTS: usize = 20;

/// What the DNS server serves and where.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where it listens, UDP and TCP (port 0: a free port, the same for both).
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// The cluster DNS Service's address, answered for `ns.dns.<domain>`.
    pub cluster_dns: Option<IpAddr>,
    /// Where names outside the cluster domain go, tried in order; none: SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// The TTL of answers.
    pub ttl: u32,
}

impl DnsConfig {
    /// A server on `listen` for `cluster.local`, forwarding to `upstreams`.
    pub fn new(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> Self {
        DnsConfig {
            listen,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            cluster_dns: None,
            upstreams,
            ttl: DEFAULT_TTL,
        }
    }
}

/// Why the DNS server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The cluster domain is not a domain name.
    #[error("cluster domain {domain:?} is not a valid domain name: {message}")]
    Domain {
        /// The domain given.
        domain: String,
        /// What is wrong with it.
        message: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen for DNS on {addr} (UDP and TCP): {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A resolv.conf cannot be read.
    #[error("cannot read the upstream resolvers from {path}: {message}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A running DNS server; stops when [`shutdown`](Self::shutdown) or dropped.
pub struct DnsServer {
    addr: SocketAddr,
    server: Server<handler::Handler>,
    synced: Vec<Synced>,
    _registrations: Vec<HandlerRegistration>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The DNS server's sockets, bound before it serves (so the address it got, for port 0, can
/// be published first).
#[derive(Debug)]
pub struct DnsListener {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl DnsListener {
    /// Binds UDP and TCP on `addr`; port 0 finds a port free for both.
    pub async fn bind(addr: SocketAddr) -> Result<DnsListener, DnsError> {
        let (udp, tcp) = bind(addr).await?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr,
            source,
            hint: "",
        })?;
        Ok(DnsListener { udp, tcp, addr })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl DnsServer {
    /// Binds `config.listen` (UDP and TCP) and serves, as [`serve`](Self::serve).
    pub async fn start(
        config: DnsConfig,
        informers: &SharedInformerFactory,
    ) -> Result<DnsServer, DnsError> {
        let listener = DnsListener::bind(config.listen).await?;
        Self::serve(listener, config, informers)
    }

    /// Serves on `listener` (`config.listen` is not used), from the Service and
    /// EndpointSlice informers of `informers` (which the caller starts, before or after).
    pub fn serve(
        listener: DnsListener,
        config: DnsConfig,
        informers: &SharedInformerFactory,
    ) -> Result<DnsServer, DnsError> {
        let domain_error = |message: String| DnsError::Domain {
            domain: config.cluster_domain.clone(),
            message,
        };
        let mut apex = Name::from_ascii(config.cluster_domain.trim_end_matches('.'))
            .map_err(|e| domain_error(e.to_string()))?
            .to_lowercase();
        apex.set_fqdn(true);
        if apex.is_root() {
            return Err(domain_error("the root cannot be the cluster domain".into()));
        }
        let DnsListener { udp, tcp, addr } = listener;

        let index = Arc::new(RwLock::new(index::Index::default()));
        let services = informers.informer::<Service>();
        let slices = informers.informer::<EndpointSlice>();
        let write = index.clone();
        let service_handler = services.add_handler(move |change| {
            let mut index = write.write().unwrap_or_else(PoisonError::into_inner);
            match change {
                Change::Applied { new, .. } => index.apply_service(new),
                Change::Deleted(old) => index.delete_service(old),
                Change::Relisted => {}
            }
        });
        let write = index.clone();
        let slice_handler = slices.add_handler(move |change| {
            let mut index = write.write().unwrap_or_else(PoisonError::into_inner);
            match change {
                Change::Applied { new, .. } => index.apply_slice(new),
                Change::Deleted(old) => index.delete_slice(old),
                Change::Relisted => {}
            }
        });

        let upstreams: Vec<SocketAddr> = config
            .upstreams
            .iter()
            .copied()
            .filter(|u| {
                let own = *u == addr;
                if own {
                    tracing::warn!(upstream = %u, "not forwarding to the cluster DNS itself");
                }
                !own
            })
            .collect();
        let handler = handler::Handler {
            zone: lookup::Zone {
                apex,
                ttl: config.ttl,
                dns_ip: config.cluster_dns,
            },
            index,
            forwarder: forward::Forwarder::new(&upstreams),
            synced: vec![services.synced(), slices.synced()],
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 32);
        tracing::info!(%addr, domain = %config.cluster_domain, upstreams = ?upstreams, "cluster DNS serving");
        Ok(DnsServer {
            addr,
            server,
            synced: vec![services.synced(), slices.synced()],
            _registrations: vec![service_handler, slice_handler],
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the Services and EndpointSlices are in the cache (`false` if the
    /// informers are gone).
    pub async fn wait_synced(&self) -> bool {
        for synced in &self.synced {
            if !synced.wait().await {
                return false;
            }
        }
        true
    }

    /// Stops serving and waits for the server's tasks.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::debug!(%error, "the DNS server stopped with an error");
        }
    }
}

/// Binds UDP and TCP on `addr`; port 0 finds a port free for both.
async fn bind(
    addr: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsError> {
    let error = |source: std::io::Error| {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another port with --cluster-dns-listen)"
            }
            std::io::ErrorKind::AddrInUse => {
                " (something else listens there; choose another address with --cluster-dns-listen)"
            }
            _ => "",
        };
        DnsError::Bind { addr, source, hint }
    };
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(error)?;
        let bound = udp.local_addr().map_err(error)?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(error(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port")
    })))
}
