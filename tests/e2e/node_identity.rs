//! Per-node identity: nodes join with bootstrap tokens (`wasmkube server token
//! create|list|delete`), get their own client certificate (`system:node:<name>`) through a
//! CertificateSigningRequest the server approves and signs, keep it across restarts and
//! renew it before it expires.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http::Method;
use serde_json::json;

use crate::harness::{NodeSpec, TestCluster, poll_until, raw};

/// How long joins, renewals and token clean-ups may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// The bootstrap token (`<id>.<secret>`) inside a join token (`K10<hash>::<id>.<secret>`).
fn bootstrap_part(join_token: &str) -> Result<&str> {
    match join_token.split_once("::") {
        Some((_, token)) => Ok(token),
        None => bail!("unexpected join token {join_token}"),
    }
}

/// The subject and serial of the certificate in an agent's client certificate file.
fn client_certificate(agent_data_dir: &Path) -> Result<(String, String)> {
    let path = agent_data_dir
        .join("agent")
        .join("pki")
        .join("kubelet-client-current.pem");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((cert.subject().to_string(), cert.raw_serial_as_string()))
}

/// Review finding 2: the join token was a bearer token of the group `system:nodes`, shared
/// by every agent and never expiring, that read (and wrote) the Secrets in kube-system.
/// Now it is a bootstrap token: it may ask for a node certificate and nothing else.
#[tokio::test]
async fn the_join_token_reads_no_secrets_and_may_only_ask_for_a_node_certificate() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "cluster-key",
            "-n",
            "kube-system",
            "--from-literal=key=hunter2",
        ])
        .await?;
    let join = cluster.join_token().await?;
    let token = bootstrap_part(&join)?;
    let joiner = cluster.client_with_bearer_token(token).await?;
    for path in [
        "/api/v1/namespaces/kube-system/secrets",
        "/api/v1/namespaces/kube-system/secrets/cluster-key",
        "/api/v1/secrets",
    ] {
        let read = raw::get(&joiner, path).await?;
        assert_eq!(read.status, 403, "GET {path}: {}", read.body);
        assert!(!read.body.contains("hunter2"), "{}", read.body);
    }
    let post = |path: &'static str, body: serde_json::Value| {
        let joiner = joiner.clone();
        async move {
            raw::send(
                &joiner,
                Method::POST,
                path,
                Some("application/json"),
                serde_json::to_vec(&body)?,
            )
            .await
        }
    };
    let secret = post(
        "/api/v1/namespaces/kube-system/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stolen"}}),
    )
    .await?;
    assert_eq!(secret.status, 403, "{}", secret.body);
    let id = token.split('.').next().unwrap_or_default();
    assert_eq!(
        secret.json()?["message"],
        format!(
            "secrets is forbidden: User \"system:bootstrap:{id}\" cannot create resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
        )
    );
    let node = post(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "impostor"}}),
    )
    .await?;
    assert_eq!(node.status, 403, "{}", node.body);
    let binding = post(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "escalate"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:bootstrappers"}]}),
    )
    .await?;
    assert_eq!(binding.status, 403, "{}", binding.body);

    // What it may do: ask for a node client certificate, which the server approves.
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:joined");
    let request = params.serialize_request(&key)?.pem()?;
    use base64::Engine;
    let csr = post(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
               "metadata": {"name": "node-csr-joined"},
               "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                        "usages": ["digital signature", "client auth"],
                        "username": "admin", "groups": ["system:masters"],
                        "request": base64::engine::general_purpose::STANDARD.encode(request)}}),
    )
    .await?;
    assert_eq!(csr.status, 201, "{}", csr.body);
    let created = csr.json()?;
    assert_eq!(
        created["spec"]["username"],
        format!("system:bootstrap:{id}")
    );
    assert_eq!(
        created["spec"]["groups"],
        json!(["system:bootstrappers", "system:authenticated"])
    );
    poll_until(
        "the node CSR to be approved and issued",
        DEADLINE,
        || async {
            let out = cluster
                .kubectl_ok(&["get", "csr", "node-csr-joined", "--no-headers"])
                .await?;
            Ok(out.contains("Approved,Issued").then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// `wasmkube server token create|list|delete`; an agent joins with its own certificate;
/// a deleted token lets no new agent join; expired tokens are cleaned up.
#[tokio::test]
async fn bootstrap_tokens_are_managed_like_kubeadms_and_a_deleted_one_joins_no_node() -> Result<()>
{
    let cluster = TestCluster::builder().agents(1).start().await?;
    let node = cluster.agent_node_name(0)?;
    let (subject, _) = client_certificate(&cluster.node_data_dirs()[0])?;
    assert_eq!(subject, format!("O=system:nodes, CN=system:node:{node}"));
    let csrs = cluster.kubectl_ok(&["get", "csr"]).await?;
    let header = csrs.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "AGE",
        "SIGNERNAME",
        "REQUESTOR",
        "REQUESTEDDURATION",
        "CONDITION",
    ] {
        assert!(header.contains(column), "{csrs}");
    }
    assert!(
        csrs.lines().any(|l| l.starts_with("node-csr-")
            && l.contains("kubernetes.io/kube-apiserver-client-kubelet")
            && l.contains("system:bootstrap:")
            && l.contains("Approved,Issued")),
        "{csrs}"
    );

    let join = cluster
        .token_cli(&[
            "create",
            "--ttl",
            "1h",
            "--description",
            "for the late node",
        ])
        .await?;
    let token = bootstrap_part(join.trim())?.to_owned();
    let id = token.split('.').next().unwrap_or_default().to_owned();
    let list = cluster.token_cli(&["list"]).await?;
    assert!(list.starts_with("TOKEN "), "{list}");
    let line = list
        .lines()
        .find(|l| l.starts_with(&token))
        .with_context(|| format!("token {token} not listed:\n{list}"))?;
    assert!(line.contains("authentication,signing"), "{line}");
    assert!(line.contains("for the late node"), "{line}");
    let deleted = cluster.token_cli(&["delete", &id]).await?;
    assert_eq!(deleted.trim(), format!("bootstrap token \"{id}\" deleted"));
    assert!(!cluster.token_cli(&["list"]).await?.contains(&token));

    // A new agent with the deleted token cannot join.
    let data = tempfile::Builder::new()
        .prefix("wasmkube-e2e-late-")
        .tempdir()?;
    let agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args([
            "agent",
            "--server",
            &cluster.url(),
            "--token",
            join.trim(),
            "--node-name",
            "late",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--agent-port", &crate::harness::free_port()?.to_string()])
        .env_remove("WASMKUBE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(DEADLINE, agent.wait_with_output())
        .await
        .context("the agent with a deleted token kept running")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("401"),
        "{stderr}"
    );
    assert!(
        cluster
            .kubectl(&["get", "node", "late"])
            .await?
            .stderr
            .contains("NotFound"),
        "a node joined with a deleted token"
    );

    // The token cleaner deletes tokens whose expiration passed.
    let short = cluster.token_cli(&["create", "--ttl", "1s"]).await?;
    let short = bootstrap_part(short.trim())?.to_owned();
    poll_until("the expired token to be deleted", DEADLINE, || async {
        Ok((!cluster.token_cli(&["list"]).await?.contains(&short)).then_some(()))
    })
    .await?;
    Ok(())
}

/// An agent keeps its certificate across restarts (no token needed) and renews it before
/// it expires; the server signs certificates for `--cluster-signing-duration`.
#[tokio::test]
async fn an_agent_keeps_its_certificate_across_restarts_and_renews_it() -> Result<()> {
    let mut cluster = TestCluster::builder()
        .server_arg("--cluster-signing-duration")
        .server_arg("40s")
        .agent(NodeSpec::named("rotating"))
        .start()
        .await?;
    let data = cluster.node_data_dirs()[0].clone();
    let (_, first) = client_certificate(&data)?;
    // Renewed with the node's own identity, as selfnodeclient.
    let renewed = poll_until("the node to renew its certificate", DEADLINE, || async {
        let (_, serial) = client_certificate(&data)?;
        Ok((serial != first).then_some(serial))
    })
    .await?;
    let csrs = cluster.kubectl_ok(&["get", "csr", "--no-headers"]).await?;
    assert!(
        csrs.lines().any(|l| l.starts_with("csr-")
            && l.contains("kubernetes.io/kube-apiserver-client-kubelet")
            && l.contains("system:node:rotating")
            && l.contains("Approved,Issued")),
        "{csrs}"
    );
    // Every bootstrap token is gone: a restart uses the stored certificate.
    let list = cluster.token_cli(&["list"]).await?;
    for line in list.lines().skip(1) {
        if let Some(token) = line.split_whitespace().next() {
            cluster.token_cli(&["delete", token]).await?;
        }
    }
    cluster.kill9_agent(0).await?;
    cluster.restart_agent(0).await?;
    poll_until("the restarted node to be Ready", DEADLINE, || async {
        let node = cluster.kubectl_json(&["get", "node", "rotating"]).await?;
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(()))
    })
    .await?;
    let csrs = cluster.kubectl_ok(&["get", "csr", "--no-headers"]).await?;
    let joins = csrs.lines().filter(|l| l.starts_with("node-csr-")).count();
    assert_eq!(joins, 1, "the restarted agent joined again:\n{csrs}");
    let (_, now) = client_certificate(&data)?;
    assert_ne!(
        now, first,
        "the restarted agent went back to its first certificate"
    );
    let _ = renewed;
    Ok(())
}
