//! The csrapproving controller's decision: which pending requests the server approves by
//! itself, as Kubernetes' `sarApprove` does.
//!
//! * `kubernetes.io/kube-apiserver-client-kubelet` requests for a node client certificate
//!   (CN `system:node:<name>`, O `system:nodes`, no SANs, client usages) are approved when
//!   the requester may `create` `certificatesigningrequests/selfnodeclient` (a node
//!   renewing its own certificate: the CN is the requester) or
//!   `certificatesigningrequests/nodeclient` (a bootstrap token joining a node), by a
//!   SubjectAccessReview of the requester recorded in the CSR's spec.
//! * `kubernetes.io/kubelet-serving` requests are approved when a node asks for its own
//!   serving certificate (CN and requester `system:node:<name>`, group `system:nodes`)
//!   naming only its own addresses: every IP SAN is one of the Node's `status.addresses`,
//!   every DNS SAN the node's name or a Hostname/InternalDNS/ExternalDNS address.
//!   Kubernetes leaves these to an administrator or an external approver; wasmkube
//!   approves them so that the apiserver can always verify the agent it talks to
//!   (`node_proxy`), which is safe because the SANs are checked against the Node the
//!   requester may only write as itself (NodeRestriction).
//! * `kubernetes.io/kube-apiserver-client` requests for the `system:kube-proxy` identity (CN
//!   `system:kube-proxy`, no organization, no SANs, client usages) are approved when the
//!   requester is a node (`system:node:<name>` in `system:nodes`) that may `create`
//!   `certificatesigningrequests/nodeproxyclient` (ClusterRole
//!   `wasmkube:certificatesigningrequests:nodeproxyclient`, bound to `system:nodes`). This
//!   is wasmkube's way of doing what k3s does by handing every joining agent a kube-proxy
//!   certificate: a node's own credentials may read only its own Node, and its kube-proxy
//!   and the routed pod network's routes need every Node, Service and EndpointSlice.
//!   Unbinding the role turns it off.

use std::net::IpAddr;

use serde_json::Value;

use super::csr;
use super::signer::check_request;
use super::{SIGNER_KUBE_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING};
use crate::authn::Identity;
use crate::authz::{Attributes, Authorizer, RequestInfo};

/// The reason of an automatic approval, as Kubernetes words it.
pub const REASON: &str = "AutoApproved";
/// The user a node's kube-proxy certificate names.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";

/// The names a node's serving certificate may carry: from its Node object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeNames {
    /// Every address in `status.addresses` that is an IP.
    pub ips: Vec<IpAddr>,
    /// The node's name and its Hostname/InternalDNS/ExternalDNS addresses.
    pub dns: Vec<String>,
}

impl NodeNames {
    /// The names of `node` (a Node object).
    pub fn of(node: &Value) -> Self {
        let mut names = NodeNames::default();
        if let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) {
            names.dns.push(name.to_string());
        }
        for address in node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let value = address.get("address").and_then(Value::as_str).unwrap_or("");
            let kind = address.get("type").and_then(Value::as_str).unwrap_or("");
            match value.parse::<IpAddr>() {
                Ok(ip) => names.ips.push(ip),
                Err(_) if matches!(kind, "Hostname" | "InternalDNS" | "ExternalDNS") => {
                    names.dns.push(value.to_string())
                }
                Err(_) => {}
            }
        }
        names
    }
}

/// Whether a CSR already has an `Approved` or `Denied` condition.
pub fn is_decided(csr: &Value) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            matches!(
                c.get("type").and_then(Value::as_str),
                Some("Approved" | "Denied")
            )
        })
}

/// The node a serving request is for, when the server may approve one at all.
pub fn serving_node(csr_obj: &Value) -> Option<String> {
    let signer = csr_obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)?;
    if signer != SIGNER_KUBELET_SERVING || is_decided(csr_obj) {
        return None;
    }
    let user = csr_obj.pointer("/spec/username").and_then(Value::as_str)?;
    user.strip_prefix("system:node:").map(str::to_string)
}

/// The requester recorded in the CSR's spec.
fn requester(csr_obj: &Value) -> Identity {
    Identity {
        user: csr_obj
            .pointer("/spec/username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups: csr_obj
            .pointer("/spec/groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The approval message if the server approves `csr_obj`, `None` to leave it pending.
/// `node` holds the names of the node a serving request is for ([`serving_node`]).
pub fn decide(
    csr_obj: &Value,
    authorizer: &dyn Authorizer,
    node: Option<&NodeNames>,
) -> Option<&'static str> {
    if is_decided(csr_obj) {
        return None;
    }
    let signer = csr_obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)?;
    let pem = csr::request_pem(csr_obj).ok()?;
    let info = csr::parse(&pem).ok()?;
    let usages = csr::usages(csr_obj);
    check_request(signer, &info, &usages).ok()?;
    let requester = requester(csr_obj);
    let may = |subresource: &str| {
        let request = RequestInfo::resource(
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests",
            subresource,
            "",
            "",
        );
        authorizer
            .authorize(&Attributes {
                user: &requester,
                request: &request,
            })
            .is_allowed()
    };
    match signer {
        SIGNER_KUBELET_CLIENT => {
            if info.common_name == requester.user && may("selfnodeclient") {
                return Some(
                    "Auto approving self kubelet client certificate after SubjectAccessReview.",
                );
            }
            if may("nodeclient") {
                return Some(
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                );
            }
            None
        }
        SIGNER_KUBELET_SERVING => {
            let node = node?;
            let own = info.common_name == requester.user
                && requester.in_group("system:nodes")
                && info.ip_addresses.iter().all(|ip| node.ips.contains(ip))
                && info.dns_names.iter().all(|d| node.dns.contains(d));
            own.then_some(
                "Auto approving kubelet serving certificate: the node asked for its own name and addresses.",
            )
        }
        SIGNER_KUBE_APISERVER_CLIENT => {
            let kube_proxy = info.common_name == KUBE_PROXY_USER
                && info.organizations.is_empty()
                && !info.has_sans()
                && requester.user.starts_with("system:node:")
                && requester.in_group("system:nodes")
                && may("nodeproxyclient");
            kube_proxy.then_some(
                "Auto approving kube-proxy client certificate for a node after SubjectAccessReview.",
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::super::csr::tests::request;
    use super::*;
    use crate::authz::{Decision, RuleSet};

    /// Allows exactly the listed (user, subresource) pairs.
    struct Allow(Vec<(&'static str, &'static str)>);
    impl Authorizer for Allow {
        fn authorize(&self, a: &Attributes<'_>) -> Decision {
            if self
                .0
                .iter()
                .any(|(u, s)| *u == a.user.user && *s == a.request.subresource)
            {
                Decision::Allow(String::new())
            } else {
                Decision::NoOpinion(String::new())
            }
        }
        fn rules_for(&self, _: &Identity, _: &str) -> RuleSet {
            RuleSet::default()
        }
    }

    fn csr(signer: &str, user: &str, groups: &[&str], pem: &str, usages: &[&str]) -> Value {
        json!({"spec": {
            "signerName": signer,
            "username": user,
            "groups": groups,
            "usages": usages,
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
        }})
    }

    const CLIENT: &[&str] = &["digital signature", "client auth"];
    const SERVING: &[&str] = &["digital signature", "server auth"];

    #[test]
    fn a_bootstrapper_allowed_nodeclient_gets_a_node_certificate_approved() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let bootstrap = csr(
            SIGNER_KUBELET_CLIENT,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            &pem,
            CLIENT,
        );
        let allowed = Allow(vec![("system:bootstrap:abcdef", "nodeclient")]);
        assert!(decide(&bootstrap, &allowed, None).is_some());
        assert_eq!(decide(&bootstrap, &Allow(vec![]), None), None);
    }

    #[test]
    fn a_node_allowed_nodeproxyclient_gets_exactly_the_kube_proxy_identity() {
        let allowed = Allow(vec![("system:node:n1", "nodeproxyclient")]);
        let ask = |pem: &str, user: &str, groups: &[&str]| {
            csr(SIGNER_KUBE_APISERVER_CLIENT, user, groups, pem, CLIENT)
        };
        let proxy = request(KUBE_PROXY_USER, &[], &[]);
        assert!(
            decide(
                &ask(&proxy, "system:node:n1", &["system:nodes"]),
                &allowed,
                None
            )
            .unwrap()
            .contains("kube-proxy")
        );
        // Not without the permission, not for another requester, not another identity.
        assert_eq!(
            decide(
                &ask(&proxy, "system:node:n1", &["system:nodes"]),
                &Allow(vec![]),
                None
            ),
            None
        );
        let alice = Allow(vec![("alice", "nodeproxyclient")]);
        assert_eq!(decide(&ask(&proxy, "alice", &[]), &alice, None), None);
        for (cn, orgs) in [
            ("system:kube-proxy", &["system:masters"][..]),
            ("system:admin", &[][..]),
            ("system:node:n2", &["system:nodes"][..]),
        ] {
            let pem = request(cn, orgs, &[]);
            assert_eq!(
                decide(
                    &ask(&pem, "system:node:n1", &["system:nodes"]),
                    &allowed,
                    None
                ),
                None,
                "{cn} {orgs:?}"
            );
        }
    }

    #[test]
    fn a_node_renews_only_its_own_certificate() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let allowed = Allow(vec![("system:node:n1", "selfnodeclient")]);
        let own = csr(
            SIGNER_KUBELET_CLIENT,
            "system:node:n1",
            &["system:nodes"],
            &pem,
            CLIENT,
        );
        assert!(decide(&own, &allowed, None).unwrap().contains("self"));
        let other = csr(
            SIGNER_KUBELET_CLIENT,
            "system:node:n2",
            &["system:nodes"],
            &pem,
            CLIENT,
        );
        let allowed = Allow(vec![("system:node:n2", "selfnodeclient")]);
        assert_eq!(decide(&other, &allowed, None), None);
    }

    #[test]
    fn a_serving_request_is_approved_only_for_the_nodes_own_addresses() {
        let node = NodeNames::of(&json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.7"},
                                     {"type": "Hostname", "address": "host1"}]},
        }));
        let nobody = Allow(vec![]);
        let own = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1", "host1", "127.0.0.7"],
        );
        let ok = csr(
            SIGNER_KUBELET_SERVING,
            "system:node:n1",
            &["system:nodes"],
            &own,
            SERVING,
        );
        assert!(decide(&ok, &nobody, Some(&node)).is_some());
        let foreign = request("system:node:n1", &["system:nodes"], &["127.0.0.1"]);
        let bad = csr(
            SIGNER_KUBELET_SERVING,
            "system:node:n1",
            &["system:nodes"],
            &foreign,
            SERVING,
        );
        assert_eq!(decide(&bad, &nobody, Some(&node)), None);
        let other_user = csr(
            SIGNER_KUBELET_SERVING,
            "system:node:n2",
            &["system:nodes"],
            &own,
            SERVING,
        );
        assert_eq!(decide(&other_user, &nobody, Some(&node)), None);
    }
}
