//! `delete` and `deletecollection`: graceful deletion of pods, finalizers, preconditions.
//!
//! An object with finalizers (or a pod given a grace period on a node) is not removed: it
//! gets `deletionTimestamp` and `deletionGracePeriodSeconds` and stays until its finalizers
//! are gone (and, for pods, the node agent confirms with a zero grace period).

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use wasmkube_store::StoreError;

use super::read::{list_objects, read_object};
use super::{Request, json_response, object_response, store_error};
use crate::error::{ApiError, ApiResult};
use crate::filter::Filter;
use crate::object::{self, meta_mut};

/// The merged `DeleteOptions` of the query string and the body.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads the options; a malformed body or value is a 400.
    pub fn from_request(req: &Request<'_>, body: &Bytes) -> ApiResult<Self> {
        let mut opts = DeleteOptions {
            grace_period_seconds: req.query.int("gracePeriodSeconds")?,
            propagation_policy: req.query.get("propagationPolicy").map(str::to_string),
            dry_run: req.query.dry_run()?,
            ..Default::default()
        };
        if req.query.get("orphanDependents") == Some("true") {
            opts.propagation_policy = Some("Orphan".into());
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = crate::request::decode_body(&req.headers, body)?;
            if let Some(g) = v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
                opts.grace_period_seconds = Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?);
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                opts.propagation_policy = Some(p.to_string());
            }
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                opts.propagation_policy = Some("Orphan".into());
            }
            if let Some(uid) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
                opts.precondition_uid = Some(uid.to_string());
            }
            if let Some(rv) = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
            {
                opts.precondition_rv = Some(rv.to_string());
            }
            if let Some(d) = v.get("dryRun").and_then(Value::as_array)
                && d.iter().any(|x| x.as_str() == Some("All"))
            {
                opts.dry_run = true;
            }
        }
        if let Some(p) = &opts.propagation_policy
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy must be one of Orphan, Background or Foreground (got {p:?})"
            )));
        }
        if opts.grace_period_seconds.is_some_and(|g| g < 0) {
            opts.grace_period_seconds = Some(1);
        }
        Ok(opts)
    }
}

/// What a deletion did.
pub enum Deleted {
    /// Removed from the store; the object as it was, stamped with the deletion revision.
    Gone(Value),
    /// Marked for deletion and kept (finalizers or a grace period).
    Pending(Value),
}

/// `DELETE` one object.
pub async fn delete(req: &Request<'_>, name: &str, body: Bytes) -> ApiResult<Response> {
    let opts = DeleteOptions::from_request(req, &body)?;
    let obj = match delete_object(req, name, &opts).await? {
        Deleted::Gone(obj) | Deleted::Pending(obj) => obj,
    };
    Ok(object_response(req, StatusCode::OK, obj))
}

/// The grace period a deletion gets: only pods running on a node get one.
fn grace_period(req: &Request<'_>, obj: &Value, opts: &DeleteOptions) -> i64 {
    if req.rt.kind != "Pod" || !req.rt.group.is_empty() {
        return 0;
    }
    let scheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !scheduled || finished {
        return 0;
    }
    opts.grace_period_seconds
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

/// Deletes (or marks for deletion) one object, retrying on concurrent writes.
pub async fn delete_object(
    req: &Request<'_>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<Deleted> {
    let rt = req.rt;
    let key = rt.key(req.store_namespace(), name);
    let store = req.state.store();
    if rt.group.is_empty()
        && rt.kind == "Namespace"
        && matches!(name, "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    for _ in 0..16 {
        let (current, rev) = read_object(req, name).await?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = object::meta_str(&current, "uid").unwrap_or("");
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
        if let Some(prv) = &opts.precondition_rv
            && object::parse_rv(prv)? != rev
        {
            return Err(ApiError::conflict(
                rt.group,
                rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {prv}, ResourceVersion in object meta: {rev}"
                ),
            ));
        }
        let grace = grace_period(req, &current, opts);
        let mut marked = current.clone();
        let mut finalizers = object::finalizers(&current);
        if req.state.has_garbage_collector() && !object::is_deleting(&current) {
            let extra = match opts.propagation_policy.as_deref() {
                Some("Orphan") => Some("orphan"),
                Some("Foreground") => Some("foregroundDeletion"),
                _ => None,
            };
            if let Some(f) = extra
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
                meta_mut(&mut marked).insert("finalizers".into(), json!(finalizers));
            }
        }
        // Namespaces always wait for their content to be removed.
        let is_namespace = rt.group.is_empty() && rt.kind == "Namespace";
        let keep = grace > 0 || !finalizers.is_empty() || is_namespace;
        if opts.dry_run {
            return Ok(if keep {
                Deleted::Pending(current)
            } else {
                Deleted::Gone(current)
            });
        }
        if keep {
            let current_grace = current
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            let already = object::is_deleting(&current);
            // A second delete may only shorten a pod's grace period.
            let new_grace = match current_grace {
                Some(g) if already => g.min(grace),
                _ => grace,
            };
            if already && current_grace == Some(new_grace) && marked == current {
                if new_grace == 0 && finalizers.is_empty() && !is_namespace {
                    // fall through to removal below
                } else {
                    return Ok(Deleted::Pending(current));
                }
            } else {
                let meta = meta_mut(&mut marked);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(object::rfc3339_in(new_grace)),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(new_grace));
                if is_namespace {
                    marked["status"] = json!({"phase": "Terminating"});
                }
                if new_grace > 0 || !finalizers.is_empty() || is_namespace {
                    match store.update(&key, object::encode(&marked)?, rev).await {
                        Ok(kv) => {
                            let obj = object::decode(&kv)?;
                            if is_namespace {
                                crate::namespace::spawn_finalizer(
                                    req.state.clone(),
                                    name.to_string(),
                                );
                            }
                            return Ok(Deleted::Pending(obj));
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(store_error(rt, name, e)),
                    }
                }
            }
        }
        match store.delete(&key, Some(rev)).await {
            Ok((_, deleted_at)) => {
                crate::services::on_deleted(req.state, rt, &current).await;
                let mut gone = current;
                meta_mut(&mut gone).insert("resourceVersion".into(), json!(deleted_at.to_string()));
                return Ok(Deleted::Gone(gone));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::not_found(rt.group, rt.plural, name));
            }
            Err(e) => return Err(store_error(rt, name, e)),
        }
    }
    Err(ApiError::conflict(
        rt.group,
        rt.plural,
        name,
        "too many concurrent writes; please try again",
    ))
}

/// `DELETE` a collection (with selectors).
pub async fn delete_collection(req: &Request<'_>, body: Bytes) -> ApiResult<Response> {
    let opts = DeleteOptions::from_request(req, &body)?;
    let filter = Filter::from_query(req.rt, &req.query)?;
    let listed = list_objects(req, &filter).await?;
    let mut items = Vec::new();
    for obj in listed.items {
        let name = object::name(&obj).to_string();
        let ns = object::meta_str(&obj, "namespace").map(str::to_string);
        let per_object = Request {
            state: req.state,
            rt: req.rt,
            namespace: ns.or_else(|| req.namespace.clone()),
            query: crate::request::Query::default(),
            headers: req.headers.clone(),
            output: req.output,
            include: req.include,
        };
        match delete_object(&per_object, &name, &opts).await {
            Ok(Deleted::Gone(o) | Deleted::Pending(o)) => items.push(o),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "kind": format!("{}List", req.rt.kind),
        "apiVersion": req.rt.api_version(),
        "metadata": {"resourceVersion": req.state.store().current_revision().to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}
