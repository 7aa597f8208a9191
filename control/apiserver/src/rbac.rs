//! Role-based access control (rbac.authorization.k8s.io/v1), with Kubernetes' behaviour
//! as the specification.
//!
//! - `rule`: policy rules, subjects, role references and how they match.
//! - `snapshot` + `cache`: every Role, ClusterRole, RoleBinding and ClusterRoleBinding in
//!   memory, refreshed from one store watch; rule resolution over an immutable snapshot.
//! - [`RbacAuthorizer`]: the `RBAC` link of the authorizer chain.
//! - `policy` + `bootstrap`: the default roles and bindings Kubernetes bootstraps,
//!   reconciled at every start (objects annotated `rbac.authorization.kubernetes.io/
//!   autoupdate: "true"` get missing rules and subjects back).
//! - `aggregation`: the clusterrole-aggregation controller (aggregated ClusterRoles such as
//!   `admin`, `edit` and `view` collect the rules of the ClusterRoles their selectors pick).
//! - `escalation`: a user may only create a role with permissions they hold (or `escalate`),
//!   and only bind a role whose permissions they hold (or `bind`).

mod aggregation;
mod bootstrap;
mod cache;
mod escalation;
mod index;
mod policy;
mod rule;
mod snapshot;

use std::sync::Arc;

pub use aggregation::{aggregate_once, converge, spawn_aggregation_controller};
pub use bootstrap::reconcile as bootstrap;
pub use cache::PolicyCache;
pub use escalation::{admit, covers};
pub(crate) use policy::node_rules;
pub use rule::{
    GROUP, PolicyRule, RoleRef, Subject, service_account_groups, service_account_username,
    split_service_account_username,
};
pub use snapshot::{Binding, ClusterRoleEntry, Snapshot, Source, aggregate as aggregate_errors};

use crate::authn::Identity;
use crate::authz::{Attributes, Authorizer, Decision, RuleSet};

/// The RBAC authorizer: allows a request when a binding of the user grants a rule that
/// matches it; otherwise no opinion (with the resolution errors as the reason).
#[derive(Clone, Debug)]
pub struct RbacAuthorizer {
    cache: Arc<PolicyCache>,
}

impl RbacAuthorizer {
    /// An authorizer over `cache`.
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        RbacAuthorizer { cache }
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        match self
            .cache
            .snapshot()
            .allows(attributes.user, attributes.request)
        {
            Ok(reason) => Decision::Allow(reason),
            Err(errors) if errors.is_empty() => Decision::NoOpinion(String::new()),
            Err(errors) => Decision::NoOpinion(format!("RBAC: {}", snapshot::aggregate(&errors))),
        }
    }

    fn rules_for(&self, user: &Identity, namespace: &str) -> RuleSet {
        let (rules, errors) = self.cache.snapshot().rules_for(user, namespace);
        let mut set = RuleSet {
            incomplete: !errors.is_empty(),
            errors,
            ..RuleSet::default()
        };
        for rule in rules {
            if !rule.resources.is_empty() {
                set.resource_rules.push(PolicyRule {
                    non_resource_urls: Vec::new(),
                    ..rule.clone()
                });
            }
            if !rule.non_resource_urls.is_empty() {
                set.non_resource_rules.push(PolicyRule {
                    verbs: rule.verbs,
                    non_resource_urls: rule.non_resource_urls,
                    ..PolicyRule::default()
                });
            }
        }
        set
    }
}

/// After a write of an RBAC object at `revision`, waits until the cache reflects it, so
/// the writer's next request is authorized by it. A no-op for other kinds.
pub async fn observe_write(
    state: &crate::state::AppState,
    rt: &crate::registry::ResourceType,
    revision: wasmkube_store::Revision,
) {
    if rt.group != GROUP {
        return;
    }
    if let Ok(authz) = state.authz() {
        authz.rbac.wait_for(revision).await;
    }
}
