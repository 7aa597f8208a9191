//! OCI distribution against a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry, on loopback): `wasmkube image build` packages samples as the CNCF
//! wasm artifact, `image push` sends them, an independent client (`skopeo`) reads what was
//! pushed, and `image pull` into another node's store brings back byte-identical blobs. An
//! image skopeo pushed pulls too. Bad cases leave no image behind: an unknown tag, a blob
//! tampered with in the registry's storage, a registry that is down. A node's agent pulls a
//! pod's image it lacks, by tag or by digest, and reports the digest as the imageID; from a
//! registry that asks for credentials, only with the pod's imagePullSecret.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::harness::{
    NodeSpec, REGISTRY_PASSWORD, REGISTRY_USER, TestCluster, TestRegistry, container_status, which,
};

/// Runs `wasmkube image ARGS` with the store of `data_dir`.
pub(crate) async fn image(data_dir: &Path, args: &[&str]) -> Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"));
    command
        .arg("image")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("WASMKUBE_DATA_DIR")
        .env_remove("WASMKUBE_REGISTRY_CREDS")
        .env("NO_COLOR", "1");
    command
        .output()
        .await
        .with_context(|| format!("running wasmkube image {args:?}"))
}

/// [`image`], which must succeed; its stdout.
pub(super) async fn image_ok(data_dir: &Path, args: &[&str]) -> Result<String> {
    let out = image(data_dir, args).await?;
    ensure!(
        out.status.success(),
        "wasmkube image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// [`image`], which must fail; its stderr.
pub(super) async fn image_fails(data_dir: &Path, args: &[&str]) -> Result<String> {
    let out = image(data_dir, args).await?;
    ensure!(
        !out.status.success(),
        "wasmkube image {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stderr)?)
}

/// `skopeo ARGS` (plain HTTP to the loopback registry), which must succeed; its stdout.
pub(super) async fn skopeo(args: &[&str]) -> Result<String> {
    ensure!(
        which("skopeo").is_some(),
        "skopeo is not installed: `apt-get install skopeo` (tests/run installs it)"
    );
    let out = tokio::process::Command::new("skopeo")
        .args(args)
        .output()
        .await
        .context("running skopeo")?;
    ensure!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The digest column of a `NAME<TAB>DIGEST` line.
pub(super) fn digest_of(line: &str) -> Result<String> {
    line.trim()
        .split('\t')
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no digest in {line:?}"))
}

pub(super) fn sample(file: &str) -> Result<PathBuf> {
    wasmkube_samples::built("registry", file)?
        .with_context(|| format!("samples/out/{file} is not built (samples/build --oci)"))
}

pub(crate) fn blob(data_dir: &Path, digest: &str) -> PathBuf {
    data_dir
        .join("agent/images/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[tokio::test]
async fn built_wasm_artifacts_push_and_pull_back_byte_identical() -> Result<()> {
    let registry = TestRegistry::start().await?;
    let builder = tempfile::tempdir()?;
    let puller = tempfile::tempdir()?;
    for (file, os, export) in [
        (
            "http-hello.wasm",
            "wasip2",
            Some("wasi:http/incoming-handler"),
        ),
        ("hello.wasm", "wasip1", None),
    ] {
        let wasm = sample(file)?;
        let name = format!(
            "{}/samples/{}:v1",
            registry.addr(),
            file.trim_end_matches(".wasm")
        );
        let built = image_ok(
            builder.path(),
            &["build", &wasm.display().to_string(), "-t", &name],
        )
        .await?;
        let digest = digest_of(&built)?;
        let pushed = image_ok(builder.path(), &["push", &name]).await?;
        assert_eq!(digest_of(&pushed)?, digest, "push prints the pushed digest");

        // What an independent client sees in the registry.
        let url = format!("docker://{name}");
        let manifest: Value = serde_json::from_str(
            &skopeo(&["inspect", "--tls-verify=false", "--raw", &url]).await?,
        )?;
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.wasm.config.v0+json"
        );
        assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
        assert_eq!(
            manifest["layers"][0]["size"].as_u64(),
            Some(std::fs::metadata(&wasm)?.len())
        );
        let config: Value = serde_json::from_str(
            &skopeo(&["inspect", "--tls-verify=false", "--config", "--raw", &url]).await?,
        )?;
        assert_eq!(config["architecture"], "wasm", "{config}");
        assert_eq!(config["os"], os, "{config}");
        assert_eq!(config["layerDigests"][0], manifest["layers"][0]["digest"]);
        match export {
            Some(export) => assert!(
                config["component"]["exports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with(export))),
                "{file} exports {export}: {config}"
            ),
            None => assert!(config.get("component").is_none(), "{config}"),
        }

        // Pulled into another node's store: the same digest, the same bytes.
        let pulled = image_ok(puller.path(), &["pull", &name]).await?;
        assert_eq!(digest_of(&pulled)?, digest, "pull prints the digest");
        let layer = manifest["layers"][0]["digest"].as_str().unwrap_or_default();
        assert_eq!(
            std::fs::read(blob(puller.path(), layer))?,
            std::fs::read(&wasm)?,
            "{file} pulls back byte-identical"
        );
        let by_digest = format!(
            "{}/samples/{}@{digest}",
            registry.addr(),
            file.trim_end_matches(".wasm")
        );
        let again = image_ok(puller.path(), &["pull", &by_digest]).await?;
        assert_eq!(digest_of(&again)?, digest, "pull by digest");
    }
    let listed = image_ok(puller.path(), &["list"]).await?;
    for name in ["samples/http-hello:v1", "samples/hello:v1"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{}/{name}\t", registry.addr()))),
            "{name} in {listed}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_image_another_client_pushed_pulls() -> Result<()> {
    let registry = TestRegistry::start().await?;
    let layout = wasmkube_samples::built("registry", "oci/hello/index.json")?
        .context("samples/out/oci/hello is not built (samples/build --oci)")?;
    let layout = layout.parent().context("the layout directory")?;
    let name = format!("{}/other/hello:skopeo", registry.addr());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}", layout.display()),
        &format!("docker://{name}"),
    ])
    .await?;
    let store = tempfile::tempdir()?;
    let pulled = image_ok(store.path(), &["pull", &name]).await?;
    let digest = digest_of(&pulled)?;
    let listed = image_ok(store.path(), &["list"]).await?;
    assert!(
        listed.lines().any(|l| l == format!("{name}\t{digest}")),
        "{name} {digest} in {listed}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_pull_says_why_and_leaves_no_image() -> Result<()> {
    let mut registry = TestRegistry::start().await?;
    let builder = tempfile::tempdir()?;
    let store = tempfile::tempdir()?;
    let wasm = sample("hello.wasm")?;
    let name = format!("{}/bad/hello:v1", registry.addr());
    image_ok(
        builder.path(),
        &["build", &wasm.display().to_string(), "-t", &name],
    )
    .await?;
    image_ok(builder.path(), &["push", &name]).await?;

    // An unknown tag.
    let unknown = format!("{}/bad/hello:nope", registry.addr());
    let error = image_fails(store.path(), &["pull", &unknown]).await?;
    assert!(error.contains("not found"), "{error}");

    // A layer changed in the registry's storage: its digest no longer matches.
    let manifest: Value = serde_json::from_str(
        &skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{name}"),
        ])
        .await?,
    )?;
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let data = registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).with_context(|| format!("reading {}", data.display()))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes)?;
    let error = image_fails(store.path(), &["pull", &name]).await?;
    assert!(error.contains("digest"), "{error}");
    assert!(
        !blob(store.path(), &layer).exists(),
        "the tampered layer is not stored"
    );
    let listed = image_ok(store.path(), &["list"]).await?;
    assert!(
        listed.trim().is_empty(),
        "no image is named after failed pulls: {listed}"
    );

    // A layer cut short: its size no longer matches (the registry serves what it has).
    bytes[last] ^= 0xff;
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&data, &bytes)?;
    let error = image_fails(store.path(), &["pull", &name]).await?;
    assert!(
        error.contains("size") || error.contains("digest") || error.contains("length"),
        "{error}"
    );
    assert!(
        !blob(store.path(), &layer).exists(),
        "the short layer is not stored"
    );

    // A registry that is down.
    registry.stop().await?;
    let error = image_fails(store.path(), &["pull", &name]).await?;
    assert!(
        error.contains(registry.addr()) || error.to_lowercase().contains("connect"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn the_agent_pulls_a_pods_image_by_tag_and_by_digest() -> Result<()> {
    const DEADLINE: Duration = Duration::from_secs(120);
    let registry = TestRegistry::start().await?;
    let builder = tempfile::tempdir()?;
    let wasm = sample("hello.wasm")?;
    let name = format!("{}/pods/hello:v1", registry.addr());
    let built = image_ok(
        builder.path(),
        &["build", &wasm.display().to_string(), "-t", &name],
    )
    .await?;
    let digest = digest_of(&built)?;
    image_ok(builder.path(), &["push", &name]).await?;

    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("puller"))
        .start()
        .await?;
    let by_digest = format!("{}/pods/hello@{digest}", registry.addr());
    for (pod_name, image, pulls) in [
        ("by-tag", name.as_str(), true),
        ("by-digest", by_digest.as_str(), false),
    ] {
        let mut pod = cluster.sample_pod("hello")?;
        pod["metadata"]["name"] = json!(pod_name);
        pod["spec"]["containers"][0]["image"] = json!(image);
        pod["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        cluster.apply_json(&pod).await?;
        let done = cluster
            .wait_pod(pod_name, "Succeeded", DEADLINE, |p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
            })
            .await?;
        let status = container_status(&done).context("a container status")?;
        assert!(
            status.image_id.contains(&digest),
            "{pod_name}: imageID {} names the pulled digest {digest}",
            status.image_id
        );
        let logs = cluster.kubectl_ok(&["logs", pod_name]).await?;
        assert!(logs.contains("first-arg"), "{pod_name} ran: {logs}");
        // The first pod pulls; the second finds the image by its digest on the node.
        let pulled = cluster
            .wait_event_where(pod_name, "Pulled", DEADLINE, |_| true)
            .await?;
        let message = pulled.message.unwrap_or_default();
        if pulls {
            assert!(
                message.starts_with("Successfully pulled image"),
                "{message}"
            );
            cluster.wait_event(pod_name, "Pulling", DEADLINE).await?;
        } else {
            assert!(message.contains("already present on machine"), "{message}");
        }
    }

    // An image the registry does not have: ErrImagePull, then ImagePullBackOff.
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"]["name"] = json!("missing");
    pod["spec"]["containers"][0]["image"] = json!(format!("{}/pods/hello:nope", registry.addr()));
    cluster.apply_json(&pod).await?;
    cluster
        .wait_pod("missing", "ImagePullBackOff", DEADLINE, |p| {
            container_status(p)
                .and_then(|s| s.state)
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref()
                == Some("ImagePullBackOff")
        })
        .await?;
    let failed = cluster
        .wait_event_where("missing", "Failed", DEADLINE, |e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("not found in the registry"))
        })
        .await?;
    assert!(failed.message.unwrap_or_default().contains("hello:nope"));
    Ok(())
}

/// Waits until pod `name`'s container waits with `reason` and a Failed event's message
/// contains `says`.
async fn wait_pull_failure(cluster: &TestCluster, name: &str, says: &str) -> Result<()> {
    const DEADLINE: Duration = Duration::from_secs(120);
    cluster
        .wait_pod(name, "ImagePullBackOff", DEADLINE, |p| {
            container_status(p)
                .and_then(|s| s.state)
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref()
                == Some("ImagePullBackOff")
        })
        .await?;
    cluster
        .wait_event_where(name, "Failed", DEADLINE, |e| {
            e.message.as_deref().is_some_and(|m| m.contains(says))
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_private_registry_serves_a_pod_only_with_its_image_pull_secret() -> Result<()> {
    const DEADLINE: Duration = Duration::from_secs(120);
    let registry = TestRegistry::start_with_auth().await?;
    let builder = tempfile::tempdir()?;
    let wasm = sample("hello.wasm")?;
    let name = format!("{}/private/hello:v1", registry.addr());
    image_ok(
        builder.path(),
        &["build", &wasm.display().to_string(), "-t", &name],
    )
    .await?;
    let refused = image_fails(builder.path(), &["push", &name]).await?;
    assert!(
        refused.contains("authentication"),
        "a push without credentials: {refused}"
    );
    let creds = format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}");
    image_ok(builder.path(), &["push", &name, "--creds", &creds]).await?;

    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("private"))
        .start()
        .await?;
    let pod = |pod_name: &str, secret: Option<&str>| -> Result<Value> {
        let mut pod = cluster.sample_pod("hello")?;
        pod["metadata"]["name"] = json!(pod_name);
        pod["spec"]["containers"][0]["image"] = json!(name);
        if let Some(secret) = secret {
            pod["spec"]["imagePullSecrets"] = json!([{"name": secret}]);
        }
        Ok(pod)
    };
    // No secret: the registry wants credentials.
    cluster.apply_json(&pod("anonymous", None)?).await?;
    wait_pull_failure(&cluster, "anonymous", "requires authentication").await?;

    // A secret with the wrong password.
    let server = registry.addr().to_string();
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "docker-registry",
            "wrong",
            &format!("--docker-server={server}"),
            &format!("--docker-username={REGISTRY_USER}"),
            "--docker-password=not-the-password",
        ])
        .await?;
    cluster
        .apply_json(&pod("wrong-secret", Some("wrong"))?)
        .await?;
    wait_pull_failure(&cluster, "wrong-secret", "hello:v1").await?;

    // The right one, as `kubectl create secret docker-registry` writes it.
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={server}"),
            &format!("--docker-username={REGISTRY_USER}"),
            &format!("--docker-password={REGISTRY_PASSWORD}"),
        ])
        .await?;
    cluster
        .apply_json(&pod("with-secret", Some("regcred"))?)
        .await?;
    cluster
        .wait_pod("with-secret", "Succeeded", DEADLINE, |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;
    let logs = cluster.kubectl_ok(&["logs", "with-secret"]).await?;
    assert!(logs.contains("first-arg"), "{logs}");
    Ok(())
}

/// `image export` writes an OCI layout (directory or tar) that skopeo reads and `image import`
/// on another node brings back under the same name and digest: the air-gap path.
#[tokio::test]
async fn an_exported_image_imports_on_another_node() -> Result<()> {
    let builder = tempfile::tempdir()?;
    let wasm = sample("http-hello.wasm")?;
    let name = "example.com/airgap/http-hello:v1";
    let built = image_ok(
        builder.path(),
        &["build", &wasm.display().to_string(), "-t", name],
    )
    .await?;
    let digest = digest_of(&built)?;
    let out = tempfile::tempdir()?;
    let dir = out.path().join("layout");
    let tar = out.path().join("layout.tar");
    image_ok(
        builder.path(),
        &["export", name, "-o", &dir.display().to_string()],
    )
    .await?;
    image_ok(
        builder.path(),
        &["export", name, "-o", &tar.display().to_string()],
    )
    .await?;
    let seen: Value = serde_json::from_str(
        &skopeo(&["inspect", "--raw", &format!("oci:{}:v1", dir.display())]).await?,
    )?;
    assert_eq!(
        seen["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    for layout in [&dir, &tar] {
        let node = tempfile::tempdir()?;
        let imported = image_ok(node.path(), &["import", &layout.display().to_string()]).await?;
        assert!(
            imported
                .lines()
                .any(|l| l.starts_with(&format!("{name}\t{digest}"))),
            "{} imports as {name} {digest}: {imported}",
            layout.display()
        );
    }
    let taken = image_fails(
        builder.path(),
        &["export", name, "-o", &dir.display().to_string()],
    )
    .await?;
    assert!(taken.contains("not empty"), "{taken}");
    Ok(())
}

/// A pod whose image's registry is down waits in ImagePullBackOff, and runs once the
/// registry is back (the kubelet's back-off retries the pull).
#[tokio::test]
async fn a_pull_that_failed_while_the_registry_was_down_succeeds_once_it_is_back() -> Result<()> {
    const DEADLINE: Duration = Duration::from_secs(180);
    let mut registry = TestRegistry::start().await?;
    let builder = tempfile::tempdir()?;
    let wasm = sample("hello.wasm")?;
    let name = format!("{}/recover/hello:v1", registry.addr());
    image_ok(
        builder.path(),
        &["build", &wasm.display().to_string(), "-t", &name],
    )
    .await?;
    image_ok(builder.path(), &["push", &name]).await?;
    registry.stop().await?;

    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("recover"))
        .start()
        .await?;
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"]["name"] = json!("recover");
    pod["spec"]["containers"][0]["image"] = json!(name);
    cluster.apply_json(&pod).await?;
    wait_pull_failure(&cluster, "recover", "recover/hello:v1").await?;

    registry.start_again().await?;
    let done = cluster
        .wait_pod(
            "recover",
            "Succeeded once the registry is back",
            DEADLINE,
            |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"),
        )
        .await?;
    let status = container_status(&done).context("a container status")?;
    assert!(status.image_id.contains("sha256:"), "{}", status.image_id);
    let logs = cluster.kubectl_ok(&["logs", "recover"]).await?;
    assert!(logs.contains("first-arg"), "{logs}");
    Ok(())
}

/// Writes an OCI layout of a Linux container image (config `os: linux`, one tar layer with
/// `bin/sh`) to `dir`, tagged `v1`: what a wasm node must refuse by its media types and
/// platform, whatever its name says.
/// Pushes a Linux container image ([`linux_image_layout`]) as `name` with skopeo, an
/// independent client.
pub(crate) async fn push_linux_image(name: &str) -> Result<()> {
    let layout = tempfile::tempdir()?;
    linux_image_layout(layout.path())?;
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{name}"),
    ])
    .await?;
    Ok(())
}

fn linux_image_layout(dir: &Path) -> Result<()> {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let blob = |bytes: &[u8]| -> Result<(String, usize)> {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let sh = b"\x7fELF not really a shell";
    header.set_size(sh.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    layer.append_data(&mut header, "bin/sh", &sh[..])?;
    let layer = layer.into_inner()?;
    let (layer_digest, layer_size) = blob(&layer)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = blob(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = blob(&serde_json::to_vec(&manifest)?)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// An image of the wrong kind (a Linux container's media types and platform) never runs as
/// a wasm pod: the pod waits in ImagePullBackOff saying it is not a wasm image.
#[tokio::test]
async fn an_image_with_the_wrong_media_types_is_refused() -> Result<()> {
    let registry = TestRegistry::start().await?;
    let name = format!("{}/wrong/linux:v1", registry.addr());
    push_linux_image(&name).await?;

    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("wrong-kind"))
        .start()
        .await?;
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"]["name"] = json!("wrong-kind");
    pod["spec"]["containers"][0]["image"] = json!(name);
    cluster.apply_json(&pod).await?;
    wait_pull_failure(&cluster, "wrong-kind", "not a wasm image").await?;
    Ok(())
}
