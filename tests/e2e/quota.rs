//! ResourceQuota through the real kubectl: admission refuses what would exceed `hard` with
//! Kubernetes' message, `kubectl describe quota` shows used/hard that the quota controller
//! keeps true (replenished when pods go), and concurrent creates never take more than the
//! quota allows.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::harness::{TestCluster, poll_until};

/// How long the quota controller may take to write a quota's status.
const DEADLINE: Duration = Duration::from_secs(60);

fn pod(name: &str, cpu: Option<&str>) -> Value {
    let resources = match cpu {
        Some(cpu) => json!({"requests": {"cpu": cpu}}),
        None => json!({}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "c",
            "image": "wasmkube.local/samples/hello:v1",
            "resources": resources,
        }]},
    })
}

/// Waits until quota `name` in `namespace` reports `used[resource] == want`.
async fn wait_used(
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
    resource: &str,
    want: &str,
) -> Result<ResourceQuota> {
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client().await?, namespace);
    poll_until(
        &format!("quota {name} to report {resource} used {want}"),
        DEADLINE,
        || async {
            let q = quotas.get(name).await?;
            let used = q
                .status
                .as_ref()
                .and_then(|s| s.used.as_ref())
                .and_then(|u| u.get(resource))
                .map(|q| q.0.clone());
            Ok((used.as_deref() == Some(want)).then_some(q))
        },
    )
    .await
}

#[tokio::test]
async fn a_quota_refuses_the_pod_over_its_count_and_kubectl_describe_quota_shows_used_and_hard()
-> Result<()> {
    let cluster = TestCluster::builder().start().await?;
    cluster
        .kubectl_ok(&["create", "quota", "q", "--hard=pods=2,requests.cpu=1"])
        .await?;
    wait_used(&cluster, "default", "q", "pods", "0").await?;

    for name in ["p1", "p2"] {
        cluster.apply_json(&pod(name, Some("100m"))).await?;
    }
    let out = cluster
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(&pod("p3", Some("100m")).to_string()),
        )
        .await?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"p3\" is forbidden: \
             exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{}",
        out.stderr
    );

    let describe = cluster.kubectl_ok(&["describe", "quota", "q"]).await?;
    let rows: Vec<Vec<&str>> = describe
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["Resource", "Used", "Hard"]),
        "{describe}"
    );
    assert!(rows.contains(&vec!["pods", "2", "2"]), "{describe}");
    assert!(
        rows.contains(&vec!["requests.cpu", "200m", "1"]),
        "{describe}"
    );
    let table = cluster.kubectl_ok(&["get", "quota"]).await?;
    assert!(table.contains("pods: 2/2, requests.cpu: 200m/1"), "{table}");

    // A pod without a cpu request cannot be counted against requests.cpu.
    let out = cluster
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&pod("bare", None).to_string()))
        .await?;
    assert!(
        out.stderr.contains(
            "pods \"bare\" is forbidden: failed quota: q: must specify requests.cpu for: c"
        ),
        "{}",
        out.stderr
    );

    // Deleting a pod gives its usage back, and the next pod fits.
    cluster
        .kubectl_ok(&["delete", "pod", "p1", "--wait=false"])
        .await?;
    wait_used(&cluster, "default", "q", "pods", "1").await?;
    cluster.apply_json(&pod("p3", Some("100m"))).await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_never_take_more_than_the_quota_allows() -> Result<()> {
    let cluster = TestCluster::builder().start().await?;
    cluster.kubectl_ok(&["create", "namespace", "race"]).await?;
    cluster
        .kubectl_ok(&["create", "quota", "q", "-n", "race", "--hard=pods=5"])
        .await?;
    wait_used(&cluster, "race", "q", "pods", "0").await?;

    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, "race");
    let attempts = (0..24).map(|i| {
        let pods = pods.clone();
        async move {
            let p: Pod = serde_json::from_value(pod(&format!("p{i}"), None))?;
            anyhow::Ok(pods.create(&PostParams::default(), &p).await)
        }
    });
    let results = futures::future::join_all(attempts).await;
    let mut admitted = 0;
    for result in results {
        match result? {
            Ok(_) => admitted += 1,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                assert!(s.message.contains("exceeded quota: q"), "{s:?}");
            }
            Err(other) => return Err(other).context("an unexpected create failure"),
        }
    }
    assert_eq!(admitted, 5, "exactly the quota's pods were admitted");
    let stored = pods.list(&Default::default()).await?.items.len();
    assert_eq!(stored, 5);
    let q = wait_used(&cluster, "race", "q", "pods", "5").await?;
    assert_eq!(
        q.status
            .and_then(|s| s.hard)
            .and_then(|h| h.get("pods").cloned())
            .map(|q| q.0),
        Some("5".to_string())
    );
    Ok(())
}
