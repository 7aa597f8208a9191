//! Reconciling the default roles and bindings (`policy`) at every start, as
//! kube-apiserver's RBAC bootstrap hook does:
//!
//! - a missing default object is created;
//! - an existing one annotated `rbac.authorization.kubernetes.io/autoupdate: "false"` is
//!   left alone (the administrator took it over);
//! - otherwise missing labels, annotations, rules (as atomic rules, after Kubernetes'
//!   `Covers`), aggregation selectors and subjects are added back; nothing the
//!   administrator added is removed. A binding whose `roleRef` changed is recreated, as
//!   `roleRef` is immutable.

use serde_json::{Map, Value, json};
use wasmkube_store::StoreError;

use super::escalation::covers;
use super::policy::{self, AUTOUPDATE_ANNOTATION};
use super::rule::{GROUP, PolicyRule, Subject};
use crate::object;
use crate::registry::ResourceType;
use crate::state::AppState;

fn backend(e: crate::error::ApiError) -> StoreError {
    StoreError::Backend(e.message.into())
}

/// Creates or reconciles every default ClusterRole and ClusterRoleBinding, and the default
/// Roles and RoleBindings of namespaces.
pub async fn reconcile(state: &AppState) -> Result<(), StoreError> {
    let registry = state.registry();
    let (Some(roles), Some(bindings), Some(namespace_roles), Some(namespace_bindings)) = (
        registry.by_kind(GROUP, "ClusterRole"),
        registry.by_kind(GROUP, "ClusterRoleBinding"),
        registry.by_kind(GROUP, "Role"),
        registry.by_kind(GROUP, "RoleBinding"),
    ) else {
        return Ok(());
    };
    for role in policy::cluster_roles() {
        reconcile_one(state, roles, role, reconcile_role).await?;
    }
    for binding in policy::cluster_role_bindings() {
        reconcile_one(state, bindings, binding, reconcile_binding).await?;
    }
    for role in policy::namespace_roles() {
        reconcile_one(state, namespace_roles, role, reconcile_role).await?;
    }
    for binding in policy::namespace_role_bindings() {
        reconcile_one(state, namespace_bindings, binding, reconcile_binding).await?;
    }
    unbind_legacy_node_group(state, bindings).await
}

/// Older versions bound `system:node` to the group `system:nodes` (every node could read
/// every Secret); the Node authorizer took its place, so that subject is removed once.
async fn unbind_legacy_node_group(state: &AppState, rt: &ResourceType) -> Result<(), StoreError> {
    let key = rt.key(None, "system:node");
    loop {
        let Some(kv) = state.store().get(&key).await? else {
            return Ok(());
        };
        let mut binding = object::decode(&kv).map_err(backend)?;
        let taken_over = binding
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
            .and_then(Value::as_str)
            == Some("false");
        let Some(subjects) = binding.get_mut("subjects").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        let before = subjects.len();
        subjects.retain(|s| {
            !(s.get("kind").and_then(Value::as_str) == Some("Group")
                && s.get("name").and_then(Value::as_str) == Some("system:nodes"))
        });
        if subjects.len() == before || taken_over {
            return Ok(());
        }
        tracing::info!(
            "removed the group system:nodes from the system:node binding: the Node authorizer decides for nodes"
        );
        match state
            .store()
            .update(
                &key,
                object::encode(&binding).map_err(backend)?,
                kv.mod_revision,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What to do with an existing default object.
enum Outcome {
    Keep,
    Update(Value),
    Recreate(Value),
}

async fn reconcile_one(
    state: &AppState,
    rt: &ResourceType,
    expected: Value,
    reconcile: fn(&Value, &Value) -> Outcome,
) -> Result<(), StoreError> {
    let namespace = expected
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let key = rt.key(namespace, object::name(&expected));
    let store = state.store();
    loop {
        let Some(kv) = store.get(&key).await? else {
            let mut obj = expected.clone();
            crate::handlers::write::prepare_create(rt, &mut obj);
            match store
                .create(&key, object::encode(&obj).map_err(backend)?)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        let existing = object::decode(&kv).map_err(backend)?;
        let autoupdate = existing
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
            .and_then(Value::as_str);
        if autoupdate == Some("false") {
            return Ok(());
        }
        let written = match reconcile(&existing, &expected) {
            Outcome::Keep => return Ok(()),
            Outcome::Update(obj) => {
                store
                    .update(
                        &key,
                        object::encode(&obj).map_err(backend)?,
                        kv.mod_revision,
                    )
                    .await
            }
            Outcome::Recreate(mut obj) => {
                tracing::info!(name = %object::name(&obj), "recreating a default binding whose roleRef changed");
                match store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
                crate::handlers::write::prepare_create(rt, &mut obj);
                store
                    .create(&key, object::encode(&obj).map_err(backend)?)
                    .await
            }
        };
        match written {
            Ok(_) => return Ok(()),
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::NotFound { .. },
            ) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `existing`'s map at `field` of metadata plus the missing entries of `expected`'s.
fn merged_meta_map(existing: &Value, expected: &Value, field: &str) -> Map<String, Value> {
    let mut out = existing
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(wanted) = expected
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
    {
        for (k, v) in wanted {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

fn with_merged_metadata(existing: &Value, expected: &Value) -> Value {
    let mut obj = existing.clone();
    let meta = object::meta_mut(&mut obj);
    meta.insert(
        "labels".into(),
        Value::Object(merged_meta_map(existing, expected, "labels")),
    );
    meta.insert(
        "annotations".into(),
        Value::Object(merged_meta_map(existing, expected, "annotations")),
    );
    obj
}

fn rules(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

fn reconcile_role(existing: &Value, expected: &Value) -> Outcome {
    let mut obj = with_merged_metadata(existing, expected);
    let (_, missing) = covers(&rules(existing), &rules(expected));
    if !missing.is_empty() {
        let mut all = rules(existing);
        all.extend(missing);
        obj["rules"] = json!(all);
    }
    if let Some(wanted) = expected
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        let mut selectors = existing
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for s in wanted {
            if !selectors.contains(s) {
                selectors.push(s.clone());
            }
        }
        obj["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    }
    if obj == *existing {
        Outcome::Keep
    } else {
        Outcome::Update(obj)
    }
}

fn subjects(obj: &Value) -> Vec<Subject> {
    obj.get("subjects")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn reconcile_binding(existing: &Value, expected: &Value) -> Outcome {
    let mut obj = with_merged_metadata(existing, expected);
    let mut all = subjects(existing);
    for s in subjects(expected) {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    if all != subjects(existing) {
        obj["subjects"] = json!(all);
    }
    if existing.get("roleRef") != expected.get("roleRef") {
        obj["roleRef"] = expected["roleRef"].clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["uid", "creationTimestamp", "resourceVersion"] {
                meta.remove(field);
            }
        }
        return Outcome::Recreate(obj);
    }
    if obj == *existing {
        Outcome::Keep
    } else {
        Outcome::Update(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_role() -> Value {
        json!({"metadata": {"name": "r", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {AUTOUPDATE_ANNOTATION: "true"}},
               "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})
    }

    #[test]
    fn a_role_that_lost_rules_gets_them_back_and_keeps_its_own() {
        let existing = json!({"metadata": {"name": "r", "labels": {"mine": "yes"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                      {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]});
        let Outcome::Update(obj) = reconcile_role(&existing, &expected_role()) else {
            panic!("an update")
        };
        assert_eq!(obj["metadata"]["labels"]["mine"], "yes");
        assert_eq!(
            obj["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        let rules = rules(&obj);
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[2],
            PolicyRule::new(&["list"])
                .groups(&[""])
                .resources(&["pods"])
        );
    }

    #[test]
    fn an_up_to_date_role_is_kept() {
        let existing = expected_role();
        assert!(matches!(
            reconcile_role(&existing, &expected_role()),
            Outcome::Keep
        ));
    }

    #[test]
    fn a_binding_gets_missing_subjects_and_is_recreated_for_another_role() {
        let expected = json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "apiGroup": GROUP, "name": "g"}]});
        let existing = json!({"metadata": {"name": "b", "uid": "u"},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "alice"}]});
        let Outcome::Update(obj) = reconcile_binding(&existing, &expected) else {
            panic!("an update")
        };
        assert_eq!(obj["subjects"].as_array().unwrap().len(), 2);
        let mut moved = existing.clone();
        moved["roleRef"]["name"] = json!("edit");
        let Outcome::Recreate(obj) = reconcile_binding(&moved, &expected) else {
            panic!("a recreate")
        };
        assert_eq!(obj["roleRef"]["name"], "view");
        assert!(obj["metadata"].get("uid").is_none());
    }
}
