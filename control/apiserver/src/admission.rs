//! Admission: what a write must pass after it is authenticated and authorized and before
//! the registry stores it, as kube-apiserver's admission chain (authenticate -> authorize ->
//! admission -> registry).
//!
//! The plugins, in Kubernetes' order:
//! 1. [`namespace_lifecycle`]: content is created only in a namespace that exists and is not
//!    terminating (before anything else, so a missing namespace is a 404 whatever the body).
//! 2. Mutating: [`limit_ranger`] sets the namespace's default requests and limits on a new
//!    pod; [`service_account`] checks the pod's ServiceAccount exists and mounts its token.
//!    The write path then validates the object.
//! 3. Validating: [`pod_security`] (enforce, audit, warn; namespace labels), the
//!    [`limit_ranger`]'s min/max/ratio, and [`resource_quota`] last, which charges the
//!    namespace's quotas for what it admits.
//!
//! NodeRestriction ([`node_restriction`]) is called by the write, delete and eviction
//! handlers themselves, on creates, updates of every part (status included) and deletes of
//! what a node agent writes.
//!
//! An admitted write may carry warnings (`Warning: 299 - "..."` headers kubectl prints) and
//! audit annotations ([`Outcome`]), which go to the request's audit events
//! (`crate::audit::annotate`).

pub mod limit_ranger;
pub mod namespace_lifecycle;
pub mod node_restriction;
pub mod pod_security;
pub mod resource_quota;
pub mod service_account;

use std::collections::BTreeMap;

use serde_json::Value;
use wasmkube_store::{KeyValue, ListOptions};

use crate::error::{ApiError, ApiResult};
use crate::handlers::{Request, store_error};
use crate::object;

/// What kind of write is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to the main resource (not a subresource).
    Update,
}

/// What admission adds to a write it lets through.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Warnings for the client (`Warning` headers).
    pub warnings: Vec<String>,
    /// Audit annotations of the request (`pod-security.kubernetes.io/audit-violations`, ...).
    pub audit_annotations: BTreeMap<String, String>,
}

impl Outcome {
    fn absorb(&mut self, decision: pod_security::Decision) {
        self.warnings.extend(decision.warnings);
        self.audit_annotations.extend(decision.audit);
    }
}

/// The kinds whose `spec.template` is a pod template PodSecurity warns about.
fn has_pod_template(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "apps",
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet"
        ) | ("batch", "Job")
            | ("", "ReplicationController" | "PodTemplate")
    )
}

/// Whether [`validate`] needs the namespace object on an update of `rt` (PodSecurity warns
/// about changed pod templates by the namespace's labels).
pub fn reads_namespace_on_update(rt: &crate::registry::ResourceType) -> bool {
    rt.namespaced && has_pod_template(rt.group, rt.kind)
}

fn is_pod(req: &Request<'_>) -> bool {
    req.rt.group.is_empty() && req.rt.kind == "Pod"
}

/// The mutating plugins, on a new object after defaulting: LimitRange defaults for pods,
/// then the ServiceAccount plugin.
pub async fn mutate(req: &Request<'_>, op: Operation, obj: &mut Value) -> ApiResult<()> {
    if op != Operation::Create || !is_pod(req) {
        return Ok(());
    }
    let Some(namespace) = req.store_namespace() else {
        return Ok(());
    };
    let ranges = decoded(list_in_namespace(req, "LimitRange", namespace).await?)?;
    if limit_ranger::default_pod(obj, &ranges) {
        // The QoS class follows what the defaults made of the pod (Kubernetes computes it
        // after admission).
        let qos = crate::validation::pod_qos_class(obj.get("spec").unwrap_or(&Value::Null));
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
            && status.contains_key("qosClass")
        {
            status.insert("qosClass".into(), Value::String(qos.into()));
        }
    }
    service_account::admit_pod(req, namespace, obj).await
}

/// The validating plugins. `namespace` is the object's namespace (from
/// [`namespace_lifecycle::admit`]), `old` the current object of an update. Quota is charged
/// unless `dry_run`.
pub async fn validate(
    req: &Request<'_>,
    op: Operation,
    namespace: Option<&Value>,
    obj: &Value,
    old: Option<&Value>,
    dry_run: bool,
) -> ApiResult<Outcome> {
    let rt = req.rt;
    let mut outcome = Outcome::default();
    if rt.group.is_empty() && rt.kind == "Namespace" {
        outcome
            .warnings
            .extend(namespace_labels(req, obj, old).await?);
    }
    if let Some(ns) = namespace {
        let (policy, _) = pod_security::policy_from_labels(&pod_security::labels_of(ns));
        if is_pod(req) && op == Operation::Create {
            if let Some((meta, spec)) = pod_security::pod_parts(obj) {
                let decision = pod_security::admit_pod(&policy, &meta, &spec);
                if let Some(refused) = &decision.refused {
                    log_audit(&decision.audit);
                    return Err(ApiError::forbidden_object(
                        rt.group,
                        rt.plural,
                        object::name(obj),
                        refused,
                    ));
                }
                outcome.absorb(decision);
            }
        } else if has_pod_template(rt.group, rt.kind) {
            let template = obj.pointer("/spec/template");
            let changed = op == Operation::Create
                || old.and_then(|o| o.pointer("/spec/template")) != template;
            if changed && let Some((meta, spec)) = template.and_then(pod_security::pod_parts) {
                outcome.absorb(pod_security::admit_template(&policy, &meta, &spec));
            }
        }
    }
    if op == Operation::Create
        && let Some(namespace) = req.store_namespace()
    {
        if is_pod(req) {
            let ranges = decoded(list_in_namespace(req, "LimitRange", namespace).await?)?;
            if let Some(why) = limit_ranger::check_pod(obj, &ranges) {
                return Err(ApiError::forbidden_object(
                    rt.group,
                    rt.plural,
                    object::name(obj),
                    &why,
                ));
            }
        }
        resource_quota::admit(req, namespace, obj, dry_run).await?;
    }
    log_audit(&outcome.audit_annotations);
    Ok(outcome)
}

/// PodSecurity's part of a namespace write: invalid policy labels are refused; a new
/// enforce level warns about the existing pods it would refuse.
async fn namespace_labels(
    req: &Request<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let labels = pod_security::labels_of(obj);
    let (policy, errors) = pod_security::policy_from_labels(&labels);
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            req.rt.group,
            req.rt.kind,
            object::name(obj),
            &errors,
        ));
    }
    let Some(old) = old else {
        return Ok(Vec::new());
    };
    let (old_policy, _) = pod_security::policy_from_labels(&pod_security::labels_of(old));
    if old_policy.enforce == policy.enforce {
        return Ok(Vec::new());
    }
    let name = object::name(obj);
    let pods = decoded(list_in_namespace(req, "Pod", name).await?)?;
    let parts: Vec<_> = pods
        .iter()
        .filter_map(|p| {
            pod_security::pod_parts(p).map(|(m, s)| (object::name(p).to_string(), m, s))
        })
        .collect();
    Ok(pod_security::existing_pod_warnings(
        name,
        policy.enforce,
        &parts,
    ))
}

/// Every stored object of `kind` (core group) in `namespace`.
pub(crate) async fn list_in_namespace(
    req: &Request<'_>,
    kind: &str,
    namespace: &str,
) -> ApiResult<Vec<KeyValue>> {
    let rt = req
        .state
        .registry()
        .by_kind("", kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    let page = req
        .state
        .store()
        .list(ListOptions {
            prefix: format!("{}{namespace}/", rt.key_prefix()),
            ..Default::default()
        })
        .await
        .map_err(|e| store_error(rt, "", e))?;
    Ok(page.items)
}

fn decoded(items: Vec<KeyValue>) -> ApiResult<Vec<Value>> {
    items.iter().map(object::decode).collect()
}

/// Adds a request's audit annotations to its audit events (`crate::audit`).
fn log_audit(annotations: &BTreeMap<String, String>) {
    for (key, value) in annotations {
        crate::audit::annotate(key, value);
    }
}
