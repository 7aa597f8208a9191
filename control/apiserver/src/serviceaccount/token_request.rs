//! `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: an `authentication.k8s.io/v1`
//! TokenRequest in, the same with `status.token` and `status.expirationTimestamp` out (201),
//! never stored; Kubernetes' `TokenREST.Create`.
//!
//! `spec.expirationSeconds` defaults to 3600 and must be 600 to 2^32; `spec.audiences`
//! defaults to the apiserver's (`--api-audiences`); `spec.boundObjectRef` binds the token to
//! a Pod (which must run as this service account; the token names its node too) or a Secret
//! of the namespace, whose uid must match when given. A node (NodeRestriction) gets tokens
//! only bound to a pod that runs on it.

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::TokenRequest;
use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath};

use super::claims::{ObjectRef, TokenSpec};
use crate::admission::node_restriction;
use crate::error::{ApiError, ApiResult};
use crate::handlers::{Request, json_response};
use crate::object;
use crate::validation::causes;

const GROUP: &str = "authentication.k8s.io";
const API_VERSION: &str = "authentication.k8s.io/v1";
const KIND: &str = "TokenRequest";
/// `spec.expirationSeconds` when the request sets none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a token may be asked for (Kubernetes' `MinTokenAgeSec`).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// Issues a token for service account `name` of the request's namespace.
pub async fn create(req: &Request<'_>, name: &str, body: Bytes) -> ApiResult<Response> {
    let accounts = req.state.service_accounts()?;
    let namespace = req
        .store_namespace()
        .ok_or_else(|| ApiError::bad_request("a token request needs a namespace"))?
        .to_string();
    let mut obj = crate::request::decode_body(&req.headers, &body)?;
    check_kind(&mut obj)?;
    req.query.dry_run()?;
    // The status is the server's to fill (clients send an empty one).
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
    }
    let mut request: TokenRequest = serde_json::from_value(obj)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid TokenRequest: {e}")))?;
    // NodeRestriction, an admission plugin in Kubernetes and so before the request is
    // validated: a node gets tokens only for the pods that run on it.
    if node_restriction::requested_by_node(req) {
        let pod = match &request.spec.bound_object_ref {
            Some(bound) if bound.kind.as_deref() == Some("Pod") => {
                get(req, "Pod", &namespace, bound.name.as_deref().unwrap_or("")).await?
            }
            _ => None,
        };
        node_restriction::admit_token_request(req, name, &request, pod.as_ref())?;
    }

    let mut errors = Vec::new();
    let meta = FieldPath::new("metadata");
    if request
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        errors.push(FieldError::invalid(
            &meta.child("name"),
            request.metadata.name.as_deref().unwrap_or(""),
            "must match the service account name if specified",
        ));
    }
    if request
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != namespace)
    {
        errors.push(FieldError::invalid(
            &meta.child("namespace"),
            request.metadata.namespace.as_deref().unwrap_or(""),
            "must match the service account namespace if specified",
        ));
    }
    let expiration = match request.spec.expiration_seconds {
        None | Some(0) => DEFAULT_EXPIRATION_SECONDS,
        Some(s) => s,
    };
    let path = FieldPath::new("spec").child("expirationSeconds");
    if expiration < MIN_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            &path,
            expiration,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            &path,
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(GROUP, KIND, name, &causes(errors)));
    }

    let account = get(req, "ServiceAccount", &namespace, name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let service_account = ObjectRef::new(name, object::meta_str(&account, "uid").unwrap_or(""));
    let mut spec = TokenSpec {
        issuer: accounts.issuer(),
        audiences: if request.spec.audiences.is_empty() {
            accounts.api_audiences().to_vec()
        } else {
            request.spec.audiences.clone()
        },
        namespace: &namespace,
        service_account,
        pod: None,
        secret: None,
        node: None,
        expiration_seconds: expiration,
    };
    if let Some(bound) = &request.spec.bound_object_ref {
        let kind = bound.kind.as_deref().unwrap_or("");
        let api_version = bound.api_version.as_deref().unwrap_or("");
        let bound_name = bound.name.as_deref().unwrap_or("");
        let (found, plural) = match (api_version, kind) {
            ("v1", "Pod") => (get(req, "Pod", &namespace, bound_name).await?, "pods"),
            ("v1", "Secret") => (get(req, "Secret", &namespace, bound_name).await?, "secrets"),
            _ => {
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {group}/{version}, Kind={kind}"
                )));
            }
        };
        let found = found.ok_or_else(|| ApiError::not_found("", plural, bound_name))?;
        let uid = object::meta_str(&found, "uid").unwrap_or("").to_string();
        if kind == "Pod" {
            let runs_as = found
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if runs_as != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                )));
            }
            let node_name = found
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !node_name.is_empty()
                && let Some(node) = get_cluster(req, "Node", node_name).await?
            {
                let node_uid = object::meta_str(&node, "uid").unwrap_or("");
                spec.node = Some(ObjectRef::new(node_name, node_uid));
            }
            spec.pod = Some(ObjectRef::new(bound_name, uid.as_str()));
        } else {
            spec.secret = Some(ObjectRef::new(bound_name, uid.as_str()));
        }
        if let Some(wanted) = bound.uid.as_deref().filter(|u| !u.is_empty())
            && wanted != uid
        {
            return Err(ApiError::conflict(
                "",
                kind,
                bound_name,
                &format!(
                    "the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
    }

    let now = Timestamp::now();
    let token = accounts
        .issue(&spec, now.as_second())
        .map_err(|e| ApiError::internal(format!("signing the token failed: {e}")))?;
    let expires = Timestamp::from_second(now.as_second().saturating_add(expiration))
        .map_err(|e| ApiError::internal(format!("the expiry is out of range: {e}")))?;
    request.spec.audiences = spec.audiences.clone();
    request.spec.expiration_seconds = Some(expiration);
    let mut out = serde_json::to_value(&request)
        .map_err(|e| ApiError::internal(format!("encoding the TokenRequest: {e}")))?;
    out["apiVersion"] = json!(API_VERSION);
    out["kind"] = json!(KIND);
    let meta = object::meta_mut(&mut out);
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    meta.insert(
        "creationTimestamp".into(),
        json!(
            Timestamp::from_second(now.as_second())
                .unwrap_or(now)
                .to_string()
        ),
    );
    out["status"] = json!({"token": token, "expirationTimestamp": expires.to_string()});
    tracing::debug!(%namespace, service_account = name, expiration, "issued a service-account token");
    Ok(json_response(StatusCode::CREATED, &out))
}

/// The body's apiVersion and kind, when given, must be a v1 TokenRequest.
fn check_kind(obj: &mut Value) -> ApiResult<()> {
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(API_VERSION),
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version ({API_VERSION})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(KIND),
        Some(KIND) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind ({KIND}) for serviceaccounts/token"
            )));
        }
    }
    Ok(())
}

/// A namespaced core object from the store.
async fn get(
    req: &Request<'_>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> ApiResult<Option<Value>> {
    read(req, kind, Some(namespace), name).await
}

/// A cluster-scoped core object from the store.
async fn get_cluster(req: &Request<'_>, kind: &str, name: &str) -> ApiResult<Option<Value>> {
    read(req, kind, None, name).await
}

async fn read(
    req: &Request<'_>,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Option<Value>> {
    let rt = req
        .state
        .registry()
        .by_kind("", kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    if name.is_empty() {
        return Ok(None);
    }
    let kv = req
        .state
        .store()
        .get(&rt.key(namespace, name))
        .await
        .map_err(|e| crate::handlers::store_error(rt, name, e))?;
    kv.as_ref().map(object::decode).transpose()
}
