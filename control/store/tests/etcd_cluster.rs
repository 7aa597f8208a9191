//! The etcd backend on a three-member etcd cluster given as three endpoints: with a member
//! killed (whichever it is, the leader included), writes go on through the others, and a
//! watch resumes on another member with every event in order, no gap and no duplicate.

mod support;

use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;
use wasmkube_store::{EtcdConfig, EtcdStore, Store, StoreError};

/// Creates `key`, trying again while etcd is unavailable (a leader election); a create whose
/// answer was lost may have been applied, so `AlreadyExists` after a retry is success, as a
/// Kubernetes client treats it.
async fn create(store: &EtcdStore, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut retried = false;
    loop {
        match store.create(key, Bytes::from_static(b"v")).await {
            Ok(_) => return,
            Err(StoreError::AlreadyExists { .. }) if retried => return,
            Err(StoreError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                eprintln!("create {key}: {why}; retrying");
                retried = true;
            }
            Err(e) => panic!("create {key}: {e}"),
        }
    }
}

use support::etcd::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_member_of_three_killed_writes_go_on_and_a_watch_misses_nothing() {
    let mut members = tokio::task::spawn_blocking(|| Etcd::start_cluster(3))
        .await
        .expect("the etcd cluster starts");
    let mut config = EtcdConfig::new(members.iter().map(Etcd::endpoint).collect());
    config.compaction_interval = Duration::ZERO;
    let store = EtcdStore::open(config).await.expect("etcd store opens");
    let r0 = store.current_revision();
    let mut watch = store.watch("/k/", r0).await.unwrap();
    let mut created = 0;
    for round in 0..3 {
        for _ in 0..20 {
            create(&store, &format!("/k/{created:03}")).await;
            created += 1;
        }
        // Bring the member killed last round back, then kill another one (a different one
        // each round, so one of them leads): two of three always make a quorum.
        if round > 0 {
            let back = (round - 1) % members.len();
            let mut member = members.remove(back);
            member = tokio::task::spawn_blocking(move || {
                member.restart();
                member
            })
            .await
            .unwrap();
            members.insert(back, member);
        }
        let victim = round % members.len();
        members[victim].kill();
    }
    for _ in 0..20 {
        create(&store, &format!("/k/{created:03}")).await;
        created += 1;
    }
    // Every key once, and the watch saw exactly their writes, in revision order.
    let items = store
        .list(wasmkube_store::ListOptions {
            prefix: "/k/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), created);
    let mut revisions: Vec<i64> = items.iter().map(|kv| kv.mod_revision).collect();
    revisions.sort_unstable();
    for expected in revisions {
        let event = timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("an event arrives in time")
            .expect("the watch goes on");
        assert_eq!(event.revision(), expected);
    }
}
