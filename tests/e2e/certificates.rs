//! certificates.k8s.io/v1 CertificateSigningRequests through the real kubectl: `kubectl
//! get csr`, `kubectl certificate approve|deny`, the signing of approved requests with the
//! cluster CA, and the admission checks of the group (no `system:masters` client
//! certificates, approving needs `approve` on the signer).

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::json;

use crate::harness::{TestCluster, poll_until};
use crate::rbac::kubeconfig_flag;

const DEADLINE: Duration = Duration::from_secs(60);

/// A key and a CSR object for a client certificate of `user` in `groups`.
fn client_csr(name: &str, user: &str, groups: &[&str]) -> Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    for group in groups {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *group);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    let pem = params.serialize_request(&key)?.pem()?;
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["client auth"],
            "expirationSeconds": 3600,
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
        },
    });
    Ok((key, csr.to_string()))
}

#[tokio::test]
async fn kubectl_approves_and_denies_csrs_and_approved_ones_are_signed() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let (key, carol) = client_csr("carol", "carol", &["team"])?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &carol)
        .await?;
    let (_, dave) = client_csr("dave", "dave", &[])?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &dave)
        .await?;
    let pending = cluster.kubectl_ok(&["get", "csr"]).await?;
    let carol_row = pending
        .lines()
        .find(|l| l.starts_with("carol "))
        .with_context(|| format!("no carol row:\n{pending}"))?;
    let cells: Vec<&str> = carol_row.split_whitespace().collect();
    assert_eq!(
        (cells[2], cells[3], cells[4], cells[5]),
        (
            "kubernetes.io/kube-apiserver-client",
            "admin",
            "60m",
            "Pending"
        ),
        "{pending}"
    );

    let approved = cluster
        .kubectl_ok(&["certificate", "approve", "carol"])
        .await?;
    assert!(approved.contains("approved"), "{approved}");
    let denied = cluster.kubectl_ok(&["certificate", "deny", "dave"]).await?;
    assert!(denied.contains("denied"), "{denied}");
    let issued = poll_until("carol's certificate", DEADLINE, || async {
        let csr = cluster.kubectl_json(&["get", "csr", "carol"]).await?;
        Ok(csr["status"]["certificate"].as_str().map(str::to_owned))
    })
    .await?;
    let rows = cluster.kubectl_ok(&["get", "csr", "--no-headers"]).await?;
    assert!(
        rows.lines()
            .any(|l| l.starts_with("carol ") && l.trim_end().ends_with("Approved,Issued")),
        "{rows}"
    );
    assert!(
        rows.lines()
            .any(|l| l.starts_with("dave ") && l.trim_end().ends_with("Denied")),
        "{rows}"
    );
    let dave = cluster.kubectl_json(&["get", "csr", "dave"]).await?;
    assert!(dave["status"]["certificate"].is_null(), "{dave}");

    // The certificate authenticates carol (who may do nothing yet).
    let cert = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(issued)?)?;
    let ca = std::fs::read_to_string(cluster.data_dir().join("pki").join("ca.crt"))?;
    let yaml = wasmkube_apiserver::pki::kubeconfig_yaml(
        &cluster.url(),
        &ca,
        "carol",
        &cert,
        &key.serialize_pem(),
    )?;
    let path = cluster.data_dir().join("kubeconfig-carol.yaml");
    std::fs::write(&path, yaml)?;
    let err = cluster
        .kubectl_fails(&[&kubeconfig_flag(&path), "get", "pods"])
        .await?;
    assert!(
        err.contains("User \"carol\" cannot list resource \"pods\""),
        "{err}"
    );

    // Decisions are final, and the requester recorded is the one who asked.
    let err = cluster
        .kubectl_fails(&["certificate", "approve", "dave"])
        .await?;
    assert!(err.contains("is already Denied"), "{err}");
    let mut both = cluster.kubectl_json(&["get", "csr", "dave"]).await?;
    if let Some(conditions) = both["status"]["conditions"].as_array_mut() {
        conditions.push(json!({"type": "Approved", "status": "True", "reason": "Anyway"}));
    }
    let admin = cluster.client().await?;
    let put = crate::harness::raw::send(
        &admin,
        http::Method::PUT,
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/dave/approval",
        Some("application/json"),
        serde_json::to_vec(&both)?,
    )
    .await?;
    assert_eq!(put.status, 422, "{}", put.body);
    assert!(
        put.body
            .contains("Approved and Denied conditions are mutually exclusive"),
        "{}",
        put.body
    );
    Ok(())
}

#[tokio::test]
async fn csr_admission_refuses_masters_certificates_and_unpermitted_approvers() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let (_, masters) = client_csr("root", "root", &["system:masters"])?;
    let err = cluster
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&masters))
        .await?
        .stderr;
    assert!(
        err.contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{err}"
    );

    // May update approvals, but not approve for this signer.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "csr-updater"},
        "rules": [{"apiGroups": ["certificates.k8s.io"],
                   "resources": ["certificatesigningrequests", "certificatesigningrequests/approval"],
                   "verbs": ["get", "list", "update"]}],
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &role.to_string())
        .await?;
    cluster
        .kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "erin-csr",
            "--clusterrole=csr-updater",
            "--user=erin",
        ])
        .await?;
    let (_, frank) = client_csr("frank", "frank", &[])?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &frank)
        .await?;
    let erin = kubeconfig_flag(&cluster.user_kubeconfig("erin", None).await?);
    let err = cluster
        .kubectl_fails(&[&erin, "certificate", "approve", "frank"])
        .await?;
    assert!(
        err.contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "{err}"
    );
    Ok(())
}
