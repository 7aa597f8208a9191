//! The RBAC objects in memory, kept current from one store watch (Kubernetes' RBAC
//! authorizer reads shared-informer listers the same way): authorization never lists the
//! store.
//!
//! [`PolicyCache::start`] lists `/registry/rbac.authorization.k8s.io/` once and then
//! follows its watch from that revision in a task. After each batch of events (everything
//! the watch has ready) it builds a new [`Snapshot`] and swaps it in; readers take an
//! `Arc` of the current one. A watch that falls behind or is compacted away relists.
//! [`PolicyCache::wait_for`] lets an RBAC write return only once the cache has seen it, so
//! a client that creates a RoleBinding is authorized by it on its very next request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use wasmkube_store::{Event, ListOptions, Revision, Store, StoreError};

use super::snapshot::{Entry, PREFIX, Snapshot};

/// How long an RBAC write waits for the cache to catch up before answering anyway.
const WAIT_FOR_CACHE: Duration = Duration::from_secs(2);
/// The pause before relisting after a watch error.
const RELIST_BACKOFF: Duration = Duration::from_millis(200);

/// Every RBAC object, in memory, current to the store's watch.
#[derive(Debug)]
pub struct PolicyCache {
    snapshot: RwLock<Arc<Snapshot>>,
    revision: watch::Sender<Revision>,
}

impl PolicyCache {
    /// Lists the RBAC objects, and follows their watch in a background task that ends
    /// when `stopped` resolves (the server stopped), the cache is dropped or the store
    /// closes.
    pub async fn start(
        store: Arc<dyn Store>,
        stopped: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<PolicyCache>, StoreError> {
        let (objects, revision) = list(store.as_ref()).await?;
        let snapshot = Snapshot::build(revision, objects.values());
        let (tx, _) = watch::channel(revision);
        let cache = Arc::new(PolicyCache {
            snapshot: RwLock::new(Arc::new(snapshot)),
            revision: tx,
        });
        let follow = follow(Arc::downgrade(&cache), store, objects, revision);
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped => {}
                _ = follow => {}
            }
        });
        Ok(cache)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .snapshot
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Notified with the snapshot's revision after each change.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// Waits (at most a couple of seconds) until the cache reflects `revision`.
    pub async fn wait_for(&self, revision: Revision) {
        let mut rx = self.revision.subscribe();
        let caught_up = rx.wait_for(|seen| *seen >= revision);
        if tokio::time::timeout(WAIT_FOR_CACHE, caught_up)
            .await
            .is_err()
        {
            tracing::warn!(
                revision,
                "the RBAC cache did not catch up with a write in time"
            );
        }
    }

    fn publish(&self, snapshot: Snapshot) {
        let revision = snapshot.revision();
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
        self.revision.send_replace(revision);
    }
}

type Objects = BTreeMap<String, Entry>;

async fn list(store: &dyn Store) -> Result<(Objects, Revision), StoreError> {
    let page = store
        .list(ListOptions {
            prefix: PREFIX.to_string(),
            ..ListOptions::default()
        })
        .await?;
    let objects = page
        .items
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), Entry::decode(&kv.key, &kv.value)?)))
        .collect();
    Ok((objects, page.revision))
}

fn apply(objects: &mut Objects, event: &Event) {
    match event {
        Event::Put { kv, .. } => match Entry::decode(&kv.key, &kv.value) {
            Some(entry) => {
                objects.insert(kv.key.clone(), entry);
            }
            None => {
                tracing::warn!(key = %kv.key, "ignoring an RBAC object that does not decode");
                objects.remove(&kv.key);
            }
        },
        Event::Delete { prev, .. } => {
            objects.remove(&prev.key);
        }
    }
}

/// The watch loop: apply events in batches, publish a snapshot per batch, relist on
/// errors. Ends when the cache is gone or the store is closed.
async fn follow(
    cache: Weak<PolicyCache>,
    store: Arc<dyn Store>,
    mut objects: Objects,
    mut revision: Revision,
) {
    loop {
        let mut watcher = match store.watch(PREFIX, revision).await {
            Ok(w) => w,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "watching RBAC objects failed; relisting");
                tokio::time::sleep(RELIST_BACKOFF).await;
                match relist(&cache, store.as_ref()).await {
                    Some((o, r)) => (objects, revision) = (o, r),
                    None => return,
                }
                continue;
            }
        };
        loop {
            let first = watcher.next().await;
            let mut failed = None;
            match first {
                Ok(event) => {
                    revision = event.revision();
                    apply(&mut objects, &event);
                }
                Err(e) => failed = Some(e),
            }
            // Everything else already waiting joins this batch: one snapshot per burst.
            while failed.is_none() {
                match watcher.next().now_or_never() {
                    Some(Ok(event)) => {
                        revision = event.revision();
                        apply(&mut objects, &event);
                    }
                    Some(Err(e)) => failed = Some(e),
                    None => break,
                }
            }
            let Some(cache_ref) = cache.upgrade() else {
                return;
            };
            cache_ref.publish(Snapshot::build(revision, objects.values()));
            drop(cache_ref);
            match failed {
                None => {}
                Some(StoreError::Closed) => return,
                Some(e) => {
                    tracing::warn!(error = %e, "the RBAC watch ended; relisting");
                    tokio::time::sleep(RELIST_BACKOFF).await;
                    match relist(&cache, store.as_ref()).await {
                        Some((o, r)) => (objects, revision) = (o, r),
                        None => return,
                    }
                    break;
                }
            }
        }
    }
}

/// Lists again and publishes; `None` when the cache is gone or the store closed.
async fn relist(cache: &Weak<PolicyCache>, store: &dyn Store) -> Option<(Objects, Revision)> {
    loop {
        match list(store).await {
            Ok((objects, revision)) => {
                let cache = cache.upgrade()?;
                cache.publish(Snapshot::build(revision, objects.values()));
                return Some((objects, revision));
            }
            Err(StoreError::Closed) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "listing RBAC objects failed; retrying");
                tokio::time::sleep(RELIST_BACKOFF).await;
                cache.upgrade()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::Identity;
    use serde_json::json;

    fn store(dir: &std::path::Path) -> Arc<dyn Store> {
        wasmkube_store::RedbStore::open(wasmkube_store::StoreConfig::new(dir.join("store.redb")))
            .expect("store")
    }

    fn put(value: serde_json::Value) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(&value).unwrap())
    }

    #[tokio::test]
    async fn the_cache_follows_creates_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let role_key = "/registry/rbac.authorization.k8s.io/clusterroles/reader";
        store
            .create(
                role_key,
                put(json!({"metadata": {"name": "reader"},
                    "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]})),
            )
            .await
            .unwrap();
        let cache = PolicyCache::start(Arc::clone(&store), std::future::pending())
            .await
            .unwrap();
        assert!(cache.snapshot().cluster_role("reader").is_some());

        let alice = Identity {
            user: "alice".into(),
            groups: vec![],
        };
        let get_pod = crate::authz::RequestInfo::resource("get", "", "pods", "", "ns", "p");
        assert!(cache.snapshot().allows(&alice, &get_pod).is_err());

        let binding_key = "/registry/rbac.authorization.k8s.io/clusterrolebindings/alice";
        let created = store
            .create(
                binding_key,
                put(json!({"metadata": {"name": "alice"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]})),
            )
            .await
            .unwrap();
        cache.wait_for(created.mod_revision).await;
        assert!(cache.snapshot().allows(&alice, &get_pod).is_ok());

        let (_, deleted) = store.delete(role_key, None).await.unwrap();
        cache.wait_for(deleted).await;
        assert_eq!(
            cache.snapshot().allows(&alice, &get_pod),
            Err(vec![
                "clusterrole.rbac.authorization.k8s.io \"reader\" not found".to_string()
            ])
        );
        assert_eq!(cache.snapshot().revision(), deleted);
    }
}
