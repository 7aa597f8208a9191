//! A pod's sandbox: its IP, its volumes and its probes, as the worker sees them.
//!
//! This is the seam between the pod lifecycle and the leaf modules [`crate::network`],
//! [`crate::volumes`] and [`crate::probes`]; the worker only calls what is here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::network::{NetworkError, PodIpAllocator};
use crate::runtime::Mount;

/// Pod IPs of this node (see [`crate::network`] for the model).
#[derive(Debug)]
pub struct Network {
    allocator: PodIpAllocator,
}

impl Network {
    /// The pod IPs of node number `node_index` (1-254): `127.<node_index>.x.y`.
    pub fn new(node_index: u8) -> Result<Network, NetworkError> {
        Ok(Network {
            allocator: PodIpAllocator::new(node_index)?,
        })
    }

    /// Re-registers the IP a pod's status shows (after an agent restart), so no other pod
    /// gets it. Errors are ignored: the pod then gets a fresh IP.
    pub fn restore(&self, uid: &str, ip: IpAddr) {
        if let Err(e) = self.allocator.restore(uid, ip) {
            tracing::debug!(error = %e, "not restoring a pod IP");
        }
    }

    /// The IP of pod `uid`: `preferred` (the one its status shows) when it is still its own,
    /// else a free one.
    pub fn allocate(&self, uid: &str, preferred: Option<IpAddr>) -> Result<IpAddr, NetworkError> {
        if let Some(ip) = preferred
            && self.allocator.restore(uid, ip).is_ok()
        {
            return Ok(ip);
        }
        self.allocator.allocate(uid).map(IpAddr::V4)
    }

    /// Frees pod `uid`'s IP.
    pub fn release(&self, uid: &str) {
        self.allocator.release(uid);
    }
}

/// A pod's prepared volumes.
#[derive(Debug, Default, Clone)]
pub struct Volumes {
    dirs: HashMap<String, PathBuf>,
}

impl Volumes {
    /// Prepares every volume of `pod` under `pod_dir/volumes` (emptyDir as a directory,
    /// hostPath as given). Errors are the `FailedMount` message.
    pub async fn prepare(
        _client: &kube::Client,
        pod: &Pod,
        pod_dir: &Path,
    ) -> Result<Volumes, String> {
        let mut dirs = HashMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let dir = if let Some(hp) = &v.host_path {
                PathBuf::from(&hp.path)
            } else {
                let d = pod_dir.join("volumes").join(&v.name);
                tokio::fs::create_dir_all(&d).await.map_err(|e| {
                    format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name)
                })?;
                d
            };
            dirs.insert(v.name.clone(), dir);
        }
        Ok(Volumes { dirs })
    }

    /// The mounts of `container`.
    pub fn mounts_for(&self, container: &Container) -> Vec<Mount> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let host = self.dirs.get(&m.name)?;
                let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => host.join(sub),
                    None => host.clone(),
                };
                Some(Mount {
                    host,
                    guest: m.mount_path.clone(),
                    read_only: m.read_only == Some(true),
                })
            })
            .collect()
    }
}
