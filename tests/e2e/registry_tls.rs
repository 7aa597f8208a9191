//! A registry that is not on this machine is reached over HTTPS, verified against the web PKI
//! plus `--registry-ca-file`; plain HTTP only when it is named `--insecure-registry`. The
//! registry (Debian's `docker-registry` with a certificate of a CA made here) serves on a lab
//! host's address (`10.77.0.1`, inside network namespaces the harness made, no route out),
//! and `wasmkube image push/pull` run in another lab host.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, ensure};

use super::registry::{digest_of, sample};
use crate::harness::{LabHost, NetnsLab, lab_tests_opted_out, poll_until, which};

const REGISTRY_PORT: u16 = 5443;

/// A CA, and a serving certificate of it for `ip`: (CA PEM, server cert PEM, server key PEM).
fn certificates(ip: &str) -> Result<(String, String, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmkube test registry CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![ip.to_owned()])?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// `wasmkube image ARGS --data-dir DIR` inside `host`; its output whatever its status.
async fn image_in(host: &LabHost, dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    let mut all: Vec<&str> = vec!["image"];
    all.extend_from_slice(args);
    let data_dir = dir.display().to_string();
    all.extend_from_slice(&["--data-dir", &data_dir]);
    host.run(env!("CARGO_BIN_EXE_wasmkube"), &all).await
}

async fn image_ok_in(host: &LabHost, dir: &Path, args: &[&str]) -> Result<String> {
    let out = image_in(host, dir, args).await?;
    ensure!(
        out.status.success(),
        "wasmkube image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn image_fails_in(host: &LabHost, dir: &Path, args: &[&str]) -> Result<String> {
    let out = image_in(host, dir, args).await?;
    ensure!(
        !out.status.success(),
        "wasmkube image {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stderr)?)
}

#[tokio::test]
async fn a_remote_registry_is_https_verified_with_the_extra_ca_and_plain_http_only_when_named_insecure()
-> Result<()> {
    if lab_tests_opted_out("registry_tls") {
        return Ok(());
    }
    ensure!(
        which("docker-registry").is_some(),
        "`docker-registry` is not installed: `apt-get install docker-registry` (tests/run \
         installs it)"
    );
    let lab = NetnsLab::new(2).await?;
    let (server, client) = (lab.host(0)?, lab.host(1)?);
    let ip = server.ip().to_string();
    let addr = format!("{ip}:{REGISTRY_PORT}");

    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = certificates(&ip)?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca)?;
    std::fs::write(dir.path().join("server.pem"), &cert)?;
    std::fs::write(dir.path().join("server.key"), &key)?;
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: {addr}\n  secret: wasmkube-tests\n  tls:\n    certificate: {cert}\n    key: {key}\n",
            data = dir.path().join("data").display(),
            cert = dir.path().join("server.pem").display(),
            key = dir.path().join("server.key").display(),
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("registry.log"))?;
    let _registry = server
        .command("docker-registry", ["serve".as_ref(), config.as_os_str()])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting docker-registry in the lab")?;
    let probe = addr.clone();
    poll_until(
        "the lab registry to listen",
        std::time::Duration::from_secs(30),
        || {
            let probe = probe.clone();
            async move {
                let connected = client
                    .run_blocking(move || std::net::TcpStream::connect(&probe).is_ok())
                    .await?;
                Ok(connected.then_some(()))
            }
        },
    )
    .await
    .with_context(|| {
        std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
    })?;

    let builder = dir.path().join("builder");
    let name = format!("{addr}/tls/hello:v1");
    let wasm = sample("hello.wasm")?.display().to_string();
    let ca_arg = ca_file.display().to_string();
    let built = image_ok_in(client, &builder, &["build", &wasm, "-t", &name]).await?;
    let digest = digest_of(&built)?;

    // Not local, so HTTPS; its CA is not in the web PKI.
    let untrusted = image_fails_in(client, &builder, &["push", &name]).await?;
    ensure!(
        untrusted.to_lowercase().contains("certificate"),
        "a push without the CA fails on the certificate: {untrusted}"
    );
    let pushed = image_ok_in(
        client,
        &builder,
        &["push", &name, "--registry-ca-file", &ca_arg],
    )
    .await?;
    ensure!(digest_of(&pushed)? == digest, "push printed {pushed}");

    let puller = dir.path().join("puller");
    let refused = image_fails_in(client, &puller, &["pull", &name]).await?;
    ensure!(
        refused.to_lowercase().contains("certificate"),
        "a pull without the CA fails on the certificate: {refused}"
    );
    // Plain HTTP only when asked for, and an HTTPS server does not answer it.
    let plain = image_fails_in(
        client,
        &puller,
        &["pull", &name, "--insecure-registry", &addr],
    )
    .await?;
    ensure!(
        plain.contains(&name) || plain.contains(&addr),
        "a plain-HTTP pull of an HTTPS registry fails naming it: {plain}"
    );
    let pulled = image_ok_in(
        client,
        &puller,
        &["pull", &name, "--registry-ca-file", &ca_arg],
    )
    .await?;
    ensure!(digest_of(&pulled)? == digest, "pull printed {pulled}");
    let listed = image_ok_in(client, &puller, &["list"]).await?;
    ensure!(
        listed.lines().any(|l| l.starts_with(&format!("{name}\t"))),
        "{name} in {listed}"
    );
    Ok(())
}
