//! NodeResourcesFit and NodeResourcesBalancedAllocation.
//!
//! Fit: a node takes a pod when one more pod stays within `allocatable.pods` and each
//! requested resource fits in allocatable minus what the node's pods (bound and assumed)
//! already request. A node short of several resources reports each (`Insufficient cpu`,
//! `Insufficient memory`). These rejections are resolvable: freeing resources helps.
//!
//! Scores (kube-scheduler's defaults): *least allocated* prefers nodes with the most cpu and
//! memory left after placing the pod (counting a default request for containers that name
//! none, so best-effort pods spread too); *balanced allocation* prefers nodes where cpu and
//! memory end up used in the same proportion.

use std::borrow::Cow;

use crate::framework::{CycleState, FilterPlugin, MAX_NODE_SCORE, ScorePlugin, Unschedulable};
use crate::snapshot::{NodeInfo, PodInfo};

/// Checks requests against what is left on the node; scores by least allocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeResourcesFit;

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        _state: &CycleState,
    ) -> Result<(), Unschedulable> {
        let mut rejection: Option<Unschedulable> = None;
        let mut reject = |reason: Cow<'static, str>| {
            rejection = Some(match rejection.take() {
                None => Unschedulable::resolvable(reason),
                Some(r) => r.and(reason),
            });
        };
        let pods = i64::try_from(node.pods().len()).unwrap_or(i64::MAX);
        if pods.saturating_add(1) > node.allocatable.pods {
            reject("Too many pods".into());
        }
        let want = &pod.requests.resources;
        if !want.is_zero() {
            let have = &node.allocatable.resources;
            let used = &node.requested;
            let short = |want: i64, have: i64, used: i64| want > 0 && want > have - used;
            if short(want.milli_cpu, have.milli_cpu, used.milli_cpu) {
                reject("Insufficient cpu".into());
            }
            if short(want.memory, have.memory, used.memory) {
                reject("Insufficient memory".into());
            }
            if short(
                want.ephemeral_storage,
                have.ephemeral_storage,
                used.ephemeral_storage,
            ) {
                reject("Insufficient ephemeral-storage".into());
            }
            for (name, amount) in &want.scalar {
                if short(*amount, have.get(name), used.get(name)) {
                    reject(format!("Insufficient {name}").into());
                }
            }
        }
        match rejection {
            None => Ok(()),
            Some(rejection) => Err(rejection),
        }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    /// The mean over cpu and memory of the share left free after placing the pod.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _state: &CycleState) -> i64 {
        let have = &node.allocatable.resources;
        let resources = [
            (
                node.non_zero_milli_cpu
                    .saturating_add(pod.requests.non_zero_milli_cpu),
                have.milli_cpu,
            ),
            (
                node.non_zero_memory
                    .saturating_add(pod.requests.non_zero_memory),
                have.memory,
            ),
        ];
        let mut total = 0i64;
        let mut weights = 0i64;
        for (requested, capacity) in resources {
            if capacity == 0 {
                continue;
            }
            total += least_requested(requested, capacity);
            weights += 1;
        }
        if weights == 0 { 0 } else { total / weights }
    }
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    match (capacity - requested).checked_mul(MAX_NODE_SCORE) {
        Some(scaled) => scaled / capacity,
        // Beyond ~92 PB: widen rather than overflow.
        None => {
            let score = i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE)
                / i128::from(capacity);
            i64::try_from(score).unwrap_or(0)
        }
    }
}

/// Prefers nodes whose cpu and memory end up used in equal proportion.
#[derive(Clone, Copy, Debug, Default)]
pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, _state: &CycleState) -> i64 {
        let want = &pod.requests.resources;
        // Like kube-scheduler, pods requesting neither cpu nor memory are not scored.
        if want.milli_cpu == 0 && want.memory == 0 {
            return 0;
        }
        let have = &node.allocatable.resources;
        let fraction = |used: i64, want: i64, capacity: i64| -> Option<f64> {
            (capacity > 0).then(|| {
                let f = used.saturating_add(want) as f64 / capacity as f64;
                f.min(1.0)
            })
        };
        let fractions = [
            fraction(node.requested.milli_cpu, want.milli_cpu, have.milli_cpu),
            fraction(node.requested.memory, want.memory, have.memory),
        ];
        let std = match fractions {
            [Some(cpu), Some(memory)] => ((cpu - memory) / 2.0).abs(),
            _ => 0.0,
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, node, node_info, pod, pod_with_requests};
    use std::sync::Arc;

    fn with_pods(mut n: NodeInfo, pods: &[(&str, &str, &str)]) -> NodeInfo {
        for (name, cpu, memory) in pods {
            n.add_pod(Arc::new(info(pod_with_requests(name, cpu, memory))));
        }
        n
    }

    fn fit(p: &PodInfo, n: &NodeInfo) -> Result<(), Unschedulable> {
        NodeResourcesFit.filter(p, n, &CycleState::new())
    }

    #[test]
    fn a_pod_fits_in_what_is_left() {
        let n = with_pods(node_info(node("n1", "2", "4Gi")), &[("a", "1", "2Gi")]);
        assert!(fit(&info(pod_with_requests("p", "1", "2Gi")), &n).is_ok());
    }

    #[test]
    fn every_short_resource_is_named() {
        let n = with_pods(node_info(node("n1", "2", "4Gi")), &[("a", "1500m", "3Gi")]);
        assert_eq!(
            fit(&info(pod_with_requests("p", "1", "2Gi")), &n),
            Err(Unschedulable::resolvable("Insufficient cpu").and("Insufficient memory"))
        );
    }

    #[test]
    fn the_pod_count_limit_applies_even_without_requests() {
        let mut raw = node("n1", "2", "4Gi");
        if let Some(alloc) = raw.status.as_mut().and_then(|s| s.allocatable.as_mut()) {
            alloc.insert(
                "pods".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        }
        let n = with_pods(node_info(raw), &[("a", "", "")]);
        assert_eq!(
            fit(&info(pod("p")), &n),
            Err(Unschedulable::resolvable("Too many pods"))
        );
    }

    #[test]
    fn extended_resources_must_be_offered() {
        let p = info(crate::testing::with_spec(pod("p"), |s| {
            s.containers[0].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(std::collections::BTreeMap::from([(
                    "example.com/gpu".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
                )])),
                ..Default::default()
            })
        }));
        let n = node_info(node("n1", "2", "4Gi"));
        assert_eq!(
            fit(&p, &n),
            Err(Unschedulable::resolvable("Insufficient example.com/gpu"))
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let p = info(pod_with_requests("p", "1", "1Gi"));
        let state = CycleState::new();
        let empty = node_info(node("n1", "4", "4Gi"));
        let busy = with_pods(node_info(node("n2", "4", "4Gi")), &[("a", "2", "2Gi")]);
        // (4-1)/4 -> 75 for both resources; (4-3)/4 -> 25.
        assert_eq!(NodeResourcesFit.score(&p, &empty, &state), 75);
        assert_eq!(NodeResourcesFit.score(&p, &busy, &state), 25);
    }

    #[test]
    fn pods_without_requests_still_spread_by_default_requests() {
        let p = info(pod("p"));
        let state = CycleState::new();
        let empty = node_info(node("n1", "1", "2000Mi"));
        let one = with_pods(node_info(node("n2", "1", "2000Mi")), &[("a", "", "")]);
        assert!(
            NodeResourcesFit.score(&p, &empty, &state) > NodeResourcesFit.score(&p, &one, &state)
        );
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        let p = info(pod_with_requests("p", "1", "1Gi"));
        let state = CycleState::new();
        // cpu 2/4, memory 2/4: perfectly balanced.
        let even = with_pods(node_info(node("n1", "4", "4Gi")), &[("a", "1", "1Gi")]);
        // cpu 4/4, memory 1/4: std 0.375 -> 62.
        let skewed = with_pods(node_info(node("n2", "4", "4Gi")), &[("a", "3", "")]);
        assert_eq!(BalancedAllocation.score(&p, &even, &state), 100);
        assert_eq!(BalancedAllocation.score(&p, &skewed, &state), 62);
        assert_eq!(
            BalancedAllocation.score(&info(pod("q")), &skewed, &state),
            0
        );
    }
}
