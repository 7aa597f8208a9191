//! The control plane's components act as their own users, as Kubernetes': the scheduler as
//! `system:kube-scheduler`, the controller-manager as `system:kube-controller-manager`, and
//! each controller as its service account in `kube-system` (kube-controller-manager's
//! `--use-service-account-credentials`), each bound to its bootstrap ClusterRole. None of
//! them is system:masters: the scheduler cannot read Secrets nor create pods, the
//! ReplicaSet controller cannot read Secrets, the Job controller cannot delete Jobs. A
//! Deployment and a Job with a TTL still go the whole way, and the audit log shows who made
//! each step, with no request of any component refused.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::harness::{NodeSpec, TestCluster, poll_until, spawn_wasmkube};

/// How long the controllers and the scheduler may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// Every request, at Metadata level, once it is answered.
const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"#;

const SCHEDULER: &str = "system:kube-scheduler";
const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

/// The user of a controller's service account.
fn controller(account: &str) -> String {
    format!("system:serviceaccount:kube-system:{account}")
}

/// `kubectl auth can-i VERB RESOURCE [--subresource SUB] --as USER` (in `default`), for a
/// `resource` of `pods` or `pods/binding`: "yes" or "no".
async fn can_i(cluster: &TestCluster, user: &str, verb: &str, resource: &str) -> Result<String> {
    let mut args = vec!["auth", "can-i", verb];
    match resource.split_once('/') {
        Some((resource, sub)) => args.extend([resource, "--subresource", sub]),
        None => args.push(resource),
    }
    args.extend(["--as", user, "-n", "default"]);
    let out = cluster.kubectl(&args).await?;
    Ok(out.stdout.trim().to_string())
}

/// Every event of the audit log at `path`.
fn audit_events(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect()
}

fn user(e: &Value) -> &str {
    e["user"]["username"].as_str().unwrap_or("")
}

/// Whether `e` is `verb` of `resource` (`pods`, `pods/binding`) in namespace `default`.
fn is(e: &Value, verb: &str, resource: &str) -> bool {
    let object = &e["objectRef"];
    let full = match object["subresource"].as_str() {
        Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or("")),
        None => object["resource"].as_str().unwrap_or("").to_string(),
    };
    e["verb"] == verb && full == resource && object["namespace"] == "default"
}

/// The users that made a `verb` of `resource` in `default`, per the audit log.
fn who(events: &[Value], verb: &str, resource: &str) -> Vec<String> {
    let mut users: Vec<String> = events
        .iter()
        .filter(|e| is(e, verb, resource))
        .map(|e| user(e).to_string())
        .collect();
    users.sort();
    users.dedup();
    users
}

#[tokio::test]
async fn the_scheduler_and_each_controller_act_as_their_own_users_and_still_reconcile() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY)?;
    let log = dir.path().join("audit.log");
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("identities"))
        .server_arg(format!("--audit-policy-file={}", policy.display()))
        .server_arg(format!("--audit-log-path={}", log.display()))
        .start_with_samples("controller_identities")
        .await?
    else {
        return Ok(());
    };

    // What RBAC allows each of them, as `kubectl auth can-i` asks the API.
    for (user, verb, resource, expected) in [
        (SCHEDULER.to_string(), "get", "secrets", "no"),
        (SCHEDULER.to_string(), "create", "pods", "no"),
        (SCHEDULER.to_string(), "create", "pods/binding", "yes"),
        (CONTROLLER_MANAGER.to_string(), "create", "pods", "no"),
        (CONTROLLER_MANAGER.to_string(), "list", "secrets", "yes"),
        (controller("replicaset-controller"), "create", "pods", "yes"),
        (controller("replicaset-controller"), "get", "secrets", "no"),
        (controller("deployment-controller"), "create", "pods", "no"),
        (controller("job-controller"), "delete", "jobs.batch", "no"),
        (
            controller("ttl-after-finished-controller"),
            "delete",
            "jobs.batch",
            "yes",
        ),
    ] {
        assert_eq!(
            can_i(&cluster, &user, verb, resource).await?,
            expected,
            "kubectl auth can-i {verb} {resource} --as {user}"
        );
    }

    // The token cleaner's Role is kube-system's alone (Kubernetes' NamespaceRoles).
    for (namespace, expected) in [("kube-system", "yes"), ("default", "no")] {
        let out = cluster
            .kubectl(&[
                "auth",
                "can-i",
                "delete",
                "secrets",
                "--as",
                &controller("token-cleaner"),
                "-n",
                namespace,
            ])
            .await?;
        assert_eq!(
            out.stdout.trim(),
            expected,
            "token-cleaner may delete secrets in {namespace}"
        );
    }
    let binding = cluster
        .kubectl_json(&[
            "get",
            "rolebinding",
            "system:controller:token-cleaner",
            "-n",
            "kube-system",
            "-o",
            "json",
        ])
        .await?;
    assert_eq!(binding["roleRef"]["kind"], "Role", "{binding}");

    // The controllers' service accounts exist in kube-system, as kube-controller-manager
    // creates them.
    poll_until(
        "the controllers' service accounts in kube-system",
        DEADLINE,
        || async {
            let out = cluster
                .kubectl(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"])
                .await?;
            Ok([
                "replicaset-controller",
                "deployment-controller",
                "generic-garbage-collector",
                "ttl-after-finished-controller",
                "endpointslice-controller",
                "token-cleaner",
            ]
            .iter()
            .all(|a| {
                out.stdout
                    .lines()
                    .any(|l| l == format!("serviceaccount/{a}"))
            })
            .then_some(()))
        },
    )
    .await?;

    // The controllers and the scheduler still do their work.
    cluster
        .apply_json(&cluster.sample_workload("Deployment", "who", "counter", 1)?)
        .await?;
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {"ttlSecondsAfterFinished": 0, "template": {"spec": {}}},
    });
    let mut pod = cluster.sample_pod("hello")?;
    pod["spec"]["restartPolicy"] = json!("Never");
    job["spec"]["template"]["spec"] = pod["spec"].take();
    cluster.apply_json(&job).await?;
    poll_until(
        "a pod of the Deployment bound to the node",
        DEADLINE,
        || async {
            let pods = cluster
                .kubectl_json(&["get", "pods", "-l", "app=who", "-o", "json"])
                .await?;
            Ok(pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["spec"]["nodeName"] == "identities")
                .then_some(()))
        },
    )
    .await?;
    poll_until(
        "the Job deleted once it finished (TTL 0)",
        DEADLINE,
        || async {
            let out = cluster.kubectl(&["get", "job", "once"]).await?;
            Ok((!out.status.success() && out.stderr.contains("NotFound")).then_some(()))
        },
    )
    .await?;

    // Who made each step.
    let events = audit_events(&log)?;
    for (verb, resource, expected) in [
        ("create", "replicasets", controller("deployment-controller")),
        ("create", "pods", controller("replicaset-controller")),
        ("create", "pods/binding", SCHEDULER.to_string()),
        (
            "delete",
            "jobs",
            controller("ttl-after-finished-controller"),
        ),
    ] {
        let users = who(&events, verb, resource);
        assert!(
            users.contains(&expected),
            "{verb} {resource} was made by {users:?}, not {expected}"
        );
    }
    let pods_created_by = who(&events, "create", "pods");
    assert_eq!(
        pods_created_by,
        vec![
            controller("job-controller"),
            controller("replicaset-controller")
        ],
        "the pods' creators"
    );
    let leases: Vec<&str> = events
        .iter()
        .filter(|e| {
            ["create", "update", "patch"].contains(&e["verb"].as_str().unwrap_or(""))
                && e["objectRef"]["resource"] == "leases"
                && e["objectRef"]["name"] == "wasmkube-controller-manager"
        })
        .map(user)
        .collect();
    if leases.is_empty() || leases.iter().any(|u| *u != CONTROLLER_MANAGER) {
        bail!("the controller-manager's Lease was written by {leases:?}");
    }
    // No component was refused anything.
    let components = |u: &str| {
        u == SCHEDULER
            || u == CONTROLLER_MANAGER
            || u.starts_with("system:serviceaccount:kube-system:")
    };
    let refused: Vec<String> = events
        .iter()
        .filter(|e| components(user(e)) && e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {} {}", user(e), e["verb"], e["requestURI"]))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    Ok(())
}

/// `wasmkube controllers` on its own holds no CA: with `--use-service-account-credentials`
/// (the default) it asks the TokenRequest API for each controller's token, so a ReplicaSet's
/// pods and a Deployment's ReplicaSet are created by the controllers' service accounts, not
/// by the kubeconfig's user (the admin); with `=false` the admin makes them.
#[tokio::test]
async fn standalone_controllers_act_as_their_service_accounts_with_requested_tokens() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY)?;
    let log = dir.path().join("audit.log");
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg(format!("--audit-policy-file={}", policy.display()))
        .server_arg(format!("--audit-log-path={}", log.display()))
        .start()
        .await?;
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let mut controllers = spawn_wasmkube(
        &[
            "controllers".into(),
            "--kubeconfig".into(),
            kubeconfig.clone(),
        ],
        &cluster.data_dir().join("controllers.log"),
    )?;

    // No node runs the pods: Pending pods are all the ReplicaSet needs.
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "standalone"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "standalone"}},
            "template": {
                "metadata": {"labels": {"app": "standalone"}},
                "spec": {"containers": [{"name": "c", "image": "example.com/c:1"}]},
            },
        },
    });
    cluster.apply_json(&deployment).await?;
    let pods_created =
        || -> Result<Vec<String>> { Ok(who(&audit_events(&log)?, "create", "pods")) };
    poll_until("the Deployment's pods created", DEADLINE, || async {
        Ok((!pods_created()?.is_empty()).then_some(()))
    })
    .await?;
    controllers.kill().await?;
    let events = audit_events(&log)?;
    assert_eq!(
        who(&events, "create", "replicasets"),
        vec![controller("deployment-controller")],
        "the ReplicaSet's creator"
    );
    assert_eq!(
        who(&events, "create", "pods"),
        vec![controller("replicaset-controller")],
        "the pods' creator"
    );
    let tokens: Vec<String> = events
        .iter()
        .filter(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "serviceaccounts"
                && e["objectRef"]["subresource"] == "token"
                && e["objectRef"]["namespace"] == "kube-system"
                && e["responseStatus"]["code"] == 201
        })
        .map(|e| e["objectRef"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    for account in [
        "replicaset-controller",
        "deployment-controller",
        "node-controller",
    ] {
        assert!(
            tokens.iter().any(|t| t == account),
            "no token was requested for {account}: {tokens:?}"
        );
    }

    // Acting as the kubeconfig's user instead.
    let mut controllers = spawn_wasmkube(
        &[
            "controllers".into(),
            "--kubeconfig".into(),
            kubeconfig,
            "--use-service-account-credentials=false".into(),
        ],
        &cluster.data_dir().join("controllers-as-user.log"),
    )?;
    cluster
        .kubectl_ok(&["scale", "deployment", "standalone", "--replicas=3"])
        .await?;
    poll_until("the third pod created", DEADLINE, || async {
        Ok((pods_created()?.len() == 2).then_some(()))
    })
    .await?;
    controllers.kill().await?;
    assert_eq!(
        pods_created()?,
        vec!["admin".to_string(), controller("replicaset-controller")],
        "with --use-service-account-credentials=false the kubeconfig's user (admin) creates pods"
    );
    Ok(())
}
