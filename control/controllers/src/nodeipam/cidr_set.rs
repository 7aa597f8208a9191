//! The pod CIDRs of one cluster CIDR, as Kubernetes' `nodeipam/ipam/cidrset`: the cluster
//! CIDR cut into subnets of the node mask size, each used at most once. Allocation goes
//! round-robin from the last one handed out, so a CIDR released by a deleted Node is taken
//! again only after the others (a new Node does not inherit the old one's address space
//! while stale routes may still point at it).
//!
//! The parsing, containment and subnet enumeration are `ipnet`'s; a subnet's index is its
//! offset from the cluster CIDR's network address, shifted by the host bits.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// Kubernetes' limit: at most 2^16 subnets per cluster CIDR.
const MAX_SUBNET_BITS: u8 = 16;

/// Why a cluster CIDR and mask size do not make a set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CidrSetError {
    /// The node mask is shorter than the cluster CIDR's, or longer than an address.
    #[error(
        "--node-cidr-mask-size {mask} must be between the --cluster-cidr prefix length {prefix} and {max}"
    )]
    MaskOutOfRange {
        /// The node mask size.
        mask: u8,
        /// The cluster CIDR's prefix length.
        prefix: u8,
        /// The address length in bits.
        max: u8,
    },
    /// More subnets than Kubernetes allows (2^16).
    #[error(
        "--node-cidr-mask-size {mask} cuts --cluster-cidr {cidr} into 2^{bits} pod CIDRs; at most 2^16 are allowed (use a mask of at most /{limit})"
    )]
    TooManySubnets {
        /// The node mask size.
        mask: u8,
        /// The cluster CIDR.
        cidr: IpNet,
        /// log2 of the subnet count.
        bits: u8,
        /// The longest mask allowed.
        limit: u8,
    },
}

/// The pod CIDRs of a cluster CIDR and which are taken.
#[derive(Debug, Clone)]
pub(crate) struct CidrSet {
    cluster: IpNet,
    mask: u8,
    count: u64,
    used: BTreeSet<u64>,
    /// Where the next search starts.
    next: u64,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl CidrSet {
    /// The set of `/mask` subnets of `cluster` (whose host bits are ignored).
    pub(crate) fn new(cluster: IpNet, mask: u8) -> Result<CidrSet, CidrSetError> {
        let cluster = cluster.trunc();
        let (prefix, max) = (cluster.prefix_len(), cluster.max_prefix_len());
        if mask < prefix || mask > max {
            return Err(CidrSetError::MaskOutOfRange { mask, prefix, max });
        }
        let bits = mask - prefix;
        if bits > MAX_SUBNET_BITS {
            return Err(CidrSetError::TooManySubnets {
                mask,
                cidr: cluster,
                bits,
                limit: prefix + MAX_SUBNET_BITS,
            });
        }
        Ok(CidrSet {
            cluster,
            mask,
            count: 1 << bits,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    /// The subnet at `index`.
    fn subnet(&self, index: u64) -> Option<IpNet> {
        self.cluster
            .subnets(self.mask)
            .ok()?
            .nth(usize::try_from(index).ok()?)
    }

    /// The indexes of the subnets `cidr` covers (a node CIDR of another size covers several,
    /// or lies inside one); empty when it is outside the cluster CIDR.
    fn indexes(&self, cidr: &IpNet) -> std::ops::Range<u64> {
        let cidr = cidr.trunc();
        let overlaps = self.cluster.contains(&cidr.network()) || cidr.contains(&self.cluster);
        if !overlaps || cidr.max_prefix_len() != self.cluster.max_prefix_len() {
            return 0..0;
        }
        let host_bits = u32::from(self.cluster.max_prefix_len() - self.mask);
        let base = to_u128(self.cluster.network());
        let index = |ip: IpAddr| -> u64 {
            let offset = to_u128(ip).saturating_sub(base) >> host_bits;
            u64::try_from(offset)
                .unwrap_or(u64::MAX)
                .min(self.count - 1)
        };
        index(cidr.network().max(self.cluster.network()))
            ..index(cidr.broadcast().min(self.cluster.broadcast())) + 1
    }

    /// Marks `cidr` (a Node's existing pod CIDR) as taken; `false` when it is outside the
    /// cluster CIDR (then it is not ours to manage).
    pub(crate) fn occupy(&mut self, cidr: &IpNet) -> bool {
        let range = self.indexes(cidr);
        let inside = !range.is_empty();
        self.used.extend(range);
        inside
    }

    /// Gives `cidr` back.
    pub(crate) fn release(&mut self, cidr: &IpNet) {
        for index in self.indexes(cidr) {
            self.used.remove(&index);
        }
    }

    /// The next free subnet, round-robin from the last one allocated; `None` when every
    /// subnet is taken.
    pub(crate) fn allocate(&mut self) -> Option<IpNet> {
        for step in 0..self.count {
            let index = (self.next + step) % self.count;
            if !self.used.contains(&index) {
                let subnet = self.subnet(index)?;
                self.used.insert(index);
                self.next = (index + 1) % self.count;
                return Some(subnet);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_are_handed_out_in_order_and_never_twice() {
        let mut set = CidrSet::new(net("10.42.0.0/16"), 24).unwrap();
        assert_eq!(set.allocate(), Some(net("10.42.0.0/24")));
        assert_eq!(set.allocate(), Some(net("10.42.1.0/24")));
        assert!(set.occupy(&net("10.42.2.0/24")));
        assert_eq!(set.allocate(), Some(net("10.42.3.0/24")));
    }

    #[test]
    fn a_released_subnet_is_reused_once_the_others_are_taken() {
        let mut set = CidrSet::new(net("10.42.0.0/23"), 24).unwrap();
        let a = set.allocate().unwrap();
        let b = set.allocate().unwrap();
        assert_ne!(a, b);
        assert_eq!(set.allocate(), None);
        set.release(&a);
        assert_eq!(set.allocate(), Some(a));
        assert_eq!(set.allocate(), None);
    }

    #[test]
    fn cidrs_outside_the_cluster_cidr_are_not_ours() {
        let mut set = CidrSet::new(net("10.42.0.0/16"), 24).unwrap();
        assert!(!set.occupy(&net("10.43.0.0/24")));
        assert!(!set.occupy(&net("fd00::/64")));
        // A bigger node CIDR takes every subnet it covers.
        assert!(set.occupy(&net("10.42.0.0/23")));
        assert_eq!(set.allocate(), Some(net("10.42.2.0/24")));
    }

    #[test]
    fn ipv6_cluster_cidrs_work_alike() {
        let mut set = CidrSet::new(net("fd42::/56"), 64).unwrap();
        assert_eq!(set.allocate(), Some(net("fd42::/64")));
        assert_eq!(set.allocate(), Some(net("fd42:0:0:1::/64")));
    }

    #[test]
    fn masks_outside_the_cluster_cidr_or_with_too_many_subnets_are_refused() {
        assert_eq!(
            CidrSet::new(net("10.42.0.0/16"), 8).unwrap_err(),
            CidrSetError::MaskOutOfRange {
                mask: 8,
                prefix: 16,
                max: 32
            }
        );
        let err = CidrSet::new(net("10.0.0.0/8"), 28).unwrap_err();
        assert!(err.to_string().contains("at most /24"), "{err}");
        assert!(CidrSet::new(net("10.0.0.0/8"), 24).is_ok());
    }
}
