//! The limits that protect the apiserver (issue 9, review findings 5 and 10): the size of an
//! object after every write path and JSON patch `copy` amplification. Each test drives a real
//! server over HTTPS and asserts the Status Kubernetes answers with, and that the server
//! stays healthy.

use anyhow::{Context, Result, bail};
use http::Method;
use serde_json::{Value, json};

use crate::bad_input::{expect_status, still_serving};
use crate::harness::TestCluster;
use crate::harness::raw::{self, RawResponse};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
/// etcd's default `--max-request-bytes`, the largest object wasmkube stores.
const MAX_OBJECT: usize = 1536 * 1024;

async fn send_json(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Result<RawResponse> {
    raw::send(
        client,
        method,
        path,
        Some(content_type),
        serde_json::to_vec(body)?,
    )
    .await
}

/// The server's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(cluster: &TestCluster) -> Result<u64> {
    let pid = cluster.server_pid().context("the server is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/<pid>/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM without a value")?
        .parse()
        .context("VmHWM is not a number")?;
    Ok(kib * 1024)
}

fn deployment(name: &str, arg: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "example/app:1", "args": [arg]}]}}}})
}

/// [`expect_status`], without printing a body of megabytes when the code is not `code`.
fn expect_code(response: &RawResponse, code: u16, reason: &str) -> Result<Value> {
    if response.status != code {
        let head: String = response.body.chars().take(600).collect();
        bail!(
            "expected {code} {reason}, got {}: {head}...",
            response.status
        );
    }
    expect_status(response, code, reason)
}

/// Review finding 5: a ~900-byte JSON patch whose `copy` operations double a free-form field
/// made a 134 MB object and a 1.5 GB memory peak. Kubernetes bounds what the copies of one
/// patch add up to (3 MiB): the patch now fails with 422 as it runs, and the server's memory
/// peak stays far below what the doublings would have taken.
#[tokio::test]
async fn json_patch_copy_amplification_fails_fast_with_a_bounded_memory_peak() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let created = send_json(
        &client,
        Method::POST,
        CONFIGMAPS,
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed",
            "managedFields": [{"manager": "t", "operation": "Update", "apiVersion": "v1",
                "fieldsV1": {"f:data": {"f:k": "x".repeat(100)}}}]},
            "data": {"k": "v"}}),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.body);

    // 24 doublings of ~130 bytes would be ~2 GB.
    let ops: Vec<Value> = (0..24)
        .map(|i| {
            json!({"op": "copy", "from": "/metadata/managedFields/0/fieldsV1",
                "path": format!("/metadata/managedFields/0/fieldsV1/f:{i}")})
        })
        .collect();
    let patch = Value::Array(ops);
    assert!(serde_json::to_vec(&patch)?.len() < 4096);
    let before = peak_rss(&cluster)?;
    let response = send_json(
        &client,
        Method::PATCH,
        &format!("{CONFIGMAPS}/seed"),
        "application/json-patch+json",
        &patch,
    )
    .await?;
    let status = expect_code(&response, 422, "Invalid")?;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message
            .starts_with("Unable to complete the copy, the accumulated size increase of copy is")
            && message.ends_with("exceeding the limit 3145728"),
        "{status:#}"
    );
    let after = peak_rss(&cluster)?;
    println!(
        "server peak RSS: {} MiB before the patch, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (128 << 20),
        "the copies grew the server's memory peak from {before} to {after} bytes"
    );
    still_serving(&client, "a copy-amplifying JSON patch").await?;
    let seed = raw::get(&client, &format!("{CONFIGMAPS}/seed"))
        .await?
        .json()?;
    assert_eq!(
        seed["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {"f:k": "x".repeat(100)}}),
        "the failed patch changed nothing"
    );
    Ok(())
}

/// An object larger than etcd stores (1.5 MiB) is refused on every write path with 413
/// RequestEntityTooLarge, before anything is written: create, update, merge patch, JSON patch
/// and the status subresource.
#[tokio::test]
async fn objects_over_the_store_limit_are_refused_on_every_write_path() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let too_large = |response: &RawResponse, path: &str| -> Result<()> {
        let status = expect_code(response, 413, "RequestEntityTooLarge")
            .with_context(|| format!("writing with {path}"))?;
        let message = status["message"].as_str().unwrap_or_default();
        if !message.starts_with("Request entity too large: deployments.apps \"d\" would be")
            || !message.contains(&format!("over the limit of {MAX_OBJECT} bytes"))
        {
            bail!("unexpected message on {path}: {status:#}");
        }
        Ok(())
    };

    // Create: a pod template whose argument alone is over the limit.
    let big = "x".repeat(MAX_OBJECT + 1);
    let response = send_json(
        &client,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        &deployment("d", &big),
    )
    .await?;
    too_large(&response, "create")?;
    assert_eq!(
        raw::get(&client, &format!("{DEPLOYMENTS}/d")).await?.status,
        404
    );

    // A Deployment of 1 MiB that every write below tries to grow past 1.5 MiB.
    let mib = "y".repeat(1 << 20);
    let created = send_json(
        &client,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        &deployment("d", &mib),
    )
    .await?;
    assert_eq!(
        created.status,
        201,
        "{}",
        &created.body[..created.body.len().min(600)]
    );
    let original: Value = created.json()?;
    let half = "z".repeat(600 * 1024);
    let url = format!("{DEPLOYMENTS}/d");

    let mut replaced = original.clone();
    replaced["spec"]["template"]["spec"]["containers"][0]["args"] = json!([mib, half]);
    let response = send_json(&client, Method::PUT, &url, "application/json", &replaced).await?;
    too_large(&response, "update")?;

    let response = send_json(
        &client,
        Method::PATCH,
        &url,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"a": "b"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "example/app:1", "args": [mib, half]}]}}}}),
    )
    .await?;
    too_large(&response, "a merge patch")?;

    let response = send_json(
        &client,
        Method::PATCH,
        &url,
        "application/json-patch+json",
        &json!([{"op": "copy", "from": "/spec/template/spec/containers/0/args/0",
            "path": "/spec/template/spec/containers/0/args/-"}]),
    )
    .await?;
    too_large(&response, "a JSON patch")?;

    let response = send_json(
        &client,
        Method::PATCH,
        &format!("{url}/status"),
        "application/merge-patch+json",
        &json!({"status": {"conditions": [{"type": "Progressing", "status": "True",
            "reason": "Big", "message": half}]}}),
    )
    .await?;
    too_large(&response, "a status patch")?;

    let current = raw::get(&client, &url).await?.json()?;
    assert_eq!(
        current["metadata"]["resourceVersion"], original["metadata"]["resourceVersion"],
        "no refused write changed the Deployment"
    );
    still_serving(&client, "objects over the store limit").await?;
    Ok(())
}
