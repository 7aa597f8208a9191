//! Wasm pods in tests: the sample images and manifests (`samples/out/oci/*`,
//! `samples/<name>/pod.yaml`), applying manifests with the real `kubectl`, and waiting for
//! what the agent writes (pod status, events, node leases) with kube-rs, polling with a
//! deadline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use super::{TestCluster, TestClusterBuilder, poll_until};

/// The OCI image layout of `sample` (`<samples out>/oci/<sample>`, written by `samples/build
/// --oci`) for `test`: an error naming the build command when it is not built, `None` only
/// when `WASMKUBE_ALLOW_MISSING_SAMPLES=1` lets the test skip (see `wasmkube_samples`).
pub(crate) fn sample_layout(test: &str, sample: &str) -> Result<Option<PathBuf>> {
    let index = wasmkube_samples::built(test, &format!("oci/{sample}/index.json"))?;
    Ok(index.and_then(|index| index.parent().map(PathBuf::from)))
}

/// Whether `pod`'s Ready condition is True.
pub(crate) fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A ready pod: its name, node and IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadyPod {
    /// `metadata.name`.
    pub(crate) name: String,
    /// `spec.nodeName`.
    pub(crate) node: String,
    /// `status.podIP`.
    pub(crate) ip: String,
}

/// The pods of the default namespace labelled `app=APP` that are ready and not being
/// deleted, once there are exactly `n` of them (polled until `deadline`).
pub(crate) async fn ready_app_pods(
    cluster: &TestCluster,
    app: &str,
    n: usize,
    deadline: Duration,
) -> Result<Vec<ReadyPod>> {
    let pods: Api<Pod> = Api::default_namespaced(cluster.client().await?);
    poll_until(&format!("{n} ready {app} pods"), deadline, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await?;
            let ready: Vec<ReadyPod> = list
                .items
                .iter()
                .filter(|p| pod_is_ready(p) && p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| {
                    Some(ReadyPod {
                        name: p.metadata.name.clone()?,
                        node: p.spec.as_ref()?.node_name.clone()?,
                        ip: p.status.as_ref()?.pod_ip.clone()?,
                    })
                })
                .collect();
            Ok((ready.len() == n).then_some(ready))
        }
    })
    .await
    .with_context(|| cluster.logs_tail(30))
}

/// The first container's status of `pod`.
pub(crate) fn container_status(pod: &Pod) -> Option<ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .cloned()
}

/// The events whose `involvedObject.name` is `name`, oldest first.
pub(crate) async fn events_of(client: &kube::Client, name: &str) -> Result<Vec<Event>> {
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let mut list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .with_context(|| format!("listing the events of {name}"))?
        .items;
    list.sort_by_key(|e| {
        e.metadata
            .resource_version
            .clone()
            .and_then(|rv| rv.parse::<u64>().ok())
    });
    Ok(list)
}

impl TestClusterBuilder {
    /// Starts the cluster and imports every sample image into every node. Fails, naming the
    /// command that builds them, when the samples are not built; `None` only when
    /// `WASMKUBE_ALLOW_MISSING_SAMPLES=1` lets the calling test skip.
    pub(crate) async fn start_with_samples(self, test: &str) -> Result<Option<TestCluster>> {
        let Some(hello) = sample_layout(test, "hello")? else {
            return Ok(None);
        };
        let dir = hello.parent().context("the samples' OCI directory")?;
        let cluster = self.start().await?;
        let mut layouts = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.join("index.json").is_file() {
                layouts.push(path);
            }
        }
        layouts.sort();
        cluster.import_layouts(&layouts).await?;
        Ok(Some(cluster))
    }
}

impl TestCluster {
    /// The Pod of `samples/<sample>/pod.yaml` (the last Pod document of the file), as JSON
    /// for a test to adjust before applying it.
    pub(crate) fn sample_pod(&self, sample: &str) -> Result<Value> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(sample)
            .join("pod.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut pod = None;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", path.display()))?;
            if value.get("kind").and_then(Value::as_str) == Some("Pod") {
                pod = Some(value);
            }
        }
        pod.ok_or_else(|| anyhow!("{} has no Pod", path.display()))
    }

    /// An apps/v1 `kind` (Deployment, ReplicaSet) `name` of `replicas` pods of the sample's
    /// pod spec, selected and labelled `app: <name>`.
    pub(crate) fn sample_workload(
        &self,
        kind: &str,
        name: &str,
        sample: &str,
        replicas: i32,
    ) -> Result<Value> {
        let pod = self.sample_pod(sample)?;
        Ok(serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": pod["spec"],
                },
            },
        }))
    }

    /// `kubectl apply -f samples/<sample>/pod.yaml` (every document of the file).
    pub(crate) async fn apply_sample(&self, sample: &str) -> Result<String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(sample)
            .join("pod.yaml");
        self.kubectl_ok(&["apply", "-f", &path.display().to_string()])
            .await
    }

    /// `kubectl apply -f -` with `object` as JSON.
    pub(crate) async fn apply_json(&self, object: &Value) -> Result<String> {
        self.kubectl_ok_stdin(&["apply", "-f", "-"], &object.to_string())
            .await
    }

    /// The pod `name` of the default namespace.
    pub(crate) async fn pod(&self, name: &str) -> Result<Pod> {
        let pods: Api<Pod> = Api::default_namespaced(self.client().await?);
        pods.get(name)
            .await
            .with_context(|| format!("getting pod {name}"))
    }

    /// Polls pod `name` until `check` holds for it (`what` names the wait in failures).
    /// `check` sees every version polled, so it may also record what it saw on the way.
    pub(crate) async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        check: impl FnMut(&Pod) -> bool,
    ) -> Result<Pod> {
        let pods: Api<Pod> = Api::default_namespaced(self.client().await?);
        let last = std::sync::Mutex::new(None::<Pod>);
        let check = std::sync::Mutex::new(check);
        let result = poll_until(&format!("pod {name}: {what}"), deadline, || async {
            let pod = pods.get_opt(name).await?;
            let done = match (&pod, check.lock()) {
                (Some(pod), Ok(mut check)) => (*check)(pod),
                _ => false,
            };
            if let Ok(mut l) = last.lock() {
                l.clone_from(&pod);
            }
            Ok(if done { pod } else { None })
        })
        .await;
        match result {
            Ok(pod) => Ok(pod),
            Err(e) => {
                let status = last
                    .lock()
                    .ok()
                    .and_then(|l| l.clone())
                    .map(|p| serde_json::to_string_pretty(&p.status).unwrap_or_default())
                    .unwrap_or_else(|| "(the pod does not exist)".to_owned());
                bail!(
                    "{e:#}\nlast status of {name}:\n{status}\n{}",
                    self.logs_tail(20)
                )
            }
        }
    }

    /// Polls until pod `name` no longer exists.
    pub(crate) async fn wait_pod_gone(&self, name: &str, deadline: Duration) -> Result<()> {
        let pods: Api<Pod> = Api::default_namespaced(self.client().await?);
        poll_until(&format!("pod {name} to be gone"), deadline, || async {
            Ok(pods.get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// Polls until an event of `name` with `reason` exists; returns it.
    pub(crate) async fn wait_event(
        &self,
        name: &str,
        reason: &str,
        deadline: Duration,
    ) -> Result<Event> {
        self.wait_event_where(name, reason, deadline, |_| true)
            .await
    }

    /// Polls until an event of `name` with `reason` for which `matches` holds exists;
    /// returns it. Events are written by the components' recorders in the background, after
    /// the status change they report, so a test that has seen the status polls for them.
    pub(crate) async fn wait_event_where(
        &self,
        name: &str,
        reason: &str,
        deadline: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let client = self.client().await?;
        let matches = &matches;
        poll_until(&format!("a {reason} event of {name}"), deadline, || async {
            Ok(events_of(&client, name)
                .await?
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason) && matches(e)))
        })
        .await
    }

    /// The `renewTime` of node `node`'s Lease in `kube-node-lease`.
    pub(crate) async fn lease_renew_time(&self, node: &str) -> Result<Option<Timestamp>> {
        let leases: Api<Lease> = Api::namespaced(self.client().await?, "kube-node-lease");
        let lease = leases
            .get_opt(node)
            .await
            .with_context(|| format!("getting the lease of node {node}"))?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
            .map(|t| t.0))
    }

    /// Waits until node `node`'s lease is renewed after `since`; returns the new `renewTime`.
    pub(crate) async fn wait_lease_renewed(
        &self,
        node: &str,
        since: Timestamp,
        deadline: Duration,
    ) -> Result<Timestamp> {
        poll_until(
            &format!("the lease of node {node} renewed after {since}"),
            deadline,
            || async {
                let renewed = self.lease_renew_time(node).await?;
                Ok(renewed.filter(|t| *t > since))
            },
        )
        .await
    }
}
