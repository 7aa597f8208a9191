//! NodeRestriction, as Kubernetes' admission plugin: what a node agent (`system:node:<name>`
//! in `system:nodes`) may write, beyond what the Node authorizer lets through.
//!
//! * Pods: a node creates no pods (only mirror pods, which wasmkube does not have), updates
//!   only the status of pods bound to it (and not their labels), deletes and evicts only
//!   pods bound to it.
//! * Nodes: only its own Node; it registers without `node-restriction.kubernetes.io/` labels
//!   or `kubernetes.io`/`k8s.io` labels the kubelet does not set, and never changes its
//!   taints or such labels later (which would steer workloads to it).
//! * Leases: only its own, in `kube-node-lease`.
//! * ServiceAccount tokens: only bound to a pod that runs on it ([`admit_token_request`]).
//!
//! Requests of anyone who is not a node pass untouched. Refusals are 403s worded as
//! Kubernetes': `nodes "b" is forbidden: node "a" is not allowed to modify node "b"`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authentication::v1::TokenRequest;
use serde_json::Value;

use crate::authz::node::node_identity;
use crate::error::{ApiError, ApiResult};
use crate::handlers::Request;
use crate::handlers::write::Part;
use crate::object;

/// The annotation of mirror pods (static pods a kubelet reports).
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The namespace of node Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The label namespace reserved for labels a node may not set on itself.
const NODE_RESTRICTION_LABELS: &str = "node-restriction.kubernetes.io";

/// Labels the kubelet sets on its Node (Kubernetes' `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "node.kubernetes.io/windows-build",
];

fn node_of(req: &Request<'_>) -> Option<String> {
    req.user
        .as_ref()
        .and_then(node_identity)
        .map(str::to_string)
}

fn kind_is(req: &Request<'_>, group: &str, kind: &str) -> bool {
    req.rt.group == group && req.rt.kind == kind
}

fn forbidden(req: &Request<'_>, name: &str, why: String) -> ApiError {
    ApiError::forbidden_object(req.rt.group, req.rt.plural, name, &why)
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    ns == "kubernetes.io"
        || ns.ends_with(".kubernetes.io")
        || ns == "k8s.io"
        || ns.ends_with(".k8s.io")
}

fn is_kubelet_label(key: &str) -> bool {
    let ns = label_namespace(key);
    KUBELET_LABELS.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|allowed| ns == *allowed || ns.ends_with(&format!(".{allowed}")))
}

/// The labels a node may not add, change or remove on itself, sorted.
fn forbidden_labels(new: &BTreeMap<String, String>, old: &BTreeMap<String, String>) -> Vec<String> {
    let modified: BTreeSet<&String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(
            old.iter()
                .filter(|(k, v)| new.get(*k) != Some(*v))
                .map(|(k, _)| k),
        )
        .collect();
    modified
        .into_iter()
        .filter(|key| {
            let ns = label_namespace(key);
            ns == NODE_RESTRICTION_LABELS
                || ns.ends_with(&format!(".{NODE_RESTRICTION_LABELS}"))
                || (is_kubernetes_label(key) && !is_kubelet_label(key))
        })
        .cloned()
        .collect()
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    object::labels(obj)
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn node_name_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A new object written by a node.
pub fn admit_create(req: &Request<'_>, obj: &Value) -> ApiResult<()> {
    let Some(node) = node_of(req) else {
        return Ok(());
    };
    let name = object::name(obj);
    if kind_is(req, "", "Pod") {
        return admit_pod_create(req, &node, obj);
    }
    if kind_is(req, "", "Node") {
        if name != node {
            return Err(forbidden(
                req,
                name,
                format!("node {node:?} is not allowed to modify node {name:?}"),
            ));
        }
        if obj
            .pointer("/spec/configSource")
            .is_some_and(|c| !c.is_null())
        {
            return Err(forbidden(
                req,
                name,
                format!("node {node:?} is not allowed to create pods with a non-nil configSource"),
            ));
        }
        let forbidden_set = forbidden_labels(&labels(obj), &BTreeMap::new());
        if !forbidden_set.is_empty() {
            return Err(forbidden(
                req,
                name,
                format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden_set.join(", ")
                ),
            ));
        }
        return Ok(());
    }
    if kind_is(req, "coordination.k8s.io", "Lease") {
        return admit_lease(req, &node, name);
    }
    Ok(())
}

fn admit_pod_create(req: &Request<'_>, node: &str, pod: &Value) -> ApiResult<()> {
    let name = object::name(pod);
    let mirror = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
        .is_some();
    if !mirror {
        return Err(forbidden(
            req,
            name,
            format!(
                "pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
            ),
        ));
    }
    if node_name_of(pod) != node {
        return Err(forbidden(
            req,
            name,
            format!("node {node:?} can only create pods with spec.nodeName set to itself"),
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let owned_by_node = matches!(owners, [owner]
        if owner.get("apiVersion").and_then(Value::as_str) == Some("v1")
            && owner.get("kind").and_then(Value::as_str) == Some("Node")
            && owner.get("name").and_then(Value::as_str) == Some(node)
            && owner.get("controller").and_then(Value::as_bool) == Some(true));
    if !owned_by_node {
        return Err(forbidden(
            req,
            name,
            format!(
                "node {node:?} can only create pods with a controller owner reference set to itself"
            ),
        ));
    }
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(forbidden(
            req,
            name,
            format!("node {node:?} can not create pods that reference a service account"),
        ));
    }
    let text = spec.to_string();
    for (field, what) in [
        ("\"secret\"", "secrets"),
        ("\"secretKeyRef\"", "secrets"),
        ("\"secretRef\"", "secrets"),
        ("\"imagePullSecrets\"", "secrets"),
        ("\"configMap\"", "configmaps"),
        ("\"configMapKeyRef\"", "configmaps"),
        ("\"configMapRef\"", "configmaps"),
        ("\"persistentVolumeClaim\"", "persistentvolumeclaims"),
    ] {
        if text.contains(field) {
            return Err(forbidden(
                req,
                name,
                format!("node {node:?} can not create pods that reference {what}"),
            ));
        }
    }
    Ok(())
}

fn admit_lease(req: &Request<'_>, node: &str, name: &str) -> ApiResult<()> {
    if req.store_namespace() != Some(NODE_LEASE_NAMESPACE) {
        return Err(forbidden(
            req,
            name,
            format!("can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"),
        ));
    }
    if name != node {
        return Err(forbidden(
            req,
            name,
            "can only access node lease with the same name as the requesting node".into(),
        ));
    }
    Ok(())
}

/// An update by a node of `part` of an object: `current` as stored, `new` as it would be.
pub fn admit_update(req: &Request<'_>, part: Part, current: &Value, new: &Value) -> ApiResult<()> {
    let Some(node) = node_of(req) else {
        return Ok(());
    };
    let name = object::name(current);
    if kind_is(req, "", "Pod") {
        return match part {
            Part::Status => {
                if node_name_of(current) != node {
                    return Err(forbidden(
                        req,
                        name,
                        format!(
                            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                        ),
                    ));
                }
                if labels(current) != labels(new) {
                    return Err(forbidden(
                        req,
                        name,
                        format!("node {node:?} cannot update labels through pod status"),
                    ));
                }
                Ok(())
            }
            Part::Main => Err(forbidden(
                req,
                name,
                format!(
                    "unexpected operation \"UPDATE\", node {node:?} can only create and delete mirror pods"
                ),
            )),
            Part::Binding | Part::Approval => Err(forbidden(
                req,
                name,
                "unexpected pod subresource, only 'status' and 'eviction' are allowed".into(),
            )),
        };
    }
    if kind_is(req, "", "Node") {
        if name != node {
            return Err(forbidden(
                req,
                name,
                format!("node {node:?} is not allowed to modify node {name:?}"),
            ));
        }
        let config_source = new.pointer("/spec/configSource").filter(|c| !c.is_null());
        if config_source.is_some() && config_source != current.pointer("/spec/configSource") {
            return Err(forbidden(
                req,
                name,
                format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ),
            ));
        }
        let taints = |o: &Value| {
            o.pointer("/spec/taints")
                .cloned()
                .filter(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
        };
        if taints(current) != taints(new) {
            return Err(forbidden(
                req,
                name,
                format!("node {node:?} is not allowed to modify taints"),
            ));
        }
        let forbidden_set = forbidden_labels(&labels(new), &labels(current));
        if !forbidden_set.is_empty() {
            return Err(forbidden(
                req,
                name,
                format!(
                    "is not allowed to modify labels: {}",
                    forbidden_set.join(", ")
                ),
            ));
        }
        return Ok(());
    }
    if kind_is(req, "coordination.k8s.io", "Lease") {
        return admit_lease(req, &node, name);
    }
    Ok(())
}

/// A deletion by a node of `current`.
pub fn admit_delete(req: &Request<'_>, current: &Value) -> ApiResult<()> {
    let Some(node) = node_of(req) else {
        return Ok(());
    };
    let name = object::name(current);
    if kind_is(req, "", "Pod") && node_name_of(current) != node {
        return Err(forbidden(
            req,
            name,
            format!("node {node:?} can only delete pods with spec.nodeName set to itself"),
        ));
    }
    if kind_is(req, "", "Node") && name != node {
        return Err(forbidden(
            req,
            name,
            format!("node {node:?} is not allowed to modify node {name:?}"),
        ));
    }
    if kind_is(req, "coordination.k8s.io", "Lease") {
        return admit_lease(req, &node, name);
    }
    Ok(())
}

/// An eviction by a node of `pod`.
pub fn admit_eviction(req: &Request<'_>, pod: &Value) -> ApiResult<()> {
    let Some(node) = node_of(req) else {
        return Ok(());
    };
    if node_name_of(pod) != node {
        return Err(forbidden(
            req,
            object::name(pod),
            format!("node {node} can only evict pods with spec.nodeName set to itself"),
        ));
    }
    Ok(())
}

/// Whether NodeRestriction looks at this request at all: the requester is a node.
pub fn requested_by_node(req: &Request<'_>) -> bool {
    node_of(req).is_some()
}

/// A TokenRequest for service account `account` (`serviceaccounts/<account>/token`) by a
/// node, as Kubernetes' `admitServiceAccount`: the token must be bound
/// (`spec.boundObjectRef`) to a pod named with its uid, and that pod must run on the node.
/// `pod` is the bound pod as stored (`None` if it does not exist, answered 404 as Kubernetes
/// does); the handler reads it only when [`requested_by_node`]. Refusals are 403s on the
/// service account in Kubernetes' words.
pub fn admit_token_request(
    req: &Request<'_>,
    account: &str,
    token_request: &TokenRequest,
    pod: Option<&Value>,
) -> ApiResult<()> {
    let Some(node) = node_of(req) else {
        return Ok(());
    };
    check_token_request(&node, token_request, pod).map_err(|refusal| match refusal {
        TokenRefusal::Forbidden(why) => forbidden(req, account, why),
        TokenRefusal::PodNotFound(pod) => ApiError::not_found("", "pods", &pod),
    })
}

/// Why NodeRestriction refuses a node's TokenRequest.
#[derive(Debug, PartialEq)]
enum TokenRefusal {
    /// 403, with Kubernetes' reason.
    Forbidden(String),
    /// The bound pod (named) does not exist: 404.
    PodNotFound(String),
}

/// [`admit_token_request`]'s rules for a request by `node`.
fn check_token_request(
    node: &str,
    token_request: &TokenRequest,
    pod: Option<&Value>,
) -> Result<(), TokenRefusal> {
    let not_bound = || TokenRefusal::Forbidden("node requested token not bound to a pod".into());
    let bound = token_request
        .spec
        .bound_object_ref
        .as_ref()
        .ok_or_else(not_bound)?;
    let name = bound.name.as_deref().unwrap_or("");
    if bound.api_version.as_deref() != Some("v1")
        || bound.kind.as_deref() != Some("Pod")
        || name.is_empty()
    {
        return Err(not_bound());
    }
    let uid = bound.uid.as_deref().unwrap_or("");
    if uid.is_empty() {
        return Err(TokenRefusal::Forbidden(
            "node requested token with a pod binding without a uid".into(),
        ));
    }
    let pod = pod.ok_or_else(|| TokenRefusal::PodNotFound(name.to_string()))?;
    if object::meta_str(pod, "uid") != Some(uid) {
        return Err(TokenRefusal::Forbidden(format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. \
             The object might have been deleted and then recreated"
        )));
    }
    if node_name_of(pod) != node {
        return Err(TokenRefusal::Forbidden(
            "node requested token bound to a pod scheduled on a different node".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nodes_keep_their_hands_off_restricted_labels() {
        let old = map(&[("kubernetes.io/hostname", "a"), ("team", "x")]);
        let fine = map(&[
            ("kubernetes.io/hostname", "a"),
            ("team", "y"),
            ("node.kubernetes.io/instance-type", "big"),
            ("wasmkube.io/runtime.wasmtime", "true"),
        ]);
        assert!(forbidden_labels(&fine, &old).is_empty());
        let bad = map(&[
            ("node-restriction.kubernetes.io/trusted", "yes"),
            ("node-role.kubernetes.io/control-plane", ""),
            ("example.k8s.io/x", "1"),
        ]);
        assert_eq!(
            forbidden_labels(&bad, &BTreeMap::new()),
            vec![
                "example.k8s.io/x",
                "node-restriction.kubernetes.io/trusted",
                "node-role.kubernetes.io/control-plane"
            ]
        );
        // Removing one counts as modifying it.
        let with_role = map(&[("node-role.kubernetes.io/worker", "")]);
        assert_eq!(
            forbidden_labels(&BTreeMap::new(), &with_role),
            vec!["node-role.kubernetes.io/worker"]
        );
    }

    #[test]
    fn token_requests_by_nodes_must_be_bound_to_their_own_pods() {
        let pod = json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {"nodeName": "n1"}});
        let request = |bound: Value| -> TokenRequest {
            serde_json::from_value(json!({"spec": {"audiences": [], "boundObjectRef": bound}}))
                .expect("a TokenRequest")
        };
        let bound = |uid: &str| {
            request(json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": uid}))
        };
        let forbidden = |why: &str| Err(TokenRefusal::Forbidden(why.into()));
        assert_eq!(check_token_request("n1", &bound("u1"), Some(&pod)), Ok(()));

        let unbound: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": []}})).expect("a TokenRequest");
        assert_eq!(
            check_token_request("n1", &unbound, Some(&pod)),
            forbidden("node requested token not bound to a pod")
        );
        let secret = request(json!({"apiVersion": "v1", "kind": "Secret", "name": "s"}));
        assert_eq!(
            check_token_request("n1", &secret, None),
            forbidden("node requested token not bound to a pod")
        );
        assert_eq!(
            check_token_request("n1", &bound(""), Some(&pod)),
            forbidden("node requested token with a pod binding without a uid")
        );
        assert_eq!(
            check_token_request("n1", &bound("u1"), None),
            Err(TokenRefusal::PodNotFound("web".into()))
        );
        assert_eq!(
            check_token_request("n1", &bound("u2"), Some(&pod)),
            forbidden(
                "the UID in the bound object reference (u2) does not match the UID in record. \
                 The object might have been deleted and then recreated"
            )
        );
        let elsewhere =
            json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {"nodeName": "n2"}});
        assert_eq!(
            check_token_request("n1", &bound("u1"), Some(&elsewhere)),
            forbidden("node requested token bound to a pod scheduled on a different node")
        );
        let pending = json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {}});
        assert_eq!(
            check_token_request("n1", &bound("u1"), Some(&pending)),
            forbidden("node requested token bound to a pod scheduled on a different node")
        );
    }
}
