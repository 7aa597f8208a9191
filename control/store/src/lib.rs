//! The revisioned key-value store behind the apiserver.
//!
//! This is the subset of the etcd v3 contract that a Kubernetes apiserver needs:
//! point reads, prefix ranges (optionally at a past revision), create-if-absent,
//! compare-and-swap updates and deletes on a key's mod revision, and watches of a
//! prefix from a revision that deliver every later event in revision order with no
//! gaps and no duplicates. Old history is compacted; watching from a compacted
//! revision is the explicit [`StoreError::Compacted`] error (410 Gone upstream).
//!
//! Every write gets a new cluster-wide revision, exactly like etcd. The apiserver
//! uses a key's `mod_revision` as the object's `resourceVersion`.
//!
//! [`Store`] is the seam: the embedded redb backend ([`RedbStore`]) implements it
//! on one machine, the etcd backend ([`EtcdStore`]) implements it for several servers on
//! one etcd cluster, and the apiserver never knows which one it talks to. Revisions are
//! the backend's own: redb's start at 0, etcd's at 1.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

mod etcd_store;
mod redb_store;

pub use etcd_store::{EtcdConfig, EtcdStore, EtcdTls};
pub use redb_store::{DEFAULT_MAX_VALUE_BYTES, DEFAULT_MIN_FREE_BYTES, RedbStore, StoreConfig};

/// A cluster-wide, strictly increasing write counter. `0` means "nothing yet".
pub type Revision = i64;

/// One stored key with the revisions that describe its history.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The stored bytes (the apiserver stores JSON).
    pub value: Bytes,
    /// The revision at which this key was created (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// One committed change, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key was created (`prev` is `None`) or updated (`prev` is the value before).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A key was deleted at `revision`; `prev` is its last value.
    Delete { revision: Revision, prev: KeyValue },
}

impl Event {
    /// The revision at which this change was committed.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key this change is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// What [`Store::list`] is asked for.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Continue after this key (exclusive); used for paging.
    pub start_after: Option<String>,
    /// At most this many items; `None` (or `Some(0)`, as Kubernetes' `limit=0`) for all.
    pub limit: Option<usize>,
    /// Read the state as it was at this revision; `None` for the latest.
    /// Must be >= the compacted revision and <= the current revision.
    pub revision: Option<Revision>,
}

/// The answer of [`Store::list`].
#[derive(Clone, Debug)]
pub struct ListResult {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the snapshot was taken at (use it for the next page).
    pub revision: Revision,
    /// Whether more keys matched beyond `limit`.
    pub more: bool,
}

/// Errors of the store. Conflicts and missing keys are ordinary outcomes the
/// apiserver maps to 409/404; `Compacted` maps to 410 Gone.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    /// The key does not exist.
    #[error("key {key} not found")]
    NotFound { key: String },
    /// A compare-and-swap failed: the key's mod revision is not the expected one.
    #[error("key {key} was modified: expected mod revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The requested revision is older than the oldest retained history.
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// A value (with its key) larger than the store accepts, as etcd's `--max-request-bytes`
    /// ("etcdserver: request is too large"). Nothing was written.
    #[error(
        "request is too large: key {key} and its value are {size} bytes, over the limit of {limit} bytes"
    )]
    TooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    /// A watcher fell too far behind and its events were compacted away.
    #[error("watcher fell behind: events after revision {revision} were compacted")]
    WatcherTooSlow { revision: Revision },
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// The store's filesystem has too little free space: writes are refused (deletes and
    /// reads still work) until space is freed, which the store notices by itself.
    #[error(
        "no space left for the store: {available} bytes free on the filesystem of {path}, \
         writes need at least {required}; free some space and writes resume by themselves"
    )]
    NoSpace {
        path: std::path::PathBuf,
        available: u64,
        required: u64,
    },
    /// The store cannot serve now (its file failed, for instance when the disk filled up
    /// during a write, and is being reopened); it recovers by itself.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (I/O, corruption, ...).
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of events of one prefix, from a revision on.
///
/// `next` is cancel-safe: dropping its future (e.g. in `tokio::select!`) loses no event.
#[async_trait]
pub trait Watch: Send {
    /// The next event (revision order, no gaps, no duplicates), or an error after which
    /// the watch is over (`WatcherTooSlow`, `Closed`). Waits while there is nothing new.
    async fn next(&mut self) -> Result<Event>;
    /// A revision through which every event of this prefix has been delivered by `next`
    /// (used for bookmarks). Never less than the revision the watch started after.
    fn progress(&self) -> Revision;
}

/// The revisioned key-value contract. Every write is durable when its future resolves
/// with `Ok`: it survives `kill -9` of the process.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys under a prefix, in key order, optionally at a past revision and paged.
    async fn list(&self, opts: ListOptions) -> Result<ListResult>;
    /// Creates `key`; fails with `AlreadyExists` if present, with `TooLarge` if key and
    /// value are over the store's size limit.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;
    /// Replaces `key` if its mod revision is `expected_mod_revision` (`TooLarge` as
    /// [`Store::create`]).
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue>;
    /// Deletes `key` (if `expected_mod_revision` is set, only when it matches).
    /// Returns the deleted value and the revision of the deletion.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)>;
    /// Watches `prefix` for every event with revision > `after`.
    /// `after` older than the compacted revision fails with `Compacted`; an `after`
    /// beyond the current revision is allowed (the watch waits for it).
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>>;
    /// The revision of the last committed write.
    fn current_revision(&self) -> Revision;
    /// The oldest revision whose successors are all retained (watch/list-at-revision floor).
    fn compacted_revision(&self) -> Revision;
    /// Discards history up to and including `revision` (never the latest values).
    /// A revision at or below the compacted one is a no-op; beyond the current one,
    /// `FutureRevision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// Whether the value of `key` at `mod_revision` is stored in a form a write would change
    /// (encrypted with a key that is no longer the first, as Kubernetes' "stale" transform):
    /// an update that changes nothing must still write it. Plain backends never are.
    async fn is_stale(&self, key: &str, mod_revision: Revision) -> bool {
        let _ = (key, mod_revision);
        false
    }
    /// Why writes fail now ([`StoreError::NoSpace`], [`StoreError::Unavailable`]), or `Ok`
    /// when the store takes writes; for readiness. Plain backends always do.
    fn health(&self) -> Result<()> {
        Ok(())
    }
}
