//! Privilege-escalation prevention, as Kubernetes' RBAC storage does it
//! (`pkg/registry/rbac/*/policybased` and `rbac/validation`):
//!
//! - creating or updating a Role or ClusterRole is allowed when the user already holds
//!   every permission in it (in the role's namespace), or may `escalate` that role;
//!   an `aggregationRule` needs every permission (`*` on everything);
//! - creating or updating a binding is allowed when the user may `bind` the referenced
//!   role, or already holds every permission of it.
//!
//! `system:masters` is exempt. Updates that only touch what the garbage collector
//! changes (ownerReferences, finalizers) are not checked. Refusals are 403s worded as
//! Kubernetes': `user "alice" (groups=["system:authenticated"]) is attempting to grant
//! RBAC permissions not currently held:` followed by the missing rules.

use std::collections::BTreeSet;

use serde_json::Value;

use super::rule::{GROUP, PolicyRule, RoleRef};
use super::snapshot::aggregate;
use crate::authn::{GROUP_MASTERS, Identity};
use crate::authz::{Attributes, RequestInfo, forbidden_error};
use crate::error::ApiResult;
use crate::registry::ResourceType;
use crate::state::AppState;

/// Whether `owner` covers every rule of `requested`; returns the atomic rules it lacks
/// (Kubernetes' `Covers`).
pub fn covers(owner: &[PolicyRule], requested: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let mut missing = Vec::new();
    for rule in requested {
        for sub in breakdown(rule) {
            if !owner.iter().any(|o| rule_covers(o, &sub)) {
                missing.push(sub);
            }
        }
    }
    (missing.is_empty(), missing)
}

/// One rule per verb x group x resource x name (or per verb x URL).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: vec![group.clone()],
                    resources: vec![resource.clone()],
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for name in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: vec![name.clone()],
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resources_cover(&owner.resources, &sub.resources);
    let urls = sub.non_resource_urls.iter().all(|path| {
        owner.non_resource_urls.iter().any(|o| {
            o == path
                || o.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
    });
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

fn resources_cover(owner: &[String], requested: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, requested) {
        return true;
    }
    requested.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

/// Merges atomic rules that differ only in their verbs (Kubernetes' `CompactRules`).
fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let is_simple = rule.resource_names.len() <= 1
            && rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !is_simple {
            out.push(rule);
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == rule.api_groups
                && s.resources == rule.resources
                && s.resource_names == rule.resource_names
        }) {
            Some(existing) => existing.verbs.extend(rule.verbs),
            None => simple.push(rule),
        }
    }
    out.extend(simple);
    out
}

/// The message of a refused grant (`ConfirmNoEscalation`), or `None` when `user` holds
/// every rule of `requested` in `namespace`.
fn escalation_error(
    state: &AppState,
    user: &Identity,
    namespace: &str,
    requested: &[PolicyRule],
) -> ApiResult<Option<String>> {
    let cache = &state.authz()?.rbac;
    let (owned, errors) = cache.snapshot().rules_for(user, namespace);
    let (covered, missing) = covers(&owned, requested);
    if covered {
        return Ok(None);
    }
    let descriptions: BTreeSet<String> = compact(missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.user,
        groups.join(" "),
        descriptions.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", aggregate(&errors)));
    }
    Ok(Some(message))
}

/// Whether the authorizer chain allows `user` the special `verb` (`escalate`, `bind`) on
/// the role `name` of `resource` (`roles` or `clusterroles`) in `namespace`.
fn allowed_verb(
    state: &AppState,
    user: &Identity,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> ApiResult<bool> {
    let request = RequestInfo::resource(verb, GROUP, resource, "", namespace, name);
    Ok(state
        .authz()?
        .authorizer
        .authorize(&Attributes {
            user,
            request: &request,
        })
        .is_allowed())
}

fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

/// Whether an update only changes what the garbage collector writes.
fn only_gc_fields_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
            ] {
                meta.remove(field);
            }
        }
        v
    };
    strip(new) == strip(old)
}

/// The escalation check of a write of an RBAC object by `user` (create when `old` is
/// `None`). Objects of other kinds pass.
pub fn admit(
    state: &AppState,
    user: Option<&Identity>,
    rt: &ResourceType,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if rt.group != GROUP {
        return Ok(());
    }
    let Some(user) = user else {
        // In-process writes without a request user (bootstrap) are the server's own.
        return Ok(());
    };
    if user.in_group(GROUP_MASTERS) {
        return Ok(());
    }
    if old.is_some_and(|old| only_gc_fields_changed(new, old)) {
        return Ok(());
    }
    let name = crate::object::name(new);
    match rt.kind {
        "Role" | "ClusterRole" => {
            let namespace = if rt.kind == "Role" { namespace } else { "" };
            if allowed_verb(state, user, "escalate", rt.plural, namespace, name)? {
                return Ok(());
            }
            if let Some(why) = escalation_error(state, user, namespace, &rules_of(new))? {
                return Err(forbidden_error(GROUP, rt.plural, name, &why));
            }
            if rt.kind == "ClusterRole" && new.get("aggregationRule").is_some_and(|a| !a.is_null())
            {
                let everything = [
                    PolicyRule::new(&["*"]).groups(&["*"]).resources(&["*"]),
                    PolicyRule::new(&["*"]).urls(&["*"]),
                ];
                if escalation_error(state, user, "", &everything)?.is_some() {
                    return Err(forbidden_error(
                        GROUP,
                        rt.plural,
                        name,
                        "must have cluster-admin privileges to use the aggregationRule",
                    ));
                }
            }
            Ok(())
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let namespace = if rt.kind == "RoleBinding" {
                namespace
            } else {
                ""
            };
            let role_ref: RoleRef = new
                .get("roleRef")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default();
            let role_resource = match role_ref.kind.as_str() {
                "Role" => "roles",
                "ClusterRole" => "clusterroles",
                // Validation answers an unknown kind with 422.
                _ => return Ok(()),
            };
            if allowed_verb(
                state,
                user,
                "bind",
                role_resource,
                namespace,
                &role_ref.name,
            )? {
                return Ok(());
            }
            let rules = state
                .authz()?
                .rbac
                .snapshot()
                .role_reference_rules(&role_ref, namespace)
                .map_err(|e| forbidden_error(GROUP, rt.plural, name, &e))?;
            if let Some(why) = escalation_error(state, user, namespace, &rules)? {
                return Err(forbidden_error(GROUP, rt.plural, name, &why));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule::new(verbs).groups(groups).resources(resources)
    }

    #[test]
    fn an_owner_covers_what_it_holds_and_reports_the_rest_atomically() {
        let owner = vec![rule(&["get", "list"], &[""], &["pods", "configmaps"])];
        assert!(covers(&owner, &[rule(&["get"], &[""], &["pods"])]).0);
        let (ok, missing) = covers(
            &owner,
            &[rule(&["get", "delete"], &[""], &["pods", "secrets"])],
        );
        assert!(!ok);
        let described: Vec<String> = missing.iter().map(PolicyRule::compact_string).collect();
        assert_eq!(
            described,
            [
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"delete\"]}",
            ]
        );
        let compacted: Vec<String> = compact(missing)
            .iter()
            .map(PolicyRule::compact_string)
            .collect();
        assert!(compacted.contains(
            &"{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}".to_string()
        ));
    }

    #[test]
    fn wildcards_cover_only_with_a_wildcard() {
        let admin = vec![rule(&["*"], &["*"], &["*"])];
        assert!(covers(&admin, &[rule(&["*"], &["apps"], &["deployments"])]).0);
        let reader = vec![rule(&["get", "list", "watch"], &["*"], &["*"])];
        assert!(!covers(&reader, &[rule(&["*"], &[""], &["pods"])]).0);
        let scale = vec![rule(&["get"], &["apps"], &["*/scale"])];
        assert!(covers(&scale, &[rule(&["get"], &["apps"], &["deployments/scale"])]).0);
        assert!(!covers(&scale, &[rule(&["get"], &["apps"], &["deployments"])]).0);
    }

    #[test]
    fn names_and_urls_narrow_what_is_covered() {
        let named = vec![rule(&["get"], &[""], &["secrets"]).names(&["a"])];
        assert!(covers(&named, &[rule(&["get"], &[""], &["secrets"]).names(&["a"])]).0);
        assert!(!covers(&named, &[rule(&["get"], &[""], &["secrets"])]).0);
        let urls = vec![PolicyRule::new(&["get"]).urls(&["/healthz/*"])];
        assert!(covers(&urls, &[PolicyRule::new(&["get"]).urls(&["/healthz/etcd"])]).0);
        assert!(!covers(&urls, &[PolicyRule::new(&["get"]).urls(&["/metrics"])]).0);
    }
}
