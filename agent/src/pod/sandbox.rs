//! A pod's network sandbox as the worker sees it: its IP, kept across agent restarts, and in
//! the routed pod network its address on the pod device.
//!
//! A thin layer over [`crate::network`]: the worker asks for the IP the pod's status already
//! shows, and gets a fresh one only when that is not possible.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use crate::network::routed::Netlink;
use crate::network::{NetworkError, PodIpAllocator};

/// Pod IPs of this node (see [`crate::network`] for the model).
#[derive(Debug)]
pub(crate) enum Network {
    /// `127.<node index>.x.y`.
    Loopback(PodIpAllocator),
    /// From the Node's pod CIDR, known once node IPAM assigned it.
    Routed {
        /// The kernel's side: the pod device and the routes.
        netlink: Netlink,
        /// Set once from the Node's `spec.podCIDR`.
        allocator: OnceLock<PodIpAllocator>,
    },
}

impl Network {
    /// The pod IPs of node number `node_index` (1-254): `127.<node_index>.x.y`.
    pub(crate) fn loopback(node_index: u8) -> Result<Network, NetworkError> {
        Ok(Network::Loopback(PodIpAllocator::new(node_index)?))
    }

    /// The routed pod network: makes the pod device (needs CAP_NET_ADMIN); pod IPs come once
    /// [`Network::set_pod_cidr`] was called.
    pub(crate) async fn routed() -> Result<Network, NetworkError> {
        Ok(Network::Routed {
            netlink: Netlink::open().await?,
            allocator: OnceLock::new(),
        })
    }

    /// The netlink side of the routed pod network (`None` in loopback mode).
    pub(crate) fn netlink(&self) -> Option<&Netlink> {
        match self {
            Network::Loopback(_) => None,
            Network::Routed { netlink, .. } => Some(netlink),
        }
    }

    /// Sets the routed network's pod CIDR (the Node's `spec.podCIDR`); wasm pods get only
    /// its lower half when `shared` (the container runtime's CNI gets the upper half). Later
    /// calls change nothing: a Node's pod CIDR is immutable.
    pub(crate) fn set_pod_cidr(
        &self,
        network: Ipv4Addr,
        prefix: u8,
        shared: bool,
    ) -> Result<(), NetworkError> {
        if let Network::Routed { allocator, .. } = self
            && allocator.get().is_none()
        {
            let _ = allocator.set(if shared {
                PodIpAllocator::with_cidr_shared(network, prefix)?
            } else {
                PodIpAllocator::with_cidr(network, prefix)?
            });
        }
        Ok(())
    }

    fn allocator(&self) -> Result<&PodIpAllocator, NetworkError> {
        match self {
            Network::Loopback(allocator) => Ok(allocator),
            Network::Routed { allocator, .. } => allocator.get().ok_or(NetworkError::NoPodCidr),
        }
    }

    /// Re-registers the IP a pod's status shows (after an agent restart), so no other pod
    /// gets it. Errors are ignored: the pod then gets a fresh IP.
    pub(crate) fn restore(&self, uid: &str, ip: IpAddr) {
        if let Err(e) = self.allocator().and_then(|a| a.restore(uid, ip)) {
            tracing::debug!(error = %e, "not restoring a pod IP");
        }
    }

    /// The IP of pod `uid`: `preferred` (the one its status shows) when it is still its own,
    /// else a free one. In the routed network the address is on the pod device when this
    /// returns.
    pub(crate) async fn allocate(
        &self,
        uid: &str,
        preferred: Option<IpAddr>,
    ) -> Result<IpAddr, NetworkError> {
        let allocator = self.allocator()?;
        let ip = match preferred {
            Some(IpAddr::V4(ip)) if allocator.restore(uid, IpAddr::V4(ip)).is_ok() => ip,
            _ => allocator.allocate(uid)?,
        };
        if let Network::Routed { netlink, .. } = self
            && let Err(e) = netlink.add_pod_address(ip).await
        {
            allocator.release(uid);
            return Err(e);
        }
        Ok(IpAddr::V4(ip))
    }

    /// Frees pod `uid`'s IP (and takes it off the pod device).
    pub(crate) async fn release(&self, uid: &str) {
        let Ok(allocator) = self.allocator() else {
            return;
        };
        let Some(ip) = allocator.release(uid) else {
            return;
        };
        if let Network::Routed { netlink, .. } = self
            && let Err(e) = netlink.remove_pod_address(ip).await
        {
            tracing::warn!(error = %e, %ip, "removing a pod IP from the pod device failed");
        }
    }

    /// Takes every address off the pod device that no pod holds (those of pods that went
    /// while the agent was down). Call it after [`Network::restore`]-ing every pod's IP and
    /// before any pod is allocated one.
    pub(crate) async fn remove_stale_addresses(&self) {
        let Network::Routed { netlink, .. } = self else {
            return;
        };
        let held = |ip: Ipv4Addr| self.allocator().is_ok_and(|a| a.is_allocated(ip));
        match netlink.pod_addresses().await {
            Ok(addresses) => {
                for ip in addresses.into_iter().filter(|ip| !held(*ip)) {
                    tracing::info!(%ip, "removing a stale pod IP from the pod device");
                    if let Err(e) = netlink.remove_pod_address(ip).await {
                        tracing::warn!(error = %e, %ip, "removing a stale pod IP failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing the pod device's addresses failed"),
        }
    }
}
