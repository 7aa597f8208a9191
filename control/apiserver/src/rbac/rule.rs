//! The rbac.authorization.k8s.io/v1 vocabulary the authorizer works with: policy rules,
//! subjects and role references, and how each matches a request or a user.
//!
//! Hand-written rather than k8s-openapi's types because matching wants plain vectors (no
//! `Option<Vec<_>>` at every step) and the rules of the bootstrap policy are written with
//! the same small builder Kubernetes' `bootstrappolicy` uses (`PolicyRule::new(verbs)
//! .groups(..).resources(..)`). The JSON field names are Kubernetes'.

use serde::{Deserialize, Serialize};

use crate::authn::Identity;
use crate::authz::RequestInfo;

/// The API group of RBAC, and of User and Group subjects.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs, `*` for all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups, `""` for the core group, `*` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*/scale`, `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/api/*`); only in ClusterRoles.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

impl PolicyRule {
    /// A rule for `verbs`; add groups and resources, or URLs, with the builder methods.
    pub fn new(verbs: &[&str]) -> Self {
        PolicyRule {
            verbs: strings(verbs),
            ..PolicyRule::default()
        }
    }

    /// Sets the API groups.
    #[must_use]
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.api_groups = strings(groups);
        self
    }

    /// Sets the resources.
    #[must_use]
    pub fn resources(mut self, resources: &[&str]) -> Self {
        self.resources = strings(resources);
        self
    }

    /// Limits the rule to objects of these names.
    #[must_use]
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }

    /// Sets the non-resource URLs.
    #[must_use]
    pub fn urls(mut self, urls: &[&str]) -> Self {
        self.non_resource_urls = strings(urls);
        self
    }

    /// Whether this rule allows `request` (Kubernetes' `RuleAllows`).
    pub fn allows(&self, request: &RequestInfo) -> bool {
        if !self.verb_matches(&request.verb) {
            return false;
        }
        if request.resource_request {
            self.api_group_matches(&request.api_group)
                && self.resource_matches(&request.resource, &request.subresource)
                && self.resource_name_matches(&request.name)
        } else {
            self.non_resource_url_matches(&request.path)
        }
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if subresource.is_empty() {
                return r == resource;
            }
            // `pods/log` names the subresource of one resource, `*/scale` of every resource.
            match r.split_once('/') {
                Some((res, sub)) => sub == subresource && (res == resource || res == "*"),
                None => false,
            }
        })
    }

    fn resource_name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || has(&self.resource_names, name)
    }

    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|url| {
            url == "*"
                || url == path
                || url
                    .strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
    }

    /// The compact form used in escalation messages, as Kubernetes' `CompactString`:
    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}`.
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        let quoted = |items: &[String]| {
            let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", inner.join(" "))
        };
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:{}", quoted(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:{}", quoted(&self.resources)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!(
                "NonResourceURLs:{}",
                quoted(&self.non_resource_urls)
            ));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("ResourceNames:{}", quoted(&self.resource_names)));
        }
        if !self.verbs.is_empty() {
            parts.push(format!("Verbs:{}", quoted(&self.verbs)));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// Who a binding grants its role to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, `""` for service accounts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// The user, group or service account name.
    pub name: String,
    /// A service account's namespace (a RoleBinding's own namespace when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// A `User` subject.
    pub fn user(name: &str) -> Self {
        Subject {
            kind: "User".into(),
            api_group: GROUP.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    /// A `Group` subject.
    pub fn group(name: &str) -> Self {
        Subject {
            kind: "Group".into(),
            api_group: GROUP.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    /// A `ServiceAccount` subject.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Subject {
            kind: "ServiceAccount".into(),
            api_group: String::new(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// Whether this subject of a binding in `binding_namespace` ("" for a
    /// ClusterRoleBinding) names `user` (Kubernetes' `appliesToUser`).
    pub fn applies_to(&self, user: &Identity, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.user == self.name,
            "Group" => user.in_group(&self.name),
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                !namespace.is_empty()
                    && service_account_username(namespace, &self.name) == user.user
            }
            _ => false,
        }
    }

    /// How RBAC names the subject in an allow reason (`describeSubject`).
    pub fn describe(&self, binding_namespace: &str) -> String {
        if self.kind == "ServiceAccount" {
            let namespace = if self.namespace.is_empty() {
                binding_namespace
            } else {
                &self.namespace
            };
            format!("{} {:?}", self.kind, format!("{}/{namespace}", self.name))
        } else {
            format!("{} {:?}", self.kind, self.name)
        }
    }
}

/// The user name of a service account: `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Splits a service account user name into (namespace, name).
pub fn split_service_account_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// The groups every service account of `namespace` is in.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
    ]
}

/// The role a binding grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

impl RoleRef {
    /// A reference to the ClusterRole `name`.
    pub fn cluster_role(name: &str) -> Self {
        RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: name.into(),
        }
    }

    /// A reference to the Role `name` (in the binding's namespace).
    pub fn role(name: &str) -> Self {
        RoleRef {
            api_group: GROUP.into(),
            kind: "Role".into(),
            name: name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn req(method: Method, path: &str) -> RequestInfo {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        crate::authz::resolve_request(&method, path, query)
    }

    fn identity(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_rule_matches_verb_group_resource_and_name() {
        let rule = PolicyRule::new(&["get", "list"])
            .groups(&["apps"])
            .resources(&["deployments"]);
        assert!(rule.allows(&req(Method::GET, "/apis/apps/v1/namespaces/a/deployments")));
        assert!(rule.allows(&req(
            Method::GET,
            "/apis/apps/v1/namespaces/a/deployments/d"
        )));
        assert!(!rule.allows(&req(Method::POST, "/apis/apps/v1/namespaces/a/deployments")));
        assert!(!rule.allows(&req(Method::GET, "/apis/batch/v1/namespaces/a/jobs")));
        assert!(!rule.allows(&req(Method::GET, "/api/v1/namespaces/a/pods")));
        let named = PolicyRule::new(&["get"])
            .groups(&[""])
            .resources(&["configmaps"])
            .names(&["settings"]);
        assert!(named.allows(&req(
            Method::GET,
            "/api/v1/namespaces/a/configmaps/settings"
        )));
        assert!(!named.allows(&req(Method::GET, "/api/v1/namespaces/a/configmaps/other")));
        assert!(!named.allows(&req(Method::GET, "/api/v1/namespaces/a/configmaps")));
    }

    #[test]
    fn wildcards_match_everything_of_their_kind() {
        let all = PolicyRule::new(&["*"]).groups(&["*"]).resources(&["*"]);
        assert!(all.allows(&req(Method::DELETE, "/api/v1/nodes/n1")));
        assert!(all.allows(&req(Method::GET, "/api/v1/namespaces/a/pods/p/log")));
        assert!(!all.allows(&req(Method::GET, "/healthz")));
        let urls = PolicyRule::new(&["get"]).urls(&["/api", "/api/*", "/healthz"]);
        assert!(urls.allows(&req(Method::GET, "/api")));
        assert!(urls.allows(&req(Method::GET, "/api/v1")));
        assert!(urls.allows(&req(Method::GET, "/healthz")));
        assert!(!urls.allows(&req(Method::GET, "/healthz/etcd")));
        assert!(!urls.allows(&req(Method::POST, "/api")));
        assert!(!urls.allows(&req(Method::GET, "/api/v1/pods")));
    }

    #[test]
    fn a_resource_does_not_cover_its_subresources() {
        let pods = PolicyRule::new(&["get"]).groups(&[""]).resources(&["pods"]);
        assert!(!pods.allows(&req(Method::GET, "/api/v1/namespaces/a/pods/p/log")));
        let log = PolicyRule::new(&["get"])
            .groups(&[""])
            .resources(&["pods/log"]);
        assert!(log.allows(&req(Method::GET, "/api/v1/namespaces/a/pods/p/log")));
        assert!(!log.allows(&req(Method::GET, "/api/v1/namespaces/a/pods/p")));
        let scale = PolicyRule::new(&["get"])
            .groups(&["*"])
            .resources(&["*/scale"]);
        assert!(scale.allows(&req(
            Method::GET,
            "/apis/apps/v1/namespaces/a/deployments/d/scale"
        )));
        assert!(!scale.allows(&req(
            Method::GET,
            "/apis/apps/v1/namespaces/a/deployments/d/status"
        )));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let alice = identity("alice", &["devs", "system:authenticated"]);
        assert!(Subject::user("alice").applies_to(&alice, ""));
        assert!(!Subject::user("bob").applies_to(&alice, ""));
        assert!(Subject::group("devs").applies_to(&alice, ""));
        let sa = identity("system:serviceaccount:ns1:builder", &[]);
        assert!(Subject::service_account("ns1", "builder").applies_to(&sa, ""));
        assert!(Subject::service_account("", "builder").applies_to(&sa, "ns1"));
        assert!(!Subject::service_account("", "builder").applies_to(&sa, ""));
        assert!(!Subject::service_account("ns2", "builder").applies_to(&sa, "ns1"));
        assert_eq!(
            Subject::service_account("", "builder").describe("ns1"),
            "ServiceAccount \"builder/ns1\""
        );
    }

    #[test]
    fn service_account_user_names_split_into_namespace_and_name() {
        assert_eq!(
            split_service_account_username("system:serviceaccount:ns:sa"),
            Some(("ns", "sa"))
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:ns"),
            None
        );
        assert_eq!(split_service_account_username("alice"), None);
    }

    #[test]
    fn compact_strings_are_those_of_kubernetes_escalation_messages() {
        let rule = PolicyRule::new(&["get", "list"])
            .groups(&[""])
            .resources(&["secrets"]);
        assert_eq!(
            rule.compact_string(),
            "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}"
        );
        let urls = PolicyRule::new(&["get"]).urls(&["/metrics"]);
        assert_eq!(
            urls.compact_string(),
            "{NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
        );
    }

    #[test]
    fn rules_round_trip_through_kubernetes_json() {
        let json = serde_json::json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"],
            "nonResourceURLs": []});
        let rule: PolicyRule = serde_json::from_value(json).unwrap();
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            serde_json::json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        );
    }
}
