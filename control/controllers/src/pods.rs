//! Pods made from templates and owned by controllers, as kube-controller-manager's
//! `controller_utils` does it: what the ReplicaSet, Job and DaemonSet controllers share.
//!
//! - [`controller_ref`]: the `ownerReference` a controller puts on what it creates
//!   (`controller: true`, `blockOwnerDeletion: true`).
//! - [`pod_from_template`]: a Pod from a `PodTemplateSpec`, named `<owner>-<random>`.
//! - [`is_active`], [`is_ready`], [`is_available`]: the pod predicates controllers count by.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

/// The `ownerReference` a controller sets on objects it creates: it names `owner` as the
/// managing controller and makes foreground deletion of the owner wait for the object.
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A Pod made from `template` in `namespace`, named by the apiserver from
/// `generate_name` (e.g. `web-7d4b9c-`), owned by `owner`. Labels, annotations,
/// finalizers and the spec come from the template, as Kubernetes' `GetPodFromTemplate`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The prefix Kubernetes gives generated names: `<name>-`, with `name` cut so that the
/// apiserver's 5 random characters still fit in 63.
pub fn generate_name_prefix(name: &str) -> String {
    const MAX_PREFIX: usize = 63 - 5 - 1;
    let mut cut = name.len().min(MAX_PREFIX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-", &name[..cut])
}

/// Whether the pod counts towards a controller's replicas: not finished and not being
/// deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod's `Ready` condition last became `True`, if it is `True`.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now` (Kubernetes'
/// `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            let ready_for = now.as_second().saturating_sub(since.as_second());
            ready_for >= i64::from(min_ready_seconds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod_ready_at(seconds: i64) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Timestamp::from_second(seconds).ok().map(Time),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn controller_ref_names_the_owner_as_blocking_controller() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        };
        let r = controller_ref(&rs);
        assert_eq!(r.api_version, "apps/v1");
        assert_eq!(r.kind, "ReplicaSet");
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
        let meta = ObjectMeta {
            owner_references: Some(vec![r]),
            ..ObjectMeta::default()
        };
        assert!(is_controlled_by(&meta, "u1"));
        assert!(!is_controlled_by(&meta, "u2"));
    }

    #[test]
    fn generated_name_prefixes_leave_room_for_the_random_suffix() {
        assert_eq!(generate_name_prefix("web"), "web-");
        let long = "a".repeat(80);
        assert_eq!(generate_name_prefix(&long).len(), 58);
    }

    #[test]
    fn finished_and_deleting_pods_are_not_active() {
        let mut pod = pod_ready_at(0);
        assert!(is_active(&pod));
        if let Some(s) = pod.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        assert!(!is_active(&pod));
        let mut deleting = pod_ready_at(0);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!is_active(&deleting));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod = pod_ready_at(100);
        let at = |s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        assert!(is_available(&pod, 0, at(100)));
        assert!(!is_available(&pod, 10, at(105)));
        assert!(is_available(&pod, 10, at(110)));
        assert!(!is_available(&Pod::default(), 0, at(110)));
    }
}
