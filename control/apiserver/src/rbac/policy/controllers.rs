//! The roles of the controllers wasmkube runs, after Kubernetes' `controller_policy.go`:
//! each is bound to the `kube-system/<controller>` service account, the identity a
//! controller-manager with `--use-service-account-credentials` acts as (wasmkube's embedded
//! controller-manager does). Where wasmkube's controllers write with a merge patch what
//! Kubernetes' write with an update (a Deployment's revision annotation, the status of
//! ReplicaSets, Jobs and DaemonSets), the rule allows `patch` besides `update`.

use super::super::rule::{GROUP, PolicyRule};
use super::{APPS, BATCH, DISCOVERY, EXTENSIONS, LEGACY, READ, events_rule, rule};

/// The roles of the controllers wasmkube runs, bound to `kube-system/<controller>`
/// service accounts as `controller_policy.go` binds them.
pub(super) fn controller_roles() -> Vec<(&'static str, Vec<PolicyRule>)> {
    vec![
        (
            "clusterrole-aggregation-controller",
            vec![
                rule(&["escalate", "get", "list", "watch", "update", "patch"])
                    .groups(&[GROUP])
                    .resources(&["clusterroles"]),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(READ)
                    .groups(&[EXTENSIONS, APPS])
                    .resources(&["daemonsets"]),
                rule(&["update", "patch"])
                    .groups(&[EXTENSIONS, APPS])
                    .resources(&["daemonsets/status"]),
                rule(&["update"])
                    .groups(&[EXTENSIONS, APPS])
                    .resources(&["daemonsets/finalizers"]),
                rule(&["list", "watch"])
                    .groups(&[LEGACY])
                    .resources(&["nodes"]),
                rule(&["list", "watch", "create", "delete", "patch"])
                    .groups(&[LEGACY])
                    .resources(&["pods"]),
                rule(&["create"])
                    .groups(&[LEGACY])
                    .resources(&["pods/binding"]),
                rule(&[
                    "get", "list", "watch", "create", "delete", "update", "patch",
                ])
                .groups(&[APPS])
                .resources(&["controllerrevisions"]),
                events_rule(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                rule(&["get", "list", "watch", "update", "patch"])
                    .groups(&[EXTENSIONS, APPS])
                    .resources(&["deployments"]),
                rule(&["update"])
                    .groups(&[EXTENSIONS, APPS])
                    .resources(&["deployments/status"]),
                rule(&["update"])
                    .groups(&[EXTENSIONS, APPS])
                    .resources(&["deployments/finalizers"]),
                rule(&[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ])
                .groups(&[APPS, EXTENSIONS])
                .resources(&["replicasets"]),
                rule(&["get", "list", "watch", "update"])
                    .groups(&[LEGACY])
                    .resources(&["pods"]),
                events_rule(),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![
                rule(&["get", "list", "watch", "patch", "update", "delete"])
                    .groups(&["*"])
                    .resources(&["*"]),
                events_rule(),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(&["get", "list", "watch", "update", "patch"])
                    .groups(&[BATCH])
                    .resources(&["jobs"]),
                rule(&["update", "patch"])
                    .groups(&[BATCH])
                    .resources(&["jobs/status"]),
                rule(&["update"])
                    .groups(&[BATCH])
                    .resources(&["jobs/finalizers"]),
                rule(&["list", "watch", "create", "delete", "patch"])
                    .groups(&[LEGACY])
                    .resources(&["pods"]),
                events_rule(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(READ)
                    .groups(&[LEGACY])
                    .resources(&["services", "pods"]),
                rule(&["get", "list", "create", "update", "delete"])
                    .groups(&[LEGACY])
                    .resources(&["endpoints"]),
                rule(&["create"])
                    .groups(&[LEGACY])
                    .resources(&["endpoints/restricted"]),
                events_rule(),
            ],
        ),
        // Knative Serving's controller (Service -> Configuration + Route -> Revision ->
        // Deployment); Knative runs it as `knative-serving/controller`.
        (
            "knative-serving-controller",
            vec![
                rule(&[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ])
                .groups(&["serving.knative.dev"])
                .resources(&["services", "configurations", "revisions", "routes"]),
                rule(&["update", "patch"])
                    .groups(&["serving.knative.dev"])
                    .resources(&[
                        "services/status",
                        "configurations/status",
                        "revisions/status",
                        "routes/status",
                    ]),
                rule(&["update"])
                    .groups(&["serving.knative.dev"])
                    .resources(&[
                        "services/finalizers",
                        "configurations/finalizers",
                        "revisions/finalizers",
                        "routes/finalizers",
                    ]),
                rule(&[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ])
                .groups(&[APPS])
                .resources(&["deployments"]),
                rule(READ).groups(&[LEGACY]).resources(&["pods"]),
                events_rule(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                rule(READ)
                    .groups(&[LEGACY])
                    .resources(&["services", "pods", "nodes"]),
                // The slices' owner references point at their Service, with
                // blockOwnerDeletion: OwnerReferencesPermissionEnforcement asks for this.
                rule(&["update"])
                    .groups(&[LEGACY])
                    .resources(&["services/finalizers"]),
                rule(&["get", "list", "create", "update", "delete"])
                    .groups(&[DISCOVERY])
                    .resources(&["endpointslices"]),
                events_rule(),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"])
                    .groups(&[LEGACY])
                    .resources(&["namespaces"]),
                rule(&["update"])
                    .groups(&[LEGACY])
                    .resources(&["namespaces/finalize", "namespaces/status"]),
                rule(&["get", "list", "watch", "delete", "deletecollection"])
                    .groups(&["*"])
                    .resources(&["*"]),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(&["get", "list", "watch", "update", "delete", "patch"])
                    .groups(&[LEGACY])
                    .resources(&["nodes"]),
                rule(&["patch", "update"])
                    .groups(&[LEGACY])
                    .resources(&["nodes/status"]),
                rule(&["patch", "update"])
                    .groups(&[LEGACY])
                    .resources(&["pods/status"]),
                rule(&["list", "watch", "get", "delete"])
                    .groups(&[LEGACY])
                    .resources(&["pods"]),
                events_rule(),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&["list", "watch", "delete"])
                    .groups(&[LEGACY])
                    .resources(&["pods"]),
                rule(READ).groups(&[LEGACY]).resources(&["nodes"]),
                rule(&["patch"])
                    .groups(&[LEGACY])
                    .resources(&["pods/status"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(&["get", "list", "watch", "update"])
                    .groups(&[APPS, EXTENSIONS])
                    .resources(&["replicasets"]),
                rule(&["update", "patch"])
                    .groups(&[APPS, EXTENSIONS])
                    .resources(&["replicasets/status"]),
                rule(&["update"])
                    .groups(&[APPS, EXTENSIONS])
                    .resources(&["replicasets/finalizers"]),
                rule(&["list", "watch", "patch", "create", "delete"])
                    .groups(&[LEGACY])
                    .resources(&["pods"]),
                events_rule(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                // Counting what every namespace holds.
                rule(&["list", "watch"]).groups(&["*"]).resources(&["*"]),
                rule(&["update"])
                    .groups(&[LEGACY])
                    .resources(&["resourcequotas/status"]),
                events_rule(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![
                rule(&["create", "update"])
                    .groups(&[LEGACY])
                    .resources(&["configmaps"]),
                events_rule(),
            ],
        ),
        (
            "service-account-controller",
            vec![
                rule(&["create"])
                    .groups(&[LEGACY])
                    .resources(&["serviceaccounts"]),
                events_rule(),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![
                rule(&["get", "list", "watch", "delete"])
                    .groups(&[BATCH])
                    .resources(&["jobs"]),
                events_rule(),
            ],
        ),
    ]
}
