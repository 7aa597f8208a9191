//! The audit policy: kube-apiserver's `--audit-policy-file`, an `audit.k8s.io/v1` `Policy`.
//!
//! A policy is a list of rules; the first rule that matches a request decides its
//! [`Level`] (no rule: `None`, nothing is logged), the stages that are not logged
//! (`omitStages` of the policy and of the rule) and whether `managedFields` are dropped from
//! the logged objects. A rule matches when every list it sets matches (an empty list matches
//! anything): `users` and `userGroups` (the authenticated requester, before impersonation),
//! `verbs` (the request's verb: `get`, `list`, `watch`, `create`, ...; the lower-cased HTTP
//! method for non-resource URLs), and then either the resource (`resources` with `group`,
//! `resources` such as `pods`, `pods/log`, `*/status`, `pods/*` or `*`, `resourceNames`;
//! `namespaces`, `""` for cluster-scoped ones) or `nonResourceURLs` (`/healthz`, `/api*`).
//! These are the semantics of kube-apiserver's `policy.Checker`, line for line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::authn::Identity;
use crate::authz::RequestInfo;

/// How much of a request is logged, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Level {
    /// Nothing.
    None,
    /// Who did what to which object, the response code, the authorization decision: no
    /// request or response body.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

/// The stages of a request at which an event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Stage {
    /// As soon as the request is authenticated, before anything else is done with it.
    RequestReceived,
    /// Once the response headers are sent, before the body: long-running requests only
    /// (watches, logs, proxies).
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When the request handler panicked.
    Panic,
}

impl Stage {
    fn bit(self) -> u8 {
        match self {
            Stage::RequestReceived => 1,
            Stage::ResponseStarted => 2,
            Stage::ResponseComplete => 4,
            Stage::Panic => 8,
        }
    }
}

/// A set of stages (`omitStages`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stages(u8);

impl Stages {
    /// Whether `stage` is in the set.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & stage.bit() != 0
    }

    fn of(stages: &[Stage]) -> Self {
        Stages(stages.iter().fold(0, |acc, s| acc | s.bit()))
    }

    fn union(self, other: Stages) -> Self {
        Stages(self.0 | other.0)
    }
}

/// What the policy says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestAuditConfig {
    /// How much is logged.
    pub level: Level,
    /// The stages not logged.
    pub omit_stages: Stages,
    /// Whether `metadata.managedFields` is dropped from logged objects.
    pub omit_managed_fields: bool,
}

impl RequestAuditConfig {
    /// Nothing is logged.
    pub const NONE: RequestAuditConfig = RequestAuditConfig {
        level: Level::None,
        omit_stages: Stages(0),
        omit_managed_fields: false,
    };
}

/// A group's resources in a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    /// The API group, `""` for the core group.
    #[serde(default)]
    pub group: String,
    /// Resources (`pods`), subresources (`pods/log`, `*/status`, `pods/*`) or `*`; empty:
    /// every resource of the group.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty: any.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// The level of the requests this rule matches.
    pub level: Level,
    /// User names (the authenticated requester); empty: any.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups, any of which the requester must be in; empty: any.
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Verbs; empty: any.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources; empty (with no namespaces): any request, resource or not.
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""` for cluster-scoped requests); empty: any.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource paths, exact or ending in `*`.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    /// Stages not logged for the requests of this rule (added to the policy's).
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Overrides the policy's `omitManagedFields` for this rule.
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

/// An `audit.k8s.io/v1` `Policy`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// `audit.k8s.io/v1`.
    pub api_version: String,
    /// `Policy`.
    pub kind: String,
    /// Ignored (a name, labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The rules, first match wins.
    pub rules: Vec<PolicyRule>,
    /// Stages never logged.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Drop `metadata.managedFields` from logged objects (unless a rule says otherwise).
    #[serde(default)]
    pub omit_managed_fields: bool,
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("cannot read the audit policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Policy in YAML or JSON.
    #[error("the audit policy file {path} is not a valid audit.k8s.io/v1 Policy: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// The policy breaks a rule of kube-apiserver's policy validation.
    #[error("the audit policy file {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the field's path (`rules[2].nonResourceURLs[0]`).
        message: String,
    },
}

impl Policy {
    /// Reads and validates a policy file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Policy::parse(&text).map_err(|e| match e {
            PolicyError::Parse { message, .. } => PolicyError::Parse {
                path: shown.clone(),
                message,
            },
            PolicyError::Invalid { message, .. } => PolicyError::Invalid {
                path: shown.clone(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates a policy document (YAML or JSON).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(|e| PolicyError::Parse {
            path: String::new(),
            message: e.to_string(),
        })?;
        policy.validate().map_err(|message| PolicyError::Invalid {
            path: String::new(),
            message,
        })?;
        Ok(policy)
    }

    /// kube-apiserver's checks (`audit/validation`) and its refusal of a policy without
    /// rules.
    fn validate(&self) -> Result<(), String> {
        if self.api_version != "audit.k8s.io/v1" {
            return Err(format!(
                "apiVersion: unsupported value {:?}: use \"audit.k8s.io/v1\"",
                self.api_version
            ));
        }
        if self.kind != "Policy" {
            return Err(format!(
                "kind: unsupported value {:?}: use \"Policy\"",
                self.kind
            ));
        }
        if self.rules.is_empty() {
            return Err("rules: a policy needs at least one rule (an empty policy logs nothing; remove --audit-policy-file to turn auditing off)".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            validate_rule(rule).map_err(|e| format!("rules[{i}].{e}"))?;
        }
        Ok(())
    }

    /// What the policy says about a request of `user` (`None`: not authenticated).
    pub fn evaluate(&self, user: Option<&Identity>, request: &RequestInfo) -> RequestAuditConfig {
        let base = Stages::of(&self.omit_stages);
        for rule in &self.rules {
            if rule_matches(rule, user, request) {
                return RequestAuditConfig {
                    level: rule.level,
                    omit_stages: base.union(Stages::of(&rule.omit_stages)),
                    omit_managed_fields: rule
                        .omit_managed_fields
                        .unwrap_or(self.omit_managed_fields),
                };
            }
        }
        RequestAuditConfig {
            omit_stages: base,
            ..RequestAuditConfig::NONE
        }
    }
}

fn validate_rule(rule: &PolicyRule) -> Result<(), String> {
    if !rule.non_resource_urls.is_empty()
        && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
    {
        return Err(
            "nonResourceURLs: rules cannot apply to both regular resources and non-resource URLs"
                .into(),
        );
    }
    for (i, url) in rule.non_resource_urls.iter().enumerate() {
        if url == "*" {
            continue;
        }
        if !url.starts_with('/') {
            return Err(format!(
                "nonResourceURLs[{i}]: {url:?}: non-resource URL rules must begin with a '/' character"
            ));
        }
        if url[..url.len() - 1].contains('*') {
            return Err(format!(
                "nonResourceURLs[{i}]: {url:?}: non-resource URL wildcards '*' must be the final character of the rule"
            ));
        }
    }
    for (i, gr) in rule.resources.iter().enumerate() {
        if !gr.group.is_empty() && !is_dns_subdomain(&gr.group) {
            return Err(format!(
                "resources[{i}].group: {:?}: must be a lower-case DNS subdomain (\"\" is the core group)",
                gr.group
            ));
        }
        if gr.resources.is_empty() && !gr.resource_names.is_empty() {
            return Err(format!(
                "resources[{i}].resourceNames: using resourceNames requires at least one resource"
            ));
        }
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}

fn rule_matches(rule: &PolicyRule, user: Option<&Identity>, request: &RequestInfo) -> bool {
    if !rule.users.is_empty() && !user.is_some_and(|u| has(&rule.users, &u.user)) {
        return false;
    }
    if !rule.user_groups.is_empty()
        && !user.is_some_and(|u| u.groups.iter().any(|g| has(&rule.user_groups, g)))
    {
        return false;
    }
    if !rule.verbs.is_empty() && !has(&rule.verbs, &request.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return matches_resource(rule, request);
    }
    if !rule.non_resource_urls.is_empty() {
        return !request.resource_request
            && rule
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(&request.path, spec));
    }
    true
}

fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

fn matches_resource(rule: &PolicyRule, request: &RequestInfo) -> bool {
    if !request.resource_request {
        return false;
    }
    if !rule.namespaces.is_empty() && !has(&rule.namespaces, &request.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let resource = request.resource.as_str();
    let subresource = request.subresource.as_str();
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    rule.resources
        .iter()
        .filter(|gr| gr.group == request.api_group)
        .any(|gr| {
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !has(&gr.resource_names, &request.name) {
                return false;
            }
            gr.resources.iter().any(|res| {
                res == "*"
                    || *res == combined
                    || (!subresource.is_empty() && res.strip_prefix("*/") == Some(subresource))
                    || res.strip_suffix("/*") == Some(resource)
            })
        })
}

#[cfg(test)]
mod tests;
