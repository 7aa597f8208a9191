//! The backends the conformance suite runs against: the embedded redb store in a temporary
//! directory, and a real etcd started for the test.

#![allow(dead_code, unreachable_pub)]

pub mod etcd;

use std::sync::Arc;

use tempfile::TempDir;
use wasmkube_store::{EtcdConfig, EtcdStore, RedbStore, Store, StoreConfig};

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Redb,
    Etcd,
}

/// A store with what keeps it alive (its directory, its etcd).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    _dir: Option<TempDir>,
    etcd: Option<etcd::Etcd>,
}

impl std::ops::Deref for TestStore {
    type Target = Arc<dyn Store>;
    fn deref(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// An etcd store on `endpoint` with no periodic compaction (the tests compact themselves).
pub async fn open_etcd(endpoint: String) -> Arc<EtcdStore> {
    let mut config = EtcdConfig::new(vec![endpoint]);
    config.compaction_interval = std::time::Duration::ZERO;
    EtcdStore::open(config).await.expect("etcd store opens")
}

impl Backend {
    /// A fresh, empty store.
    pub async fn open(self) -> TestStore {
        match self {
            Backend::Redb => {
                let dir = TempDir::new().unwrap();
                let store = RedbStore::open(StoreConfig::new(dir.path().join("store.redb")))
                    .expect("store opens");
                TestStore {
                    store,
                    backend: self,
                    _dir: Some(dir),
                    etcd: None,
                }
            }
            Backend::Etcd => {
                let etcd = tokio::task::spawn_blocking(etcd::Etcd::start)
                    .await
                    .expect("etcd starts");
                let store = open_etcd(etcd.endpoint()).await;
                TestStore {
                    store,
                    backend: self,
                    _dir: None,
                    etcd: Some(etcd),
                }
            }
        }
    }
}

/// Runs each named `async fn(Backend)` of the enclosing module as a test on redb and on etcd.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Backend::Redb).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Backend::Etcd).await
                }
            )*
        }
    };
}
