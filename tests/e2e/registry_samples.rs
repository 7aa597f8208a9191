//! Issue 11's acceptance on two nodes: every sample built and pushed to a real registry
//! (Debian's `docker-registry` on loopback) runs as a pod on one node by tag and on another by
//! digest, each reporting the pushed digest as its imageID; and an image exported from a
//! builder's store and imported into the second node's store runs there without a registry.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::registry::{digest_of, image_ok, sample};
use crate::harness::{NodeSpec, TestCluster, TestRegistry, container_status};

const DEADLINE: Duration = Duration::from_secs(180);

/// Every sample `samples/build` makes: (the built file, the name the test gives it).
const SAMPLES: [(&str, &str); 10] = [
    ("hello.wasm", "hello"),
    ("hello.component.wasm", "hello-component"),
    ("http-hello.wasm", "http-hello"),
    ("counter.wasm", "counter"),
    ("crash.wasm", "crash"),
    ("memhog.wasm", "memhog"),
    ("files.wasm", "files"),
    ("spin.wasm", "spin"),
    ("api-client.wasm", "api-client"),
    ("net-client.wasm", "net-client"),
];

/// A pod on `node` running `image` (pulled if absent, or never pulled with `pull_policy`
/// Never). No volumes or arguments: the test is about the image reaching the node and
/// starting, not about what each sample does once it runs.
fn pod_on(cluster: &TestCluster, name: &str, node: &str, image: &str, pull: &str) -> Result<Value> {
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"] = json!({ "name": name, "labels": { "test": "registry-samples" } });
    pod["spec"]["nodeName"] = json!(node);
    pod["spec"]["containers"] = json!([{
        "name": "app",
        "image": image,
        "imagePullPolicy": pull,
        "resources": { "limits": { "memory": "64Mi" } },
    }]);
    Ok(pod)
}

/// Whether the pod's container has started (running now, or ran and ended): by then its
/// image is on the node and `imageID` names it.
fn started(pod: &Pod) -> bool {
    container_status(pod).is_some_and(|s| {
        let ran = |state: Option<&k8s_openapi::api::core::v1::ContainerState>| {
            state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        };
        !s.image_id.is_empty() && (ran(s.state.as_ref()) || ran(s.last_state.as_ref()))
    })
}

/// Waits until pod `name` has started and checks that its imageID is `digest`.
async fn wait_started_with(cluster: &TestCluster, name: &str, digest: &str) -> Result<()> {
    let pod = cluster
        .wait_pod(name, "its container started", DEADLINE, started)
        .await?;
    let status = container_status(&pod).context("a container status")?;
    ensure!(
        status.image_id.ends_with(&format!("@{digest}")) || status.image_id == digest,
        "{name}: imageID {:?} is not the pushed digest {digest}",
        status.image_id
    );
    Ok(())
}

#[tokio::test]
async fn every_sample_pushed_runs_on_two_nodes_by_tag_and_by_digest() -> Result<()> {
    let registry = TestRegistry::start().await?;
    let builder = tempfile::tempdir()?;
    let mut pushed = Vec::new();
    for (file, name) in SAMPLES {
        let wasm = sample(file)?;
        let tag = format!("{}/samples/{name}:v1", registry.addr());
        let built = image_ok(
            builder.path(),
            &["build", &wasm.display().to_string(), "-t", &tag],
        )
        .await?;
        let digest = digest_of(&built)?;
        let sent = image_ok(builder.path(), &["push", &tag]).await?;
        ensure!(
            digest_of(&sent)? == digest,
            "push of {tag} printed another digest: {sent}"
        );
        let by_digest = format!("{}/samples/{name}@{digest}", registry.addr());
        pushed.push((name, tag, by_digest, digest));
    }

    let mut cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("by-tag"))
        .start()
        .await?;
    cluster.join_agent(NodeSpec::named("by-digest")).await?;
    let (tag_node, digest_node) = match cluster.node_names().as_slice() {
        [a, b] => (a.clone(), b.clone()),
        names => anyhow::bail!("two nodes, not {names:?}"),
    };
    ensure!(tag_node != digest_node, "two different nodes");

    for (name, tag, by_digest, _) in &pushed {
        let on_tag = pod_on(
            &cluster,
            &format!("tag-{name}"),
            &tag_node,
            tag,
            "IfNotPresent",
        )?;
        cluster.apply_json(&on_tag).await?;
        let on_digest = pod_on(
            &cluster,
            &format!("digest-{name}"),
            &digest_node,
            by_digest,
            "IfNotPresent",
        )?;
        cluster.apply_json(&on_digest).await?;
    }
    for (name, _, _, digest) in &pushed {
        wait_started_with(&cluster, &format!("tag-{name}"), digest).await?;
        wait_started_with(&cluster, &format!("digest-{name}"), digest).await?;
    }

    // The air-gap path: exported from the builder's store, imported into the second node's
    // store (while its agent runs) under a name no registry serves, and run with
    // imagePullPolicy Never.
    let (_, tag, _, digest) = pushed
        .iter()
        .find(|(name, ..)| *name == "hello")
        .context("the hello sample")?;
    let archive = tempfile::tempdir()?;
    let tar = archive.path().join("hello.tar");
    image_ok(
        builder.path(),
        &["export", tag, "-o", &tar.display().to_string()],
    )
    .await?;
    let node_dir = cluster
        .node_data_dirs()
        .get(1)
        .cloned()
        .context("the second node's data directory")?;
    let imported = image_ok(&node_dir, &["import", &tar.display().to_string()]).await?;
    ensure!(
        imported.contains(digest.as_str()),
        "import printed the digest {digest}: {imported}"
    );
    let offline = pod_on(&cluster, "imported-hello", &digest_node, tag, "Never")?;
    cluster.apply_json(&offline).await?;
    let done = cluster
        .wait_pod("imported-hello", "Succeeded", DEADLINE, |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;
    let status = container_status(&done).context("a container status")?;
    ensure!(
        status.image_id.contains(digest.as_str()),
        "the imported image's imageID {} is {digest}",
        status.image_id
    );
    ensure_no_pull_on(&cluster, "imported-hello").await?;
    cluster
        .kubectl_ok(&[
            "delete",
            "pods",
            "-l",
            "test=registry-samples",
            "--wait=false",
        ])
        .await?;
    Ok(())
}

/// The pod's events say its image was already on the node: no Pulling event.
async fn ensure_no_pull_on(cluster: &TestCluster, name: &str) -> Result<()> {
    let pulled = cluster.wait_event(name, "Pulled", DEADLINE).await?;
    let message = pulled.message.unwrap_or_default();
    ensure!(
        message.contains("already present on machine"),
        "{name}: {message}"
    );
    Ok(())
}
