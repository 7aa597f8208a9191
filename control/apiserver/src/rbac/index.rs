//! The indexes a snapshot builds once so that deciding on a request is cheap: its bindings
//! by the users and groups they name ([`BindingIndex`]), each with its role reference
//! resolved and its allow reasons written ([`ResolvedBinding`]), and each role's rules with
//! a hash set of the plain `verb group resource[/subresource]` grants ([`RoleRules`]).
//!
//! They change how fast a decision is made, not what it is: a request is allowed exactly
//! when one of the role's rules allows it (`PolicyRule::allows`, Kubernetes' `RuleAllows`),
//! and bindings are visited in the same order as without them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::rule::{PolicyRule, service_account_username};
use super::snapshot::Binding;
use crate::authn::Identity;
use crate::authz::RequestInfo;

/// A role's rules, with the plain grants in a hash set.
#[derive(Debug)]
pub(super) struct RoleRules {
    /// Every rule, in the role's order (what rule listings and escalation checks walk).
    pub(super) rules: Arc<[PolicyRule]>,
    /// [`grant_key`]s of every verb, group and resource of the rules without wildcards,
    /// resource names or non-resource URLs.
    plain: HashSet<String>,
    /// Positions of the other rules in `rules`, matched one by one.
    others: Vec<usize>,
}

impl RoleRules {
    /// Indexes `rules`.
    pub(super) fn new(rules: Arc<[PolicyRule]>) -> Self {
        let mut plain = HashSet::new();
        let mut others = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            // (A NUL could make two different grants one key.)
            let special = |items: &[String]| items.iter().any(|item| item.contains(['*', '\0']));
            if !rule.resource_names.is_empty()
                || !rule.non_resource_urls.is_empty()
                || special(&rule.verbs)
                || special(&rule.api_groups)
                || special(&rule.resources)
            {
                others.push(position);
                continue;
            }
            for verb in &rule.verbs {
                for group in &rule.api_groups {
                    for resource in &rule.resources {
                        plain.insert(grant_key(verb, group, resource, ""));
                    }
                }
            }
        }
        RoleRules {
            rules,
            plain,
            others,
        }
    }

    /// Whether a rule allows `request`; `key` is [`RequestKey::of`] it.
    pub(super) fn allows(&self, request: &RequestInfo, key: &RequestKey) -> bool {
        let others = || {
            self.others
                .iter()
                .any(|&position| self.rules[position].allows(request))
        };
        match key {
            RequestKey::Resource(key) => self.plain.contains(key) || others(),
            // Plain rules name no URLs, so they allow no non-resource request.
            RequestKey::NonResource => others(),
            RequestKey::Unusual => self.rules.iter().any(|rule| rule.allows(request)),
        }
    }
}

/// What a request is looked up by in [`RoleRules`], made once per request.
#[derive(Debug)]
pub(super) enum RequestKey {
    /// A resource request's [`grant_key`].
    Resource(String),
    /// A non-resource request.
    NonResource,
    /// A resource request whose resource holds a `/` or whose parts a NUL (decoded from the
    /// URL): its key could meet a grant the rule does not make, so every rule is matched.
    Unusual,
}

impl RequestKey {
    /// The key of `request`.
    pub(super) fn of(request: &RequestInfo) -> Self {
        if !request.resource_request {
            return RequestKey::NonResource;
        }
        let parts = [
            &request.verb,
            &request.api_group,
            &request.resource,
            &request.subresource,
        ];
        if request.resource.contains('/') || parts.iter().any(|part| part.contains('\0')) {
            return RequestKey::Unusual;
        }
        RequestKey::Resource(grant_key(
            &request.verb,
            &request.api_group,
            &request.resource,
            &request.subresource,
        ))
    }
}

/// `verb`, `group` and `resource[/subresource]` joined by NUL, which none of them holds. A
/// rule's `pods/log` and a request for resource `pods`, subresource `log` meet as the same
/// key, as `PolicyRule::allows` matches them.
fn grant_key(verb: &str, group: &str, resource: &str, subresource: &str) -> String {
    let mut key =
        String::with_capacity(verb.len() + group.len() + resource.len() + subresource.len() + 3);
    key.push_str(verb);
    key.push('\0');
    key.push_str(group);
    key.push('\0');
    key.push_str(resource);
    if !subresource.is_empty() {
        key.push('/');
        key.push_str(subresource);
    }
    key
}

/// A binding with what resolution needs of it, fixed for a snapshot.
#[derive(Debug)]
pub(super) struct ResolvedBinding {
    /// The binding.
    pub(super) binding: Arc<Binding>,
    /// The rules its role reference grants, or the NotFound message for it.
    pub(super) rules: Result<Arc<RoleRules>, String>,
    /// `RBAC: allowed by ...` for each of its subjects, in order.
    pub(super) allow_reasons: Box<[String]>,
}

/// Bindings indexed by the users and groups their subjects name, so resolving a request
/// looks at the bindings of its user only, not every binding of the cluster.
#[derive(Debug, Default)]
pub(super) struct BindingIndex {
    /// In store key order (the order rules are visited in).
    bindings: Vec<ResolvedBinding>,
    /// User name (for ServiceAccount subjects, `system:serviceaccount:<ns>:<name>`) ->
    /// positions in `bindings`.
    by_user: HashMap<String, Vec<usize>>,
    /// Group name -> positions in `bindings`.
    by_group: HashMap<String, Vec<usize>>,
}

impl BindingIndex {
    /// Indexes `bindings` (in store key order).
    pub(super) fn new(bindings: impl IntoIterator<Item = ResolvedBinding>) -> Self {
        let mut index = BindingIndex::default();
        for resolved in bindings {
            index.push(resolved);
        }
        index
    }

    fn push(&mut self, resolved: ResolvedBinding) {
        let position = self.bindings.len();
        let binding = &resolved.binding;
        for subject in &binding.subjects {
            let (map, name) = match subject.kind.as_str() {
                "User" => (&mut self.by_user, subject.name.clone()),
                "Group" => (&mut self.by_group, subject.name.clone()),
                "ServiceAccount" => {
                    let namespace = if subject.namespace.is_empty() {
                        &binding.namespace
                    } else {
                        &subject.namespace
                    };
                    if namespace.is_empty() {
                        continue;
                    }
                    (
                        &mut self.by_user,
                        service_account_username(namespace, &subject.name),
                    )
                }
                _ => continue,
            };
            let positions = map.entry(name).or_default();
            if positions.last() != Some(&position) {
                positions.push(position);
            }
        }
        self.bindings.push(resolved);
    }

    /// The bindings with a subject naming `user` or a group of theirs, in order.
    pub(super) fn for_user<'a>(&'a self, user: &Identity) -> ForUser<'a> {
        let mut lists = std::iter::once(self.by_user.get(&user.user))
            .chain(user.groups.iter().map(|g| self.by_group.get(g)))
            .flatten();
        let positions = match (lists.next(), lists.next()) {
            (None, _) => Positions::One([].iter()),
            // Mostly one list (the user's, or one group's): already in order, no copy.
            (Some(one), None) => Positions::One(one.iter()),
            (Some(first), Some(second)) => {
                let mut all: Vec<usize> = first.iter().chain(second).copied().collect();
                all.extend(lists.flatten());
                all.sort_unstable();
                all.dedup();
                Positions::Merged(all.into_iter())
            }
        };
        ForUser {
            bindings: &self.bindings,
            positions,
        }
    }
}

/// The iterator [`BindingIndex::for_user`] returns.
#[derive(Debug)]
pub(super) struct ForUser<'a> {
    bindings: &'a [ResolvedBinding],
    positions: Positions<'a>,
}

#[derive(Debug)]
enum Positions<'a> {
    One(std::slice::Iter<'a, usize>),
    Merged(std::vec::IntoIter<usize>),
}

impl<'a> Iterator for ForUser<'a> {
    type Item = &'a ResolvedBinding;

    fn next(&mut self) -> Option<Self::Item> {
        let position = match &mut self.positions {
            Positions::One(positions) => *positions.next()?,
            Positions::Merged(positions) => positions.next()?,
        };
        self.bindings.get(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> RequestInfo {
        crate::authz::resolve_request(
            &http::Method::from_bytes(method.as_bytes()).expect("method"),
            path,
            "",
        )
    }

    /// The index answers as `PolicyRule::allows` over every rule does, for plain rules,
    /// wildcards, subresources, resource names and URLs.
    #[test]
    fn role_rules_decide_as_their_rules_do() {
        let rules: Arc<[PolicyRule]> = vec![
            PolicyRule::new(&["get", "list"])
                .groups(&[""])
                .resources(&["pods", "pods/log"]),
            PolicyRule::new(&["update"])
                .groups(&["apps"])
                .resources(&["*/scale"]),
            PolicyRule::new(&["delete"])
                .groups(&[""])
                .resources(&["secrets"])
                .names(&["mine"]),
            PolicyRule::new(&["*"])
                .groups(&["batch"])
                .resources(&["jobs"]),
            PolicyRule::new(&["get"]).urls(&["/healthz", "/api/*"]),
        ]
        .into();
        let indexed = RoleRules::new(Arc::clone(&rules));
        assert_eq!(indexed.others, vec![1, 2, 3, 4]);
        let cases = [
            ("GET", "/api/v1/namespaces/a/pods", true),
            ("GET", "/api/v1/namespaces/a/pods/p", true),
            ("GET", "/api/v1/namespaces/a/pods/p/log", true),
            ("GET", "/api/v1/namespaces/a/pods/p/status", false),
            ("DELETE", "/api/v1/namespaces/a/pods/p", false),
            ("GET", "/apis/apps/v1/namespaces/a/pods", false),
            (
                "PUT",
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                true,
            ),
            ("PUT", "/apis/apps/v1/namespaces/a/deployments/d", false),
            ("DELETE", "/api/v1/namespaces/a/secrets/mine", true),
            ("DELETE", "/api/v1/namespaces/a/secrets/other", false),
            ("POST", "/apis/batch/v1/namespaces/a/jobs", true),
            ("GET", "/healthz", true),
            ("GET", "/api", false),
            ("GET", "/api/v1", true),
            ("GET", "/metrics", false),
            ("POST", "/healthz", false),
        ];
        let mut odd = req("GET", "/api/v1/namespaces/a/pods/p");
        odd.resource = "pods/log".into();
        assert!(matches!(RequestKey::of(&odd), RequestKey::Unusual));
        assert!(indexed.allows(&odd, &RequestKey::of(&odd)));
        for (method, path, expected) in cases {
            let request = req(method, path);
            let linear = rules.iter().any(|rule| rule.allows(&request));
            assert_eq!(linear, expected, "{method} {path} (linear)");
            let key = RequestKey::of(&request);
            assert_eq!(
                indexed.allows(&request, &key),
                expected,
                "{method} {path} (indexed)"
            );
        }
    }
}
