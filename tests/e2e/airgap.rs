//! The air-gap image directory (`<data-dir>/agent/image-imports/`, as k3s' `agent/images/`):
//! an OCI layout archive copied there is imported when the node agent starts, and a pod that
//! may not pull (`imagePullPolicy: Never`) runs from it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::harness::{NodeSpec, TestCluster, sample_layout};

#[tokio::test]
async fn an_archive_in_the_air_gap_directory_is_imported_at_start_and_runs() -> Result<()> {
    const TEST: &str = "an_archive_in_the_air_gap_directory_is_imported_at_start_and_runs";
    let Some(layout) = sample_layout(TEST, "hello")? else {
        return Ok(());
    };
    let mut cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("airgap"))
        .start()
        .await?;
    // Nothing imported yet: the image is unknown to the node.
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "airgap-hello"},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "containers": [{
                "name": "hello",
                "image": "wasmkube.local/samples/hello:v1",
                "imagePullPolicy": "Never",
                "args": ["from", "the air-gap directory"],
            }],
        },
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &pod.to_string())
        .await?;
    cluster
        .wait_pod(
            "airgap-hello",
            "waiting for an image it may not pull",
            Duration::from_secs(60),
            |p| {
                crate::harness::container_status(p)
                    .and_then(|s| s.state?.waiting?.message)
                    .is_some_and(|m| m.contains("is not present with pull policy of Never"))
            },
        )
        .await?;
    cluster
        .kubectl_ok(&["delete", "pod", "airgap-hello", "--wait=false"])
        .await?;
    cluster
        .wait_pod_gone("airgap-hello", Duration::from_secs(60))
        .await?;

    // The archive goes into the directory while the server is stopped; the embedded agent
    // imports it when it starts again.
    cluster.terminate().await?;
    let dir = cluster.data_dir().join("agent").join("image-imports");
    std::fs::create_dir_all(&dir)?;
    let archive = dir.join("hello.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .context("running tar")?;
    ensure!(status.success(), "tar -cf {} failed", archive.display());
    std::fs::write(dir.join("notes.txt"), "not an image: ignored")?;
    cluster.restart().await?;

    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &pod.to_string())
        .await?;
    cluster
        .wait_pod("airgap-hello", "Succeeded", Duration::from_secs(120), |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;
    let logs = cluster.kubectl_ok(&["logs", "airgap-hello"]).await?;
    ensure!(logs.contains("the air-gap directory"), "{logs}");
    let images = cluster.log_tail(400);
    ensure!(
        images.contains("imported an image from the air-gap directory"),
        "the server log does not report the import:\n{images}"
    );
    Ok(())
}
