//! Validates watch streams against the revision log under concurrent writes.
//!
//! Writers create, update and delete keys of three prefixes concurrently; every
//! acknowledged write is recorded. Watchers start at different revisions (0, a
//! mid revision replayed from disk, one dropped and resumed, one that reads slowly
//! and keeps falling out of a tiny ring). Once the writers stop, the acknowledged
//! writes must be exactly revisions 1..=current, and each watcher's stream must be
//! exactly the events of its prefix after its start revision, in order, with no gap,
//! no duplicate, and the right values and previous values. Lists at past revisions
//! are checked against the same log, and watching from a compacted revision fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use wasmkube_store::{
    Event, KeyValue, ListOptions, RedbStore, Revision, Store, StoreConfig, StoreError,
};

const PREFIXES: [&str; 3] = ["/a/", "/b/", "/c/"];
const KEYS_PER_PREFIX: usize = 6;
const WRITERS: u64 = 6;
const OPS_PER_WRITER: usize = 250;
const DEADLINE: Duration = Duration::from_secs(120);

/// One acknowledged write, as the client saw it.
#[derive(Clone, Debug)]
enum Acked {
    Create(KeyValue),
    Update(KeyValue),
    Delete(KeyValue, Revision),
}

impl Acked {
    fn revision(&self) -> Revision {
        match self {
            Acked::Create(kv) | Acked::Update(kv) => kv.mod_revision,
            Acked::Delete(_, revision) => *revision,
        }
    }
}

/// xorshift64*: deterministic, dependency-free randomness for the workload.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

async fn write_randomly(store: Arc<RedbStore>, writer: u64) -> Vec<Acked> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (writer + 1).wrapping_mul(0x1000_0000_01b3));
    let mut acked = Vec::new();
    for n in 0..OPS_PER_WRITER {
        let prefix = PREFIXES[rng.below(PREFIXES.len())];
        let key = format!("{prefix}{}", rng.below(KEYS_PER_PREFIX));
        let value = Bytes::from(format!("w{writer}-{n}"));
        let current = store.get(&key).await.expect("get");
        let result = match current {
            None => store.create(&key, value).await.map(Acked::Create),
            Some(kv) if rng.below(4) == 0 => store
                .delete(&key, Some(kv.mod_revision))
                .await
                .map(|(prev, rev)| Acked::Delete(prev, rev)),
            Some(kv) => store
                .update(&key, value, kv.mod_revision)
                .await
                .map(Acked::Update),
        };
        match result {
            Ok(write) => acked.push(write),
            // Another writer got there first: an ordinary outcome that takes no revision.
            Err(
                StoreError::AlreadyExists { .. }
                | StoreError::Conflict { .. }
                | StoreError::NotFound { .. },
            ) => {}
            Err(other) => panic!("write failed: {other}"),
        }
    }
    acked
}

/// Collects a watcher's events until it has scanned through the final revision.
fn collect(
    store: &Arc<RedbStore>,
    prefix: &'static str,
    after: Revision,
    final_revision: Arc<AtomicI64>,
    pause: Duration,
    stop_after: Option<usize>,
) -> JoinHandle<Vec<Event>> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let mut watch = store.watch(prefix, after).await.expect("watch starts");
        let mut events = Vec::new();
        let started = Instant::now();
        loop {
            let target = final_revision.load(Ordering::Acquire);
            if (target > 0 && watch.progress() >= target)
                || stop_after.is_some_and(|n| events.len() >= n)
            {
                return events;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "watcher {prefix}@{after} stuck at {}",
                watch.progress()
            );
            // The timeout also exercises cancellation of `next`.
            if let Ok(event) = timeout(Duration::from_millis(20), watch.next()).await {
                events.push(event.expect("watch goes on"));
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    })
}

/// The exact event stream the acknowledged writes imply, by replaying them in order.
fn expected_events(log: &[Acked]) -> Vec<Event> {
    let mut state: BTreeMap<String, KeyValue> = BTreeMap::new();
    log.iter()
        .map(|write| match write {
            Acked::Create(kv) => {
                assert!(
                    state.insert(kv.key.clone(), kv.clone()).is_none(),
                    "create of a live key {}",
                    kv.key
                );
                Event::Put {
                    kv: kv.clone(),
                    prev: None,
                }
            }
            Acked::Update(kv) => {
                let prev = state
                    .insert(kv.key.clone(), kv.clone())
                    .expect("update of a live key");
                assert_eq!(prev.create_revision, kv.create_revision);
                Event::Put {
                    kv: kv.clone(),
                    prev: Some(prev),
                }
            }
            Acked::Delete(prev, revision) => {
                assert_eq!(
                    state.remove(&prev.key).as_ref(),
                    Some(prev),
                    "delete returned the live value"
                );
                Event::Delete {
                    revision: *revision,
                    prev: prev.clone(),
                }
            }
        })
        .collect()
}

/// The state at `revision` implied by the log.
fn state_at(events: &[Event], revision: Revision) -> Vec<KeyValue> {
    let mut state: BTreeMap<String, KeyValue> = BTreeMap::new();
    for event in events.iter().take_while(|e| e.revision() <= revision) {
        match event {
            Event::Put { kv, .. } => state.insert(kv.key.clone(), kv.clone()),
            Event::Delete { prev, .. } => state.remove(&prev.key),
        };
    }
    state.into_values().collect()
}

fn of_prefix(events: &[Event], prefix: &str, after: Revision) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.revision() > after && e.key().starts_with(prefix))
        .cloned()
        .collect()
}

fn assert_stream(name: &str, actual: &[Event], expected: &[Event]) {
    let revisions: Vec<Revision> = actual.iter().map(Event::revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "{name}: revisions not strictly increasing"
    );
    assert_eq!(
        actual.len(),
        expected.len(),
        "{name}: {} events, expected {}",
        actual.len(),
        expected.len()
    );
    for (got, want) in actual.iter().zip(expected) {
        assert_eq!(
            got,
            want,
            "{name}: wrong event at revision {}",
            want.revision()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_match_the_revision_log_under_concurrent_writes() {
    let dir = TempDir::new().unwrap();
    let mut config = StoreConfig::new(dir.path().join("store.redb"));
    config.ring_max_events = 32; // small, so replays from disk hand over to the ring often
    let store = RedbStore::open(config).unwrap();
    let final_revision = Arc::new(AtomicI64::new(0));
    let no_pause = Duration::ZERO;

    let from_zero = collect(&store, "", 0, Arc::clone(&final_revision), no_pause, None);
    let a_from_zero = collect(
        &store,
        "/a/",
        0,
        Arc::clone(&final_revision),
        no_pause,
        None,
    );
    let slow_b = collect(
        &store,
        "/b/",
        0,
        Arc::clone(&final_revision),
        Duration::from_millis(3),
        None,
    );
    let c_first_part = collect(
        &store,
        "/c/",
        0,
        Arc::clone(&final_revision),
        no_pause,
        Some(40),
    );

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_randomly(Arc::clone(&store), w)))
        .collect();

    // A watcher started mid-run from an older, retained revision: replays from disk.
    let started = Instant::now();
    while store.current_revision() < 400 {
        assert!(started.elapsed() < DEADLINE, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mid = 150;
    let all_from_mid = collect(&store, "", mid, Arc::clone(&final_revision), no_pause, None);

    // The dropped /c/ watcher resumes from the last revision it delivered.
    let c_first_part = c_first_part.await.unwrap();
    let resume_at = c_first_part.last().map_or(0, Event::revision);
    let c_resumed = collect(
        &store,
        "/c/",
        resume_at,
        Arc::clone(&final_revision),
        no_pause,
        None,
    );

    let mut log = Vec::new();
    for writer in writers {
        log.extend(writer.await.unwrap());
    }
    let current = store.current_revision();
    final_revision.store(current, Ordering::Release);

    // Every revision was acknowledged to exactly one write.
    log.sort_by_key(Acked::revision);
    let revisions: Vec<Revision> = log.iter().map(Acked::revision).collect();
    assert_eq!(revisions, (1..=current).collect::<Vec<_>>());
    assert!(current > 800, "workload too small: {current}");
    let events = expected_events(&log);

    assert_stream("unfiltered from 0", &from_zero.await.unwrap(), &events);
    assert_stream(
        "/a/ from 0",
        &a_from_zero.await.unwrap(),
        &of_prefix(&events, "/a/", 0),
    );
    assert_stream(
        "slow /b/ from 0",
        &slow_b.await.unwrap(),
        &of_prefix(&events, "/b/", 0),
    );
    assert_stream(
        "unfiltered from mid",
        &all_from_mid.await.unwrap(),
        &of_prefix(&events, "", mid),
    );
    let mut c_stream = c_first_part;
    c_stream.extend(c_resumed.await.unwrap());
    assert_stream(
        "/c/ dropped and resumed",
        &c_stream,
        &of_prefix(&events, "/c/", 0),
    );

    // Lists at past revisions agree with the log.
    for at in [1, mid, current / 2, current - 1, current] {
        let listed = store
            .list(ListOptions {
                revision: Some(at),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.items, state_at(&events, at), "list at {at}");
    }

    // After compaction, older revisions are gone and the rest still replays.
    store.compact(mid).await.unwrap();
    let err = store
        .watch("", mid - 1)
        .await
        .err()
        .expect("compacted revision refused");
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted } if requested == mid - 1 && compacted == mid)
    );
    let after_compaction = collect(&store, "", mid, Arc::clone(&final_revision), no_pause, None);
    assert_stream(
        "unfiltered from the compacted revision",
        &after_compaction.await.unwrap(),
        &of_prefix(&events, "", mid),
    );
}
