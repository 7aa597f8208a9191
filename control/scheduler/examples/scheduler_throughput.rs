//! End-to-end scheduler throughput against the real apiserver (in process, on a temporary
//! data directory), the way kube-scheduler's `scheduler_perf` measures it: create the nodes
//! and the pending pods first, then start the scheduler and time until every pod is bound.
//!
//! `cargo run --release -p wasmkube-scheduler --example scheduler_throughput [nodes] [pods]`
//! (defaults: 5,000 nodes, 10,000 pods). Prints pods/s from scheduler start to the last
//! binding, with the scheduler's counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use wasmkube_apiserver::testing::TestApiserver;
use wasmkube_scheduler::{Metrics, SchedulerConfig};

const CONCURRENCY: usize = 128;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);

    let mut api = TestApiserver::start_with(|config| {
        config.history_max_events = 1_000_000;
        config.history_max_age = Duration::from_secs(600);
    })
    .await?;
    let client = api.client();
    // The pods run as their namespace's `default` ServiceAccount, which its controller makes.
    tokio::spawn(wasmkube_controllers::run(
        client.clone(),
        wasmkube_controllers::ControllersConfig {
            controllers: vec!["serviceaccount".into()],
            leader_election: None,
            ..wasmkube_controllers::ControllersConfig::default()
        },
        std::future::pending::<()>(),
    ));

    let started = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..nodes)
        .map(|i| create_node(&node_api, i))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!("{nodes} nodes created in {:.1?}", started.elapsed());

    let started = Instant::now();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..pods)
        .map(|i| {
            let api = pod_api.clone();
            async move {
                api.create(&PostParams::default(), &pod(i))
                    .await
                    .map(|_| ())
                    .context("creating a pod")
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!("{pods} pending pods created in {:.1?}", started.elapsed());

    if std::env::var("MODE").as_deref() == Ok("raw-bind") {
        // The apiserver's own binding rate, without the scheduler: the ceiling it works under.
        let started = Instant::now();
        futures::stream::iter(0..pods)
            .map(|i| {
                let api = pod_api.clone();
                async move {
                    let binding = json!({
                        "apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": format!("pod-{i}")},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": format!("node-{:05}", i % nodes)},
                    });
                    api.create_subresource::<_, serde_json::Value>(
                        "binding",
                        &format!("pod-{i}"),
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                    .map(|_| ())
                    .context("binding")
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let elapsed = started.elapsed();
        println!(
            "raw bindings: {pods} in {elapsed:.2?}: {:.0} bindings/s",
            pods as f64 / elapsed.as_secs_f64()
        );
        return Ok(());
    }

    let metrics = Arc::new(Metrics::default());
    let config = SchedulerConfig {
        leader_election: None,
        max_concurrent_binds: std::env::var("BINDS")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(SchedulerConfig::default().max_concurrent_binds),
        metrics: metrics.clone(),
        ..SchedulerConfig::default()
    };
    let (stop_scheduler, scheduler_stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let scheduler = tokio::spawn(wasmkube_scheduler::run(
        client.clone(),
        config,
        async move {
            let _ = scheduler_stopped.await;
        },
    ));
    let target = u64::try_from(pods)?;
    let mut first_binding: Option<(Instant, u64)> = None;
    loop {
        let bound = metrics.snapshot().bound;
        if first_binding.is_none() && bound > 0 {
            first_binding = Some((Instant::now(), bound));
        }
        if bound >= target {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("gave up after 10 minutes: {:?}", metrics.snapshot());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    // Steady state: from the first binding on, leaving out the initial list of the watches.
    let (first_at, first_count) = first_binding.unwrap_or((started, 0));
    let steady = first_at.elapsed();
    println!(
        "scheduled {pods} pods on {nodes} nodes in {elapsed:.2?}: {:.0} pods/s overall, {:.0} pods/s \
         from the first binding on ({:?})",
        pods as f64 / elapsed.as_secs_f64(),
        (target - first_count) as f64 / steady.as_secs_f64(),
        metrics.snapshot()
    );
    let _ = stop_scheduler.send(());
    scheduler.await??;
    api.stop().await?;
    Ok(())
}

async fn create_node(api: &Api<Node>, i: usize) -> Result<()> {
    let name = format!("node-{i:05}");
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.clone()),
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                ),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &node)
        .await
        .context("creating a node")?;
    let allocatable = json!({"cpu": "32", "memory": "128Gi", "pods": "250"});
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"capacity": allocatable, "allocatable": allocatable}})),
    )
    .await
    .context("setting node status")?;
    Ok(())
}

fn pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("hello.wasm".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_string(), Quantity("100m".into())),
                        ("memory".to_string(), Quantity("128Mi".into())),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}
