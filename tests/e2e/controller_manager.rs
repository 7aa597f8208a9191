//! The controller-manager on its own: `wasmkube controllers --kubeconfig` processes against a
//! server started without its workload controllers, as a user runs them for high availability.
//! Two of them run at once; the Lease `kube-system/wasmkube-controller-manager` makes one act,
//! and when that one is killed the other takes over. One controller-manager opens one watch
//! per kind, whatever number of its controllers read that kind (shared informers), counted
//! by the apiserver's `apiserver_registered_watchers` at `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::process::Child;

use crate::harness::{TestCluster, poll_until, spawn_wasmkube};

/// How long a controller-manager may take to act: a successor waits for the killed leader's
/// 15 s Lease to expire first.
const DEADLINE: Duration = Duration::from_secs(90);

/// Starts `wasmkube controllers --kubeconfig <the cluster's>`, its output in the data dir.
fn spawn_controllers(cluster: &TestCluster, n: usize) -> Result<Child> {
    let args = [
        "controllers".to_string(),
        "--kubeconfig".to_string(),
        cluster.kubeconfig_path().display().to_string(),
    ];
    spawn_wasmkube(
        &args,
        &cluster.data_dir().join(format!("controllers-{n}.log")),
    )
}

/// The pods the ReplicaSet `uid` controls.
async fn owned_pods(pods: &Api<Pod>, uid: &str) -> Result<usize> {
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .count())
}

/// Waits until the ReplicaSet reports `replicas` pods, then checks that exactly that many
/// exist (two acting controller-managers would have created more).
async fn expect_replicas(
    rs: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    uid: &str,
    want: i32,
) -> Result<()> {
    poll_until(
        &format!("the ReplicaSet to report {want} replicas"),
        DEADLINE,
        || async {
            let current = rs.get("web").await?;
            let status = current.status.unwrap_or_default();
            let observed = status.observed_generation == current.metadata.generation;
            Ok((observed && status.replicas == want).then_some(()))
        },
    )
    .await?;
    let count = owned_pods(pods, uid).await?;
    ensure!(
        count == usize::try_from(want)?,
        "{count} pods are owned by the ReplicaSet, want {want}"
    );
    Ok(())
}

#[tokio::test]
async fn standalone_controller_managers_elect_one_leader_and_fail_over() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let mut first = spawn_controllers(&cluster, 1)?;
    let mut second = spawn_controllers(&cluster, 2)?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let holder = poll_until(
        "a controller-manager to take the Lease",
        DEADLINE,
        || async {
            let lease = leases.get_opt("wasmkube-controller-manager").await?;
            Ok(lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()))
        },
    )
    .await?;

    // No node runs the pods: they stay Pending, which is all the ReplicaSet needs to count them.
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = rs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "example.com/web:1"}]},
                    },
                },
            }))?,
        )
        .await?;
    let uid = created.metadata.uid.context("the ReplicaSet has no uid")?;
    expect_replicas(&rs, &pods, &uid, 3).await?;

    // Kill both processes one after the other, the leader first: the other must take over.
    let lease = leases.get("wasmkube-controller-manager").await?;
    ensure!(
        lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(holder.as_str()),
        "the Lease changed hands while both controller-managers ran"
    );
    // Which process holds it is not visible from outside; kill the first, and if the Lease
    // does not move, the second was the leader: kill that one and restart the first.
    first
        .start_kill()
        .context("killing the first controller-manager")?;
    first.wait().await?;
    let moved = poll_until(
        "the Lease to move or stay",
        Duration::from_secs(40),
        || async {
            let lease = leases.get("wasmkube-controller-manager").await?;
            let now = lease
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            Ok((now != holder).then_some(now))
        },
    )
    .await;
    let survivor = match moved {
        Ok(_) => second,
        Err(_) => {
            second
                .start_kill()
                .context("killing the second controller-manager")?;
            second.wait().await?;
            spawn_controllers(&cluster, 3)?
        }
    };
    rs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await?;
    expect_replicas(&rs, &pods, &uid, 5).await?;
    drop(survivor);
    Ok(())
}

/// `apiserver_registered_watchers` by `(group, kind)`, read from the apiserver's `/metrics`.
async fn registered_watchers(client: &kube::Client) -> Result<BTreeMap<(String, String), i64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await.context("GET /metrics")?;
    let mut watchers = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_registered_watchers{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").context("a sample line")?;
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string)
                .with_context(|| format!("no {name} label in {line}"))
        };
        let n: i64 = value.trim().parse().context("a gauge value")?;
        *watchers
            .entry((label("group")?, label("kind")?))
            .or_insert(0) += n;
    }
    Ok(watchers)
}

/// How many more watches of each kind `after` has than `before` (kinds with no change left
/// out).
fn added_watches(
    before: &BTreeMap<(String, String), i64>,
    after: &BTreeMap<(String, String), i64>,
) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|((group, kind), n)| {
            let was = before
                .get(&(group.clone(), kind.clone()))
                .copied()
                .unwrap_or(0);
            let name = if group.is_empty() {
                kind.clone()
            } else {
                format!("{kind}.{group}")
            };
            (name, n - was)
        })
        .filter(|(_, added)| *added != 0)
        .collect()
}

/// The kinds whose informers the controllers read; each must be watched exactly once.
const SHARED_KINDS: &[&str] = &[
    "Pod",
    "Node",
    "ReplicaSet.apps",
    "Deployment.apps",
    "DaemonSet.apps",
    "Job.batch",
];

/// Waits until the controller-manager added one watch of every kind it reads and at most
/// one of any kind (the garbage collector follows every deletable kind); the added watches.
async fn expect_one_watch_per_kind(
    client: &kube::Client,
    before: &BTreeMap<(String, String), i64>,
) -> Result<BTreeMap<String, i64>> {
    poll_until(
        "the controller-manager to watch each kind it reads exactly once",
        DEADLINE,
        || async {
            let added = added_watches(before, &registered_watchers(client).await?);
            let shared = SHARED_KINDS.iter().all(|kind| added.get(*kind) == Some(&1));
            let at_most_one = added.values().all(|n| *n == 1);
            if shared && at_most_one {
                Ok(Some(added))
            } else {
                anyhow::bail!("watches added by the controller-manager: {added:?}")
            }
        },
    )
    .await
}

/// Whether `pod` is controlled by the object with `uid`.
fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

#[tokio::test]
async fn a_controller_manager_opens_one_watch_per_kind_and_its_controllers_all_work() -> Result<()>
{
    let cluster = TestCluster::builder()
        .without_controllers()
        .agents(1)
        .start()
        .await?;
    let client = cluster.client().await?;
    // The watches before the controller-manager starts: the scheduler's and, once it has
    // registered its node, the agent's (each follows pods), and the server's own
    // ServiceAccount and root-CA controllers' (namespaces, service accounts, config maps).
    let core = |kind: &str| (String::new(), kind.to_string());
    let before = poll_until(
        "the scheduler and the agent to watch pods, the server's controllers namespaces",
        DEADLINE,
        || async {
            let watchers = registered_watchers(&client).await?;
            let count = |kind: &str| watchers.get(&core(kind)).copied().unwrap_or(0);
            let ready = count("Pod") >= 2
                && ["Namespace", "ServiceAccount", "ConfigMap"]
                    .iter()
                    .all(|k| count(k) >= 1);
            Ok(ready.then_some(watchers))
        },
    )
    .await?;
    let mut controllers = spawn_controllers(&cluster, 1)?;
    let added = expect_one_watch_per_kind(&client, &before).await?;
    eprintln!("watches the controller-manager added: {added:?}");

    // Every controller reading the shared informers works: a Deployment gets a ReplicaSet
    // and its pods, a Job its pod, a DaemonSet a pod on the node.
    let template = |app: &str| {
        json!({
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": app, "image": format!("example.com/{app}:1")}]},
        })
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": template("web"),
                },
            }))?,
        )
        .await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "once"},
                "spec": {"template": {
                    "metadata": {"labels": {"app": "once"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "once", "image": "example.com/once:1"}],
                    },
                }},
            }))?,
        )
        .await?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let daemonset = daemonsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "agent"},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "template": template("agent"),
                },
            }))?,
        )
        .await?;

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployment_uid = deployment.metadata.uid.context("no uid")?;
    let job_uid = job.metadata.uid.context("no uid")?;
    let daemonset_uid = daemonset.metadata.uid.context("no uid")?;
    let rs_uid = poll_until(
        "the Deployment's ReplicaSet to report 2 replicas",
        DEADLINE,
        || async {
            let listed = replicasets.list(&ListParams::default()).await?;
            Ok(listed
                .items
                .into_iter()
                .find(|rs| {
                    rs.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.uid == deployment_uid)
                        && rs.status.as_ref().is_some_and(|s| s.replicas == 2)
                })
                .and_then(|rs| rs.metadata.uid))
        },
    )
    .await?;
    poll_until(
        "the pods of the Deployment, Job and DaemonSet",
        DEADLINE,
        || async {
            let listed = pods.list(&ListParams::default()).await?.items;
            let count = |uid: &str| listed.iter().filter(|p| controlled_by(p, uid)).count();
            let counts = (count(&rs_uid), count(&job_uid), count(&daemonset_uid));
            Ok((counts == (2, 1, 1)).then_some(()))
        },
    )
    .await?;
    poll_until("the Job and DaemonSet statuses", DEADLINE, || async {
        let job = jobs.get("once").await?;
        let active = job.status.and_then(|s| s.active);
        let ds = daemonsets.get("agent").await?.status.unwrap_or_default();
        Ok((active == Some(1)
            && ds.desired_number_scheduled == 1
            && ds.current_number_scheduled == 1)
            .then_some(()))
    })
    .await?;

    // The garbage collector, following ReplicaSets and pods through the same informers,
    // removes the Deployment's ReplicaSet and pods once the Deployment is gone.
    deployments
        .delete("web", &DeleteParams::background())
        .await?;
    poll_until(
        "the Deployment's ReplicaSet and pods to go",
        DEADLINE,
        || async {
            let rs_left = replicasets
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|rs| rs.metadata.uid.as_deref() == Some(rs_uid.as_str()));
            // A pod being deleted is gone as far as the garbage collector goes (its node
            // confirms the deletion).
            let pods_left = pods
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|p| controlled_by(p, &rs_uid) && p.metadata.deletion_timestamp.is_none());
            Ok((!rs_left && !pods_left).then_some(()))
        },
    )
    .await?;
    // Still one watch per kind after all this work, and they were all the
    // controller-manager's: they end with it.
    expect_one_watch_per_kind(&client, &before).await?;
    controllers
        .start_kill()
        .context("stopping the controller-manager")?;
    controllers.wait().await?;
    poll_until(
        "the controller-manager's watches to end with it",
        DEADLINE,
        || async {
            let added = added_watches(&before, &registered_watchers(&client).await?);
            if added.is_empty() {
                Ok(Some(()))
            } else {
                anyhow::bail!("watches left over: {added:?}")
            }
        },
    )
    .await?;
    Ok(())
}
