//! ReplicaSets end to end: the controller-manager inside `wasmkube server` keeps a
//! ReplicaSet's pods of the `counter` sample running on a `wasmkube agent`, as a user drives
//! it with the real `kubectl` (apply, get, scale, delete pod, label, describe) and as kube-rs
//! reads the pods' owner references and the ReplicaSet's status.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::harness::{TestCluster, events_of, poll_until};

/// How long the ReplicaSet may take to get its pods running (each needs the scheduler, the
/// agent and a guest start).
const DEADLINE: Duration = Duration::from_secs(120);

/// The counter sample as a bare pod `name` labelled `app: <app>`.
fn counter_pod(cluster: &TestCluster, name: &str, app: &str) -> Result<Value> {
    let mut pod = cluster.sample_pod("counter")?;
    pod["metadata"] = json!({"name": name, "labels": {"app": app}});
    Ok(pod)
}

fn is_running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The ReplicaSet's view of the cluster: its uid, status, and the active pods it controls.
struct Observed {
    rs: ReplicaSet,
    pods: Vec<Pod>,
}

impl Observed {
    fn uid(&self) -> &str {
        self.rs.metadata.uid.as_deref().unwrap_or_default()
    }

    fn ready_pods(&self) -> usize {
        self.pods.iter().filter(|p| is_running_and_ready(p)).count()
    }

    fn status(&self, field: &str) -> i64 {
        let status = serde_json::to_value(&self.rs.status).unwrap_or_default();
        status[field].as_i64().unwrap_or(0)
    }

    fn names(&self) -> Vec<String> {
        self.pods.iter().map(name_of).collect()
    }

    /// What a failed wait reports.
    fn summary(&self) -> String {
        let pods: Vec<String> = self
            .pods
            .iter()
            .map(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                format!("{} {phase:?} ready={}", name_of(p), is_running_and_ready(p))
            })
            .collect();
        format!(
            "generation {:?}, status {}, pods {pods:?}",
            self.rs.metadata.generation,
            serde_json::to_string(&self.rs.status).unwrap_or_default()
        )
    }

    /// `Some(self)` when `done`, else an error saying what was seen (for the poll's report).
    fn when(self, done: bool) -> Result<Option<Observed>> {
        if done {
            Ok(Some(self))
        } else {
            anyhow::bail!("{}", self.summary())
        }
    }
}

async fn observe(client: &kube::Client, name: &str) -> Result<Observed> {
    let rs = Api::<ReplicaSet>::default_namespaced(client.clone())
        .get(name)
        .await
        .with_context(|| format!("getting ReplicaSet {name}"))?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let pods = Api::<Pod>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| controller_uid(p) == Some(uid.as_str()))
        .collect();
    Ok(Observed { rs, pods })
}

/// Waits until the ReplicaSet controls exactly `replicas` active pods, all running and
/// ready, and its status says so for the current generation.
async fn wait_settled(client: &kube::Client, name: &str, replicas: usize) -> Result<Observed> {
    poll_until(
        &format!("ReplicaSet {name} with {replicas} ready pods"),
        DEADLINE,
        || async {
            let o = observe(client, name).await?;
            let want = i64::try_from(replicas)?;
            let settled = o.pods.len() == replicas
                && o.ready_pods() == replicas
                && o.status("replicas") == want
                && o.status("readyReplicas") == want
                && o.status("availableReplicas") == want
                && o.status("fullyLabeledReplicas") == want
                && o.rs.status.as_ref().and_then(|s| s.observed_generation)
                    == o.rs.metadata.generation;
            o.when(settled)
        },
    )
    .await
}

/// Waits until the Events of `name` with `reason` add up to `n` (repeats bump `count`;
/// the recorder writes them in the background); returns them.
async fn wait_events(
    client: &kube::Client,
    name: &str,
    reason: &str,
    n: i32,
) -> Result<Vec<Event>> {
    poll_until(
        &format!("{n} {reason} events of {name}"),
        DEADLINE,
        || async {
            let events: Vec<Event> = events_of(client, name)
                .await?
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .collect();
            let total: i32 = events.iter().map(|e| e.count.unwrap_or(1)).sum();
            if total == n {
                Ok(Some(events))
            } else {
                let messages: Vec<_> = events.iter().map(|e| (&e.message, e.count)).collect();
                anyhow::bail!("{total} so far: {messages:?}")
            }
        },
    )
    .await
}

#[tokio::test]
async fn replicaset_keeps_three_counter_pods_and_replaces_a_deleted_one() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("replicaset_keeps_three_counter_pods_and_replaces_a_deleted_one")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&cluster.sample_workload("ReplicaSet", "web", "counter", 3)?)
        .await?;
    let settled = wait_settled(&client, "web", 3).await?;
    for pod in &settled.pods {
        assert!(
            name_of(pod).starts_with("web-"),
            "pods are named after the ReplicaSet: {}",
            name_of(pod)
        );
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|r| r.first())
            .context("the pod has no owner reference")?;
        assert_eq!(owner.kind, "ReplicaSet");
        assert_eq!(owner.name, "web");
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    let table = cluster.kubectl_ok(&["get", "rs", "web"]).await?;
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("web "))
        .context("`kubectl get rs web` has no row for web")?
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(1..4),
        Some(&["3", "3", "3"][..]),
        "DESIRED CURRENT READY:\n{table}"
    );

    let victim = name_of(&settled.pods[0]);
    cluster
        .kubectl_ok(&["delete", "pod", &victim, "--wait=false"])
        .await?;
    let healed = poll_until("a replacement pod", DEADLINE, || async {
        let o = observe(&client, "web").await?;
        let replaced = o.pods.len() == 3
            && o.ready_pods() == 3
            && !o.names().contains(&victim)
            && o.status("readyReplicas") == 3;
        o.when(replaced)
    })
    .await?;
    assert_eq!(healed.pods.len(), 3);

    // Four pods were created in all: three, then the replacement.
    let created = wait_events(&client, "web", "SuccessfulCreate", 4).await?;
    for e in &created {
        assert!(
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Created pod: web-")),
            "{e:?}"
        );
        assert_eq!(
            e.source.as_ref().and_then(|s| s.component.as_deref()),
            Some("replicaset-controller")
        );
    }

    let describe = cluster.kubectl_ok(&["describe", "rs", "web"]).await?;
    assert!(
        describe.contains("SuccessfulCreate") && describe.contains("Created pod: web-"),
        "`kubectl describe rs web` lacks the SuccessfulCreate events:\n{describe}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_scale_of_a_replicaset_creates_and_deletes_pods() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("kubectl_scale_of_a_replicaset_creates_and_deletes_pods")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&cluster.sample_workload("ReplicaSet", "scaled", "counter", 2)?)
        .await?;
    wait_settled(&client, "scaled", 2).await?;

    cluster
        .kubectl_ok(&["scale", "rs", "scaled", "--replicas=5"])
        .await?;
    let five = wait_settled(&client, "scaled", 5).await?;
    assert_eq!(five.rs.spec.as_ref().and_then(|s| s.replicas), Some(5));

    cluster
        .kubectl_ok(&["scale", "rs", "scaled", "--replicas=1"])
        .await?;
    let one = wait_settled(&client, "scaled", 1).await?;
    // The survivor is one of the five: scaling down deletes, it never recreates.
    assert!(five.names().contains(&one.names()[0]));

    for e in wait_events(&client, "scaled", "SuccessfulDelete", 4).await? {
        assert!(
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Deleted pod: scaled-")),
            "{e:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn replicaset_adopts_matching_orphans_and_releases_relabelled_pods() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("replicaset_adopts_matching_orphans_and_releases_relabelled_pods")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    // A bare pod with the labels the ReplicaSet will select, running before it exists.
    cluster
        .apply_json(&counter_pod(&cluster, "stray", "adopter")?)
        .await?;
    cluster
        .wait_pod("stray", "running and ready", DEADLINE, is_running_and_ready)
        .await?;

    cluster
        .apply_json(&cluster.sample_workload("ReplicaSet", "adopter", "counter", 2)?)
        .await?;
    let settled = wait_settled(&client, "adopter", 2).await?;
    assert!(
        settled.names().contains(&"stray".to_string()),
        "the orphan was not adopted: {:?}",
        settled.names()
    );
    let stray = cluster.pod("stray").await?;
    assert_eq!(controller_uid(&stray), Some(settled.uid()));
    // Only one pod had to be created for two replicas.
    wait_events(&client, "adopter", "SuccessfulCreate", 1).await?;

    // Relabelled out of the selector, the pod is released and replaced.
    cluster
        .kubectl_ok(&["label", "pod", "stray", "app=elsewhere", "--overwrite"])
        .await?;
    let healed = poll_until(
        "the relabelled pod released and replaced",
        DEADLINE,
        || async {
            let o = observe(&client, "adopter").await?;
            let stray = cluster.pod("stray").await?;
            let released = stray
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty);
            let done = released
                && o.pods.len() == 2
                && o.ready_pods() == 2
                && !o.names().contains(&"stray".to_string())
                && o.status("readyReplicas") == 2;
            if !released {
                anyhow::bail!(
                    "stray still has owners: {:?}",
                    stray.metadata.owner_references
                );
            }
            o.when(done)
        },
    )
    .await?;
    assert_eq!(healed.pods.len(), 2);
    // The released pod keeps running on its own.
    let stray = cluster.pod("stray").await?;
    assert!(is_running_and_ready(&stray));
    assert_eq!(stray.metadata.deletion_timestamp, None);
    Ok(())
}

#[tokio::test]
async fn available_replicas_wait_for_min_ready_seconds() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("available_replicas_wait_for_min_ready_seconds")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let mut rs = cluster.sample_workload("ReplicaSet", "slow", "counter", 2)?;
    rs["spec"]["minReadySeconds"] = json!(5);
    cluster.apply_json(&rs).await?;
    // Ready but not yet available: the pods have not been ready for 5 s.
    poll_until("2 ready, 0 available", DEADLINE, || async {
        let o = observe(&client, "slow").await?;
        let done = o.status("readyReplicas") == 2 && o.status("availableReplicas") == 0;
        o.when(done)
    })
    .await?;
    // Nothing else changes; the controller's own requeue after minReadySeconds counts them.
    wait_settled(&client, "slow", 2).await?;
    Ok(())
}
