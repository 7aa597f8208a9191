//! Proves the store's durability promise end to end: a write the server acknowledged survives
//! `kill -9` (1,000 concurrent creates from many independent kube-rs clients, the server killed
//! mid-stream), and a clean restart (SIGTERM) keeps every object of every kind with its exact
//! resourceVersion, while new writes after the restart keep moving forward.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tokio::sync::Mutex;

use crate::harness::TestCluster;
use crate::kube_client::create_namespace;

/// Objects the crash test tries to create.
const TOTAL: usize = 1_000;
/// Independent clients (each its own connection pool) creating concurrently.
const CLIENTS: usize = 16;
/// Acknowledged creates after which the server is killed.
const KILL_AFTER: usize = 300;

/// name -> resourceVersion of every object in `namespace` with label test=`label`.
async fn versions_of(
    client: &kube::Client,
    namespace: &str,
    label: &str,
) -> Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("test={label}")))
        .await
        .context("listing configmaps")?;
    Ok(list
        .items
        .iter()
        .map(|cm| (cm.name_any(), cm.resource_version().unwrap_or_default()))
        .collect())
}

fn numbered_configmap(i: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("cm-{i:04}")),
            labels: Some(BTreeMap::from([(
                "test".to_owned(),
                "durability".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("i".to_owned(), i.to_string())])),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn acknowledged_creates_survive_kill_9_and_restarts() -> Result<()> {
    let mut cluster = TestCluster::builder().without_controllers().start().await?;
    let admin = cluster.client().await?;
    create_namespace(&admin, "durability").await?;

    let next = Arc::new(AtomicUsize::new(0));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let client = cluster.client().await?;
        let (next, acked_count, acked) = (next.clone(), acked_count.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::namespaced(client, "durability");
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return None;
                }
                match api
                    .create(&PostParams::default(), &numbered_configmap(i))
                    .await
                {
                    Ok(cm) => {
                        let rv = cm.resource_version().unwrap_or_default();
                        acked.lock().await.insert(cm.name_any(), rv);
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    // After the kill every request fails; the worker's job is over.
                    Err(e) => return Some(format!("{e}")),
                }
            }
        }));
    }

    // Kill once enough creates were acknowledged (or all workers stopped, which is a failure).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        if acked_count.load(Ordering::SeqCst) >= KILL_AFTER {
            break;
        }
        if workers.iter().all(|w| w.is_finished()) {
            let mut errors = Vec::new();
            for w in workers.drain(..) {
                errors.push(w.await?);
            }
            bail!(
                "only {} creates were acknowledged before every worker stopped: {errors:?}",
                acked_count.load(Ordering::SeqCst)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "only {} creates acknowledged within the deadline",
                acked_count.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill9().await?;
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .map_err(|_| anyhow!("a create hung after the server was killed"))??;
    }
    let acked = acked.lock().await.clone();
    ensure!(
        acked.len() >= KILL_AFTER,
        "only {} acknowledged",
        acked.len()
    );

    cluster.restart().await?;
    let client = cluster.client().await?;
    let after_crash = versions_of(&client, "durability", "durability").await?;
    let lost: Vec<&String> = acked
        .keys()
        .filter(|name| !after_crash.contains_key(*name))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged creates were lost by kill -9: {:?}",
        lost.len(),
        acked.len(),
        lost.iter().take(20).collect::<Vec<_>>()
    );
    for (name, rv) in &acked {
        assert_eq!(
            after_crash.get(name),
            Some(rv),
            "{name} changed its resourceVersion across kill -9"
        );
    }
    assert!(after_crash.len() >= acked.len());
    eprintln!(
        "kill -9 after {} acknowledged creates; {} objects after the restart",
        acked.len(),
        after_crash.len()
    );
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "durability");
    let sample = api.get("cm-0000").await?;
    assert_eq!(
        sample
            .data
            .as_ref()
            .and_then(|d| d.get("i"))
            .map(String::as_str),
        Some("0")
    );

    // The server accepts writes after recovery, and a clean restart changes nothing.
    let name = numbered_configmap(TOTAL).name_any();
    if !after_crash.contains_key(&name) {
        api.create(&PostParams::default(), &numbered_configmap(TOTAL))
            .await?;
    }
    let before_term = versions_of(&client, "durability", "durability").await?;
    let status = cluster.terminate().await?;
    assert!(
        status.success(),
        "SIGTERM should exit cleanly, got {status}"
    );
    cluster.restart().await?;
    let client = cluster.client().await?;
    let after_term = versions_of(&client, "durability", "durability").await?;
    assert_eq!(
        after_term, before_term,
        "a clean restart changed the stored objects"
    );
    Ok(())
}

/// The resourceVersion of an object as a number: opaque to clients, but wasmkube's are store
/// revisions, and this test checks that they keep growing across a restart.
fn numeric(rv: Option<&str>) -> Result<u64> {
    let rv = rv.context("the object has no resourceVersion")?;
    rv.parse()
        .with_context(|| format!("resourceVersion {rv:?} is not a store revision (a number)"))
}

#[tokio::test]
async fn clean_restart_keeps_objects_of_every_kind_and_their_versions() -> Result<()> {
    let mut cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok(&["create", "namespace", "restart"])
        .await?;
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: restart}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: restart}
data: {token: dG9rZW4=}
---
apiVersion: v1
kind: Pod
metadata: {name: worker, namespace: restart, labels: {app: worker}}
spec:
  containers:
  - {name: main, image: ghcr.io/wasmkube/hello:1.0}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: restart}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: ghcr.io/wasmkube/hello:1.0}
"#;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], manifest)
        .await?;
    cluster
        .kubectl_ok(&[
            "-n",
            "restart",
            "scale",
            "deployment",
            "web",
            "--replicas=4",
        ])
        .await?;

    let client = cluster.client().await?;
    let snapshot = |client: kube::Client| async move {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), "restart")
            .get("settings")
            .await?;
        let secret = Api::<Secret>::namespaced(client.clone(), "restart")
            .get("creds")
            .await?;
        let pod = Api::<Pod>::namespaced(client.clone(), "restart")
            .get("worker")
            .await?;
        let deploy = Api::<Deployment>::namespaced(client.clone(), "restart")
            .get("web")
            .await?;
        let ns = Api::<Namespace>::all(client.clone()).get("restart").await?;
        Ok::<_, anyhow::Error>(vec![
            (
                "configmap",
                cm.resource_version(),
                cm.uid(),
                serde_json::to_value(&cm.data)?,
            ),
            (
                "secret",
                secret.resource_version(),
                secret.uid(),
                serde_json::to_value(&secret.data)?,
            ),
            (
                "pod",
                pod.resource_version(),
                pod.uid(),
                serde_json::to_value(&pod.spec)?,
            ),
            (
                "deployment",
                deploy.resource_version(),
                deploy.uid(),
                serde_json::to_value(&deploy.spec)?,
            ),
            (
                "namespace",
                ns.resource_version(),
                ns.uid(),
                serde_json::to_value(&ns.status)?,
            ),
        ])
    };
    let before = snapshot(client.clone()).await?;
    let highest_before = before
        .iter()
        .map(|(_, rv, _, _)| numeric(rv.as_deref()))
        .collect::<Result<Vec<u64>>>()?
        .into_iter()
        .max()
        .context("no objects before the restart")?;

    let status = cluster.terminate().await?;
    assert!(
        status.success(),
        "SIGTERM should exit cleanly, got {status}"
    );
    cluster.restart().await?;
    let client = cluster.client().await?;
    let after = snapshot(client.clone()).await?;
    assert_eq!(after, before, "objects changed across a clean restart");

    // The built-in namespaces are not recreated or duplicated by the second start.
    let out = cluster.kubectl_ok(&["get", "ns", "-o", "name"]).await?;
    let mut names: Vec<&str> = out.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "namespace/default",
            "namespace/kube-node-lease",
            "namespace/kube-public",
            "namespace/kube-system",
            "namespace/restart"
        ]
    );

    // Versions keep moving forward after the restart (a reset would break resumed watches).
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "restart");
    let mut cm = api.get("settings").await?;
    cm.data = Some(BTreeMap::from([("mode".to_owned(), "slow".to_owned())]));
    let updated = api.replace("settings", &PostParams::default(), &cm).await?;
    let new = numeric(updated.resource_version().as_deref())?;
    assert!(
        new > highest_before,
        "resourceVersion went back: {new} <= {highest_before}"
    );
    Ok(())
}
