//! The kinds the garbage collector watches and resolves owner references with, found by
//! API discovery (every resource that can be listed, watched and deleted; Events are
//! left out, as Kubernetes' garbage collector ignores them).

use std::collections::HashMap;

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

use super::graph::group_of;

/// One watched kind.
#[derive(Clone, Debug)]
pub(crate) struct Kind {
    pub(crate) resource: ApiResource,
    pub(crate) namespaced: bool,
}

impl Kind {
    /// An API for objects of this kind in `namespace` (ignored for cluster-scoped kinds).
    pub(crate) fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// The watched kinds, by group and kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Kinds {
    list: Vec<Kind>,
    by_group_kind: HashMap<(String, String), usize>,
}

impl Kinds {
    /// Builds the set from discovered resources (preferred versions).
    pub(crate) fn from_resources(resources: Vec<(ApiResource, ApiCapabilities)>) -> Self {
        let mut kinds = Kinds::default();
        for (resource, caps) in resources {
            let ignored = resource.plural == "events"
                && (resource.group.is_empty() || resource.group == "events.k8s.io");
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            let key = (resource.group.clone(), resource.kind.clone());
            if ignored || !usable || kinds.by_group_kind.contains_key(&key) {
                continue;
            }
            kinds.by_group_kind.insert(key, kinds.list.len());
            kinds.list.push(Kind {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
            });
        }
        kinds
    }

    /// Asks the apiserver.
    pub(crate) async fn discover(client: &Client) -> Result<Self, kube::Error> {
        let discovery = Discovery::new(client.clone()).run().await?;
        let resources = discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .collect();
        Ok(Kinds::from_resources(resources))
    }

    /// Every watched kind; the index is the kind's number in the graph.
    pub(crate) fn all(&self) -> &[Kind] {
        &self.list
    }

    /// The kind an `apiVersion` and `kind` name (any version of the group).
    pub(crate) fn resolve(&self, api_version: &str, kind: &str) -> Option<&Kind> {
        self.by_group_kind
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .and_then(|i| self.list.get(*i))
    }

    /// Whether objects of that kind live in namespaces (unknown kinds: assumed so).
    pub(crate) fn namespaced(&self, api_version: &str, kind: &str) -> bool {
        self.resolve(api_version, kind).is_none_or(|k| k.namespaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        group: &str,
        kind: &str,
        plural: &str,
        scope: Scope,
        ops: &[&str],
    ) -> (ApiResource, ApiCapabilities) {
        let api_version = if group.is_empty() {
            "v1".to_string()
        } else {
            format!("{group}/v1")
        };
        (
            ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version,
                kind: kind.into(),
                plural: plural.into(),
            },
            ApiCapabilities {
                scope,
                subresources: Vec::new(),
                operations: ops.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    #[test]
    fn watchable_deletable_kinds_are_kept_and_events_left_out() {
        let all = &["list", "watch", "delete", "get"];
        let kinds = Kinds::from_resources(vec![
            resource("", "Pod", "pods", Scope::Namespaced, all),
            resource("", "Event", "events", Scope::Namespaced, all),
            resource("events.k8s.io", "Event", "events", Scope::Namespaced, all),
            resource("", "Node", "nodes", Scope::Cluster, all),
            resource("", "Binding", "bindings", Scope::Namespaced, &["create"]),
            resource("apps", "ReplicaSet", "replicasets", Scope::Namespaced, all),
        ]);
        let names: Vec<_> = kinds
            .all()
            .iter()
            .map(|k| k.resource.kind.as_str())
            .collect();
        assert_eq!(names, ["Pod", "Node", "ReplicaSet"]);
        assert!(kinds.resolve("apps/v1beta2", "ReplicaSet").is_some());
        assert!(kinds.resolve("v1", "ReplicaSet").is_none());
        assert!(!kinds.namespaced("v1", "Node"));
        assert!(kinds.namespaced("example.com/v1", "Widget"));
    }
}
