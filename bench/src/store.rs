//! The raw store peer: durable creates straight into the embedded redb store, in-process,
//! at the same concurrencies as the HTTP benchmark. Subtracting the two rows shows what
//! HTTP, TLS, JSON handling and the apiserver's own work cost on top of the store.
//!
//! The values are the JSON of the same ConfigMaps the HTTP benchmark creates, under the
//! keys the apiserver would use, and every create is durable when acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::future::try_join_all;
use indicatif::ProgressBar;
use wasmkube_store::{RedbStore, Store, StoreConfig};

use super::creates::bench_config_map;
use super::report::{CreateResult, LatencySummary, latency_histogram, record};

/// A fresh store in a temporary directory (removed when the returned guard is dropped).
pub(crate) fn open_temp() -> anyhow::Result<(tempfile::TempDir, Arc<RedbStore>)> {
    let dir = tempfile::Builder::new()
        .prefix("wasmkube-bench-store-")
        .tempdir()
        .context("cannot create a temporary directory for the store")?;
    let store = RedbStore::open(StoreConfig::new(dir.path().join("store.redb")))
        .context("cannot open a redb store")?;
    Ok((dir, store))
}

/// `clients` concurrent tasks create `creates` keys in total, one at a time each.
pub(crate) async fn run_level(
    store: &Arc<RedbStore>,
    level: usize,
    clients: usize,
    creates: usize,
    progress: &ProgressBar,
) -> anyhow::Result<CreateResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (store, next, progress) = (Arc::clone(store), Arc::clone(&next), progress.clone());
            tokio::spawn(async move {
                let mut latency = latency_histogram();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= creates {
                        break;
                    }
                    let name = format!("l{level}-c{clients}-{index}");
                    let mut object = bench_config_map(name.clone());
                    object.metadata.namespace = Some("bench".to_owned());
                    let value = Bytes::from(serde_json::to_vec(&object)?);
                    let key = format!("/registry/configmaps/bench/{name}");
                    let sent = Instant::now();
                    store.create(&key, value).await?;
                    record(&mut latency, sent.elapsed());
                    progress.inc(1);
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let results = try_join_all(tasks)
        .await
        .context("a store client task panicked")?;
    let elapsed = started.elapsed();
    let mut latency = latency_histogram();
    for result in results {
        latency
            .add(&result.context("a raw store create failed")?)
            .context("merging latency histograms")?;
    }
    Ok(CreateResult {
        path: "redb store",
        clients,
        creates: latency.len(),
        errors: 0,
        elapsed,
        latency: LatencySummary::of(&latency),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_level_creates_every_key_once() {
        let (_dir, store) = open_temp().expect("store");
        let row = run_level(&store, 0, 4, 20, &ProgressBar::hidden())
            .await
            .expect("level runs");
        assert_eq!(row.creates, 20);
        assert_eq!(row.clients, 4);
        let again = run_level(&store, 1, 4, 20, &ProgressBar::hidden())
            .await
            .expect("the same concurrency again uses new keys");
        assert_eq!(again.creates, 20);
        let listed = store
            .list(wasmkube_store::ListOptions {
                prefix: "/registry/configmaps/bench/".to_owned(),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 40);
    }
}
