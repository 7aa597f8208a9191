//! One consistent view of every Role, ClusterRole, RoleBinding and ClusterRoleBinding, and
//! the rule resolution over it (Kubernetes' `DefaultRuleResolver`): which rules a user has
//! in a namespace, and the first binding whose rule allows a request.
//!
//! A snapshot is immutable; the cache (`cache.rs`) builds a new one after each batch of
//! store events and swaps it in, so a request never sees half an update and never waits
//! for the store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use wasmkube_store::Revision;

use super::index::{BindingIndex, RequestKey, ResolvedBinding, RoleRules};
use super::rule::{PolicyRule, RoleRef, Subject};
use crate::authn::Identity;
use crate::authz::RequestInfo;

/// The store prefix of every RBAC object.
pub(super) const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// A ClusterRole as the resolver and the aggregation controller need it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterRoleEntry {
    /// The role's name.
    pub name: String,
    /// Its labels (what aggregation selects on).
    pub labels: BTreeMap<String, String>,
    /// The `aggregationRule.clusterRoleSelectors`, when the role is aggregated.
    pub aggregation: Option<Vec<Value>>,
    /// Its rules.
    pub rules: Arc<[PolicyRule]>,
}

/// A RoleBinding (with its namespace) or a ClusterRoleBinding (namespace `""`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The binding's name.
    pub name: String,
    /// The binding's namespace; `""` for a ClusterRoleBinding.
    pub namespace: String,
    /// The role it grants.
    pub role_ref: RoleRef,
    /// Whom it grants it to.
    pub subjects: Vec<Subject>,
}

/// One stored RBAC object, decoded.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    ClusterRole(Arc<ClusterRoleEntry>),
    Role {
        namespace: String,
        name: String,
        rules: Arc<[PolicyRule]>,
    },
    ClusterRoleBinding(Arc<Binding>),
    RoleBinding(Arc<Binding>),
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RoleObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
    #[serde(default, rename = "aggregationRule")]
    aggregation_rule: Option<AggregationRule>,
}

#[derive(Deserialize)]
struct AggregationRule {
    #[serde(default, rename = "clusterRoleSelectors")]
    selectors: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct BindingObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
    #[serde(rename = "roleRef")]
    role_ref: RoleRef,
}

impl Entry {
    /// Decodes the object stored at `key`; `None` for keys of no RBAC kind or bodies
    /// that are not one (validation keeps those out; a corrupt one grants nothing).
    pub(crate) fn decode(key: &str, value: &[u8]) -> Option<Entry> {
        let rest = key.strip_prefix(PREFIX)?;
        let (plural, _) = rest.split_once('/')?;
        match plural {
            "clusterroles" | "roles" => {
                let role: RoleObject = serde_json::from_slice(value).ok()?;
                let rules: Arc<[PolicyRule]> = role.rules.unwrap_or_default().into();
                if plural == "roles" {
                    return Some(Entry::Role {
                        namespace: role.metadata.namespace,
                        name: role.metadata.name,
                        rules,
                    });
                }
                Some(Entry::ClusterRole(Arc::new(ClusterRoleEntry {
                    name: role.metadata.name,
                    labels: role.metadata.labels,
                    aggregation: role
                        .aggregation_rule
                        .map(|a| a.selectors.unwrap_or_default()),
                    rules,
                })))
            }
            "clusterrolebindings" | "rolebindings" => {
                let binding: BindingObject = serde_json::from_slice(value).ok()?;
                let cluster = plural == "clusterrolebindings";
                let binding = Arc::new(Binding {
                    name: binding.metadata.name,
                    namespace: if cluster {
                        String::new()
                    } else {
                        binding.metadata.namespace
                    },
                    role_ref: binding.role_ref,
                    subjects: binding.subjects.unwrap_or_default(),
                });
                Some(if cluster {
                    Entry::ClusterRoleBinding(binding)
                } else {
                    Entry::RoleBinding(binding)
                })
            }
            _ => None,
        }
    }
}

/// Every RBAC object at one store revision, indexed for resolution.
#[derive(Debug, Default)]
pub struct Snapshot {
    revision: Revision,
    cluster_roles: HashMap<String, Arc<ClusterRoleEntry>>,
    roles: HashMap<(String, String), Arc<[PolicyRule]>>,
    cluster_role_bindings: BindingIndex,
    role_bindings: HashMap<String, BindingIndex>,
}

/// Which binding granted a rule, for allow reasons (`RBAC: allowed by ...`).
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The binding.
    pub binding: &'a Binding,
    /// The subject of it that named the user.
    pub subject: &'a Subject,
    /// `RBAC: allowed by <this source>`, written when the snapshot was built.
    pub allow_reason: &'a str,
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Described(self.binding, self.subject).fmt(f)
    }
}

/// A binding and one of its subjects as RBAC's allow reasons name them.
struct Described<'a>(&'a Binding, &'a Subject);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Described(b, subject) = *self;
        if b.namespace.is_empty() {
            write!(
                f,
                "ClusterRoleBinding {:?} of {} {:?} to {}",
                b.name,
                b.role_ref.kind,
                b.role_ref.name,
                subject.describe("")
            )
        } else {
            write!(
                f,
                "RoleBinding {:?} of {} {:?} to {}",
                format!("{}/{}", b.name, b.namespace),
                b.role_ref.kind,
                b.role_ref.name,
                subject.describe(&b.namespace)
            )
        }
    }
}

/// Kubernetes' `utilerrors.NewAggregate(errs).Error()`: one message, or `[a, b]`.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [] => String::new(),
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

impl Snapshot {
    /// Indexes `entries` (the decoded objects of one store revision).
    pub(crate) fn build<'a>(
        revision: Revision,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        let mut cluster_role_bindings = Vec::new();
        let mut role_bindings: HashMap<String, Vec<Arc<Binding>>> = HashMap::new();
        for entry in entries {
            match entry {
                Entry::ClusterRole(role) => {
                    snapshot
                        .cluster_roles
                        .insert(role.name.clone(), Arc::clone(role));
                }
                Entry::Role {
                    namespace,
                    name,
                    rules,
                } => {
                    snapshot
                        .roles
                        .insert((namespace.clone(), name.clone()), Arc::clone(rules));
                }
                Entry::ClusterRoleBinding(b) => cluster_role_bindings.push(Arc::clone(b)),
                Entry::RoleBinding(b) => role_bindings
                    .entry(b.namespace.clone())
                    .or_default()
                    .push(Arc::clone(b)),
            }
        }
        // Once every role is in, the bindings resolve their role references against them
        // (each role indexed once, however many bindings name it).
        let mut indexed: HashMap<(String, String, String), Arc<RoleRules>> = HashMap::new();
        let mut resolve = |binding: Arc<Binding>| {
            let role_ref = &binding.role_ref;
            let namespace = if role_ref.kind == "Role" {
                binding.namespace.clone()
            } else {
                String::new()
            };
            let key = (role_ref.kind.clone(), namespace, role_ref.name.clone());
            let rules = match indexed.get(&key) {
                Some(rules) => Ok(Arc::clone(rules)),
                None => snapshot
                    .role_reference_rules(role_ref, &binding.namespace)
                    .map(|rules| {
                        let rules = Arc::new(RoleRules::new(rules));
                        indexed.insert(key, Arc::clone(&rules));
                        rules
                    }),
            };
            let allow_reasons = binding
                .subjects
                .iter()
                .map(|subject| format!("RBAC: allowed by {}", Described(&binding, subject)))
                .collect();
            ResolvedBinding {
                binding,
                rules,
                allow_reasons,
            }
        };
        let cluster_role_bindings =
            BindingIndex::new(cluster_role_bindings.into_iter().map(&mut resolve));
        let role_bindings = role_bindings
            .into_iter()
            .map(|(namespace, bindings)| {
                (
                    namespace,
                    BindingIndex::new(bindings.into_iter().map(&mut resolve)),
                )
            })
            .collect();
        snapshot.cluster_role_bindings = cluster_role_bindings;
        snapshot.role_bindings = role_bindings;
        snapshot
    }

    /// The store revision this snapshot reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// A ClusterRole by name.
    pub fn cluster_role(&self, name: &str) -> Option<&Arc<ClusterRoleEntry>> {
        self.cluster_roles.get(name)
    }

    /// Every ClusterRole, sorted by name.
    pub fn cluster_roles(&self) -> Vec<&Arc<ClusterRoleEntry>> {
        let mut roles: Vec<_> = self.cluster_roles.values().collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        roles
    }

    /// The rules a role reference grants to a binding in `binding_namespace`, or the
    /// NotFound message Kubernetes' rule resolver reports.
    pub fn role_reference_rules(
        &self,
        role_ref: &RoleRef,
        binding_namespace: &str,
    ) -> Result<Arc<[PolicyRule]>, String> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(|r| Arc::clone(&r.rules))
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        role_ref.name
                    )
                }),
            "Role" => self
                .roles
                .get(&(binding_namespace.to_string(), role_ref.name.clone()))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {:?} not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// The bindings naming `user` (or a group of theirs, or their ServiceAccount) that
    /// apply in `namespace`: cluster-wide ones first, then the namespace's, in store order,
    /// each with the first of its subjects that names the user.
    fn bindings_for<'a>(
        &'a self,
        user: &'a Identity,
        namespace: &str,
    ) -> impl Iterator<Item = (&'a ResolvedBinding, Source<'a>)> {
        let namespaced = if namespace.is_empty() {
            None
        } else {
            self.role_bindings.get(namespace)
        };
        self.cluster_role_bindings
            .for_user(user)
            .chain(
                namespaced
                    .into_iter()
                    .flat_map(|index| index.for_user(user)),
            )
            .filter_map(|resolved| {
                let binding = resolved.binding.as_ref();
                let position = binding
                    .subjects
                    .iter()
                    .position(|s| s.applies_to(user, &binding.namespace))?;
                let source = Source {
                    binding,
                    subject: &binding.subjects[position],
                    allow_reason: &resolved.allow_reasons[position],
                };
                Some((resolved, source))
            })
    }

    /// Calls `visit` with every rule granted to `user` in `namespace` (cluster-wide
    /// bindings first, then the namespace's), until it returns `false`. Role references
    /// that resolve to nothing are added to `errors`.
    pub fn visit_rules_for(
        &self,
        user: &Identity,
        namespace: &str,
        errors: &mut Vec<String>,
        visit: &mut dyn FnMut(Source<'_>, &PolicyRule) -> bool,
    ) {
        for (resolved, source) in self.bindings_for(user, namespace) {
            let rules = match &resolved.rules {
                Ok(rules) => rules,
                Err(e) => {
                    errors.push(e.clone());
                    continue;
                }
            };
            for rule in rules.rules.iter() {
                if !visit(source, rule) {
                    return;
                }
            }
        }
    }

    /// Every rule `user` has in `namespace`, and the resolution errors.
    pub fn rules_for(&self, user: &Identity, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit_rules_for(user, namespace, &mut errors, &mut |_, rule| {
            rules.push(rule.clone());
            true
        });
        (rules, errors)
    }

    /// The reason a binding allows `request` (`RBAC: allowed by ...`), or `Err` with the
    /// resolution errors seen on the way (empty when nothing was wrong). The same answer as
    /// visiting the rules until one allows, through each role's index.
    pub fn allows(&self, user: &Identity, request: &RequestInfo) -> Result<String, Vec<String>> {
        let namespace = if request.resource_request {
            request.namespace.as_str()
        } else {
            ""
        };
        let key = RequestKey::of(request);
        let mut errors = Vec::new();
        for (resolved, source) in self.bindings_for(user, namespace) {
            match &resolved.rules {
                Ok(rules) if rules.allows(request, &key) => {
                    return Ok(source.allow_reason.to_owned());
                }
                Ok(_) => {}
                Err(e) => errors.push(e.clone()),
            }
        }
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(key: &str, obj: Value) -> Entry {
        Entry::decode(key, &serde_json::to_vec(&obj).unwrap()).expect("an RBAC object")
    }

    fn snapshot() -> Snapshot {
        let entries = [
            entry(
                "/registry/rbac.authorization.k8s.io/clusterroles/view",
                json!({"metadata": {"name": "view"}, "rules": [
                    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "configmaps"]}]}),
            ),
            entry(
                "/registry/rbac.authorization.k8s.io/roles/team/deployer",
                json!({"metadata": {"name": "deployer", "namespace": "team"}, "rules": [
                    {"verbs": ["create"], "apiGroups": ["apps"], "resources": ["deployments"]}]}),
            ),
            entry(
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/viewers",
                json!({"metadata": {"name": "viewers"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "auditors"}]}),
            ),
            entry(
                "/registry/rbac.authorization.k8s.io/rolebindings/team/alice-view",
                json!({"metadata": {"name": "alice-view", "namespace": "team"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
            ),
            entry(
                "/registry/rbac.authorization.k8s.io/rolebindings/team/alice-deploy",
                json!({"metadata": {"name": "alice-deploy", "namespace": "team"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
            ),
            entry(
                "/registry/rbac.authorization.k8s.io/rolebindings/team/dangling",
                json!({"metadata": {"name": "dangling", "namespace": "team"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
            ),
        ];
        Snapshot::build(7, entries.iter())
    }

    fn user(name: &str, groups: &[&str]) -> Identity {
        Identity {
            user: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn req(method: &str, path: &str) -> RequestInfo {
        crate::authz::resolve_request(
            &http::Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            "",
        )
    }

    #[test]
    fn a_role_binding_grants_only_in_its_namespace() {
        let s = snapshot();
        let alice = user("alice", &[]);
        let reason = s
            .allows(&alice, &req("GET", "/api/v1/namespaces/team/pods"))
            .expect("allowed");
        assert_eq!(
            reason,
            "RBAC: allowed by RoleBinding \"alice-view/team\" of ClusterRole \"view\" to User \"alice\""
        );
        assert!(
            s.allows(&alice, &req("GET", "/api/v1/namespaces/other/pods"))
                .is_err()
        );
        assert!(s.allows(&alice, &req("GET", "/api/v1/pods")).is_err());
        assert!(
            s.allows(
                &alice,
                &req("POST", "/apis/apps/v1/namespaces/team/deployments")
            )
            .is_ok()
        );
    }

    #[test]
    fn a_cluster_role_binding_grants_everywhere() {
        let s = snapshot();
        let auditor = user("carol", &["auditors"]);
        for path in ["/api/v1/pods", "/api/v1/namespaces/any/configmaps/x"] {
            let reason = s.allows(&auditor, &req("GET", path)).expect(path);
            assert_eq!(
                reason,
                "RBAC: allowed by ClusterRoleBinding \"viewers\" of ClusterRole \"view\" to Group \"auditors\""
            );
        }
        assert_eq!(
            s.allows(&auditor, &req("DELETE", "/api/v1/namespaces/any/pods/p")),
            Err(vec![])
        );
    }

    #[test]
    fn missing_roles_are_reported_not_fatal() {
        let s = snapshot();
        let alice = user("alice", &[]);
        let errors = s
            .allows(&alice, &req("DELETE", "/api/v1/namespaces/team/pods/p"))
            .unwrap_err();
        assert_eq!(
            errors,
            vec!["clusterrole.rbac.authorization.k8s.io \"gone\" not found".to_string()]
        );
        let (rules, errors) = s.rules_for(&alice, "team");
        assert_eq!(rules.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(aggregate(&errors), errors[0]);
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }

    #[test]
    fn the_binding_index_visits_a_users_bindings_once_in_store_order() {
        let binding = |name: &str, subjects: Value| {
            entry(
                &format!("/registry/rbac.authorization.k8s.io/rolebindings/team/{name}"),
                json!({"metadata": {"name": name, "namespace": "team"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": subjects}),
            )
        };
        let entries = [
            entry(
                "/registry/rbac.authorization.k8s.io/clusterroles/view",
                json!({"metadata": {"name": "view"}, "rules": [
                    {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            binding(
                "a-group",
                json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]),
            ),
            binding(
                "b-others",
                json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}]),
            ),
            binding(
                "c-both",
                json!([
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                    {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]),
            ),
            binding(
                "d-service-account",
                json!([{"kind": "ServiceAccount", "name": "robot"}]),
            ),
        ];
        let s = Snapshot::build(1, entries.iter());
        let visited = |who: &Identity| {
            let mut names = Vec::new();
            s.visit_rules_for(who, "team", &mut Vec::new(), &mut |source, _| {
                names.push(source.binding.name.clone());
                true
            });
            names
        };
        assert_eq!(visited(&user("alice", &["devs"])), ["a-group", "c-both"]);
        assert_eq!(visited(&user("bob", &[])), ["b-others"]);
        assert_eq!(
            visited(&user("system:serviceaccount:team:robot", &[])),
            ["d-service-account"]
        );
        assert!(visited(&user("system:serviceaccount:other:robot", &[])).is_empty());
        assert!(visited(&user("carol", &["system:authenticated"])).is_empty());
    }

    #[test]
    fn aggregated_cluster_roles_keep_their_selectors() {
        let e = entry(
            "/registry/rbac.authorization.k8s.io/clusterroles/monitoring",
            json!({"metadata": {"name": "monitoring", "labels": {"a": "b"}},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}),
        );
        let Entry::ClusterRole(role) = e else {
            panic!("a cluster role")
        };
        assert_eq!(
            role.aggregation,
            Some(vec![json!({"matchLabels": {"x": "y"}})])
        );
        assert!(role.rules.is_empty());
        assert!(Entry::decode("/registry/core/pods/a/b", b"{}").is_none());
    }
}
