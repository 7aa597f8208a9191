//! `create`, `update` and `patch`, and the update engine shared with the subresources.
//!
//! Server-managed metadata is owned here: uid, creationTimestamp, generation (bumped on
//! spec changes), deletion fields; `.status` is only written through `/status`.

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use wasmkube_api::patch::PatchType;
use wasmkube_store::{Revision, StoreError};

use super::{Request, object_response, store_error};
use crate::admission::{self, Operation};
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::registry::{ResourceType, Subresource};
use crate::request;

/// How many times an unconditional update retries on a concurrent write.
const RETRIES: usize = 16;

/// Characters of generated name suffixes (no vowels, no look-alikes), as Kubernetes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but `.status`.
    Main,
    /// `pods/binding`: `spec.nodeName` and the PodScheduled condition, in one write.
    Binding,
    /// The `/status` subresource: only `.status`.
    Status,
    /// The `/approval` subresource of CertificateSigningRequests: only the conditions.
    Approval,
}

/// The outcome of [`apply_update`].
pub struct Updated {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Checks `kind`/`apiVersion` of a body against the endpoint, filling them in if absent.
pub fn check_kind(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    let want_av = rt.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                rt.kind, rt.plural
            )));
        }
    }
    Ok(())
}

/// Decoding checks against the typed schema; honours `fieldValidation`.
pub fn check_fields(req: &Request<'_>, obj: &Value) -> ApiResult<Vec<String>> {
    let mode = req.query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Ignore, Warn or Strict (got {mode:?})"
        )));
    }
    let unknown = crate::typed::check(req.rt.group, req.rt.kind, obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            req.rt.kind, req.rt.version, req.rt.kind
        ))
    })?;
    if unknown.is_empty() || mode == "Ignore" {
        return Ok(Vec::new());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    Ok(list)
}

fn check_namespace_matches(req: &Request<'_>, obj: &mut Value) -> ApiResult<()> {
    if !req.rt.namespaced {
        meta_mut(obj).remove("namespace");
        return Ok(());
    }
    let Some(ns) = req.namespace.as_deref() else {
        return Err(ApiError::bad_request(format!(
            "{} is namespaced: create it under /namespaces/{{namespace}}/{}",
            req.rt.plural, req.rt.plural
        )));
    };
    match object::meta_str(obj, "namespace") {
        None | Some("") => {}
        Some(n) if n == ns => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    meta_mut(obj).insert("namespace".into(), json!(ns));
    Ok(())
}

/// Validation with metadata rules; field causes make a 422.
fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut causes = crate::validation::validate_metadata(obj, rt.name_rule, rt.namespaced);
    causes.extend((rt.validate)(obj, old));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt.group,
            rt.kind,
            object::name(obj),
            &causes,
        ))
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

/// `POST` a new object.
pub async fn create(req: &Request<'_>, body: Bytes) -> ApiResult<Response> {
    let rt = req.rt;
    let mut obj = request::decode_body(&req.headers, &body)?;
    let dry_run = req.query.dry_run()?;
    check_kind(rt, &mut obj)?;
    check_namespace_matches(req, &mut obj)?;
    let warnings = check_fields(req, &obj)?;
    // A name, possibly generated.
    let name = object::name(&obj).to_string();
    if name.is_empty() {
        match object::meta_str(&obj, "generateName") {
            Some(prefix) if !prefix.is_empty() => {
                let generated = format!("{prefix}{}", random_suffix());
                meta_mut(&mut obj).insert("name".into(), json!(generated));
            }
            _ => {
                let causes = [crate::validation::Cause {
                    reason: "FieldValueRequired",
                    message: "name or generateName is required".into(),
                    field: "metadata.name".into(),
                }];
                return Err(ApiError::invalid(rt.group, rt.kind, "", &causes));
            }
        }
    }
    prepare_create(rt, &mut obj);
    prune_nulls(&mut obj);
    normalize(rt, &mut obj);
    (rt.default)(&mut obj);
    if crate::certificates::is_csr(rt.group, rt.kind) {
        crate::certificates::prepare_create(&mut obj, req.user.as_ref());
        crate::certificates::admit_create(&obj)?;
    }
    let namespace = req.store_namespace().unwrap_or("");
    crate::rbac::admit(req.state, req.user.as_ref(), rt, namespace, &obj, None)?;
    admission::node_restriction::admit_create(req, &obj)?;
    // Admission: namespace lifecycle, then the mutating plugins, validation, and the
    // validating plugins (quota last, charging what it admits).
    let namespace = admission::namespace_lifecycle::admit(req, object::name(&obj)).await?;
    admission::mutate(req, Operation::Create, &mut obj).await?;
    validate(rt, &obj, None)?;
    let admitted = admission::validate(
        req,
        Operation::Create,
        namespace.as_ref(),
        &obj,
        None,
        dry_run,
    )
    .await?;
    let mut warnings = warnings;
    warnings.extend(admitted.warnings);
    let name = object::name(&obj).to_string();
    if dry_run {
        return Ok(with_warnings(
            object_response(req, StatusCode::CREATED, obj),
            &warnings,
        ));
    }
    let key = rt.key(req.store_namespace(), &name);
    let allocations = if rt.group.is_empty() && rt.kind == "Service" {
        crate::services::allocate(req.state, rt, &mut obj).await?
    } else {
        Vec::new()
    };
    let kv = match req.state.store().create(&key, object::encode(&obj)?).await {
        Ok(kv) => kv,
        Err(e) => {
            if !allocations.is_empty() {
                crate::services::release(req.state, &obj).await;
            }
            return Err(store_error(rt, &name, e));
        }
    };
    let created = object::decode(&kv)?;
    crate::rbac::observe_write(req.state, rt, kv.mod_revision).await;
    tracing::debug!(kind = rt.kind, name = %name, rv = kv.mod_revision, "created");
    Ok(with_warnings(
        object_response(req, StatusCode::CREATED, created),
        &warnings,
    ))
}

/// Conversions the Kubernetes apiserver applies to every write of a kind, before
/// defaulting: a Secret's write-only `stringData` is merged into `data`.
pub fn normalize(rt: &ResourceType, obj: &mut Value) {
    if rt.group.is_empty() && rt.kind == "Secret" {
        use base64::Engine;
        let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
            return;
        };
        if let Value::Object(entries) = string_data {
            if !obj.get("data").is_some_and(Value::is_object) {
                obj["data"] = json!({});
            }
            for (k, v) in entries {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
    }
}

/// Removes `null` members of objects, recursively: the Kubernetes apiserver decodes into
/// typed structs, so a `"creationTimestamp": null` a client sends is never stored.
pub fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// Server-managed metadata of a new object.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    let has_status = rt.has_subresource(Subresource::Status);
    let meta = meta_mut(obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(f);
    }
    if rt.has_spec {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if has_status
        && rt.kind != "Node"
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
}

/// Adds `Warning` headers (RFC 7234 code 299) for unknown fields.
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    resp
}

/// `PUT` an object, or one `part` of it (`/status`, `/approval`: only that part is taken
/// from the body).
pub async fn update(req: &Request<'_>, name: &str, body: Bytes, part: Part) -> ApiResult<Response> {
    let mut new = request::decode_body(&req.headers, &body)?;
    check_kind(req.rt, &mut new)?;
    let warnings = check_fields(req, &new)?;
    check_body_name(req, name, &new)?;
    let precondition = object::resource_version(&new)?;
    let dry_run = req.query.dry_run()?;
    let updated = apply_update(req, name, part, precondition, dry_run, &mut |_current| {
        Ok(new.clone())
    })
    .await?;
    let mut warnings = warnings;
    warnings.extend(updated.warnings);
    Ok(with_warnings(
        object_response(req, StatusCode::OK, updated.object),
        &warnings,
    ))
}

/// The body's name must be the URL's.
pub fn check_body_name(req: &Request<'_>, name: &str, obj: &Value) -> ApiResult<()> {
    match object::meta_str(obj, "name") {
        Some(n) if !n.is_empty() && n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => {
            if let Some(ns) = req.store_namespace()
                && let Some(bns) = object::meta_str(obj, "namespace")
                && !bns.is_empty()
                && bns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            Ok(())
        }
    }
}

/// Applies a patch document of the request's content type to `current`.
pub fn apply_patch(
    req: &Request<'_>,
    kind_group: (&str, &str),
    current: &Value,
    patch: &Value,
) -> ApiResult<Value> {
    let ct = request::patch_content_type(&req.headers);
    let patch_type = match ct.as_str() {
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            return Err(ApiError::unsupported_media_type(
                "server-side apply is not supported yet; use client-side `kubectl apply` (the default) \
                 or --type merge|json|strategic patches",
            ));
        }
        other => PatchType::from_content_type(other).ok_or_else(|| {
            ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ))
        })?,
    };
    if patch_type == PatchType::StrategicMerge
        && !wasmkube_api::patch::supports_strategic(kind_group.0, kind_group.1)
    {
        return Err(ApiError::unsupported_media_type(format!(
            "strategic merge patch is not supported for {}; use --type merge or --type json",
            kind_group.1
        )));
    }
    wasmkube_api::patch::apply(patch_type, kind_group.0, kind_group.1, current, patch).map_err(
        |e| {
            let code =
                StatusCode::from_u16(e.http_code()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            // As apimachinery's NewRequestEntityTooLargeError words a 413.
            let message = if code == StatusCode::PAYLOAD_TOO_LARGE {
                format!("Request entity too large: {e}")
            } else {
                e.to_string()
            };
            ApiError {
                code,
                reason: e.reason(),
                message,
                details: None,
                close_connection: false,
            }
        },
    )
}

/// Parses a patch body (JSON; YAML is accepted too as kubectl never sends it but people do).
pub fn decode_patch(req: &Request<'_>, body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the patch is empty"));
    }
    let patch: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml_ng::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let is_json_patch = request::patch_content_type(&req.headers) == "application/json-patch+json";
    if is_json_patch && !patch.is_array() {
        return Err(ApiError::bad_request(
            "a JSON patch must be a JSON array of operations",
        ));
    }
    if !is_json_patch && !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    Ok(patch)
}

/// `PATCH` an object, or one `part` of it: the patch applies to the whole object and, for
/// `/status` and `/approval`, only that part of the result is kept.
pub async fn patch(req: &Request<'_>, name: &str, body: Bytes, part: Part) -> ApiResult<Response> {
    let patch = decode_patch(req, &body)?;
    let dry_run = req.query.dry_run()?;
    let rt = req.rt;
    let mut warnings = Vec::new();
    let mut mutate = |current: &Value| -> ApiResult<Value> {
        let mut new = apply_patch(req, (rt.group, rt.kind), current, &patch)?;
        check_kind(rt, &mut new)?;
        warnings = check_fields(req, &new)?;
        check_body_name(req, name, &new)?;
        Ok(new)
    };
    let updated = apply_update(req, name, part, None, dry_run, &mut mutate).await?;
    let mut all = warnings;
    all.extend(updated.warnings);
    Ok(with_warnings(
        object_response(req, StatusCode::OK, updated.object),
        &all,
    ))
}

/// The update engine: read, mutate, keep server-managed fields, default, validate, and
/// compare-and-swap, retrying on concurrent writes unless the caller gave a precondition.
/// A resourceVersion inside the mutated object is a precondition too (patches may carry one).
pub async fn apply_update(
    req: &Request<'_>,
    name: &str,
    part: Part,
    precondition: Option<Revision>,
    dry_run: bool,
    mutate: &mut (dyn FnMut(&Value) -> ApiResult<Value> + Send),
) -> ApiResult<Updated> {
    let rt = req.rt;
    let key = rt.key(req.store_namespace(), name);
    let store = req.state.store();
    for _ in 0..RETRIES {
        let kv = store
            .get(&key)
            .await
            .map_err(|e| store_error(rt, name, e))?
            .ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))?;
        let current = object::decode(&kv)?;
        let mut new = mutate(&current)?;
        // The caller's precondition (a PUT body's resourceVersion) must match; a mutation
        // (a patch) that leaves the current resourceVersion in place sets none, and one that
        // writes another resourceVersion asked for that version.
        let requested = match precondition {
            Some(p) => Some(p),
            None => object::resource_version(&new)?.filter(|rv| *rv != 0),
        };
        if let Some(p) = requested
            && p != kv.mod_revision
        {
            return Err(ApiError::stale(rt.group, rt.plural, name));
        }
        merge_server_fields(rt, part, &current, &mut new);
        admission::node_restriction::admit_update(req, part, &current, &new)?;
        if crate::certificates::is_csr(rt.group, rt.kind) {
            crate::certificates::prepare_update(part, &current, &mut new);
            crate::certificates::admit_update(req.state, req.user.as_ref(), part, &current, &new)?;
            if part == Part::Status {
                let causes = crate::validation::validate_csr_status_update(&current, &new);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(rt.group, rt.kind, name, &causes));
                }
            }
        }
        prune_nulls(&mut new);
        if part == Part::Main {
            normalize(rt, &mut new);
            if rt.group.is_empty() && rt.kind == "Service" {
                crate::services::carry_over(&current, &mut new);
            }
            (rt.default)(&mut new);
            let namespace = req.store_namespace().unwrap_or("");
            crate::rbac::admit(
                req.state,
                req.user.as_ref(),
                rt,
                namespace,
                &new,
                Some(&current),
            )?;
        }
        validate(rt, &new, Some(&current))?;
        // A value read with an old encryption key is rewritten even when nothing changed:
        // that is how keys rotate (`kubectl replace` of every object).
        if same_object(&current, &new) && !store.is_stale(&key, kv.mod_revision).await {
            return Ok(Updated {
                object: current,
                warnings: Vec::new(),
            });
        }
        let warnings = if part == Part::Main {
            let namespace = if admission::reads_namespace_on_update(rt) {
                admission::namespace_lifecycle::admit(req, name)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            admission::validate(
                req,
                Operation::Update,
                namespace.as_ref(),
                &new,
                Some(&current),
                dry_run,
            )
            .await?
            .warnings
        } else {
            Vec::new()
        };
        if dry_run {
            return Ok(Updated {
                object: new,
                warnings,
            });
        }
        // The last finalizer of a deleting object is gone: the object goes.
        if object::is_deleting(&new)
            && object::finalizers(&new).is_empty()
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
        {
            return match store.delete(&key, Some(kv.mod_revision)).await {
                Ok((_, rev)) => {
                    crate::services::on_deleted(req.state, rt, &new).await;
                    crate::rbac::observe_write(req.state, rt, rev).await;
                    meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
                    Ok(Updated {
                        object: new,
                        warnings: Vec::new(),
                    })
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => Err(store_error(rt, name, e)),
            };
        }
        match store
            .update(&key, object::encode(&new)?, kv.mod_revision)
            .await
        {
            Ok(kv) => {
                crate::rbac::observe_write(req.state, rt, kv.mod_revision).await;
                return Ok(Updated {
                    object: object::decode(&kv)?,
                    warnings,
                });
            }
            Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
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

/// Carries server-managed fields from `current` into `new`.
fn merge_server_fields(rt: &ResourceType, part: Part, current: &Value, new: &mut Value) {
    match part {
        Part::Status | Part::Approval => {
            // Only `.status` comes from the request.
            let status = new.get("status").cloned();
            *new = current.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        Part::Main | Part::Binding => {
            let cur_meta = current.get("metadata").cloned().unwrap_or(json!({}));
            let meta = meta_mut(new);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cur_meta.get(f) {
                    Some(v) => {
                        meta.insert(f.into(), v.clone());
                    }
                    None => {
                        meta.remove(f);
                    }
                }
            }
            meta.remove("selfLink");
            if part == Part::Main && rt.has_subresource(Subresource::Status) {
                match current.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if rt.has_spec && current.get("spec") != new.get("spec") {
                let generation = current
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(new).insert("generation".into(), json!(generation + 1));
            }
        }
    }
    meta_mut(new).insert(
        "resourceVersion".into(),
        current
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null),
    );
}

/// Equal apart from the resourceVersion.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        meta_mut(&mut v).remove("resourceVersion");
        v
    };
    strip(a) == strip(b)
}
