//! A quick look at group commit: N concurrent clients creating keys in a fresh store,
//! printing durable creates per second and the number of commits it took.
//!
//! `cargo run --release -p wasmkube-store --example concurrent_creates -- [clients] [creates]`
//! (defaults: 64 clients, 20,000 creates). Not a benchmark of record: the apiserver-level
//! benchmark is the figure that counts.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wasmkube_store::{RedbStore, Store, StoreConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let creates: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(StoreConfig::new(dir.path().join("store.redb")))?;
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
