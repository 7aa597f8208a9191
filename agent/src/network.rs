//! Pod networking: every pod gets its own IP, and the agent serves the pod's ports on it.
//!
//! # The model
//! Wasm pods run inside the agent's process, so a pod needs no network namespace, veth or
//! bridge: its IP is an address on this machine that the agent binds the pod's listeners on
//! (a wasi:http pod's `containerPort`s are served at `podIP:containerPort`, see
//! `runtime::wasm`) and that probes and clients connect to. On one machine that address is a loopback one:
//! Linux routes all of `127.0.0.0/8` to `lo`, so every `127.x.y.z` is bindable with no setup.
//! Node number `n` (1-254, one per agent on the machine) owns `127.n.0.0/16`
//! ([`PodIpAllocator::new`]), so several agents on one machine never hand out the same IP and
//! the first octets of a pod IP tell which node runs it. `127.0.0.0/16` (with `127.0.0.1`)
//! stays the host's.
//!
//! This is [`PodNetwork::Loopback`], the default (`--pod-network loopback`): it needs no
//! privilege, and a pod IP is reachable only from the machine it runs on.
//!
//! # Several machines: the routed pod network
//! [`PodNetwork::Routed`] (`--pod-network routed`, needs CAP_NET_ADMIN) is Kubernetes'
//! kubenet-style model with flannel's host-gw backend:
//! - the controller-manager's node IPAM gives each Node a `spec.podCIDR` (a /24 of
//!   `--cluster-cidr`, 10.42.0.0/16 by default); the agent waits for its own
//!   ([`host_gw::wait_for_pod_cidr`]) before it starts pods and [`PodIpAllocator::with_cidr`]
//!   allocates from it;
//! - each pod IP is added as a `/32` on the bridge `wasmkube0` (a device without ports: see
//!   [`routed`] for why not a dummy device or `lo`) before the pod's listeners bind it, and
//!   removed when the pod goes; after a restart the agent re-registers its pods' IPs from
//!   their status and removes the addresses no pod holds (`pod::sandbox`);
//! - [`host_gw`] watches every Node and keeps a route to each other Node's pod CIDR via its
//!   InternalIP (`10.42.2.0/24 via 10.77.0.3 proto 87`): added, changed and removed with the
//!   Nodes, resynced with the kernel every 30 s, touching only routes carrying the agent's
//!   protocol number. All nodes must share an L2 segment (host-gw; no overlay).
//! - [`cleanup`] (`wasmkube agent --cleanup`, agent stopped) deletes the device and the
//!   agent's routes.
//!
//! The Node watch needs a client that may list every Node, which a node's own credentials may
//! not (the Node authorizer lets a node read only its own Node): the server's embedded agent
//! acts as `system:kube-proxy` for it; `wasmkube agent` asks the cluster for a
//! `system:kube-proxy` certificate as itself (approved by the server for nodes, see
//! [`crate::certificates`]) unless it is given `--kube-proxy-kubeconfig`.
//! Nothing above this module changes: the lifecycle asks for an IP and binds listeners on it.
//!
//! # Restarts
//! The allocator is in memory. After an agent restart, [`PodIpAllocator::restore`] re-registers
//! each surviving pod's `status.podIP`, so a pod keeps its IP and a new pod never gets it.
//! Allocation is deterministic-first (a hash of the pod UID picks the first candidate), so a
//! pod whose status was never written tends to get the same IP again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

pub mod cni;
pub(crate) mod host_gw;
pub mod policy;
pub(crate) mod routed;

pub use routed::{POD_DEVICE, PodNetworkCleanup, PodRoute, RTPROT_WASMKUBE, cleanup};

/// How pods get their IPs (`--pod-network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodNetwork {
    /// `127.<node index>.x.y`, reachable only on this machine; needs nothing.
    #[default]
    Loopback,
    /// From the Node's `spec.podCIDR`, each a `/32` on the pod device (`wasmkube0`), with host-gw routes to
    /// the other Nodes' pod CIDRs; needs CAP_NET_ADMIN and node IPAM in the controller-manager.
    Routed,
}

/// Why a pod IP cannot be had or a port cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The node index is outside 1-254.
    #[error("node index {0} is out of range (1-254): node n owns 127.n.0.0/16")]
    NodeIndex(u8),
    /// The pod CIDR is not usable.
    #[error("{base}/{prefix} is not a usable pod CIDR (prefix 8-30)")]
    Cidr {
        /// The network address.
        base: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
    /// Every address of the node's range is in use.
    #[error("no pod IP is free in {cidr} ({used} in use)")]
    Exhausted {
        /// The node's pod CIDR.
        cidr: String,
        /// How many addresses are allocated.
        used: usize,
    },
    /// An address to restore is outside the node's range or belongs to another pod.
    #[error("pod IP {ip} cannot be restored for pod {uid}: {reason}")]
    Restore {
        /// The address.
        ip: IpAddr,
        /// The pod.
        uid: String,
        /// Why not.
        reason: String,
    },
    /// The kernel refused a change of the routed pod network.
    #[error(
        "{what}: permission denied; the routed pod network needs CAP_NET_ADMIN: run the \
         agent as root (or give it the capability) or use --pod-network loopback"
    )]
    Permission {
        /// What was being done.
        what: String,
    },
    /// A netlink request failed.
    #[error("{what}: {reason}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        reason: String,
    },
    /// The gateway of a host-gw route is not on a directly connected network.
    #[error(
        "cannot add the route {route}: the node address {} is not on a network this machine \
         is directly connected to (host-gw routing needs every node on one L2 segment)",
        route.gateway
    )]
    Gateway {
        /// The route.
        route: PodRoute,
    },
    /// A route to a node's pod CIDR exists that the agent did not make.
    #[error(
        "a route to {}/{} exists that wasmkube did not make (it has another protocol than \
         {RTPROT_WASMKUBE}); leaving it alone: remove it to let the agent route the pod CIDR \
         via {}",
        route.network,
        route.prefix,
        route.gateway
    )]
    RouteTaken {
        /// The route the agent wanted.
        route: PodRoute,
    },
    /// The node has no pod CIDR yet (routed mode).
    #[error(
        "this node has no spec.podCIDR yet: the controller-manager's node IPAM assigns one \
         (--cluster-cidr); pods wait until it has"
    )]
    NoPodCidr,
    /// The address cannot be bound on this machine.
    #[error(
        "cannot bind {addr}: {source}{}",
        if source.kind() == std::io::ErrorKind::AddrNotAvailable {
            " (this system routes only 127.0.0.1 to loopback; add the address, e.g. on macOS \
             `sudo ifconfig lo0 alias <ip>`)"
        } else {
            ""
        }
    )]
    Bind {
        /// The address and port.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Hands out pod IPs from this node's range, one per pod UID.
#[derive(Debug)]
pub(crate) struct PodIpAllocator {
    base: u32,
    prefix: u8,
    /// Assignable addresses: `base + 1 ..= base + hosts`.
    hosts: u32,
    inner: Mutex<Allocations>,
}

#[derive(Debug, Default)]
struct Allocations {
    by_uid: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, String>,
}

impl PodIpAllocator {
    /// The allocator of node number `node_index` (1-254) on a single machine: `127.<n>.0.0/16`.
    /// Checks once that addresses of the range can be bound here (all of 127/8 on Linux; other
    /// systems need loopback aliases, which the error explains).
    pub(crate) fn new(node_index: u8) -> Result<PodIpAllocator, NetworkError> {
        if node_index == 0 || node_index == 255 {
            return Err(NetworkError::NodeIndex(node_index));
        }
        check_bindable(IpAddr::V4(Ipv4Addr::new(127, node_index, 0, 1)))?;
        PodIpAllocator::with_cidr(Ipv4Addr::new(127, node_index, 0, 0), 16)
    }

    /// An allocator over an arbitrary pod CIDR (a node's routed `spec.podCIDR`). Its network
    /// and broadcast addresses are never handed out.
    pub(crate) fn with_cidr(base: Ipv4Addr, prefix: u8) -> Result<PodIpAllocator, NetworkError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetworkError::Cidr { base, prefix });
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(PodIpAllocator {
            base: u32::from(base) & mask,
            prefix,
            hosts: (1u32 << (32 - prefix)) - 2,
            inner: Mutex::new(Allocations::default()),
        })
    }

    /// [`with_cidr`](Self::with_cidr) for a pod CIDR shared with the node's container
    /// runtime: wasm pods get the lower half (below the CNI bridge's gateway, the first
    /// address of the upper half: [`cni::CniNetwork::upper_half`]).
    pub(crate) fn with_cidr_shared(
        base: Ipv4Addr,
        prefix: u8,
    ) -> Result<PodIpAllocator, NetworkError> {
        let mut allocator = PodIpAllocator::with_cidr(base, prefix)?;
        allocator.hosts = (1u32 << (32 - prefix)) / 2 - 1;
        Ok(allocator)
    }

    /// The node's pod CIDR, e.g. `127.1.0.0/16` (what `node.spec.podCIDR` would say).
    pub(crate) fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    /// Whether `ip` is an assignable address of this node's range.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        offset > 0 && offset <= self.hosts
    }

    /// The IP of pod `pod_uid`: the one it already has, else a free one (the first candidate
    /// derived from the UID, then the next free ones in order).
    pub(crate) fn allocate(&self, pod_uid: &str) -> Result<Ipv4Addr, NetworkError> {
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ip) = a.by_uid.get(pod_uid) {
            return Ok(*ip);
        }
        let hosts = self.hosts;
        let hash = Sha256::digest(pod_uid.as_bytes());
        let first = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]) % hosts;
        for i in 0..hosts {
            let ip = Ipv4Addr::from(self.base + 1 + (first + i) % hosts);
            if let std::collections::hash_map::Entry::Vacant(free) = a.by_ip.entry(ip) {
                free.insert(pod_uid.to_string());
                a.by_uid.insert(pod_uid.to_string(), ip);
                return Ok(ip);
            }
        }
        Err(NetworkError::Exhausted {
            cidr: self.cidr(),
            used: a.by_ip.len(),
        })
    }

    /// Re-registers pod `pod_uid`'s IP from its `status.podIP` (after an agent restart).
    /// Restoring the same pair again is fine; an address outside the range or held by
    /// another pod is an error (allocate a fresh one then).
    pub(crate) fn restore(&self, pod_uid: &str, ip: IpAddr) -> Result<(), NetworkError> {
        let error = |reason: &str| NetworkError::Restore {
            ip,
            uid: pod_uid.to_string(),
            reason: reason.to_string(),
        };
        let IpAddr::V4(v4) = ip else {
            return Err(error("it is not an IPv4 address"));
        };
        if !self.contains(v4) {
            return Err(error(&format!(
                "it is not in this node's range {}",
                self.cidr()
            )));
        }
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match (a.by_ip.get(&v4), a.by_uid.get(pod_uid)) {
            (Some(owner), _) if owner != pod_uid => Err(error("another pod has it")),
            (_, Some(current)) if *current != v4 => Err(error("the pod already has another IP")),
            _ => {
                a.by_ip.insert(v4, pod_uid.to_string());
                a.by_uid.insert(pod_uid.to_string(), v4);
                Ok(())
            }
        }
    }

    #[cfg(test)]
    /// The pod's current IP, if it has one.
    pub(crate) fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_uid
            .get(pod_uid)
            .copied()
    }

    /// Frees the pod's IP (when the pod is gone) and says which it was. Unknown UIDs are
    /// ignored.
    pub(crate) fn release(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let ip = a.by_uid.remove(pod_uid)?;
        a.by_ip.remove(&ip);
        Some(ip)
    }

    /// Whether some pod holds `ip`.
    pub(crate) fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_ip
            .contains_key(&ip)
    }
}

/// Checks that `ip` can be bound on this machine (binds an ephemeral port and lets it go).
pub(crate) fn check_bindable(ip: IpAddr) -> Result<(), NetworkError> {
    let addr = SocketAddr::new(ip, 0);
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| NetworkError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_unique_in_the_node_range_and_deterministic_first() {
        let pool = PodIpAllocator::new(3).expect("pool");
        assert_eq!(pool.cidr(), "127.3.0.0/16");
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let ip = pool.allocate(&format!("uid-{i}")).expect("allocate");
            assert!(pool.contains(ip), "{ip}");
            assert_eq!(ip.octets()[..2], [127, 3]);
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(
            pool.allocate("uid-7").expect("again"),
            pool.get("uid-7").expect("has")
        );
        let fresh = PodIpAllocator::new(3).expect("pool");
        assert_eq!(
            fresh.allocate("uid-0").expect("a"),
            pool.get("uid-0").expect("b")
        );
        assert!(matches!(
            PodIpAllocator::new(0),
            Err(NetworkError::NodeIndex(0))
        ));
    }

    #[test]
    fn released_ips_are_reused_and_a_small_range_runs_out() {
        let pool = PodIpAllocator::with_cidr(Ipv4Addr::new(10, 244, 1, 0), 30).expect("pool");
        let a = pool.allocate("a").expect("a");
        let b = pool.allocate("b").expect("b");
        assert_ne!(a, b);
        assert!(matches!(
            pool.allocate("c"),
            Err(NetworkError::Exhausted { used: 2, .. })
        ));
        pool.release("a");
        assert_eq!(pool.allocate("c").expect("c"), a);
        assert!(!pool.contains(Ipv4Addr::new(10, 244, 1, 0)));
        assert!(!pool.contains(Ipv4Addr::new(10, 244, 1, 3)));
    }

    #[test]
    fn restoring_status_ips_keeps_them_and_rejects_conflicts() {
        let pool = PodIpAllocator::new(1).expect("pool");
        let ip = IpAddr::V4(Ipv4Addr::new(127, 1, 9, 9));
        pool.restore("old-pod", ip).expect("restore");
        pool.restore("old-pod", ip).expect("idempotent");
        assert_eq!(pool.get("old-pod"), Some(Ipv4Addr::new(127, 1, 9, 9)));
        assert!(pool.restore("other", ip).is_err());
        assert!(
            pool.restore("x", IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1)))
                .is_err()
        );
        for i in 0..500 {
            assert_ne!(IpAddr::V4(pool.allocate(&format!("n{i}")).expect("ip")), ip);
        }
    }
}
