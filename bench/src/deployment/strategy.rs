//! The rolling update's bounds as Kubernetes resolves them, and `kubectl rollout status`'s
//! notion of a finished rollout, for `wasmkube-bench deployment`.

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Parses `--max-surge` / `--max-unavailable`: `N` or `P%`.
pub(crate) fn parse_int_or_percent(text: &str) -> Result<IntOrString, String> {
    if let Some(percent) = text.strip_suffix('%') {
        return match percent.parse::<u32>() {
            Ok(p) if p <= 100 => Ok(IntOrString::String(text.to_owned())),
            _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
        };
    }
    text.parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
        .map(IntOrString::Int)
        .ok_or_else(|| format!("{text:?} is neither a number >= 0 nor a percentage"))
}

/// maxSurge and maxUnavailable in pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Pods allowed above the replicas.
    pub(crate) max_surge: usize,
    /// Pods allowed below the replicas.
    pub(crate) max_unavailable: usize,
}

impl Bounds {
    /// Kubernetes' `ResolveFenceposts`: a surge percentage rounds up, an unavailable one
    /// down; both zero makes maxUnavailable 1.
    pub(crate) fn resolve(
        surge: &IntOrString,
        unavailable: &IntOrString,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let max_surge = scaled(surge, replicas, true).context("--max-surge")?;
        let mut max_unavailable =
            scaled(unavailable, replicas, false).context("--max-unavailable")?;
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Ok(Self {
            max_surge,
            max_unavailable: max_unavailable.min(replicas),
        })
    }

    /// The fewest Ready pods the strategy allows.
    pub(crate) fn min_ready(self, replicas: usize) -> usize {
        replicas.saturating_sub(self.max_unavailable)
    }

    /// The most pods the strategy allows.
    pub(crate) fn max_pods(self, replicas: usize) -> usize {
        replicas + self.max_surge
    }
}

fn scaled(value: &IntOrString, replicas: usize, round_up: bool) -> anyhow::Result<usize> {
    match value {
        IntOrString::Int(n) => usize::try_from(*n).context("negative"),
        IntOrString::String(text) => {
            let Some(percent) = text.strip_suffix('%').and_then(|p| p.parse::<usize>().ok()) else {
                bail!("{text:?} is not a percentage");
            };
            let product = percent * replicas;
            Ok(if round_up {
                product.div_ceil(100)
            } else {
                product / 100
            })
        }
    }
}

/// Whether `kubectl rollout status` would say the rollout of `generation` (or later) is
/// complete: the controller observed it, and updatedReplicas == availableReplicas ==
/// replicas == spec.replicas (kubectl's `DeploymentStatusViewer`).
pub(crate) fn rollout_complete(d: &Deployment, generation: i64) -> bool {
    if d.metadata.generation.unwrap_or(0) < generation {
        return false;
    }
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return false;
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    updated >= desired && replicas <= updated && available >= updated
}

/// The Deployment's `status.readyReplicas`.
pub(crate) fn ready_replicas(d: &Deployment) -> usize {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn pct(text: &str) -> IntOrString {
        IntOrString::String(text.to_owned())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let b = Bounds::resolve(&pct("25%"), &pct("25%"), 1000).expect("resolves");
        assert_eq!((b.max_surge, b.max_unavailable), (250, 250));
        assert_eq!((b.min_ready(1000), b.max_pods(1000)), (750, 1250));
        let b = Bounds::resolve(&pct("25%"), &pct("25%"), 3).expect("resolves");
        assert_eq!((b.max_surge, b.max_unavailable), (1, 0));
    }

    #[test]
    fn zero_surge_and_zero_unavailable_allow_one_unavailable() {
        let b = Bounds::resolve(&IntOrString::Int(0), &pct("0%"), 10).expect("resolves");
        assert_eq!((b.max_surge, b.max_unavailable), (0, 1));
    }

    #[test]
    fn strategy_flags_take_numbers_and_percentages() {
        assert_eq!(parse_int_or_percent("3"), Ok(IntOrString::Int(3)));
        assert_eq!(parse_int_or_percent("25%"), Ok(pct("25%")));
        assert!(parse_int_or_percent("-1").is_err());
        assert!(parse_int_or_percent("101%").is_err());
        assert!(parse_int_or_percent("x%").is_err());
    }

    fn deployment(generation: i64, observed: i64, counts: (i32, i32, i32)) -> Deployment {
        let (replicas, updated, available) = counts;
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(10),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    #[test]
    fn a_rollout_is_complete_once_observed_with_every_replica_updated_and_available() {
        assert!(rollout_complete(&deployment(2, 2, (10, 10, 10)), 2));
        // Not observed yet, or an older version of the object.
        assert!(!rollout_complete(&deployment(2, 1, (10, 10, 10)), 2));
        assert!(!rollout_complete(&deployment(1, 1, (10, 10, 10)), 2));
        // Updated replicas missing, old replicas left, updated ones not available.
        assert!(!rollout_complete(&deployment(2, 2, (10, 9, 9)), 2));
        assert!(!rollout_complete(&deployment(2, 2, (12, 10, 10)), 2));
        assert!(!rollout_complete(&deployment(2, 2, (10, 10, 8)), 2));
    }
}
