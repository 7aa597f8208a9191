//! The agent's Node and its Lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::harness::{Cluster, NODE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_a_ready_node_with_capacity_and_renews_its_lease() {
    let cluster = Cluster::start().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        if let Some(node) = nodes.get_opt(NODE).await.expect("get node")
            && node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some()
        {
            break node;
        }
        assert!(Instant::now() < deadline, "node not registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels[wasmkube_agent::RUNTIME_LABEL_WASMTIME], "true");
    let status = node.status.clone().unwrap_or_default();
    let capacity = status.capacity.clone().unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert_eq!(capacity["cpu"].0, cpus.to_string());
    assert_eq!(capacity["pods"].0, "110");
    assert!(capacity["memory"].0.ends_with("Ki"));
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
    let info = status.node_info.expect("nodeInfo");
    assert_eq!(info.kubelet_version, "v1.33.0-wasmkube");
    assert!(info.container_runtime_version.starts_with("wasmtime://"));
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(i32::from(cluster.log_addr().port()))
    );
    let addresses = status.addresses.unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );

    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-node-lease");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lease = loop {
        if let Some(lease) = leases.get_opt(NODE).await.expect("get lease") {
            break lease;
        }
        assert!(Instant::now() < deadline, "no lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let first = spec.renew_time.expect("renewTime").0;
    // Renewed every 10 s: wait (with a deadline) for a newer renewTime.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lease = leases.get(NODE).await.expect("lease");
        let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
        if renewed.is_some_and(|t| t > first) {
            break;
        }
        assert!(Instant::now() < deadline, "lease not renewed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
