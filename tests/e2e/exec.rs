//! `kubectl exec` and `kubectl attach` through `pods/exec` and `pods/attach`: the real
//! kubectl v1.32 (a WebSocket first, which the apiserver refuses, then SPDY, its fallback),
//! the options checked with Kubernetes' messages, RBAC on the subresources, and the agent's
//! answer for a wasm pod passed back to kubectl. Everything stays on 127.0.0.0/8.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;

use crate::harness::{TestCluster, raw};

/// How long a pod may take to become Ready.
const START_DEADLINE: Duration = Duration::from_secs(120);

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn exec_and_attach_reach_the_agent_which_says_why_a_wasm_pod_has_none() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("exec_and_attach_reach_the_agent_which_says_why_a_wasm_pod_has_none")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("http-hello").await?;
    cluster
        .wait_pod("http-hello", "Ready", START_DEADLINE, ready)
        .await?;

    // Through the apiserver to the agent, which explains itself; kubectl prints it.
    let exec = cluster
        .kubectl_fails(&["exec", "http-hello", "--", "ls", "/"])
        .await?;
    ensure!(
        exec.contains(
            "container \"http-hello\" of pod \"default/http-hello\" is a wasm program run in-process by the node agent: it has no operating-system process to exec to"
        ),
        "{exec}"
    );
    let attach = cluster
        .kubectl_fails(&["attach", "http-hello", "-c", "http-hello"])
        .await?;
    ensure!(
        attach.contains("has no operating-system process to attach to"),
        "{attach}"
    );

    // The options, checked by the apiserver with Kubernetes' words.
    let wrong = cluster
        .kubectl_fails(&["exec", "http-hello", "-c", "nope", "--", "ls"])
        .await?;
    ensure!(
        wrong.contains("container nope is not valid for pod http-hello"),
        "{wrong}"
    );
    let admin = cluster.client().await?;
    let commandless = raw::send(
        &admin,
        http::Method::POST,
        "/api/v1/namespaces/default/pods/http-hello/exec?stdout=true",
        None,
        Vec::new(),
    )
    .await?;
    ensure!(commandless.status == 400, "{commandless:?}");
    ensure!(
        commandless.json()?["message"] == "you must specify at least one command for the container",
        "{commandless:?}"
    );
    let plain = raw::send(
        &admin,
        http::Method::POST,
        "/api/v1/namespaces/default/pods/http-hello/exec?command=ls&stdout=true",
        None,
        Vec::new(),
    )
    .await?;
    ensure!(plain.status == 400, "{plain:?}");
    ensure!(plain.body.contains("Upgrade request required"), "{plain:?}");
    let missing = cluster.kubectl_fails(&["exec", "nope", "--", "ls"]).await?;
    ensure!(missing.contains("pods \"nope\" not found"), "{missing}");

    // RBAC: a `view` user may not exec.
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "viewer",
            "--clusterrole=view",
            "--user=viewer",
        ])
        .await?;
    let forbidden = cluster
        .kubectl_fails(&["exec", "http-hello", "--as=viewer", "--", "ls"])
        .await?;
    ensure!(
        forbidden.contains("User \"viewer\" cannot")
            && forbidden.contains("resource \"pods/exec\""),
        "{forbidden}"
    );
    Ok(())
}
