//! Secrets at rest (review finding 9): the store file holds no secret value, keys rotate as
//! kube-apiserver's `--encryption-provider-config` does, and a bad configuration stops the
//! server with a message that says what to fix.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;

use crate::harness::TestCluster;

/// Whether the file at `path` contains `needle` anywhere (what `strings | grep` would find).
fn file_contains(path: &Path, needle: &str) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn config(keys: &[(&str, u8)]) -> String {
    let mut text = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [secrets]\n    providers:\n",
    );
    for (name, byte) in keys {
        let secret = base64::engine::general_purpose::STANDARD.encode([*byte; 32]);
        text.push_str(&format!(
            "      - secretbox:\n          keys:\n            - name: {name}\n              \
             secret: {secret}\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_new_cluster_keeps_no_secret_value_in_its_store_file() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let value = "s3cr3t-value-of-the-e2e-test";
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "db",
            &format!("--from-literal=password={value}"),
        ])
        .await?;
    // A ConfigMap is not encrypted by default: it shows the search below finds what is there.
    let visible = "plain-configmap-value-of-the-e2e-test";
    cluster
        .kubectl_ok(&[
            "create",
            "configmap",
            "cfg",
            &format!("--from-literal=k={visible}"),
        ])
        .await?;
    let read = cluster
        .kubectl_ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"])
        .await?;
    assert_eq!(read.trim(), b64(value), "kubectl reads the secret in clear");

    let store = cluster.data_dir().join("store.redb");
    assert!(
        file_contains(&store, visible)?,
        "the ConfigMap's value is in the store file (the search works)"
    );
    assert!(
        !file_contains(&store, value)?,
        "the secret value is in the store file"
    );
    assert!(
        !file_contains(&store, &b64(value))?,
        "the secret value's base64 is in the store file"
    );
    assert!(file_contains(&store, "k8s:enc:secretbox:v1:key1:")?);
    let config = cluster.data_dir().join("encryption-config.yaml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", config.display());
    Ok(())
}

#[tokio::test]
async fn a_new_first_key_re_encrypts_secrets_as_they_are_rewritten() -> Result<()> {
    let keys = tempfile::tempdir()?;
    let path = keys.path().join("encryption.yaml");
    std::fs::write(&path, config(&[("key1", 1)]))?;
    let mut cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--encryption-provider-config")
        .server_arg(path.display().to_string())
        .start()
        .await?;
    cluster
        .kubectl_ok(&["create", "secret", "generic", "a", "--from-literal=k=v1"])
        .await?;
    let store = cluster.data_dir().join("store.redb");
    ensure!(file_contains(&store, "k8s:enc:secretbox:v1:key1:")?);

    // Rotation: the new key first, the old one still there to read with.
    cluster.terminate().await?;
    std::fs::write(&path, config(&[("key2", 2), ("key1", 1)]))?;
    cluster.restart().await?;
    let read = cluster
        .kubectl_ok(&["get", "secret", "a", "-o", "jsonpath={.data.k}"])
        .await?;
    assert_eq!(read.trim(), b64("v1"));
    // Kubernetes' recipe; `--validate=false` because kubectl validates a List against
    // /openapi/v2, which wasmkube does not serve yet.
    let all = cluster
        .kubectl_ok(&["get", "secrets", "-A", "-o", "json"])
        .await?;
    cluster
        .kubectl_ok_stdin(&["replace", "--validate=false", "-f", "-"], &all)
        .await?;
    assert!(file_contains(&store, "k8s:enc:secretbox:v1:key2:")?);

    // Every Secret rewritten: the old key can go.
    cluster.terminate().await?;
    std::fs::write(&path, config(&[("key2", 2)]))?;
    cluster.restart().await?;
    let read = cluster
        .kubectl_ok(&["get", "secret", "a", "-o", "jsonpath={.data.k}"])
        .await?;
    assert_eq!(read.trim(), b64("v1"));
    Ok(())
}

#[tokio::test]
async fn an_unusable_encryption_config_stops_the_server_with_what_to_fix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("encryption.yaml");
    std::fs::write(
        &path,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [secrets]\n    providers: [{kms: {name: vault}}]\n",
    )?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args([
            "server",
            "--disable-agent",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--encryption-provider-config")
        .arg(&path)
        .kill_on_drop(true)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let reason = "kms providers are not supported; use aescbc, aesgcm or secretbox";
    assert_eq!(
        stderr.matches(reason).count(),
        1,
        "the reason once: {stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    Ok(())
}
