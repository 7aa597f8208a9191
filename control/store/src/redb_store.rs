//! The embedded redb backend of [`Store`](crate::Store) (work in progress: the
//! implementation lands in the next commit; this stub keeps the workspace compiling).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, Watch};

/// How to open a [`RedbStore`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The database file (created if missing).
    pub path: PathBuf,
    /// Keep at most this many events of history (older ones are compacted).
    pub history_max_events: usize,
    /// Keep events at most this old (older ones are compacted).
    pub history_max_age: Duration,
    /// How many recent events are kept in memory for watchers.
    pub ring_max_events: usize,
}

impl StoreConfig {
    /// A configuration with the default history bounds.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            history_max_events: 100_000,
            history_max_age: Duration::from_secs(300),
            ring_max_events: 8192,
        }
    }
}

/// The redb-backed store.
#[derive(Debug)]
pub struct RedbStore {
    _config: StoreConfig,
}

impl RedbStore {
    /// Opens (or creates) the store.
    pub fn open(config: StoreConfig) -> Result<Arc<RedbStore>> {
        Ok(Arc::new(RedbStore { _config: config }))
    }
}

fn unimplemented_backend() -> StoreError {
    StoreError::Backend("redb store not implemented yet".into())
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, _key: &str) -> Result<Option<KeyValue>> {
        Err(unimplemented_backend())
    }
    async fn list(&self, _opts: ListOptions) -> Result<ListResult> {
        Err(unimplemented_backend())
    }
    async fn create(&self, _key: &str, _value: Bytes) -> Result<KeyValue> {
        Err(unimplemented_backend())
    }
    async fn update(&self, _key: &str, _value: Bytes, _expected: Revision) -> Result<KeyValue> {
        Err(unimplemented_backend())
    }
    async fn delete(
        &self,
        _key: &str,
        _expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        Err(unimplemented_backend())
    }
    async fn watch(&self, _prefix: &str, _after: Revision) -> Result<Box<dyn Watch>> {
        Err(unimplemented_backend())
    }
    fn current_revision(&self) -> Revision {
        0
    }
    fn compacted_revision(&self) -> Revision {
        0
    }
    async fn compact(&self, _revision: Revision) -> Result<()> {
        Err(unimplemented_backend())
    }
}
