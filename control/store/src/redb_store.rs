//! The embedded redb backend of [`Store`](crate::Store): one file, one process.
//!
//! # Design
//!
//! - **Tables** ([`tables`]): `kv` holds the current value of every key with its
//!   create/mod revisions; `events` is the revision log (one entry per successful
//!   write, with the previous value); `meta` holds the current and compacted
//!   revisions. The log and the state change in the same transaction, so they can
//!   never disagree, and a reopen restores counters and history as committed.
//! - **Group commit** ([`writer`]): a single writer thread owns all mutations. It
//!   drains every queued request into one write transaction, checks each request's
//!   precondition in order, gives each successful write the next revision, commits
//!   once with `Durability::Immediate` (one fsync for the whole batch) and only then
//!   replies and publishes. An acknowledged write therefore survives `kill -9`, and
//!   concurrency turns into larger batches instead of more fsyncs.
//! - **Reads** ([`read`]): gets and lists run on redb read snapshots (MVCC), never
//!   blocking the writer. A list at a past revision merges the current state with the
//!   `prev` values of the log entries after that revision.
//! - **Watch** ([`watch`]): committed events go into an in-memory ring ([`ring`])
//!   shared by all watchers, and a `tokio::sync::watch` channel announces the latest
//!   revision. Each watcher keeps its own cursor; what the ring no longer holds is
//!   replayed from the `events` table.
//! - **Compaction**: `compact(rev)` and a history policy (at most
//!   [`StoreConfig::history_max_events`] events, none older than
//!   [`StoreConfig::history_max_age`]) move a durable compacted mark; the writer then
//!   purges log entries below it in bounded chunks. Current values are never touched.
//! - **Disk space** ([`space`]): creates and updates are refused while the filesystem
//!   has less than [`StoreConfig::min_free_bytes`] free, and a file that failed on a full
//!   disk is reopened; both recover by themselves ([`Store::health`] says why writes fail).

mod codec;
mod read;
mod ring;
mod space;
mod tables;
mod watch;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redb::Database;
use tokio::sync::oneshot;

use self::ring::Ring;
use self::space::{Health, Space};
use self::watch::RedbWatch;
use self::writer::{HistoryPolicy, Request, WriteOp, WriteOutcome, Writer};
use crate::{KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, Watch};

/// How to open a [`RedbStore`]. Start from [`StoreConfig::new`], which sets the defaults.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The database file; created (with its parent directories) if missing.
    pub path: PathBuf,
    /// Keep at most this many events of history; older ones are compacted. Default 100,000.
    pub history_max_events: usize,
    /// Compact events older than this. Default 5 minutes.
    pub history_max_age: Duration,
    /// How many recent events are kept in memory for watchers (older ones are read from
    /// disk). Default 8,192.
    pub ring_max_events: usize,
    /// The most bytes a key and its value may have together; larger writes fail with
    /// [`StoreError::TooLarge`]. Default [`DEFAULT_MAX_VALUE_BYTES`], etcd's.
    pub max_value_bytes: usize,
    /// The most bytes of values those events may hold (a value shared by an event and its
    /// successor's `prev` counts once). Default 8 MiB.
    pub ring_max_bytes: usize,
    /// The most bytes of database pages redb keeps in memory for reads and writes. Pages
    /// beyond it are read from the file, which the kernel's page cache holds anyway, so a
    /// small cache costs a `pread` per page rather than a disk access. Default 4 MiB (redb's
    /// own default, 1 GiB, would keep a copy of the whole file, history included).
    pub cache_bytes: usize,
    /// Creates and updates fail with [`StoreError::NoSpace`] while the store's filesystem
    /// has less free space than this (`0`: never). Default [`DEFAULT_MIN_FREE_BYTES`].
    pub min_free_bytes: u64,
}

/// The free space the store's filesystem keeps for deletes, compaction and redb's own
/// bookkeeping: writes stop below it (64 MiB).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// etcd's default `--max-request-bytes` (1.5 MiB), the largest object a Kubernetes cluster
/// stores.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;

impl StoreConfig {
    /// A configuration for the file at `path` with the default history bounds.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            history_max_events: 100_000,
            history_max_age: Duration::from_secs(5 * 60),
            ring_max_events: 8192,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            ring_max_bytes: 8 << 20,
            cache_bytes: 4 << 20,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// State shared by the store handle, the writer thread and every watcher.
struct Shared {
    /// The open database; `None` while a failed file is being reopened.
    db: RwLock<Option<Arc<Database>>>,
    /// Why writes fail now, if they do.
    health: Mutex<Health>,
    ring: RwLock<Ring>,
    /// The newest revision whose events are published (committed, in the ring).
    current: AtomicI64,
    /// The durable compacted revision.
    compacted: AtomicI64,
    /// Announces the newest published revision to watchers.
    notify: tokio::sync::watch::Sender<Revision>,
    /// Set by the writer when it stops; watchers then end with `Closed`.
    closed: AtomicBool,
}

impl Shared {
    fn ring_read(&self) -> RwLockReadGuard<'_, Ring> {
        // The ring holds no invariant a panicking holder could break halfway.
        self.ring.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn ring_write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open database, or `Unavailable` while it is being reopened.
    fn db(&self) -> Result<Arc<Database>> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        db.clone().ok_or_else(|| match self.health() {
            Health::Failed(why) => StoreError::Unavailable(why),
            _ => StoreError::Unavailable("the store file is being reopened".to_owned()),
        })
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = health;
    }

    /// A read's error, as `Unavailable` when the file has failed (redb then refuses every
    /// operation until the writer reopens it).
    fn read_error(&self, error: StoreError) -> StoreError {
        match (&error, self.health()) {
            (StoreError::Backend(_), Health::Failed(why)) => StoreError::Unavailable(why),
            _ => error,
        }
    }
}

/// Opens (or creates) the database file at `path`.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Database> {
    let file = open_private(path).map_err(backend)?;
    Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(redb::backends::FileBackend::new(file).map_err(backend)?)
        .map_err(backend)
}

/// The redb-backed [`Store`]. Open it with [`RedbStore::open`]; dropping the last handle
/// finishes the queued writes, stops the writer and ends every watch with `Closed`.
pub struct RedbStore {
    shared: Arc<Shared>,
    path: PathBuf,
    max_value_bytes: usize,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl RedbStore {
    /// Opens (or creates) the store at `config.path` and starts its writer thread.
    ///
    /// Blocking (it opens the file, and redb may repair it after a crash); call it at
    /// startup or from `spawn_blocking`. Needs no Tokio runtime.
    pub fn open(config: StoreConfig) -> Result<Arc<RedbStore>> {
        if let Some(parent) = config.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(backend)?;
        }
        let db = open_database(&config.path, config.cache_bytes)?;
        let boot = tables::bootstrap(&db)?;
        let ring = Ring::new(boot.current, config.ring_max_events, config.ring_max_bytes);
        let (notify, _) = tokio::sync::watch::channel(boot.current);
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            health: Mutex::new(Health::Ok),
            ring: RwLock::new(ring),
            current: AtomicI64::new(boot.current),
            compacted: AtomicI64::new(boot.compacted),
            notify,
            closed: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::channel();
        let policy = HistoryPolicy {
            max_events: config.history_max_events,
            max_age: config.history_max_age,
        };
        let space = Space {
            path: config.path.clone(),
            min_free_bytes: config.min_free_bytes,
            cache_bytes: config.cache_bytes,
        };
        let writer = Writer::new(Arc::clone(&shared), receiver, policy, space, boot);
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(backend)?;
        tracing::info!(
            path = %config.path.display(),
            revision = boot.current,
            compacted = boot.compacted,
            "store opened"
        );
        Ok(Arc::new(RedbStore {
            shared,
            path: config.path,
            max_value_bytes: config.max_value_bytes,
            requests: Some(requests),
            writer: Some(writer),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a key and value over [`StoreConfig::max_value_bytes`] before it costs a write.
    fn check_size(&self, key: &str, value: &Bytes) -> Result<()> {
        let size = key.len() + value.len();
        if size > self.max_value_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size,
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Sends a mutation to the writer and waits until it is durable (or refused).
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        let (reply, outcome) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        requests
            .send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on the blocking pool (it may touch the disk).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let db = shared.db()?;
            read(&db).map_err(|e| shared.read_error(e))
        })
        .await
        .map_err(backend)?
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("current_revision", &self.current_revision())
            .field("compacted_revision", &self.compacted_revision())
            .finish()
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the queued batch and stop; waiting
        // for it means the file is released once the last watcher is gone too.
        self.requests = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

fn unexpected(outcome: WriteOutcome) -> StoreError {
    StoreError::Backend(format!("writer answered with an unexpected outcome: {outcome:?}").into())
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // A point lookup in a cached B-tree: cheaper than a hop to the blocking pool.
        let db = self.shared.db()?;
        read::get(&db, key).map_err(|e| self.shared.read_error(e))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        self.read(move |db| read::list(db, &opts)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.check_size(key, &value)?;
        match self
            .write(WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        self.check_size(key, &value)?;
        let op = WriteOp::Update {
            key: key.to_owned(),
            value,
            expected: expected_mod_revision,
        };
        match self.write(op).await? {
            WriteOutcome::Put(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_owned(),
                expected: expected_mod_revision,
            })
            .await?
        {
            WriteOutcome::Deleted(prev, revision) => Ok((prev, revision)),
            other => Err(unexpected(other)),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let compacted = self.compacted_revision();
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(Box::new(RedbWatch::new(
            Arc::clone(&self.shared),
            prefix,
            after.max(0),
        )))
    }

    fn current_revision(&self) -> Revision {
        self.shared.current.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.write(WriteOp::Compact { revision }).await? {
            WriteOutcome::Compacted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn health(&self) -> Result<()> {
        self.shared.health().check(&self.path)
    }
}

/// Opens (or creates) the store file readable and writable only by this user: created with
/// mode 0600, and an existing file of an older version tightened to it. It holds every
/// object, Secrets included.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let metadata = file.metadata()?;
    if metadata.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Wraps a backend failure, keeping it as the error's source.
fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend(error.into())
}
