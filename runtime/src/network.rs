//! A guest's place on the network: its pod IP, the resolver its names go through, and the
//! policy the runtime asks before every connection in or out.
//!
//! Details at [`GuestNetwork`].

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (including the connections of `wasi:http`).
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// Consulted by the runtime before every outbound connect / UDP send and every inbound
/// accept of a guest. Called on the guests' threads: answer from memory, without blocking.
pub trait ConnectPolicy: Send + Sync + 'static {
    /// Whether the guest may connect (TCP) or send (UDP) to `to`.
    fn allow_egress(&self, to: SocketAddr, protocol: Protocol) -> bool;
    /// Whether the guest may accept a connection (TCP) or a datagram (UDP) from `from` on its
    /// port `local_port` (0 when the runtime cannot tell which of the guest's UDP ports it
    /// arrived on).
    fn allow_ingress(&self, from: SocketAddr, local_port: u16, protocol: Protocol) -> bool;
}

/// The policy that allows everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl ConnectPolicy for AllowAll {
    fn allow_egress(&self, _to: SocketAddr, _protocol: Protocol) -> bool {
        true
    }

    fn allow_ingress(&self, _from: SocketAddr, _local_port: u16, _protocol: Protocol) -> bool {
        true
    }
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist or has no address (NXDOMAIN, or no A/AAAA record after every
    /// search path).
    #[error("{0}")]
    NotFound(String),
    /// No resolver answered, or one failed (timeouts, SERVFAIL): trying later may work.
    #[error("{0}")]
    Temporary(String),
    /// The name is not a valid domain name.
    #[error("{0}")]
    InvalidName(String),
}

/// The future of a resolution.
pub type ResolveFuture = Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, ResolveError>> + Send>>;

/// Turns a host name into addresses for a guest (`ip-name-lookup`, outgoing `wasi:http`).
pub trait NameResolver: Send + Sync + 'static {
    /// The addresses of `name` (never an IP literal: the runtime answers those itself).
    fn resolve(&self, name: &str) -> ResolveFuture;
}

/// The host's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostResolver;

impl NameResolver for HostResolver {
    fn resolve(&self, name: &str) -> ResolveFuture {
        let name = name.to_string();
        Box::pin(async move {
            match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => {
                    let ips: Vec<IpAddr> = addrs.map(|a| a.ip().to_canonical()).collect();
                    if ips.is_empty() {
                        Err(ResolveError::NotFound(format!("{name}: no address")))
                    } else {
                        Ok(ips)
                    }
                }
                Err(e) => Err(ResolveError::NotFound(format!("{name}: {e}"))),
            }
        })
    }
}

/// A guest's network: where it lives, how it resolves names and what it may connect to.
///
/// A guest without a [`GuestNetwork`] has no sockets (`wasi:sockets` is denied; its outgoing
/// `wasi:http` requests go out through the host's resolver and source address, as before).
/// A guest with one gets TCP and UDP sockets and `ip-name-lookup`, mediated by the runtime:
///
/// - **Egress**: every TCP connect, every UDP datagram sent and every outgoing `wasi:http`
///   request's connection asks [`ConnectPolicy::allow_egress`] for its destination first; a
///   refusal is `access-denied` (sockets) or `destination-ip-prohibited` (`wasi:http`).
/// - **Ingress**: every connection accepted for the guest (its `wasi:http` server and its own
///   `wasi:sockets` listeners) asks [`ConnectPolicy::allow_ingress`] with the peer and the
///   local port; a refused peer's connection is closed at once and the guest never sees it.
///   A UDP datagram from a peer the guest has not sent to asks it too (replies to the guest's
///   own datagrams are let through, as a stateful firewall would).
/// - **Addresses**: the guest binds and connects from its pod IP. A bind to the wildcard
///   address becomes a bind to the pod IP, an unbound socket that listens or connects is
///   bound to the pod IP first, and binds to any other address are refused. When the pod IP
///   is a loopback address (agents without a routed pod network), connections to
///   non-loopback destinations leave from the host's address instead, since a loopback
///   source cannot be routed.
/// - **Names**: `wasi:sockets/ip-name-lookup` and outgoing `wasi:http` requests resolve
///   through the [`NameResolver`] (the agent's follows the pod's resolv.conf: the cluster
///   DNS, search paths, `ndots`), never the host's resolver.
#[derive(Clone)]
pub struct GuestNetwork {
    /// The pod IP: the guest binds and connects from it.
    pub pod_ip: IpAddr,
    /// Resolves the guest's names.
    pub resolver: Arc<dyn NameResolver>,
    /// Asked before every connection in or out.
    pub policy: Arc<dyn ConnectPolicy>,
}

impl GuestNetwork {
    /// A network at `pod_ip` with the host's resolver and no restriction ([`AllowAll`]).
    pub fn new(pod_ip: IpAddr) -> Self {
        GuestNetwork {
            pod_ip,
            resolver: Arc::new(HostResolver),
            policy: Arc::new(AllowAll),
        }
    }

    /// The same network with `resolver`.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn NameResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The same network with `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: Arc<dyn ConnectPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The address a connection to `to` leaves from: the pod IP, except when it is a
    /// loopback address and `to` is not (the kernel's choice then).
    pub(crate) fn source_for(&self, to: IpAddr) -> Option<IpAddr> {
        let unroutable = self.pod_ip.is_loopback() && !to.is_loopback();
        let other_family = self.pod_ip.is_ipv4() != to.is_ipv4();
        (!unroutable && !other_family).then_some(self.pod_ip)
    }

    /// Whether the guest may bind `addr`: the pod IP, or the wildcard address with port 0
    /// (an implicit bind, or an ephemeral one the runtime left alone). Explicit wildcard
    /// binds reach here already turned into the pod IP (`bind_address`).
    pub(crate) fn may_bind(&self, addr: SocketAddr) -> bool {
        addr.ip() == self.pod_ip || (addr.ip().is_unspecified() && addr.port() == 0)
    }
}

impl std::fmt::Debug for GuestNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestNetwork")
            .field("pod_ip", &self.pod_ip)
            .finish_non_exhaustive()
    }
}

/// How many UDP peers a store remembers as "sent to" (replies from them are let in).
const MAX_UDP_PEERS: usize = 1024;

/// What one store's socket checks remember: the UDP ports it bound and the peers it sent to.
#[derive(Default)]
struct SocketState {
    udp_ports: Vec<u16>,
    udp_peers: std::collections::HashSet<SocketAddr>,
}

/// The `socket_addr_check` of a guest's WASI context: bind addresses, egress and UDP
/// ingress. (TCP ingress is checked where the local port is known: the guest's accept, see
/// `host::link_network`.)
pub(crate) fn socket_check(
    network: &GuestNetwork,
) -> impl Fn(
    SocketAddr,
    wasmtime_wasi::sockets::SocketAddrUse,
) -> Pin<Box<dyn Future<Output = bool> + Send + Sync>>
+ Send
+ Sync
+ 'static {
    use wasmtime_wasi::sockets::SocketAddrUse as Use;
    let network = network.clone();
    let state = Mutex::new(SocketState::default());
    move |addr, usage| {
        let allowed = match usage {
            Use::TcpBind => network.may_bind(addr),
            Use::UdpBind => {
                let ok = network.may_bind(addr);
                if ok && addr.port() != 0 {
                    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                    if !state.udp_ports.contains(&addr.port()) {
                        state.udp_ports.push(addr.port());
                    }
                }
                ok
            }
            Use::TcpListen | Use::TcpAccept => true,
            Use::TcpConnect => network.policy.allow_egress(addr, Protocol::Tcp),
            Use::UdpSend => {
                let ok = network.policy.allow_egress(addr, Protocol::Udp);
                if ok {
                    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                    if state.udp_peers.len() >= MAX_UDP_PEERS {
                        state.udp_peers.clear();
                    }
                    state.udp_peers.insert(addr);
                }
                ok
            }
            Use::UdpReceive => {
                let (replied, port) = {
                    let state = state.lock().unwrap_or_else(|p| p.into_inner());
                    let port = match state.udp_ports.as_slice() {
                        [one] => *one,
                        _ => 0,
                    };
                    (state.udp_peers.contains(&addr), port)
                };
                replied || network.policy.allow_ingress(addr, port, Protocol::Udp)
            }
        };
        if !allowed {
            tracing::debug!(%addr, ?usage, "guest socket use refused");
        }
        let answer: Pin<Box<dyn Future<Output = bool> + Send + Sync>> =
            Box::pin(std::future::ready(allowed));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi::sockets::SocketAddrUse as Use;

    /// Allows egress to one port only and ingress from one peer only.
    struct OnlyPort(u16, IpAddr);

    impl ConnectPolicy for OnlyPort {
        fn allow_egress(&self, to: SocketAddr, _protocol: Protocol) -> bool {
            to.port() == self.0
        }

        fn allow_ingress(&self, from: SocketAddr, _local_port: u16, _protocol: Protocol) -> bool {
            from.ip() == self.1
        }
    }

    #[tokio::test]
    async fn the_socket_check_asks_the_policy_and_keeps_binds_at_the_pod_ip() {
        let network = GuestNetwork::new("127.0.0.1".parse().unwrap())
            .with_policy(Arc::new(OnlyPort(80, "127.0.0.9".parse().unwrap())));
        let check = socket_check(&network);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check(at("127.0.0.2:80"), Use::TcpConnect).await);
        assert!(!check(at("127.0.0.2:81"), Use::TcpConnect).await);
        assert!(!check(at("127.0.0.2:81"), Use::UdpSend).await);
        assert!(check(at("127.0.0.1:8080"), Use::TcpBind).await);
        assert!(check(at("0.0.0.0:0"), Use::TcpBind).await);
        assert!(!check(at("0.0.0.0:8080"), Use::TcpBind).await);
        assert!(!check(at("127.0.0.2:8080"), Use::UdpBind).await);
        // UDP: a stranger is asked about, a peer the guest sent to may answer.
        assert!(check(at("127.0.0.1:5353"), Use::UdpBind).await);
        assert!(!check(at("127.0.0.3:53"), Use::UdpReceive).await);
        assert!(check(at("127.0.0.9:53"), Use::UdpReceive).await);
        assert!(check(at("127.0.0.3:80"), Use::UdpSend).await);
        assert!(check(at("127.0.0.3:80"), Use::UdpReceive).await);
    }
}
