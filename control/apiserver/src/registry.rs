//! The resource registry: everything the generic handlers need to know about a kind.
//!
//! Adding a resource to the API is adding one [`ResourceType`] entry to [`builtin`]:
//! group/version/kind, plural and short names, whether it is namespaced, its
//! subresources, its supported field selectors, and its validation/defaulting hooks.
//! Table columns live in `table.rs` and OpenAPI schemas in `openapi.rs`, both keyed by
//! the same group and kind.

use serde_json::Value;

use crate::validation::{self, Cause};

/// A subresource a kind serves besides the object itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: writes only `.status`; the main resource ignores `.status`.
    Status,
    /// `/scale`: an `autoscaling/v1` Scale view of `.spec.replicas`.
    Scale,
    /// `/binding` (pods): assigns `spec.nodeName`.
    Binding,
    /// `/log` (pods): container logs, served by the node agent.
    Log,
    /// `/portforward` (pods): an upgraded connection relayed to the node agent, which
    /// forwards its streams to the pod's ports (`kubectl port-forward`).
    PortForward,
    /// `/eviction` (pods): a `policy/v1` Eviction, the API-initiated deletion
    /// `kubectl drain` asks for.
    Eviction,
    /// `/approval` (CertificateSigningRequests): only the Approved/Denied conditions.
    Approval,
    /// `/token` (serviceaccounts): an `authentication.k8s.io/v1` TokenRequest, answered
    /// with a signed token (`kubectl create token`).
    Token,
    /// `/proxy/{path}` (nodes): the request passed on to the node agent's `{path}`.
    Proxy,
    /// `/exec` (pods): a command run in a container, its streams over an upgraded
    /// connection relayed to the node agent (`kubectl exec`).
    Exec,
    /// `/attach` (pods): the container's main process's streams (`kubectl attach`).
    Attach,
}

impl Subresource {
    /// The path segment, e.g. `status`.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::PortForward => "portforward",
            Subresource::Eviction => "eviction",
            Subresource::Approval => "approval",
            Subresource::Token => "token",
            Subresource::Proxy => "proxy",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
        }
    }
}

/// How the object's name is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Rfc1035Label,
    /// Any name that is a valid path segment (events, nodes with dots...).
    PathSegment,
}

/// Validates a whole object (after defaulting); returns field causes (empty = valid).
pub type ValidateFn = fn(obj: &Value, old: Option<&Value>) -> Vec<Cause>;
/// Fills in defaults the way the Kubernetes apiserver does.
pub type DefaultFn = fn(obj: &mut Value);

/// One kind served by the apiserver.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, the URL segment.
    pub plural: &'static str,
    /// Lower-case singular.
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    /// Discovery categories, e.g. `all`.
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub subresources: &'static [Subresource],
    /// Field selector paths supported beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
    pub name_rule: NameRule,
    /// Whether the kind tracks `metadata.generation` (bumped on `.spec` changes), as
    /// Kubernetes does for workloads (not for pods, services, namespaces, nodes, leases).
    pub has_spec: bool,
    pub default: DefaultFn,
    pub validate: ValidateFn,
    /// Kinds that are only created, never stored (the access reviews): discovery lists
    /// only `create`, and a POST is answered by the kind's handler.
    pub create_only: bool,
}

impl ResourceType {
    /// `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether this kind serves `sub`.
    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store key prefix of this kind: `/registry/{group}/{plural}/`.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

/// All kinds, looked up by group/version/plural or by kind.
#[derive(Clone, Debug)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Registry {
    /// The registry of built-in kinds.
    pub fn builtin() -> Self {
        Registry { types: builtin() }
    }

    /// Every registered kind.
    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    /// Looks a kind up by its URL coordinates.
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Looks a kind up by group and kind name.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind)
    }

    /// The distinct (group, version) pairs served, core first.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        for t in &self.types {
            if !out.contains(&(t.group, t.version)) {
                out.push((t.group, t.version));
            }
        }
        out
    }
}

use Subresource::{
    Approval, Attach, Binding, Eviction, Exec, Log, PortForward, Proxy, Scale, Status, Token,
};

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

#[allow(clippy::too_many_arguments)]
fn rt(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    subresources: &'static [Subresource],
    has_spec: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        singular: leak_lower(kind),
        short_names,
        categories: &[],
        namespaced,
        subresources,
        field_selectors: &[],
        name_rule: NameRule::Subdomain,
        has_spec,
        default: validation::default_nothing,
        validate: validation::validate_nothing,
        create_only: false,
    }
}

/// An RBAC kind: any path-segment name, as Kubernetes' `ValidateRBACName`.
fn rbac(kind: &'static str, plural: &'static str, namespaced: bool) -> ResourceType {
    ResourceType {
        name_rule: NameRule::PathSegment,
        ..rt(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
            plural,
            &[],
            namespaced,
            &[],
            false,
        )
    }
}

/// An authorization.k8s.io access review: created, evaluated, answered, never stored.
fn review(kind: &'static str, plural: &'static str, namespaced: bool) -> ResourceType {
    review_in("authorization.k8s.io", kind, plural, namespaced)
}

/// A review of `group`: created, answered, never stored.
fn review_in(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        create_only: true,
        ..rt(group, "v1", kind, plural, &[], namespaced, &[], false)
    }
}

fn leak_lower(kind: &'static str) -> &'static str {
    // Kinds are a fixed, small set; leaking their lower-case names once is fine.
    Box::leak(kind.to_ascii_lowercase().into_boxed_str())
}

fn builtin() -> Vec<ResourceType> {
    const ALL: &[&str] = &["all"];
    const KNATIVE: &[&str] = &["all", "knative", "serving"];
    vec![
        ResourceType {
            name_rule: NameRule::Label,
            field_selectors: &["status.phase"],
            validate: validation::validate_namespace,
            default: validation::default_namespace,
            ..rt(
                "",
                "v1",
                "Namespace",
                "namespaces",
                &["ns"],
                false,
                &[Status],
                false,
            )
        },
        ResourceType {
            categories: ALL,
            field_selectors: POD_FIELDS,
            validate: validation::validate_pod,
            default: validation::default_pod,
            ..rt(
                "",
                "v1",
                "Pod",
                "pods",
                &["po"],
                true,
                &[Status, Binding, Eviction, Log, PortForward, Exec, Attach],
                false,
            )
        },
        ResourceType {
            name_rule: NameRule::Subdomain,
            field_selectors: &["spec.unschedulable"],
            validate: validation::validate_node,
            default: validation::default_node,
            ..rt(
                "",
                "v1",
                "Node",
                "nodes",
                &["no"],
                false,
                &[Status, Proxy],
                false,
            )
        },
        ResourceType {
            categories: ALL,
            name_rule: NameRule::Rfc1035Label,
            validate: validation::validate_service,
            default: validation::default_service,
            ..rt(
                "",
                "v1",
                "Service",
                "services",
                &["svc"],
                true,
                &[Status],
                false,
            )
        },
        rt(
            "",
            "v1",
            "Endpoints",
            "endpoints",
            &["ep"],
            true,
            &[],
            false,
        ),
        ResourceType {
            validate: validation::validate_data_keys,
            ..rt(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                &["cm"],
                true,
                &[],
                false,
            )
        },
        ResourceType {
            field_selectors: &["type"],
            validate: validation::validate_data_keys,
            default: validation::default_secret,
            ..rt("", "v1", "Secret", "secrets", &[], true, &[], false)
        },
        ResourceType {
            field_selectors: EVENT_FIELDS,
            name_rule: NameRule::PathSegment,
            validate: validation::validate_event,
            ..rt("", "v1", "Event", "events", &["ev"], true, &[], false)
        },
        ResourceType {
            validate: validation::validate_resource_quota,
            ..rt(
                "",
                "v1",
                "ResourceQuota",
                "resourcequotas",
                &["quota"],
                true,
                &[Status],
                false,
            )
        },
        ResourceType {
            validate: validation::validate_limit_range,
            default: validation::default_limit_range,
            ..rt(
                "",
                "v1",
                "LimitRange",
                "limitranges",
                &["limits"],
                true,
                &[],
                false,
            )
        },
        rt(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            &["sa"],
            true,
            &[Token],
            false,
        ),
        ResourceType {
            categories: ALL,
            validate: validation::validate_deployment,
            default: validation::default_deployment,
            ..rt(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                &["deploy"],
                true,
                &[Status, Scale],
                true,
            )
        },
        ResourceType {
            categories: ALL,
            field_selectors: &["status.replicas"],
            validate: validation::validate_replicaset,
            default: validation::default_replicaset,
            ..rt(
                "apps",
                "v1",
                "ReplicaSet",
                "replicasets",
                &["rs"],
                true,
                &[Status, Scale],
                true,
            )
        },
        ResourceType {
            categories: ALL,
            validate: validation::validate_daemonset,
            default: validation::default_daemonset,
            ..rt(
                "apps",
                "v1",
                "DaemonSet",
                "daemonsets",
                &["ds"],
                true,
                &[Status],
                true,
            )
        },
        rt(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            &[],
            true,
            &[],
            false,
        ),
        review_in(
            "authentication.k8s.io",
            "TokenReview",
            "tokenreviews",
            false,
        ),
        review_in(
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
        ),
        review(
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
        ),
        review("SelfSubjectAccessReview", "selfsubjectaccessreviews", false),
        review("SelfSubjectRulesReview", "selfsubjectrulesreviews", false),
        review("SubjectAccessReview", "subjectaccessreviews", false),
        ResourceType {
            categories: ALL,
            field_selectors: &["status.successful"],
            validate: validation::validate_job,
            default: validation::default_job,
            ..rt("batch", "v1", "Job", "jobs", &[], true, &[Status], true)
        },
        ResourceType {
            validate: validation::validate_cluster_role,
            ..rbac("ClusterRole", "clusterroles", false)
        },
        ResourceType {
            validate: validation::validate_cluster_role_binding,
            default: validation::default_role_binding,
            ..rbac("ClusterRoleBinding", "clusterrolebindings", false)
        },
        ResourceType {
            validate: validation::validate_role,
            ..rbac("Role", "roles", true)
        },
        ResourceType {
            validate: validation::validate_role_binding,
            default: validation::default_role_binding,
            ..rbac("RoleBinding", "rolebindings", true)
        },
        rt(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            &[],
            true,
            &[],
            false,
        ),
        ResourceType {
            name_rule: NameRule::PathSegment,
            validate: validation::validate_csr,
            ..rt(
                "certificates.k8s.io",
                "v1",
                "CertificateSigningRequest",
                "certificatesigningrequests",
                &["csr"],
                false,
                &[Status, Approval],
                false,
            )
        },
        ResourceType {
            validate: validation::validate_runtimeclass,
            ..rt(
                "node.k8s.io",
                "v1",
                "RuntimeClass",
                "runtimeclasses",
                &[],
                false,
                &[],
                false,
            )
        },
        ResourceType {
            validate: validation::validate_endpointslice,
            default: validation::default_endpointslice,
            ..rt(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                &[],
                true,
                &[],
                false,
            )
        },
        // Generation follows `.spec` changes, as Kubernetes' networkPolicyStrategy.
        ResourceType {
            validate: validation::validate_network_policy,
            default: validation::default_network_policy,
            ..rt(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                &["netpol"],
                true,
                &[],
                true,
            )
        },
        // Knative Serving, with the short names and categories of Knative's CRDs.
        ResourceType {
            categories: KNATIVE,
            name_rule: NameRule::Label,
            validate: validation::validate_knative_service,
            default: validation::default_knative_service,
            ..rt(
                "serving.knative.dev",
                "v1",
                "Service",
                "services",
                &["kservice", "ksvc"],
                true,
                &[Status],
                true,
            )
        },
        ResourceType {
            categories: KNATIVE,
            validate: validation::validate_configuration,
            default: validation::default_configuration,
            ..rt(
                "serving.knative.dev",
                "v1",
                "Configuration",
                "configurations",
                &["config", "cfg"],
                true,
                &[Status],
                true,
            )
        },
        ResourceType {
            categories: KNATIVE,
            validate: validation::validate_revision,
            default: validation::default_revision,
            ..rt(
                "serving.knative.dev",
                "v1",
                "Revision",
                "revisions",
                &["rev"],
                true,
                &[Status],
                true,
            )
        },
        ResourceType {
            categories: KNATIVE,
            name_rule: NameRule::Label,
            validate: validation::validate_route,
            default: validation::default_route,
            ..rt(
                "serving.knative.dev",
                "v1",
                "Route",
                "routes",
                &["rt"],
                true,
                &[Status],
                true,
            )
        },
    ]
}
