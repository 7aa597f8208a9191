//! The semantics of every store operation on the redb backend: revisions, preconditions
//! and their errors, lists at past revisions with paging, compaction and reopen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;
use wasmkube_store::{KeyValue, ListOptions, RedbStore, Store, StoreConfig, StoreError};

fn open(dir: &TempDir) -> Arc<RedbStore> {
    RedbStore::open(StoreConfig::new(dir.path().join("store.redb"))).expect("store opens")
}

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
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
async fn create_assigns_increasing_revisions_and_get_reads_the_value() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    assert_eq!(store.current_revision(), 0);
    let a = store.create("/a", value("1")).await.unwrap();
    let b = store.create("/b", value("2")).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert_eq!((b.create_revision, b.mod_revision), (2, 2));
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.get("/a").await.unwrap(), Some(a));
    assert_eq!(store.get("/missing").await.unwrap(), None);
}

#[tokio::test]
async fn create_of_an_existing_key_fails_with_already_exists_and_takes_no_revision() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.create("/a", value("1")).await.unwrap();
    let err = store.create("/a", value("2")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if key == "/a"),
        "{err:?}"
    );
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, value("1"));
}

#[tokio::test]
async fn writes_over_the_size_limit_fail_with_too_large_and_take_no_revision() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let limit = wasmkube_store::DEFAULT_MAX_VALUE_BYTES;
    let key = "/big";
    let fits = Bytes::from(vec![b'x'; limit - key.len()]);
    let created = store.create(key, fits).await.unwrap();
    let over = Bytes::from(vec![b'x'; limit - key.len() + 1]);
    let err = store
        .update(key, over.clone(), created.mod_revision)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { size, limit: l, .. } if size == limit + 1 && l == limit),
        "{err:?}"
    );
    let err = store.create("/big", over).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert_eq!(store.current_revision(), 1);
}

#[tokio::test]
async fn update_with_the_current_mod_revision_replaces_the_value_and_keeps_the_create_revision() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let created = store.create("/a", value("1")).await.unwrap();
    store.create("/other", value("x")).await.unwrap();
    let updated = store
        .update("/a", value("2"), created.mod_revision)
        .await
        .unwrap();
    assert_eq!((updated.create_revision, updated.mod_revision), (1, 3));
    assert_eq!(store.get("/a").await.unwrap(), Some(updated));
}

#[tokio::test]
async fn update_with_a_stale_mod_revision_fails_with_conflict_naming_the_actual_revision() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let created = store.create("/a", value("1")).await.unwrap();
    store
        .update("/a", value("2"), created.mod_revision)
        .await
        .unwrap();
    let err = store
        .update("/a", value("3"), created.mod_revision)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref key, expected: 1, actual: 2 } if key == "/a"),
        "{err:?}"
    );
    assert_eq!(store.current_revision(), 2);
}

#[tokio::test]
async fn update_and_delete_of_a_missing_key_fail_with_not_found() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let err = store.update("/nope", value("1"), 1).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref key } if key == "/nope"),
        "{err:?}"
    );
    let err = store.delete("/nope", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(store.current_revision(), 0);
}

#[tokio::test]
async fn delete_returns_the_last_value_and_the_revision_of_the_deletion() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let created = store.create("/a", value("1")).await.unwrap();
    let (prev, revision) = store.delete("/a", None).await.unwrap();
    assert_eq!(prev, created);
    assert_eq!(revision, 2);
    assert_eq!(store.get("/a").await.unwrap(), None);
    // The key can be created again, with a fresh create revision.
    let again = store.create("/a", value("new")).await.unwrap();
    assert_eq!(again.create_revision, 3);
}

#[tokio::test]
async fn delete_with_a_stale_mod_revision_fails_with_conflict_and_keeps_the_key() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let created = store.create("/a", value("1")).await.unwrap();
    let updated = store
        .update("/a", value("2"), created.mod_revision)
        .await
        .unwrap();
    let err = store
        .delete("/a", Some(created.mod_revision))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.get("/a").await.unwrap(), Some(updated.clone()));
    store
        .delete("/a", Some(updated.mod_revision))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_creates_of_one_key_let_exactly_one_win_and_revisions_stay_contiguous() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let same = store.create("/same", value(&i.to_string())).await;
            let own = store.create(&format!("/own/{i}"), value("x")).await;
            (same, own)
        }));
    }
    let mut winners = 0;
    let mut revisions = Vec::new();
    for task in tasks {
        let (same, own) = task.await.unwrap();
        match same {
            Ok(kv) => {
                winners += 1;
                revisions.push(kv.mod_revision);
            }
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        revisions.push(own.unwrap().mod_revision);
    }
    assert_eq!(winners, 1);
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=33).collect::<Vec<_>>());
}

#[tokio::test]
async fn list_returns_only_keys_under_the_prefix_in_key_order() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for key in ["/b/2", "/a/1", "/b/1", "/ab", "/b/10", "/c"] {
        store.create(key, value(key)).await.unwrap();
    }
    let result = store
        .list(ListOptions {
            prefix: "/b/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&result.items), ["/b/1", "/b/10", "/b/2"]);
    assert_eq!(result.revision, 6);
    assert!(!result.more);
    let all = store.list(ListOptions::default()).await.unwrap();
    assert_eq!(
        keys(&all.items),
        ["/a/1", "/ab", "/b/1", "/b/10", "/b/2", "/c"]
    );
}

#[tokio::test]
async fn list_pages_with_start_after_and_limit_cover_every_key_once() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        store
            .create(&format!("/p/{i:02}"), value("v"))
            .await
            .unwrap();
    }
    store.create("/q/0", value("v")).await.unwrap();
    let mut seen = Vec::new();
    let mut start_after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(ListOptions {
                prefix: "/p/".into(),
                start_after,
                limit: Some(3),
                revision: None,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
    assert_eq!(pages, 4);
    assert_eq!(
        seen,
        (0..10).map(|i| format!("/p/{i:02}")).collect::<Vec<_>>()
    );
    // A limit of exactly the number of keys reports no more.
    let exact = store
        .list(ListOptions {
            prefix: "/p/".into(),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((exact.items.len(), exact.more), (10, false));
}

#[tokio::test]
async fn list_at_a_past_revision_shows_the_state_as_it_was_then() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let a = store.create("/k/a", value("a1")).await.unwrap(); // 1
    let b = store.create("/k/b", value("b1")).await.unwrap(); // 2
    store.create("/other", value("o")).await.unwrap(); // 3
    let at = store.current_revision();
    store
        .update("/k/a", value("a2"), a.mod_revision)
        .await
        .unwrap(); // 4
    store.delete("/k/b", Some(b.mod_revision)).await.unwrap(); // 5
    store.create("/k/c", value("c1")).await.unwrap(); // 6
    store.create("/k/b", value("b2")).await.unwrap(); // 7

    assert_eq!(
        list(&store, "/k/", Some(at)).await,
        [
            ("/k/a".into(), "a1".into(), 1),
            ("/k/b".into(), "b1".into(), 2)
        ]
    );
    assert_eq!(
        list(&store, "/k/", Some(4)).await,
        [
            ("/k/a".into(), "a2".into(), 4),
            ("/k/b".into(), "b1".into(), 2)
        ]
    );
    assert_eq!(
        list(&store, "/k/", Some(5)).await,
        [("/k/a".into(), "a2".into(), 4)]
    );
    assert_eq!(
        list(&store, "/k/", None).await,
        [
            ("/k/a".into(), "a2".into(), 4),
            ("/k/b".into(), "b2".into(), 7),
            ("/k/c".into(), "c1".into(), 6)
        ]
    );
    assert_eq!(list(&store, "/k/", Some(0)).await, []);
    let result = store
        .list(ListOptions {
            prefix: "/k/".into(),
            revision: Some(at),
            ..Default::default()
        })
        .await;
    assert_eq!(result.unwrap().revision, at);
}

#[tokio::test]
async fn paging_at_a_past_revision_is_consistent_while_writes_continue() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for i in 0..9 {
        store
            .create(&format!("/p/{i}"), value("old"))
            .await
            .unwrap();
    }
    let first = store
        .list(ListOptions {
            prefix: "/p/".into(),
            limit: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    let snapshot = first.revision;
    // Between pages: delete a key of the next page, create new keys, update others.
    store.delete("/p/5", None).await.unwrap();
    store.create("/p/45", value("new")).await.unwrap();
    store.create("/p/99", value("new")).await.unwrap();
    let p7 = store.get("/p/7").await.unwrap().unwrap();
    store
        .update("/p/7", value("new"), p7.mod_revision)
        .await
        .unwrap();

    let mut seen: Vec<(String, Bytes)> = first
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    let mut start_after = seen.last().map(|(k, _)| k.clone());
    loop {
        let page = store
            .list(ListOptions {
                prefix: "/p/".into(),
                start_after,
                limit: Some(4),
                revision: Some(snapshot),
            })
            .await
            .unwrap();
        assert_eq!(page.revision, snapshot);
        seen.extend(
            page.items
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone())),
        );
        if !page.more {
            break;
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
    let expected: Vec<(String, Bytes)> =
        (0..9).map(|i| (format!("/p/{i}"), value("old"))).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn list_below_the_compacted_revision_or_beyond_the_current_one_fails() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    store.compact(3).await.unwrap();
    let at = |revision| ListOptions {
        prefix: "/k/".into(),
        revision: Some(revision),
        ..Default::default()
    };
    let err = store.list(at(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 2,
                compacted: 3
            }
        ),
        "{err:?}"
    );
    let err = store.list(at(6)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::FutureRevision {
                requested: 6,
                current: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.list(at(3)).await.unwrap().items.len(), 3);
    assert_eq!(store.list(at(5)).await.unwrap().items.len(), 5);
}

#[tokio::test]
async fn compaction_discards_history_but_never_current_values() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let a = store.create("/a", value("1")).await.unwrap();
    store
        .update("/a", value("2"), a.mod_revision)
        .await
        .unwrap();
    store.create("/b", value("1")).await.unwrap();
    store.compact(3).await.unwrap();
    assert_eq!(store.compacted_revision(), 3);
    assert_eq!(
        list(&store, "", None).await,
        [("/a".into(), "2".into(), 2), ("/b".into(), "1".into(), 3)]
    );
    // Compacting to an older revision is a no-op; to a future one an error.
    store.compact(1).await.unwrap();
    assert_eq!(store.compacted_revision(), 3);
    let err = store.compact(9).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::FutureRevision {
                requested: 9,
                current: 3
            }
        ),
        "{err:?}"
    );
    let err = store
        .watch("", 2)
        .await
        .err()
        .expect("watch below the compacted revision fails");
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 2,
                compacted: 3
            }
        ),
        "{err:?}"
    );
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
