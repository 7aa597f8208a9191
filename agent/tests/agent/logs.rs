//! `/containerLogs` on the agent's HTTPS server, as the apiserver's pods/log proxy uses it.

use std::time::Duration;

use serde_json::json;

use crate::guests;
use crate::harness::{Cluster, phase};
use crate::https::{Auth, get};

/// A client certificate of the cluster CA in `pki` for `user` in `group`.
fn user_certificate(pki: &std::path::Path, user: &str, group: &str) -> (String, String) {
    let ca_cert = std::fs::read_to_string(pki.join("ca.crt")).expect("ca.crt");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).expect("ca.key"))
            .expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, group);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_are_served_to_cluster_clients_with_kubelet_options() {
    let cluster = Cluster::start().await;
    guests::import(&cluster.data_dir(), "wasmkube.test/hello:v1", guests::HELLO);
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/counter:v1",
        guests::COUNTER,
    );
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hello"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "hello", "image": "wasmkube.test/hello:v1", "args": ["one", "two"]}],
            },
        }))
        .await;
    cluster
        .wait_pod("hello", Duration::from_secs(60), |p| {
            phase(p) == "Succeeded"
        })
        .await;
    let addr = cluster.log_addr();
    let cert = cluster
        .agent
        .as_ref()
        .expect("agent")
        .running
        .serving_certificate
        .get()
        .expect("a serving certificate")
        .cert_pem;
    let pki = cluster.data_dir().join("pki");

    let (status, body) = get(
        addr,
        &cert,
        Auth::AdminCert(&pki),
        "/containerLogs/default/hello/hello",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("hello from wasm\nhello\none\ntwo\n"),
        "{body}"
    );

    let (_, tail) = get(
        addr,
        &cert,
        Auth::AdminCert(&pki),
        "/containerLogs/default/hello/hello?tailLines=1&timestamps=true",
    )
    .await;
    let line = tail.trim_end();
    assert_eq!(line.lines().count(), 1, "{tail}");
    let (ts, _) = line.split_once(' ').expect("timestamp prefix");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");

    let (status, _) = get(
        addr,
        &cert,
        Auth::None,
        "/containerLogs/default/hello/hello",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = get(
        addr,
        &cert,
        Auth::Token("wrong"),
        "/containerLogs/default/hello/hello",
    )
    .await;
    assert_eq!(status, 401);
    // A certificate of the cluster CA is not enough: its user must be allowed the node's
    // proxy subresource (review finding 7).
    let (user_cert, user_key) = user_certificate(&pki, "someone", "system:nodes");
    let (status, body) = get(
        addr,
        &cert,
        Auth::Cert(&user_cert, &user_key),
        "/containerLogs/default/hello/hello",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body.trim_end(),
        "Forbidden (user=someone, verb=get, resource=nodes, subresource=proxy)"
    );
    let (status, body) = get(
        addr,
        &cert,
        Auth::AdminCert(&pki),
        "/containerLogs/default/hello/hello?previous=true",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("previous terminated container \"hello\" in pod \"hello\" not found"),
        "{body}"
    );
    let (status, _) = get(
        addr,
        &cert,
        Auth::AdminCert(&pki),
        "/containerLogs/default/nope/hello",
    )
    .await;
    assert_eq!(status, 404);

    // Following a running container streams until the byte limit is reached.
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "counter"},
            "spec": {"containers": [{"name": "counter", "image": "wasmkube.test/counter:v1"}]},
        }))
        .await;
    cluster
        .wait_pod("counter", Duration::from_secs(60), |p| {
            phase(p) == "Running"
        })
        .await;
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        get(
            addr,
            &cert,
            Auth::AdminCert(&pki),
            "/containerLogs/default/counter/counter?follow=true&limitBytes=50",
        ),
    )
    .await
    .expect("follow ends at limitBytes");
    assert_eq!(status, 200);
    assert_eq!(body.len(), 50, "{body:?}");
    assert!(body.starts_with("tick\ntick\n"), "{body:?}");
}
