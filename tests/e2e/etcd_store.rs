//! `wasmkube server --datastore-endpoint` on a real etcd (Debian's etcd-server, started by the
//! test on loopback with a private data directory): the real kubectl creates, gets, watches
//! and deletes; a Deployment's wasm pods run; after `kill -9` of the server and a restart on
//! the same etcd, every write the server acknowledged is there with its resourceVersion. An
//! unreachable etcd at start is a clear error; etcd gone under a running server is 503 with
//! Retry-After (never a gRPC message) until it returns. Fails naming `tests/run` when etcd is
//! not installed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tokio::sync::{Mutex, mpsc};

#[path = "../../control/store/tests/support/etcd.rs"]
mod etcd_server;

use crate::harness::{TestCluster, free_port, poll_until, raw, ready_app_pods, spawn_wasmkube};
use crate::kubectl::{forward_watch_events, wait_for_event};

/// The http-hello sample image (a wasi:http component).
const IMAGE: &str = "wasmkube.local/samples/http-hello:v1";
/// Creates tried while the server is killed, and after how many acknowledged ones.
const TOTAL: usize = 400;
const KILL_AFTER: usize = 150;
const CLIENTS: usize = 8;

fn numbered_configmap(i: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("cm-{i:04}")),
            labels: Some(BTreeMap::from([("test".to_owned(), "etcd".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("i".to_owned(), i.to_string())])),
        ..ConfigMap::default()
    }
}

async fn versions_of(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let list = api
        .list(&ListParams::default().labels("test=etcd"))
        .await
        .context("listing configmaps")?;
    Ok(list
        .items
        .iter()
        .map(|cm| (cm.name_any(), cm.resource_version().unwrap_or_default()))
        .collect())
}

#[tokio::test]
async fn a_server_on_etcd_serves_kubectl_runs_pods_and_keeps_acknowledged_writes_across_kill_9()
-> Result<()> {
    let etcd = tokio::task::spawn_blocking(etcd_server::Etcd::start).await?;
    let Some(mut cluster) = TestCluster::builder()
        .server_arg("--datastore-endpoint")
        .server_arg(etcd.endpoint())
        .agents(1)
        .start_with_samples(
            "a_server_on_etcd_serves_kubectl_runs_pods_and_keeps_acknowledged_writes_across_kill_9",
        )
        .await?
    else {
        return Ok(());
    };

    // kubectl: watch, create, get, delete.
    let mut watch = cluster
        .kubectl_command(&[
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .spawn()
        .context("spawning kubectl get -w")?;
    let stdout = watch
        .stdout
        .take()
        .ok_or_else(|| anyhow!("kubectl has no stdout pipe"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(forward_watch_events(stdout, tx));
    cluster
        .kubectl_ok(&["create", "configmap", "first", "--from-literal=k=v1"])
        .await?;
    let got = cluster
        .kubectl_json(&["get", "configmap", "first", "-o", "json"])
        .await?;
    assert_eq!(got["data"]["k"], "v1", "{got}");
    let mut seen = Vec::new();
    wait_for_event(&mut rx, &mut seen, "first", |e| e.0 == "ADDED").await?;
    cluster
        .kubectl_ok(&["label", "configmap", "first", "stage=two"])
        .await?;
    wait_for_event(&mut rx, &mut seen, "first", |e| {
        e.0 == "MODIFIED" && e.2["stage"] == "two"
    })
    .await?;
    cluster
        .kubectl_ok(&["delete", "configmap", "first"])
        .await?;
    wait_for_event(&mut rx, &mut seen, "first", |e| e.0 == "DELETED").await?;
    let types: Vec<&str> = seen.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{seen:?}");
    let out = cluster.kubectl(&["get", "configmap", "first"]).await?;
    ensure!(
        !out.status.success(),
        "the deleted configmap is still there: {out:?}"
    );
    let _ = watch.start_kill();
    let _ = watch.wait().await;
    reader.abort();

    // A Deployment's pods run on the node.
    cluster
        .kubectl_ok(&[
            "create",
            "deployment",
            "web",
            &format!("--image={IMAGE}"),
            "--replicas=2",
        ])
        .await?;
    ready_app_pods(&cluster, "web", 2, Duration::from_secs(180)).await?;

    // Creates from several clients; kill -9 of the server in the middle.
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let client = cluster.client().await?;
        let (next, acked, acked_count) = (next.clone(), acked.clone(), acked_count.clone());
        workers.push(tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::default_namespaced(client);
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
                    Err(e) => return Some(e.to_string()),
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while acked_count.load(Ordering::SeqCst) < KILL_AFTER {
        if workers.iter().all(|w| w.is_finished()) {
            let mut errors = Vec::new();
            for w in workers.drain(..) {
                errors.push(w.await?);
            }
            bail!(
                "only {} creates acknowledged before every worker stopped: {errors:?}",
                acked_count.load(Ordering::SeqCst)
            );
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} creates acknowledged in time",
            acked_count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill9().await?;
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .map_err(|_| anyhow!("a create hung after the server was killed"))??;
    }
    let acked = acked.lock().await.clone();

    cluster.restart().await?;
    let client = cluster.client().await?;
    let after = versions_of(&client).await?;
    let lost: Vec<&String> = acked.keys().filter(|n| !after.contains_key(*n)).collect();
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged creates were lost by kill -9: {:?}",
        lost.len(),
        acked.len(),
        lost.iter().take(20).collect::<Vec<_>>()
    );
    for (name, rv) in &acked {
        assert_eq!(
            after.get(name),
            Some(rv),
            "{name} changed its resourceVersion"
        );
    }
    eprintln!(
        "kill -9 after {} acknowledged creates on etcd; {} objects after the restart",
        acked.len(),
        after.len()
    );

    // The restarted server still runs the Deployment, and deletes it.
    ready_app_pods(&cluster, "web", 2, Duration::from_secs(180)).await?;
    cluster
        .kubectl_ok(&[
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--wait=true",
        ])
        .await?;
    cluster
        .kubectl_ok(&[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app=web",
            "--timeout=120s",
        ])
        .await?;
    drop(etcd);
    Ok(())
}

#[tokio::test]
async fn without_etcd_the_server_answers_503_with_retry_after_and_recovers_when_etcd_returns()
-> Result<()> {
    // An unreachable endpoint at start: a clear error and a failing exit code.
    let dir = tempfile::tempdir()?;
    let closed = free_port()?;
    let log = dir.path().join("server.log");
    let args: Vec<String> = vec![
        "server".into(),
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--bind=127.0.0.1:{}", free_port()?),
        "--disable-agent".into(),
        "--cluster-dns-listen=127.0.0.1:0".into(),
        format!("--cluster-dns-upstream=127.0.0.1:{}", free_port()?),
        format!("--datastore-endpoint=http://127.0.0.1:{closed}"),
    ];
    let mut child = spawn_wasmkube(&args, &log)?;
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .context("the server kept running without its etcd")??;
    let text = std::fs::read_to_string(&log)?;
    ensure!(!status.success(), "exit {status}: {text}");
    ensure!(
        text.contains(&format!("etcd at http://127.0.0.1:{closed}")) && !text.contains("panicked"),
        "the error does not name the etcd endpoint: {text}"
    );

    // etcd gone under a running server: 503 with Retry-After and a sentence, then recovery.
    let mut etcd = tokio::task::spawn_blocking(etcd_server::Etcd::start).await?;
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--datastore-endpoint")
        .server_arg(etcd.endpoint())
        .start()
        .await?;
    cluster
        .kubectl_ok(&["create", "configmap", "before", "--from-literal=k=v"])
        .await?;
    // A client that shows each answer (kube-rs would retry a 503 by itself).
    let mut config = cluster.kube_config().await?;
    config.default_retry = false;
    let client = kube::Client::try_from(config)?;
    etcd.kill();
    let path = "/api/v1/namespaces/default/configmaps/before";
    let answer = raw::get(&client, path).await?;
    ensure!(answer.status == 503, "{answer:?}");
    ensure!(
        answer.headers.get(http::header::RETRY_AFTER).is_some(),
        "no Retry-After: {answer:?}"
    );
    let status = answer.json()?;
    let message = status["message"].as_str().unwrap_or_default();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["code"], 503, "{status}");
    ensure!(
        message.contains("etcd")
            && !message.to_lowercase().contains("grpc")
            && !message.contains("tonic"),
        "the message should say etcd is unreachable, in words: {message}"
    );
    poll_until("/readyz to fail", Duration::from_secs(60), || {
        let client = client.clone();
        async move { Ok((raw::get(&client, "/readyz").await?.status == 503).then_some(())) }
    })
    .await?;

    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart();
        etcd
    })
    .await?;
    poll_until("reads to work again", Duration::from_secs(60), || {
        let client = client.clone();
        async move { Ok((raw::get(&client, path).await?.status == 200).then_some(())) }
    })
    .await?;
    cluster
        .kubectl_ok(&["create", "configmap", "after", "--from-literal=k=v"])
        .await?;
    let got = cluster
        .kubectl_json(&["get", "configmaps", "before", "after", "-o", "json"])
        .await?;
    assert_eq!(got["items"].as_array().map(Vec::len), Some(2), "{got}");
    drop(etcd);
    Ok(())
}
