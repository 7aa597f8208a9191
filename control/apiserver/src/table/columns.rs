//! Column definitions per kind, as Kubernetes' `pkg/printers/internalversion` declares them.
//!
//! Descriptions that Kubernetes takes from the API types' Swagger docs are read from the
//! k8s-openapi schemas (same text), once, on first use.

use std::sync::OnceLock;

use k8s_openapi::api::{apps, batch, coordination, core, rbac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

/// One `meta.k8s.io/v1` TableColumnDefinition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// Human-readable name, e.g. `Name`; kubectl upper-cases it.
    pub name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `boolean`, ...
    pub ty: &'static str,
    /// OpenAPI format, `name` for the column that holds the object's name.
    pub format: &'static str,
    /// What the column shows.
    pub description: String,
    /// 0 = always shown; 1 = only with `-o wide`.
    pub priority: i32,
}

impl ColumnDefinition {
    /// The JSON form of the definition.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The description of `field` in `T`'s schema (the Go type's Swagger doc), or `""`.
fn doc<T: JsonSchema>(field: &str) -> String {
    let mut generator = SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    schema
        .get("properties")
        .and_then(|p| p.get(field))
        .and_then(|f| f.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn col(name: &'static str, ty: &'static str, description: String) -> ColumnDefinition {
    ColumnDefinition {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

fn wide(mut c: ColumnDefinition) -> ColumnDefinition {
    c.priority = 1;
    c
}

fn text(s: &str) -> String {
    s.to_string()
}

fn name_col() -> ColumnDefinition {
    ColumnDefinition {
        format: "name",
        ..col("Name", "string", doc::<ObjectMeta>("name"))
    }
}

fn age_col() -> ColumnDefinition {
    col("Age", "string", doc::<ObjectMeta>("creationTimestamp"))
}

/// The wide CONTAINERS, IMAGES and SELECTOR columns of the workload kinds.
fn template_cols(selector_doc: String) -> [ColumnDefinition; 3] {
    [
        wide(col(
            "Containers",
            "string",
            text("Names of each container in the template."),
        )),
        wide(col(
            "Images",
            "string",
            text("Images referenced by each container in the template."),
        )),
        wide(col("Selector", "string", selector_doc)),
    ]
}

fn pod() -> Vec<ColumnDefinition> {
    vec![
        name_col(),
        col(
            "Ready",
            "string",
            text("The aggregate readiness state of this pod for accepting traffic."),
        ),
        col(
            "Status",
            "string",
            text("The aggregate status of the containers in this pod."),
        ),
        col(
            "Restarts",
            "string",
            text(
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
        ),
        age_col(),
        wide(col("IP", "string", doc::<core::v1::PodStatus>("podIP"))),
        wide(col("Node", "string", doc::<core::v1::PodSpec>("nodeName"))),
        wide(col(
            "Nominated Node",
            "string",
            doc::<core::v1::PodStatus>("nominatedNodeName"),
        )),
        wide(col(
            "Readiness Gates",
            "string",
            doc::<core::v1::PodSpec>("readinessGates"),
        )),
    ]
}

fn node() -> Vec<ColumnDefinition> {
    use core::v1::{NodeStatus, NodeSystemInfo};
    vec![
        name_col(),
        col("Status", "string", text("The status of the node")),
        col("Roles", "string", text("The roles of the node")),
        age_col(),
        col("Version", "string", doc::<NodeSystemInfo>("kubeletVersion")),
        wide(col("Internal-IP", "string", doc::<NodeStatus>("addresses"))),
        wide(col("External-IP", "string", doc::<NodeStatus>("addresses"))),
        wide(col("OS-Image", "string", doc::<NodeSystemInfo>("osImage"))),
        wide(col(
            "Kernel-Version",
            "string",
            doc::<NodeSystemInfo>("kernelVersion"),
        )),
        wide(col(
            "Container-Runtime",
            "string",
            doc::<NodeSystemInfo>("containerRuntimeVersion"),
        )),
    ]
}

fn deployment() -> Vec<ColumnDefinition> {
    use apps::v1::{DeploymentSpec, DeploymentStatus};
    let mut cols = vec![
        name_col(),
        col(
            "Ready",
            "string",
            text("Number of the pod with ready state"),
        ),
        col(
            "Up-to-date",
            "string",
            doc::<DeploymentStatus>("updatedReplicas"),
        ),
        col(
            "Available",
            "string",
            doc::<DeploymentStatus>("availableReplicas"),
        ),
        age_col(),
    ];
    cols.extend(template_cols(doc::<DeploymentSpec>("selector")));
    cols
}

fn replica_set() -> Vec<ColumnDefinition> {
    use apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    let mut cols = vec![
        name_col(),
        col("Desired", "integer", doc::<ReplicaSetSpec>("replicas")),
        col("Current", "integer", doc::<ReplicaSetStatus>("replicas")),
        col("Ready", "integer", doc::<ReplicaSetStatus>("readyReplicas")),
        age_col(),
    ];
    cols.extend(template_cols(doc::<ReplicaSetSpec>("selector")));
    cols
}

fn daemon_set() -> Vec<ColumnDefinition> {
    use apps::v1::{DaemonSetSpec, DaemonSetStatus};
    let mut cols = vec![
        name_col(),
        col(
            "Desired",
            "integer",
            doc::<DaemonSetStatus>("desiredNumberScheduled"),
        ),
        col(
            "Current",
            "integer",
            doc::<DaemonSetStatus>("currentNumberScheduled"),
        ),
        col("Ready", "integer", doc::<DaemonSetStatus>("numberReady")),
        col(
            "Up-to-date",
            "integer",
            doc::<DaemonSetStatus>("updatedNumberScheduled"),
        ),
        col(
            "Available",
            "integer",
            doc::<DaemonSetStatus>("numberAvailable"),
        ),
        col(
            "Node Selector",
            "string",
            doc::<core::v1::PodSpec>("nodeSelector"),
        ),
        age_col(),
    ];
    cols.extend(template_cols(doc::<DaemonSetSpec>("selector")));
    cols
}

fn job() -> Vec<ColumnDefinition> {
    use batch::v1::{JobSpec, JobStatus};
    let mut cols = vec![
        name_col(),
        col("Status", "string", text("Status of the job.")),
        col("Completions", "string", doc::<JobStatus>("succeeded")),
        col(
            "Duration",
            "string",
            text("Time required to complete the job."),
        ),
        age_col(),
    ];
    cols.extend(template_cols(doc::<JobSpec>("selector")));
    cols
}

fn service() -> Vec<ColumnDefinition> {
    use core::v1::ServiceSpec;
    vec![
        name_col(),
        col("Type", "string", doc::<ServiceSpec>("type")),
        col("Cluster-IP", "string", doc::<ServiceSpec>("clusterIP")),
        col("External-IP", "string", doc::<ServiceSpec>("externalIPs")),
        col("Port(s)", "string", doc::<ServiceSpec>("ports")),
        age_col(),
        wide(col("Selector", "string", doc::<ServiceSpec>("selector"))),
    ]
}

fn event() -> Vec<ColumnDefinition> {
    use core::v1::{Event, ObjectReference};
    vec![
        col("Last Seen", "string", doc::<Event>("lastTimestamp")),
        col("Type", "string", doc::<Event>("type")),
        col("Reason", "string", doc::<Event>("reason")),
        col("Object", "string", doc::<Event>("involvedObject")),
        wide(col(
            "Subobject",
            "string",
            doc::<ObjectReference>("fieldPath"),
        )),
        wide(col("Source", "string", doc::<Event>("source"))),
        col("Message", "string", doc::<Event>("message")),
        wide(col("First Seen", "string", doc::<Event>("firstTimestamp"))),
        wide(col("Count", "string", doc::<Event>("count"))),
        wide(name_col()),
    ]
}

/// RoleBinding and ClusterRoleBinding: NAME, ROLE, AGE, then the wide subject columns.
fn binding(what: &str) -> Vec<ColumnDefinition> {
    vec![
        name_col(),
        col("Role", "string", doc::<rbac::v1::RoleBinding>("roleRef")),
        age_col(),
        wide(col("Users", "string", format!("Users in the {what}"))),
        wide(col("Groups", "string", format!("Groups in the {what}"))),
        wide(col(
            "ServiceAccounts",
            "string",
            format!("ServiceAccounts in the {what}"),
        )),
    ]
}

/// A Knative kind's columns as its CRD prints them: NAME, `leading` (strings), READY, REASON.
fn knative(leading: &[&'static str]) -> Vec<ColumnDefinition> {
    let mut cols = vec![name_col()];
    cols.extend(
        leading
            .iter()
            .map(|name| col(name, "string", String::new())),
    );
    cols.push(col("Ready", "string", String::new()));
    cols.push(col("Reason", "string", String::new()));
    cols
}

fn simple(extra: Vec<ColumnDefinition>) -> Vec<ColumnDefinition> {
    let mut cols = vec![name_col()];
    cols.extend(extra);
    cols.push(age_col());
    cols
}

/// Which printer a kind uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Printer {
    Pod,
    Node,
    Namespace,
    Deployment,
    ReplicaSet,
    DaemonSet,
    Job,
    Service,
    Endpoints,
    /// NAME, ADDRESSTYPE, PORTS, ENDPOINTS, AGE.
    EndpointSlice,
    /// NAME, POD-SELECTOR, AGE.
    NetworkPolicy,
    Event,
    ConfigMap,
    Secret,
    ServiceAccount,
    Lease,
    RuntimeClass,
    /// Role and ClusterRole: NAME, CREATED AT.
    Role,
    /// NAME, AGE, REQUEST, LIMIT (used/hard of each resource).
    ResourceQuota,
    /// NAME, CREATED AT.
    LimitRange,
    RoleBinding,
    ClusterRoleBinding,
    /// NAME, AGE, SIGNERNAME, REQUESTOR, REQUESTEDDURATION, CONDITION.
    CertificateSigningRequest,
    /// Knative's Service: NAME, URL, LATESTCREATED, LATESTREADY, READY, REASON (the
    /// additionalPrinterColumns of its CRD, which has no AGE).
    KnativeService,
    /// NAME, LATESTCREATED, LATESTREADY, READY, REASON.
    KnativeConfiguration,
    /// NAME, CONFIG NAME, GENERATION, READY, REASON, ACTUAL REPLICAS, DESIRED REPLICAS.
    KnativeRevision,
    /// NAME, URL, READY, REASON.
    KnativeRoute,
    /// NAME and AGE only.
    Default,
}

const ALL: [Printer; 28] = [
    Printer::Pod,
    Printer::Node,
    Printer::Namespace,
    Printer::Deployment,
    Printer::ReplicaSet,
    Printer::DaemonSet,
    Printer::Job,
    Printer::Service,
    Printer::Endpoints,
    Printer::EndpointSlice,
    Printer::NetworkPolicy,
    Printer::Event,
    Printer::ConfigMap,
    Printer::Secret,
    Printer::ServiceAccount,
    Printer::Lease,
    Printer::RuntimeClass,
    Printer::Role,
    Printer::ResourceQuota,
    Printer::LimitRange,
    Printer::RoleBinding,
    Printer::ClusterRoleBinding,
    Printer::CertificateSigningRequest,
    Printer::KnativeService,
    Printer::KnativeConfiguration,
    Printer::KnativeRevision,
    Printer::KnativeRoute,
    Printer::Default,
];

impl Printer {
    /// The printer for a group and kind.
    pub(crate) fn for_kind(group: &str, kind: &str) -> Printer {
        match (group, kind) {
            ("", "Pod") => Printer::Pod,
            ("", "Node") => Printer::Node,
            ("", "Namespace") => Printer::Namespace,
            ("apps", "Deployment") => Printer::Deployment,
            ("apps", "ReplicaSet") => Printer::ReplicaSet,
            ("apps", "DaemonSet") => Printer::DaemonSet,
            ("batch", "Job") => Printer::Job,
            ("", "Service") => Printer::Service,
            ("", "Endpoints") => Printer::Endpoints,
            ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
            ("networking.k8s.io", "NetworkPolicy") => Printer::NetworkPolicy,
            ("", "Event") => Printer::Event,
            ("", "ConfigMap") => Printer::ConfigMap,
            ("", "Secret") => Printer::Secret,
            ("", "ServiceAccount") => Printer::ServiceAccount,
            ("", "ResourceQuota") => Printer::ResourceQuota,
            ("", "LimitRange") => Printer::LimitRange,
            ("coordination.k8s.io", "Lease") => Printer::Lease,
            ("node.k8s.io", "RuntimeClass") => Printer::RuntimeClass,
            ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => Printer::Role,
            ("rbac.authorization.k8s.io", "RoleBinding") => Printer::RoleBinding,
            ("rbac.authorization.k8s.io", "ClusterRoleBinding") => Printer::ClusterRoleBinding,
            ("certificates.k8s.io", "CertificateSigningRequest") => {
                Printer::CertificateSigningRequest
            }
            ("serving.knative.dev", "Service") => Printer::KnativeService,
            ("serving.knative.dev", "Configuration") => Printer::KnativeConfiguration,
            ("serving.knative.dev", "Revision") => Printer::KnativeRevision,
            ("serving.knative.dev", "Route") => Printer::KnativeRoute,
            _ => Printer::Default,
        }
    }

    fn build(self) -> Vec<ColumnDefinition> {
        use core::v1::{ConfigMap, Endpoints, Secret, ServiceAccount};
        match self {
            Printer::Pod => pod(),
            Printer::Node => node(),
            Printer::Namespace => simple(vec![col(
                "Status",
                "string",
                text("The status of the namespace"),
            )]),
            Printer::Deployment => deployment(),
            Printer::ReplicaSet => replica_set(),
            Printer::DaemonSet => daemon_set(),
            Printer::Job => job(),
            Printer::Service => service(),
            Printer::Endpoints => simple(vec![col(
                "Endpoints",
                "string",
                doc::<Endpoints>("subsets"),
            )]),
            Printer::EndpointSlice => {
                use k8s_openapi::api::discovery::v1::EndpointSlice;
                simple(vec![
                    col("AddressType", "string", doc::<EndpointSlice>("addressType")),
                    col("Ports", "string", doc::<EndpointSlice>("ports")),
                    col("Endpoints", "string", doc::<EndpointSlice>("endpoints")),
                ])
            }
            Printer::NetworkPolicy => simple(vec![col(
                "Pod-Selector",
                "string",
                doc::<k8s_openapi::api::networking::v1::NetworkPolicySpec>("podSelector"),
            )]),
            Printer::Event => event(),
            Printer::ConfigMap => simple(vec![col("Data", "string", doc::<ConfigMap>("data"))]),
            Printer::Secret => simple(vec![
                col("Type", "string", doc::<Secret>("type")),
                col("Data", "string", doc::<Secret>("data")),
            ]),
            Printer::ServiceAccount => simple(vec![col(
                "Secrets",
                "string",
                doc::<ServiceAccount>("secrets"),
            )]),
            Printer::Lease => simple(vec![col(
                "Holder",
                "string",
                doc::<coordination::v1::LeaseSpec>("holderIdentity"),
            )]),
            // Kubernetes looks the handler's description up on ObjectMeta, finding nothing.
            Printer::RuntimeClass => simple(vec![col("Handler", "string", String::new())]),
            Printer::CertificateSigningRequest => {
                use k8s_openapi::api::certificates::v1::{
                    CertificateSigningRequestSpec as Spec,
                    CertificateSigningRequestStatus as Status,
                };
                vec![
                    name_col(),
                    col("Age", "string", doc::<ObjectMeta>("creationTimestamp")),
                    col("SignerName", "string", doc::<Spec>("signerName")),
                    col("Requestor", "string", doc::<Spec>("request")),
                    col(
                        "RequestedDuration",
                        "string",
                        doc::<Spec>("expirationSeconds"),
                    ),
                    col("Condition", "string", doc::<Status>("conditions")),
                ]
            }
            Printer::Role => vec![
                name_col(),
                col("Created At", "date", doc::<ObjectMeta>("creationTimestamp")),
            ],
            Printer::ResourceQuota => vec![
                name_col(),
                col("Age", "string", doc::<ObjectMeta>("creationTimestamp")),
                col(
                    "Request",
                    "string",
                    text(
                        "Request represents a minimum amount of cpu/memory that a container may consume.",
                    ),
                ),
                col(
                    "Limit",
                    "string",
                    text(
                        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
                    ),
                ),
            ],
            Printer::LimitRange => vec![
                name_col(),
                col("Created At", "date", doc::<ObjectMeta>("creationTimestamp")),
            ],
            Printer::RoleBinding => binding("roleBinding"),
            Printer::ClusterRoleBinding => binding("clusterRoleBinding"),
            Printer::KnativeService => knative(&["URL", "LatestCreated", "LatestReady"]),
            Printer::KnativeConfiguration => knative(&["LatestCreated", "LatestReady"]),
            Printer::KnativeRevision => {
                let mut cols = knative(&["Config Name", "Generation"]);
                cols.push(col("Actual Replicas", "integer", String::new()));
                cols.push(col("Desired Replicas", "integer", String::new()));
                cols
            }
            Printer::KnativeRoute => knative(&["URL"]),
            Printer::Default => simple(Vec::new()),
        }
    }

    /// This printer's columns, built once per process.
    pub(crate) fn columns(self) -> &'static [ColumnDefinition] {
        static TABLES: OnceLock<Vec<Vec<ColumnDefinition>>> = OnceLock::new();
        let tables = TABLES.get_or_init(|| ALL.iter().map(|p| p.build()).collect());
        let index = ALL.iter().position(|p| *p == self).unwrap_or(ALL.len() - 1);
        tables.get(index).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: Printer) -> Vec<&'static str> {
        p.columns().iter().map(|c| c.name).collect()
    }

    #[test]
    fn pod_columns_are_kubernetes_columns_with_wide_ones_at_priority_one() {
        assert_eq!(
            names(Printer::Pod),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let priorities: Vec<i32> = Printer::Pod.columns().iter().map(|c| c.priority).collect();
        assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(Printer::Pod.columns()[0].format, "name");
    }

    #[test]
    fn descriptions_come_from_the_api_types_docs() {
        let age = &Printer::Namespace.columns()[2];
        assert!(
            age.description
                .starts_with("CreationTimestamp is a timestamp")
        );
        let name = &Printer::Namespace.columns()[0];
        assert!(
            name.description
                .starts_with("Name must be unique within a namespace.")
        );
    }

    #[test]
    fn events_put_last_seen_first_and_name_last_as_a_wide_column() {
        assert_eq!(
            names(Printer::Event),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let name = &Printer::Event.columns()[9];
        assert_eq!((name.priority, name.format), (1, "name"));
    }

    #[test]
    fn unknown_kinds_get_name_and_age() {
        assert_eq!(Printer::for_kind("example.com", "Widget"), Printer::Default);
        assert_eq!(names(Printer::Default), ["Name", "Age"]);
    }
}
