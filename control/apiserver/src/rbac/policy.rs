//! The default roles and bindings, after Kubernetes' `bootstrappolicy` (`policy.go` and
//! `controller_policy.go`, v1.33), trimmed to the API wasmkube serves and its components.
//!
//! Differences from Kubernetes, each on purpose:
//! - `kube-apiserver-kubelet-admin` binds the apiserver's client identity towards node
//!   agents (user `kube-apiserver-kubelet-client`) to `system:kubelet-api-admin`, as k3s
//!   does (kubeadm gives that certificate to `system:masters`).
//! - Bootstrap tokens (`system:bootstrappers`) may create CertificateSigningRequests and
//!   get node client certificates approved (`nodeclient`), nodes may renew theirs
//!   (`selfnodeclient`): the bindings kubeadm creates when it sets a cluster up.
//! - The scheduler's and controller-manager's leader-election Leases are named
//!   `wasmkube-scheduler` and `wasmkube-controller-manager`; their roles name both those and
//!   Kubernetes' names. The scheduler also reads RuntimeClasses (its RuntimeClass plugin).

use serde_json::{Value, json};

use super::rule::{GROUP, PolicyRule, RoleRef, Subject};

mod controllers;

use controllers::controller_roles;

/// The annotation that lets the apiserver reconcile a default object at start-up.
pub(super) const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The label of every bootstrapped object.
const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// The prefix of the controller roles (bound to `kube-system` service accounts).
const CONTROLLER_PREFIX: &str = "system:controller:";

pub(super) const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

pub(super) const LEGACY: &str = "";
pub(super) const APPS: &str = "apps";
const AUTHENTICATION: &str = "authentication.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
pub(super) const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
pub(super) const DISCOVERY: &str = "discovery.k8s.io";
const EVENTS: &str = "events.k8s.io";
pub(super) const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const NODE: &str = "node.k8s.io";
const POLICY: &str = "policy";
const STORAGE: &str = "storage.k8s.io";

pub(super) fn rule(verbs: &[&str]) -> PolicyRule {
    PolicyRule::new(verbs)
}

pub(super) fn events_rule() -> PolicyRule {
    rule(&["create", "update", "patch"])
        .groups(&[LEGACY, EVENTS])
        .resources(&["events"])
}

fn metadata(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut all: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    all.insert(BOOTSTRAP_LABEL.0.into(), json!(BOOTSTRAP_LABEL.1));
    json!({
        "name": name,
        "labels": all,
        "annotations": {AUTOUPDATE_ANNOTATION: "true"},
    })
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name, &[]),
        "rules": rules,
    })
}

/// A role allowing `verb` (`approve`, `sign`) on one signer's requests.
fn signer_role(name: &str, verb: &str, signer: &str) -> Value {
    cluster_role(
        name,
        vec![
            rule(&[verb])
                .groups(&[CERTIFICATES])
                .resources(&["signers"])
                .names(&[signer]),
        ],
    )
}

/// An aggregated ClusterRole (`admin`, `edit`, `view`): its rules come from the
/// ClusterRoles labelled `rbac.authorization.k8s.io/aggregate-to-<name>: "true"`.
fn aggregated_role(name: &str, labels: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}
        ]},
    })
}

fn aggregating_role(name: &str, into: &str, rules: Vec<PolicyRule>) -> Value {
    let label = format!("rbac.authorization.k8s.io/aggregate-to-{into}");
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name, &[(&label, "true")]),
        "rules": rules,
    })
}

fn binding(name: &str, role: &str, subjects: Vec<Subject>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name, &[]),
        "roleRef": RoleRef::cluster_role(role),
        "subjects": subjects,
    })
}

/// The role (and binding, to `system:nodes`) that lets every agent's kube-proxy follow the
/// Services' endpoints.
const NODE_PROXIER_ROLE: &str = "wasmkube:node-proxier";
/// What an agent's NetworkPolicy enforcement reads cluster-wide (as k3s' embedded network
/// policy controller reads it as `system:k3s-controller`), bound to `system:kube-proxy`,
/// the identity of an agent's cluster-wide watches.
const NETWORK_POLICY_ROLE: &str = "wasmkube:network-policy";
/// Lets nodes ask for a `system:kube-proxy` client certificate (approved by the server) for
/// the routed pod network's Node watch and their kube-proxy.
const NODE_PROXY_CLIENT_ROLE: &str = "wasmkube:certificatesigningrequests:nodeproxyclient";

/// The rules of `system:node`: what a node agent needs to register its Node, run its pods
/// and report their status (Kubernetes' `NodeRules`).
pub(crate) fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create"])
            .groups(&[AUTHENTICATION])
            .resources(&["tokenreviews"]),
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["subjectaccessreviews", "localsubjectaccessreviews"]),
        rule(READ).groups(&[LEGACY]).resources(&["services"]),
        rule(&["create", "get", "list", "watch"])
            .groups(&[LEGACY])
            .resources(&["nodes"]),
        rule(&["update", "patch"])
            .groups(&[LEGACY])
            .resources(&["nodes/status"]),
        rule(&["update", "patch"])
            .groups(&[LEGACY])
            .resources(&["nodes"]),
        rule(&["create", "update", "patch"])
            .groups(&[LEGACY])
            .resources(&["events"]),
        rule(READ).groups(&[LEGACY]).resources(&["pods"]),
        rule(&["create", "delete"])
            .groups(&[LEGACY])
            .resources(&["pods"]),
        rule(&["update", "patch"])
            .groups(&[LEGACY])
            .resources(&["pods/status"]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/eviction"]),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["secrets", "configmaps"]),
        rule(&["get"])
            .groups(&[LEGACY])
            .resources(&["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"]).groups(&[LEGACY]).resources(&["endpoints"]),
        rule(&["create", "get", "list", "watch"])
            .groups(&[CERTIFICATES])
            .resources(&["certificatesigningrequests"]),
        rule(&["get", "create", "update", "patch", "delete"])
            .groups(&[COORDINATION])
            .resources(&["leases"]),
        rule(&["get"])
            .groups(&[STORAGE])
            .resources(&["volumeattachments"]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts/token"]),
        rule(&["get", "watch", "list"])
            .groups(&[STORAGE])
            .resources(&["csidrivers"]),
        rule(&["get", "create", "update", "patch", "delete"])
            .groups(&[STORAGE])
            .resources(&["csinodes"]),
        rule(READ).groups(&[NODE]).resources(&["runtimeclasses"]),
    ]
}

fn aggregate_to_admin() -> Vec<PolicyRule> {
    vec![
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["localsubjectaccessreviews"]),
        rule(READ_WRITE)
            .groups(&[GROUP])
            .resources(&["roles", "rolebindings"]),
    ]
}

fn aggregate_to_edit() -> Vec<PolicyRule> {
    vec![
        rule(READ).groups(&[LEGACY]).resources(&[
            "pods/attach",
            "pods/proxy",
            "pods/exec",
            "pods/portforward",
            "secrets",
            "services/proxy",
        ]),
        rule(&["impersonate"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts"]),
        rule(WRITE).groups(&[LEGACY]).resources(&[
            "pods",
            "pods/attach",
            "pods/proxy",
            "pods/exec",
            "pods/portforward",
        ]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/eviction"]),
        rule(WRITE).groups(&[LEGACY]).resources(&[
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/proxy",
            "persistentvolumeclaims",
            "configmaps",
            "secrets",
            "events",
        ]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts/token"]),
        rule(WRITE).groups(&[APPS]).resources(&[
            "statefulsets",
            "statefulsets/scale",
            "daemonsets",
            "deployments",
            "deployments/scale",
            "deployments/rollback",
            "replicasets",
            "replicasets/scale",
        ]),
        rule(WRITE)
            .groups(&[AUTOSCALING])
            .resources(&["horizontalpodautoscalers"]),
        rule(WRITE)
            .groups(&[BATCH])
            .resources(&["jobs", "cronjobs"]),
        rule(WRITE).groups(&[EXTENSIONS]).resources(&[
            "daemonsets",
            "deployments",
            "deployments/scale",
            "deployments/rollback",
            "ingresses",
            "replicasets",
            "replicasets/scale",
            "replicationcontrollers/scale",
            "networkpolicies",
        ]),
        rule(WRITE)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets"]),
        rule(WRITE)
            .groups(&[NETWORKING])
            .resources(&["networkpolicies", "ingresses"]),
    ]
}

fn aggregate_to_view() -> Vec<PolicyRule> {
    vec![
        rule(READ).groups(&[LEGACY]).resources(&[
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "configmaps",
        ]),
        rule(READ).groups(&[LEGACY]).resources(&[
            "limitranges",
            "resourcequotas",
            "bindings",
            "events",
            "pods/status",
            "resourcequotas/status",
            "namespaces/status",
            "replicationcontrollers/status",
            "pods/log",
        ]),
        rule(READ).groups(&[LEGACY]).resources(&["namespaces"]),
        rule(READ)
            .groups(&[DISCOVERY])
            .resources(&["endpointslices"]),
        rule(READ).groups(&[APPS]).resources(&[
            "controllerrevisions",
            "statefulsets",
            "statefulsets/status",
            "statefulsets/scale",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/status",
            "deployments/scale",
            "replicasets",
            "replicasets/status",
            "replicasets/scale",
        ]),
        rule(READ).groups(&[AUTOSCALING]).resources(&[
            "horizontalpodautoscalers",
            "horizontalpodautoscalers/status",
        ]),
        rule(READ).groups(&[BATCH]).resources(&[
            "jobs",
            "cronjobs",
            "cronjobs/status",
            "jobs/status",
        ]),
        rule(READ).groups(&[EXTENSIONS]).resources(&[
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "ingresses",
            "ingresses/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "replicationcontrollers/scale",
            "networkpolicies",
        ]),
        rule(READ)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ).groups(&[NETWORKING]).resources(&[
            "networkpolicies",
            "ingresses",
            "ingresses/status",
        ]),
    ]
}

fn scheduler_rules() -> Vec<PolicyRule> {
    vec![
        events_rule(),
        rule(&["create"])
            .groups(&[COORDINATION])
            .resources(&["leases"]),
        rule(&["get", "update"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .names(&["kube-scheduler", "wasmkube-scheduler"]),
        rule(READ).groups(&[LEGACY]).resources(&["nodes"]),
        rule(&["get", "list", "watch", "delete"])
            .groups(&[LEGACY])
            .resources(&["pods"]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/binding", "bindings"]),
        rule(&["patch", "update"])
            .groups(&[LEGACY])
            .resources(&["pods/status"]),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["services", "replicationcontrollers"]),
        rule(READ)
            .groups(&[APPS, EXTENSIONS])
            .resources(&["replicasets"]),
        rule(READ).groups(&[APPS]).resources(&["statefulsets"]),
        rule(READ)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets"]),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["create"])
            .groups(&[AUTHENTICATION])
            .resources(&["tokenreviews"]),
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["subjectaccessreviews"]),
        rule(READ).groups(&[STORAGE]).resources(&["csinodes"]),
        rule(READ).groups(&[NODE]).resources(&["runtimeclasses"]),
    ]
}

fn controller_manager_rules() -> Vec<PolicyRule> {
    vec![
        events_rule(),
        rule(&["create"])
            .groups(&[COORDINATION])
            .resources(&["leases"]),
        rule(&["get", "update"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .names(&["kube-controller-manager", "wasmkube-controller-manager"]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["secrets", "serviceaccounts"]),
        rule(&["delete"]).groups(&[LEGACY]).resources(&["secrets"]),
        rule(&["get"]).groups(&[LEGACY]).resources(&[
            "namespaces",
            "secrets",
            "serviceaccounts",
            "configmaps",
        ]),
        rule(&["update"])
            .groups(&[LEGACY])
            .resources(&["secrets", "serviceaccounts"]),
        rule(&["create"])
            .groups(&[AUTHENTICATION])
            .resources(&["tokenreviews"]),
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["subjectaccessreviews"]),
        rule(&["list", "watch"]).groups(&["*"]).resources(&["*"]),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts/token"]),
    ]
}

/// The default ClusterRoles, in the order they are reconciled.
pub(super) fn cluster_roles() -> Vec<Value> {
    let discovery_urls = &[
        "/livez",
        "/readyz",
        "/healthz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ];
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            vec![
                rule(&["*"]).groups(&["*"]).resources(&["*"]),
                rule(&["*"]).urls(&["*"]),
            ],
        ),
        cluster_role(
            "system:discovery",
            vec![rule(&["get"]).urls(discovery_urls)],
        ),
        cluster_role(
            "system:monitoring",
            vec![rule(&["get"]).urls(&[
                "/metrics",
                "/metrics/slis",
                "/livez",
                "/readyz",
                "/healthz",
                "/livez/*",
                "/readyz/*",
                "/healthz/*",
            ])],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(&["create"])
                    .groups(&[AUTHORIZATION])
                    .resources(&["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"])
                    .groups(&[AUTHENTICATION])
                    .resources(&["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![rule(&["get"]).urls(&["/livez", "/readyz", "/healthz", "/version", "/version/"])],
        ),
        aggregated_role("admin", &[]),
        aggregated_role(
            "edit",
            &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
        ),
        aggregated_role(
            "view",
            &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
        ),
        aggregating_role("system:aggregate-to-admin", "admin", aggregate_to_admin()),
        aggregating_role("system:aggregate-to-edit", "edit", aggregate_to_edit()),
        aggregating_role("system:aggregate-to-view", "view", aggregate_to_view()),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:node-bootstrapper",
            vec![
                rule(&["create", "get", "list", "watch"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests"]),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![
                rule(&["create"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests/nodeclient"]),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![
                rule(&["create"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests/selfnodeclient"]),
            ],
        ),
        // wasmkube's own, as k3s hands its agents a kube-proxy certificate: a node may ask
        // for a `system:kube-proxy` client certificate, which the server then approves.
        cluster_role(
            NODE_PROXY_CLIENT_ROLE,
            vec![
                rule(&["create"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests/nodeproxyclient"]),
            ],
        ),
        signer_role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            "approve",
            "kubernetes.io/kube-apiserver-client",
        ),
        signer_role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            "approve",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        signer_role(
            "system:certificates.k8s.io:kubelet-serving-approver",
            "approve",
            "kubernetes.io/kubelet-serving",
        ),
        signer_role(
            "system:certificates.k8s.io:legacy-unknown-approver",
            "approve",
            "kubernetes.io/legacy-unknown",
        ),
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(READ).groups(&[LEGACY]).resources(&["nodes"]),
                rule(&["proxy"]).groups(&[LEGACY]).resources(&["nodes"]),
                rule(&["*"]).groups(&[LEGACY]).resources(&[
                    "nodes/proxy",
                    "nodes/metrics",
                    "nodes/stats",
                    "nodes/log",
                ]),
            ],
        ),
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"])
                    .groups(&[LEGACY])
                    .resources(&["services", "endpoints"]),
                rule(READ).groups(&[LEGACY]).resources(&["nodes"]),
                events_rule(),
                rule(&["list", "watch"])
                    .groups(&[DISCOVERY])
                    .resources(&["endpointslices"]),
            ],
        ),
        // The part of system:node-proxier an agent's embedded kube-proxy needs beyond the
        // system:node role: Services' Endpoints and EndpointSlices. Not its Nodes: the Node
        // authorizer keeps a node to its own Node object.
        cluster_role(
            NODE_PROXIER_ROLE,
            vec![
                rule(&["list", "watch"])
                    .groups(&[LEGACY])
                    .resources(&["services", "endpoints"]),
                rule(&["list", "watch"])
                    .groups(&[DISCOVERY])
                    .resources(&["endpointslices"]),
            ],
        ),
        // Every pod and namespace (peers are selected by their labels, found by their IPs)
        // and every NetworkPolicy. Not a node's own credentials: the Node authorizer keeps
        // a node to its own pods.
        cluster_role(
            NETWORK_POLICY_ROLE,
            vec![
                rule(&["list", "watch"])
                    .groups(&[LEGACY])
                    .resources(&["pods", "namespaces"]),
                rule(&["list", "watch"])
                    .groups(&[NETWORKING])
                    .resources(&["networkpolicies"]),
            ],
        ),
        // k3s' CoreDNS role, for the server's cluster DNS (service account
        // kube-system/coredns): it watches Services and EndpointSlices.
        cluster_role(
            "system:coredns",
            vec![
                rule(&["list", "watch"]).groups(&[LEGACY]).resources(&[
                    "endpoints",
                    "services",
                    "pods",
                    "namespaces",
                ]),
                rule(&["list", "watch"])
                    .groups(&[DISCOVERY])
                    .resources(&["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"])
                    .groups(&[AUTHENTICATION])
                    .resources(&["tokenreviews"]),
                rule(&["create"])
                    .groups(&[AUTHORIZATION])
                    .resources(&["subjectaccessreviews"]),
            ],
        ),
        cluster_role("system:kube-scheduler", scheduler_rules()),
        cluster_role("system:kube-controller-manager", controller_manager_rules()),
    ];
    for (name, rules) in controller_roles() {
        roles.push(cluster_role(&format!("{CONTROLLER_PREFIX}{name}"), rules));
    }
    roles
}

/// The namespace of the token cleaner's Role and binding.
const KUBE_SYSTEM: &str = "kube-system";

/// The default Roles of namespaces (Kubernetes' `NamespaceRoles`): what a controller
/// needs in one namespace only. The token cleaner deletes expired bootstrap tokens, Secrets
/// of kube-system.
pub(super) fn namespace_roles() -> Vec<Value> {
    vec![json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": namespaced(metadata(TOKEN_CLEANER_ROLE, &[]), KUBE_SYSTEM),
        "rules": vec![
            rule(&["delete", "get", "list", "watch"])
                .groups(&[LEGACY])
                .resources(&["secrets"]),
            events_rule(),
        ],
    })]
}

/// The default RoleBindings of namespaces (Kubernetes' `NamespaceRoleBindings`).
pub(super) fn namespace_role_bindings() -> Vec<Value> {
    vec![json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": namespaced(metadata(TOKEN_CLEANER_ROLE, &[]), KUBE_SYSTEM),
        "roleRef": RoleRef::role(TOKEN_CLEANER_ROLE),
        "subjects": vec![Subject::service_account(KUBE_SYSTEM, "token-cleaner")],
    })]
}

/// The token cleaner's Role in kube-system.
const TOKEN_CLEANER_ROLE: &str = "system:controller:token-cleaner";

fn namespaced(mut metadata: Value, namespace: &str) -> Value {
    metadata["namespace"] = json!(namespace);
    metadata
}

/// The default ClusterRoleBindings.
pub(super) fn cluster_role_bindings() -> Vec<Value> {
    let authenticated = || Subject::group("system:authenticated");
    let mut bindings = vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            vec![Subject::group("system:masters")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            vec![authenticated()],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            vec![authenticated()],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![authenticated(), Subject::group("system:unauthenticated")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            vec![Subject::group("system:monitoring")],
        ),
        // Nodes are authorized by the Node authorizer: the binding exists without
        // subjects, as in Kubernetes since 1.8.
        binding("system:node", "system:node", Vec::new()),
        // What kubeadm binds when it sets a cluster up: bootstrap tokens may ask for node
        // client certificates, which the server approves; nodes may renew their own.
        binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            vec![Subject::group("system:bootstrappers")],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![Subject::group("system:bootstrappers")],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![Subject::group("system:nodes")],
        ),
        binding(
            NODE_PROXY_CLIENT_ROLE,
            NODE_PROXY_CLIENT_ROLE,
            vec![Subject::group("system:nodes")],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![Subject::user("system:kube-proxy")],
        ),
        // Every agent runs its node's kube-proxy as the node itself (one identity per node,
        // where Kubernetes gives kube-proxy its own, `system:kube-proxy` or a service
        // account): nodes may list and watch what the proxier reads of Services.
        binding(
            NODE_PROXIER_ROLE,
            NODE_PROXIER_ROLE,
            vec![Subject::group("system:nodes")],
        ),
        binding(
            NETWORK_POLICY_ROLE,
            NETWORK_POLICY_ROLE,
            vec![Subject::user("system:kube-proxy")],
        ),
        binding(
            "system:coredns",
            "system:coredns",
            vec![Subject::service_account("kube-system", "coredns")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![Subject::user("system:kube-controller-manager")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![Subject::user("system:kube-scheduler")],
        ),
        // The apiserver's client identity towards node agents (`node_proxy`), as k3s binds
        // it: it may use the nodes' proxy subresources, and nothing else.
        binding(
            "kube-apiserver-kubelet-admin",
            "system:kubelet-api-admin",
            vec![Subject::user(crate::node_proxy::KUBELET_CLIENT_USER)],
        ),
    ];
    for (name, _) in controller_roles() {
        let role = format!("{CONTROLLER_PREFIX}{name}");
        bindings.push(binding(
            &role,
            &role,
            vec![Subject::service_account("kube-system", name)],
        ));
    }
    bindings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_binding_names_a_default_cluster_role() {
        let roles = names(&cluster_roles());
        for b in cluster_role_bindings() {
            let role = b["roleRef"]["name"].as_str().unwrap();
            assert!(roles.iter().any(|r| r == role), "{role}");
        }
    }

    #[test]
    fn every_namespaced_binding_names_a_default_role_of_its_namespace() {
        let roles = namespace_roles();
        for b in namespace_role_bindings() {
            assert_eq!(b["roleRef"]["kind"], "Role");
            assert!(
                roles
                    .iter()
                    .any(|r| r["metadata"]["name"] == b["roleRef"]["name"]
                        && r["metadata"]["namespace"] == b["metadata"]["namespace"]),
                "{b}"
            );
        }
    }

    #[test]
    fn defaults_carry_the_bootstrap_label_and_autoupdate_annotation() {
        let namespaced = namespace_roles()
            .into_iter()
            .chain(namespace_role_bindings());
        for obj in cluster_roles()
            .into_iter()
            .chain(cluster_role_bindings())
            .chain(namespaced)
        {
            let obj = &obj;
            assert_eq!(
                obj["metadata"]["labels"]["kubernetes.io/bootstrapping"],
                "rbac-defaults"
            );
            assert_eq!(
                obj["metadata"]["annotations"][AUTOUPDATE_ANNOTATION],
                "true"
            );
        }
    }

    #[test]
    fn view_edit_and_admin_aggregate_one_into_the_next() {
        let roles = cluster_roles();
        let find = |n: &str| roles.iter().find(|r| r["metadata"]["name"] == n).unwrap();
        assert_eq!(
            find("view")["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
        assert_eq!(
            find("edit")["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
        assert!(find("admin").get("rules").is_none());
    }
}
