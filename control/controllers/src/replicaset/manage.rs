//! How many pods a sync creates or deletes: Kubernetes' `manageReplicas` arithmetic (at
//! most `burstReplicas` per sync). How they are created and deleted is
//! [`crate::pod_control`].

/// The most pods one sync creates or deletes (kube-controller-manager's `burstReplicas`).
pub(crate) const BURST_REPLICAS: usize = 500;

/// What a sync does about the number of pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Create this many pods.
    Create(usize),
    /// Delete this many pods.
    Delete(usize),
    /// The count is right.
    Nothing,
}

/// The plan for `active` owned pods when `replicas` are wanted, capped at `burst`.
pub(crate) fn plan(active: usize, replicas: i32, burst: usize) -> Plan {
    let wanted = usize::try_from(replicas).unwrap_or(0);
    if active < wanted {
        Plan::Create((wanted - active).min(burst))
    } else if active > wanted {
        Plan::Delete((active - wanted).min(burst))
    } else {
        Plan::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_difference_capped_by_the_burst() {
        assert_eq!(plan(0, 3, BURST_REPLICAS), Plan::Create(3));
        assert_eq!(plan(5, 1, BURST_REPLICAS), Plan::Delete(4));
        assert_eq!(plan(2, 2, BURST_REPLICAS), Plan::Nothing);
        assert_eq!(plan(0, 1000, BURST_REPLICAS), Plan::Create(500));
        assert_eq!(plan(1000, 0, BURST_REPLICAS), Plan::Delete(500));
        assert_eq!(plan(1, -1, BURST_REPLICAS), Plan::Delete(1));
    }
}
