//! A disk that fills up under the store (review finding 8): redb fails the commit and then
//! refuses every operation on its handle until the file is reopened, which used to take a
//! restart. The store now reopens the file by itself once space is back. The test mounts
//! a small tmpfs (mounting needs root, as the test machines have) and unmounts it after.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmkube_store::{RedbStore, Store, StoreConfig, StoreError};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
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
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: this test needs root to mount a small filesystem",
            dir.path().display()
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `dir` to the last byte with one file.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the filesystem: {e}"),
        }
    }
    // Whatever a smaller write still fits.
    while file.write_all(&[0x5a; 512]).is_ok() {}
    path
}

#[tokio::test]
async fn a_commit_that_hits_a_full_disk_fails_cleanly_and_the_store_reopens_itself() {
    let fs = Tmpfs::mount(16);
    let store = RedbStore::open(StoreConfig {
        // No reserve: the commit itself meets the full disk.
        min_free_bytes: 0,
        ..StoreConfig::new(fs.dir.path().join("store.redb"))
    })
    .expect("store opens");
    store
        .create("/a", Bytes::from_static(b"first"))
        .await
        .expect("a write with space");
    let filler = fill(fs.dir.path());

    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let mut failures = Vec::new();
    for i in 0..4 {
        match store.create(&format!("/big/{i}"), big.clone()).await {
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    assert!(!failures.is_empty(), "4 MiB of writes fit on a full disk");
    for e in &failures {
        assert!(
            matches!(e, StoreError::NoSpace { .. } | StoreError::Unavailable(_)),
            "a full disk is reported as such, not as a backend error: {e:?}"
        );
    }
    assert!(
        store.health().is_err(),
        "the store reports that it cannot write"
    );

    std::fs::remove_file(&filler).expect("free the space");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store
            .create("/after", Bytes::from_static(b"space is back"))
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "not yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover after space came back: {e}"),
        }
    }
    assert!(store.health().is_ok(), "{:?}", store.health());
    let first = store.get("/a").await.expect("read").expect("/a kept");
    assert_eq!(first.value, Bytes::from_static(b"first"));
    assert!(
        store.current_revision() > first.mod_revision,
        "the revision moved on"
    );
    drop(store);
}
