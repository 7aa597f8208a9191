//! Admission through the real kubectl: PodSecurity (enforce, warn, namespace labels),
//! LimitRange defaults and bounds, and NamespaceLifecycle, with Kubernetes' messages.
//! ResourceQuota, which needs the quota controller, is in `quota.rs`.

use anyhow::Result;
use serde_json::{Value, json};

use crate::harness::TestCluster;

/// A pod with a hostPath volume `h`, in `namespace`.
fn host_path_pod(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{
                "name": "c",
                "image": "wasmkube.local/samples/files:v1",
                "volumeMounts": [{"name": "h", "mountPath": "/config"}],
            }],
            "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}],
        },
    })
}

/// A pod with nothing set, in `namespace`.
fn plain_pod(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "wasmkube.local/samples/hello:v1"}]},
    })
}

async fn namespace(cluster: &TestCluster, name: &str, labels: &[&str]) -> Result<()> {
    cluster.kubectl_ok(&["create", "namespace", name]).await?;
    if !labels.is_empty() {
        let mut args = vec!["label", "namespace", name];
        args.extend_from_slice(labels);
        cluster.kubectl_ok(&args).await?;
    }
    Ok(())
}

async fn apply(cluster: &TestCluster, object: &Value) -> Result<crate::harness::KubectlOutput> {
    cluster
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&object.to_string()))
        .await
}

#[tokio::test]
async fn a_pod_security_restricted_namespace_refuses_a_host_path_pod_with_kubernetes_message()
-> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    namespace(
        &cluster,
        "locked",
        &["pod-security.kubernetes.io/enforce=restricted"],
    )
    .await?;
    let out = apply(&cluster, &host_path_pod("h", "locked")).await?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"h\" is forbidden: \
             violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false \
             (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             restricted volume types (volume \"h\" uses restricted volume type \"hostPath\"), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        ),
        "{}",
        out.stderr
    );
    let get = cluster
        .kubectl(&["get", "pod", "h", "-n", "locked"])
        .await?;
    assert!(!get.status.success(), "the pod was not stored: {get:?}");

    // A pod written to the restricted standard is admitted.
    let mut good = plain_pod("good", "locked");
    good["spec"]["securityContext"] =
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    good["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    let out = apply(&cluster, &good).await?;
    assert!(out.status.success(), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn baseline_refuses_host_path_too_and_warn_mode_prints_kubernetes_warning() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    namespace(
        &cluster,
        "base",
        &["pod-security.kubernetes.io/enforce=baseline"],
    )
    .await?;
    let out = apply(&cluster, &host_path_pod("h", "base")).await?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "pods \"h\" is forbidden: violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"h\")"
        ),
        "{}",
        out.stderr
    );

    // Warn mode: admitted, and kubectl prints the warning.
    namespace(
        &cluster,
        "warned",
        &[
            "pod-security.kubernetes.io/warn=baseline",
            "pod-security.kubernetes.io/warn-version=v1.33",
        ],
    )
    .await?;
    let out = apply(&cluster, &host_path_pod("h", "warned")).await?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "Warning: would violate PodSecurity \"baseline:v1.33\": hostPath volumes (volume \"h\")"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("pod/h created"), "{}", out.stdout);

    // Workload templates are warned about (never enforced), as Kubernetes does.
    let pod = host_path_pod("x", "warned");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "warned"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod["spec"]},
        },
    });
    let out = apply(&cluster, &deployment).await?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "Warning: would violate PodSecurity \"baseline:v1.33\": hostPath volumes (volume \"h\")"
        ),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn namespace_policy_labels_are_validated_and_a_new_enforce_level_names_violating_pods()
-> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    namespace(&cluster, "team", &[]).await?;
    apply(&cluster, &host_path_pod("h1", "team")).await?;
    apply(&cluster, &host_path_pod("h2", "team")).await?;
    apply(&cluster, &plain_pod("ok", "team")).await?;

    let stderr = cluster
        .kubectl_fails(&[
            "label",
            "namespace",
            "team",
            "pod-security.kubernetes.io/enforce=strict",
        ])
        .await?;
    assert!(
        stderr.contains(
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": \
             must be one of privileged, baseline, restricted"
        ),
        "{stderr}"
    );

    // The server-side dry run Kubernetes documents for trying a level shows the pods.
    let out = cluster
        .kubectl(&[
            "label",
            "--dry-run=server",
            "--overwrite",
            "namespace",
            "team",
            "pod-security.kubernetes.io/enforce=baseline",
        ])
        .await?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "Warning: existing pods in namespace \"team\" violate the new PodSecurity enforce level \"baseline:latest\""
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("Warning: h1 (and 1 other pods): hostPath volumes"),
        "{}",
        out.stderr
    );
    let labels = cluster.kubectl_json(&["get", "namespace", "team"]).await?;
    assert!(
        labels["metadata"]["labels"]
            .get("pod-security.kubernetes.io/enforce")
            .is_none(),
        "a dry run changes nothing"
    );
    Ok(())
}

#[tokio::test]
async fn limit_range_defaults_appear_in_the_stored_pod_and_its_bounds_refuse() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let range = json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits", "namespace": "default"},
        "spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"},
        }]},
    });
    let out = apply(&cluster, &range).await?;
    assert!(out.status.success(), "{out:?}");
    // LimitRange's own defaulting filled defaultRequest.memory from default.
    let stored = cluster
        .kubectl_json(&["get", "limitrange", "limits"])
        .await?;
    assert_eq!(
        stored["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "100m", "memory": "128Mi"})
    );
    let table = cluster.kubectl_ok(&["get", "limits"]).await?;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("CREATED AT"), "{table}");
    let describe = cluster
        .kubectl_ok(&["describe", "limitrange", "limits"])
        .await?;
    assert!(describe.contains("Container"), "{describe}");
    assert!(describe.contains("500m"), "{describe}");

    let out = apply(&cluster, &plain_pod("defaulted", "default")).await?;
    assert!(out.status.success(), "{out:?}");
    let pod = cluster.kubectl_json(&["get", "pod", "defaulted"]).await?;
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        json!({
            "limits": {"cpu": "500m", "memory": "128Mi"},
            "requests": {"cpu": "100m", "memory": "128Mi"},
        })
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        json!(
            "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
        )
    );
    assert_eq!(pod["status"]["qosClass"], json!("Burstable"));

    let mut big = plain_pod("big", "default");
    big["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    let out = apply(&cluster, &big).await?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{}",
        out.stderr
    );

    let invalid = json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "bad"},
        "spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]},
    });
    let out = apply(&cluster, &invalid).await?;
    assert!(
        out.stderr.contains(
            "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"
        ),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn namespace_lifecycle_refuses_content_in_missing_or_terminating_namespaces() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let out = apply(&cluster, &plain_pod("p", "nowhere")).await?;
    assert!(
        out.stderr
            .contains("Error from server (NotFound): error when creating \"STDIN\": namespaces \"nowhere\" not found"),
        "{}",
        out.stderr
    );

    // A finalizer on an object inside keeps the namespace terminating.
    namespace(&cluster, "doomed", &[]).await?;
    let held = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": "doomed", "finalizers": ["example.com/hold"]},
    });
    apply(&cluster, &held).await?;
    cluster
        .kubectl_ok(&["delete", "namespace", "doomed", "--wait=false"])
        .await?;
    let out = apply(&cluster, &plain_pod("late", "doomed")).await?;
    assert!(
        out.stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"late\" is forbidden: \
             unable to create new content in namespace doomed because it is being terminated"
        ),
        "{}",
        out.stderr
    );

    for immortal in ["default", "kube-system", "kube-public"] {
        let stderr = cluster
            .kubectl_fails(&["delete", "namespace", immortal])
            .await?;
        assert!(
            stderr.contains(&format!(
                "Error from server (Forbidden): namespaces \"{immortal}\" is forbidden: this namespace may not be deleted"
            )),
            "{stderr}"
        );
    }
    // Let the namespace go so the test leaves nothing terminating behind.
    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "held",
            "-n",
            "doomed",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])
        .await?;
    Ok(())
}

#[tokio::test]
async fn resource_quotas_and_limit_ranges_are_served_like_kubernetes() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let resources = cluster
        .kubectl_ok(&["api-resources", "--api-group="])
        .await?;
    let line = |name: &str| {
        resources
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(
        line("resourcequotas"),
        Some(vec![
            "resourcequotas",
            "quota",
            "v1",
            "true",
            "ResourceQuota"
        ])
    );
    assert_eq!(
        line("limitranges"),
        Some(vec!["limitranges", "limits", "v1", "true", "LimitRange"])
    );
    let explain = cluster
        .kubectl_ok(&["explain", "resourcequota.spec.hard"])
        .await?;
    assert!(explain.contains("hard"), "{explain}");
    Ok(())
}
