//! The store contract, one test code for both backends: every test here runs on the embedded
//! redb store and on a real etcd (`redb::` and `etcd::` in the test names). Revisions are
//! written relative to the store's revision when the test starts (`r0`): redb starts at 0, a
//! fresh etcd at 1.
//!
//! Backend-specific behaviour stays beside its backend: redb's reopen, history policy, ring,
//! crash and full-disk tests in `operations.rs`, `watch.rs`, `crash.rs`, `disk_full.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, timeout};
use wasmkube_store::{Event, KeyValue, ListOptions, Revision, Store, StoreError, Watch};

use support::Backend;

const WAIT: Duration = Duration::from_secs(20);

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

async fn list(
    store: &dyn Store,
    prefix: &str,
    revision: Option<i64>,
) -> Vec<(String, String, i64)> {
    store
        .list(ListOptions {
            prefix: prefix.into(),
            revision,
            ..Default::default()
        })
        .await
        .expect("list succeeds")
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

async fn next(watch: &mut Box<dyn Watch>) -> Event {
    timeout(WAIT, watch.next())
        .await
        .expect("an event arrives in time")
        .expect("watch goes on")
}

async fn assert_nothing_pending(watch: &mut Box<dyn Watch>) {
    let result = timeout(Duration::from_millis(100), watch.next()).await;
    assert!(result.is_err(), "unexpected {result:?}");
}

/// Waits (with nothing delivered meanwhile) until the watch's progress reaches `target`.
async fn wait_for_progress(watch: &mut Box<dyn Watch>, target: Revision) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert_nothing_pending(watch).await;
        if watch.progress() >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "progress stayed at {} (wanted {target})",
            watch.progress()
        );
    }
}

on_both_backends!(
    create_assigns_increasing_revisions_and_get_reads_the_value,
    create_of_an_existing_key_fails_with_already_exists_and_takes_no_revision,
    writes_over_the_size_limit_fail_with_too_large_and_take_no_revision,
    update_with_the_current_mod_revision_replaces_the_value_and_keeps_the_create_revision,
    update_with_a_stale_mod_revision_fails_with_conflict_naming_the_actual_revision,
    update_and_delete_of_a_missing_key_fail_with_not_found,
    delete_returns_the_last_value_and_the_revision_of_the_deletion,
    delete_with_a_stale_mod_revision_fails_with_conflict_and_keeps_the_key,
    concurrent_creates_of_one_key_let_exactly_one_win_and_revisions_stay_contiguous,
    list_returns_only_keys_under_the_prefix_in_key_order,
    list_pages_with_start_after_and_limit_cover_every_key_once,
    list_at_a_past_revision_shows_the_state_as_it_was_then,
    paging_at_a_past_revision_is_consistent_while_writes_continue,
    list_below_the_compacted_revision_or_beyond_the_current_one_fails,
    compaction_discards_history_but_never_current_values,
    watch_delivers_puts_updates_and_deletes_with_previous_values,
    watch_filters_by_prefix_and_progress_moves_past_other_keys,
    watch_from_a_past_revision_replays_history_then_follows_live_events,
    watch_from_a_future_revision_waits_for_it,
    next_is_cancel_safe_under_select,
    a_thousand_watchers_each_receive_every_event_of_their_prefix,
);

async fn create_assigns_increasing_revisions_and_get_reads_the_value(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let a = store.create("/a", value("1")).await.unwrap();
    let b = store.create("/b", value("2")).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r0 + 1, r0 + 1));
    assert_eq!((b.create_revision, b.mod_revision), (r0 + 2, r0 + 2));
    assert_eq!(store.current_revision(), r0 + 2);
    assert_eq!(store.get("/a").await.unwrap(), Some(a));
    assert_eq!(store.get("/missing").await.unwrap(), None);
}

async fn create_of_an_existing_key_fails_with_already_exists_and_takes_no_revision(
    backend: Backend,
) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    store.create("/a", value("1")).await.unwrap();
    let err = store.create("/a", value("2")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if key == "/a"),
        "{err:?}"
    );
    assert_eq!(store.current_revision(), r0 + 1);
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, value("1"));
}

async fn writes_over_the_size_limit_fail_with_too_large_and_take_no_revision(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
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
    assert_eq!(store.current_revision(), r0 + 1);
}

async fn update_with_the_current_mod_revision_replaces_the_value_and_keeps_the_create_revision(
    backend: Backend,
) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let created = store.create("/a", value("1")).await.unwrap();
    store.create("/other", value("x")).await.unwrap();
    let updated = store
        .update("/a", value("2"), created.mod_revision)
        .await
        .unwrap();
    assert_eq!(
        (updated.create_revision, updated.mod_revision),
        (r0 + 1, r0 + 3)
    );
    assert_eq!(store.get("/a").await.unwrap(), Some(updated));
}

async fn update_with_a_stale_mod_revision_fails_with_conflict_naming_the_actual_revision(
    backend: Backend,
) {
    let store = backend.open().await;
    let r0 = store.current_revision();
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
        matches!(err, StoreError::Conflict { ref key, expected, actual }
            if key == "/a" && expected == r0 + 1 && actual == r0 + 2),
        "{err:?}"
    );
    assert_eq!(store.current_revision(), r0 + 2);
}

async fn update_and_delete_of_a_missing_key_fail_with_not_found(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let err = store.update("/nope", value("1"), 1).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref key } if key == "/nope"),
        "{err:?}"
    );
    let err = store.delete("/nope", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store.delete("/nope", Some(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(store.current_revision(), r0);
}

async fn delete_returns_the_last_value_and_the_revision_of_the_deletion(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let created = store.create("/a", value("1")).await.unwrap();
    let (prev, revision) = store.delete("/a", None).await.unwrap();
    assert_eq!(prev, created);
    assert_eq!(revision, r0 + 2);
    assert_eq!(store.get("/a").await.unwrap(), None);
    // The key can be created again, with a fresh create revision.
    let again = store.create("/a", value("new")).await.unwrap();
    assert_eq!(again.create_revision, r0 + 3);
}

async fn delete_with_a_stale_mod_revision_fails_with_conflict_and_keeps_the_key(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
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
        matches!(err, StoreError::Conflict { expected, actual, .. }
            if expected == r0 + 1 && actual == r0 + 2),
        "{err:?}"
    );
    assert_eq!(store.get("/a").await.unwrap(), Some(updated.clone()));
    store
        .delete("/a", Some(updated.mod_revision))
        .await
        .unwrap();
}

async fn concurrent_creates_of_one_key_let_exactly_one_win_and_revisions_stay_contiguous(
    backend: Backend,
) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = Arc::clone(&store.store);
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
    assert_eq!(revisions, (r0 + 1..=r0 + 33).collect::<Vec<_>>());
}

async fn list_returns_only_keys_under_the_prefix_in_key_order(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
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
    assert_eq!(result.revision, r0 + 6);
    assert!(!result.more);
    let all = store.list(ListOptions::default()).await.unwrap();
    assert_eq!(
        keys(&all.items),
        ["/a/1", "/ab", "/b/1", "/b/10", "/b/2", "/c"]
    );
}

async fn list_pages_with_start_after_and_limit_cover_every_key_once(backend: Backend) {
    let store = backend.open().await;
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

async fn list_at_a_past_revision_shows_the_state_as_it_was_then(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
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

    assert_eq!(at, r0 + 3);
    assert_eq!(
        list(&**store, "/k/", Some(at)).await,
        [
            ("/k/a".into(), "a1".into(), r0 + 1),
            ("/k/b".into(), "b1".into(), r0 + 2)
        ]
    );
    assert_eq!(
        list(&**store, "/k/", Some(r0 + 4)).await,
        [
            ("/k/a".into(), "a2".into(), r0 + 4),
            ("/k/b".into(), "b1".into(), r0 + 2)
        ]
    );
    assert_eq!(
        list(&**store, "/k/", Some(r0 + 5)).await,
        [("/k/a".into(), "a2".into(), r0 + 4)]
    );
    assert_eq!(
        list(&**store, "/k/", None).await,
        [
            ("/k/a".into(), "a2".into(), r0 + 4),
            ("/k/b".into(), "b2".into(), r0 + 7),
            ("/k/c".into(), "c1".into(), r0 + 6)
        ]
    );
    if r0 > 0 {
        // etcd: revision 0 means "latest" on the wire; its first revision is empty.
        assert_eq!(list(&**store, "/k/", Some(r0)).await, []);
    } else {
        assert_eq!(list(&**store, "/k/", Some(0)).await, []);
    }
    let result = store
        .list(ListOptions {
            prefix: "/k/".into(),
            revision: Some(at),
            ..Default::default()
        })
        .await;
    assert_eq!(result.unwrap().revision, at);
}

async fn paging_at_a_past_revision_is_consistent_while_writes_continue(backend: Backend) {
    let store = backend.open().await;
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

async fn list_below_the_compacted_revision_or_beyond_the_current_one_fails(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    for i in 0..5 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    store.compact(r0 + 3).await.unwrap();
    let at = |revision| ListOptions {
        prefix: "/k/".into(),
        revision: Some(revision),
        ..Default::default()
    };
    let err = store.list(at(r0 + 2)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted }
            if requested == r0 + 2 && compacted == r0 + 3),
        "{err:?}"
    );
    let err = store.list(at(r0 + 6)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::FutureRevision { requested, current }
            if requested == r0 + 6 && current == r0 + 5),
        "{err:?}"
    );
    assert_eq!(store.list(at(r0 + 3)).await.unwrap().items.len(), 3);
    assert_eq!(store.list(at(r0 + 5)).await.unwrap().items.len(), 5);
}

async fn compaction_discards_history_but_never_current_values(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let a = store.create("/a", value("1")).await.unwrap();
    store
        .update("/a", value("2"), a.mod_revision)
        .await
        .unwrap();
    store.create("/b", value("1")).await.unwrap();
    store.compact(r0 + 3).await.unwrap();
    assert_eq!(store.compacted_revision(), r0 + 3);
    assert_eq!(
        list(&**store, "", None).await,
        [
            ("/a".into(), "2".into(), r0 + 2),
            ("/b".into(), "1".into(), r0 + 3)
        ]
    );
    // Compacting to an older revision is a no-op; to a future one an error.
    store.compact(r0 + 1).await.unwrap();
    assert_eq!(store.compacted_revision(), r0 + 3);
    let err = store.compact(r0 + 9).await.unwrap_err();
    assert!(
        matches!(err, StoreError::FutureRevision { requested, current }
            if requested == r0 + 9 && current == r0 + 3),
        "{err:?}"
    );
    let err = store
        .watch("", r0 + 2)
        .await
        .err()
        .expect("watch below the compacted revision fails");
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted }
            if requested == r0 + 2 && compacted == r0 + 3),
        "{err:?}"
    );
    // From the compacted revision on, history is there.
    let mut watch = store.watch("", r0 + 3).await.unwrap();
    store.create("/c", value("1")).await.unwrap();
    assert_eq!(next(&mut watch).await.revision(), r0 + 4);
}

async fn watch_delivers_puts_updates_and_deletes_with_previous_values(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let mut watch = store.watch("/k/", r0).await.unwrap();
    let created = store.create("/k/a", value("1")).await.unwrap();
    let updated = store
        .update("/k/a", value("2"), created.mod_revision)
        .await
        .unwrap();
    let (_, deleted_at) = store.delete("/k/a", None).await.unwrap();

    assert_eq!(
        next(&mut watch).await,
        Event::Put {
            kv: created.clone(),
            prev: None
        }
    );
    assert_eq!(
        next(&mut watch).await,
        Event::Put {
            kv: updated.clone(),
            prev: Some(created)
        }
    );
    assert_eq!(
        next(&mut watch).await,
        Event::Delete {
            revision: deleted_at,
            prev: updated
        }
    );
    assert_eq!(watch.progress(), r0 + 3);
}

async fn watch_filters_by_prefix_and_progress_moves_past_other_keys(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let mut watch = store.watch("/a/", r0).await.unwrap();
    assert_eq!(watch.progress(), r0);
    store.create("/b/1", value("x")).await.unwrap();
    store.create("/a/1", value("x")).await.unwrap();
    store.create("/ab", value("x")).await.unwrap();
    store.create("/b/2", value("x")).await.unwrap();
    assert_eq!(next(&mut watch).await.key(), "/a/1");
    assert!(watch.progress() >= r0 + 2, "{}", watch.progress());
    // Idle, the watch learns that nothing of its prefix happened up to the latest write:
    // bookmarks can say "up to r0 + 4".
    wait_for_progress(&mut watch, r0 + 4).await;
    assert_eq!(watch.progress(), r0 + 4);
}

async fn watch_from_a_past_revision_replays_history_then_follows_live_events(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    for i in 1..=50 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    let mut watch = store.watch("/k/", r0 + 10).await.unwrap();
    for expected in 11..=50 {
        assert_eq!(next(&mut watch).await.revision(), r0 + expected);
    }
    for i in 51..=60 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
        assert_eq!(next(&mut watch).await.revision(), r0 + i);
    }
    assert_nothing_pending(&mut watch).await;
}

async fn watch_from_a_future_revision_waits_for_it(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let mut watch = store.watch("", r0 + 2).await.unwrap();
    for i in 1..=3 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    assert_eq!(next(&mut watch).await.revision(), r0 + 3);
}

async fn next_is_cancel_safe_under_select(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let writer = {
        let store = Arc::clone(&store.store);
        tokio::spawn(async move {
            for i in 1..=200 {
                store.create(&format!("/k/{i}"), value("v")).await.unwrap();
            }
        })
    };
    let mut watch = store.watch("/k/", r0).await.unwrap();
    let mut seen = Vec::new();
    let mut cancelled = 0;
    while seen.len() < 200 {
        // A very short timer that often wins the race and drops the `next` future.
        tokio::select! {
            event = watch.next() => seen.push(event.unwrap().revision()),
            () = tokio::time::sleep(Duration::from_micros(50)) => cancelled += 1,
        }
        assert!(cancelled < 10_000_000, "no progress");
    }
    writer.await.unwrap();
    assert_eq!(seen, (r0 + 1..=r0 + 200).collect::<Vec<_>>());
}

async fn a_thousand_watchers_each_receive_every_event_of_their_prefix(backend: Backend) {
    let store = backend.open().await;
    let r0 = store.current_revision();
    let mut watchers = Vec::new();
    for i in 0..1000 {
        let prefix = if i % 2 == 0 { "/even/" } else { "/" };
        let mut watch = store.watch(prefix, r0).await.unwrap();
        let expected = if i % 2 == 0 { 50 } else { 100 };
        watchers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            while revisions.len() < expected {
                revisions.push(
                    timeout(WAIT, watch.next())
                        .await
                        .unwrap()
                        .unwrap()
                        .revision(),
                );
            }
            revisions
        }));
    }
    for i in 0..50 {
        store
            .create(&format!("/even/{i}"), value("v"))
            .await
            .unwrap();
        store
            .create(&format!("/odd/{i}"), value("v"))
            .await
            .unwrap();
    }
    for (i, watcher) in watchers.into_iter().enumerate() {
        let revisions = watcher.await.unwrap();
        let expected: Vec<i64> = if i % 2 == 0 {
            (r0 + 1..=r0 + 100).step_by(2).collect()
        } else {
            (r0 + 1..=r0 + 100).collect()
        };
        assert_eq!(revisions, expected, "watcher {i}");
    }
}
