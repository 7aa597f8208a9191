//! Aggregated discovery (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList): every group,
//! version, resource and subresource in one document, served on `/api` (legacy core
//! group) and `/apis` (named groups) to clients that ask for it in `Accept`.
//!
//! The conversion follows the apiserver's `ConvertGroupVersionIntoToDiscovery`: the
//! APIResourceList entries become resources, `a/b` entries become subresources of `a`,
//! and `responseKind` is `{group, version, kind}` with group/version empty unless the
//! kind lives in another group-version (scale).

use serde_json::{Map, Value, json};

use super::{ApiResource, api_resources};
use crate::registry::Registry;

/// The Content-Type of an aggregated discovery response.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn response_kind(r: &ApiResource) -> Value {
    let (group, version) = r.group_version.unwrap_or(("", ""));
    json!({"group": group, "version": version, "kind": r.kind})
}

fn version_json(registry: &Registry, group: &str, version: &str) -> Value {
    let entries = api_resources(registry, group, version);
    let mut resources: Vec<Map<String, Value>> = Vec::new();
    for r in entries.iter().filter(|r| !r.name.contains('/')) {
        let mut m = Map::new();
        m.insert("resource".into(), json!(r.name));
        m.insert("responseKind".into(), response_kind(r));
        m.insert(
            "scope".into(),
            json!(if r.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            }),
        );
        m.insert("singularResource".into(), json!(r.singular));
        m.insert("verbs".into(), json!(r.verbs));
        if !r.short_names.is_empty() {
            m.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            m.insert("categories".into(), json!(r.categories));
        }
        resources.push(m);
    }
    for r in &entries {
        let Some((parent, sub)) = r.name.split_once('/') else {
            continue;
        };
        let Some(parent) = resources.iter_mut().find(|m| m["resource"] == parent) else {
            continue;
        };
        let entry = json!({
            "subresource": sub,
            "responseKind": response_kind(r),
            "verbs": r.verbs,
        });
        match parent.get_mut("subresources") {
            Some(Value::Array(subs)) => subs.push(entry),
            _ => {
                parent.insert("subresources".into(), json!([entry]));
            }
        }
    }
    json!({
        "version": version,
        "resources": resources.into_iter().map(Value::Object).collect::<Vec<_>>(),
        "freshness": "Current",
    })
}

/// The APIGroupDiscoveryList for `/api` (`legacy`: the core group only, unnamed) or
/// `/apis` (every named group, in registry order, versions preferred first).
pub fn aggregated_v2(registry: &Registry, legacy: bool) -> Value {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (group, version) in registry.group_versions() {
        if group.is_empty() != legacy {
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| {
            let mut metadata = Map::new();
            if !group.is_empty() {
                metadata.insert("name".into(), json!(group));
            }
            metadata.insert("creationTimestamp".into(), Value::Null);
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| version_json(registry, group, v))
                .collect();
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::RESOURCE_VERBS;

    fn resource<'a>(version: &'a Value, name: &str) -> &'a Value {
        version["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn legacy_discovery_has_one_unnamed_core_group() {
        let doc = aggregated_v2(&Registry::builtin(), true);
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"], json!({"creationTimestamp": null}));
        let v1 = &items[0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        assert_eq!(
            resource(v1, "pods"),
            &json!({
                "resource": "pods",
                "responseKind": {"group": "", "version": "", "kind": "Pod"},
                "scope": "Namespaced",
                "singularResource": "pod",
                "verbs": RESOURCE_VERBS,
                "shortNames": ["po"],
                "categories": ["all"],
                "subresources": [
                    {"subresource": "attach", "responseKind": {"group": "", "version": "", "kind": "PodAttachOptions"}, "verbs": ["create", "get"]},
                    {"subresource": "binding", "responseKind": {"group": "", "version": "", "kind": "Binding"}, "verbs": ["create"]},
                    {"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]},
                    {"subresource": "exec", "responseKind": {"group": "", "version": "", "kind": "PodExecOptions"}, "verbs": ["create", "get"]},
                    {"subresource": "log", "responseKind": {"group": "", "version": "", "kind": "Pod"}, "verbs": ["get"]},
                    {"subresource": "portforward", "responseKind": {"group": "", "version": "", "kind": "PodPortForwardOptions"}, "verbs": ["create", "get"]},
                    {"subresource": "status", "responseKind": {"group": "", "version": "", "kind": "Pod"}, "verbs": ["get", "patch", "update"]}
                ]
            })
        );
        assert_eq!(resource(v1, "nodes")["scope"], "Cluster");
        assert!(resource(v1, "configmaps").get("subresources").is_none());
    }

    #[test]
    fn named_groups_carry_their_names_and_scale_subresources() {
        let doc = aggregated_v2(&Registry::builtin(), false);
        let items = doc["items"].as_array().unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "batch",
                "rbac.authorization.k8s.io",
                "coordination.k8s.io",
                "certificates.k8s.io",
                "node.k8s.io",
                "discovery.k8s.io",
                "networking.k8s.io",
                "serving.knative.dev"
            ]
        );
        let deployments = resource(&items[0]["versions"][0], "deployments");
        assert_eq!(
            deployments["subresources"],
            json!([
                {"subresource": "scale",
                 "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                 "verbs": ["get", "patch", "update"]},
                {"subresource": "status",
                 "responseKind": {"group": "", "version": "", "kind": "Deployment"},
                 "verbs": ["get", "patch", "update"]}
            ])
        );
        assert_eq!(deployments["shortNames"], json!(["deploy"]));
    }
}
