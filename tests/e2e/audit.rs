//! Auditing (`--audit-policy-file`, `--audit-log-path`, `--audit-log-max*`) through the real
//! kubectl: every request is in the log once per stage at the level the policy gives it,
//! with kube-apiserver's `audit.k8s.io/v1` Event fields; Secrets' bodies never appear; a
//! refused request carries the authorizer's decision; a small `--audit-log-maxsize` rotates
//! the log into at most `--audit-log-maxbackup` backups; an unusable policy file stops the
//! server with its path and what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::harness::{TestCluster, poll_until};
use crate::rbac::kubeconfig_flag;

/// None for a user and for the health paths, Metadata for Secrets, RequestResponse for
/// ConfigMaps (without RequestReceived), Request for everything else.
const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    users: ["quiet"]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["configmaps"]
    omitStages: ["RequestReceived"]
  - level: Request
"#;

const SECRET_VALUE: &str = "hunter2-the-audit-log-must-not-see-this";

/// Every event of every log file (current and backups), in file order.
fn read_events(dir: &Path) -> Result<Vec<Value>> {
    let mut events = Vec::new();
    for path in log_files(dir)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let event: Value = serde_json::from_str(line)
                .with_context(|| format!("a line of {} is not JSON: {line}", path.display()))?;
            events.push(event);
        }
    }
    Ok(events)
}

fn log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    Ok(files)
}

/// The events with `auditID == id`.
fn of_id<'a>(events: &'a [Value], id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["auditID"] == id).collect()
}

/// The one ResponseComplete event matching `pred`.
fn one_complete<'a>(
    events: &'a [Value],
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<&'a Value> {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete" && pred(e))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no ResponseComplete event for {what} among:\n{}",
            events
                .iter()
                .filter(|e| e["stage"] == "ResponseComplete")
                .map(|e| format!("{} {} {}", e["verb"], e["requestURI"], e["objectRef"]))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => bail!(
            "expected one ResponseComplete event for {what}, found {}: {other:#?}",
            other.len()
        ),
    }
}

fn is(e: &Value, verb: &str, resource: &str, name: &str) -> bool {
    e["verb"] == verb
        && e["objectRef"]["resource"] == resource
        && e["objectRef"]["name"].as_str().unwrap_or("") == name
}

fn user(e: &Value) -> &str {
    e["user"]["username"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_request_is_logged_once_per_stage_at_its_policy_level() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY)?;
    let logs = dir.path().join("logs");
    let log = logs.join("audit.log");
    // No controllers at all: the ServiceAccount and root-CA controllers (which
    // `without_controllers` keeps) act as the admin and keep their informers' watches open,
    // whose ResponseComplete comes only when they end; the cluster DNS's Service and
    // EndpointSlice watches likewise, and the functions' ingress its Route and Revision
    // watches. Every request in the log here is the test's own and has ended. No pod is
    // made here.
    let cluster = TestCluster::builder()
        .server_arg("--disable-controllers")
        .server_arg("--disable-scheduler")
        .server_arg("--disable-cluster-dns")
        .server_arg("--disable-function-ingress")
        .server_arg(format!("--audit-policy-file={}", policy.display()))
        .server_arg(format!("--audit-log-path={}", log.display()))
        .server_arg("--audit-log-maxsize=1")
        .server_arg("--audit-log-maxbackup=2")
        .start()
        .await?;

    // The admin: Secrets (Metadata), ConfigMaps (RequestResponse), a namespace (Request).
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "s1",
            &format!("--from-literal=password={SECRET_VALUE}"),
        ])
        .await?;
    cluster
        .kubectl_ok(&["get", "secret", "s1", "-o", "yaml"])
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "configmap",
            "c1",
            "--from-literal=k=configmap-value",
        ])
        .await?;
    cluster.kubectl_ok(&["get", "configmaps"]).await?;
    cluster
        .kubectl_ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
        ])
        .await?;
    cluster.kubectl_ok(&["delete", "configmap", "c1"]).await?;
    cluster
        .kubectl_ok(&["create", "namespace", "audited"])
        .await?;

    // A `view` user: reads ConfigMaps, is refused a create and Secrets.
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "viewers",
            "--clusterrole=view",
            "--group=viewers",
        ])
        .await?;
    cluster
        .kubectl_ok(&["get", "pods", "--as=viewer", "--as-group=viewers"])
        .await?;
    let viewer = kubeconfig_flag(&cluster.user_kubeconfig("viewer", Some("viewers")).await?);
    cluster.kubectl_ok(&[&viewer, "get", "configmaps"]).await?;
    let err = cluster
        .kubectl_fails(&[&viewer, "create", "configmap", "nope", "--from-literal=a=b"])
        .await?;
    assert!(err.contains("is forbidden"), "{err}");
    cluster.kubectl_fails(&[&viewer, "get", "secrets"]).await?;
    // A user the policy leaves out.
    let quiet = kubeconfig_flag(&cluster.user_kubeconfig("quiet", Some("viewers")).await?);
    cluster.kubectl_ok(&[&quiet, "get", "configmaps"]).await?;

    // A wrong token: one ResponseStarted event with the 401.
    let stranger = cluster.client_with_bearer_token("not-a-token").await?;
    let denied = crate::harness::raw::get(&stranger, "/api/v1/namespaces?stranger=1").await?;
    assert_eq!(denied.status, 401);

    // The Audit-Id header names the request's events; it is the last request of the test.
    let admin = cluster.client().await?;
    let response = admin
        .send(
            http::Request::get("/api/v1/namespaces/default/serviceaccounts")
                .body(kube::client::Body::empty())?,
        )
        .await?;
    let audit_id = response
        .headers()
        .get("audit-id")
        .context("no Audit-Id header")?
        .to_str()?
        .to_string();

    let events = poll_until(
        "the last request's events in the audit log",
        Duration::from_secs(30),
        || {
            let logs = logs.clone();
            let audit_id = audit_id.clone();
            async move {
                let events = read_events(&logs)?;
                Ok(events
                    .iter()
                    .any(|e| e["auditID"] == audit_id.as_str() && e["stage"] == "ResponseComplete")
                    .then_some(events))
            }
        },
    )
    .await?;

    // Every event is an audit.k8s.io/v1 Event; each request has each stage at most once,
    // all at one level, and the stages its rule keeps.
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in &events {
        assert_eq!(
            (e["kind"].as_str(), e["apiVersion"].as_str()),
            (Some("Event"), Some("audit.k8s.io/v1")),
            "{e}"
        );
        for field in [
            "auditID",
            "stage",
            "requestURI",
            "verb",
            "requestReceivedTimestamp",
            "stageTimestamp",
        ] {
            assert!(e[field].is_string(), "{field} missing: {e}");
        }
        let stamp = e["stageTimestamp"].as_str().unwrap_or("");
        assert!(
            stamp.len() == 27 && stamp.ends_with('Z'),
            "RFC 3339 with microseconds: {stamp}"
        );
        by_id
            .entry(e["auditID"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(e);
    }
    for (id, list) in &by_id {
        let stages: Vec<&str> = list
            .iter()
            .map(|e| e["stage"].as_str().unwrap_or(""))
            .collect();
        let unique: BTreeSet<&&str> = stages.iter().collect();
        assert_eq!(
            unique.len(),
            stages.len(),
            "{id}: a stage twice: {stages:?}"
        );
        let levels: BTreeSet<&str> = list
            .iter()
            .map(|e| e["level"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(levels.len(), 1, "{id}: {levels:?}");
        let first = list[0];
        let expected: &[&str] = if first["user"] == serde_json::json!({}) {
            &["ResponseStarted"]
        } else {
            let configmaps = first["objectRef"]["resource"] == "configmaps";
            match (first["verb"] == "watch", configmaps) {
                (true, true) => &["ResponseStarted", "ResponseComplete"],
                (true, false) => &["RequestReceived", "ResponseStarted", "ResponseComplete"],
                (false, true) => &["ResponseComplete"],
                (false, false) => &["RequestReceived", "ResponseComplete"],
            }
        };
        assert_eq!(stages, expected, "{id}: {list:#?}");
    }

    // None: the quiet user and the health checks are not in the log.
    assert!(
        events.iter().all(|e| user(e) != "quiet"),
        "the quiet user was logged"
    );
    assert!(
        events.iter().all(|e| !e["requestURI"]
            .as_str()
            .unwrap_or("")
            .starts_with("/readyz")),
        "/readyz was logged"
    );

    // Secrets: Metadata, the name from the body, never the data.
    let created = one_complete(&events, "create secret s1", |e| {
        is(e, "create", "secrets", "s1")
    })?;
    assert_eq!(created["level"], "Metadata");
    assert_eq!(user(created), "admin");
    assert_eq!(created["objectRef"]["namespace"], "default");
    assert_eq!(created["objectRef"]["apiVersion"], "v1");
    assert_eq!(created["responseStatus"]["code"], 201);
    assert_eq!(
        created["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert!(created.get("requestObject").is_none() && created.get("responseObject").is_none());
    assert!(
        created["userAgent"]
            .as_str()
            .unwrap_or("")
            .starts_with("kubectl"),
        "{created}"
    );
    assert!(
        created["sourceIPs"]
            .as_array()
            .is_some_and(|ips| ips.iter().any(|ip| ip == "127.0.0.1"))
    );
    let read = one_complete(&events, "get secret s1", |e| is(e, "get", "secrets", "s1"))?;
    assert_eq!(read["level"], "Metadata");
    assert!(read.get("responseObject").is_none());
    let encoded = base64_of(SECRET_VALUE);
    for path in log_files(&logs)? {
        let text = std::fs::read_to_string(&path)?;
        assert!(
            !text.contains(SECRET_VALUE) && !text.contains(&encoded),
            "a secret's value is in {}",
            path.display()
        );
    }

    // ConfigMaps: RequestResponse, both bodies.
    let created = one_complete(&events, "create configmap c1", |e| {
        is(e, "create", "configmaps", "c1")
    })?;
    assert_eq!(created["level"], "RequestResponse");
    assert_eq!(created["requestObject"]["data"]["k"], "configmap-value");
    assert_eq!(created["responseObject"]["data"]["k"], "configmap-value");
    assert!(created["responseObject"]["metadata"]["uid"].is_string());
    let listed = one_complete(&events, "admin's list of configmaps", |e| {
        is(e, "list", "configmaps", "") && user(e) == "admin"
    })?;
    assert!(listed["responseObject"]["kind"].is_string(), "{listed}");
    let watched = one_complete(&events, "the configmaps watch", |e| {
        is(e, "watch", "configmaps", "")
    })?;
    assert_eq!(watched["responseStatus"]["code"], 200);
    assert!(watched.get("responseObject").is_none());
    let deleted = one_complete(&events, "delete configmap c1", |e| {
        is(e, "delete", "configmaps", "c1")
    })?;
    assert_eq!(deleted["responseStatus"]["code"], 200);

    // Everything else: Request, the request body without the response's.
    let namespace = one_complete(&events, "create namespace audited", |e| {
        is(e, "create", "namespaces", "audited")
    })?;
    assert_eq!(namespace["level"], "Request");
    assert_eq!(namespace["requestObject"]["metadata"]["name"], "audited");
    assert!(namespace.get("responseObject").is_none());

    // Impersonation: the requester is the user, the impersonated one is recorded.
    let impersonated = one_complete(&events, "admin's list of pods as viewer", |e| {
        is(e, "list", "pods", "")
    })?;
    assert_eq!(user(impersonated), "admin");
    assert_eq!(impersonated["impersonatedUser"]["username"], "viewer");
    assert!(
        impersonated["impersonatedUser"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "viewers"))
    );

    // The view user: allowed with RBAC's reason, refused with the 403's Status.
    let allowed = one_complete(&events, "viewer's list of configmaps", |e| {
        is(e, "list", "configmaps", "") && user(e) == "viewer"
    })?;
    assert_eq!(
        allowed["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert!(
        allowed["annotations"]["authorization.k8s.io/reason"]
            .as_str()
            .unwrap_or("")
            .contains("ClusterRoleBinding \"viewers\""),
        "{allowed}"
    );
    let refused = one_complete(&events, "viewer's create of a configmap", |e| {
        e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps" && user(e) == "viewer"
    })?;
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(refused["responseStatus"]["status"], "Failure");
    assert_eq!(refused["responseStatus"]["reason"], "Forbidden");
    assert!(
        refused["responseStatus"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("User \"viewer\" cannot create resource \"configmaps\""),
        "{refused}"
    );
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    let secrets = one_complete(&events, "viewer's list of secrets", |e| {
        is(e, "list", "secrets", "") && user(e) == "viewer"
    })?;
    assert_eq!(
        (
            secrets["level"].as_str(),
            secrets["responseStatus"]["code"].as_u64()
        ),
        (Some("Metadata"), Some(403))
    );
    assert_eq!(
        secrets["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );

    // The failed authentication.
    let unauthenticated: Vec<&Value> = events
        .iter()
        .filter(|e| e["requestURI"] == "/api/v1/namespaces?stranger=1")
        .collect();
    assert_eq!(unauthenticated.len(), 1, "{unauthenticated:#?}");
    assert_eq!(unauthenticated[0]["stage"], "ResponseStarted");
    assert_eq!(unauthenticated[0]["responseStatus"]["code"], 401);
    assert_eq!(unauthenticated[0]["user"], serde_json::json!({}));

    // The Audit-Id header.
    let mine = of_id(&events, &audit_id);
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert_eq!(mine[1]["verb"], "list");
    assert_eq!(mine[1]["objectRef"]["resource"], "serviceaccounts");

    // Rotation: ConfigMaps of 300 KB are logged twice each (request and response), so
    // every create takes the 1 MB file past its size; two backups are kept.
    let blob = dir.path().join("blob");
    std::fs::write(&blob, "x".repeat(300 * 1024))?;
    for i in 0..6 {
        cluster
            .kubectl_ok(&[
                "create",
                "configmap",
                &format!("big-{i}"),
                &format!("--from-file=blob={}", blob.display()),
            ])
            .await?;
    }
    let files = poll_until(
        "the 6th large create in the audit log",
        Duration::from_secs(30),
        || {
            let logs = logs.clone();
            async move {
                let events = read_events(&logs)?;
                let done = events
                    .iter()
                    .any(|e| is(e, "create", "configmaps", "big-5"));
                done.then(|| log_files(&logs)).transpose()
            }
        },
    )
    .await?;
    let backups: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n != "audit.log")
        .collect();
    assert_eq!(backups.len(), 2, "--audit-log-maxbackup=2: {backups:?}");
    for name in &backups {
        // audit-2024-05-01T10-00-00.123.log
        assert!(
            name.starts_with("audit-20")
                && name.ends_with(".log")
                && name.len() == "audit-2024-05-01T10-00-00.123.log".len(),
            "{name}"
        );
    }
    for path in &files {
        let size = std::fs::metadata(path)?.len();
        assert!(
            size <= 1024 * 1024,
            "{} is {size} bytes, over --audit-log-maxsize=1",
            path.display()
        );
    }
    Ok(())
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn an_unusable_audit_policy_stops_the_server_with_the_path_and_the_reason() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Verbose\n",
    )?;
    let wildcard = dir.path().join("wildcard.yaml");
    std::fs::write(
        &wildcard,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n    \
         nonResourceURLs: [\"/api*/v1\"]\n",
    )?;
    let missing = dir.path().join("missing.yaml");
    for (policy, reason) in [
        (&invalid, "unknown variant `Verbose`"),
        (
            &wildcard,
            "rules[0].nonResourceURLs[0]: \"/api*/v1\": non-resource URL wildcards '*' must be the final character of the rule",
        ),
        (&missing, "cannot read the audit policy file"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args([
                "server",
                "--disable-agent",
                "--bind",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg(format!("--audit-policy-file={}", policy.display()))
            .arg(format!(
                "--audit-log-path={}",
                dir.path().join("audit.log").display()
            ))
            .kill_on_drop(true)
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(stderr.contains(&policy.display().to_string()), "{stderr}");
        assert_eq!(
            stderr.matches(reason).count(),
            1,
            "the reason once: {stderr}"
        );
    }
    Ok(())
}
