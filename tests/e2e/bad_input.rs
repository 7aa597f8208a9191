//! Proves the apiserver's manners with bad input, over raw HTTPS: every client mistake gets a
//! `metav1.Status` with Kubernetes' code and reason (413 RequestEntityTooLarge for a body over
//! 3 MiB, 422 Invalid with field causes, 404 for unknown resources and missing namespaces,
//! 400 for malformed JSON or YAML, 405 for a verb a path does not support, 409 AlreadyExists
//! and Conflict, 401 without credentials), never a 500, and the server keeps answering after
//! each one.

use anyhow::{Context, Result};
use http::Method;
use serde_json::{Value, json};

use crate::harness::TestCluster;
use crate::harness::raw::{self, RawResponse};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
/// Kubernetes' limit on a request body.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// POST a JSON body to `path`.
async fn post_json(client: &kube::Client, path: &str, body: &Value) -> Result<RawResponse> {
    raw::send(
        client,
        Method::POST,
        path,
        Some("application/json"),
        serde_json::to_vec(body)?,
    )
    .await
}

/// Check that `response` is a failure Status with `code` and `reason`; return the Status.
pub(crate) fn expect_status(response: &RawResponse, code: u16, reason: &str) -> Result<Value> {
    assert_eq!(response.status, code, "body: {}", response.body);
    let status = response.json()?;
    assert_eq!(status["kind"], "Status", "{status:#}");
    assert_eq!(status["apiVersion"], "v1", "{status:#}");
    assert_eq!(status["status"], "Failure", "{status:#}");
    assert_eq!(status["code"], code, "{status:#}");
    assert_eq!(status["reason"], reason, "{status:#}");
    assert!(
        status["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a Status tells a person what went wrong: {status:#}"
    );
    Ok(status)
}

/// The server still serves a normal request.
pub(crate) async fn still_serving(client: &kube::Client, after: &str) -> Result<()> {
    let response = raw::get(client, "/api/v1/namespaces")
        .await
        .with_context(|| format!("the server stopped answering after {after}"))?;
    assert_eq!(
        response.status, 200,
        "GET /api/v1/namespaces after {after}: {}",
        response.body
    );
    Ok(())
}

/// The `field` of every cause in a Status.
fn cause_fields(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn malformed_requests_get_status_errors_and_the_server_keeps_serving() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;

    // A body one byte over 3 MiB (otherwise a valid ConfigMap).
    let skeleton = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big"}, "data": {"k": ""}});
    let pad = MAX_BODY + 1 - serde_json::to_vec(&skeleton)?.len();
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big"}, "data": {"k": "x".repeat(pad)}});
    let body = serde_json::to_vec(&big)?;
    assert_eq!(body.len(), MAX_BODY + 1);
    let response = raw::send(
        &client,
        Method::POST,
        CONFIGMAPS,
        Some("application/json"),
        body,
    )
    .await?;
    expect_status(&response, 413, "RequestEntityTooLarge")?;
    still_serving(&client, "a 3 MiB + 1 body").await?;
    assert_eq!(
        raw::get(&client, &format!("{CONFIGMAPS}/big"))
            .await?
            .status,
        404
    );

    // An invalid name: 422 Invalid, with a cause naming the field.
    let response = post_json(
        &client,
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
    )
    .await?;
    let status = expect_status(&response, 422, "Invalid")?;
    assert_eq!(status["details"]["name"], "Bad_Name", "{status:#}");
    assert_eq!(status["details"]["kind"], "ConfigMap", "{status:#}");
    assert!(
        cause_fields(&status).contains(&"metadata.name".to_owned()),
        "{status:#}"
    );
    still_serving(&client, "an invalid name").await?;

    // An invalid label value.
    let response = post_json(
        &client,
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "labelled", "labels": {"ok": "-not valid-"}}}),
    )
    .await?;
    let status = expect_status(&response, 422, "Invalid")?;
    assert!(
        cause_fields(&status)
            .iter()
            .any(|f| f.starts_with("metadata.labels")),
        "{status:#}"
    );

    // A pod without containers misses a required field.
    let response = post_json(
        &client,
        "/api/v1/namespaces/default/pods",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"},
            "spec": {"containers": []}}),
    )
    .await?;
    let status = expect_status(&response, 422, "Invalid")?;
    assert!(
        cause_fields(&status).contains(&"spec.containers".to_owned()),
        "{status:#}"
    );
    still_serving(&client, "a pod without containers").await?;

    // Unknown resources and groups.
    for path in [
        "/api/v1/foos",
        "/api/v1/namespaces/default/foos",
        "/apis/nope.example.com/v1/things",
    ] {
        let response = raw::get(&client, path).await?;
        assert_eq!(response.status, 404, "GET {path}: {}", response.body);
        still_serving(&client, path).await?;
    }

    // Malformed JSON and malformed YAML.
    let response = raw::send(
        &client,
        Method::POST,
        CONFIGMAPS,
        Some("application/json"),
        br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "#.to_vec(),
    )
    .await?;
    expect_status(&response, 400, "BadRequest")?;
    still_serving(&client, "malformed JSON").await?;

    let response = raw::send(
        &client,
        Method::POST,
        CONFIGMAPS,
        Some("application/yaml"),
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: [name: {unclosed\n".to_vec(),
    )
    .await?;
    expect_status(&response, 400, "BadRequest")?;
    still_serving(&client, "malformed YAML").await?;

    // Well-formed YAML is accepted, as it is by Kubernetes.
    let response = raw::send(
        &client,
        Method::POST,
        CONFIGMAPS,
        Some("application/yaml"),
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n".to_vec(),
    )
    .await?;
    assert_eq!(response.status, 201, "{}", response.body);
    assert_eq!(response.json()?["data"]["k"], "v");

    // The object's namespace must match the request's.
    let response = post_json(
        &client,
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "elsewhere", "namespace": "kube-system"}}),
    )
    .await?;
    expect_status(&response, 400, "BadRequest")?;

    // A verb the path does not support.
    let response = raw::send(
        &client,
        Method::PUT,
        CONFIGMAPS,
        Some("application/json"),
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(),
    )
    .await?;
    expect_status(&response, 405, "MethodNotAllowed")?;
    still_serving(&client, "an unsupported verb").await?;
    Ok(())
}

#[tokio::test]
async fn create_and_update_errors_carry_kubernetes_reasons() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;

    // Creating into a namespace that does not exist.
    let response = post_json(
        &client,
        "/api/v1/namespaces/nope/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    )
    .await?;
    let status = expect_status(&response, 404, "NotFound")?;
    assert_eq!(status["details"]["name"], "nope", "{status:#}");
    assert_eq!(status["details"]["kind"], "namespaces", "{status:#}");
    assert_eq!(status["message"], r#"namespaces "nope" not found"#);

    // A duplicate create.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dup"}, "data": {"v": "1"}});
    let first = post_json(&client, CONFIGMAPS, &cm).await?;
    assert_eq!(first.status, 201, "{}", first.body);
    let created = first.json()?;
    let response = post_json(&client, CONFIGMAPS, &cm).await?;
    let status = expect_status(&response, 409, "AlreadyExists")?;
    assert_eq!(status["details"]["name"], "dup", "{status:#}");
    assert_eq!(status["details"]["kind"], "configmaps", "{status:#}");
    assert_eq!(status["message"], r#"configmaps "dup" already exists"#);

    // An update from a stale read.
    let mut update = created.clone();
    update["data"]["v"] = json!("2");
    let path = format!("{CONFIGMAPS}/dup");
    let response = raw::send(
        &client,
        Method::PUT,
        &path,
        Some("application/json"),
        serde_json::to_vec(&update)?,
    )
    .await?;
    assert_eq!(response.status, 200, "{}", response.body);
    update["data"]["v"] = json!("3");
    let response = raw::send(
        &client,
        Method::PUT,
        &path,
        Some("application/json"),
        serde_json::to_vec(&update)?,
    )
    .await?;
    let status = expect_status(&response, 409, "Conflict")?;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the object has been modified"),
        "{status:#}"
    );
    let current = raw::get(&client, &path).await?.json()?;
    assert_eq!(current["data"]["v"], "2");

    // Getting, replacing and deleting what is not there.
    let response = raw::get(&client, &format!("{CONFIGMAPS}/ghost")).await?;
    let status = expect_status(&response, 404, "NotFound")?;
    assert_eq!(status["message"], r#"configmaps "ghost" not found"#);
    let response = raw::send(
        &client,
        Method::DELETE,
        &format!("{CONFIGMAPS}/ghost"),
        None,
        Vec::new(),
    )
    .await?;
    expect_status(&response, 404, "NotFound")?;

    // A body whose name differs from the URL's.
    let mut renamed = current.clone();
    renamed["metadata"]["name"] = json!("other");
    let response = raw::send(
        &client,
        Method::PUT,
        &path,
        Some("application/json"),
        serde_json::to_vec(&renamed)?,
    )
    .await?;
    assert_eq!(response.status, 400, "{}", response.body);
    still_serving(&client, "the create/update errors").await?;
    Ok(())
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let admin = cluster.client().await?;
    let anonymous = cluster.client_without_credentials().await?;

    for path in [
        "/api/v1/namespaces",
        "/api",
        "/apis",
        "/api/v1/namespaces/default/pods",
    ] {
        let response = raw::get(&anonymous, path).await?;
        expect_status(&response, 401, "Unauthorized")?;
        still_serving(&admin, "an unauthenticated request").await?;
    }
    let response = post_json(
        &anonymous,
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sneaky"}}),
    )
    .await?;
    expect_status(&response, 401, "Unauthorized")?;
    assert_eq!(
        raw::get(&admin, &format!("{CONFIGMAPS}/sneaky"))
            .await?
            .status,
        404
    );

    // Health endpoints stay open: load balancers and probes have no credentials.
    let response = raw::get(&anonymous, "/readyz").await?;
    assert_eq!(response.status, 200, "{}", response.body);

    let wrong = cluster.client_with_bearer_token("not-the-token").await?;
    let response = raw::get(&wrong, "/api/v1/namespaces").await?;
    expect_status(&response, 401, "Unauthorized")?;

    // The admin bearer token of `<data-dir>/tokens.csv` (kube-apiserver's --token-auth-file
    // format: token,user,uid,"groups") is accepted.
    let tokens_path = cluster.data_dir().join("tokens.csv");
    let tokens = std::fs::read_to_string(&tokens_path)
        .with_context(|| format!("reading {}", tokens_path.display()))?;
    let admin_token = tokens
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(',');
            let token = fields.next()?;
            (fields.next()? == "admin").then(|| token.to_owned())
        })
        .with_context(|| format!("no admin token in {}:\n{tokens}", tokens_path.display()))?;
    let bearer = cluster.client_with_bearer_token(&admin_token).await?;
    let response = raw::get(&bearer, "/api/v1/namespaces").await?;
    assert_eq!(response.status, 200, "{}", response.body);
    still_serving(&admin, "the credential checks").await?;
    Ok(())
}
