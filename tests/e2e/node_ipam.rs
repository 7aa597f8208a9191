//! Proves node IPAM as kube-controller-manager's range allocator (with k3s' defaults) does
//! it: every Node gets a pod CIDR from the cluster CIDR, distinct from every other Node's,
//! once; a full range leaves a Node waiting with a `CIDRNotAvailable` Event until another
//! Node goes, whose CIDR it then gets; a pod CIDR, once set, cannot be changed.
//!
//! The private-range addresses here (the 10.42/16 pod CIDRs) are API data only: these tests'
//! agents use the loopback pod network and a loopback node IP (kube-proxy off), so no route
//! to a pod CIDR is made and no packet goes to one. The tests that send traffic to such
//! addresses (pod_network.rs, kube_proxy.rs) run inside network namespaces the harness
//! makes, with no route out.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::harness::{TestCluster, poll_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// `name -> spec.podCIDRs` of every Node.
async fn pod_cidrs(cluster: &TestCluster) -> Result<Vec<(String, Value)>> {
    let nodes = cluster.kubectl_json(&["get", "nodes"]).await?;
    Ok(nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let name = n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (name, n["spec"]["podCIDRs"].clone())
        })
        .collect())
}

async fn node_cidr(cluster: &TestCluster, name: &str) -> Result<Option<String>> {
    let node = cluster.kubectl_json(&["get", "node", name]).await?;
    assert_eq!(
        node["spec"]["podCIDR"], node["spec"]["podCIDRs"][0],
        "podCIDR is the first of podCIDRs: {node:#}"
    );
    Ok(node["spec"]["podCIDR"].as_str().map(str::to_string))
}

fn node(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}).to_string()
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs_and_a_deleted_nodes_cidr_is_reused() -> Result<()> {
    // Two /24s in all.
    let cluster = TestCluster::builder()
        .agents(1)
        .server_arg("--cluster-cidr=10.42.0.0/23")
        .server_arg("--node-cidr-mask-size=24")
        .start()
        .await?;
    let agent = cluster.agent_node_name(0)?;
    let agent_cidr = poll_until("the agent's node gets a pod CIDR", DEADLINE, || {
        node_cidr(&cluster, &agent)
    })
    .await?;
    cluster
        .kubectl_ok_stdin(&["create", "-f", "-"], &node("extra-1"))
        .await?;
    let extra_cidr = poll_until("extra-1 gets a pod CIDR", DEADLINE, || {
        node_cidr(&cluster, "extra-1")
    })
    .await?;
    let both: BTreeSet<&str> = [agent_cidr.as_str(), extra_cidr.as_str()].into();
    assert_eq!(both, BTreeSet::from(["10.42.0.0/24", "10.42.1.0/24"]));

    // The range is full: the third node waits, with an Event saying so.
    cluster
        .kubectl_ok_stdin(&["create", "-f", "-"], &node("extra-2"))
        .await?;
    poll_until("extra-2's CIDRNotAvailable event", DEADLINE, || async {
        let events = cluster
            .kubectl_json(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=extra-2",
            ])
            .await?;
        Ok(events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "CIDRNotAvailable")
            .then_some(()))
    })
    .await?;
    assert_eq!(node_cidr(&cluster, "extra-2").await?, None);

    // A pod CIDR, once set, stays.
    let out = cluster
        .kubectl(&[
            "patch",
            "node",
            "extra-1",
            "--type=merge",
            "-p",
            r#"{"spec":{"podCIDR":"10.42.9.0/24","podCIDRs":["10.42.9.0/24"]}}"#,
        ])
        .await?;
    assert!(
        out.stderr
            .contains("node updates may not change podCIDR except from \"\" to valid"),
        "{}",
        out.stderr
    );

    // extra-1 goes: extra-2 gets its CIDR.
    cluster.kubectl_ok(&["delete", "node", "extra-1"]).await?;
    let reused = poll_until("extra-2 gets the freed pod CIDR", DEADLINE, || {
        node_cidr(&cluster, "extra-2")
    })
    .await?;
    assert_eq!(reused, extra_cidr);
    let all = pod_cidrs(&cluster).await?;
    let distinct: BTreeSet<String> = all.iter().map(|(_, c)| c.to_string()).collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
    Ok(())
}

#[tokio::test]
async fn the_default_cluster_cidr_is_k3s_and_every_node_gets_a_slash_24() -> Result<()> {
    let cluster = TestCluster::builder().agents(2).start().await?;
    let names = [cluster.agent_node_name(0)?, cluster.agent_node_name(1)?];
    let mut cidrs = BTreeSet::new();
    for name in &names {
        let cidr = poll_until("a pod CIDR", DEADLINE, || node_cidr(&cluster, name)).await?;
        let net: std::net::Ipv4Addr = cidr
            .strip_suffix("/24")
            .unwrap_or_else(|| panic!("{cidr} is a /24"))
            .parse()?;
        assert_eq!(net.octets()[..2], [10, 42], "{cidr} is in 10.42.0.0/16");
        cidrs.insert(cidr);
    }
    assert_eq!(cidrs.len(), 2, "{cidrs:?}");
    Ok(())
}
