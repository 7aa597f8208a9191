//! ResourceQuota admission: a create that would take a namespace past a quota's `hard` is
//! refused, and an admitted one is charged to the quota's `status.used` before it is stored
//! (`plugin/pkg/admission/resourcequota`).
//!
//! For each quota of the namespace whose scopes select the object and whose `status.hard`
//! names something the object consumes ([`wasmkube_api::quota`]):
//! - a pod must state every cpu/memory request or limit the quota limits
//!   (`failed quota: q: must specify limits.cpu for: app`);
//! - the quota's usage must be known (`status unknown for quota: q, resources: pods` until
//!   the quota controller has filled `status.used`);
//! - `used + requested <= hard`, else 403 `exceeded quota: q, requested: pods=1, used:
//!   pods=2, limited: pods=2`.
//!
//! Every quota is checked before any is charged; each charge is a compare-and-swap of the
//! quota object on its revision, re-read and re-checked on a conflict, so concurrent creates
//! can never both take the last unit. As in Kubernetes, a charge is not given back if the
//! object then fails to be stored; the quota controller recalculates usage from the objects
//! that exist. Dry runs are checked but never charged.

use std::collections::BTreeSet;

use serde_json::Value;
use wasmkube_api::quota::{self, ResourceList};
use wasmkube_store::StoreError;

use crate::error::{ApiError, ApiResult};
use crate::handlers::{Request, store_error};
use crate::object;

/// How many times a charge is retried after concurrent writes to the quota.
const RETRIES: usize = 16;

/// Checks `obj` (being created) against the quotas of `namespace` and charges them.
pub async fn admit(
    req: &Request<'_>,
    namespace: &str,
    obj: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let rt = req.rt;
    let quotas = super::list_in_namespace(req, "ResourceQuota", namespace).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let requested = quota::usage(rt.group, rt.plural, obj);
    let name = object::name(obj).to_string();
    let forbidden = |why: String| ApiError::forbidden_object(rt.group, rt.plural, &name, &why);
    // First every quota is checked, so a refusal charges none.
    let mut charges = Vec::new();
    for kv in &quotas {
        let q = object::decode(kv)?;
        if check(rt.group, rt.plural, &q, obj, &requested)
            .map_err(forbidden)?
            .is_some()
        {
            charges.push(kv.key.clone());
        }
    }
    if dry_run {
        return Ok(());
    }
    for key in charges {
        charge(req, &key, rt.group, rt.plural, obj)
            .await?
            .map_err(forbidden)?;
    }
    Ok(())
}

/// The part of `requested` that `q` tracks, if any, after checking it fits; `Err` is the
/// refusal (`failed quota: ...`, `status unknown ...`, `exceeded quota: ...`).
fn check(
    group: &str,
    plural: &str,
    q: &Value,
    obj: &Value,
    requested: &ResourceList,
) -> Result<Option<ResourceList>, String> {
    let quota_name = object::name(q);
    if !quota::matches_scopes(q, plural, obj) {
        return Ok(None);
    }
    let hard = quota::from_json(q.pointer("/status/hard"));
    let spec_hard = quota::from_json(q.pointer("/spec/hard"));
    // Until the controller has copied spec.hard into the status, what the quota limits is
    // spec.hard, and its usage is unknown.
    let limited = if hard.is_empty() { &spec_hard } else { &hard };
    let matched = quota::matching_resources(group, plural, limited);
    if matched.is_empty() {
        return Ok(None);
    }
    if plural == "pods" && group.is_empty() {
        quota::missing_compute(obj, &matched)
            .map_err(|e| format!("failed quota: {quota_name}: {e}"))?;
    }
    let delta = quota::mask(requested, &matched);
    if delta.is_empty() {
        return Ok(None);
    }
    let used = quota::from_json(q.pointer("/status/used"));
    let unknown: Vec<&str> = delta
        .keys()
        .filter(|k| hard.is_empty() || !used.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {quota_name}, resources: {}",
            unknown.join(",")
        ));
    }
    let mut new_used = used.clone();
    quota::add_all(&mut new_used, &delta);
    let exceeded: BTreeSet<String> = delta
        .keys()
        .filter(|k| match (new_used.get(*k), hard.get(*k)) {
            (Some(u), Some(h)) => u > h,
            _ => false,
        })
        .cloned()
        .collect();
    if !exceeded.is_empty() {
        return Err(format!(
            "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
            quota::pretty(&quota::mask(&delta, &exceeded)),
            quota::pretty(&quota::mask(&used, &exceeded)),
            quota::pretty(&quota::mask(&hard, &exceeded)),
        ));
    }
    Ok(Some(delta))
}

/// Adds what `obj` consumes to the quota at `key` with a compare-and-swap of the revision it
/// was checked against, re-reading and re-checking on a conflict. The outer error is a server fault; the inner one a refusal.
async fn charge(
    req: &Request<'_>,
    key: &str,
    group: &str,
    plural: &str,
    obj: &Value,
) -> ApiResult<Result<(), String>> {
    let quota_rt = req
        .state
        .registry()
        .by_kind("", "ResourceQuota")
        .ok_or_else(|| ApiError::internal("resourcequotas are not registered"))?;
    let store = req.state.store();
    let requested = quota::usage(group, plural, obj);
    for _ in 0..RETRIES {
        let Some(kv) = store
            .get(key)
            .await
            .map_err(|e| store_error(quota_rt, "", e))?
        else {
            // The quota was deleted meanwhile: nothing to charge.
            return Ok(Ok(()));
        };
        let mut q = object::decode(&kv)?;
        // Check against the revision this write replaces, not the one listed before:
        // another create may have charged the quota in between (the first attempt too).
        let delta = match check(group, plural, &q, obj, &requested) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(Ok(())),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut used = quota::from_json(q.pointer("/status/used"));
        quota::add_all(&mut used, &delta);
        q["status"]["used"] = quota::to_json(&used);
        if let Some(meta) = q.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        match store
            .update(key, object::encode(&q)?, kv.mod_revision)
            .await
        {
            Ok(_) => return Ok(Ok(())),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Ok(Ok(())),
            Err(e) => return Err(store_error(quota_rt, object::name(&q), e)),
        }
    }
    Err(ApiError::conflict(
        "",
        "resourcequotas",
        "",
        "too many concurrent writes to the namespace's quotas; please try again",
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn quota_obj(hard: Value, used: Option<Value>) -> Value {
        let mut q = json!({"metadata": {"name": "q"}, "spec": {"hard": hard.clone()}});
        if let Some(used) = used {
            q["status"] = json!({"hard": hard, "used": used});
        }
        q
    }

    fn pod(cpu: Option<&str>) -> Value {
        let resources = match cpu {
            Some(c) => json!({"requests": {"cpu": c}}),
            None => json!({}),
        };
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "resources": resources}]}})
    }

    fn run(q: &Value, obj: &Value) -> Result<Option<String>, String> {
        let requested = quota::usage("", "pods", obj);
        check("", "pods", q, obj, &requested).map(|d| d.map(|d| quota::pretty(&d)))
    }

    #[test]
    fn a_pod_over_the_count_is_refused_with_kubernetes_message() {
        let q = quota_obj(json!({"pods": "2"}), Some(json!({"pods": "2"})));
        assert_eq!(
            run(&q, &pod(None)),
            Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
        let q = quota_obj(json!({"pods": "2"}), Some(json!({"pods": "1"})));
        assert_eq!(run(&q, &pod(None)), Ok(Some("pods=1".into())));
    }

    #[test]
    fn usage_must_be_known_before_anything_is_admitted() {
        let q = quota_obj(json!({"pods": "2"}), None);
        assert_eq!(
            run(&q, &pod(None)),
            Err("status unknown for quota: q, resources: pods".into())
        );
    }

    #[test]
    fn compute_quotas_need_requests_and_sum_them() {
        let q = quota_obj(
            json!({"requests.cpu": "1"}),
            Some(json!({"requests.cpu": "800m"})),
        );
        assert_eq!(
            run(&q, &pod(None)),
            Err("failed quota: q: must specify requests.cpu for: app".into())
        );
        assert_eq!(
            run(&q, &pod(Some("300m"))),
            Err("exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1".into())
        );
        assert_eq!(
            run(&q, &pod(Some("200m"))),
            Ok(Some("requests.cpu=200m".into()))
        );
    }

    #[test]
    fn quotas_that_track_something_else_are_ignored() {
        let q = quota_obj(json!({"configmaps": "0"}), Some(json!({"configmaps": "0"})));
        assert_eq!(run(&q, &pod(None)), Ok(None));
    }
}
