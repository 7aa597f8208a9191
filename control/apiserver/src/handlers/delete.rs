//! `delete` and `deletecollection`: graceful deletion of pods, finalizers, preconditions,
//! and the garbage collector's propagation policies.
//!
//! An object with finalizers (or a pod given a grace period on a node) is not removed: it
//! gets `deletionTimestamp` and `deletionGracePeriodSeconds` and stays until its finalizers
//! are gone (and, for pods, the node agent confirms with a zero grace period).
//!
//! Propagation (as Kubernetes' generic registry store): `Orphan` (or the legacy
//! `orphanDependents: true`) adds the `orphan` finalizer, `Foreground` adds
//! `foregroundDeletion`, `Background` (the default of every kind served here) adds
//! neither and removes both; with no policy, a finalizer already on the object decides.
//! The garbage collector (`wasmkube-controllers`) then orphans or deletes the dependents
//! and removes the finalizer, and the last finalizer's removal removes the object
//! (`write.rs`).

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

/// The finalizer that makes the garbage collector orphan an object's dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes the garbage collector delete an object's dependents first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The merged `DeleteOptions` of the query string and the body.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    /// The deprecated `orphanDependents`; when set it overrides the policy.
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads the options; a malformed body or value is a 400, `orphanDependents` together
    /// with `propagationPolicy` a 422 (as Kubernetes' `ValidateDeleteOptions`).
    pub fn from_request(req: &Request<'_>, body: &Bytes) -> ApiResult<Self> {
        let mut opts = DeleteOptions {
            grace_period_seconds: req.query.int("gracePeriodSeconds")?,
            propagation_policy: req.query.get("propagationPolicy").map(str::to_string),
            dry_run: req.query.dry_run()?,
            ..Default::default()
        };
        match req.query.get("orphanDependents") {
            Some("true") => opts.orphan_dependents = Some(true),
            Some("false") => opts.orphan_dependents = Some(false),
            _ => {}
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = crate::request::decode_body(&req.headers, body)?;
            opts.merge_json(&v)?;
        }
        opts.checked()
    }

    /// Reads the options of a `DeleteOptions` JSON object (an Eviction's `deleteOptions`),
    /// with the checks of [`DeleteOptions::from_request`].
    pub fn from_json(v: &Value) -> ApiResult<Self> {
        let mut opts = DeleteOptions::default();
        opts.merge_json(v)?;
        opts.checked()
    }

    /// Overrides the options with those a `DeleteOptions` object sets.
    fn merge_json(&mut self, v: &Value) -> ApiResult<()> {
        let opts = self;
        if let Some(g) = v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
            opts.grace_period_seconds =
                Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation_policy = Some(p.to_string());
        }
        if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
            opts.orphan_dependents = Some(o);
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
        Ok(())
    }

    /// The Kubernetes `ValidateDeleteOptions` checks, and a negative grace period as 1.
    fn checked(mut self) -> ApiResult<Self> {
        let opts = &mut self;
        if let Some(p) = &opts.propagation_policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy must be one of Orphan, Background or Foreground (got {p:?})"
                )));
            }
            if opts.orphan_dependents.is_some() {
                let causes = [crate::validation::Cause {
                    reason: "FieldValueInvalid",
                    message: format!(
                        "Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"
                    ),
                    field: "propagationPolicy".into(),
                }];
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    &causes,
                ));
            }
        }
        if opts.grace_period_seconds.is_some_and(|g| g < 0) {
            opts.grace_period_seconds = Some(1);
        }
        Ok(self)
    }

    /// Whether the dependents are to be orphaned (`shouldOrphanDependents`): the options
    /// decide, else a GC finalizer already on the object, else no (Background is the
    /// default policy of every kind served here).
    fn orphans(&self, existing: &[String]) -> bool {
        if let Some(o) = self.orphan_dependents {
            return o;
        }
        match self.propagation_policy.as_deref() {
            Some("Orphan") => return true,
            Some(_) => return false,
            None => {}
        }
        first_gc_finalizer(existing) == Some(ORPHAN_FINALIZER)
    }

    /// Whether the dependents are to be deleted first (`shouldDeleteDependents`).
    fn deletes_in_foreground(&self, existing: &[String]) -> bool {
        if self.orphan_dependents.is_some() {
            return false;
        }
        match self.propagation_policy.as_deref() {
            Some("Foreground") => return true,
            Some(_) => return false,
            None => {}
        }
        first_gc_finalizer(existing) == Some(FOREGROUND_FINALIZER)
    }
}

fn first_gc_finalizer(finalizers: &[String]) -> Option<&str> {
    finalizers
        .iter()
        .map(String::as_str)
        .find(|f| *f == ORPHAN_FINALIZER || *f == FOREGROUND_FINALIZER)
}

/// The finalizers an object has after a deletion with `opts` when a garbage collector
/// runs (Kubernetes' `deletionFinalizersForGarbageCollection`): the other finalizers in
/// their order, then `orphan` or `foregroundDeletion` as the options (or the object)
/// ask. The existing list is returned unchanged when the set is the same.
pub fn gc_finalizers(existing: &[String], opts: &DeleteOptions) -> Vec<String> {
    let mut new: Vec<String> = existing
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if opts.orphans(existing) {
        new.push(ORPHAN_FINALIZER.into());
    }
    if opts.deletes_in_foreground(existing) {
        new.push(FOREGROUND_FINALIZER.into());
    }
    let same = new.len() == existing.len() && new.iter().all(|f| existing.contains(f));
    if same { existing.to_vec() } else { new }
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
        crate::admission::node_restriction::admit_delete(req, &current)?;
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
        let already = object::is_deleting(&current);
        let current_grace = current
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .filter(|_| already)
            .unwrap_or(0);
        // A second delete may only shorten a pod's grace period; one that does not leaves
        // the pod (and its finalizers) as it is, as Kubernetes' `BeforeDelete`.
        let grace = match grace_period(req, &current, opts) {
            g if current_grace > 0 => g.min(current_grace),
            g => g,
        };
        if current_grace > 0 && grace == current_grace {
            return Ok(Deleted::Pending(current));
        }
        let existing = object::finalizers(&current);
        let finalizers = if req.state.has_garbage_collector() {
            gc_finalizers(&existing, opts)
        } else {
            existing.clone()
        };
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
            let mut marked = current.clone();
            if !already
                && let Some(generation) = current
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                && generation > 0
            {
                meta_mut(&mut marked).insert("generation".into(), json!(generation + 1));
            }
            let meta = meta_mut(&mut marked);
            if finalizers != existing {
                meta.insert("finalizers".into(), json!(finalizers));
            }
            // The countdown starts now unless an earlier deletion already started it.
            if !already || grace < current_grace {
                meta.insert("deletionTimestamp".into(), json!(object::rfc3339_in(grace)));
            }
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            if marked == current {
                return Ok(Deleted::Pending(current));
            }
            match store.update(&key, object::encode(&marked)?, rev).await {
                Ok(kv) => {
                    let obj = object::decode(&kv)?;
                    if is_namespace {
                        crate::namespace::spawn_finalizer(req.state.clone(), name.to_string());
                    }
                    return Ok(Deleted::Pending(obj));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => {
                    return Err(ApiError::not_found(rt.group, rt.plural, name));
                }
                Err(e) => return Err(store_error(rt, name, e)),
            }
        }
        match store.delete(&key, Some(rev)).await {
            Ok((_, deleted_at)) => {
                crate::services::on_deleted(req.state, rt, &current).await;
                crate::rbac::observe_write(req.state, rt, deleted_at).await;
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
            user: req.user.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(policy: Option<&str>, orphan: Option<bool>) -> DeleteOptions {
        DeleteOptions {
            propagation_policy: policy.map(str::to_string),
            orphan_dependents: orphan,
            ..Default::default()
        }
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn orphan_and_foreground_policies_add_their_finalizer_after_the_others() {
        let existing = list(&["example.com/keep"]);
        assert_eq!(
            gc_finalizers(&existing, &opts(Some("Orphan"), None)),
            list(&["example.com/keep", "orphan"])
        );
        assert_eq!(
            gc_finalizers(&existing, &opts(Some("Foreground"), None)),
            list(&["example.com/keep", "foregroundDeletion"])
        );
        assert_eq!(
            gc_finalizers(&existing, &opts(Some("Background"), None)),
            existing
        );
    }

    #[test]
    fn background_removes_a_pending_orphan_or_foreground_finalizer() {
        assert!(gc_finalizers(&list(&["orphan"]), &opts(Some("Background"), None)).is_empty());
        assert_eq!(
            gc_finalizers(&list(&["foregroundDeletion"]), &opts(Some("Orphan"), None)),
            list(&["orphan"])
        );
    }

    #[test]
    fn without_a_policy_the_objects_own_gc_finalizer_decides_and_the_default_is_background() {
        let fg = list(&["foregroundDeletion", "x/y"]);
        assert_eq!(gc_finalizers(&fg, &opts(None, None)), fg);
        assert!(gc_finalizers(&[], &opts(None, None)).is_empty());
    }

    #[test]
    fn legacy_orphan_dependents_overrides_the_object_finalizers() {
        assert_eq!(
            gc_finalizers(&[], &opts(None, Some(true))),
            list(&["orphan"])
        );
        assert!(gc_finalizers(&list(&["foregroundDeletion"]), &opts(None, Some(false))).is_empty());
    }
}
