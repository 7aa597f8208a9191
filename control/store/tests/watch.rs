//! Watch behaviour of the redb backend's own machinery: values shared with its ring, replay
//! from disk into live events past a small ring, slow watchers, shutdown, cancel safety with a
//! small ring. The watch semantics shared with etcd are in `conformance.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tokio::time::timeout;
use wasmkube_store::{Event, RedbStore, Store, StoreConfig, StoreError, Watch};

const WAIT: Duration = Duration::from_secs(20);

fn open_with_ring(dir: &TempDir, ring_max_events: usize) -> Arc<RedbStore> {
    let mut config = StoreConfig::new(dir.path().join("store.redb"));
    config.ring_max_events = ring_max_events;
    RedbStore::open(config).expect("store opens")
}

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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

#[tokio::test]
async fn an_events_previous_value_shares_the_bytes_of_the_event_that_wrote_it() {
    let dir = TempDir::new().unwrap();
    let store = open_with_ring(&dir, 8192);
    let mut watch = store.watch("/k/", 0).await.unwrap();
    let created = store.create("/k/a", value("1")).await.unwrap();
    // In a later batch than the create (the ring holds the create) ...
    let updated = store
        .update("/k/a", value("2"), created.mod_revision)
        .await
        .unwrap();
    // ... and, likely, in the same batch as the update before it (only the batch holds it).
    let (second, third) = tokio::join!(
        store.update("/k/a", value("3"), updated.mod_revision),
        store.create("/k/b", value("x")),
    );
    let (second, _) = (second.unwrap(), third.unwrap());
    store.delete("/k/a", None).await.unwrap();

    let mut written = Vec::new();
    let mut previous = Vec::new();
    for _ in 0..5 {
        match next(&mut watch).await {
            Event::Put { kv, prev } if kv.key == "/k/a" => {
                written.push(kv.value.as_ptr());
                previous.extend(prev.map(|p| p.value.as_ptr()));
            }
            Event::Put { .. } => {}
            Event::Delete { prev, .. } => previous.push(prev.value.as_ptr()),
        }
    }
    assert_eq!(written.len(), 3, "{second:?}");
    // Every previous value is the very allocation its own write put in the ring.
    assert_eq!(previous, written);
}

#[tokio::test]
async fn watch_from_a_past_revision_replays_from_disk_then_follows_live_events() {
    let dir = TempDir::new().unwrap();
    // A ring of 4 events: most of the history below must come from the events table.
    let store = open_with_ring(&dir, 4);
    for i in 1..=50 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    let mut watch = store.watch("/k/", 10).await.unwrap();
    for expected in 11..=50 {
        assert_eq!(next(&mut watch).await.revision(), expected);
    }
    for i in 51..=60 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
        assert_eq!(next(&mut watch).await.revision(), i);
    }
    assert_nothing_pending(&mut watch).await;
}

#[tokio::test]
async fn a_watcher_that_falls_behind_the_compaction_gets_watcher_too_slow() {
    let dir = TempDir::new().unwrap();
    let store = open_with_ring(&dir, 4);
    let mut slow = store.watch("", 0).await.unwrap();
    for i in 1..=20 {
        store.create(&format!("/k/{i}"), value("v")).await.unwrap();
    }
    store.compact(15).await.unwrap();
    let err = timeout(WAIT, slow.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, StoreError::WatcherTooSlow { revision: 0 }),
        "{err:?}"
    );
    // The watch is over for good.
    assert!(matches!(
        slow.next().await,
        Err(StoreError::WatcherTooSlow { .. })
    ));
    let err = store.watch("", 14).await.err().expect("compacted");
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 14,
                compacted: 15
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn dropping_the_store_ends_watches_with_closed_after_the_committed_events() {
    let dir = TempDir::new().unwrap();
    let store = open_with_ring(&dir, 8192);
    let mut watch = store.watch("", 0).await.unwrap();
    store.create("/k/1", value("v")).await.unwrap();
    store.create("/k/2", value("v")).await.unwrap();
    drop(store);
    assert_eq!(next(&mut watch).await.revision(), 1);
    assert_eq!(next(&mut watch).await.revision(), 2);
    let end = timeout(WAIT, watch.next()).await.unwrap();
    assert!(matches!(end, Err(StoreError::Closed)), "{end:?}");
}

#[tokio::test]
async fn next_is_cancel_safe_under_select() {
    let dir = TempDir::new().unwrap();
    let store = open_with_ring(&dir, 2);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 1..=200 {
                store.create(&format!("/k/{i}"), value("v")).await.unwrap();
            }
        })
    };
    let mut watch = store.watch("/k/", 0).await.unwrap();
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
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
}
