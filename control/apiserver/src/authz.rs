//! Authorization: may this identity make this request?
//!
//! Every request that passed authentication (`authn`) and impersonation (`impersonation`)
//! is turned into [`RequestInfo`] (`request_info`: verb, API group, resource, subresource,
//! namespace, name, or a non-resource path, resolved from the URL alone as Kubernetes'
//! `RequestInfoFactory` does) and put to the [`Authorizer`] chain that
//! `--authorization-mode` configured ([`AuthorizationMode`]). As in kube-apiserver the chain
//! always starts with [`PrivilegedGroup`] (`system:masters` may do anything), then each
//! mode in order: the first [`Decision::Allow`] or [`Decision::Deny`] wins, and a request
//! nobody allowed is answered 403 with Kubernetes' wording ([`forbidden`]).
//!
//! The Node authorizer ([`node`]) decides for node agents in front of RBAC (`Node,RBAC`,
//! kube-apiserver's default).

pub mod node;
mod request_info;

use std::sync::Arc;

pub use request_info::{RequestInfo, resolve as resolve_request};

use crate::authn::{GROUP_MASTERS, Identity};
use crate::error::ApiError;
use crate::rbac::PolicyRule;

/// A server's authorization: the chain every request is put to, and the RBAC cache that
/// rule resolution (escalation checks, rules reviews) reads even when RBAC is not a mode.
#[derive(Clone)]
pub struct Authz {
    /// The authorizer chain of `--authorization-mode`.
    pub authorizer: Arc<dyn Authorizer>,
    /// Every RBAC object, current to the store.
    pub rbac: Arc<crate::rbac::PolicyCache>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz").finish_non_exhaustive()
    }
}

/// What an [`Authorizer`] is asked: who (`user`) wants to do what (`request`).
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The authenticated (or impersonated) identity.
    pub user: &'a Identity,
    /// The request: a resource request or a non-resource path, with its verb.
    pub request: &'a RequestInfo,
}

/// An authorizer's answer, with the reason that ends up in access reviews and messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed; later authorizers are not asked.
    Allow(String),
    /// The request is refused; later authorizers are not asked.
    Deny(String),
    /// This authorizer has nothing to say; the next one is asked.
    NoOpinion(String),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The reason, possibly empty.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow(r) | Decision::Deny(r) | Decision::NoOpinion(r) => r,
        }
    }
}

/// The rules a user has in a namespace (`SelfSubjectRulesReview`), as Kubernetes'
/// `RuleResolver` answers them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules about resources.
    pub resource_rules: Vec<PolicyRule>,
    /// Rules about non-resource URLs.
    pub non_resource_rules: Vec<PolicyRule>,
    /// Whether the list may lack rules (a binding names a role that does not exist, or an
    /// authorizer cannot list its rules).
    pub incomplete: bool,
    /// Why the list may be incomplete.
    pub errors: Vec<String>,
}

impl RuleSet {
    fn merge(&mut self, other: RuleSet) {
        self.resource_rules.extend(other.resource_rules);
        self.non_resource_rules.extend(other.non_resource_rules);
        self.incomplete |= other.incomplete;
        self.errors.extend(other.errors);
    }
}

/// The authorization seam: one link of the chain.
pub trait Authorizer: Send + Sync + 'static {
    /// Decides on one request.
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision;

    /// The rules `user` has in `namespace` ("" for cluster-wide rules only).
    fn rules_for(&self, user: &Identity, namespace: &str) -> RuleSet;
}

/// Authorizers asked in order until one allows or denies (kube-apiserver's union
/// authorizer). A request nobody decided on is not allowed.
#[derive(Clone, Default)]
pub struct Chain {
    links: Vec<Arc<dyn Authorizer>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("links", &self.links.len())
            .finish()
    }
}

impl Chain {
    /// A chain of `links`, asked in this order.
    pub fn new(links: Vec<Arc<dyn Authorizer>>) -> Self {
        Chain { links }
    }
}

impl Authorizer for Chain {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        let mut reasons: Vec<String> = Vec::new();
        for link in &self.links {
            match link.authorize(attributes) {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }

    fn rules_for(&self, user: &Identity, namespace: &str) -> RuleSet {
        let mut all = RuleSet::default();
        for link in &self.links {
            all.merge(link.rules_for(user, namespace));
        }
        all
    }
}

/// Allows members of `system:masters` everything (kube-apiserver's privileged group
/// authorizer, always first in the chain); no opinion on anyone else.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivilegedGroup;

impl Authorizer for PrivilegedGroup {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        if attributes.user.in_group(GROUP_MASTERS) {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    fn rules_for(&self, _user: &Identity, _namespace: &str) -> RuleSet {
        // The cluster-admin binding of system:masters lists the same rules through RBAC.
        RuleSet::default()
    }
}

/// `--authorization-mode AlwaysAllow`: everything is allowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _attributes: &Attributes<'_>) -> Decision {
        Decision::Allow(String::new())
    }

    fn rules_for(&self, _user: &Identity, _namespace: &str) -> RuleSet {
        RuleSet {
            resource_rules: vec![PolicyRule::new(&["*"]).groups(&["*"]).resources(&["*"])],
            non_resource_rules: vec![PolicyRule::new(&["*"]).urls(&["*"])],
            ..RuleSet::default()
        }
    }
}

/// `--authorization-mode AlwaysDeny`: everything is refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysDeny;

impl Authorizer for AlwaysDeny {
    fn authorize(&self, _attributes: &Attributes<'_>) -> Decision {
        Decision::Deny(String::new())
    }

    fn rules_for(&self, _user: &Identity, _namespace: &str) -> RuleSet {
        RuleSet::default()
    }
}

/// One value of kube-apiserver's `--authorization-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// The Node authorizer: node agents may reach their own Node, pods and what those
    /// pods use.
    Node,
    /// Role-based access control over the rbac.authorization.k8s.io objects.
    Rbac,
    /// Allow every request (for benchmarks and experiments).
    AlwaysAllow,
    /// Refuse every request but the privileged group's.
    AlwaysDeny,
}

/// A bad `--authorization-mode` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    /// An unknown mode.
    #[error(
        "unknown authorization mode {0:?}: supported modes are Node, RBAC, AlwaysAllow and AlwaysDeny"
    )]
    Unknown(String),
    /// A mode given twice.
    #[error("authorization mode {0:?} is given more than once")]
    Duplicate(String),
    /// No mode.
    #[error("at least one authorization mode is required")]
    Empty,
}

impl AuthorizationMode {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationMode::Node => "Node",
            AuthorizationMode::Rbac => "RBAC",
            AuthorizationMode::AlwaysAllow => "AlwaysAllow",
            AuthorizationMode::AlwaysDeny => "AlwaysDeny",
        }
    }

    /// Parses a comma-separated list (`RBAC`, `AlwaysAllow`), as kube-apiserver's flag.
    pub fn parse_list(value: &str) -> Result<Vec<AuthorizationMode>, ModeError> {
        let mut modes = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mode: AuthorizationMode = part.parse()?;
            if modes.contains(&mode) {
                return Err(ModeError::Duplicate(part.to_string()));
            }
            modes.push(mode);
        }
        if modes.is_empty() {
            return Err(ModeError::Empty);
        }
        Ok(modes)
    }
}

impl std::str::FromStr for AuthorizationMode {
    type Err = ModeError;

    fn from_str(value: &str) -> Result<Self, ModeError> {
        match value.trim() {
            "Node" => Ok(AuthorizationMode::Node),
            "RBAC" => Ok(AuthorizationMode::Rbac),
            "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
            "AlwaysDeny" => Ok(AuthorizationMode::AlwaysDeny),
            other => Err(ModeError::Unknown(other.to_string())),
        }
    }
}

/// Builds the chain for `modes`: the privileged group first, then each mode in order;
/// `rbac` and `node` are the RBAC and Node authorizers (used when `modes` names them).
pub fn build_chain(
    modes: &[AuthorizationMode],
    rbac: Arc<dyn Authorizer>,
    node: Arc<dyn Authorizer>,
) -> Chain {
    let mut links: Vec<Arc<dyn Authorizer>> = vec![Arc::new(PrivilegedGroup)];
    for mode in modes {
        links.push(match mode {
            AuthorizationMode::Node => Arc::clone(&node),
            AuthorizationMode::Rbac => Arc::clone(&rbac),
            AuthorizationMode::AlwaysAllow => Arc::new(AlwaysAllow),
            AuthorizationMode::AlwaysDeny => Arc::new(AlwaysDeny),
        });
    }
    Chain::new(links)
}

/// The message of a refused request, worded as kube-apiserver's `forbiddenMessage`:
/// `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(user: &Identity, request: &RequestInfo) -> String {
    if !request.resource_request {
        return format!(
            "User {:?} cannot {} path {:?}",
            user.user, request.verb, request.path
        );
    }
    let resource = if request.subresource.is_empty() {
        request.resource.clone()
    } else {
        format!("{}/{}", request.resource, request.subresource)
    };
    if request.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.user, request.verb, resource, request.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.user, request.verb, resource, request.api_group, request.namespace
        )
    }
}

/// The 403 of a refused request: `pods is forbidden: User "alice" cannot list ...`, with
/// the authorizer's reason appended as Kubernetes does (`...: RBAC: clusterrole ... not
/// found`) and `details` naming the resource.
pub fn forbidden(user: &Identity, request: &RequestInfo, reason: &str) -> ApiError {
    let mut message = forbidden_message(user, request);
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    forbidden_error(
        &request.api_group,
        &request.resource,
        &request.name,
        &message,
    )
}

/// A 403 about a resource, as `apierrors.NewForbidden(groupResource, name, err)` words it.
pub fn forbidden_error(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let message = if resource.is_empty() {
        format!("forbidden: {why}")
    } else {
        let gr = crate::error::group_resource(group, resource);
        if name.is_empty() {
            format!("{gr} is forbidden: {why}")
        } else {
            format!("{gr} {name:?} is forbidden: {why}")
        }
    };
    let mut err = ApiError::forbidden(message);
    let mut details = serde_json::Map::new();
    if !name.is_empty() {
        details.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    if !resource.is_empty() {
        details.insert("kind".into(), resource.into());
    }
    if !details.is_empty() {
        err.details = Some(serde_json::Value::Object(details));
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> Identity {
        Identity {
            user: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn info(method: &str, path: &str) -> RequestInfo {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        resolve_request(
            &http::Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            query,
        )
    }

    struct Fixed(Decision);
    impl Authorizer for Fixed {
        fn authorize(&self, _: &Attributes<'_>) -> Decision {
            self.0.clone()
        }
        fn rules_for(&self, _: &Identity, _: &str) -> RuleSet {
            RuleSet::default()
        }
    }

    #[test]
    fn forbidden_messages_are_worded_as_kubernetes() {
        let alice = user("alice", &[]);
        let e = forbidden(&alice, &info("GET", "/api/v1/namespaces/default/pods"), "");
        assert_eq!(
            e.message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let e = forbidden(&alice, &info("GET", "/apis/apps/v1/deployments"), "");
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"alice\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let e = forbidden(
            &alice,
            &info("GET", "/api/v1/namespaces/ns/pods/web/log"),
            "",
        );
        assert_eq!(
            e.message,
            "pods \"web\" is forbidden: User \"alice\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"ns\""
        );
        assert_eq!(
            e.details,
            Some(serde_json::json!({"name": "web", "kind": "pods"}))
        );
        let e = forbidden(&alice, &info("GET", "/metrics"), "");
        assert_eq!(
            e.message,
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
        let e = forbidden(
            &alice,
            &info("POST", "/api/v1/namespaces/default/configmaps"),
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found",
        );
        assert!(
            e.message
                .ends_with("in the namespace \"default\": RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_chain_stops_at_the_first_decision_and_defaults_to_no() {
        let alice = user("alice", &[]);
        let request = info("GET", "/api");
        let attrs = Attributes {
            user: &alice,
            request: &request,
        };
        let chain = Chain::new(vec![
            Arc::new(Fixed(Decision::NoOpinion("first".into()))),
            Arc::new(Fixed(Decision::Deny("second".into()))),
            Arc::new(Fixed(Decision::Allow("third".into()))),
        ]);
        assert_eq!(chain.authorize(&attrs), Decision::Deny("second".into()));
        let undecided = Chain::new(vec![Arc::new(Fixed(Decision::NoOpinion("x".into())))]);
        assert!(!undecided.authorize(&attrs).is_allowed());
    }

    #[test]
    fn system_masters_is_allowed_before_any_mode() {
        let chain = build_chain(
            &[AuthorizationMode::AlwaysDeny],
            Arc::new(AlwaysDeny),
            Arc::new(AlwaysDeny),
        );
        let request = info("DELETE", "/api/v1/nodes/a");
        let admin = user("admin", &[GROUP_MASTERS]);
        let bob = user("bob", &["system:authenticated"]);
        assert!(
            chain
                .authorize(&Attributes {
                    user: &admin,
                    request: &request
                })
                .is_allowed()
        );
        assert!(
            !chain
                .authorize(&Attributes {
                    user: &bob,
                    request: &request
                })
                .is_allowed()
        );
    }

    #[test]
    fn authorization_modes_parse_as_the_kube_apiserver_flag() {
        assert_eq!(
            AuthorizationMode::parse_list("RBAC"),
            Ok(vec![AuthorizationMode::Rbac])
        );
        assert_eq!(
            AuthorizationMode::parse_list("AlwaysAllow, RBAC"),
            Ok(vec![
                AuthorizationMode::AlwaysAllow,
                AuthorizationMode::Rbac
            ])
        );
        assert_eq!(
            AuthorizationMode::parse_list("Node,RBAC"),
            Ok(vec![AuthorizationMode::Node, AuthorizationMode::Rbac])
        );
        assert_eq!(
            AuthorizationMode::parse_list("Webhook"),
            Err(ModeError::Unknown("Webhook".into()))
        );
        assert_eq!(
            AuthorizationMode::parse_list("RBAC,RBAC"),
            Err(ModeError::Duplicate("RBAC".into()))
        );
        assert_eq!(AuthorizationMode::parse_list(""), Err(ModeError::Empty));
    }
}
