//! RBAC as the authorizer of every request, through the real kubectl: identities that are
//! not `system:masters` get exactly what their bindings grant, with Kubernetes' 403
//! messages; `kubectl auth can-i [--list]`, `kubectl create role/rolebinding/...`,
//! impersonation, the escalation checks, and the aggregated `view`/`edit`/`admin` roles.
//!
//! RBAC's own objects (escalation, aggregation, impersonation, tables) are in `rbac_roles`.
//!
//! Users are either client certificates the cluster CA issues (`user_kubeconfig`, the path a
//! real user takes) or impersonated by the admin (`--as`, which is itself authorized).

use std::path::Path;

use anyhow::Result;

use crate::harness::{TestCluster, raw};

/// kubectl's flag for a user's kubeconfig (it overrides the harness's admin one).
pub(crate) fn kubeconfig_flag(path: &Path) -> String {
    format!("--kubeconfig={}", path.display())
}

/// kubectl's `can-i --list` line for `resource` (first column), if any.
fn rule_line<'a>(list: &'a str, resource: &str) -> Option<&'a str> {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(resource))
}

/// Review finding 1: any authenticated identity could do anything. Now a certificate
/// that is not in system:masters is refused until a binding grants it something.
#[tokio::test]
async fn a_non_admin_identity_is_forbidden_until_a_binding_allows_it() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let alice = kubeconfig_flag(&cluster.user_kubeconfig("alice", Some("devs")).await?);
    let alice = alice.as_str();

    let err = cluster
        .kubectl_fails(&[
            alice,
            "create",
            "deployment",
            "web",
            "--image=hello",
            "-n",
            "default",
        ])
        .await?;
    assert!(
        err.contains(
            "deployments.apps is forbidden: User \"alice\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        ),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[alice, "get", "secrets", "-n", "kube-system"])
        .await?;
    assert!(
        err.contains(
            "Error from server (Forbidden): secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
        ),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[
            alice,
            "create",
            "clusterrolebinding",
            "me",
            "--clusterrole=cluster-admin",
            "--user=alice",
        ])
        .await?;
    assert!(
        err.contains("User \"alice\" cannot create resource \"clusterrolebindings\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[alice, "get", "--raw", "/metrics"])
        .await?;
    assert!(
        err.contains("forbidden: User \"alice\" cannot get path \"/metrics\""),
        "{err}"
    );

    // Discovery and self-review stay open to every authenticated user.
    cluster.kubectl_ok(&[alice, "api-resources"]).await?;
    let out = cluster
        .kubectl(&[
            alice,
            "auth",
            "can-i",
            "create",
            "deployments",
            "-n",
            "default",
        ])
        .await?;
    assert_eq!((out.status.code(), out.stdout.trim()), (Some(1), "no"));

    // A binding of `edit` to her group in `default` lets her work there, and only there.
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "devs-edit",
            "--clusterrole=edit",
            "--group=devs",
            "-n",
            "default",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            alice,
            "create",
            "deployment",
            "web",
            "--image=hello",
            "-n",
            "default",
        ])
        .await?;
    cluster
        .kubectl_ok(&[alice, "get", "deployment", "web", "-n", "default"])
        .await?;
    cluster
        .kubectl_fails(&[alice, "get", "deployments", "-n", "kube-system"])
        .await?;

    // Anonymous requests still reach the public health endpoints, and nothing else.
    let anonymous = cluster.client_without_credentials().await?;
    assert_eq!(raw::get(&anonymous, "/healthz").await?.status, 200);
    assert_eq!(raw::get(&anonymous, "/version").await?.status, 200);
    assert_eq!(raw::get(&anonymous, "/api").await?.status, 401);
    Ok(())
}

#[tokio::test]
async fn view_reads_without_secrets_and_edit_writes_without_granting() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster.kubectl_ok(&["create", "namespace", "team"]).await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "vera-view",
            "--clusterrole=view",
            "--user=vera",
            "-n",
            "team",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "ed-edit",
            "--clusterrole=edit",
            "--user=ed",
            "-n",
            "team",
        ])
        .await?;

    cluster
        .kubectl_ok(&["get", "pods", "-n", "team", "--as", "vera"])
        .await?;
    let err = cluster
        .kubectl_fails(&[
            "create",
            "configmap",
            "c",
            "--from-literal=a=b",
            "-n",
            "team",
            "--as",
            "vera",
        ])
        .await?;
    assert!(
        err.contains("configmaps is forbidden: User \"vera\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&["get", "secrets", "-n", "team", "--as", "vera"])
        .await?;
    assert!(
        err.contains("secrets is forbidden: User \"vera\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{err}"
    );

    cluster
        .kubectl_ok(&[
            "create",
            "deployment",
            "web",
            "--image=hello",
            "-n",
            "team",
            "--as",
            "ed",
        ])
        .await?;
    cluster
        .kubectl_ok(&["get", "secrets", "-n", "team", "--as", "ed"])
        .await?;
    let err = cluster
        .kubectl_fails(&[
            "create",
            "role",
            "r",
            "--verb=get",
            "--resource=pods",
            "-n",
            "team",
            "--as",
            "ed",
        ])
        .await?;
    assert!(
        err.contains("roles.rbac.authorization.k8s.io is forbidden: User \"ed\" cannot create resource \"roles\" in API group \"rbac.authorization.k8s.io\" in the namespace \"team\""),
        "{err}"
    );
    cluster
        .kubectl_fails(&[
            "create",
            "rolebinding",
            "rb",
            "--clusterrole=view",
            "--user=x",
            "-n",
            "team",
            "--as",
            "ed",
        ])
        .await?;

    // A SubjectAccessReview says who allowed what, in RBAC's words.
    let review = cluster
        .kubectl_ok_stdin(
            // Without /openapi/v2, kubectl cannot validate a kind that has no PATCH.
            &["create", "--validate=false", "-f", "-", "-o", "json"],
            r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "ed", "resourceAttributes":
                  {"namespace": "team", "verb": "create", "group": "apps", "resource": "deployments"}}}"#,
        )
        .await?;
    let review: serde_json::Value = serde_json::from_str(&review)?;
    assert_eq!(review["status"]["allowed"], true, "{review:#}");
    assert_eq!(
        review["status"]["reason"],
        "RBAC: allowed by RoleBinding \"ed-edit/team\" of ClusterRole \"edit\" to User \"ed\""
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_auth_can_i_answers_for_each_user() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster.kubectl_ok(&["create", "namespace", "team"]).await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "vera-view",
            "--clusterrole=view",
            "--user=vera",
            "-n",
            "team",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "ed-edit",
            "--clusterrole=edit",
            "--user=ed",
            "-n",
            "team",
        ])
        .await?;

    let admin = cluster.kubectl_ok(&["auth", "can-i", "--list"]).await?;
    assert!(
        admin
            .lines()
            .next()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == [
                    "Resources",
                    "Non-Resource",
                    "URLs",
                    "Resource",
                    "Names",
                    "Verbs"
                ]),
        "{admin}"
    );
    assert!(
        rule_line(&admin, "*.*").is_some_and(|l| l.ends_with("[*]")),
        "{admin}"
    );

    let vera = cluster
        .kubectl_ok(&["auth", "can-i", "--list", "-n", "team", "--as", "vera"])
        .await?;
    assert!(
        rule_line(&vera, "pods").is_some_and(|l| l.ends_with("[get list watch]")),
        "{vera}"
    );
    assert!(rule_line(&vera, "deployments.apps").is_some(), "{vera}");
    assert!(rule_line(&vera, "secrets").is_none(), "{vera}");
    assert!(rule_line(&vera, "*.*").is_none(), "{vera}");

    let ed = cluster
        .kubectl_ok(&["auth", "can-i", "--list", "-n", "team", "--as", "ed"])
        .await?;
    assert!(rule_line(&ed, "secrets").is_some(), "{ed}");

    // Outside team vera has only what every user has.
    let elsewhere = cluster
        .kubectl_ok(&["auth", "can-i", "--list", "-n", "default", "--as", "vera"])
        .await?;
    assert!(rule_line(&elsewhere, "pods").is_none(), "{elsewhere}");
    assert!(
        rule_line(&elsewhere, "selfsubjectaccessreviews.authorization.k8s.io").is_some(),
        "{elsewhere}"
    );

    for (user, verb, resource, expected) in [
        ("vera", "get", "pods", "yes"),
        ("vera", "list", "secrets", "no"),
        ("vera", "create", "deployments", "no"),
        ("ed", "create", "deployments", "yes"),
        ("ed", "delete", "secrets", "yes"),
        ("ed", "create", "roles", "no"),
    ] {
        let out = cluster
            .kubectl(&["auth", "can-i", verb, resource, "-n", "team", "--as", user])
            .await?;
        assert_eq!(
            out.stdout.trim(),
            expected,
            "{user} {verb} {resource}: {out:?}"
        );
        assert_eq!(out.status.success(), expected == "yes");
    }
    let out = cluster
        .kubectl(&[
            "auth",
            "can-i",
            "get",
            "pods",
            "--all-namespaces",
            "--as",
            "vera",
        ])
        .await?;
    assert_eq!(
        out.stdout.trim(),
        "no",
        "a RoleBinding grants only in its namespace"
    );
    Ok(())
}

#[tokio::test]
async fn authorization_mode_always_allow_lets_every_identity_through() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--authorization-mode=AlwaysAllow")
        .start()
        .await?;
    let alice = kubeconfig_flag(&cluster.user_kubeconfig("alice", None).await?);
    cluster
        .kubectl_ok(&[
            alice.as_str(),
            "create",
            "configmap",
            "c",
            "--from-literal=a=b",
        ])
        .await?;
    let out = cluster
        .kubectl(&[alice.as_str(), "auth", "can-i", "delete", "nodes"])
        .await?;
    assert_eq!(out.stdout.trim(), "yes");
    Ok(())
}
