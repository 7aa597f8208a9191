//! The apiserver and the node agents trust each other only as far as the cluster says
//! (review finding 7): the apiserver sends a request to a node's agent only once that agent
//! presented a serving certificate the cluster issued to that node for the address in the
//! Node's status, and the agent answers only users RBAC allows to use the node's proxy
//! subresources.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{NodeSpec, TestCluster, WasmImage, poll_until};

/// How long nodes may take to get their serving certificate, and pods to finish.
const DEADLINE: Duration = Duration::from_secs(90);

/// The line the test guest prints.
const GREETING: &str = "served through a verified agent";

/// A WASI module printing [`GREETING`].
fn greeter() -> Result<WasmImage> {
    WasmImage::from_wat(
        "wasmkube.test/greeter:v1",
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 16) "served through a verified agent\n")
             (func (export "_start")
               (i32.store (i32.const 0) (i32.const 16))
               (i32.store (i32.const 4) (i32.const 32))
               (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
}

/// The cluster CA of `cluster` as an issuer, and its certificate (PEM).
fn cluster_ca(cluster: &TestCluster) -> Result<(rcgen::Issuer<'static, rcgen::KeyPair>, String)> {
    let pki = cluster.data_dir().join("pki");
    let cert = std::fs::read_to_string(pki.join("ca.crt"))?;
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key"))?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&cert, key)?;
    Ok((issuer, cert))
}

/// A client certificate of the cluster CA for `user` (in `group`), PEM certificate and key.
fn client_cert(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    user: &str,
    group: Option<&str>,
) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    if let Some(group) = group {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, group);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// GETs `path` from the agent at 127.0.0.1:`port` (verified against the cluster CA),
/// presenting `cert` if given; returns the status code and the body.
async fn agent_get(
    ca_pem: &str,
    port: u16,
    cert: Option<&(String, String)>,
    path: &str,
) -> Result<(u16, String)> {
    agent_get_as(ca_pem, port, cert, None, path).await
}

/// [`agent_get`], with `Authorization: Bearer <bearer>` when given.
async fn agent_get_as(
    ca_pem: &str,
    port: u16,
    cert: Option<&(String, String)>,
    bearer: Option<&str>,
    path: &str,
) -> Result<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match cert {
        Some((cert, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?,
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let authorization = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    // The agent may close without a TLS close_notify; what arrived is the answer.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A serving certificate of the cluster CA for `cn` in `system:nodes`, for 127.0.0.1.
fn serving_cert(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(IpAddr::from([127, 0, 0, 1]))];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// An HTTPS listener on 127.0.0.1 presenting `cert`, counting the requests that reach it.
async fn decoy(cert: (String, String)) -> Result<(u16, Arc<AtomicUsize>)> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.0.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nstolen\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Ok((port, requests))
}

/// Creates Node `name` whose status says its agent is at 127.0.0.1:`port` (`None`: no
/// addresses at all), and a pod bound to it.
async fn node_pointing_at(cluster: &TestCluster, name: &str, port: Option<u16>) -> Result<()> {
    cluster
        .kubectl_ok_stdin(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}).to_string(),
        )
        .await?;
    let addresses = match port {
        Some(_) => json!([{"type": "InternalIP", "address": "127.0.0.1"}]),
        None => json!([]),
    };
    let status = json!({"status": {
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port.unwrap_or(10250)}},
    }});
    cluster
        .kubectl_ok(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])
        .await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("on-{name}")},
        "spec": {"nodeName": name, "containers": [{"name": "c", "image": "wasmkube.test/none:v1"}]}});
    cluster
        .kubectl_ok_stdin(&["create", "-f", "-"], &pod.to_string())
        .await?;
    Ok(())
}

/// Review finding 7: the apiserver followed the address in any Node's status with its
/// client certificate and without checking who answered, so a Node pointing at the
/// apiserver itself (or any other server) made it fetch from there (SSRF). Now nothing that
/// is not the node's own agent is sent a request.
#[tokio::test]
async fn a_node_pointing_at_another_server_is_refused_and_never_fetched_from() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let (issuer, _) = cluster_ca(&cluster)?;
    // A server with a certificate of the cluster CA, but of another node.
    let (port, requests) = decoy(serving_cert(&issuer, "system:node:impostor")?).await?;
    node_pointing_at(&cluster, "victim", Some(port)).await?;
    let out = cluster.kubectl(&["logs", "on-victim"]).await?;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(!out.stdout.contains("stolen"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "Error from server (ServiceUnavailable): refusing to proxy to node \"victim\" at 127.0.0.1:{port}: its serving certificate is issued to \"system:node:impostor\", not to node \"victim\""
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "the decoy was sent a request"
    );

    // The apiserver's own port: its certificate is the cluster CA's too.
    node_pointing_at(&cluster, "loop", Some(cluster.port())).await?;
    let out = cluster.kubectl(&["logs", "on-loop"]).await?;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "refusing to proxy to node \"loop\" at 127.0.0.1:{}: its serving certificate is issued to",
        cluster.port())),
        "{}",
        out.stderr
    );

    // No address: no default to fall back on.
    node_pointing_at(&cluster, "nowhere", None).await?;
    let out = cluster.kubectl(&["logs", "on-nowhere"]).await?;
    assert!(
        out.stderr
            .contains("node nowhere has no address in status.addresses to reach its agent at"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// The serving certificate an agent at 127.0.0.1:`port` presents, verified against the
/// cluster CA for 127.0.0.1: its subject and serial.
async fn presented_certificate(ca_pem: &str, port: u16) -> Result<(String, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| anyhow!("{e}"))?;
    Ok((cert.subject().to_string(), cert.raw_serial_as_string()))
}

/// The agent port of node `name` (its Node's `kubeletEndpoint`).
async fn agent_port(cluster: &TestCluster, name: &str) -> Result<u16> {
    let node = cluster.kubectl_json(&["get", "node", name]).await?;
    node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("node {name} has no agent port"))
}

/// Waits until node `name`'s agent presents a certificate the cluster issued to it; returns
/// its serial.
async fn wait_serving_certificate(
    cluster: &TestCluster,
    ca_pem: &str,
    name: &str,
) -> Result<String> {
    let port = agent_port(cluster, name).await?;
    let (subject, serial) = poll_until(
        &format!("node {name} to serve a certificate of the cluster"),
        DEADLINE,
        || async { Ok(presented_certificate(ca_pem, port).await.ok()) },
    )
    .await?;
    assert_eq!(subject, format!("O=system:nodes, CN=system:node:{name}"));
    Ok(serial)
}

/// Runs the greeter on node `node` as pod `pod` and reads its output with `kubectl logs`.
async fn greet_on(cluster: &TestCluster, node: &str, pod: &str) -> Result<()> {
    let manifest = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "greeter", "image": "wasmkube.test/greeter:v1"}]}});
    cluster
        .kubectl_ok_stdin(&["create", "-f", "-"], &manifest.to_string())
        .await?;
    cluster
        .wait_pod(pod, "phase Succeeded", DEADLINE, |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;
    let logs = cluster.kubectl_ok(&["logs", pod]).await?;
    if logs.trim_end() != GREETING {
        bail!("kubectl logs {pod}: {logs:?}");
    }
    Ok(())
}

/// Agents ask the cluster for a serving certificate of their node (signer
/// kubernetes.io/kubelet-serving), which the server approves for the node's own names and
/// addresses; `kubectl logs` reaches them through the apiserver, which verifies it.
#[tokio::test]
async fn agents_serve_certificates_issued_to_their_node_and_kubectl_logs_works() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .embedded_agent(NodeSpec::named("control"))
        .agent(NodeSpec::named("joined"))
        .start()
        .await?;
    let image = greeter()?;
    cluster.import_image(image.path()).await?;
    let (_, ca_pem) = cluster_ca(&cluster)?;
    for node in ["control", "joined"] {
        wait_serving_certificate(&cluster, &ca_pem, node).await?;
        greet_on(&cluster, node, &format!("greet-{node}")).await?;
    }
    let csrs = cluster.kubectl_ok(&["get", "csr", "--no-headers"]).await?;
    for node in ["control", "joined"] {
        assert!(
            csrs.lines()
                .any(|l| l.contains("kubernetes.io/kubelet-serving")
                    && l.contains(&format!("system:node:{node} "))
                    && l.contains("Approved,Issued")),
            "no approved serving CSR of {node}:\n{csrs}"
        );
    }
    Ok(())
}

/// The serving certificate is renewed before it expires and the running agent serves the
/// new one at once (no restart); the apiserver keeps reaching it.
#[tokio::test]
async fn the_serving_certificate_is_renewed_and_served_without_a_restart() -> Result<()> {
    let mut cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--cluster-signing-duration")
        .server_arg("40s")
        .agent(NodeSpec::named("renewing"))
        .start()
        .await?;
    let image = greeter()?;
    cluster.import_image(image.path()).await?;
    let (_, ca_pem) = cluster_ca(&cluster)?;
    let first = wait_serving_certificate(&cluster, &ca_pem, "renewing").await?;
    greet_on(&cluster, "renewing", "before").await?;
    let port = agent_port(&cluster, "renewing").await?;
    poll_until(
        "the agent to serve a renewed certificate",
        DEADLINE,
        || async {
            let (_, serial) = presented_certificate(&ca_pem, port).await?;
            Ok((serial != first).then_some(()))
        },
    )
    .await?;
    assert!(cluster.agent_is_running(0)?, "the agent restarted");
    let logs = cluster.kubectl_ok(&["logs", "before"]).await?;
    assert_eq!(logs.trim_end(), GREETING);
    Ok(())
}

/// Review finding 7: the agent answered any client certificate of the cluster CA. Now it
/// asks the apiserver (SubjectAccessReview, `nodes/proxy` of its node) about the user, so
/// only the apiserver and users RBAC lets use the node's API get in; the apiserver's own
/// client identity is no administrator of the cluster.
#[tokio::test]
async fn the_agent_answers_only_users_allowed_to_use_its_node() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .embedded_agent(NodeSpec::named("guarded"))
        .start()
        .await?;
    let (issuer, ca_pem) = cluster_ca(&cluster)?;
    wait_serving_certificate(&cluster, &ca_pem, "guarded").await?;
    let port = agent_port(&cluster, "guarded").await?;
    let path = "/containerLogs/default/absent/c";
    // Past authorization, the agent says the pod is not there.
    let admitted = "pod \"absent\" in namespace \"default\" not found on this node";

    let (status, body) = agent_get(&ca_pem, port, None, path).await?;
    assert_eq!((status, body.trim_end()), (401, "Unauthorized"));

    cluster
        .kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "viewer",
            "--clusterrole=view",
            "--user=viewer",
        ])
        .await?;
    for (user, group) in [
        ("viewer", None),
        ("system:node:other", Some("system:nodes")),
        ("nobody", None),
    ] {
        let cert = client_cert(&issuer, user, group)?;
        let (status, body) = agent_get(&ca_pem, port, Some(&cert), path).await?;
        assert_eq!(status, 403, "{user}: {body}");
        assert_eq!(
            body.trim_end(),
            format!("Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)")
        );
        let (status, _) = agent_get(&ca_pem, port, Some(&cert), "/healthz").await?;
        assert_eq!(status, 403, "{user} on /healthz");
    }

    // The apiserver's identity, an administrator, and a user RBAC gives the node API.
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "ops-kubelet",
            "--clusterrole=system:kubelet-api-admin",
            "--user=ops",
        ])
        .await?;
    for (user, group) in [
        ("kube-apiserver-kubelet-client", None),
        ("admin", Some("system:masters")),
        ("ops", None),
    ] {
        let cert = client_cert(&issuer, user, group)?;
        let (status, body) = agent_get(&ca_pem, port, Some(&cert), path).await?;
        assert_eq!((status, body.trim_end()), (404, admitted), "{user}");
    }

    // The apiserver's kubelet client identity may use the nodes' API, nothing else.
    let kubelet_client = crate::rbac::kubeconfig_flag(
        &cluster
            .user_kubeconfig("kube-apiserver-kubelet-client", None)
            .await?,
    );
    let err = cluster
        .kubectl_fails(&[kubelet_client.as_str(), "get", "secrets", "-A"])
        .await?;
    assert!(
        err.contains("User \"kube-apiserver-kubelet-client\" cannot list resource \"secrets\""),
        "{err}"
    );
    let can = cluster
        .kubectl(&[
            kubelet_client.as_str(),
            "auth",
            "can-i",
            "get",
            "nodes/proxy",
        ])
        .await?;
    assert_eq!(can.stdout.trim(), "yes", "{}", can.stderr);
    Ok(())
}

/// The agent takes bearer tokens as the kubelet does with `--authentication-token-webhook`:
/// the apiserver reviews them (TokenReview) and authorizes their user (SubjectAccessReview),
/// so a ServiceAccount bound to `nodes/proxy` gets in, one that is not gets 403 and an
/// unknown token 401. And the apiserver's `nodes/{name}/proxy/{path}` reaches the agent for
/// whom RBAC allows it.
#[tokio::test]
async fn bearer_tokens_reach_the_agent_and_nodes_proxy_reaches_it_through_the_apiserver()
-> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .embedded_agent(NodeSpec::named("proxied"))
        .start()
        .await?;
    let (_, ca_pem) = cluster_ca(&cluster)?;
    wait_serving_certificate(&cluster, &ca_pem, "proxied").await?;
    let port = agent_port(&cluster, "proxied").await?;
    for args in [
        &["create", "serviceaccount", "reader"][..],
        &["create", "serviceaccount", "nobody"],
        &[
            "create",
            "clusterrole",
            "node-proxy",
            "--verb=get",
            "--resource=nodes/proxy",
        ],
        &[
            "create",
            "clusterrolebinding",
            "reader-node-proxy",
            "--clusterrole=node-proxy",
            "--serviceaccount=default:reader",
        ],
    ] {
        cluster.kubectl_ok(args).await?;
    }
    let reader = cluster.kubectl_ok(&["create", "token", "reader"]).await?;
    let nobody = cluster.kubectl_ok(&["create", "token", "nobody"]).await?;
    let (reader, nobody) = (reader.trim(), nobody.trim());

    // TokenReview, as the agent (or any delegating webhook) asks it. (`create --raw`:
    // kubectl validates a kind without a PATCH operation against /openapi/v2, which is not
    // served.)
    let reviews = [
        "create",
        "--raw",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "-f",
        "-",
    ];
    let review = |token: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": token}})
        .to_string()
    };
    let answer: serde_json::Value =
        serde_json::from_str(&cluster.kubectl_ok_stdin(&reviews, &review(reader)).await?)?;
    let status = &answer["status"];
    assert_eq!(status["authenticated"], json!(true), "{answer}");
    assert_eq!(
        status["user"]["username"],
        json!("system:serviceaccount:default:reader")
    );
    let groups = status["user"]["groups"].to_string();
    for group in ["system:serviceaccounts", "system:serviceaccounts:default"] {
        assert!(groups.contains(&format!("\"{group}\"")), "{groups}");
    }
    let answer: serde_json::Value = serde_json::from_str(
        &cluster
            .kubectl_ok_stdin(&reviews, &review("not-a-token"))
            .await?,
    )?;
    assert_eq!(answer["status"]["authenticated"], json!(false), "{answer}");
    let refused = cluster
        .kubectl_with_stdin(&reviews, Some(&review("")))
        .await?;
    assert!(!refused.status.success(), "an empty token was reviewed");
    assert!(
        refused
            .stderr
            .contains("token is required for TokenReview in authentication"),
        "{}",
        refused.stderr
    );

    // Straight to the agent with a bearer token.
    let path = "/containerLogs/default/absent/c";
    let admitted = "pod \"absent\" in namespace \"default\" not found on this node";
    let (status, body) = agent_get_as(&ca_pem, port, None, Some(reader), "/healthz").await?;
    assert_eq!((status, body.trim_end()), (200, "ok"));
    let (status, body) = agent_get_as(&ca_pem, port, None, Some(reader), path).await?;
    assert_eq!((status, body.trim_end()), (404, admitted));
    let (status, body) = agent_get_as(&ca_pem, port, None, Some(nobody), path).await?;
    assert_eq!(
        (status, body.trim_end()),
        (
            403,
            "Forbidden (user=system:serviceaccount:default:nobody, verb=get, resource=nodes, subresource=proxy)"
        )
    );
    let (status, body) = agent_get_as(&ca_pem, port, None, Some("not-a-token"), path).await?;
    assert_eq!((status, body.trim_end()), (401, "Unauthorized"));

    // Through the apiserver: nodes/proxy for whom RBAC allows it.
    let healthz = "/api/v1/nodes/proxied/proxy/healthz";
    let ok = cluster.kubectl_ok(&["get", "--raw", healthz]).await?;
    assert_eq!(ok.trim_end(), "ok");
    let as_reader = cluster
        .kubectl_ok(&[
            "get",
            "--raw",
            healthz,
            "--as=system:serviceaccount:default:reader",
        ])
        .await?;
    assert_eq!(as_reader.trim_end(), "ok");
    let forbidden = cluster
        .kubectl_fails(&[
            "get",
            "--raw",
            healthz,
            "--as=system:serviceaccount:default:nobody",
        ])
        .await?;
    assert!(
        forbidden.contains(
            "nodes \"proxied\" is forbidden: User \"system:serviceaccount:default:nobody\" cannot get resource \"nodes/proxy\""
        ),
        "{forbidden}"
    );
    // The path and query reach the agent as sent: its own 400 for a bad tailLines.
    let bad = cluster
        .kubectl_fails(&[
            "get",
            "--raw",
            "/api/v1/nodes/proxied/proxy/containerLogs/default/absent/c?tailLines=x",
        ])
        .await?;
    assert!(
        bad.contains("BadRequest") || bad.contains("tailLines"),
        "{bad}"
    );
    let missing = cluster
        .kubectl_fails(&["get", "--raw", "/api/v1/nodes/ghost/proxy/healthz"])
        .await?;
    assert!(
        missing.contains("NotFound") || missing.contains("not found"),
        "{missing}"
    );
    Ok(())
}
