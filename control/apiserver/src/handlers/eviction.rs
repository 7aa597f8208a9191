//! `POST pods/{name}/eviction`: the API-initiated deletion `kubectl drain` asks for.
//!
//! The body is a `policy/v1` (or `v1beta1`) Eviction naming the pod and carrying the
//! `DeleteOptions` to delete it with. Kubernetes (`pkg/registry/core/pod/storage/
//! eviction.go`) checks the pod's PodDisruptionBudgets before deleting it; wasmkube
//! serves no PodDisruptionBudgets, so no budget ever matches and every eviction is
//! allowed, which is what Kubernetes does for a pod no budget selects (and for terminal,
//! pending or already-terminating pods whatever the budgets). The pod first gets the
//! `DisruptionTarget` condition (reason `EvictionByEvictionAPI`, as Kubernetes 1.26+
//! adds), then is deleted through the ordinary delete path, grace period and
//! preconditions included. The answer is a `Status` of `Success` with code 201.

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::delete::{DeleteOptions, delete_object};
use super::write::{Part, apply_update};
use super::{Request, json_response};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::request;

/// The pod condition an eviction adds before deleting the pod.
const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// The condition's reason when the Eviction API is the cause.
const EVICTION_REASON: &str = "EvictionByEvictionAPI";
/// The condition's message, as Kubernetes writes it.
const EVICTION_MESSAGE: &str = "Eviction API: evicting";

/// `POST pods/{name}/eviction`: deletes the pod as the Eviction's `deleteOptions` say.
pub async fn evict(req: &Request<'_>, name: &str, body: Bytes) -> ApiResult<Response> {
    let eviction = request::decode_body(&req.headers, &body)?;
    let mut opts = delete_options(name, req.store_namespace(), &eviction, req.query.dry_run()?)?;
    let (pod, _) = super::read::read_object(req, name).await?;
    crate::admission::node_restriction::admit_eviction(req, &pod)?;
    if !opts.dry_run {
        mark_disruption_target(req, name, &mut opts).await?;
    }
    delete_object(req, name, &opts).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &status))
}

/// Checks an Eviction against the URL (its kind, name and namespace) and returns the
/// options to delete the pod with, the request's `dryRun` (`query_dry_run`) merged in as
/// Kubernetes' `propagateDryRun` does.
fn delete_options(
    name: &str,
    namespace: Option<&str>,
    eviction: &Value,
    query_dry_run: bool,
) -> ApiResult<DeleteOptions> {
    let api_version = eviction.get("apiVersion").and_then(Value::as_str);
    let kind = eviction.get("kind").and_then(Value::as_str);
    if !matches!(api_version, None | Some("policy/v1" | "policy/v1beta1"))
        || !matches!(kind, None | Some("Eviction"))
    {
        return Err(ApiError::bad_request(format!(
            "the body of an eviction must be a policy/v1 Eviction, not {} {}",
            api_version.unwrap_or(""),
            kind.unwrap_or("")
        )));
    }
    if object::meta_str(eviction, "name").unwrap_or("") != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    if let (Some(ns), Some(want)) = (object::meta_str(eviction, "namespace"), namespace)
        && !ns.is_empty()
        && ns != want
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let options = match eviction.get("deleteOptions") {
        None | Some(Value::Null) => json!({}),
        Some(o @ Value::Object(_)) => o.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "deleteOptions of an Eviction must be an object",
            ));
        }
    };
    let body_dry_run: Vec<&str> = options
        .get("dryRun")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(bad) = body_dry_run.iter().find(|d| **d != "All") {
        return Err(ApiError::bad_request(format!(
            "invalid dry run option {bad:?}: the only supported value is \"All\""
        )));
    }
    let mut opts = DeleteOptions::from_json(&options)?;
    opts.dry_run |= query_dry_run;
    Ok(opts)
}

/// The pod with the `DisruptionTarget` condition set (Kubernetes' `UpdatePodCondition`:
/// the transition time changes only with the status), `None` when it already says so.
fn with_disruption_target(pod: &Value, now: &str) -> Option<Value> {
    let mut conditions: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let existing = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(DISRUPTION_TARGET));
    let mut condition = json!({
        "type": DISRUPTION_TARGET,
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": now,
        "reason": EVICTION_REASON,
        "message": EVICTION_MESSAGE,
    });
    match existing {
        Some(i) => {
            let old = &conditions[i];
            let field = |c: &Value, f: &str| c.get(f).cloned().unwrap_or(Value::Null);
            if field(old, "status") == "True"
                && field(old, "reason") == EVICTION_REASON
                && field(old, "message") == EVICTION_MESSAGE
            {
                return None;
            }
            if field(old, "status") == "True" {
                condition["lastTransitionTime"] = field(old, "lastTransitionTime");
            }
            conditions[i] = condition;
        }
        None => conditions.push(condition),
    }
    let mut new = pod.clone();
    if !new.get("status").is_some_and(Value::is_object) {
        new["status"] = json!({});
    }
    new["status"]["conditions"] = json!(conditions);
    object::meta_mut(&mut new).remove("resourceVersion");
    Some(new)
}

/// Adds the `DisruptionTarget` condition to the pod's status, honouring the options'
/// preconditions; a resourceVersion precondition then moves to the version this write
/// made, as Kubernetes' `addConditionAndDeletePod` does.
async fn mark_disruption_target(
    req: &Request<'_>,
    name: &str,
    opts: &mut DeleteOptions,
) -> ApiResult<()> {
    let rt = req.rt;
    let precondition = opts
        .precondition_rv
        .as_deref()
        .map(object::parse_rv)
        .transpose()?;
    let uid = opts.precondition_uid.clone();
    let now = object::now_rfc3339();
    let updated = apply_update(req, name, Part::Status, precondition, false, &mut |current| {
        if let Some(uid) = &uid {
            let actual = object::meta_str(current, "uid").unwrap_or("");
            if actual != uid {
                return Err(ApiError::conflict(
                    rt.group,
                    rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        Ok(with_disruption_target(current, &now).unwrap_or_else(|| current.clone()))
    })
    .await?;
    if opts.precondition_rv.is_some()
        && let Some(rv) = object::meta_str(&updated.object, "resourceVersion")
    {
        opts.precondition_rv = Some(rv.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eviction(name: &str, options: Value) -> Value {
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"},
            "deleteOptions": options,
        })
    }

    #[test]
    fn the_evictions_delete_options_carry_grace_period_and_preconditions() {
        let ev = eviction(
            "web-1",
            json!({"gracePeriodSeconds": 5, "preconditions": {"uid": "u-1", "resourceVersion": "42"}}),
        );
        let opts = delete_options("web-1", Some("default"), &ev, false).unwrap();
        assert_eq!(opts.grace_period_seconds, Some(5));
        assert_eq!(opts.precondition_uid.as_deref(), Some("u-1"));
        assert_eq!(opts.precondition_rv.as_deref(), Some("42"));
        assert!(!opts.dry_run);
    }

    #[test]
    fn an_eviction_without_delete_options_deletes_with_the_defaults() {
        let ev = json!({"metadata": {"name": "web-1"}});
        let opts = delete_options("web-1", Some("default"), &ev, false).unwrap();
        assert_eq!(opts.grace_period_seconds, None);
        assert!(opts.precondition_uid.is_none());
    }

    #[test]
    fn a_name_or_namespace_other_than_the_urls_is_a_bad_request() {
        let ev = eviction("other", Value::Null);
        let err = delete_options("web-1", Some("default"), &ev, false).unwrap_err();
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message,
            "name in URL does not match name in Eviction object"
        );
        let err = delete_options(
            "web-1",
            Some("prod"),
            &eviction("web-1", Value::Null),
            false,
        )
        .unwrap_err();
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
        let nameless = json!({"kind": "Eviction", "metadata": {}});
        assert!(delete_options("web-1", Some("default"), &nameless, false).is_err());
    }

    #[test]
    fn a_body_of_another_kind_is_a_bad_request() {
        let mut ev = eviction("web-1", Value::Null);
        ev["kind"] = json!("Pod");
        ev["apiVersion"] = json!("v1");
        let err = delete_options("web-1", Some("default"), &ev, false).unwrap_err();
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
        let mut beta = eviction("web-1", Value::Null);
        beta["apiVersion"] = json!("policy/v1beta1");
        assert!(delete_options("web-1", Some("default"), &beta, false).is_ok());
    }

    #[test]
    fn dry_run_comes_from_the_query_or_the_delete_options() {
        let plain = eviction("web-1", json!({}));
        assert!(delete_options("web-1", None, &plain, true).unwrap().dry_run);
        let in_body = eviction("web-1", json!({"dryRun": ["All"]}));
        assert!(
            delete_options("web-1", None, &in_body, false)
                .unwrap()
                .dry_run
        );
        let bad = eviction("web-1", json!({"dryRun": ["Some"]}));
        assert!(delete_options("web-1", None, &bad, true).is_err());
    }

    #[test]
    fn the_disruption_target_condition_is_added_once() {
        let pod = json!({
            "metadata": {"name": "web-1", "resourceVersion": "7"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        });
        let marked = with_disruption_target(&pod, "2025-01-01T00:00:00Z").unwrap();
        let conditions = marked["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(
            conditions[1],
            json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
                   "lastTransitionTime": "2025-01-01T00:00:00Z",
                   "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"})
        );
        assert!(marked["metadata"].get("resourceVersion").is_none());
        assert!(with_disruption_target(&marked, "2025-01-02T00:00:00Z").is_none());
    }

    #[test]
    fn a_pod_without_status_gets_one_for_the_condition() {
        let pod = json!({"metadata": {"name": "web-1"}});
        let marked = with_disruption_target(&pod, "2025-01-01T00:00:00Z").unwrap();
        assert_eq!(
            marked["status"]["conditions"][0]["reason"],
            "EvictionByEvictionAPI"
        );
    }
}
