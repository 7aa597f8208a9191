//! ServiceAccount tokens through the real kubectl: `kubectl create token` (the TokenRequest
//! API), the token as a bearer credential (`kubectl auth whoami` shows the account, RBAC
//! decides what it may do), and the ways a token stops working: its account or bound pod
//! deleted (or replaced by one of the same name), or its expiry passed (401).

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use wasmkube_apiserver::serviceaccount::{
    ObjectRef, ServiceAccountConfig, ServiceAccounts, TokenSpec,
};

use crate::harness::TestCluster;
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
