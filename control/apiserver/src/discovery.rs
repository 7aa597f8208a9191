//! API discovery, derived from the registry: `/version`, `/api` (APIVersions), `/apis`
//! (APIGroupList), `/apis/{group}` (APIGroup), `/api/v1` and `/apis/{group}/{version}`
//! (APIResourceList), and the aggregated discovery of `apidiscovery.k8s.io/v2` that
//! kubectl 1.32 asks for first (`aggregated`).
//!
//! Resources and their subresources are listed sorted by name, verbs sorted, as the
//! Kubernetes apiserver's installer does.

mod aggregated;

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceType, Subresource};

pub use aggregated::{AGGREGATED_CONTENT_TYPE, aggregated_v2};

/// The verbs of a top-level resource, sorted.
pub const RESOURCE_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The Kubernetes minor version wasmkube's API corresponds to.
const MINOR: &str = "33";

/// `gitVersion`: `v1.33.0-wasmkube.<crate version>`, a valid semver kubectl can compare.
pub fn git_version() -> String {
    format!("v1.{MINOR}.0-wasmkube.{}", env!("CARGO_PKG_VERSION"))
}

fn go_platform() -> String {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{os}/{arch}")
}

/// The `/version` document (`version.Info`).
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "emulationMajor": "1",
        "emulationMinor": MINOR,
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": git_version(),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": go_platform(),
    })
}

/// `/api`: the legacy core group's versions, and the address clients should use.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

/// One entry of an APIResourceList (`metav1.APIResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiResource {
    /// `pods` or `pods/status`.
    pub(crate) name: String,
    /// `pod` for resources, empty for subresources.
    pub(crate) singular: &'static str,
    pub(crate) namespaced: bool,
    /// Set only when the kind is in another group-version (scale: `autoscaling/v1`).
    pub(crate) group_version: Option<(&'static str, &'static str)>,
    pub(crate) kind: &'static str,
    pub(crate) verbs: Vec<&'static str>,
    pub(crate) short_names: &'static [&'static str],
    pub(crate) categories: &'static [&'static str],
}

impl ApiResource {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("singularName".into(), json!(self.singular));
        m.insert("namespaced".into(), json!(self.namespaced));
        if let Some((group, version)) = self.group_version {
            m.insert("group".into(), json!(group));
            m.insert("version".into(), json!(version));
        }
        m.insert("kind".into(), json!(self.kind));
        m.insert("verbs".into(), json!(self.verbs));
        if !self.short_names.is_empty() {
            m.insert("shortNames".into(), json!(self.short_names));
        }
        if !self.categories.is_empty() {
            m.insert("categories".into(), json!(self.categories));
        }
        Value::Object(m)
    }
}

fn subresource_entry(rt: &ResourceType, sub: Subresource) -> ApiResource {
    let (group_version, kind, verbs) = match sub {
        Subresource::Status | Subresource::Approval => {
            (None, rt.kind, vec!["get", "patch", "update"])
        }
        Subresource::Scale => (
            Some(("autoscaling", "v1")),
            "Scale",
            vec!["get", "patch", "update"],
        ),
        Subresource::Binding => (None, "Binding", vec!["create"]),
        Subresource::Log => (None, rt.kind, vec!["get"]),
        Subresource::PortForward => (None, "PodPortForwardOptions", vec!["create", "get"]),
        Subresource::Exec => (None, "PodExecOptions", vec!["create", "get"]),
        Subresource::Attach => (None, "PodAttachOptions", vec!["create", "get"]),
        Subresource::Eviction => (Some(("policy", "v1")), "Eviction", vec!["create"]),
        Subresource::Proxy => (
            None,
            "NodeProxyOptions",
            vec!["create", "delete", "get", "patch", "update"],
        ),
        Subresource::Token => (
            Some(("authentication.k8s.io", "v1")),
            "TokenRequest",
            vec!["create"],
        ),
    };
    ApiResource {
        name: format!("{}/{}", rt.plural, sub.name()),
        singular: "",
        namespaced: rt.namespaced,
        group_version,
        kind,
        verbs,
        short_names: &[],
        categories: &[],
    }
}

/// The resources and subresources of one group-version, sorted by name.
pub(crate) fn api_resources(registry: &Registry, group: &str, version: &str) -> Vec<ApiResource> {
    let mut out = Vec::new();
    for rt in registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        out.push(ApiResource {
            name: rt.plural.to_string(),
            singular: rt.singular,
            namespaced: rt.namespaced,
            group_version: None,
            kind: rt.kind,
            verbs: if rt.create_only {
                vec!["create"]
            } else {
                RESOURCE_VERBS.to_vec()
            },
            short_names: rt.short_names,
            categories: rt.categories,
        });
        out.extend(rt.subresources.iter().map(|s| subresource_entry(rt, *s)));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `/api/v1` or `/apis/{group}/{version}`: the APIResourceList, `None` if not served.
pub fn api_resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = api_resources(registry, group, version);
    if resources.is_empty() {
        return None;
    }
    let resources: Vec<Value> = resources.iter().map(ApiResource::to_json).collect();
    Some(if group.is_empty() {
        // The legacy core list carries no apiVersion, as Kubernetes serves it.
        json!({"kind": "APIResourceList", "groupVersion": version, "resources": resources})
    } else {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": resources,
        })
    })
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// The named groups in registry order, each with its versions (preferred first).
fn named_groups(registry: &Registry) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (group, version) in registry.group_versions() {
        if group.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    groups
}

/// `/apis`: every named group with its versions.
pub fn api_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = named_groups(registry)
        .iter()
        .map(|(g, versions)| group_json(g, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: one APIGroup, `None` if the group is not served.
pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    let groups = named_groups(registry);
    let (name, versions) = groups.iter().find(|(g, _)| *g == group)?;
    let mut doc = group_json(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn core_resource_list_has_pods_and_their_subresources() {
        let registry = Registry::builtin();
        let list = api_resource_list(&registry, "", "v1").unwrap();
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], "v1");
        assert!(list.get("apiVersion").is_none());
        assert_eq!(
            find(&list, "pods"),
            &json!({
                "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                "verbs": RESOURCE_VERBS, "shortNames": ["po"], "categories": ["all"]
            })
        );
        assert_eq!(
            find(&list, "pods/binding"),
            &json!({"name": "pods/binding", "singularName": "", "namespaced": true,
                    "kind": "Binding", "verbs": ["create"]})
        );
        assert_eq!(
            find(&list, "pods/eviction"),
            &json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
                    "group": "policy", "version": "v1", "kind": "Eviction",
                    "verbs": ["create"]})
        );
        assert_eq!(find(&list, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(
            find(&list, "pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert_eq!(find(&list, "nodes")["namespaced"], false);
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn deployment_scale_is_an_autoscaling_v1_scale() {
        let registry = Registry::builtin();
        let list = api_resource_list(&registry, "apps", "v1").unwrap();
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["groupVersion"], "apps/v1");
        assert_eq!(
            find(&list, "deployments/scale"),
            &json!({"name": "deployments/scale", "singularName": "", "namespaced": true,
                    "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": ["get", "patch", "update"]})
        );
        assert!(api_resource_list(&registry, "apps", "v2").is_none());
    }

    #[test]
    fn group_list_names_each_group_with_its_preferred_version() {
        let registry = Registry::builtin();
        let list = api_group_list(&registry);
        assert_eq!(list["kind"], "APIGroupList");
        let groups = list["groups"].as_array().unwrap();
        let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
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
        assert_eq!(
            groups[0]["preferredVersion"],
            json!({"groupVersion": "apps/v1", "version": "v1"})
        );
        let batch = api_group(&registry, "batch").unwrap();
        assert_eq!(batch["kind"], "APIGroup");
        assert_eq!(
            batch["versions"],
            json!([{"groupVersion": "batch/v1", "version": "v1"}])
        );
        assert!(api_group(&registry, "").is_none());
        assert!(api_group(&registry, "extensions").is_none());
    }

    #[test]
    fn api_versions_lists_v1_and_the_server_address() {
        assert_eq!(
            api_versions("127.0.0.1:6443"),
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [
                       {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
        );
    }

    #[test]
    fn version_info_is_kubernetes_1_33_with_a_wasmkube_suffix() {
        let v = version_info();
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("33"))
        );
        let git = v["gitVersion"].as_str().unwrap();
        assert!(git.starts_with("v1.33.0-wasmkube."), "{git}");
        assert!(v["platform"].as_str().unwrap().contains('/'));
    }
}
