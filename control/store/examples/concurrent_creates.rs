//! A quick look at group commit: N concurrent clients creating keys in a fresh store,
//! printing durable creates per second and the number of commits it took.
//!
//! `cargo run --release -p wasmkube-store --example concurrent_creates -- [clients] [creates]`
//! (defaults: 64 clients, 20,000 creates); with `ETCD_ENDPOINT=http://127.0.0.1:2379` the
//! same on the etcd backend (an empty etcd: keys go under `/bench/`). Not a benchmark of
//! record: the apiserver-level benchmark is the figure that counts.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wasmkube_store::{EtcdConfig, EtcdStore, RedbStore, Store, StoreConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let creates: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = match std::env::var("ETCD_ENDPOINT") {
        Ok(endpoint) => {
            let mut config = EtcdConfig::new(endpoint.split(',').map(str::to_owned).collect());
            config.compaction_interval = std::time::Duration::ZERO;
            EtcdStore::open(config).await?
        }
        Err(_) => RedbStore::open(StoreConfig::new(dir.path().join("store.redb")))?,
    };
    let value = Bytes::from(vec![b'x'; 512]);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let store = Arc::clone(&store);
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = client;
            while n < creates {
                store
                    .create(&format!("/bench/{client}/{n}"), value.clone())
                    .await?;
                n += clients;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{creates} durable creates by {clients} clients in {:.2?}: {:.0} creates/s (revision {})",
        elapsed,
        creates as f64 / elapsed.as_secs_f64(),
        store.current_revision()
    );
    Ok(())
}
