//! How many scheduling decisions per second the default framework makes on a simulated
//! cluster, without the API: `cargo run --release -p wasmkube-scheduler --example
//! framework_throughput [nodes] [pods]` (defaults: 5,000 nodes, 50,000 pods).
//!
//! Every decision is followed by `assume`, as in the scheduler, so later pods see earlier
//! ones. This bounds what the scheduler can reach end to end; bindings through the
//! apiserver come on top.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmkube_scheduler::plugins::default_framework;
use wasmkube_scheduler::snapshot::{PodInfo, Snapshot};

fn node(i: usize) -> Node {
    let name = format!("node-{i:05}");
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        (
            "topology.kubernetes.io/zone".to_string(),
            format!("zone-{}", i % 3),
        ),
        (
            "wasmkube.io/runtime-wasmtime".to_string(),
            "true".to_string(),
        ),
    ]);
    let taints = i.is_multiple_of(10).then(|| {
        vec![Taint {
            key: "dedicated".into(),
            value: Some("batch".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }]
    });
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("32".into())),
                ("memory".to_string(), Quantity("128Gi".into())),
                ("pods".to_string(), Quantity("250".into())),
            ])),
            ..Default::default()
        }),
    }
}

fn pod(i: usize) -> Pod {
    let requests = BTreeMap::from([
        ("cpu".to_string(), Quantity("100m".into())),
        ("memory".to_string(), Quantity("128Mi".into())),
    ]);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i}")),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{i}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            node_selector: i.is_multiple_of(2).then(|| {
                BTreeMap::from([(
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                )])
            }),
            tolerations: i.is_multiple_of(5).then(|| {
                vec![Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);

    let mut snapshot = Snapshot::new();
    for i in 0..nodes {
        snapshot.upsert_node(node(i));
    }
    let infos: Vec<Arc<PodInfo>> = (0..pods).map(|i| Arc::new(PodInfo::new(pod(i)))).collect();
    let mut framework = default_framework();

    let started = Instant::now();
    let mut unschedulable = 0usize;
    for info in &infos {
        match framework.schedule(info, &snapshot) {
            Ok(node) => snapshot.assume(info.clone(), &node),
            Err(_) => unschedulable += 1,
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{pods} pods on {nodes} nodes: {:.0} decisions/s ({:.1} us per pod), {unschedulable} unschedulable",
        pods as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / pods as f64
    );
}
