//! ServiceAccount tokens through the real kubectl: `kubectl create token` (the TokenRequest
//! API), the token as a bearer credential (`kubectl auth whoami` shows the account, RBAC
//! decides what it may do), and the ways a token stops working: its account or bound pod
//! deleted (or replaced by one of the same name), or its expiry passed (401). Then the same
//! from inside a wasm pod: the ServiceAccount admission mounts a token the node requests and
//! writes, and the `api-client` sample calls the apiserver with it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use wasmkube_apiserver::serviceaccount::{
    ObjectRef, ServiceAccountConfig, ServiceAccounts, TokenSpec,
};

use crate::harness::{NodeSpec, TestCluster, poll_until};
use crate::rbac::kubeconfig_flag;

/// kubectl's answer to a request whose credentials the server refuses.
const UNAUTHORIZED: &str = "error: You must be logged in to the server (Unauthorized)";

/// The claims of a JWT, decoded without verification.
fn claims(token: &str) -> Result<Value> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `kubectl create token ARGS...`, the token printed.
async fn create_token(cluster: &TestCluster, args: &[&str]) -> Result<String> {
    let mut all = vec!["create", "token"];
    all.extend_from_slice(args);
    Ok(cluster.kubectl_ok(&all).await?.trim().to_string())
}

/// The username `kubectl auth whoami` reports with the kubeconfig `flag`.
async fn whoami(cluster: &TestCluster, flag: &str) -> Result<Value> {
    let review = cluster
        .kubectl_json(&[flag, "auth", "whoami", "-o", "json"])
        .await?;
    Ok(review["status"]["userInfo"].clone())
}

#[tokio::test]
async fn a_created_token_acts_as_its_service_account_until_the_account_is_deleted() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster.kubectl_ok(&["create", "namespace", "team"]).await?;
    cluster
        .kubectl_ok(&["create", "serviceaccount", "robot", "-n", "team"])
        .await?;
    let sa = cluster
        .kubectl_json(&["get", "serviceaccount", "robot", "-n", "team", "-o", "json"])
        .await?;

    let token = create_token(&cluster, &["robot", "-n", "team", "--duration=10m"]).await?;
    let c = claims(&token)?;
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(c["sub"], "system:serviceaccount:team:robot");
    assert_eq!(
        c["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(
        c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
        Some(600)
    );
    assert_eq!(
        c["kubernetes.io"],
        json!({"namespace": "team",
               "serviceaccount": {"name": "robot", "uid": sa["metadata"]["uid"]}})
    );

    let robot = kubeconfig_flag(&cluster.token_kubeconfig("robot", &token)?);
    let robot = robot.as_str();
    let user = whoami(&cluster, robot).await?;
    assert_eq!(user["username"], "system:serviceaccount:team:robot");
    assert_eq!(
        user["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ])
    );

    // RBAC decides: nothing until a binding, then what `view` gives in its namespace.
    let err = cluster
        .kubectl_fails(&[robot, "get", "pods", "-n", "team"])
        .await?;
    assert!(
        err.contains(
            "pods is forbidden: User \"system:serviceaccount:team:robot\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\""
        ),
        "{err}"
    );
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "robot-view",
            "--clusterrole=view",
            "--serviceaccount=team:robot",
            "-n",
            "team",
        ])
        .await?;
    let out = cluster
        .kubectl(&[robot, "get", "pods", "-n", "team"])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("No resources found in team namespace"),
        "{}",
        out.stderr
    );
    cluster
        .kubectl_fails(&[robot, "get", "pods", "-n", "default"])
        .await?;

    // A token meant for another audience is the account's all the same, but not for the API.
    let vault = create_token(&cluster, &["robot", "-n", "team", "--audience=vault"]).await?;
    assert_eq!(claims(&vault)?["aud"], json!(["vault"]));
    let vault = kubeconfig_flag(&cluster.token_kubeconfig("vault", &vault)?);
    let err = cluster
        .kubectl_fails(&[&vault, "get", "pods", "-n", "team"])
        .await?;
    assert!(err.contains(UNAUTHORIZED), "{err}");

    // Deleting the account revokes the token, and an account of the same name is another.
    cluster
        .kubectl_ok(&["delete", "serviceaccount", "robot", "-n", "team"])
        .await?;
    let err = cluster
        .kubectl_fails(&[robot, "get", "pods", "-n", "team"])
        .await?;
    assert!(err.contains(UNAUTHORIZED), "{err}");
    cluster
        .kubectl_ok(&["create", "serviceaccount", "robot", "-n", "team"])
        .await?;
    let err = cluster
        .kubectl_fails(&[robot, "get", "pods", "-n", "team"])
        .await?;
    assert!(err.contains(UNAUTHORIZED), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_pod_bound_token_dies_with_its_pod_and_an_expired_token_gets_401() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok(&["create", "serviceaccount", "robot"])
        .await?;
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            r#"{"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web"},
                "spec": {"serviceAccountName": "robot",
                         "containers": [{"name": "app", "image": "wasmkube.local/samples/hello:v1"}]}}"#,
        )
        .await?;
    let pod = cluster
        .kubectl_json(&["get", "pod", "web", "-o", "json"])
        .await?;
    let token = create_token(
        &cluster,
        &[
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
        ],
    )
    .await?;
    let c = claims(&token)?;
    assert_eq!(
        c["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": pod["metadata"]["uid"]})
    );
    assert_eq!(
        c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
        Some(3600)
    );
    let flag = kubeconfig_flag(&cluster.token_kubeconfig("web", &token)?);
    assert_eq!(
        whoami(&cluster, &flag).await?["username"],
        "system:serviceaccount:default:robot"
    );
    cluster
        .kubectl_ok(&["delete", "pod", "web", "--wait=true"])
        .await?;
    let err = cluster.kubectl_fails(&[&flag, "auth", "whoami"]).await?;
    assert!(err.contains(UNAUTHORIZED), "{err}");

    // The TokenRequest API's refusals, in Kubernetes' words.
    let err = cluster
        .kubectl_fails(&["create", "token", "robot", "--duration=5m"])
        .await?;
    assert!(
        err.contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = cluster.kubectl_fails(&["create", "token", "ghost"]).await?;
    assert!(err.contains("serviceaccounts \"ghost\" not found"), "{err}");
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other"},
                "spec": {"containers": [{"name": "app", "image": "wasmkube.local/samples/hello:v1"}]}}"#,
        )
        .await?;
    let err = cluster
        .kubectl_fails(&[
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=other",
        ])
        .await?;
    assert!(
        err.contains("cannot bind token for serviceaccount \"robot\" to pod running with different serviceaccount name."),
        "{err}"
    );

    // A token signed with the cluster's own key: valid while in its lifetime, 401 after.
    let sa = cluster
        .kubectl_json(&["get", "serviceaccount", "robot", "-o", "json"])
        .await?;
    let uid = sa["metadata"]["uid"].as_str().context("no uid")?;
    let accounts = ServiceAccounts::load(&ServiceAccountConfig::default(), cluster.data_dir())
        .context("loading the cluster's service-account key")?;
    let spec = TokenSpec {
        issuer: accounts.issuer(),
        audiences: accounts.api_audiences().to_vec(),
        namespace: "default",
        service_account: ObjectRef::new("robot", uid),
        pod: None,
        secret: None,
        node: None,
        expiration_seconds: 600,
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let fresh = accounts.issue(&spec, now)?;
    let flag = kubeconfig_flag(&cluster.token_kubeconfig("fresh", &fresh)?);
    assert_eq!(
        whoami(&cluster, &flag).await?["username"],
        "system:serviceaccount:default:robot"
    );
    // Issued 20 minutes ago for 10: expired 10 minutes ago, past the one-minute leeway.
    let expired = accounts.issue(&spec, now - 1200)?;
    let flag = kubeconfig_flag(&cluster.token_kubeconfig("expired", &expired)?);
    let out = cluster.kubectl(&[&flag, "auth", "whoami"]).await?;
    if out.status.success() {
        bail!("an expired token was accepted: {}", out.stdout);
    }
    assert!(out.stderr.contains(UNAUTHORIZED), "{}", out.stderr);
    Ok(())
}

/// How long a pod may take to start (compiling a new component on a loaded machine).
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Waits until `kubectl logs POD` shows a line containing `wanted`; the logs.
async fn wait_logs(cluster: &TestCluster, pod: &str, wanted: &str) -> Result<String> {
    poll_until(
        &format!("kubectl logs {pod} to show {wanted:?}"),
        START_DEADLINE,
        || async {
            let out = cluster.kubectl(&["logs", pod]).await?;
            if out.stdout.contains(wanted) {
                return Ok(Some(out.stdout));
            }
            let describe = cluster.kubectl(&["describe", "pod", pod]).await?;
            bail!("logs:\n{}{}\n{}", out.stdout, out.stderr, describe.stdout)
        },
    )
    .await
}

/// The pod's token directory on the node (`<data-dir>/agent/pods/<uid>/volumes/<volume>`).
fn token_dir(cluster: &TestCluster, uid: &str, volume: &str) -> PathBuf {
    cluster
        .data_dir()
        .join("agent/pods")
        .join(uid)
        .join("volumes")
        .join(volume)
}

#[tokio::test]
async fn a_wasm_pod_lists_pods_with_its_own_token_once_a_role_allows_it() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("embedded"))
        .start_with_samples("a_wasm_pod_lists_pods_with_its_own_token_once_a_role_allows_it")
        .await?
    else {
        return Ok(());
    };
    // A pod whose account does not exist is refused, in Kubernetes' words.
    let mut ghost = cluster.sample_pod("api-client")?;
    ghost["metadata"]["name"] = json!("ghost");
    ghost["spec"]["serviceAccountName"] = json!("ghost");
    let out = cluster
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&ghost.to_string()))
        .await?;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "pods \"ghost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"
        ),
        "{}",
        out.stderr
    );

    cluster.apply_sample("api-client").await?;
    let pod = cluster
        .kubectl_json(&["get", "pod", "api-client", "-o", "json"])
        .await?;
    let volume = pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| {
            v.iter().find(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            })
        })
        .context("the admission added no kube-api-access volume")?
        .clone();
    let volume_name = volume["name"].as_str().context("a name")?.to_string();
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0],
        json!({"name": volume_name, "readOnly": true,
               "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );

    // Its account may not list pods yet: the guest's own request is refused.
    let logs = wait_logs(&cluster, "api-client", "-> 403").await?;
    assert!(
        logs.contains("system:serviceaccount:default:api-client")
            && logs.contains("cannot list resource"),
        "{logs}"
    );
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "api-client-view",
            "--clusterrole=view",
            "--serviceaccount=default:api-client",
        ])
        .await?;
    let logs = wait_logs(&cluster, "api-client", "-> 200").await?;
    assert!(logs.contains("\"kind\":\"PodList\""), "{logs}");
    assert!(logs.contains("\"name\":\"api-client\""), "{logs}");

    // The files the node wrote: private directory, the volume's mode, the pod's token.
    let uid = pod["metadata"]["uid"].as_str().context("uid")?;
    let dir = token_dir(&cluster, uid, &volume_name);
    let mode = |p: &std::path::Path| -> Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    assert_eq!(mode(&dir)?, 0o700);
    assert_eq!(mode(&dir.join("token"))?, 0o644, "defaultMode 420");
    assert_eq!(std::fs::read_to_string(dir.join("namespace"))?, "default");
    assert!(std::fs::read_to_string(dir.join("ca.crt"))?.contains("BEGIN CERTIFICATE"));
    let token = std::fs::read_to_string(dir.join("token"))?;
    let c = claims(&token)?;
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], json!(uid));
    assert_eq!(c["kubernetes.io"]["node"]["name"], "embedded");
    assert_eq!(
        c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
        Some(3607)
    );

    // The pod's token works from outside too, until the pod is deleted.
    let flag = kubeconfig_flag(&cluster.token_kubeconfig("from-pod", &token)?);
    assert_eq!(
        whoami(&cluster, &flag).await?["username"],
        "system:serviceaccount:default:api-client"
    );
    cluster
        .kubectl_ok(&[
            "delete",
            "pod",
            "api-client",
            "--grace-period=1",
            "--wait=true",
        ])
        .await?;
    let err = cluster.kubectl_fails(&[&flag, "auth", "whoami"]).await?;
    assert!(err.contains(UNAUTHORIZED), "{err}");

    // automountServiceAccountToken: false on the account: no token volume.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "quiet"},
                "automountServiceAccountToken": false}"#,
        )
        .await?;
    let mut quiet = cluster.sample_pod("api-client")?;
    quiet["metadata"]["name"] = json!("quiet");
    quiet["spec"]["serviceAccountName"] = json!("quiet");
    cluster.apply_json(&quiet).await?;
    let pod = cluster
        .kubectl_json(&["get", "pod", "quiet", "-o", "json"])
        .await?;
    assert!(
        pod["spec"].get("volumes").is_none_or(|v| v == &json!([])),
        "{pod}"
    );
    let logs = wait_logs(&cluster, "quiet", "no token at").await?;
    assert!(
        logs.contains("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "{logs}"
    );
    Ok(())
}
