//! The authorization.k8s.io/v1 access reviews and authentication.k8s.io/v1
//! SelfSubjectReview: created, evaluated, answered (201) and never stored, as Kubernetes
//! serves them.
//!
//! - SelfSubjectReview: who am I? (`kubectl auth whoami`)
//! - SelfSubjectAccessReview: may *I* do this? (`kubectl auth can-i`)
//! - SubjectAccessReview: may this user (in these groups) do this?
//! - LocalSubjectAccessReview: the same, limited to the URL's namespace.
//! - SelfSubjectRulesReview: what may I do in a namespace? (`kubectl auth can-i --list`)
//! - TokenReview: who does this bearer token authenticate as? (the kubelet's
//!   `--authentication-token-webhook`, and any webhook that delegates authentication)

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath};

use super::{Request, json_response};
use crate::authn::Identity;
use crate::authz::{Attributes, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::validation::{Cause, causes};

fn get_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Answers a POST of an access review.
pub async fn create(req: &Request<'_>, body: Bytes) -> ApiResult<Response> {
    let rt = req.rt;
    let mut obj = crate::request::decode_body(&req.headers, &body)?;
    super::write::check_kind(rt, &mut obj)?;
    let warnings = super::write::check_fields(req, &obj)?;
    let requester = req
        .user
        .clone()
        .ok_or_else(|| ApiError::internal("an access review without a requesting user"))?;
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let invalid = |causes: Vec<Cause>| ApiError::invalid(rt.group, rt.kind, "", &causes);
    let status = match rt.kind {
        "TokenReview" => token_review(req, &spec).await?,
        "SelfSubjectReview" => {
            json!({"userInfo": {"username": requester.user, "groups": requester.groups}})
        }
        "SelfSubjectRulesReview" => {
            let namespace = get_str(&spec, "namespace");
            if namespace.is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            rules_review(req, &requester, namespace)?
        }
        "SelfSubjectAccessReview" => {
            let request = attributes(&spec, true).map_err(|e| invalid(causes(e)))?;
            access_review(req, &requester, &request)?
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let mut errs = Vec::new();
            let request = match attributes(&spec, rt.kind == "SubjectAccessReview") {
                Ok(r) => Some(r),
                Err(e) => {
                    errs.extend(e);
                    None
                }
            };
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let user = get_str(&spec, "user");
            if user.is_empty() && groups.is_empty() {
                errs.push(FieldError::invalid(
                    &FieldPath::new("spec").child("user"),
                    user,
                    "at least one of user or group must be specified",
                ));
            }
            if rt.kind == "LocalSubjectAccessReview"
                && let Some(r) = &request
                && r.namespace != req.namespace.as_deref().unwrap_or("")
            {
                errs.push(FieldError::invalid(
                    &FieldPath::new("spec")
                        .child("resourceAttributes")
                        .child("namespace"),
                    r.namespace.as_str(),
                    "must match metadata.namespace",
                ));
            }
            match request {
                Some(request) if errs.is_empty() => {
                    let subject = Identity {
                        user: user.to_string(),
                        groups,
                    };
                    access_review(req, &subject, &request)?
                }
                _ => return Err(invalid(causes(errs))),
            }
        }
        other => {
            return Err(ApiError::internal(format!(
                "{other} is not an access review"
            )));
        }
    };
    if let Some(ns) = req.store_namespace() {
        crate::object::meta_mut(&mut obj).insert("namespace".into(), json!(ns));
    }
    obj["status"] = status;
    Ok(super::write::with_warnings(
        json_response(StatusCode::CREATED, &obj),
        &warnings,
    ))
}

/// A TokenReview's status, as kube-apiserver's `tokenreview` storage answers it: the
/// token authenticated by the same chain that authenticates requests (static tokens,
/// bootstrap tokens, service-account tokens). The token is checked against the
/// apiserver's audiences (`--api-audiences`); `spec.audiences`, when given, must share one
/// of them, and `status.audiences` holds the ones both name.
async fn token_review(req: &Request<'_>, spec: &Value) -> ApiResult<Value> {
    let token = get_str(spec, "token");
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let authenticators = req
        .state
        .token_authenticators_slot()
        .clone()
        .ok_or_else(|| {
            ApiError::unavailable("the apiserver is starting or stopping; try again in a moment")
        })?;
    let api_audiences: Vec<String> = req
        .state
        .inner
        .service_accounts
        .get()
        .map(|accounts| accounts.api_audiences().to_vec())
        .unwrap_or_default();
    let wanted: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let audiences: Vec<String> = if wanted.is_empty() {
        api_audiences.clone()
    } else {
        wanted
            .iter()
            .filter(|a| api_audiences.contains(a))
            .cloned()
            .collect()
    };
    if audiences.is_empty() && !wanted.is_empty() {
        return Ok(json!({
            "authenticated": false,
            "user": {},
            "error": format!(
                "token audiences {api_audiences:?} is invalid for the target audiences {wanted:?}"
            ),
        }));
    }
    Ok(match authenticators.authenticate_token(token).await {
        Some(identity) => json!({
            "authenticated": true,
            "user": {"username": identity.user, "groups": identity.groups},
            "audiences": audiences,
        }),
        None => json!({
            "authenticated": false,
            "user": {},
            "error": "invalid bearer token",
        }),
    })
}

/// The request an access review's spec describes; `resource_or_url` allows
/// `nonResourceAttributes` (not in a LocalSubjectAccessReview).
fn attributes(spec: &Value, non_resource_allowed: bool) -> Result<RequestInfo, Vec<FieldError>> {
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let path = FieldPath::new("spec");
    match (resource, non_resource) {
        (Some(_), Some(n)) => Err(vec![FieldError::invalid(
            &path.child("nonResourceAttributes"),
            n,
            "cannot be specified in combination with resourceAttributes",
        )]),
        (None, None) => Err(vec![FieldError::invalid(
            &path.child("resourceAttributes"),
            &Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )]),
        (None, Some(n)) if !non_resource_allowed => Err(vec![FieldError::invalid(
            &path.child("nonResourceAttributes"),
            n,
            "disallowed on this kind of request",
        )]),
        (None, Some(n)) => Ok(RequestInfo::non_resource(
            get_str(n, "verb"),
            get_str(n, "path"),
        )),
        (Some(r), None) => {
            let mut info = RequestInfo::resource(
                get_str(r, "verb"),
                get_str(r, "group"),
                get_str(r, "resource"),
                get_str(r, "subresource"),
                get_str(r, "namespace"),
                get_str(r, "name"),
            );
            info.api_version = get_str(r, "version").to_string();
            Ok(info)
        }
    }
}

/// `status` of an access review: allowed, denied, reason.
fn access_review(req: &Request<'_>, user: &Identity, request: &RequestInfo) -> ApiResult<Value> {
    let decision = req
        .state
        .authz()?
        .authorizer
        .authorize(&Attributes { user, request });
    let mut status = json!({"allowed": decision.is_allowed()});
    if matches!(decision, crate::authz::Decision::Deny(_)) {
        status["denied"] = json!(true);
    }
    if !decision.reason().is_empty() {
        status["reason"] = json!(decision.reason());
    }
    Ok(status)
}

/// `status` of a SelfSubjectRulesReview.
fn rules_review(req: &Request<'_>, user: &Identity, namespace: &str) -> ApiResult<Value> {
    let rules = req.state.authz()?.authorizer.rules_for(user, namespace);
    let mut status = json!({
        "resourceRules": rules.resource_rules,
        "nonResourceRules": rules.non_resource_rules,
        "incomplete": rules.incomplete,
    });
    if !rules.errors.is_empty() {
        status["evaluationError"] = json!(crate::rbac::aggregate_errors(&rules.errors));
    }
    Ok(status)
}
