//! Jobs end to end: the controller-manager inside `wasmkube server` runs a Job's pods on
//! separate `wasmkube agent` nodes until enough succeed, as a Kubernetes user sees it with the
//! real `kubectl` (`kubectl wait --for=condition=complete`, `kubectl logs`, Events) and a pod
//! watch that checks parallelism was never exceeded. Each test fails, naming `samples/build
//! --oci`, when the sample images are not built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::harness::{TestCluster, events_of, poll_until};

/// How long a Job of a few short pods may take to finish.
const JOB_DEADLINE: Duration = Duration::from_secs(150);

/// A Job running `image` in its one container, with `spec` merged into the Job's spec.
fn job_manifest(name: &str, image: &str, spec: Value) -> Value {
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "runtimeClassName": "wasmtime",
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": image,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }],
            }},
        },
    });
    if let (Some(target), Some(extra)) = (job["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    job
}

/// The pods of Job `name` (by the `job-name` label the Job's pods carry).
async fn job_pods(client: &kube::Client, name: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    Ok(pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await?
        .items)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The `True` condition of `type_` of the Job, if any.
fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Watches the pods of Job `name` and records the most that were active (created, not
/// finished, not being deleted) at once.
fn watch_max_active(
    client: &kube::Client,
    name: &str,
) -> (Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(Mutex::new(0usize));
    let seen = max.clone();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
    let task = tokio::spawn(async move {
        let mut active: BTreeMap<String, bool> = BTreeMap::new();
        let mut stream = std::pin::pin!(watcher(pods, config));
        while let Ok(Some(event)) = stream.try_next().await {
            let (pod, gone) = match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                _ => continue,
            };
            let is_active = !gone
                && pod.metadata.deletion_timestamp.is_none()
                && !matches!(phase(&pod), "Succeeded" | "Failed");
            active.insert(pod.name_any(), is_active);
            let now = active.values().filter(|a| **a).count();
            if let Ok(mut m) = seen.lock() {
                *m = (*m).max(now);
            }
        }
    });
    (max, task)
}

#[tokio::test]
async fn a_job_of_five_completions_runs_two_pods_at_a_time_until_complete() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(2)
        .start_with_samples("a_job_of_five_completions_runs_two_pods_at_a_time_until_complete")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let (max_active, watch) = watch_max_active(&client, "hello-job");
    cluster
        .apply_json(&job_manifest(
            "hello-job",
            "wasmkube.local/samples/hello:v1",
            json!({"completions": 5, "parallelism": 2}),
        ))
        .await?;
    let waited = cluster
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/hello-job",
            "--timeout=85s",
        ])
        .await?;
    ensure!(
        waited.status.success(),
        "kubectl wait failed: {}\n{}",
        waited.stderr,
        cluster.logs_tail(30)
    );
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = jobs.get("hello-job").await?;
    let status = job.status.clone().context("the job has no status")?;
    assert_eq!(status.succeeded, Some(5));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    assert!(job_condition(&job, "SuccessCriteriaMet").is_some());
    let complete = job_condition(&job, "Complete").context("no Complete condition")?;
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));

    let pods = job_pods(&client, "hello-job").await?;
    assert_eq!(pods.len(), 5, "finished pods are kept");
    assert!(pods.iter().all(|p| phase(p) == "Succeeded"));
    let max = max_active.lock().map(|m| *m).unwrap_or(usize::MAX);
    watch.abort();
    assert!(
        max <= 2,
        "{max} pods were active at once with parallelism 2"
    );
    assert!(max >= 1, "the pod watch saw no active pod");

    // Events are written in the background, shortly after what they report.
    let events = poll_until("the Completed event of hello-job", JOB_DEADLINE, || async {
        let events = events_of(&client, "hello-job").await?;
        let completed = events.iter().any(|e| {
            e.reason.as_deref() == Some("Completed")
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("job-controller")
        });
        Ok(completed.then_some(events))
    })
    .await?;
    let creates = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .map(|e| e.count.unwrap_or(1))
        .sum::<i32>();
    assert_eq!(creates, 5, "one SuccessfulCreate per pod");
    let table = cluster.kubectl_ok(&["get", "job", "hello-job"]).await?;
    assert!(table.contains("5/5"), "{table}");
    Ok(())
}

#[tokio::test]
async fn an_indexed_job_gives_each_pod_its_index_and_records_completed_indexes() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("an_indexed_job_gives_each_pod_its_index_and_records_completed_indexes")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&job_manifest(
            "indexed",
            "wasmkube.local/samples/hello:v1",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ))
        .await?;
    let waited = cluster
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/indexed",
            "--timeout=85s",
        ])
        .await?;
    ensure!(
        waited.status.success(),
        "kubectl wait failed: {}",
        waited.stderr
    );
    let job: Api<Job> = Api::default_namespaced(client.clone());
    let status = job.get("indexed").await?.status.context("no status")?;
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));

    let mut indexes = BTreeSet::new();
    for pod in job_pods(&client, "indexed").await? {
        let index = pod
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
            .cloned()
            .context("a pod has no completion index")?;
        let hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
        assert_eq!(hostname, Some(format!("indexed-{index}")));
        assert!(pod.name_any().starts_with(&format!("indexed-{index}-")));
        let logs = cluster.kubectl_ok(&["logs", &pod.name_any()]).await?;
        let line = format!("env JOB_COMPLETION_INDEX={index}");
        assert!(
            logs.lines().any(|l| l == line),
            "the log of {} lacks {line:?}:\n{logs}",
            pod.name_any()
        );
        indexes.insert(index);
    }
    assert_eq!(
        indexes,
        ["0", "1", "2"].map(String::from).into_iter().collect()
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_job_stops_at_its_backoff_limit_with_backoff_limit_exceeded() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("a_failing_job_stops_at_its_backoff_limit_with_backoff_limit_exceeded")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&job_manifest(
            "crashing",
            "wasmkube.local/samples/crash:v1",
            json!({"backoffLimit": 2}),
        ))
        .await?;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    // 3 failures with the pod back-off of 10 s and 20 s between them.
    let job = poll_until("job crashing Failed", Duration::from_secs(180), || async {
        let job = jobs.get("crashing").await?;
        Ok(job_condition(&job, "Failed").is_some().then_some(job))
    })
    .await?;
    let failed = job_condition(&job, "Failed").context("no Failed condition")?;
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert!(job_condition(&job, "FailureTarget").is_some());
    assert_eq!(job.status.as_ref().and_then(|s| s.failed), Some(3));
    cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=failed",
            "job/crashing",
            "--timeout=10s",
        ])
        .await?;
    let pods = job_pods(&client, "crashing").await?;
    assert_eq!(pods.len(), 3, "backoffLimit 2 allows 3 pods");
    assert!(pods.iter().all(|p| phase(p) == "Failed"));
    cluster
        .wait_event("crashing", "BackoffLimitExceeded", Duration::from_secs(10))
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_active_deadline_stops_a_job_and_a_ttl_deletes_a_finished_one() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("an_active_deadline_stops_a_job_and_a_ttl_deletes_a_finished_one")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&job_manifest(
            "forever",
            "wasmkube.local/samples/counter:v1",
            json!({"activeDeadlineSeconds": 5}),
        ))
        .await?;
    cluster
        .apply_json(&job_manifest(
            "short-lived",
            "wasmkube.local/samples/hello:v1",
            json!({"ttlSecondsAfterFinished": 2}),
        ))
        .await?;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = poll_until("job forever Failed", JOB_DEADLINE, || async {
        let job = jobs.get("forever").await?;
        Ok(job_condition(&job, "Failed").is_some().then_some(job))
    })
    .await?;
    let failed = job_condition(&job, "Failed").context("no Failed condition")?;
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    // Failed is only set once the deleted pod is gone or finished.
    let pods = job_pods(&client, "forever").await?;
    assert!(
        pods.iter()
            .all(|p| p.metadata.deletion_timestamp.is_none() || phase(p) == "Failed"),
        "a pod is still terminating after Failed"
    );
    assert!(pods.iter().all(|p| phase(p) != "Running"));
    cluster
        .wait_event("forever", "DeadlineExceeded", Duration::from_secs(10))
        .await?;

    poll_until(
        "job short-lived deleted after its TTL",
        JOB_DEADLINE,
        || async { Ok(jobs.get_opt("short-lived").await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}
