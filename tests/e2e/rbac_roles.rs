//! RBAC's own objects through the real kubectl: the escalation checks on roles and
//! bindings (`escalate`, `bind`), the aggregated `view`/`edit`/`admin` roles, impersonation
//! authorized by the `impersonate` verb, the tables and validation of the RBAC kinds, and
//! the in-process scheduler acting as `system:kube-scheduler`.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::harness::{NodeSpec, TestCluster, poll_until};
use crate::rbac::kubeconfig_flag;

/// How long the aggregation controller may take to fold a labelled role into `view`.
const AGGREGATION_DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn escalation_is_refused_until_escalate_or_bind_is_granted() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster.kubectl_ok(&["create", "namespace", "team"]).await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "bob-admin",
            "--clusterrole=admin",
            "--user=bob",
            "-n",
            "team",
        ])
        .await?;

    // A namespace admin may hand out what they hold...
    cluster
        .kubectl_ok(&[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods,secrets",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "carol-view",
            "--clusterrole=view",
            "--user=carol",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    // ...but not what they do not.
    let err = cluster
        .kubectl_fails(&[
            "create",
            "role",
            "nodes",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    assert!(
        err.contains(
            "roles.rbac.authorization.k8s.io \"nodes\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"
        ),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[
            "create",
            "rolebinding",
            "carol-admin",
            "--clusterrole=cluster-admin",
            "--user=carol",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    assert!(
        err.contains(
            "rolebindings.rbac.authorization.k8s.io \"carol-admin\" is forbidden: user \"bob\""
        ) && err.contains("{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[
            "create",
            "rolebinding",
            "dangling",
            "--clusterrole=no-such-role",
            "--user=carol",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    assert!(
        err.contains("clusterrole.rbac.authorization.k8s.io \"no-such-role\" not found"),
        "{err}"
    );

    // `escalate` on roles lifts the first check, `bind` on cluster-admin the second.
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrole",
            "role-escalator",
            "--verb=escalate",
            "--resource=roles.rbac.authorization.k8s.io",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "bob-escalate",
            "--clusterrole=role-escalator",
            "--user=bob",
            "-n",
            "team",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "role",
            "nodes",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrole",
            "admin-binder",
            "--verb=bind",
            "--resource=clusterroles.rbac.authorization.k8s.io",
            "--resource-name=cluster-admin",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "bob-bind",
            "--clusterrole=admin-binder",
            "--user=bob",
            "-n",
            "team",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "carol-admin",
            "--clusterrole=cluster-admin",
            "--user=carol",
            "-n",
            "team",
            "--as",
            "bob",
        ])
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_cluster_role_labelled_aggregate_to_view_adds_its_rules_to_view_edit_and_admin()
-> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
        ])
        .await?;
    cluster
        .kubectl_fails(&["get", "nodes", "--as", "alice"])
        .await?;

    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: node-viewer\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [\"nodes\"]\n  verbs: [\"get\", \"list\", \"watch\"]\n",
        )
        .await?;
    poll_until(
        "alice lists nodes through view",
        AGGREGATION_DEADLINE,
        || async {
            Ok(cluster
                .kubectl(&["get", "nodes", "--as", "alice"])
                .await?
                .status
                .success()
                .then_some(()))
        },
    )
    .await?;
    for role in ["view", "edit", "admin"] {
        let rules = cluster.kubectl_json(&["get", "clusterrole", role]).await?;
        assert!(
            rules["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["resources"] == json!(["nodes"])),
            "{role} aggregates node-viewer: {rules:#}"
        );
    }

    cluster
        .kubectl_ok(&["delete", "clusterrole", "node-viewer"])
        .await?;
    poll_until(
        "view loses the nodes rule",
        AGGREGATION_DEADLINE,
        || async {
            Ok((!cluster
                .kubectl(&["get", "nodes", "--as", "alice"])
                .await?
                .status
                .success())
            .then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let alice = kubeconfig_flag(&cluster.user_kubeconfig("alice", None).await?);
    let alice = alice.as_str();
    // (Raw requests: kubectl's discovery would fail first, and word the 403 less well.)
    const PODS: &str = "/api/v1/namespaces/default/pods";
    let err = cluster
        .kubectl_fails(&[alice, "get", "--raw", PODS, "--as", "bob"])
        .await?;
    assert!(
        err.contains("users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrole",
            "bob-impersonator",
            "--verb=impersonate",
            "--resource=users",
            "--resource-name=bob",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "alice-as-bob",
            "--clusterrole=bob-impersonator",
            "--user=alice",
        ])
        .await?;
    // Now alice acts as bob, who may not list pods: a 403 for bob, not for alice.
    let err = cluster
        .kubectl_fails(&[alice, "get", "pods", "--as", "bob"])
        .await?;
    assert!(
        err.contains("User \"bob\" cannot list resource \"pods\""),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[
            alice,
            "get",
            "--raw",
            PODS,
            "--as",
            "bob",
            "--as-group",
            "system:masters",
        ])
        .await?;
    assert!(
        err.contains("groups \"system:masters\" is forbidden: User \"alice\" cannot impersonate resource \"groups\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_objects_print_kubernetes_tables_and_are_validated() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let wide = cluster
        .kubectl_ok(&[
            "get",
            "clusterrolebinding",
            "cluster-admin",
            "system:node",
            "-o",
            "wide",
        ])
        .await?;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
        "{wide}"
    );
    assert!(
        wide.contains("ClusterRole/cluster-admin") && wide.contains("system:masters"),
        "{wide}"
    );
    // The Node authorizer decides for nodes: the system:node binding has no subjects, as
    // Kubernetes' since 1.8.
    let node_binding = wide
        .lines()
        .find(|l| l.starts_with("system:node "))
        .unwrap_or("");
    let fields: Vec<&str> = node_binding.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{wide}");
    assert_eq!(
        fields[..2],
        ["system:node", "ClusterRole/system:node"],
        "{wide}"
    );
    let roles = cluster
        .kubectl_ok(&["get", "clusterroles", "view", "edit"])
        .await?;
    let header: Vec<&str> = roles
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "CREATED", "AT"], "{roles}");

    let out = cluster
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: bad\n  namespace: default\nrules:\n- verbs: [\"get\"]\n  nonResourceURLs: [\"/healthz\"]\n"),
        )
        .await?;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"),
        "{}",
        out.stderr
    );
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "b",
            "--clusterrole=view",
            "--user=u",
            "-n",
            "default",
        ])
        .await?;
    let err = cluster
        .kubectl_fails(&[
            "patch",
            "rolebinding",
            "b",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"edit"}}"#,
        ])
        .await?;
    assert!(err.contains("cannot change roleRef"), "{err}");
    Ok(())
}

/// The in-process scheduler acts as `system:kube-scheduler`, not as the admin: its bootstrap
/// role is what it may do. Without the role's `create` on `pods/binding` it cannot bind and
/// says why in a FailedScheduling event; with the rule back the pod is bound.
#[tokio::test]
async fn the_scheduler_binds_only_as_its_role_allows() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .embedded_agent(NodeSpec::named("n1"))
        .start()
        .await?;
    let role = cluster
        .kubectl_json(&["get", "clusterrole", "system:kube-scheduler", "-o", "json"])
        .await?;
    let original_rules = role["rules"].clone();
    let mut stripped = role.clone();
    // (Annotated so that a restart would not put the rule back.)
    stripped["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
        json!("false");
    let rules = stripped["rules"]
        .as_array_mut()
        .expect("the role has rules");
    let before = rules.len();
    rules.retain(|rule| {
        !rule["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r == "pods/binding")
    });
    assert_eq!(rules.len(), before - 1, "one rule grants pods/binding");
    cluster
        .kubectl_ok_stdin(&["replace", "-f", "-"], &stripped.to_string())
        .await?;

    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "waits"},
        "spec": {
            "runtimeClassName": "wasmtime",
            "containers": [{"name": "hello", "image": "wasmkube.local/samples/hello:v1"}],
        },
    });
    cluster
        .kubectl_ok_stdin(&["create", "-f", "-"], &pod.to_string())
        .await?;
    let event = cluster
        .wait_event("waits", "FailedScheduling", Duration::from_secs(90))
        .await?;
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains(
            r#"User "system:kube-scheduler" cannot create resource "pods/binding" in API group """#
        ),
        "{message}"
    );
    let unbound = cluster
        .kubectl_json(&["get", "pod", "waits", "-o", "json"])
        .await?;
    assert!(unbound["spec"]["nodeName"].is_null(), "{unbound}");

    let mut restored = cluster
        .kubectl_json(&["get", "clusterrole", "system:kube-scheduler", "-o", "json"])
        .await?;
    restored["rules"] = original_rules;
    cluster
        .kubectl_ok_stdin(&["replace", "-f", "-"], &restored.to_string())
        .await?;
    let bound = cluster
        .wait_pod("waits", "bound to a node", Duration::from_secs(90), |p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1")
        })
        .await?;
    assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));
    Ok(())
}
