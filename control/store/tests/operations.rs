//! What only the redb backend does: reopening a file, its history policy, its file's mode.
//! The operations' semantics shared with etcd are in `conformance.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;
use wasmkube_store::{ListOptions, RedbStore, Store, StoreConfig};

fn open(dir: &TempDir) -> Arc<RedbStore> {
    RedbStore::open(StoreConfig::new(dir.path().join("store.redb"))).expect("store opens")
}

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn list(
    store: &RedbStore,
    prefix: &str,
    revision: Option<i64>,
) -> Vec<(String, String, i64)> {
    let result = store
        .list(ListOptions {
            prefix: prefix.into(),
            revision,
            ..Default::default()
        })
        .await
        .expect("list succeeds");
    result
        .items
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.mod_revision,
            )
        })
        .collect()
}

#[tokio::test]
async fn reopening_restores_values_counters_and_history() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        let a = store.create("/a", value("1")).await.unwrap();
        store.create("/b", value("1")).await.unwrap();
        store
            .update("/a", value("2"), a.mod_revision)
            .await
            .unwrap();
        store.delete("/b", None).await.unwrap();
        store.create("/c", value("1")).await.unwrap();
        store.compact(2).await.unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.current_revision(), 5);
    assert_eq!(store.compacted_revision(), 2);
    assert_eq!(
        list(&store, "", None).await,
        [("/a".into(), "2".into(), 3), ("/c".into(), "1".into(), 5)]
    );
    assert_eq!(
        list(&store, "", Some(2)).await,
        [("/a".into(), "1".into(), 1), ("/b".into(), "1".into(), 2)]
    );
    // History after the compacted revision replays from disk.
    let mut watch = store.watch("", 2).await.unwrap();
    let revisions: Vec<i64> = [
        watch.next().await.unwrap(),
        watch.next().await.unwrap(),
        watch.next().await.unwrap(),
    ]
    .iter()
    .map(|e| e.revision())
    .collect();
    assert_eq!(revisions, [3, 4, 5]);
    // New writes continue the revision counter.
    assert_eq!(
        store.create("/d", value("1")).await.unwrap().mod_revision,
        6
    );
}

#[tokio::test]
async fn the_history_policy_bounds_the_number_of_retained_events() {
    let dir = TempDir::new().unwrap();
    let mut config = StoreConfig::new(dir.path().join("store.redb"));
    config.history_max_events = 10;
    let store = RedbStore::open(config).unwrap();
    for i in 0..30 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    // The policy runs about once a second on the writer thread.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.compacted_revision() < 20 {
        assert!(
            Instant::now() < deadline,
            "history was not compacted: {}",
            store.compacted_revision()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.compacted_revision(), 20);
    assert_eq!(list(&store, "/k/", None).await.len(), 30);
    assert!(store.watch("", 19).await.is_err());
    assert!(store.watch("", 20).await.is_ok());
}

#[tokio::test]
async fn the_history_policy_compacts_events_older_than_the_maximum_age() {
    let dir = TempDir::new().unwrap();
    let mut config = StoreConfig::new(dir.path().join("store.redb"));
    config.history_max_age = Duration::ZERO;
    let store = RedbStore::open(config).unwrap();
    for i in 0..5 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.compacted_revision() < 5 {
        assert!(
            Instant::now() < deadline,
            "history was not compacted: {}",
            store.compacted_revision()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(list(&store, "/k/", None).await.len(), 5);
}

#[tokio::test]
async fn the_store_file_is_private_to_its_user_even_when_an_older_version_made_it_0644() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = open(&dir);
        store.create("/a", value("1")).await.unwrap();
    }
    assert_eq!(mode(&path), 0o600, "created 0600");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(&dir);
    assert_eq!(mode(&path), 0o600, "tightened on open");
    assert!(
        store.get("/a").await.unwrap().is_some(),
        "and still readable"
    );
}
