//! ControllerRevisions of a DaemonSet, as Kubernetes' `constructHistory` and
//! `cleanupHistory` keep them: one `apps/v1` ControllerRevision per template the DaemonSet
//! has had, named `<daemonset>-<hash>`, labelled with the template's labels and
//! `controller-revision-hash`, owned by the DaemonSet, holding the template as the patch
//! `{"spec":{"template":{..., "$patch":"replace"}}}` and a revision number. The current
//! template's revision always has the highest number (a template that comes back, e.g. after
//! `kubectl rollout undo`, is renumbered). `kubectl rollout history ds/x` lists them and
//! `kubectl rollout undo ds/x` applies one. Old revisions no live pod runs are deleted beyond
//! `revisionHistoryLimit` (10), oldest first.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::hash::REVISION_HASH_LABEL;
use crate::pods::controller_ref;

/// `spec.revisionHistoryLimit` when unset.
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// What to change in a DaemonSet's history.
#[derive(Debug, Default)]
pub(crate) struct RevisionPlan {
    /// The current template's revision, to create.
    pub(crate) create: Option<ControllerRevision>,
    /// The current template's revision exists but is not the newest: renumber it.
    pub(crate) renumber: Option<(String, i64)>,
    /// Old revisions to delete.
    pub(crate) delete: Vec<String>,
}

/// The name of the revision of `ds` with template hash `hash` (`ControllerRevisionName`).
pub(crate) fn revision_name(ds: &DaemonSet, hash: &str) -> String {
    let name = ds.name_any();
    let mut cut = name.len().min(223);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &name[..cut])
}

/// The revision's data: the template as a replacing patch (`getPatch`).
fn revision_data(ds: &DaemonSet) -> Value {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".to_string(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

fn is_current(revision: &ControllerRevision, name: &str, hash: &str) -> bool {
    revision.metadata.name.as_deref() == Some(name)
        || revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            .is_some_and(|h| h == hash)
}

/// Plans the history of `ds` (current template hash `hash`) from its `existing` revisions;
/// `live_hashes` are the revision hashes live pods run (those revisions are kept).
pub(crate) fn plan_revisions(
    ds: &DaemonSet,
    hash: &str,
    existing: &[&ControllerRevision],
    live_hashes: &BTreeSet<String>,
) -> RevisionPlan {
    let mut plan = RevisionPlan::default();
    let name = revision_name(ds, hash);
    let newest = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    match existing.iter().find(|r| is_current(r, &name, hash)) {
        Some(current) if current.revision < newest => {
            plan.renumber = Some((current.name_any(), newest + 1));
        }
        Some(_) => {}
        None => {
            let mut labels = ds
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_HASH_LABEL.to_string(), hash.to_string());
            plan.create = Some(ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: ds.namespace(),
                    labels: Some(labels),
                    owner_references: Some(vec![controller_ref(ds)]),
                    ..ObjectMeta::default()
                },
                data: Some(RawExtension(revision_data(ds))),
                revision: newest + 1,
            });
        }
    }
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
        .max(0);
    let mut old: Vec<&ControllerRevision> = existing
        .iter()
        .copied()
        .filter(|r| !is_current(r, &name, hash))
        .filter(|r| {
            let h = r
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL));
            h.is_none_or(|h| !live_hashes.contains(h))
        })
        .collect();
    let surplus = old
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    old.sort_by_key(|r| r.revision);
    plan.delete = old.iter().take(surplus).map(|r| r.name_any()).collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;

    fn ds(limit: Option<i32>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                revision_history_limit: limit,
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "agent".to_string())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                },
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn revision(hash: &str, number: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("agent-{hash}")),
                labels: Some([(REVISION_HASH_LABEL.to_string(), hash.to_string())].into()),
                ..ObjectMeta::default()
            },
            data: None,
            revision: number,
        }
    }

    #[test]
    fn a_new_template_gets_the_next_revision_with_a_replacing_patch() {
        let old = revision("aaa", 4);
        let plan = plan_revisions(&ds(None), "bbb", &[&old], &BTreeSet::new());
        let created = plan.create.expect("a revision to create");
        assert_eq!(created.metadata.name.as_deref(), Some("agent-bbb"));
        assert_eq!(created.revision, 5);
        let labels = created.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        assert_eq!(
            labels.get(REVISION_HASH_LABEL).map(String::as_str),
            Some("bbb")
        );
        let data = created.data.map(|d| d.0).unwrap_or_default();
        assert_eq!(data["spec"]["template"]["$patch"], json!("replace"));
        assert_eq!(
            created.metadata.owner_references.unwrap_or_default()[0].kind,
            "DaemonSet"
        );
    }

    #[test]
    fn a_returning_template_is_renumbered_as_the_newest() {
        let (a, b) = (revision("aaa", 1), revision("bbb", 2));
        let plan = plan_revisions(&ds(None), "aaa", &[&a, &b], &BTreeSet::new());
        assert!(plan.create.is_none());
        assert_eq!(plan.renumber, Some(("agent-aaa".to_string(), 3)));
        let current = plan_revisions(&ds(None), "bbb", &[&a, &b], &BTreeSet::new());
        assert!(current.create.is_none() && current.renumber.is_none());
    }

    #[test]
    fn history_beyond_the_limit_is_trimmed_oldest_first_unless_pods_run_it() {
        let revs: Vec<ControllerRevision> = ["r1", "r2", "r3", "r4"]
            .iter()
            .zip(1..)
            .map(|(h, n)| revision(h, n))
            .collect();
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let live: BTreeSet<String> = ["r1".to_string()].into();
        let plan = plan_revisions(&ds(Some(1)), "r4", &refs, &live);
        assert_eq!(plan.delete, vec!["agent-r2".to_string()]);
    }
}
