//! The revision of a DaemonSet's pod template: the `controller-revision-hash` label its pods
//! carry, which says whether a pod runs the current template.
//!
//! As in Kubernetes, it is the pod-template hash (`wasmkube_api::pod_template_hash`, the
//! hash Deployments name their ReplicaSets by) of the DaemonSet's template with its
//! `status.collisionCount`.

use k8s_openapi::api::apps::v1::DaemonSet;
use wasmkube_api::pod_template_hash;

/// The label with a daemon pod's template revision.
pub(crate) const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The revision hash of the DaemonSet's current pod template.
pub(crate) fn template_hash(ds: &DaemonSet) -> String {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    pod_template_hash(&template, collisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn ds(image: &str) -> DaemonSet {
        DaemonSet {
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DaemonSetSpec::default()
            }),
            ..DaemonSet::default()
        }
    }

    #[test]
    fn equal_templates_hash_alike_and_changed_ones_differ() {
        assert_eq!(template_hash(&ds("a:1")), template_hash(&ds("a:1")));
        assert_ne!(template_hash(&ds("a:1")), template_hash(&ds("a:2")));
    }

    #[test]
    fn the_revision_is_the_pod_template_hash_with_the_collision_count() {
        let mut d = ds("a:1");
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        assert_eq!(template_hash(&d), pod_template_hash(&template, None));
        d.status = Some(DaemonSetStatus {
            collision_count: Some(2),
            ..DaemonSetStatus::default()
        });
        assert_eq!(template_hash(&d), pod_template_hash(&template, Some(2)));
    }
}
