//! Crash consistency: every acknowledged write survives `kill -9`.
//!
//! The test re-executes its own binary as a child (selected by an environment
//! variable) that writes continuously from concurrent tasks and prints a line for
//! each acknowledged write. The parent kills the child with SIGKILL after some
//! hundreds of acknowledgements, reopens the database and checks every acknowledged
//! write against it, then starts the next cycle on the same file.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmkube_store::{RedbStore, Revision, Store, StoreConfig, StoreError};

const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
const CHILD_DB_ENV: &str = "WASMKUBE_STORE_CRASH_DB";
const CHILD_CYCLE_ENV: &str = "WASMKUBE_STORE_CRASH_CYCLE";
const CHILD_TASKS: usize = 16;
/// Acknowledgements to wait for before each kill.
const KILL_AFTER: [usize; 4] = [300, 700, 150, 1000];
/// The child stops by itself after this long if nobody kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(db) = std::env::var(CHILD_DB_ENV) {
        let cycle = std::env::var(CHILD_CYCLE_ENV).unwrap_or_default();
        child(Path::new(&db), &cycle);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.redb");
    let mut acks = Acks::default();
    for (cycle, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let received = run_and_kill(&db, cycle, kill_after);
        assert!(
            received.len() >= kill_after,
            "cycle {cycle}: only {} acks",
            received.len()
        );
        for line in &received {
            acks.record(line);
        }
        acks.verify(&db, cycle);
        eprintln!(
            "cycle {cycle}: {} acks verified, revision {}",
            received.len(),
            acks.max_revision
        );
    }
}

/// Runs one child until `kill_after` acks, kills it, and returns every ack it printed.
fn run_and_kill(db: &Path, cycle: usize, kill_after: usize) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DB_ENV, db)
        .env(CHILD_CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ack ") && lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    while acks.len() < kill_after {
        match received.recv_timeout(ACK_TIMEOUT) {
            Ok(line) => acks.push(line),
            Err(error) => {
                let _ = child.kill();
                panic!(
                    "cycle {cycle}: child stopped acknowledging after {} acks: {error}",
                    acks.len()
                );
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("child reaped");
    reader.join().expect("reader thread");
    // Lines printed before the kill are acknowledgements too.
    acks.extend(received.try_iter());
    acks
}

/// What the parent knows from the acknowledgements of every cycle so far.
#[derive(Default)]
struct Acks {
    /// Created, never deleted: must exist with exactly this revision.
    kept: BTreeMap<String, Revision>,
    /// Created, then a delete was started: absent, or present with the create revision.
    maybe_deleted: BTreeMap<String, Revision>,
    /// Deletes that were acknowledged: must be absent.
    deleted: HashSet<String>,
    /// Per counter key: the last acknowledged (mod revision, counter value).
    counters: BTreeMap<String, (Revision, u64)>,
    revisions: HashSet<Revision>,
    max_revision: Revision,
}

impl Acks {
    fn record(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        let revision: Revision = match parts.get(3).and_then(|r| r.parse().ok()) {
            Some(revision) => revision,
            // A line cut by the kill is not an acknowledgement.
            None => return,
        };
        let key = parts[2].to_owned();
        assert!(
            self.revisions.insert(revision),
            "revision {revision} acknowledged twice ({line})"
        );
        self.max_revision = self.max_revision.max(revision);
        match (parts[1], key.contains("/d/"), key.contains("/n/")) {
            ("create", true, _) => {
                self.maybe_deleted.insert(key, revision);
            }
            ("create", false, false) => {
                self.kept.insert(key, revision);
            }
            ("create", false, true) => {
                self.counters.insert(key, (revision, 0));
            }
            ("update", _, true) => {
                let Some(value) = parts.get(4).and_then(|v| v.parse().ok()) else {
                    return;
                };
                let last = self.counters.entry(key).or_insert((0, 0));
                if revision > last.0 {
                    *last = (revision, value);
                }
            }
            ("delete", true, _) => {
                self.maybe_deleted.remove(&key);
                self.deleted.insert(key);
            }
            other => panic!("unexpected ack {line}: {other:?}"),
        }
    }

    fn verify(&self, db: &Path, cycle: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = RedbStore::open(StoreConfig::new(db)).expect("reopens after SIGKILL");
            assert!(
                store.current_revision() >= self.max_revision,
                "cycle {cycle}: current revision {} is below acknowledged {}",
                store.current_revision(),
                self.max_revision
            );
            for (key, revision) in &self.kept {
                let kv = store
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("cycle {cycle}: lost {key}"));
                assert_eq!(kv.mod_revision, *revision, "cycle {cycle}: {key}");
            }
            for (key, revision) in &self.maybe_deleted {
                if let Some(kv) = store.get(key).await.unwrap() {
                    assert_eq!(kv.mod_revision, *revision, "cycle {cycle}: {key}");
                }
            }
            for key in &self.deleted {
                assert_eq!(
                    store.get(key).await.unwrap(),
                    None,
                    "cycle {cycle}: deleted {key} is back"
                );
            }
            for (key, (revision, value)) in &self.counters {
                let kv = store
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("cycle {cycle}: lost {key}"));
                let stored: u64 = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .expect("counter value");
                assert!(
                    kv.mod_revision >= *revision,
                    "cycle {cycle}: {key} went back to {}",
                    kv.mod_revision
                );
                assert!(
                    stored >= *value,
                    "cycle {cycle}: {key} lost updates: {stored} < {value}"
                );
                if kv.mod_revision == *revision {
                    assert_eq!(stored, *value, "cycle {cycle}: {key}");
                }
            }
            // The log survived too: the newest acknowledged write replays from disk.
            let after = (self.max_revision - 1).max(store.compacted_revision());
            let mut watch = store.watch("", after).await.unwrap();
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(event.revision(), after + 1);
        });
    }
}

/// The child: concurrent writers that print each acknowledged write, until killed.
fn child(db: &Path, cycle: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = RedbStore::open(StoreConfig::new(db)).expect("child opens the store");
        let deadline = Instant::now() + CHILD_LIFETIME;
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|task| {
                let store = std::sync::Arc::clone(&store);
                let cycle = cycle.to_owned();
                tokio::spawn(async move {
                    let counter = format!("/crash/n/{cycle}/{task}");
                    let created = store
                        .create(&counter, Bytes::from_static(b"0"))
                        .await
                        .unwrap();
                    println!("ack create {counter} {}", created.mod_revision);
                    let mut counter_revision = created.mod_revision;
                    let mut n: u64 = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        let key = format!("/crash/k/{cycle}/{task}/{n}");
                        let kv = store
                            .create(&key, Bytes::from(format!("v{n}")))
                            .await
                            .unwrap();
                        println!("ack create {key} {}", kv.mod_revision);
                        if n.is_multiple_of(3) {
                            let key = format!("/crash/d/{cycle}/{task}/{n}");
                            let kv = store.create(&key, Bytes::from_static(b"x")).await.unwrap();
                            println!("ack create {key} {}", kv.mod_revision);
                            let (_, revision) =
                                store.delete(&key, Some(kv.mod_revision)).await.unwrap();
                            println!("ack delete {key} {revision}");
                        }
                        let kv = match store
                            .update(&counter, Bytes::from(n.to_string()), counter_revision)
                            .await
                        {
                            Ok(kv) => kv,
                            Err(StoreError::Closed) => return,
                            Err(other) => panic!("{other}"),
                        };
                        counter_revision = kv.mod_revision;
                        println!("ack update {counter} {} {n}", kv.mod_revision);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}
