//! The clusterrole-aggregation controller (Kubernetes runs it in kube-controller-manager;
//! here it is a task of the apiserver, like namespace emptying, because it needs nothing
//! but the RBAC cache and the store).
//!
//! A ClusterRole with an `aggregationRule` gets, as its `rules`, the union of the rules of
//! every other ClusterRole that one of its `clusterRoleSelectors` selects, in name order
//! without duplicates. It is recomputed whenever the cache changes: labelling a ClusterRole
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"` adds its rules to `view` (and, as
//! `view` aggregates into `edit` and `edit` into `admin`, to those too).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_api::selector::LabelSelector;
use wasmkube_store::StoreError;

use super::cache::PolicyCache;
use super::rule::{GROUP, PolicyRule};
use super::snapshot::{ClusterRoleEntry, Snapshot};
use crate::object;
use crate::state::AppState;

/// How many passes one change may trigger before the loop waits for the next change
/// (aggregated roles that select each other converge in a few passes).
const MAX_PASSES: usize = 8;
/// The pause after a failed pass.
const RETRY: Duration = Duration::from_millis(500);

/// The rules `role` aggregates from the other ClusterRoles of `snapshot`, or `None`
/// when it has no aggregation rule.
fn aggregated_rules(snapshot: &Snapshot, role: &ClusterRoleEntry) -> Option<Vec<PolicyRule>> {
    let selectors = role.aggregation.as_ref()?;
    let mut rules: Vec<PolicyRule> = Vec::new();
    for raw in selectors {
        let Ok(selector) = serde_json::from_value(raw.clone())
            .map_err(|_| ())
            .and_then(|s| LabelSelector::from_k8s(&s).map_err(|_| ()))
        else {
            tracing::warn!(role = %role.name, "skipping an invalid clusterRoleSelector");
            continue;
        };
        for other in snapshot.cluster_roles() {
            if other.name == role.name || !selector.matches(&other.labels) {
                continue;
            }
            for rule in other.rules.iter() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// Writes `rules` into the stored ClusterRole `name` (compare-and-swap; a concurrent
/// write makes the next pass try again). Returns whether it wrote.
async fn write_rules(
    state: &AppState,
    name: &str,
    rules: &[PolicyRule],
) -> Result<bool, StoreError> {
    let Some(rt) = state.registry().by_kind(GROUP, "ClusterRole") else {
        return Ok(false);
    };
    let key = rt.key(None, name);
    let Some(kv) = state.store().get(&key).await? else {
        return Ok(false);
    };
    let backend = |e: crate::error::ApiError| StoreError::Backend(e.message.into());
    let mut current: Value = object::decode(&kv).map_err(backend)?;
    let wanted = json!(rules);
    if current.get("rules") == Some(&wanted) {
        return Ok(false);
    }
    current["rules"] = wanted;
    match state
        .store()
        .update(
            &key,
            object::encode(&current).map_err(backend)?,
            kv.mod_revision,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One pass over every aggregated ClusterRole of the cache's current snapshot; returns
/// the store revision after its writes (to wait for) when it wrote anything.
pub async fn aggregate_once(state: &AppState, cache: &PolicyCache) -> Result<bool, StoreError> {
    let snapshot = cache.snapshot();
    let mut wrote = false;
    for role in snapshot.cluster_roles() {
        let Some(rules) = aggregated_rules(&snapshot, role) else {
            continue;
        };
        if rules.as_slice() == role.rules.as_ref() {
            continue;
        }
        if write_rules(state, &role.name, &rules).await? {
            tracing::debug!(role = %role.name, rules = rules.len(), "aggregated cluster role");
            wrote = true;
        }
    }
    if wrote {
        cache.wait_for(state.store().current_revision()).await;
    }
    Ok(wrote)
}

/// Runs passes until nothing changes (at most [`MAX_PASSES`]); used at start-up so the
/// server is ready only with `admin`, `edit` and `view` filled in.
pub async fn converge(state: &AppState, cache: &PolicyCache) -> Result<(), StoreError> {
    for _ in 0..MAX_PASSES {
        if !aggregate_once(state, cache).await? {
            break;
        }
    }
    Ok(())
}

/// Re-aggregates after every change of the RBAC cache, until the server stops or the store
/// closes.
pub fn spawn_aggregation_controller(state: AppState, cache: Arc<PolicyCache>) {
    let stopped = state.stopped();
    tokio::spawn(async move {
        tokio::select! {
            _ = stopped => {}
            _ = aggregate_on_changes(state, cache) => {}
        }
    });
}

async fn aggregate_on_changes(state: AppState, cache: Arc<PolicyCache>) {
    let mut changes = cache.subscribe();
    loop {
        if let Err(e) = converge(&state, &cache).await {
            if matches!(e, StoreError::Closed) {
                return;
            }
            tracing::warn!(error = %e, "aggregating cluster roles failed; retrying");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::Entry;
    use super::*;

    fn role(name: &str, labels: Value, aggregation: Option<Value>, rules: Value) -> Entry {
        let mut obj = json!({"metadata": {"name": name, "labels": labels}, "rules": rules});
        if let Some(a) = aggregation {
            obj["aggregationRule"] = a;
        }
        Entry::decode(
            &format!("/registry/rbac.authorization.k8s.io/clusterroles/{name}"),
            &serde_json::to_vec(&obj).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn an_aggregated_role_collects_the_rules_of_selected_roles_in_name_order() {
        let selector = json!({"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]});
        let view_label = json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"});
        let entries = [
            role("view", json!({}), Some(selector), json!([])),
            role(
                "b-extra",
                view_label.clone(),
                None,
                json!([{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]),
            ),
            role(
                "a-base",
                view_label,
                None,
                json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                       {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]),
            ),
            role(
                "unrelated",
                json!({}),
                None,
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
            ),
        ];
        let snapshot = Snapshot::build(1, entries.iter());
        let view = snapshot.cluster_role("view").unwrap();
        let rules = aggregated_rules(&snapshot, view).unwrap();
        assert_eq!(
            rules,
            vec![
                PolicyRule::new(&["get"]).groups(&[""]).resources(&["pods"]),
                PolicyRule::new(&["get"])
                    .groups(&["example.com"])
                    .resources(&["widgets"]),
            ]
        );
        assert!(aggregated_rules(&snapshot, snapshot.cluster_role("unrelated").unwrap()).is_none());
    }
}
