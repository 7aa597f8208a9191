//! `components.schemas` of one group-version document, generated from k8s-openapi's
//! schemars impls (which already carry Kubernetes' dotted names, e.g.
//! `io.k8s.api.core.v1.Pod`), plus what Kubernetes' own OpenAPI adds and k8s-openapi
//! does not carry:
//!
//! - `x-kubernetes-group-version-kind` on every top-level kind, its List and the meta
//!   kinds (kubectl finds a kind's schema by it);
//! - the `*List` kinds (k8s-openapi has one generic `List<T>` without a schema);
//! - the strategic-merge-patch extensions `x-kubernetes-patch-strategy` and
//!   `x-kubernetes-patch-merge-key`, which kubectl's client-side apply reads from
//!   `/openapi/v3` to merge lists such as `containers` by name.

use k8s_openapi::api::{
    apps, authentication, authorization, autoscaling, batch, coordination, core, node, policy, rbac,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::registry::{ResourceType, Subresource};

/// Where the schemas live inside the document.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// Names of the meta schemas the operations refer to.
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub(crate) const BINDING: &str = "io.k8s.api.core.v1.Binding";
pub(crate) const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";
pub(crate) const TOKEN_REQUEST: &str = "io.k8s.api.authentication.v1.TokenRequest";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// `(schema, property, x-kubernetes-patch-strategy, x-kubernetes-patch-merge-key)`, from
/// the `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api and apimachinery 1.33.
const PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

/// Adds the schema of a known kind to `generator`; returns its schema name.
fn add_kind(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> Option<String> {
        generator.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
    match (group, kind) {
        ("", "Namespace") => add::<core::v1::Namespace>(generator),
        ("", "Pod") => add::<core::v1::Pod>(generator),
        ("", "Node") => add::<core::v1::Node>(generator),
        ("", "Service") => add::<core::v1::Service>(generator),
        ("", "Endpoints") => add::<core::v1::Endpoints>(generator),
        ("", "ConfigMap") => add::<core::v1::ConfigMap>(generator),
        ("", "Secret") => add::<core::v1::Secret>(generator),
        ("", "Event") => add::<core::v1::Event>(generator),
        ("", "ServiceAccount") => add::<core::v1::ServiceAccount>(generator),
        ("", "PersistentVolume") => add::<core::v1::PersistentVolume>(generator),
        ("", "PersistentVolumeClaim") => add::<core::v1::PersistentVolumeClaim>(generator),
        ("", "PodTemplate") => add::<core::v1::PodTemplate>(generator),
        ("", "ReplicationController") => add::<core::v1::ReplicationController>(generator),
        ("", "ResourceQuota") => add::<core::v1::ResourceQuota>(generator),
        ("", "LimitRange") => add::<core::v1::LimitRange>(generator),
        ("apps", "Deployment") => add::<apps::v1::Deployment>(generator),
        ("apps", "ReplicaSet") => add::<apps::v1::ReplicaSet>(generator),
        ("apps", "DaemonSet") => add::<apps::v1::DaemonSet>(generator),
        ("apps", "StatefulSet") => add::<apps::v1::StatefulSet>(generator),
        ("apps", "ControllerRevision") => add::<apps::v1::ControllerRevision>(generator),
        ("batch", "Job") => add::<batch::v1::Job>(generator),
        ("batch", "CronJob") => add::<batch::v1::CronJob>(generator),
        ("coordination.k8s.io", "Lease") => add::<coordination::v1::Lease>(generator),
        ("node.k8s.io", "RuntimeClass") => add::<node::v1::RuntimeClass>(generator),
        ("discovery.k8s.io", "EndpointSlice") => {
            add::<k8s_openapi::api::discovery::v1::EndpointSlice>(generator)
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            add::<k8s_openapi::api::networking::v1::NetworkPolicy>(generator)
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            add::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(generator)
        }
        ("rbac.authorization.k8s.io", "Role") => add::<rbac::v1::Role>(generator),
        ("rbac.authorization.k8s.io", "ClusterRole") => add::<rbac::v1::ClusterRole>(generator),
        ("rbac.authorization.k8s.io", "RoleBinding") => add::<rbac::v1::RoleBinding>(generator),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            add::<rbac::v1::ClusterRoleBinding>(generator)
        }
        ("authentication.k8s.io", "SelfSubjectReview") => {
            add::<authentication::v1::SelfSubjectReview>(generator)
        }
        ("authentication.k8s.io", "TokenReview") => {
            add::<authentication::v1::TokenReview>(generator)
        }
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            add::<authorization::v1::SelfSubjectAccessReview>(generator)
        }
        ("authorization.k8s.io", "SubjectAccessReview") => {
            add::<authorization::v1::SubjectAccessReview>(generator)
        }
        ("authorization.k8s.io", "LocalSubjectAccessReview") => {
            add::<authorization::v1::LocalSubjectAccessReview>(generator)
        }
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            add::<authorization::v1::SelfSubjectRulesReview>(generator)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            add::<autoscaling::v1::HorizontalPodAutoscaler>(generator)
        }
        _ => None,
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn set_gvks(defs: &mut Map<String, Value>, name: &str, gvks: Vec<Value>) {
    if let Some(Value::Object(schema)) = defs.get_mut(name) {
        schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
    }
}

fn list_schema(item_name: &str, kind: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind}."),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item_name}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": format!("{REF_PREFIX}{LIST_META}")}],
            },
        },
        "required": ["items"],
    })
}

/// The schema of a kind k8s-openapi does not know: any object, named like a CRD's.
fn opaque_schema(rt: &ResourceType) -> Value {
    json!({
        "description": format!("{} is served by wasmkube without a published schema.", rt.kind),
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The schema name of `rt` in documents (k8s-openapi's, or a CRD-style name).
pub(crate) fn schema_name(rt: &ResourceType) -> String {
    let mut scratch = SchemaGenerator::default();
    add_kind(&mut scratch, rt.group, rt.kind).unwrap_or_else(|| {
        let reversed: Vec<&str> = rt.group.split('.').rev().collect();
        format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind)
    })
}

/// Adds the patch extensions to every schema property Kubernetes tags.
fn add_patch_meta(defs: &mut Map<String, Value>) {
    for (schema, property, strategy, key) in PATCH_META {
        let Some(prop) = defs
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if let Some(key) = key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
}

/// All schemas of the document for `group`/`version`, serving `types`.
pub(crate) fn components(
    types: &[&ResourceType],
    group: &str,
    version: &str,
) -> Map<String, Value> {
    let settings = SchemaSettings::openapi3().with(|s| s.meta_schema = None);
    let mut generator = settings.into_generator();
    let mut kinds: Vec<(&ResourceType, Option<String>)> = Vec::new();
    for rt in types {
        kinds.push((rt, add_kind(&mut generator, rt.group, rt.kind)));
    }
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::WatchEvent<Value>>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::ListMeta>();
    let has = |sub| types.iter().any(|t| t.has_subresource(sub));
    if has(Subresource::Scale) {
        generator.subschema_for::<autoscaling::v1::Scale>();
    }
    if has(Subresource::Binding) {
        generator.subschema_for::<core::v1::Binding>();
    }
    if has(Subresource::Eviction) {
        generator.subschema_for::<policy::v1::Eviction>();
    }
    if has(Subresource::Token) {
        generator.subschema_for::<authentication::v1::TokenRequest>();
    }
    let mut defs = generator.take_definitions(true);

    for (rt, known) in kinds {
        let name = match known {
            Some(name) => name,
            None => {
                let name = schema_name(rt);
                defs.insert(name.clone(), opaque_schema(rt));
                name
            }
        };
        set_gvks(&mut defs, &name, vec![gvk(rt.group, rt.version, rt.kind)]);
        if rt.create_only {
            continue;
        }
        let list_name = format!("{name}List");
        let list_kind = format!("{}List", rt.kind);
        defs.insert(list_name.clone(), list_schema(&name, rt.kind));
        set_gvks(
            &mut defs,
            &list_name,
            vec![gvk(rt.group, rt.version, &list_kind)],
        );
    }

    let mut shared = vec![gvk("", "v1", "")];
    if !group.is_empty() {
        shared.push(gvk(group, version, ""));
    }
    for (name, kind) in [
        (DELETE_OPTIONS, "DeleteOptions"),
        (WATCH_EVENT, "WatchEvent"),
    ] {
        let gvks = shared
            .iter()
            .map(|g| {
                let mut g = g.clone();
                g["kind"] = json!(kind);
                g
            })
            .collect();
        set_gvks(&mut defs, name, gvks);
    }
    set_gvks(&mut defs, STATUS, vec![gvk("", "v1", "Status")]);
    set_gvks(&mut defs, SCALE, vec![gvk("autoscaling", "v1", "Scale")]);
    set_gvks(&mut defs, BINDING, vec![gvk("", "v1", "Binding")]);
    set_gvks(&mut defs, EVICTION, vec![gvk("policy", "v1", "Eviction")]);
    set_gvks(
        &mut defs,
        TOKEN_REQUEST,
        vec![gvk("authentication.k8s.io", "v1", "TokenRequest")],
    );
    add_patch_meta(&mut defs);
    defs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn core_defs() -> Map<String, Value> {
        let registry = Registry::builtin();
        let types: Vec<&ResourceType> = registry
            .all()
            .iter()
            .filter(|t| t.group.is_empty())
            .collect();
        components(&types, "", "v1")
    }

    #[test]
    fn kinds_have_kubernetes_names_and_group_version_kind_extensions() {
        let defs = core_defs();
        assert_eq!(
            defs["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "PodList", "version": "v1"}])
        );
        assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(defs.contains_key(BINDING));
        assert_eq!(
            defs[EVICTION]["x-kubernetes-group-version-kind"],
            json!([{"group": "policy", "kind": "Eviction", "version": "v1"}])
        );
        assert!(defs[EVICTION]["properties"]["deleteOptions"].is_object());
        assert!(!defs.contains_key(SCALE));
    }

    #[test]
    fn references_use_all_of_and_point_into_components() {
        let defs = core_defs();
        let metadata = &defs["io.k8s.api.core.v1.Pod"]["properties"]["metadata"];
        assert_eq!(
            metadata["allOf"],
            json!([{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
        );
        let text = serde_json::to_string(&defs).unwrap();
        for (i, _) in text.match_indices("\"$ref\":\"") {
            let rest = &text[i + 8..];
            let target = &rest[..rest.find('"').unwrap()];
            let name = target.strip_prefix(REF_PREFIX).expect(target);
            assert!(defs.contains_key(name), "dangling reference {target}");
        }
    }

    #[test]
    fn containers_carry_strategic_merge_patch_extensions() {
        let defs = core_defs();
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let ports = &defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let volumes = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    }

    #[test]
    fn apps_document_has_the_autoscaling_scale_kind() {
        let registry = Registry::builtin();
        let types: Vec<&ResourceType> = registry
            .all()
            .iter()
            .filter(|t| t.group == "apps")
            .collect();
        let defs = components(&types, "apps", "v1");
        assert_eq!(
            defs[SCALE]["x-kubernetes-group-version-kind"],
            json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
        );
        assert_eq!(
            defs[DELETE_OPTIONS]["x-kubernetes-group-version-kind"][1],
            json!({"group": "apps", "kind": "DeleteOptions", "version": "v1"})
        );
        let strategy = &defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    }
}
