//! Deployments end to end, as a Kubernetes user drives them with the real `kubectl`: the
//! controller-manager of `wasmkube server` turns a Deployment into ReplicaSets
//! (`<name>-<pod-template-hash>`) and pods of the `http-hello` sample on a node agent;
//! `kubectl rollout status`, `scale`, `set env`, `rollout history`, `undo`, `pause`,
//! `resume` and `restart` work; a watch on the pods checks the rolling update's promises
//! (never fewer than `replicas - maxUnavailable` ready pods, never more than
//! `replicas + maxSurge` pods) and that Recreate never runs old and new pods together.
//! Each test fails, naming `samples/build --oci`, when the sample images are not built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::harness::{TestCluster, events_of, poll_until};

/// The http-hello sample image (a wasi:http component).
const IMAGE: &str = "wasmkube.local/samples/http-hello:v1";
/// How long pods of a rollout may take to become ready.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(180);

/// Whether the pod's `Ready` condition is `True`.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_template_hash(labels: &BTreeMap<String, String>) -> String {
    labels.get("pod-template-hash").cloned().unwrap_or_default()
}

/// A Deployment of http-hello with its readiness probe, `runtimeClassName: wasmtime` and
/// the given strategy, as `kubectl apply` takes it.
fn http_hello_deployment(name: &str, replicas: i32, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "containers": [{
                        "name": "http-hello",
                        "image": IMAGE,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "http"},
                            "periodSeconds": 1,
                        },
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }],
                },
            },
        },
    })
}

async fn deployment(cluster: &TestCluster, name: &str) -> Result<Deployment> {
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await?);
    api.get(name)
        .await
        .with_context(|| format!("getting deployment {name}"))
}

/// The ReplicaSets of the Deployment (by its `app` label), oldest first.
async fn replica_sets(cluster: &TestCluster, app: &str) -> Result<Vec<ReplicaSet>> {
    let api: Api<ReplicaSet> = Api::default_namespaced(cluster.client().await?);
    let mut list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items;
    list.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(list)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn revision(rs: &ReplicaSet) -> String {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned()
        .unwrap_or_default()
}

/// The pods labelled `app=<app>`.
async fn pods(cluster: &TestCluster, app: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::default_namespaced(cluster.client().await?);
    Ok(api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items)
}

/// Waits until exactly `n` pods of `app` exist, none terminating, all Ready.
async fn wait_ready_pods(cluster: &TestCluster, app: &str, n: usize) -> Result<Vec<Pod>> {
    poll_until(
        &format!("exactly {n} ready pods of {app}"),
        ROLLOUT_DEADLINE,
        || async {
            let pods = pods(cluster, app).await?;
            let done = pods.len() == n
                && pods
                    .iter()
                    .all(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none());
            Ok(done.then_some(pods))
        },
    )
    .await
}

/// `kubectl rollout status` until the rollout finishes; its output.
async fn rollout_status(cluster: &TestCluster, name: &str) -> Result<String> {
    cluster
        .kubectl_ok(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=180s",
        ])
        .await
}

/// One pod as the watch last saw it.
#[derive(Clone, Debug, Default)]
struct PodView {
    /// Its pod-template-hash label.
    hash: String,
    /// Its `Ready` condition is `True`.
    ready: bool,
    /// It has a `deletionTimestamp`.
    terminating: bool,
    /// Its phase is `Succeeded` or `Failed`: nothing runs any more.
    finished: bool,
}

impl PodView {
    fn of(pod: &Pod) -> PodView {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        PodView {
            hash: pod_template_hash(pod.labels()),
            ready: is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            finished: matches!(phase, Some("Succeeded" | "Failed")),
        }
    }
}

/// What a watch on a Deployment's pods saw, in the order the apiserver stored it.
#[derive(Debug, Default)]
struct PodWatchStats {
    /// Existing pods by name.
    pods: BTreeMap<String, PodView>,
    /// Events seen after the initial list.
    events: usize,
    /// Fewest Ready pods not being deleted.
    min_ready: Option<usize>,
    /// Most pods not being deleted.
    max_total: usize,
    /// Most distinct pod-template-hashes among pods that may still run (not finished,
    /// whether being deleted or not).
    max_templates: usize,
}

impl PodWatchStats {
    fn observe(&mut self) {
        let live = self.pods.values().filter(|p| !p.terminating);
        let total = live.clone().count();
        let ready = live.filter(|p| p.ready).count();
        let templates: BTreeSet<&String> = self
            .pods
            .values()
            .filter(|p| !p.finished)
            .map(|p| &p.hash)
            .collect();
        self.min_ready = Some(self.min_ready.map_or(ready, |m| m.min(ready)));
        self.max_total = self.max_total.max(total);
        self.max_templates = self.max_templates.max(templates.len());
    }
}

/// Watches the pods of `app` in the background, folding every state into the stats.
struct PodWatch {
    stats: Arc<Mutex<PodWatchStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    async fn start(cluster: &TestCluster, app: &str) -> Result<PodWatch> {
        let api: Api<Pod> = Api::default_namespaced(cluster.client().await?);
        let stats = Arc::new(Mutex::new(PodWatchStats::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let shared = stats.clone();
        let config = watcher::Config::default().labels(&format!("app={app}"));
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(api, config));
            let mut initial = BTreeMap::new();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let Ok(mut stats) = shared.lock() else { return };
                let entry = |p: &Pod| (p.name_any(), PodView::of(p));
                match event {
                    watcher::Event::Init => initial.clear(),
                    watcher::Event::InitApply(p) => {
                        let (k, v) = entry(&p);
                        initial.insert(k, v);
                    }
                    watcher::Event::InitDone => {
                        stats.pods = std::mem::take(&mut initial);
                        stats.observe();
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Apply(p) => {
                        let (k, v) = entry(&p);
                        stats.pods.insert(k, v);
                        stats.events += 1;
                        stats.observe();
                    }
                    watcher::Event::Delete(p) => {
                        stats.pods.remove(&p.name_any());
                        stats.events += 1;
                        stats.observe();
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the pod watch did not list in 30 s")?
            .context("the pod watch ended")?;
        Ok(PodWatch { stats, task })
    }

    /// Stops watching; what it saw.
    fn stop(self) -> Result<PodWatchStats> {
        self.task.abort();
        let mut stats = self
            .stats
            .lock()
            .map_err(|_| anyhow::anyhow!("the pod watch panicked"))?;
        Ok(std::mem::take(&mut *stats))
    }
}

#[tokio::test]
async fn deployments_create_self_heal_and_scale_with_kubectl() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("deployments_create_self_heal_and_scale_with_kubectl")
        .await?
    else {
        return Ok(());
    };
    // No runtimeClassName and no probe: the agent runs the wasm image with wasmtime.
    cluster
        .kubectl_ok(&[
            "create",
            "deployment",
            "web",
            &format!("--image={IMAGE}"),
            "--replicas=3",
        ])
        .await?;
    let ready = wait_ready_pods(&cluster, "web", 3).await?;
    let out = rollout_status(&cluster, "web").await?;
    assert!(out.contains("successfully rolled out"), "{out}");

    // One ReplicaSet web-<hash>, its hash on its selector, its pods and their names.
    let rss = replica_sets(&cluster, "web").await?;
    ensure!(rss.len() == 1, "one replica set expected: {rss:?}");
    let rs = &rss[0];
    let hash = pod_template_hash(rs.labels());
    ensure!(
        !hash.is_empty(),
        "the replica set has no pod-template-hash label"
    );
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let selector = rs
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    assert_eq!(
        selector
            .match_labels
            .and_then(|m| m.get("pod-template-hash").cloned()),
        Some(hash.clone())
    );
    assert_eq!(revision(rs), "1");
    for pod in &ready {
        assert_eq!(pod_template_hash(pod.labels()), hash);
        assert!(
            pod.name_any().starts_with(&format!("web-{hash}-")),
            "{}",
            pod.name_any()
        );
    }
    let d = deployment(&cluster, "web").await?;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let status = d.status.clone().unwrap_or_default();
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    let conditions: BTreeMap<String, (String, String)> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, (c.status, c.reason.unwrap_or_default())))
        .collect();
    assert_eq!(
        conditions.get("Available"),
        Some(&("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        conditions.get("Progressing"),
        Some(&("True".into(), "NewReplicaSetAvailable".into()))
    );

    // A deleted pod is replaced.
    let victim = ready[0].name_any();
    cluster
        .kubectl_ok(&["delete", "pod", &victim, "--wait=false"])
        .await?;
    let after = poll_until("the deleted pod replaced", ROLLOUT_DEADLINE, || async {
        let pods = pods(&cluster, "web").await?;
        let live: Vec<_> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        let replaced = live.len() == 3 && live.iter().all(|p| p.name_any() != victim);
        Ok(replaced.then_some(live))
    })
    .await?;
    assert_eq!(after.len(), 3);

    // kubectl scale (the /scale subresource), up then down.
    cluster
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=10"])
        .await?;
    wait_ready_pods(&cluster, "web", 10).await?;
    rollout_status(&cluster, "web").await?;
    cluster
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=2"])
        .await?;
    wait_ready_pods(&cluster, "web", 2).await?;
    let rss = replica_sets(&cluster, "web").await?;
    assert_eq!(rss.iter().map(rs_replicas).collect::<Vec<_>>(), vec![2]);
    poll_until(
        "deployment status of 2 replicas",
        ROLLOUT_DEADLINE,
        || async {
            let s = deployment(&cluster, "web")
                .await?
                .status
                .unwrap_or_default();
            Ok((s.replicas == Some(2) && s.available_replicas == Some(2)).then_some(()))
        },
    )
    .await?;

    // The scaling, as Events from the deployment-controller and in kubectl describe.
    let rs_name = format!("web-{hash}");
    let messages: Vec<String> = events_of(&cluster.client().await?, "web")
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message)
        .collect();
    for expected in [
        format!("Scaled up replica set {rs_name} from 0 to 3"),
        format!("Scaled up replica set {rs_name} to 10 from 3"),
        format!("Scaled down replica set {rs_name} to 2 from 10"),
    ] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} in {messages:?}"
        );
    }
    let describe = cluster
        .kubectl_ok(&["describe", "deployment", "web"])
        .await?;
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
    assert!(describe.contains("deployment-controller"), "{describe}");
    assert!(
        describe.contains(&format!("NewReplicaSet:   {rs_name}")),
        "{describe}"
    );
    Ok(())
}

#[tokio::test]
async fn deployments_roll_within_surge_and_unavailability_and_undo_pause_resume() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples(
            "deployments_roll_within_surge_and_unavailability_and_undo_pause_resume",
        )
        .await?
    else {
        return Ok(());
    };
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    cluster
        .apply_json(&http_hello_deployment("roll", 4, strategy))
        .await?;
    rollout_status(&cluster, "roll").await?;
    wait_ready_pods(&cluster, "roll", 4).await?;
    let first = replica_sets(&cluster, "roll").await?;
    ensure!(first.len() == 1, "one replica set expected");
    let first_name = first[0].name_any();

    // A template change rolls out within maxSurge 1 / maxUnavailable 1.
    let watch = PodWatch::start(&cluster, "roll").await?;
    cluster
        .kubectl_ok(&["set", "env", "deployment/roll", "GREETING=second"])
        .await?;
    rollout_status(&cluster, "roll").await?;
    let pods = wait_ready_pods(&cluster, "roll", 4).await?;
    let stats = watch.stop()?;
    ensure!(stats.events > 0, "the watch saw no pod events");
    assert!(
        stats.min_ready >= Some(3),
        "ready pods dropped below replicas - maxUnavailable: {stats:?}"
    );
    assert!(
        stats.max_total <= 5,
        "pods exceeded replicas + maxSurge: {stats:?}"
    );
    let rss = replica_sets(&cluster, "roll").await?;
    ensure!(rss.len() == 2, "two replica sets expected: {rss:?}");
    let second = rss
        .iter()
        .find(|rs| rs.name_any() != first_name)
        .context("no second replica set")?;
    let second_hash = pod_template_hash(second.labels());
    assert!(
        pods.iter()
            .all(|p| pod_template_hash(p.labels()) == second_hash)
    );
    assert_eq!(
        (revision(second), rs_replicas(second)),
        ("2".to_string(), 4)
    );

    // History lists both revisions; undo returns to the first template and its ReplicaSet.
    let history = cluster
        .kubectl_ok(&["rollout", "history", "deployment/roll"])
        .await?;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, vec!["1", "2"], "{history}");
    cluster
        .kubectl_ok(&["rollout", "undo", "deployment/roll"])
        .await?;
    rollout_status(&cluster, "roll").await?;
    let pods = wait_ready_pods(&cluster, "roll", 4).await?;
    let rss = replica_sets(&cluster, "roll").await?;
    ensure!(rss.len() == 2, "undo made no new replica set: {rss:?}");
    let back = rss
        .iter()
        .find(|rs| rs.name_any() == first_name)
        .context("the first replica set is gone")?;
    assert_eq!((revision(back), rs_replicas(back)), ("3".to_string(), 4));
    let first_hash = pod_template_hash(back.labels());
    assert!(
        pods.iter()
            .all(|p| pod_template_hash(p.labels()) == first_hash)
    );
    let env = cluster
        .kubectl_ok(&[
            "get",
            "deployment",
            "roll",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env}",
        ])
        .await?;
    assert!(!env.contains("second"), "undo kept the env: {env}");

    // Paused: a template change rolls nothing out, but a scale applies.
    cluster
        .kubectl_ok(&["rollout", "pause", "deployment/roll"])
        .await?;
    cluster
        .kubectl_ok(&["set", "env", "deployment/roll", "GREETING=third"])
        .await?;
    cluster
        .kubectl_ok(&["scale", "deployment", "roll", "--replicas=5"])
        .await?;
    wait_ready_pods(&cluster, "roll", 5).await?;
    let paused = poll_until(
        "the paused deployment observed",
        ROLLOUT_DEADLINE,
        || async {
            let d = deployment(&cluster, "roll").await?;
            let s = d.status.clone().unwrap_or_default();
            let paused = s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
            Ok((paused && s.observed_generation == d.metadata.generation).then_some(d))
        },
    )
    .await?;
    assert_eq!(paused.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let rss = replica_sets(&cluster, "roll").await?;
    assert_eq!(rss.len(), 2, "a paused deployment rolled out: {rss:?}");
    let current = rss
        .iter()
        .find(|rs| rs.name_any() == first_name)
        .context("first rs")?;
    assert_eq!(rs_replicas(current), 5);

    // Resumed: the pending template rolls out.
    cluster
        .kubectl_ok(&["rollout", "resume", "deployment/roll"])
        .await?;
    rollout_status(&cluster, "roll").await?;
    wait_ready_pods(&cluster, "roll", 5).await?;
    let rss = replica_sets(&cluster, "roll").await?;
    assert_eq!(rss.len(), 3, "resume made no new replica set: {rss:?}");
    let newest = rss
        .iter()
        .max_by_key(|rs| revision(rs).parse::<i64>().unwrap_or(0))
        .context("rs")?;
    assert_eq!(
        (revision(newest), rs_replicas(newest)),
        ("4".to_string(), 5)
    );

    // kubectl rollout restart: a new template annotation, one more revision.
    cluster
        .kubectl_ok(&["rollout", "restart", "deployment/roll"])
        .await?;
    rollout_status(&cluster, "roll").await?;
    wait_ready_pods(&cluster, "roll", 5).await?;
    let d = deployment(&cluster, "roll").await?;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("5")
    );
    Ok(())
}

#[tokio::test]
async fn deployments_recreate_never_runs_old_and_new_pods_together() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("deployments_recreate_never_runs_old_and_new_pods_together")
        .await?
    else {
        return Ok(());
    };
    cluster
        .apply_json(&http_hello_deployment("re", 3, json!({"type": "Recreate"})))
        .await?;
    rollout_status(&cluster, "re").await?;
    wait_ready_pods(&cluster, "re", 3).await?;
    let watch = PodWatch::start(&cluster, "re").await?;
    cluster
        .kubectl_ok(&["set", "env", "deployment/re", "GREETING=second"])
        .await?;
    rollout_status(&cluster, "re").await?;
    let pods = wait_ready_pods(&cluster, "re", 3).await?;
    let stats = watch.stop()?;
    ensure!(stats.events > 0, "the watch saw no pod events");
    assert_eq!(
        stats.max_templates, 1,
        "old and new pods existed at the same time: {stats:?}"
    );
    let rss = replica_sets(&cluster, "re").await?;
    ensure!(rss.len() == 2, "two replica sets expected: {rss:?}");
    let new_hash = pod_template_hash(rss[1].labels());
    assert!(
        pods.iter()
            .all(|p| pod_template_hash(p.labels()) == new_hash)
    );
    assert_eq!(rss.iter().map(rs_replicas).collect::<Vec<_>>(), vec![0, 3]);
    Ok(())
}

#[tokio::test]
async fn deployments_that_make_no_progress_exceed_their_deadline() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("deployments_that_make_no_progress_exceed_their_deadline")
        .await?
    else {
        return Ok(());
    };
    // The pods never become ready: the probe asks a port nothing serves.
    let mut d = http_hello_deployment("stuck", 1, json!({"type": "RollingUpdate"}));
    d["spec"]["progressDeadlineSeconds"] = json!(3);
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = json!(9);
    cluster.apply_json(&d).await?;
    let out = cluster
        .kubectl(&["rollout", "status", "deployment/stuck", "--timeout=120s"])
        .await?;
    assert!(!out.status.success(), "rollout status succeeded: {out:?}");
    assert!(
        out.stderr.contains("exceeded its progress deadline"),
        "{out:?}"
    );
    let d = deployment(&cluster, "stuck").await?;
    let progressing = d
        .status
        .unwrap_or_default()
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .context("no Progressing condition")?;
    assert_eq!(progressing.status, "False");
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    Ok(())
}
