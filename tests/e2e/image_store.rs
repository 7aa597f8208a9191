//! The node's image store as a user and the agent work with it: `wasmkube image inspect`
//! and `image rm` (which keeps what other names or running pods need), a Linux image
//! refused at pull, `imagePullPolicy: Never` of an absent image (`ErrImageNeverPull`, as the
//! kubelet), the second pod of an image compiling nothing, and image garbage collection on a
//! small filesystem filled past its high threshold.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::disk_full::{Tmpfs, fill};
use crate::harness::{NodeSpec, TestCluster, TestRegistry, container_status, poll_until};
use crate::registry::{blob, digest_of, image, image_fails, image_ok, push_linux_image, sample};

const DEADLINE: Duration = Duration::from_secs(120);

/// A pod running `image` once, which it may not pull.
fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "containers": [{
                "name": "app",
                "image": image,
                "imagePullPolicy": "Never",
                "args": ["from", name],
            }],
        },
    })
}

async fn wait_succeeded(cluster: &TestCluster, name: &str) -> Result<()> {
    cluster
        .wait_pod(name, "Succeeded", DEADLINE, |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;
    Ok(())
}

/// The compiled-code files of the module with digest `wasm_digest` in the agent's cache.
fn compiled_files(data_dir: &Path, wasm_digest: &str) -> Vec<PathBuf> {
    let hex = wasm_digest.trim_start_matches("sha256:");
    std::fs::read_dir(data_dir.join("agent/wasm-cache"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{hex}-")) && n.ends_with(".cwasm"))
        })
        .collect()
}

/// `image inspect NAME` as JSON.
async fn inspect(data_dir: &Path, name: &str) -> Result<Value> {
    let out = image_ok(data_dir, &["inspect", name]).await?;
    serde_json::from_str(&out).with_context(|| format!("image inspect {name} printed {out}"))
}

#[tokio::test]
async fn inspect_describes_an_image_and_rm_removes_only_what_no_name_needs() -> Result<()> {
    let store = tempfile::tempdir()?;
    let dir = store.path();
    let hello = sample("hello.wasm")?.display().to_string();
    let http = sample("http-hello.wasm")?.display().to_string();
    let digest =
        digest_of(&image_ok(dir, &["build", &hello, "-t", "example.com/a/hello:v1"]).await?)?;
    image_ok(dir, &["build", &hello, "-t", "example.com/b/hello:v1"]).await?;
    let http_digest =
        digest_of(&image_ok(dir, &["build", &http, "-t", "example.com/a/http:v1"]).await?)?;

    let seen = inspect(dir, "example.com/a/hello:v1").await?;
    assert_eq!(seen["digest"], json!(digest), "{seen:#}");
    assert_eq!(
        seen["names"],
        json!(["example.com/a/hello:v1", "example.com/b/hello:v1"]),
        "{seen:#}"
    );
    assert_eq!(
        seen["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(seen["platform"], "wasip1/wasm");
    assert_eq!(seen["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(seen["wasm"]["kind"], "module");
    let layer = seen["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(seen["wasm"]["digest"], json!(layer));
    assert!(
        seen["wasm"]["imports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i
                .as_str()
                .is_some_and(|i| i.starts_with("wasi_snapshot_preview1/"))),
        "a WASI module's imports: {seen:#}"
    );
    let component = inspect(dir, &format!("example.com/a/http@{http_digest}")).await?;
    assert_eq!(component["wasm"]["kind"], "component");
    assert!(
        component["wasm"]["exports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e
                .as_str()
                .is_some_and(|e| e.starts_with("wasi:http/incoming-handler"))),
        "{component:#}"
    );

    // One name of two: the image stays under the other.
    let out = image_ok(dir, &["rm", "example.com/a/hello:v1"]).await?;
    assert_eq!(out.trim(), "Untagged: example.com/a/hello:v1");
    assert!(blob(dir, &layer).exists(), "the other name keeps the layer");
    assert_eq!(
        inspect(dir, &digest).await?["names"],
        json!(["example.com/b/hello:v1"])
    );

    // By digest: every name, then the blobs nothing else needs.
    let out = image_ok(dir, &["rm", &digest]).await?;
    assert_eq!(
        out.trim(),
        format!("Untagged: example.com/b/hello:v1\nDeleted: {digest}")
    );
    assert!(!blob(dir, &layer).exists(), "the layer is gone");
    assert!(!blob(dir, &digest).exists(), "the manifest is gone");
    let listed = image_ok(dir, &["list"]).await?;
    assert_eq!(
        listed.trim(),
        format!("example.com/a/http:v1\t{http_digest}")
    );
    assert!(
        blob(dir, &http_digest).exists(),
        "the other image is untouched"
    );
    inspect(dir, "example.com/a/http:v1").await?;

    // Mistakes say what is wrong.
    let error = image_fails(dir, &["rm", "example.com/a/hello:v1"]).await?;
    assert!(error.contains("not in the node's image store"), "{error}");
    let error = image_fails(dir, &["inspect", "example.com/a/hello:v1"]).await?;
    assert!(error.contains("not in the node's image store"), "{error}");
    let error = image_fails(dir, &["rm", "Not An Image"]).await?;
    assert!(error.contains("invalid image name"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_linux_image_is_refused_at_pull_and_nothing_is_stored() -> Result<()> {
    let registry = TestRegistry::start().await?;
    let name = format!("{}/linux/sh:v1", registry.addr());
    push_linux_image(&name).await?;
    let store = tempfile::tempdir()?;
    let error = image_fails(store.path(), &["pull", &name]).await?;
    for says in [
        "not a wasm image",
        "platform linux/amd64",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.wasm.config.v0+json",
        "accepted",
    ] {
        assert!(error.contains(says), "the refusal names {says:?}: {error}");
    }
    let blobs: Vec<_> = std::fs::read_dir(store.path().join("agent/images/blobs/sha256"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(blobs.is_empty(), "nothing is stored: {blobs:?}");
    let listed = image_ok(store.path(), &["list"]).await?;
    assert!(listed.trim().is_empty(), "no name: {listed}");
    Ok(())
}

#[tokio::test]
async fn an_absent_image_with_pull_policy_never_waits_in_err_image_never_pull() -> Result<()> {
    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("never"))
        .start()
        .await?;
    let image = "wasmkube.local/absent/never:v1";
    cluster.apply_json(&pod("never", image)).await?;
    let expected = format!("Container image \"{image}\" is not present with pull policy of Never");
    let waiting = |p: &k8s_openapi::api::core::v1::Pod| {
        container_status(p)
            .and_then(|s| s.state?.waiting)
            .map(|w| (w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
    };
    let status = cluster
        .wait_pod("never", "ErrImageNeverPull", DEADLINE, |p| {
            waiting(p).is_some_and(|(reason, _)| reason == "ErrImageNeverPull")
        })
        .await?;
    assert_eq!(waiting(&status).map(|(_, m)| m), Some(expected.clone()));
    cluster
        .wait_event_where("never", "Failed", DEADLINE, |e| {
            e.message.as_deref() == Some("Error: ErrImageNeverPull")
        })
        .await?;
    // Retried (the event counted twice), and still ErrImageNeverPull: no back-off reason.
    let event = cluster
        .wait_event_where("never", "ErrImageNeverPull", DEADLINE, |e| {
            e.count.unwrap_or(1) >= 2
        })
        .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.message.as_deref(), Some(expected.as_str()));
    let now = cluster.pod("never").await?;
    assert_eq!(
        waiting(&now).map(|(r, _)| r).as_deref(),
        Some("ErrImageNeverPull")
    );
    Ok(())
}

/// The `key=N` field of a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!(" {key}=")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The compile-cache counters the agent logged when `container` (`ns/pod/name`) loaded.
async fn loaded(cluster: &TestCluster, container: &str) -> Result<(u64, u64)> {
    poll_until(
        &format!("the load of {container} in the log"),
        DEADLINE,
        || async {
            let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
            let line = log
                .lines()
                .filter(|l| l.contains("wasm program loaded"))
                .find(|l| l.contains(&format!("container={container} ")));
            Ok(line.and_then(|l| {
                let hits = field(l, "disk_hits_total")? + field(l, "memory_hits_total")?;
                Some((field(l, "compiled_total")?, hits))
            }))
        },
    )
    .await
}

#[tokio::test]
async fn the_second_pod_of_an_image_compiles_nothing_and_rm_waits_for_its_pods() -> Result<()> {
    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("cache"))
        .start()
        .await?;
    let data = cluster.data_dir();
    let name = "wasmkube.local/cache/hello:v1";
    let built = image_ok(
        data,
        &[
            "build",
            &sample("hello.wasm")?.display().to_string(),
            "-t",
            name,
        ],
    )
    .await?;
    let digest = digest_of(&built)?;
    let wasm_digest = inspect(data, name).await?["wasm"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    cluster.apply_json(&pod("cache-1", name)).await?;
    wait_succeeded(&cluster, "cache-1").await?;
    let (compiled, hits) = loaded(&cluster, "default/cache-1/app").await?;
    ensure!(compiled >= 1, "the first pod compiled its module");
    ensure!(
        !compiled_files(data, &wasm_digest).is_empty(),
        "the compiled code is cached"
    );
    for (i, pod_name) in ["cache-2", "cache-3"].into_iter().enumerate() {
        cluster.apply_json(&pod(pod_name, name)).await?;
        wait_succeeded(&cluster, pod_name).await?;
        let (now_compiled, now_hits) = loaded(&cluster, &format!("default/{pod_name}/app")).await?;
        assert_eq!(now_compiled, compiled, "{pod_name} compiled nothing");
        assert_eq!(now_hits, hits + 1 + i as u64, "{pod_name} was a cache hit");
    }

    // The pods' image is not removed under them.
    let error = image_fails(data, &["rm", name]).await?;
    assert!(error.contains("in use by a pod on this node"), "{error}");
    assert!(error.contains("--force"), "{error}");
    cluster
        .kubectl_ok(&[
            "delete",
            "pod",
            "cache-1",
            "cache-2",
            "cache-3",
            "--wait=false",
        ])
        .await?;
    for pod_name in ["cache-1", "cache-2", "cache-3"] {
        cluster.wait_pod_gone(pod_name, DEADLINE).await?;
    }
    // Once the agent let go of the pods, the image goes with its compiled code.
    let out = poll_until("image rm to be allowed", DEADLINE, || async {
        let out = image(data, &["rm", name]).await?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    })
    .await?;
    assert!(out.contains(&format!("Deleted: {digest}")), "{out}");
    assert!(!blob(data, &wasm_digest).exists(), "the module is gone");
    assert_eq!(
        compiled_files(data, &wasm_digest),
        Vec::<PathBuf>::new(),
        "its compiled code is gone"
    );
    Ok(())
}

#[tokio::test]
async fn image_gc_removes_an_unused_image_and_keeps_the_one_a_pod_uses() -> Result<()> {
    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("gc"))
        .server_arg("--image-gc-period=1s")
        .server_arg("--minimum-image-gc-age=0")
        .start()
        .await?;
    let data = cluster.data_dir();
    // The image store on a small filesystem of its own (the agent reaches the store by path).
    let tmpfs = Tmpfs::mount(32)?;
    let store = data.join("agent/images");
    std::fs::rename(&store, data.join("agent/images.before"))?;
    std::os::unix::fs::symlink(tmpfs.path(), &store)?;

    let used = "wasmkube.local/gc/used:v1";
    let unused = "wasmkube.local/gc/unused:v1";
    let hello = sample("hello.wasm")?.display().to_string();
    let component = sample("hello.component.wasm")?.display().to_string();
    image_ok(data, &["build", &hello, "-t", used]).await?;
    image_ok(data, &["build", &component, "-t", unused]).await?;
    let module_of = |seen: Value| {
        seen["wasm"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let used_module = module_of(inspect(data, used).await?);
    let unused_module = module_of(inspect(data, unused).await?);
    // Both compiled; the unused image's pod is deleted, the used one's stays.
    cluster.apply_json(&pod("keeper", used)).await?;
    cluster.apply_json(&pod("once", unused)).await?;
    wait_succeeded(&cluster, "keeper").await?;
    wait_succeeded(&cluster, "once").await?;
    cluster
        .kubectl_ok(&["delete", "pod", "once", "--wait=false"])
        .await?;
    cluster.wait_pod_gone("once", DEADLINE).await?;
    poll_until(
        "the agent to let go of the deleted pod's image",
        DEADLINE,
        || async {
            let record = std::fs::read_to_string(store.join("in-use.json")).unwrap_or_default();
            Ok((record.contains("gc/used") && !record.contains("gc/unused")).then_some(()))
        },
    )
    .await?;
    ensure!(
        !compiled_files(data, &used_module).is_empty(),
        "used compiled"
    );
    ensure!(
        !compiled_files(data, &unused_module).is_empty(),
        "unused compiled"
    );

    // Past the high threshold (85%): the unused image goes, the used one stays; there is
    // too little to free to reach 80%, which the node's events say.
    let _filler = fill(tmpfs.path(), 1 << 20)?;
    poll_until("image GC to remove the unused image", DEADLINE, || async {
        let listed = image_ok(data, &["list"]).await?;
        Ok((!listed.contains(unused)).then_some(listed))
    })
    .await
    .map(|listed| assert!(listed.contains(used), "the used image stays: {listed}"))?;
    assert!(
        !blob(data, &unused_module).exists(),
        "the unused module is gone"
    );
    assert!(blob(data, &used_module).exists(), "the used module stays");
    assert_eq!(
        compiled_files(data, &unused_module),
        Vec::<PathBuf>::new(),
        "the unused image's compiled code went with it"
    );
    ensure!(
        !compiled_files(data, &used_module).is_empty(),
        "used code stays"
    );
    let event = cluster
        .wait_event_where("gc", "FreeDiskSpaceFailed", DEADLINE, |_| true)
        .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(
        message.starts_with("Failed to garbage collect required amount of images."),
        "{message}"
    );
    let log = cluster.log_tail(2000);
    assert!(log.contains("removing image to free bytes"), "{log}");
    // The pod that uses the image still has it.
    cluster.apply_json(&pod("again", used)).await?;
    wait_succeeded(&cluster, "again").await?;
    drop(cluster);
    Ok(())
}

#[tokio::test]
async fn image_gc_thresholds_are_checked_before_anything_starts() -> Result<()> {
    let data = tempfile::tempdir()?;
    for (args, says) in [
        (
            vec!["--image-gc-low-threshold=90"],
            "--image-gc-low-threshold (90) must be less than --image-gc-high-threshold (85)",
        ),
        (
            vec!["--image-gc-high-threshold=101"],
            "101 is not in 0..=100",
        ),
        (
            vec![
                "--image-gc-high-threshold=50",
                "--image-gc-low-threshold=50",
            ],
            "must be less than",
        ),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .arg("server")
            .arg("--data-dir")
            .arg(data.path())
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} is refused");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let nothing: Vec<_> = std::fs::read_dir(data.path())?.flatten().collect();
    assert!(nothing.is_empty(), "nothing started: {nothing:?}");
    Ok(())
}

#[tokio::test]
async fn image_gc_removes_the_least_recently_used_image_first_and_stops_at_the_low_threshold()
-> Result<()> {
    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("lru"))
        .server_arg("--image-gc-period=1s")
        .server_arg("--minimum-image-gc-age=0")
        .start()
        .await?;
    let data = cluster.data_dir();
    let tmpfs = Tmpfs::mount(32)?;
    let store = data.join("agent/images");
    std::fs::rename(&store, data.join("agent/images.before"))?;
    std::os::unix::fs::symlink(tmpfs.path(), &store)?;

    // Two images of 3 MB each, each run by a pod that is then deleted: `older` first.
    let modules = tempfile::tempdir()?;
    let mut layers = Vec::new();
    for (i, name) in ["wasmkube.local/lru/older:v1", "wasmkube.local/lru/newer:v1"]
        .into_iter()
        .enumerate()
    {
        let file = modules.path().join(format!("{i}.wasm"));
        std::fs::write(
            &file,
            crate::harness::module_with_data_segment(3_000_000 + i),
        )?;
        image_ok(data, &["build", &file.display().to_string(), "-t", name]).await?;
        let seen = inspect(data, name).await?;
        layers.push(
            seen["wasm"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let pod_name = format!("lru-{i}");
        cluster.apply_json(&pod(&pod_name, name)).await?;
        wait_succeeded(&cluster, &pod_name).await?;
        cluster
            .kubectl_ok(&["delete", "pod", &pod_name, "--wait=false"])
            .await?;
        cluster.wait_pod_gone(&pod_name, DEADLINE).await?;
        poll_until("the agent to let go of the image", DEADLINE, || async {
            let record = std::fs::read_to_string(store.join("in-use.json")).unwrap_or_default();
            Ok((!record.contains(name)).then_some(()))
        })
        .await?;
    }

    // 86% used: freeing one image (3 MB) reaches 80% (about 2 MB to free).
    let _filler = fill(tmpfs.path(), 4_500 << 10)?;
    poll_until("image GC to remove the older image", DEADLINE, || async {
        let listed = image_ok(data, &["list"]).await?;
        Ok((!listed.contains("lru/older")).then_some(listed))
    })
    .await
    .map(|listed| assert!(listed.contains("lru/newer"), "the newer stays: {listed}"))?;
    assert!(!blob(data, &layers[0]).exists(), "the older module is gone");
    // The pass stopped once it had freed enough: one removal, the newer image kept.
    let removals = || {
        std::fs::read_to_string(cluster.log_path())
            .unwrap_or_default()
            .matches("removing image to free bytes")
            .count()
    };
    poll_until("the removal in the log", DEADLINE, || async {
        Ok((removals() >= 1).then_some(()))
    })
    .await?;
    assert_eq!(removals(), 1, "one image removed");
    assert!(blob(data, &layers[1]).exists(), "the newer module stays");
    drop(cluster);
    Ok(())
}
