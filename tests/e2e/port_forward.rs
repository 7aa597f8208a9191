//! `kubectl port-forward` end to end: the real kubectl v1.32 against the server, through
//! `pods/portforward` (WebSocket-tunnelled SPDY first, plain SPDY when
//! `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), the agent's `/portForward` and the pod's
//! loopback IP, with `curl` on the local end. Everything stays on 127.0.0.0/8.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::harness::{PortForward, TestCluster, curl, free_port, poll_until, raw};

/// How long a pod may take to become Ready.
const START_DEADLINE: Duration = Duration::from_secs(120);

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `n` curls through `port`, `parallel` at a time; each must get http-hello's answer for
/// its own path.
async fn curl_many(port: u16, n: usize, parallel: usize) -> Result<()> {
    for batch in (0..n).collect::<Vec<_>>().chunks(parallel) {
        let runs = batch.iter().map(|i| async move {
            let path = format!("/through/kubectl/{i}");
            let body = curl(port, &path).await?;
            ensure!(
                body.contains("hello from wasm") && body.contains(&path),
                "unexpected body for {path}: {body}"
            );
            Ok(())
        });
        for result in futures::future::join_all(runs).await {
            result?;
        }
    }
    Ok(())
}

async fn cluster_with_http_hello(test: &str) -> Result<Option<TestCluster>> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples(test)
        .await?
    else {
        return Ok(None);
    };
    cluster.apply_sample("http-hello").await?;
    cluster
        .wait_pod("http-hello", "Ready", START_DEADLINE, ready)
        .await?;
    Ok(Some(cluster))
}

/// Forwards a good and a closed port of http-hello with `env` and checks both.
async fn forward_good_and_closed_port(cluster: &TestCluster, env: &[(&str, &str)]) -> Result<()> {
    let (good, closed) = (free_port()?, free_port()?);
    let spec_good = format!("{good}:8080");
    let spec_closed = format!("{closed}:9999");
    let mut pf = PortForward::start(
        cluster,
        &["pod/http-hello", &spec_good, &spec_closed, "-v=4"],
        env,
    )?;
    pf.wait_for(
        "forwarding the good port",
        &format!("Forwarding from 127.0.0.1:{good} -> 8080"),
    )
    .await?;
    pf.wait_for(
        "forwarding the closed port",
        &format!("Forwarding from 127.0.0.1:{closed} -> 9999"),
    )
    .await?;
    // One after another, then several at once: each is its own pair of streams.
    curl_many(good, 5, 1).await?;
    curl_many(good, 12, 4).await?;
    pf.ensure_running()?;

    // Nobody listens on 9999 in the pod: the agent's dial error comes back on the error
    // stream and kubectl prints it.
    let failed = curl(closed, "/").await;
    ensure!(failed.is_err(), "a closed pod port answered: {failed:?}");
    pf.wait_for(
        "the closed port's error",
        "error forwarding port 9999 to pod http-hello",
    )
    .await?;
    let stderr = pf.stderr();
    ensure!(
        stderr.contains("connect: connection refused"),
        "kubectl's error does not say why: {stderr}"
    );
    // kubectl 1.32 itself then closes the whole session on an error-stream message
    // (client-go's handleConnection), and says so.
    pf.wait_for("kubectl giving up", "lost connection to pod")
        .await
        .or_else(|e| {
            if pf.stderr().contains("lost connection to pod") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    Ok(())
}

#[tokio::test]
async fn kubectl_port_forward_reaches_a_pods_port_over_websockets_and_spdy() -> Result<()> {
    let Some(cluster) = cluster_with_http_hello(
        "kubectl_port_forward_reaches_a_pods_port_over_websockets_and_spdy",
    )
    .await?
    else {
        return Ok(());
    };
    // kubectl 1.32's default: SPDY tunnelled in a WebSocket, no fallback needed.
    forward_good_and_closed_port(&cluster, &[]).await?;
    // The plain SPDY upgrade, as kubectl before 1.31 and with the WebSocket gate off.
    forward_good_and_closed_port(&cluster, &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]).await?;
    Ok(())
}

#[tokio::test]
async fn kubectl_port_forward_survives_a_silent_client_and_a_burst_of_parallel_connections()
-> Result<()> {
    let Some(cluster) = cluster_with_http_hello(
        "kubectl_port_forward_survives_a_silent_client_and_a_burst_of_parallel_connections",
    )
    .await?
    else {
        return Ok(());
    };
    for env in [vec![], vec![("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]] {
        let local = free_port()?;
        let spec = format!("{local}:8080");
        let mut pf = PortForward::start(&cluster, &["pod/http-hello", &spec], &env)?;
        pf.wait_for("forwarding", &format!("Forwarding from 127.0.0.1:{local}"))
            .await?;
        curl_many(local, 3, 1).await?;
        // A client that connects and hangs up without a byte: the pod sees a bare
        // connection, the session carries on.
        tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
        curl_many(local, 8, 8).await?;
        pf.ensure_running()?;
        let stderr = pf.stderr();
        ensure!(
            !stderr.contains("error") && !stderr.contains("lost connection"),
            "kubectl complained: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn port_forward_to_a_service_or_deployment_reaches_one_of_its_pods() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("port_forward_to_a_service_or_deployment_reaches_one_of_its_pods")
        .await?
    else {
        return Ok(());
    };
    cluster
        .apply_json(&cluster.sample_workload("Deployment", "web", "http-hello", 2)?)
        .await?;
    cluster
        .apply_json(&json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }))
        .await?;
    let client = cluster.client().await?;
    poll_until("both web pods Ready", START_DEADLINE, || {
        let client = client.clone();
        async move {
            let pods: kube::Api<Pod> = kube::Api::default_namespaced(client);
            let list = pods
                .list(&kube::api::ListParams::default().labels("app=web"))
                .await?;
            Ok((list.items.len() == 2 && list.items.iter().all(ready)).then_some(()))
        }
    })
    .await?;
    // kubectl resolves the Service to a pod and its port 80 to targetPort http (8080).
    let local = free_port()?;
    let spec = format!("{local}:80");
    let mut pf = PortForward::start(&cluster, &["svc/web", &spec], &[])?;
    pf.wait_for("forwarding svc/web", &format!("127.0.0.1:{local} -> 8080"))
        .await?;
    curl_many(local, 4, 2).await?;
    pf.ensure_running()?;
    drop(pf);

    let local = free_port()?;
    let spec = format!("{local}:8080");
    let mut pf = PortForward::start(&cluster, &["deployment/web", &spec], &[])?;
    pf.wait_for(
        "forwarding deployment/web",
        &format!("127.0.0.1:{local} -> 8080"),
    )
    .await?;
    curl_many(local, 4, 2).await?;
    pf.ensure_running()?;
    Ok(())
}

#[tokio::test]
async fn port_forward_is_refused_without_rbac_and_for_missing_or_pending_pods() -> Result<()> {
    let Some(cluster) = cluster_with_http_hello(
        "port_forward_is_refused_without_rbac_and_for_missing_or_pending_pods",
    )
    .await?
    else {
        return Ok(());
    };
    // bob may read pods (kubectl looks the pod up first) but not create pods/portforward.
    cluster
        .kubectl_ok(&[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list,watch",
            "--resource=pods",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "bob-reads-pods",
            "--role=pod-reader",
            "--user=bob",
        ])
        .await?;
    let bob = format!(
        "--kubeconfig={}",
        cluster.user_kubeconfig("bob", None).await?.display()
    );
    let local = free_port()?;
    let spec = format!("{local}:8080");
    let err = cluster
        .kubectl_fails(&[&bob, "port-forward", "pod/http-hello", &spec])
        .await?;
    ensure!(
        err.contains("forbidden")
            && err.contains("User \"bob\" cannot create resource \"pods/portforward\""),
        "bob's refusal: {err}"
    );
    // With the permission (the `edit` role has it), bob forwards.
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "bob-edits",
            "--clusterrole=edit",
            "--user=bob",
        ])
        .await?;
    // (kubectl_command puts the admin kubeconfig first; bob's comes after and wins.)
    let mut pf = PortForward::start(&cluster, &[&bob, "pod/http-hello", &spec], &[])?;
    pf.wait_for("bob forwarding", &format!("127.0.0.1:{local} -> 8080"))
        .await?;
    curl_many(local, 2, 1).await?;
    drop(pf);

    // The subresource itself, as any client sees it.
    let admin = cluster.client().await?;
    let missing = raw::send(
        &admin,
        http::Method::POST,
        "/api/v1/namespaces/default/pods/nope/portforward",
        None,
        Vec::new(),
    )
    .await?;
    ensure!(missing.status == 404, "{missing:?}");
    ensure!(
        missing.json()?["message"] == "pods \"nope\" not found",
        "{missing:?}"
    );
    let mut pending = cluster.sample_pod("http-hello")?;
    pending["metadata"]["name"] = json!("nowhere");
    pending["spec"]["nodeSelector"] = json!({"no-such-node": "true"});
    cluster.apply_json(&pending).await?;
    let refused = raw::send(
        &admin,
        http::Method::POST,
        "/api/v1/namespaces/default/pods/nowhere/portforward",
        None,
        Vec::new(),
    )
    .await?;
    ensure!(refused.status == 400, "{refused:?}");
    ensure!(
        refused.json()?["message"]
            == "unable to forward port because pod is not running. Current status=Pending",
        "{refused:?}"
    );
    // kubectl says the same before it even asks.
    let err = cluster
        .kubectl_fails(&["port-forward", "pod/nowhere", &spec])
        .await?;
    ensure!(
        err.contains("unable to forward port because pod is not running. Current status=Pending"),
        "{err}"
    );
    // A plain request to a running pod is told to upgrade.
    let plain = raw::send(
        &admin,
        http::Method::POST,
        "/api/v1/namespaces/default/pods/http-hello/portforward",
        None,
        Vec::new(),
    )
    .await?;
    ensure!(plain.status == 400, "{plain:?}");
    ensure!(plain.body.contains("Upgrade request required"), "{plain:?}");
    Ok(())
}
