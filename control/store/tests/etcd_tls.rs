//! The etcd backend over client TLS (`--datastore-cafile`, `--datastore-certfile`,
//! `--datastore-keyfile`): an etcd that requires client certificates serves the store; a
//! wrong CA fails to open with a message that names the CA file.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use wasmkube_store::{EtcdConfig, EtcdStore, EtcdTls, Store, StoreError};

use support::etcd::Etcd;

/// A CA: its PEM certificate and what signs with it.
fn ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, cert.pem()).unwrap();
    (path, Issuer::new(params, key))
}

/// A leaf certificate and key signed by `issuer`, written as `name.crt` and `name.key`.
fn leaf(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'static, KeyPair>,
    usage: ExtendedKeyUsagePurpose,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn config(etcd: &Etcd, ca: &Path, cert: &Path, key: &Path) -> EtcdConfig {
    let mut config = EtcdConfig::new(vec![etcd.endpoint()]);
    config.compaction_interval = Duration::ZERO;
    config.request_timeout = Duration::from_secs(3);
    config.tls = EtcdTls {
        ca_file: Some(ca.to_owned()),
        cert_file: Some(cert.to_owned()),
        key_file: Some(key.to_owned()),
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_reaches_an_etcd_that_requires_it_and_a_wrong_ca_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, issuer) = ca(dir.path(), "ca");
    let (wrong_ca, _) = ca(dir.path(), "other-ca");
    let (server_cert, server_key) = leaf(
        dir.path(),
        "server",
        &issuer,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        dir.path(),
        "client",
        &issuer,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let etcd = tokio::task::spawn_blocking({
        let ca_file = ca_file.clone();
        move || Etcd::start_tls(server_cert, server_key, ca_file)
    })
    .await
    .unwrap();

    // The right CA and a client certificate: the store works (once etcd has its leader).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let store = loop {
        match EtcdStore::open(config(&etcd, &ca_file, &client_cert, &client_key)).await {
            Ok(store) => break store,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("etcd not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store never opened over TLS: {e}"),
        }
    };
    let kv = store
        .create("/tls/a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap(), Some(kv));

    // A CA that did not sign etcd's certificate: a clear error naming the file.
    let err = EtcdStore::open(config(&etcd, &wrong_ca, &client_cert, &client_key))
        .await
        .err()
        .expect("a wrong CA must not connect");
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::Unavailable(_))
            && message.contains(&wrong_ca.display().to_string()),
        "{message}"
    );
    // A CA file that is not PEM: refused before any connection, naming it.
    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = EtcdStore::open(config(&etcd, &not_pem, &client_cert, &client_key))
        .await
        .err()
        .expect("a CA file without PEM is refused");
    assert!(
        err.to_string().contains(&not_pem.display().to_string()),
        "{err}"
    );
}
