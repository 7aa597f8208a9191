//! Which pods a ReplicaSet owns, adopts and releases (Kubernetes' `PodControllerRefManager`
//! `ClaimPods`), and the patches that adopt and release them.
//!
//! A pod is the ReplicaSet's when its controller `ownerReference` names the ReplicaSet's UID
//! and its labels match the selector. A pod the ReplicaSet controls that no longer matches is
//! released (its ownerReference removed) so another controller can take it; an orphan (no
//! controller at all) that matches and is not being deleted is adopted. Pods controlled by
//! anything else are never touched. A ReplicaSet being deleted neither adopts nor releases.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use wasmkube_api::selector::LabelSelector;

use crate::pods::{controller_of, controller_ref};

/// What a sync does with each pod of the ReplicaSet's namespace.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    /// Pods the ReplicaSet controls and that match its selector.
    pub(crate) owned: Vec<Arc<Pod>>,
    /// Orphans to adopt.
    pub(crate) adopt: Vec<Arc<Pod>>,
    /// Pods the ReplicaSet controls that no longer match its selector.
    pub(crate) release: Vec<Arc<Pod>>,
}

/// Sorts `pods` (the active pods of the ReplicaSet's namespace) into owned, to adopt and to
/// release.
pub(crate) fn claim_pods<'a, I>(rs: &ReplicaSet, selector: &LabelSelector, pods: I) -> Claim
where
    I: IntoIterator<Item = &'a Arc<Pod>>,
{
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let rs_deleting = rs.metadata.deletion_timestamp.is_some();
    let no_labels = BTreeMap::new();
    let mut claim = Claim::default();
    for pod in pods {
        let matches = selector.matches(pod.metadata.labels.as_ref().unwrap_or(&no_labels));
        match controller_of(&pod.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    claim.owned.push(pod.clone());
                } else if !rs_deleting {
                    claim.release.push(pod.clone());
                }
            }
            Some(_) => {}
            None => {
                if matches && !rs_deleting && pod.metadata.deletion_timestamp.is_none() {
                    claim.adopt.push(pod.clone());
                }
            }
        }
    }
    claim
}

/// The strategic merge patch that makes `rs` the controller of `pod` (Kubernetes'
/// `AdoptPod`): the owner reference merged by UID, and the pod's UID so the patch cannot
/// land on another pod of the same name.
pub(crate) fn adopt_patch(rs: &ReplicaSet, pod: &Pod) -> Value {
    json!({
        "metadata": {
            "ownerReferences": [controller_ref(rs)],
            "uid": pod.metadata.uid,
        }
    })
}

/// The strategic merge patch that removes `rs`'s owner reference from `pod` (Kubernetes'
/// `ReleasePod`).
pub(crate) fn release_patch(rs: &ReplicaSet, pod: &Pod) -> Value {
    json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": rs.metadata.uid}],
            "uid": pod.metadata.uid,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as K8sSelector, ObjectMeta, OwnerReference, Time,
    };
    use k8s_openapi::jiff::Timestamp;

    fn rs() -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        }
    }

    fn selector() -> LabelSelector {
        LabelSelector::from_k8s(&K8sSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: None,
        })
        .unwrap_or_else(|_| LabelSelector::nothing())
    }

    fn pod(name: &str, app: &str, controller_uid: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: controller_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: "x".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn matching_orphans_are_adopted_and_stray_pods_released() {
        let pods = vec![
            pod("mine", "web", Some("rs-uid")),
            pod("relabelled", "other", Some("rs-uid")),
            pod("orphan", "web", None),
            pod("unrelated-orphan", "db", None),
            pod("someone-elses", "web", Some("other-uid")),
        ];
        let claim = claim_pods(&rs(), &selector(), &pods);
        assert_eq!(names(&claim.owned), ["mine"]);
        assert_eq!(names(&claim.adopt), ["orphan"]);
        assert_eq!(names(&claim.release), ["relabelled"]);
    }

    #[test]
    fn a_deleting_replicaset_neither_adopts_nor_releases() {
        let mut rs = rs();
        rs.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let pods = vec![
            pod("mine", "web", Some("rs-uid")),
            pod("relabelled", "other", Some("rs-uid")),
            pod("orphan", "web", None),
        ];
        let claim = claim_pods(&rs, &selector(), &pods);
        assert_eq!(names(&claim.owned), ["mine"]);
        assert!(claim.adopt.is_empty());
        assert!(claim.release.is_empty());
    }

    #[test]
    fn orphans_being_deleted_are_not_adopted() {
        let mut orphan = (*pod("orphan", "web", None)).clone();
        orphan.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let claim = claim_pods(&rs(), &selector(), &[Arc::new(orphan)]);
        assert!(claim.adopt.is_empty());
    }

    #[test]
    fn adoption_and_release_patch_the_owner_reference_by_uid() {
        let orphan = pod("orphan", "web", None);
        let adopt = adopt_patch(&rs(), &orphan);
        let r = &adopt["metadata"]["ownerReferences"][0];
        assert_eq!(r["uid"], "rs-uid");
        assert_eq!(r["kind"], "ReplicaSet");
        assert_eq!(r["controller"], true);
        assert_eq!(adopt["metadata"]["uid"], "uid-orphan");
        let release = release_patch(&rs(), &orphan);
        assert_eq!(
            release["metadata"]["ownerReferences"][0],
            json!({"$patch": "delete", "uid": "rs-uid"})
        );
    }
}
