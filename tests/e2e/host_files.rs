//! No pod reads a host file it was not given (review findings 3, 4 and 9).
//!
//! - hostPath volumes are mounted only under the node's `--allowed-host-path` directories,
//!   never the data directory: a pod that mounted `<data-dir>/pki` printed the CA key, and
//!   one that mounted the compiled-code cache could write native code the agent loads.
//! - A subPath is resolved beneath its volume: an init container's `esc -> ../../../../..`
//!   symlink in an emptyDir led a `subPath: esc/pki` mount to the data directory.
//! - The data directory and its secrets are private to the server's user: the directory
//!   0700, the store, keys and tokens 0600, secret volumes in 0700 directories with their
//!   files at the mode the pod asked for.
//!
//! The pods run the `files` sample, which prints every file under `/config` and writes
//! `/data/runs.log`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::harness::{NodeSpec, TestCluster, WasmImage, container_status};

/// How long a pod may take to reach the state a test waits for.
const DEADLINE: Duration = Duration::from_secs(120);

/// The `files` sample's image.
const FILES: &str = "wasmkube.local/samples/files:v1";

/// Makes the symlink `esc -> ../../../../..` in its first preopen (the emptyDir), then exits
/// with WASI's errno of `path_symlink` (0 when it worked).
const LINKER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "../../../../..")
  (data (i32.const 32) "esc")
  (func (export "_start")
    (call $exit (call $symlink (i32.const 0) (i32.const 14) (i32.const 3) (i32.const 32) (i32.const 3)))))
"#;

/// A pod running the `files` sample with `volumes` mounted as `mounts`.
fn files_pod(name: &str, volumes: Value, mounts: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "files",
                "image": FILES,
                "volumeMounts": mounts,
                "resources": {"limits": {"memory": "64Mi"}},
            }],
            "volumes": volumes,
        },
    })
}

fn host_path(name: &str, path: &Path) -> Value {
    json!({"name": name, "hostPath": {"path": path.display().to_string()}})
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Waits until the pod's first container waits with `CreateContainerConfigError`; returns
/// the message.
async fn config_error(cluster: &TestCluster, name: &str) -> Result<String> {
    let pod = cluster
        .wait_pod(name, "CreateContainerConfigError", DEADLINE, |p| {
            waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
        })
        .await?;
    container_status(&pod)
        .and_then(|s| s.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .context("the waiting state has no message")
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    container_status(pod)
        .and_then(|s| s.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.reason)
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

#[tokio::test]
async fn a_host_path_pod_can_neither_read_the_ca_key_nor_write_the_compile_cache() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("server-node"))
        .start_with_samples(
            "a_host_path_pod_can_neither_read_the_ca_key_nor_write_the_compile_cache",
        )
        .await?
    else {
        return Ok(());
    };
    let data = cluster.data_dir().to_path_buf();
    let cache = data.join("agent/wasm-cache");
    let pod = files_pod(
        "steal",
        json!([
            host_path("keys", &data.join("pki")),
            host_path("cache", &cache)
        ]),
        json!([
            {"name": "keys", "mountPath": "/config"},
            {"name": "cache", "mountPath": "/data"},
        ]),
    );
    cluster.apply_json(&pod).await?;
    let message = config_error(&cluster, "steal").await?;
    assert!(message.contains("is not allowed"), "{message}");
    assert!(
        message.contains("--allowed-host-path"),
        "the message names the flag that allows hostPath volumes: {message}"
    );
    let describe = cluster.kubectl_ok(&["describe", "pod", "steal"]).await?;
    assert!(
        describe.contains("CreateContainerConfigError"),
        "{describe}"
    );
    cluster
        .wait_event_where("steal", "FailedMount", DEADLINE, |e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("not allowed"))
        })
        .await?;
    let pod = cluster.pod("steal").await?;
    assert_eq!(phase(&pod), "Pending");
    assert!(
        !cache.join("runs.log").exists(),
        "nothing was written into the compiled-code cache"
    );
    Ok(())
}

#[tokio::test]
async fn allowed_host_paths_mount_read_write_or_read_only_and_a_symlink_out_is_judged_by_its_target()
-> Result<()> {
    let shared = tempfile::Builder::new()
        .prefix("wasmkube-e2e-hostpath-")
        .tempdir()?;
    let shared_dir = std::fs::canonicalize(shared.path())?;
    let input = shared_dir.join("in");
    let output = shared_dir.join("out");
    let read_only = shared_dir.join("ro");
    for dir in [&input, &output, &read_only] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(input.join("hello.txt"), "hello from the host\n")?;
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(
            NodeSpec::named("server-node")
                .allowed_host_path(&shared_dir.display().to_string())
                .allowed_host_path(&format!("{}:ro", read_only.display())),
        )
        .start_with_samples("allowed_host_paths_mount_read_write_or_read_only")
        .await?
    else {
        return Ok(());
    };

    // Read-write under an allowed directory: the guest reads the host's file and writes one.
    cluster
        .apply_json(&files_pod(
            "reader",
            json!([host_path("in", &input), host_path("out", &output)]),
            json!([
                {"name": "in", "mountPath": "/config", "readOnly": true},
                {"name": "out", "mountPath": "/data"},
            ]),
        ))
        .await?;
    cluster
        .wait_pod("reader", "phase Succeeded", DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    let logs = cluster.kubectl_ok(&["logs", "reader"]).await?;
    assert!(logs.contains("hello from the host"), "{logs}");
    assert_eq!(
        std::fs::read_to_string(output.join("runs.log"))?,
        "run\n",
        "the guest wrote to the host directory"
    );

    // Under a `:ro` entry the mount is read-only whatever the pod asks.
    cluster
        .apply_json(&files_pod(
            "writer",
            json!([host_path("ro", &read_only)]),
            json!([{"name": "ro", "mountPath": "/data"}]),
        ))
        .await?;
    cluster
        .wait_pod("writer", "phase Failed", DEADLINE, |p| phase(p) == "Failed")
        .await?;
    let logs = cluster.kubectl_ok(&["logs", "writer"]).await?;
    assert!(logs.contains("cannot write /data/runs.log"), "{logs}");
    assert!(!read_only.join("runs.log").exists());

    // A symlink under the allowed directory that leads to the data directory is judged by
    // where it leads.
    let keys = shared_dir.join("keys");
    std::os::unix::fs::symlink(cluster.data_dir().join("pki"), &keys)?;
    cluster
        .apply_json(&files_pod(
            "sneaky",
            json!([host_path("keys", &keys)]),
            json!([{"name": "keys", "mountPath": "/config"}]),
        ))
        .await?;
    let message = config_error(&cluster, "sneaky").await?;
    assert!(message.contains("resolved to"), "{message}");
    assert!(message.contains("is not allowed"), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_sub_path_through_a_symlink_an_init_container_made_does_not_leave_the_volume()
-> Result<()> {
    let linker = WasmImage::from_wat("wasmkube.test/hostile/linker:v1", LINKER)?;
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("server-node"))
        .start_with_samples("a_sub_path_through_a_symlink_an_init_container_made")
        .await?
    else {
        return Ok(());
    };
    cluster.import_image(linker.path()).await?;
    let mut pod = files_pod(
        "escape",
        json!([{"name": "shared", "emptyDir": {}}]),
        json!([{"name": "shared", "mountPath": "/config", "subPath": "esc/pki"}]),
    );
    pod["spec"]["initContainers"] = json!([{
        "name": "link",
        "image": linker.name(),
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
    }]);
    cluster.apply_json(&pod).await?;
    let message = config_error(&cluster, "escape").await?;
    assert!(message.contains("outside of the volume"), "{message}");
    let pod = cluster.pod("escape").await?;
    let init = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.first())
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(init, Some(0), "the init container made its symlink");
    let logs = cluster.kubectl(&["logs", "escape", "-c", "files"]).await?;
    assert!(
        !logs.stdout.contains("PRIVATE KEY"),
        "the CA key leaked: {}",
        logs.stdout
    );
    Ok(())
}

#[tokio::test]
async fn the_data_directory_store_keys_and_secret_volumes_are_private() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("server-node"))
        .start_with_samples("the_data_directory_store_keys_and_secret_volumes_are_private")
        .await?
    else {
        return Ok(());
    };
    let data = cluster.data_dir().to_path_buf();
    assert_eq!(mode(&data)?, 0o700, "the data directory");
    assert_eq!(mode(&data.join("store.redb"))?, 0o600, "the store");
    assert_eq!(
        mode(&data.join("kubeconfig.yaml"))?,
        0o600,
        "the kubeconfig"
    );
    let mut private: Vec<PathBuf> = vec![wasmkube_apiserver::pki::tokens_path(&data)];
    for entry in std::fs::read_dir(data.join("pki"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "key") {
            private.push(path);
        }
    }
    for path in &private {
        assert_eq!(mode(path)?, 0o600, "{}", path.display());
    }
    assert_eq!(mode(&data.join("agent"))?, 0o700, "the agent's directory");

    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=s3cr3t",
            "--from-literal=token=t0ken",
        ])
        .await?;
    let pod = files_pod(
        "modes",
        json!([
            {"name": "all", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "some", "secret": {"secretName": "creds",
                "items": [{"key": "token", "path": "token", "mode": 0o600}]}},
        ]),
        json!([
            {"name": "all", "mountPath": "/config"},
            {"name": "some", "mountPath": "/secret"},
        ]),
    );
    cluster.apply_json(&pod).await?;
    let pod = cluster
        .wait_pod("modes", "phase Succeeded", DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    let logs = cluster.kubectl_ok(&["logs", "modes"]).await?;
    assert!(
        logs.contains("s3cr3t"),
        "the guest reads its secret: {logs}"
    );
    let uid = pod.metadata.uid.context("the pod has no uid")?;
    let volumes = data.join("agent/pods").join(uid).join("volumes");
    assert_eq!(mode(&volumes.join("all"))?, 0o700);
    assert_eq!(mode(&volumes.join("all/password"))?, 0o400);
    assert_eq!(mode(&volumes.join("all/token"))?, 0o400);
    assert_eq!(mode(&volumes.join("some"))?, 0o700);
    assert_eq!(mode(&volumes.join("some/token"))?, 0o600);
    Ok(())
}
