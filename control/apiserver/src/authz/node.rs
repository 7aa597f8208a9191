//! The Node authorizer (`--authorization-mode=Node`), as Kubernetes'
//! `plugin/pkg/auth/authorizer/node`: a node agent (user `system:node:<name>` in the group
//! `system:nodes`) may
//!
//! * read the Secrets, ConfigMaps and PersistentVolumeClaims of the pods bound to it, and
//!   create tokens for their ServiceAccounts, but nothing else of those kinds (the
//!   [`graph`] of pods says which);
//! * get the pods bound to it, and list or watch pods only with the field selector
//!   `spec.nodeName=<its name>`;
//! * read only its own Node, and use only its own Lease in `kube-node-lease`;
//! * do what the `system:node` ClusterRole lists for everything else (create Events,
//!   CertificateSigningRequests, update pod status, ...).
//!
//! Writes are narrowed further by the NodeRestriction admission plugin
//! (`admission::node_restriction`): only its own Node, the status of its own pods, no pod
//! creation. Anyone who is not a node gets no opinion, and RBAC decides.

pub mod graph;

use std::sync::Arc;

use crate::authn::Identity;
use crate::rbac::PolicyRule;

use super::{Attributes, Authorizer, Decision, RequestInfo, RuleSet};
use graph::{NodeGraph, VertexKind};

/// The group every node is in.
pub const GROUP_NODES: &str = "system:nodes";
/// The user name prefix of nodes.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of node Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node an identity is (Kubernetes' `NodeIdentity`): `Some(name)` for a user
/// `system:node:<name>` in `system:nodes` (`Some("")` when the name is empty), `None` for
/// anyone else.
pub fn node_identity(user: &Identity) -> Option<&str> {
    if !user.in_group(GROUP_NODES) {
        return None;
    }
    user.user.strip_prefix(NODE_USER_PREFIX)
}

/// The Node authorizer.
#[derive(Debug)]
pub struct NodeAuthorizer {
    graph: Arc<NodeGraph>,
    rules: Vec<PolicyRule>,
}

impl NodeAuthorizer {
    /// An authorizer over `graph`, allowing the `system:node` role's rules otherwise.
    pub fn new(graph: Arc<NodeGraph>) -> Self {
        NodeAuthorizer {
            graph,
            rules: crate::rbac::node_rules(),
        }
    }

    /// The graph the authorizer reads.
    pub fn graph(&self) -> &Arc<NodeGraph> {
        &self.graph
    }

    fn by_rules(&self, request: &RequestInfo) -> Decision {
        if self.rules.iter().any(|r| r.allows(request)) {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    fn by_graph(&self, node: &str, kind: VertexKind, request: &RequestInfo) -> Decision {
        if request.name.is_empty() {
            return Decision::NoOpinion("No Object name found".into());
        }
        if self
            .graph
            .has_path(node, kind, &request.namespace, &request.name)
        {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    fn read_namespaced(&self, node: &str, kind: VertexKind, request: &RequestInfo) -> Decision {
        if !matches!(request.verb.as_str(), "get" | "list" | "watch") {
            return Decision::NoOpinion("can only read resources of this type".into());
        }
        if !request.subresource.is_empty() {
            return Decision::NoOpinion("cannot read subresource".into());
        }
        if request.namespace.is_empty() {
            return Decision::NoOpinion("can only read namespaced object of this type".into());
        }
        self.by_graph(node, kind, request)
    }

    fn pods(&self, node: &str, request: &RequestInfo) -> Decision {
        match request.verb.as_str() {
            "get" if request.subresource.is_empty() => {
                self.by_graph(node, VertexKind::Pod, request)
            }
            "list" | "watch" => {
                if request
                    .field_selector
                    .iter()
                    .any(|(field, value)| field == "spec.nodeName" && value == node)
                {
                    Decision::Allow(String::new())
                } else {
                    Decision::NoOpinion(
                        "can only list/watch pods with spec.nodeName field selector".into(),
                    )
                }
            }
            _ => self.by_rules(request),
        }
    }

    fn nodes(&self, node: &str, request: &RequestInfo) -> Decision {
        match request.verb.as_str() {
            "get" | "list" | "watch" => {
                if request.name == node {
                    Decision::Allow(String::new())
                } else {
                    Decision::NoOpinion(format!(
                        "node '{node}' cannot read '{}', only its own Node object",
                        request.name
                    ))
                }
            }
            _ => self.by_rules(request),
        }
    }

    fn lease(&self, node: &str, request: &RequestInfo) -> Decision {
        if !matches!(
            request.verb.as_str(),
            "get" | "create" | "update" | "patch" | "delete"
        ) {
            return Decision::NoOpinion(
                "can only get, create, update, patch, or delete a node lease".into(),
            );
        }
        if request.namespace != NODE_LEASE_NAMESPACE {
            return Decision::NoOpinion(format!(
                "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
            ));
        }
        // The name of a create is checked by NodeRestriction, which sees the object.
        if request.verb != "create" && request.name != node {
            return Decision::NoOpinion(
                "can only access node lease with the same name as the requesting node".into(),
            );
        }
        Decision::Allow(String::new())
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        let Some(node) = node_identity(attributes.user) else {
            return Decision::NoOpinion(String::new());
        };
        if node.is_empty() {
            return Decision::NoOpinion(format!(
                "unknown node for user {:?}",
                attributes.user.user
            ));
        }
        let request = attributes.request;
        if !request.resource_request {
            return self.by_rules(request);
        }
        match (request.api_group.as_str(), request.resource.as_str()) {
            ("", "secrets") => self.read_namespaced(node, VertexKind::Secret, request),
            ("", "configmaps") => self.read_namespaced(node, VertexKind::ConfigMap, request),
            ("", "persistentvolumeclaims") if request.subresource.is_empty() => {
                if request.verb == "get" {
                    self.by_graph(node, VertexKind::PersistentVolumeClaim, request)
                } else {
                    Decision::NoOpinion("can only get individual resources of this type".into())
                }
            }
            ("", "serviceaccounts") if request.subresource == "token" => {
                if request.verb == "create" {
                    self.by_graph(node, VertexKind::ServiceAccount, request)
                } else {
                    Decision::NoOpinion(
                        "can only create tokens for individual service accounts".into(),
                    )
                }
            }
            ("coordination.k8s.io", "leases") => self.lease(node, request),
            ("", "pods") => self.pods(node, request),
            ("", "nodes") if request.subresource.is_empty() => self.nodes(node, request),
            _ => self.by_rules(request),
        }
    }

    fn rules_for(&self, user: &Identity, _namespace: &str) -> RuleSet {
        if node_identity(user).is_none() {
            return RuleSet::default();
        }
        RuleSet {
            incomplete: true,
            errors: vec!["node authorizer does not support user rule resolution".into()],
            ..RuleSet::default()
        }
    }
}

/// Whether a refusal of `request` to a node may turn into an allowance once the graph has
/// caught up with the store (the request reads an object the graph links to nodes).
pub fn depends_on_graph(request: &RequestInfo) -> bool {
    request.resource_request
        && request.api_group.is_empty()
        && matches!(
            (request.resource.as_str(), request.subresource.as_str()),
            (
                "secrets" | "configmaps" | "persistentvolumeclaims" | "pods",
                ""
            ) | ("serviceaccounts", "token")
        )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::authz::resolve_request;

    fn node(name: &str) -> Identity {
        Identity {
            user: format!("system:node:{name}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    fn authorizer() -> NodeAuthorizer {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": "creds"}}]},
        });
        NodeAuthorizer::new(Arc::new(NodeGraph::of(&[pod])))
    }

    fn allowed(a: &NodeAuthorizer, user: &Identity, method: &str, path: &str) -> bool {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let request = resolve_request(
            &http::Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            query,
        );
        a.authorize(&Attributes {
            user,
            request: &request,
        })
        .is_allowed()
    }

    #[test]
    fn a_node_reads_only_the_secrets_of_its_own_pods() {
        let a = authorizer();
        let (n1, n2) = (node("n1"), node("n2"));
        assert!(allowed(
            &a,
            &n1,
            "GET",
            "/api/v1/namespaces/ns/secrets/creds"
        ));
        assert!(!allowed(
            &a,
            &n2,
            "GET",
            "/api/v1/namespaces/ns/secrets/creds"
        ));
        assert!(!allowed(
            &a,
            &n1,
            "GET",
            "/api/v1/namespaces/ns/secrets/other"
        ));
        assert!(!allowed(&a, &n1, "GET", "/api/v1/namespaces/ns/secrets"));
        assert!(!allowed(&a, &n1, "GET", "/api/v1/secrets"));
        assert!(!allowed(
            &a,
            &n1,
            "PUT",
            "/api/v1/namespaces/ns/secrets/creds"
        ));
        assert!(allowed(
            &a,
            &n1,
            "GET",
            "/api/v1/namespaces/ns/secrets?fieldSelector=metadata.name%3Dcreds&watch=true"
        ));
    }

    #[test]
    fn a_node_sees_its_own_pods_and_node_and_writes_by_the_node_role() {
        let a = authorizer();
        let n1 = node("n1");
        assert!(allowed(&a, &n1, "GET", "/api/v1/namespaces/ns/pods/web"));
        assert!(!allowed(
            &a,
            &node("n2"),
            "GET",
            "/api/v1/namespaces/ns/pods/web"
        ));
        assert!(allowed(
            &a,
            &n1,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=true"
        ));
        assert!(!allowed(
            &a,
            &n1,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2"
        ));
        assert!(!allowed(&a, &n1, "GET", "/api/v1/pods"));
        assert!(allowed(
            &a,
            &n1,
            "PATCH",
            "/api/v1/namespaces/ns/pods/web/status"
        ));
        assert!(allowed(&a, &n1, "GET", "/api/v1/nodes/n1"));
        assert!(!allowed(&a, &n1, "GET", "/api/v1/nodes/n2"));
        assert!(!allowed(&a, &n1, "GET", "/api/v1/nodes"));
        assert!(allowed(&a, &n1, "PATCH", "/api/v1/nodes/n1/status"));
        assert!(allowed(&a, &n1, "POST", "/api/v1/namespaces/ns/events"));
        assert!(allowed(
            &a,
            &n1,
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        ));
        assert!(!allowed(
            &a,
            &n1,
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2"
        ));
        assert!(!allowed(
            &a,
            &n1,
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1"
        ));
        assert!(!allowed(&a, &n1, "DELETE", "/api/v1/nodes/n1"));
    }

    #[test]
    fn anyone_else_gets_no_opinion() {
        let a = authorizer();
        let alice = Identity {
            user: "alice".into(),
            groups: vec!["system:nodes".into()],
        };
        let request = resolve_request(
            &http::Method::GET,
            "/api/v1/namespaces/ns/secrets/creds",
            "",
        );
        assert_eq!(
            a.authorize(&Attributes {
                user: &alice,
                request: &request
            }),
            Decision::NoOpinion(String::new())
        );
        let impostor = Identity {
            user: "system:node:n1".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert!(
            !a.authorize(&Attributes {
                user: &impostor,
                request: &request
            })
            .is_allowed()
        );
    }
}
