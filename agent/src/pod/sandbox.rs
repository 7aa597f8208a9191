//! A pod's network sandbox as the worker sees it: its IP, kept across agent restarts.
//!
//! A thin layer over [`crate::network`]'s allocator: the worker asks for the IP the pod's
//! status already shows, and gets a fresh one only when that is not possible.

use std::net::IpAddr;

use crate::network::{NetworkError, PodIpAllocator};

/// Pod IPs of this node (see [`crate::network`] for the model).
#[derive(Debug)]
pub(crate) struct Network {
    allocator: PodIpAllocator,
}

impl Network {
    /// The pod IPs of node number `node_index` (1-254): `127.<node_index>.x.y`.
    pub(crate) fn new(node_index: u8) -> Result<Network, NetworkError> {
        Ok(Network {
            allocator: PodIpAllocator::new(node_index)?,
        })
    }

    /// Re-registers the IP a pod's status shows (after an agent restart), so no other pod
    /// gets it. Errors are ignored: the pod then gets a fresh IP.
    pub(crate) fn restore(&self, uid: &str, ip: IpAddr) {
        if let Err(e) = self.allocator.restore(uid, ip) {
            tracing::debug!(error = %e, "not restoring a pod IP");
        }
    }

    /// The IP of pod `uid`: `preferred` (the one its status shows) when it is still its own,
    /// else a free one.
    pub(crate) fn allocate(
        &self,
        uid: &str,
        preferred: Option<IpAddr>,
    ) -> Result<IpAddr, NetworkError> {
        if let Some(ip) = preferred
            && self.allocator.restore(uid, ip).is_ok()
        {
            return Ok(ip);
        }
        self.allocator.allocate(uid).map(IpAddr::V4)
    }

    /// Frees pod `uid`'s IP.
    pub(crate) fn release(&self, uid: &str) {
        self.allocator.release(uid);
    }
}
