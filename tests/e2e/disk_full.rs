//! Review finding 8, disk full: writes answered 500 and kept failing after space returned,
//! until a restart, while /readyz said ok. Now, on a small filesystem filled up, creates get
//! 507 Insufficient Storage with a message that says what to do, reads and deletes go on,
//! /readyz is not ready, and all of it recovers by itself once space is freed.
//!
//! The test mounts a 48 MiB tmpfs for the data directory (mounting needs root, as the
//! test machines have) and unmounts it when done.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use http::Method;
use serde_json::json;

use crate::bad_input::expect_status;
use crate::harness::raw;
use crate::harness::{TestCluster, poll_until};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB.
    pub(crate) fn mount(mib: u64) -> Result<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-small-fs-")
            .tempdir()?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!(
                "mounting a {mib} MiB tmpfs at {} failed ({status}): the disk-full test needs \
                 root to mount a small filesystem",
                dir.path().display()
            );
        }
        Ok(Tmpfs { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file in it does not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `dir` with a file, then gives `leave` bytes back; returns the file.
pub(crate) fn fill(dir: &Path, leave: u64) -> Result<PathBuf> {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0x5a_u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => return Err(e).context("filling the filesystem"),
        }
    }
    let len = file.metadata()?.len();
    file.set_len(len.saturating_sub(leave))?;
    Ok(path)
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_507_and_the_server_recovers_by_itself() -> Result<()> {
    let tmpfs = Tmpfs::mount(48)?;
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--disable-scheduler")
        .server_arg("--store-min-free-bytes=8388608")
        .data_dir_in(tmpfs.path())
        .start()
        .await?;
    let admin = cluster.client().await?;
    // /readyz answers 503 on purpose here: a client that does not retry 503s (kube-rs does).
    let probe = {
        let mut config = cluster.kube_config().await?;
        config.default_retry = false;
        kube::Client::try_from(config)?
    };
    let pid = cluster.server_pid();
    let configmap = |name: &str| {
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "data": {"k": "v"}}),
        )
    };
    let create = |name: &'static str| {
        let admin = admin.clone();
        async move {
            raw::send(
                &admin,
                Method::POST,
                CONFIGMAPS,
                Some("application/json"),
                configmap(name)?,
            )
            .await
        }
    };
    assert_eq!(create("before").await?.status, 201);
    assert_eq!(create("doomed").await?.status, 201);

    // Full, but for 4 MiB: less than the 8 MiB the store keeps free.
    let filler = fill(tmpfs.path(), 4 << 20)?;
    let refused = create("during").await?;
    let status = expect_status(&refused, 507, "InsufficientStorage")?;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no space left for the store")
            && message.contains("free some space and writes resume by themselves"),
        "{message}"
    );
    // A Service first allocates its cluster IP in the store: the same 507, not a 500.
    let service = raw::send(
        &admin,
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some("application/json"),
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "during"}, "spec": {"ports": [{"port": 80}]}}))?,
    )
    .await?;
    let status = expect_status(&service, 507, "InsufficientStorage")?;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("allocating a cluster IP")
            && message.contains("free some space and writes resume by themselves"),
        "{message}"
    );
    let stderr = cluster
        .kubectl_fails(&["create", "configmap", "by-kubectl", "-n", "default"])
        .await?;
    assert!(stderr.contains("no space left for the store"), "{stderr}");
    // Reads and deletes go on (deletes are how space is given back).
    let read = raw::get(&admin, &format!("{CONFIGMAPS}/before")).await?;
    assert_eq!(read.status, 200, "{}", read.body);
    let deleted = raw::send(
        &admin,
        Method::DELETE,
        &format!("{CONFIGMAPS}/doomed"),
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let ready = raw::get(&probe, "/readyz").await?;
    assert_eq!(
        ready.status, 503,
        "/readyz while the disk is full: {}",
        ready.body
    );
    assert!(
        ready.body.contains("no space left for the store"),
        "{}",
        ready.body
    );

    // Space comes back: ready again and writing, without a restart.
    std::fs::remove_file(&filler)?;
    poll_until(
        "/readyz ok after space is freed",
        std::time::Duration::from_secs(30),
        || {
            let probe = probe.clone();
            async move { Ok((raw::get(&probe, "/readyz").await?.status == 200).then_some(())) }
        },
    )
    .await?;
    let created = create("after").await?;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(cluster.server_pid(), pid, "the server was not restarted");
    let listed = raw::get(&admin, CONFIGMAPS).await?.json()?;
    let mut names: Vec<&str> = listed["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|cm| cm["metadata"]["name"].as_str())
        .filter(|n| *n != "kube-root-ca.crt")
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["after", "before"]);
    drop(cluster);
    Ok(())
}
