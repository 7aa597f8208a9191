//! The Node authorizer and NodeRestriction, with a real agent's own credentials: a node
//! reads the Secrets of the pods bound to it and nothing else, writes only its own Node,
//! the status of its own pods and its own Lease, and creates no pods.

use anyhow::{Context, Result};
use base64::Engine;
use http::Method;
use serde_json::json;

use crate::harness::{NodeSpec, TestCluster, raw};

/// A kube client presenting the client certificate agent `i` got when it joined.
async fn node_client(cluster: &TestCluster, i: usize) -> Result<kube::Client> {
    let pki = cluster.node_data_dirs()[i].join("agent").join("pki");
    let pem = std::fs::read_to_string(pki.join("kubelet-client-current.pem"))
        .context("reading the agent's client certificate")?;
    let split = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .context("no key in the agent's certificate file")?;
    let (cert, key) = pem.split_at(split);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut config = cluster.kube_config().await?;
    config.auth_info = kube::config::AuthInfo {
        client_certificate_data: Some(b64(cert)),
        client_key_data: Some(b64(key).into()),
        ..kube::config::AuthInfo::default()
    };
    kube::Client::try_from(config).context("building the node's client")
}

/// A kubeconfig (for `kubectl --kubeconfig=...`) presenting the client certificate agent
/// `i` got when it joined.
fn node_kubeconfig(cluster: &TestCluster, i: usize, node: &str) -> Result<std::path::PathBuf> {
    let pem = std::fs::read_to_string(
        cluster.node_data_dirs()[i]
            .join("agent")
            .join("pki")
            .join("kubelet-client-current.pem"),
    )
    .context("reading the agent's client certificate")?;
    let split = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .context("no key in the agent's certificate file")?;
    let (cert, key) = pem.split_at(split);
    let ca = std::fs::read_to_string(cluster.data_dir().join("pki").join("ca.crt"))
        .context("reading the cluster CA")?;
    let yaml = wasmkube_apiserver::pki::kubeconfig_yaml(
        &format!("https://127.0.0.1:{}", cluster.port()),
        &ca,
        &format!("system:node:{node}"),
        cert,
        key,
    )?;
    let path = cluster.data_dir().join(format!("kubeconfig-{node}.yaml"));
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn send(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: serde_json::Value,
) -> Result<raw::RawResponse> {
    raw::send(
        client,
        method,
        path,
        Some(content_type),
        serde_json::to_vec(&body)?,
    )
    .await
}

#[tokio::test]
async fn a_nodes_credentials_reach_only_its_own_node_pods_and_their_secrets() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .agent(NodeSpec::named("node-a"))
        .agent(NodeSpec::named("node-b"))
        .start()
        .await?;
    for (secret, node) in [("secret-a", "node-a"), ("secret-b", "node-b")] {
        cluster
            .kubectl_ok(&[
                "create",
                "secret",
                "generic",
                secret,
                "--from-literal=password=for-",
            ])
            .await?;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-on-{node}")},
            "spec": {
                "nodeName": node,
                "runtimeClassName": "wasmtime",
                "containers": [{"name": "app", "image": "example.com/app:1",
                    "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]}],
            },
        });
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], &pod.to_string())
            .await?;
    }
    let node_a = node_client(&cluster, 0).await?;

    // With the real kubectl and node-a's own kubeconfig: its pod's secret, not node-b's
    // pod's; not node-b's Node; no pods at all.
    let as_node_a = crate::rbac::kubeconfig_flag(&node_kubeconfig(&cluster, 0, "node-a")?);
    let as_node_a = as_node_a.as_str();
    let own = cluster
        .kubectl_ok(&[
            as_node_a,
            "get",
            "secret",
            "secret-a",
            "-o",
            "jsonpath={.data.password}",
        ])
        .await?;
    assert_eq!(
        own,
        base64::engine::general_purpose::STANDARD.encode("for-")
    );
    let err = cluster
        .kubectl_fails(&[as_node_a, "get", "secret", "secret-b"])
        .await?;
    assert!(
        err.contains("Error from server (Forbidden): secrets \"secret-b\" is forbidden: User \"system:node:node-a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'node-a' and this object"),
        "{err}"
    );
    let err = cluster
        .kubectl_fails(&[
            as_node_a,
            "patch",
            "node",
            "node-b",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"hijacked":"yes"}}}"#,
        ])
        .await?;
    // (kubectl reads the Node before it patches; the node may read only its own.)
    assert!(
        err.contains("Error from server (Forbidden): nodes \"node-b\" is forbidden: User \"system:node:node-a\""),
        "{err}"
    );
    let labels = cluster
        .kubectl_ok(&["get", "node", "node-b", "-o", "jsonpath={.metadata.labels}"])
        .await?;
    assert!(!labels.contains("hijacked"), "{labels}");
    let err = cluster
        .kubectl_fails(&[
            as_node_a,
            "run",
            "smuggled",
            "--image=example.com/app:1",
            "--overrides",
            r#"{"spec":{"nodeName":"node-a"}}"#,
        ])
        .await?;
    assert!(
        err.contains("pods \"smuggled\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"node-a\" can only create mirror pods"),
        "{err}"
    );

    // Its own pod's secret, its own pod, its own Node.
    for path in [
        "/api/v1/namespaces/default/secrets/secret-a",
        "/api/v1/namespaces/default/pods/pod-on-node-a",
        "/api/v1/nodes/node-a",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a",
    ] {
        let got = raw::get(&node_a, path).await?;
        assert_eq!(got.status, 200, "GET {path}: {}", got.body);
    }

    // Not the secret of a pod on another node, nor any list of secrets.
    let other = raw::get(&node_a, "/api/v1/namespaces/default/secrets/secret-b").await?;
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(
        other.json()?["message"],
        "secrets \"secret-b\" is forbidden: User \"system:node:node-a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'node-a' and this object"
    );
    for path in [
        "/api/v1/namespaces/default/secrets",
        "/api/v1/secrets",
        "/api/v1/namespaces/default/pods/pod-on-node-b",
        "/api/v1/pods",
        "/api/v1/nodes/node-b",
        "/api/v1/nodes",
    ] {
        let got = raw::get(&node_a, path).await?;
        assert_eq!(got.status, 403, "GET {path}: {}", got.body);
    }

    // Not another Node, nor another node's pods.
    let label = send(
        &node_a,
        Method::PATCH,
        "/api/v1/nodes/node-b",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"hijacked": "yes"}}}),
    )
    .await?;
    assert_eq!(label.status, 403, "{}", label.body);
    assert_eq!(
        label.json()?["message"],
        "nodes \"node-b\" is forbidden: node \"node-a\" is not allowed to modify node \"node-b\""
    );
    let status = send(
        &node_a,
        Method::PATCH,
        "/api/v1/nodes/node-b/status",
        "application/merge-patch+json",
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}),
    )
    .await?;
    assert_eq!(status.status, 403, "{}", status.body);
    let taint = send(
        &node_a,
        Method::PATCH,
        "/api/v1/nodes/node-a",
        "application/merge-patch+json",
        json!({"spec": {"taints": [{"key": "mine", "effect": "NoSchedule"}]}}),
    )
    .await?;
    assert_eq!(taint.status, 403, "{}", taint.body);
    assert!(
        taint.body.contains("is not allowed to modify taints"),
        "{}",
        taint.body
    );
    let delete = raw::send(
        &node_a,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/pod-on-node-b",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(delete.status, 403, "{}", delete.body);
    assert!(
        delete
            .body
            .contains("node \\\"node-a\\\" can only delete pods with spec.nodeName set to itself"),
        "{}",
        delete.body
    );
    let pod_status = send(
        &node_a,
        Method::PATCH,
        "/api/v1/namespaces/default/pods/pod-on-node-b/status",
        "application/merge-patch+json",
        json!({"status": {"phase": "Failed"}}),
    )
    .await?;
    assert_eq!(pod_status.status, 403, "{}", pod_status.body);

    // No pods at all.
    let create = send(
        &node_a,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        "application/json",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smuggled"},
               "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]}}),
    )
    .await?;
    assert_eq!(create.status, 403, "{}", create.body);
    assert_eq!(
        create.json()?["message"],
        "pods \"smuggled\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"node-a\" can only create mirror pods"
    );

    // Its own lease only.
    let lease = raw::get(
        &node_a,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-b",
    )
    .await?;
    assert_eq!(lease.status, 403, "{}", lease.body);

    // kubectl auth can-i as the node agrees.
    let can_i = cluster
        .kubectl(&[
            "auth",
            "can-i",
            "get",
            "secret/secret-b",
            "--as",
            "system:node:node-a",
            "--as-group",
            "system:nodes",
        ])
        .await?;
    assert_eq!(
        can_i.stdout.trim(),
        "no - no relationship found between node 'node-a' and this object",
        "{can_i:?}"
    );
    let can_i = cluster
        .kubectl(&[
            "auth",
            "can-i",
            "get",
            "secret/secret-a",
            "--as",
            "system:node:node-a",
            "--as-group",
            "system:nodes",
        ])
        .await?;
    assert_eq!(can_i.stdout.trim(), "yes", "{can_i:?}");
    Ok(())
}

/// NodeRestriction on TokenRequest, as Kubernetes': a node's agent gets service-account
/// tokens only bound to a pod (named with its uid) that runs on it; the Node authorizer
/// already keeps it to the accounts its pods run as. Anyone else is untouched.
#[tokio::test]
async fn a_node_gets_tokens_only_bound_to_its_own_pods() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .agent(NodeSpec::named("node-a"))
        .agent(NodeSpec::named("node-b"))
        .start()
        .await?;
    let admin = cluster.client().await?;
    // `runner` has a pod on each node; `elsewhere` only one on node-b.
    for account in ["runner", "elsewhere"] {
        cluster
            .kubectl_ok(&["create", "serviceaccount", account])
            .await?;
    }
    let mut uids = std::collections::BTreeMap::new();
    for (account, pod, node) in [
        ("runner", "runner-on-node-a", "node-a"),
        ("runner", "runner-on-node-b", "node-b"),
        ("elsewhere", "elsewhere-on-node-b", "node-b"),
    ] {
        let created = send(
            &admin,
            Method::POST,
            "/api/v1/namespaces/default/pods",
            "application/json",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                   "spec": {"nodeName": node, "serviceAccountName": account,
                            "runtimeClassName": "wasmtime",
                            "containers": [{"name": "app", "image": "example.com/app:1"}]}}),
        )
        .await?;
        assert_eq!(created.status, 201, "{}", created.body);
        let uid = created.json()?["metadata"]["uid"]
            .as_str()
            .context("the pod's uid")?
            .to_owned();
        uids.insert(pod, uid);
    }
    let uid = |pod: &str| uids[pod].clone();
    let node_a = node_client(&cluster, 0).await?;
    let request = |account: &str, bound: serde_json::Value| {
        let node_a = node_a.clone();
        let path = format!("/api/v1/namespaces/default/serviceaccounts/{account}/token");
        let mut spec = json!({"audiences": ["https://kubernetes.default.svc.cluster.local"]});
        if !bound.is_null() {
            spec["boundObjectRef"] = bound;
        }
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                          "spec": spec});
        async move { send(&node_a, Method::POST, &path, "application/json", body).await }
    };
    let pod_ref = |name: &str, uid: &str| json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});

    // Bound to its own pod: a token, which names the pod and the node.
    let own = request(
        "runner",
        pod_ref("runner-on-node-a", &uid("runner-on-node-a")),
    )
    .await?;
    assert_eq!(own.status, 201, "{}", own.body);
    let token = own.json()?["status"]["token"]
        .as_str()
        .context("the issued token")?
        .to_owned();
    let payload = token.split('.').nth(1).context("a JWT")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    assert_eq!(
        claims["kubernetes.io"]["pod"]["name"], "runner-on-node-a",
        "{claims}"
    );
    assert_eq!(
        claims["kubernetes.io"]["node"]["name"], "node-a",
        "{claims}"
    );

    // Kubernetes' refusals, each a 403 on the service account (or 404 for a missing pod).
    let refusals = [
        (
            request("runner", serde_json::Value::Null).await?,
            "node requested token not bound to a pod",
        ),
        (
            request(
                "runner",
                json!({"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "x"}),
            )
            .await?,
            "node requested token not bound to a pod",
        ),
        (
            request(
                "runner",
                json!({"apiVersion": "v1", "kind": "Pod", "name": "runner-on-node-a"}),
            )
            .await?,
            "node requested token with a pod binding without a uid",
        ),
        (
            request("runner", pod_ref("runner-on-node-a", "not-its-uid")).await?,
            "the UID in the bound object reference (not-its-uid) does not match the UID in \
             record. The object might have been deleted and then recreated",
        ),
        (
            request(
                "runner",
                pod_ref("runner-on-node-b", &uid("runner-on-node-b")),
            )
            .await?,
            "node requested token bound to a pod scheduled on a different node",
        ),
    ];
    for (refused, why) in refusals {
        assert_eq!(refused.status, 403, "{why}: {}", refused.body);
        assert_eq!(
            refused.json()?["message"],
            format!("serviceaccounts \"runner\" is forbidden: {why}")
        );
    }
    let missing = request("runner", pod_ref("gone", "some-uid")).await?;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json()?["message"], "pods \"gone\" not found");

    // An account none of its pods runs as: the Node authorizer refuses first.
    let unrelated = request(
        "elsewhere",
        pod_ref("elsewhere-on-node-b", &uid("elsewhere-on-node-b")),
    )
    .await?;
    assert_eq!(unrelated.status, 403, "{}", unrelated.body);
    assert!(
        unrelated
            .body
            .contains("no relationship found between node 'node-a' and this object"),
        "{}",
        unrelated.body
    );

    // Not a node: the admin still gets unbound tokens.
    let admin_token = cluster.kubectl_ok(&["create", "token", "runner"]).await?;
    assert_eq!(admin_token.trim().split('.').count(), 3, "{admin_token}");
    Ok(())
}

/// The agent's kube-proxy acts as the node: nodes may list and watch Services, Endpoints and
/// EndpointSlices everywhere (`system:node-proxier`, bound to `system:nodes`), and still
/// write none of them.
#[tokio::test]
async fn a_node_may_list_and_watch_what_its_proxy_needs_and_write_none_of_it() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let can_i = |verb: &'static str, resource: &'static str| {
        let cluster = &cluster;
        async move {
            let out = cluster
                .kubectl(&[
                    "auth",
                    "can-i",
                    verb,
                    resource,
                    "--all-namespaces",
                    "--as",
                    "system:node:node-a",
                    "--as-group",
                    "system:nodes",
                ])
                .await?;
            anyhow::Ok(out.stdout.trim().to_string())
        }
    };
    for resource in ["services", "endpoints", "endpointslices.discovery.k8s.io"] {
        for verb in ["list", "watch"] {
            assert_eq!(can_i(verb, resource).await?, "yes", "{verb} {resource}");
        }
        for verb in ["create", "update", "delete"] {
            assert!(
                can_i(verb, resource).await?.starts_with("no"),
                "{verb} {resource}"
            );
        }
    }
    // Someone who is not a node gets nothing from it.
    let out = cluster
        .kubectl(&[
            "auth",
            "can-i",
            "list",
            "endpointslices.discovery.k8s.io",
            "--as",
            "alice",
        ])
        .await?;
    assert!(out.stdout.trim().starts_with("no"), "{out:?}");
    Ok(())
}
