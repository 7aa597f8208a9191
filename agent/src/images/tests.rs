//! Tests of the image store: OCI layouts of both image shapes are built here (as directories
//! and tar archives), imported and resolved.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::oci::{self, Descriptor, Platform};
use super::*;

/// The smallest valid module: magic and version.
const MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// Another module (a custom section makes it different).
const OTHER_MODULE: &[u8] = b"\0asm\x01\0\0\0\0\x02\x01x";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Builds an OCI image layout directory.
struct Layout<'a> {
    dir: &'a Path,
    manifests: Vec<Descriptor>,
}

impl<'a> Layout<'a> {
    fn new(dir: &'a Path) -> Layout<'a> {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
        Layout {
            dir,
            manifests: Vec::new(),
        }
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let digest = sha(bytes);
        fs::write(
            self.dir
                .join("blobs/sha256")
                .join(&digest["sha256:".len()..]),
            bytes,
        )
        .expect("write blob");
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    fn manifest(&self, config: &Descriptor, layers: &[Descriptor]) -> Descriptor {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_TYPE_OCI_MANIFEST,
            "config": config,
            "layers": layers,
        });
        self.blob(
            oci::MEDIA_TYPE_OCI_MANIFEST,
            &serde_json::to_vec(&body).expect("json"),
        )
    }

    /// A CNCF wasm artifact.
    fn wasm_artifact(&self, module: &[u8]) -> Descriptor {
        let config = self.blob(
            oci::MEDIA_TYPE_WASM_CONFIG,
            br#"{"architecture":"wasm","os":"wasip1","layerDigests":[]}"#,
        );
        let layer = self.blob(oci::MEDIA_TYPE_WASM_LAYER, module);
        self.manifest(&config, &[layer])
    }

    /// A runwasi-style image: `files` in one tar layer, optionally gzip.
    fn runwasi(&self, entrypoint: &[&str], files: &[(&str, &[u8])], gzip: bool) -> Descriptor {
        let config = serde_json::json!({
            "os": "wasi", "architecture": "wasm",
            "config": {"Entrypoint": entrypoint, "Cmd": ["--greet", "world"], "Env": ["GREETING=hi", "EMPTY"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).expect("json"),
        );
        let layer = tar_of(files);
        let (media_type, layer) = if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&layer).expect("gzip");
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                gz.finish().expect("gzip"),
            )
        } else {
            ("application/vnd.oci.image.layer.v1.tar", layer)
        };
        let layer = self.blob(media_type, &layer);
        self.manifest(&config, &[layer])
    }

    fn add(&mut self, mut desc: Descriptor, annotations: &[(&str, &str)]) -> Descriptor {
        for (k, v) in annotations {
            desc.annotations.insert((*k).into(), (*v).into());
        }
        self.manifests.push(desc.clone());
        self.write_index();
        desc
    }

    fn write_index(&self) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_TYPE_OCI_INDEX,
            "manifests": self.manifests,
        });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write index");
    }
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *content)
            .expect("tar append");
    }
    builder.into_inner().expect("tar")
}

/// Archives a layout directory as a tar file (entries relative to the layout).
fn archive(dir: &Path, out: &Path) {
    let mut builder = tar::Builder::new(fs::File::create(out).expect("create"));
    builder.append_dir_all(".", dir).expect("tar dir");
    builder.finish().expect("finish");
}

fn store(tmp: &tempfile::TempDir) -> ImageStore {
    ImageStore::open(&ImageStore::dir_in_data_dir(&tmp.path().join("data"))).expect("open store")
}

#[test]
fn a_wasm_artifact_directory_resolves_by_full_short_and_digest_references() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let manifest = layout.wasm_artifact(MODULE);
    let desc = layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "hello:v1")]);
    let store = store(&tmp);

    let imported = store.import(&tmp.path().join("layout")).expect("import");
    assert_eq!(
        imported,
        vec![ImportedImage {
            name: Some("docker.io/library/hello:v1".into()),
            digest: desc.digest.clone(),
            kind: ImageKind::WasmArtifact,
            note: None,
        }]
    );
    for reference in [
        "hello:v1".to_string(),
        "docker.io/library/hello:v1".to_string(),
        format!("hello@{}", desc.digest),
        desc.digest.clone(),
    ] {
        let resolved = store.resolve(&reference).expect("resolve");
        assert_eq!(resolved.digest, desc.digest, "{reference}");
        assert_eq!(resolved.kind, ImageKind::WasmArtifact);
        assert_eq!(resolved.wasm_digest, sha(MODULE));
        assert_eq!(fs::read(&resolved.wasm).expect("read module"), MODULE);
        assert!(resolved.entrypoint.is_empty());
    }
    assert_eq!(
        store.list().expect("list"),
        vec![("docker.io/library/hello:v1".into(), desc.digest)]
    );
}

#[test]
fn a_runwasi_image_in_a_tar_archive_with_a_gzip_layer_resolves_to_its_entrypoint_module() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let manifest = layout.runwasi(
        &["/app/hello.wasm"],
        &[
            ("app/hello.wasm", MODULE),
            ("app/other.wasm", OTHER_MODULE),
            ("etc/readme", b"text"),
        ],
        true,
    );
    layout.add(
        manifest,
        &[(oci::ANNOTATION_REF_NAME, "wasmkube.local/samples/hello:v1")],
    );
    archive(&tmp.path().join("layout"), &tmp.path().join("hello.tar"));
    let store = store(&tmp);

    let imported = store.import(&tmp.path().join("hello.tar")).expect("import");
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].name.as_deref(),
        Some("wasmkube.local/samples/hello:v1")
    );
    assert_eq!(imported[0].kind, ImageKind::RunwasiLayer);

    let resolved = store
        .resolve("wasmkube.local/samples/hello:v1")
        .expect("resolve");
    assert_eq!(resolved.kind, ImageKind::RunwasiLayer);
    assert_eq!(fs::read(&resolved.wasm).expect("read module"), MODULE);
    assert_eq!(resolved.entrypoint, vec!["/app/hello.wasm"]);
    assert_eq!(
        resolved.env,
        vec![
            ("GREETING".to_string(), "hi".to_string()),
            ("EMPTY".to_string(), String::new())
        ]
    );
    assert_eq!(
        resolved.argv(&[], &[]),
        vec!["/app/hello.wasm", "--greet", "world"]
    );
    assert_eq!(
        resolved.argv(&[], &["x".into()]),
        vec!["/app/hello.wasm", "x"]
    );
    assert_eq!(resolved.argv(&["m.wasm".into()], &[]), vec!["m.wasm"]);
    // Nothing of the unpacked archive is left behind.
    assert_eq!(
        fs::read_dir(store.root().join("tmp"))
            .expect("tmp dir")
            .count(),
        0
    );
}

#[test]
fn a_runwasi_image_without_entrypoint_runs_its_only_wasm_file_and_honours_whiteouts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let config = layout.blob(
        "application/vnd.oci.image.config.v1+json",
        br#"{"os":"wasi","architecture":"wasm","config":{}}"#,
    );
    let lower = layout.blob(
        "application/vnd.oci.image.layer.v1.tar",
        &tar_of(&[("old.wasm", OTHER_MODULE), ("bin/app.wasm", MODULE)]),
    );
    let upper = layout.blob(
        "application/vnd.oci.image.layer.v1.tar",
        &tar_of(&[(".wh.old.wasm", b"")]),
    );
    let manifest = layout.manifest(&config, &[lower, upper]);
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "app")]);
    let store = store(&tmp);
    store.import(&layout_dir).expect("import");
    let resolved = store.resolve("app").expect("resolve");
    assert_eq!(fs::read(&resolved.wasm).expect("read"), MODULE);
    assert!(resolved.entrypoint.is_empty());
}

#[test]
fn a_corrupted_blob_is_rejected_and_names_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let manifest = layout.wasm_artifact(MODULE);
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "hello")]);
    // Flip the module's content behind its digest.
    let path = layout_dir
        .join("blobs/sha256")
        .join(&sha(MODULE)["sha256:".len()..]);
    fs::write(&path, b"\0asm\x01\0\0\x01").expect("corrupt");
    let store = store(&tmp);

    let err = store.import(&layout_dir).expect_err("corrupt blob");
    assert!(
        matches!(&err, ImageError::DigestMismatch { expected, .. } if *expected == sha(MODULE)),
        "{err}"
    );
    assert!(!store.has_blob(&sha(MODULE)));
    assert!(store.list().expect("list").is_empty());
    assert!(matches!(
        store.resolve("hello"),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn a_tag_only_ref_name_needs_a_base_name_like_ctr_import() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let manifest = layout.wasm_artifact(MODULE);
    layout.add(manifest, &[(oci::ANNOTATION_REF_NAME, "v2")]);
    let store = store(&tmp);

    let imported = store.import(&layout_dir).expect("import");
    assert_eq!(imported[0].name, None);
    assert!(
        imported[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("--base-name")),
        "{:?}",
        imported[0].note
    );
    let imported = store
        .import_with(
            &layout_dir,
            &ImportOptions {
                base_name: Some("wasmkube.local/samples/hello".into()),
            },
        )
        .expect("import");
    assert_eq!(
        imported[0].name.as_deref(),
        Some("wasmkube.local/samples/hello:v2")
    );
    store
        .resolve("wasmkube.local/samples/hello:v2")
        .expect("named");
}

#[test]
fn a_missing_image_says_how_to_import_it_and_bad_names_are_invalid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = store(&tmp);
    let err = store.resolve("nothere:v1").expect_err("absent");
    assert_eq!(err.reason(), "ErrImagePull");
    let message = err.to_string();
    assert!(
        message.contains("docker.io/library/nothere:v1")
            && message.contains(&format!(
                "wasmkube image import --data-dir {}",
                tmp.path().join("data").display()
            )),
        "{message}"
    );
    let err = store.resolve("Not/Valid").expect_err("invalid");
    assert_eq!(err.reason(), "InvalidImageName");
}

#[test]
fn a_linux_image_is_not_a_wasm_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let config = layout.blob(
        "application/vnd.oci.image.config.v1+json",
        br#"{"os":"linux","architecture":"amd64","config":{"Entrypoint":["/bin/sh"]}}"#,
    );
    let layer = layout.blob(
        "application/vnd.oci.image.layer.v1.tar",
        &tar_of(&[("bin/sh", b"\x7fELF....")]),
    );
    let manifest = layout.manifest(&config, &[layer]);
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "busybox")]);
    let store = store(&tmp);
    let err = store.import(&layout_dir).expect_err("not wasm");
    assert!(
        matches!(&err, ImageError::NotWasm { reason, .. } if reason.contains("/bin/sh")),
        "{err}"
    );
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn an_index_is_followed_to_its_wasm_platform_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let mut wasm = layout.wasm_artifact(MODULE);
    wasm.platform = Some(Platform {
        os: "wasip1".into(),
        architecture: "wasm".into(),
    });
    // A linux manifest whose blobs the layout does not carry.
    let linux = Descriptor {
        media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
        digest: sha(b"absent"),
        size: 6,
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
        }),
        annotations: BTreeMap::new(),
    };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": oci::MEDIA_TYPE_OCI_INDEX, "manifests": [linux, wasm]});
    let index = layout.blob(
        oci::MEDIA_TYPE_OCI_INDEX,
        &serde_json::to_vec(&index).expect("json"),
    );
    let top = layout.add(index, &[(oci::ANNOTATION_IMAGE_NAME, "multi:1")]);
    let store = store(&tmp);
    store.import(&layout_dir).expect("import");
    let resolved = store.resolve("multi:1").expect("resolve");
    assert_eq!(resolved.digest, top.digest);
    assert_eq!(resolved.wasm_digest, sha(MODULE));
}

#[test]
fn importing_again_moves_the_name_to_the_new_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = store(&tmp);
    for (i, module) in [MODULE, OTHER_MODULE].into_iter().enumerate() {
        let dir = tmp.path().join(format!("layout{i}"));
        let mut layout = Layout::new(&dir);
        let manifest = layout.wasm_artifact(module);
        layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "hello")]);
        store.import(&dir).expect("import");
        let resolved = store.resolve("hello").expect("resolve");
        assert_eq!(resolved.wasm_digest, sha(module));
    }
    assert_eq!(store.list().expect("list").len(), 1);
}

#[tokio::test]
async fn ensure_applies_the_pull_policy_and_uses_a_puller_for_absent_images() {
    /// Pulls by importing a prepared layout: stands in for a registry client.
    struct LayoutPuller(std::path::PathBuf);
    impl Puller for LayoutPuller {
        fn pull<'a>(&'a self, _: &'a Reference, store: &'a ImageStore) -> PullFuture<'a> {
            Box::pin(async move {
                let imported = store.import(&self.0)?;
                Ok(imported[0].digest.clone())
            })
        }
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let manifest = layout.wasm_artifact(MODULE);
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "pulled:1")]);
    let store = store(&tmp);

    let err = store
        .ensure("pulled:1", PullPolicy::Never, None)
        .await
        .expect_err("never");
    assert_eq!(err.reason(), "ErrImageNeverPull");
    let err = store
        .ensure("pulled:1", PullPolicy::IfNotPresent, None)
        .await
        .expect_err("no puller");
    assert_eq!(err.reason(), "ErrImagePull");
    let puller = LayoutPuller(layout_dir);
    let resolved = store
        .ensure("pulled:1", PullPolicy::IfNotPresent, Some(&puller))
        .await
        .expect("pulled");
    assert_eq!(resolved.wasm_digest, sha(MODULE));
    assert_eq!(PullPolicy::for_container(None, "hello"), PullPolicy::Always);
    assert_eq!(
        PullPolicy::for_container(None, "hello:v1"),
        PullPolicy::IfNotPresent
    );
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_are_one_pull() {
    /// Imports a prepared layout after a pause, counting its pulls.
    struct CountingPuller {
        layout: std::path::PathBuf,
        pulls: std::sync::atomic::AtomicUsize,
    }
    impl Puller for CountingPuller {
        fn pull<'a>(&'a self, _: &'a Reference, store: &'a ImageStore) -> PullFuture<'a> {
            Box::pin(async move {
                self.pulls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let imported = store.import(&self.layout)?;
                Ok(imported[0].digest.clone())
            })
        }
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let manifest = layout.wasm_artifact(MODULE);
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "shared:1")]);
    let store = store(&tmp);
    let puller = CountingPuller {
        layout: layout_dir,
        pulls: Default::default(),
    };
    let starts = (0..10)
        .map(|_| store.ensure_pulling("shared:1", PullPolicy::IfNotPresent, Some(&puller), |_| {}));
    let results = futures::future::join_all(starts).await;
    let pulled = results
        .into_iter()
        .map(|r| r.expect("resolved").1)
        .filter(|pulled| *pulled)
        .count();
    assert_eq!(puller.pulls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(pulled, 1, "one start pulled, nine found the image");
    assert!(
        store.pulls.lock().expect("gates").is_empty(),
        "no gate left behind"
    );
}

#[test]
fn imports_running_alongside_resolves_and_each_other_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = store(&tmp);
    let layouts: Vec<std::path::PathBuf> = (0..4)
        .map(|i| {
            let dir = tmp.path().join(format!("layout{i}"));
            let mut layout = Layout::new(&dir);
            let module = if i % 2 == 0 { MODULE } else { OTHER_MODULE };
            let manifest = layout.wasm_artifact(module);
            let name = format!("app{i}");
            layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, name.as_str())]);
            dir
        })
        .collect();
    store.import(&layouts[0]).expect("first import");
    std::thread::scope(|s| {
        // An agent resolving while imports rewrite the names never sees a torn index.
        let reader = s.spawn(|| {
            for _ in 0..300 {
                store.resolve("app0").expect("resolve during imports");
            }
        });
        let importers: Vec<_> = layouts[1..]
            .iter()
            .map(|dir| s.spawn(|| store.import(dir).expect("concurrent import")))
            .collect();
        for importer in importers {
            importer.join().expect("importer");
        }
        reader.join().expect("reader");
    });
    let names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        (0..4)
            .map(|i| format!("docker.io/library/app{i}:latest"))
            .collect::<Vec<_>>()
    );
}

/// Bounds small enough for test data: 1 MiB before the 100:1 ratio applies.
fn small_limits() -> ImportLimits {
    ImportLimits {
        max_uncompressed_bytes: 1 << 30,
        max_entry_bytes: 1 << 30,
        max_gzip_ratio: 100,
        ratio_grace_bytes: 1 << 20,
    }
}

fn gzip_file(input: &Path, output: &Path) {
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(output).expect("create"),
        flate2::Compression::best(),
    );
    std::io::copy(&mut fs::File::open(input).expect("open"), &mut gz).expect("gzip");
    gz.finish().expect("gzip");
}

/// A layout (directory) of a wasm artifact named `bomb:v1` plus an unreferenced blob of
/// `zeros` zero bytes.
fn layout_with_zeros(dir: &Path, zeros: usize) {
    let mut layout = Layout::new(dir);
    let manifest = layout.wasm_artifact(MODULE);
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "bomb:v1")]);
    layout.blob("application/octet-stream", &vec![0u8; zeros]);
}

#[test]
fn a_gzip_bomb_archive_is_refused_with_a_clear_error_and_names_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    layout_with_zeros(&tmp.path().join("layout"), 16 << 20);
    archive(&tmp.path().join("layout"), &tmp.path().join("bomb.tar"));
    gzip_file(
        &tmp.path().join("bomb.tar"),
        &tmp.path().join("bomb.tar.gz"),
    );
    let store = store(&tmp).with_limits(small_limits());

    let error = store
        .import(&tmp.path().join("bomb.tar.gz"))
        .expect_err("a gzip bomb was imported");
    assert!(matches!(error, ImageError::TooLarge { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("bomb.tar.gz"), "{message}");
    assert!(message.contains("more than 100:1"), "{message}");
    assert!(message.contains("decompression bomb"), "{message}");
    assert!(store.list().expect("list").is_empty());
    // The same archive uncompressed is within every bound.
    assert!(store.import(&tmp.path().join("bomb.tar")).is_ok());
}

#[test]
fn an_archive_expanding_past_the_size_limit_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    layout_with_zeros(&tmp.path().join("layout"), 256 << 10);
    archive(&tmp.path().join("layout"), &tmp.path().join("image.tar"));
    gzip_file(
        &tmp.path().join("image.tar"),
        &tmp.path().join("image.tar.gz"),
    );
    let store = store(&tmp).with_limits(ImportLimits {
        max_uncompressed_bytes: 128 << 10,
        ..small_limits()
    });
    let error = store
        .import(&tmp.path().join("image.tar.gz"))
        .expect_err("imported past the limit");
    assert!(
        error
            .to_string()
            .contains("expands to more than 131072 bytes uncompressed"),
        "{error}"
    );
}

#[test]
fn a_tar_entry_over_the_entry_limit_is_refused_by_its_size() {
    let tmp = tempfile::tempdir().expect("tmp");
    layout_with_zeros(&tmp.path().join("layout"), 256 << 10);
    archive(&tmp.path().join("layout"), &tmp.path().join("image.tar"));
    let store = store(&tmp).with_limits(ImportLimits {
        max_entry_bytes: 128 << 10,
        ..small_limits()
    });
    let error = store
        .import(&tmp.path().join("image.tar"))
        .expect_err("imported an entry past the limit");
    let message = error.to_string();
    assert!(message.contains("blobs/sha256/"), "{message}");
    assert!(message.contains("262144 bytes"), "{message}");
}

#[test]
fn a_gzip_bomb_layer_of_a_runwasi_image_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout_dir = tmp.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let zeros = vec![0u8; 16 << 20];
    let manifest = layout.runwasi(
        &["/app/hello.wasm"],
        &[("app/zeros", &zeros), ("app/hello.wasm", MODULE)],
        true,
    );
    layout.add(manifest, &[(oci::ANNOTATION_IMAGE_NAME, "bomb-layer:v1")]);
    let store = store(&tmp).with_limits(small_limits());
    let error = store
        .import(&tmp.path().join("layout"))
        .expect_err("a gzip bomb layer was imported");
    let message = error.to_string();
    assert!(message.contains("layer sha256:"), "{message}");
    assert!(message.contains("decompression bomb"), "{message}");
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn the_air_gap_directory_imports_layouts_and_archives_and_skips_other_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join(airgap::AIRGAP_DIR);
    let hello_dir = dir.join("hello");
    let mut hello = Layout::new(&hello_dir);
    let hello_desc = hello.wasm_artifact(MODULE);
    hello.add(
        hello_desc,
        &[(oci::ANNOTATION_IMAGE_NAME, "airgap/hello:v1")],
    );
    let other_dir = tmp.path().join("other");
    let mut other = Layout::new(&other_dir);
    let other_desc = other.wasm_artifact(OTHER_MODULE);
    other.add(
        other_desc,
        &[(oci::ANNOTATION_IMAGE_NAME, "airgap/other:v1")],
    );
    archive(&other_dir, &dir.join("other.tar"));
    fs::write(dir.join("README.txt"), "not an image").expect("write");
    fs::write(dir.join("broken.tar"), "not a tar archive").expect("write");
    let store = store(&tmp);

    let results = airgap::import_dir(&store, &dir);
    // Sorted by name: broken.tar fails (reported, not fatal), then hello/ and other.tar.
    let names: Vec<String> = results
        .iter()
        .map(|r| r.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["broken.tar", "hello", "other.tar"]);
    assert!(results[0].result.is_err());
    for (result, name) in results[1..].iter().zip(["hello", "other"]) {
        let images = result.result.as_ref().expect("imported");
        let full = format!("docker.io/airgap/{name}:v1");
        assert_eq!(images[0].name.as_deref(), Some(full.as_str()));
        store.resolve(&full).expect("resolves");
    }
    // A second start imports the same images again, changing nothing.
    let again = airgap::import_dir(&store, &dir);
    assert_eq!(
        again[1].result.as_ref().ok(),
        results[1].result.as_ref().ok()
    );
    assert_eq!(store.list().expect("list").len(), 2);
    assert!(airgap::import_dir(&store, &tmp.path().join("missing")).is_empty());
}

#[test]
fn removing_an_image_keeps_what_another_shares_and_takes_its_compiled_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = store(&tmp);
    let dir = tmp.path().join("layout");
    let mut layout = Layout::new(&dir);
    // Both artifacts have the same config blob, and modules of their own.
    let a = layout.wasm_artifact(MODULE);
    layout.add(a.clone(), &[(oci::ANNOTATION_IMAGE_NAME, "a:v1")]);
    let b = layout.wasm_artifact(OTHER_MODULE);
    layout.add(b, &[(oci::ANNOTATION_IMAGE_NAME, "b:v1")]);
    store.import(&dir).expect("import");
    let manifest: oci::Manifest =
        serde_json::from_slice(&store.read_blob(&a.digest).expect("manifest")).expect("json");
    let cache = tmp.path().join("data/agent").join(CODE_CACHE_DIR);
    fs::create_dir_all(&cache).expect("mkdir");
    let compiled =
        |module: &[u8]| cache.join(format!("{}-0123456789abcdef.cwasm", &sha(module)[7..]));
    for module in [MODULE, OTHER_MODULE] {
        fs::write(compiled(module), b"code").expect("write");
    }

    // A part of a named image is not an image: removing it would break a:v1.
    let part = store.remove_image(&sha(MODULE), &[]).expect_err("a layer");
    assert!(part.to_string().contains("is a blob of image"), "{part}");
    assert!(store.resolve("a:v1").is_ok());

    // A pod uses a:v1 (as its container writes it): the agent's record refuses its removal.
    store.pod_uses("uid-1", vec!["a:v1".into()]);
    let in_use = store.recorded_in_use().expect("record");
    assert_eq!(in_use, vec!["a:v1".to_string()]);
    let refused = store.remove_image("a:v1", &in_use).expect_err("in use");
    assert!(matches!(refused, ImageError::InUse { .. }), "{refused}");
    assert!(
        store.resolve("a:v1").is_ok(),
        "a refused removal changes nothing"
    );
    store.pod_gone("uid-1");
    assert!(store.recorded_in_use().expect("record").is_empty());

    let removed = store.remove_image("a:v1", &[]).expect("remove");
    assert_eq!(removed.names, vec!["docker.io/library/a:v1".to_string()]);
    assert!(removed.blobs_removed);
    assert!(!store.has_blob(&a.digest) && !store.has_blob(&sha(MODULE)));
    assert!(!compiled(MODULE).exists(), "its compiled code went with it");
    assert!(
        store.has_blob(&manifest.config.digest),
        "b shares the config"
    );
    assert!(compiled(OTHER_MODULE).exists());
    assert!(store.resolve("b:v1").is_ok());
    assert!(matches!(
        store.remove_image("a:v1", &[]),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn a_download_of_the_wrong_size_is_not_stored_and_a_right_one_is_moved_into_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store(&tmp);
    let digest = sha(MODULE);
    let download = |bytes: &[u8]| {
        let mut file = tempfile::NamedTempFile::new_in(store.tmp_dir()).expect("temp file");
        file.write_all(bytes).expect("write");
        file
    };

    let short = download(&MODULE[..4]);
    let short_path = short.path().to_path_buf();
    let error = store
        .ingest_verified_download(short, &digest, MODULE.len() as u64)
        .expect_err("a short download");
    assert!(matches!(error, ImageError::SizeMismatch { .. }), "{error}");
    assert!(!store.has_blob(&digest), "nothing stored");
    assert!(!short_path.exists(), "the short download is removed");

    let whole = download(MODULE);
    let whole_path = whole.path().to_path_buf();
    store
        .ingest_verified_download(whole, &digest, MODULE.len() as u64)
        .expect("stored");
    assert_eq!(
        fs::read(store.blob_path(&digest).expect("path")).expect("read"),
        MODULE
    );
    assert!(!whole_path.exists(), "moved, not copied");

    let bad = download(MODULE);
    assert!(
        store
            .ingest_verified_download(bad, "sha256:nothex", MODULE.len() as u64)
            .is_err(),
        "a malformed digest names no file"
    );
}
