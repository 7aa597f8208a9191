//! The routed pod network (`--pod-network routed`) across three nodes, each in its own host of
//! a network-namespace lab: pods get IPs from their Node's pod CIDR, every host reaches every
//! pod (across nodes through the host-gw routes the agents program from their Node watches),
//! a deleted Node's route goes from the others, and an agent's restart duplicates no route or
//! address. All traffic stays inside the lab's namespaces.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::harness::{
    TestCluster, dnat_targets, http_hello_deployment, lab_tests_opted_out, poll_until,
    ready_app_pods, routed_node,
};

const DEADLINE: Duration = Duration::from_secs(120);
const APP: &str = "hello-net";
/// The nodes, in host order: the server's embedded agent in host 0, agents in hosts 1 and 2.
const NODES: [&str; 3] = ["net-0", "net-1", "net-2"];

/// Node name -> pod IP of the app's pods, once there are three ready ones.
async fn ready_pods(cluster: &TestCluster) -> Result<BTreeMap<String, String>> {
    Ok(ready_app_pods(cluster, APP, 3, DEADLINE)
        .await?
        .into_iter()
        .map(|p| (p.node, p.ip))
        .collect())
}

/// Node name -> spec.podCIDR.
async fn pod_cidrs(cluster: &TestCluster) -> Result<BTreeMap<String, String>> {
    let nodes: Api<Node> = Api::all(cluster.client().await?);
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| Some((n.metadata.name?, n.spec?.pod_cidr?)))
        .collect())
}

/// Whether `ip` is in `cidr` (IPv4 `a.b.c.d/n`).
fn in_cidr(ip: &str, cidr: &str) -> Result<bool> {
    let (network, prefix) = cidr.split_once('/').context("a CIDR")?;
    let network: u32 = network.parse::<std::net::Ipv4Addr>()?.into();
    let ip: u32 = ip.parse::<std::net::Ipv4Addr>()?.into();
    let prefix: u32 = prefix.parse()?;
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Ok(ip & mask == network & mask)
}

/// The routes the agent of host `i` made (`proto 87`), one line each, sorted.
async fn agent_routes(cluster: &TestCluster, i: usize) -> Result<Vec<String>> {
    let out = cluster
        .host(i)?
        .run_ok("ip", &["-4", "route", "show", "proto", "87"])
        .await?;
    let mut routes: Vec<String> = out.lines().map(|l| l.trim().to_owned()).collect();
    routes.sort();
    Ok(routes)
}

/// The IPv4 addresses on host `i`'s wasmkube0.
async fn pod_device_addresses(cluster: &TestCluster, i: usize) -> Result<Vec<String>> {
    let out = cluster
        .host(i)?
        .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "wasmkube0"])
        .await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_owned)
        })
        .collect())
}

/// `curl`s every pod from every host; each must answer as http-hello does.
async fn curl_every_pod_from_every_host(
    cluster: &TestCluster,
    pods: &BTreeMap<String, String>,
) -> Result<()> {
    for host in 0..NODES.len() {
        for (node, ip) in pods {
            let url = format!("http://{ip}:8080/from-{host}");
            let body = cluster
                .host(host)?
                .run_ok("curl", &["-sS", "--max-time", "10", &url])
                .await
                .with_context(|| format!("host {host} -> pod on {node} at {ip}"))?;
            ensure!(
                body == format!("hello from wasm\npath: /from-{host}\n"),
                "host {host} -> {url}: {body:?}"
            );
        }
    }
    Ok(())
}

/// The routes host `i` should have: every other node's pod CIDR via that node's host.
fn expected_routes(
    cluster: &TestCluster,
    cidrs: &BTreeMap<String, String>,
    i: usize,
    nodes: &[&str],
) -> Result<Vec<String>> {
    let mut routes = Vec::new();
    for (j, node) in NODES.iter().enumerate() {
        if j == i || !nodes.contains(node) {
            continue;
        }
        let cidr = cidrs.get(*node).context("a node without a pod CIDR")?;
        routes.push(format!("{cidr} via {} dev eth0", cluster.host(j)?.ip()));
    }
    routes.sort();
    Ok(routes)
}

/// Three routed nodes in a lab (the server's in host 0, agents in hosts 1 and 2) with the
/// samples imported; `None` when the samples are not built.
async fn routed_cluster(test: &str) -> Result<Option<TestCluster>> {
    TestCluster::builder()
        .embedded_agent(routed_node(NODES[0], None))
        .agent(routed_node(NODES[1], None))
        .agent(routed_node(NODES[2], None))
        .in_netns_lab()
        .start_with_samples(test)
        .await
}

#[tokio::test]
async fn routed_pods_answer_every_host_and_host_gw_routes_follow_the_nodes() -> Result<()> {
    const TEST: &str = "routed_pods_answer_every_host_and_host_gw_routes_follow_the_nodes";
    if lab_tests_opted_out(TEST) {
        return Ok(());
    }
    let Some(mut cluster) = routed_cluster(TEST).await? else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &http_hello_deployment(APP))
        .await?;
    let pods = ready_pods(&cluster).await?;
    eprintln!(
        "{TEST}: 3 routed pods ready {:?} after the apply",
        started.elapsed()
    );
    let cidrs = pod_cidrs(&cluster).await?;
    assert_eq!(
        pods.keys().map(String::as_str).collect::<Vec<_>>(),
        NODES.to_vec(),
        "one pod per node: {pods:?}"
    );
    for (node, ip) in &pods {
        let cidr = cidrs.get(node).context("the node has no pod CIDR")?;
        ensure!(
            in_cidr(ip, cidr)?,
            "pod IP {ip} on {node} is outside {cidr}"
        );
    }
    // Each node holds its own pod's IP, as a /32 on wasmkube0, and routes the others'.
    for (i, node) in NODES.iter().enumerate() {
        assert_eq!(
            pod_device_addresses(&cluster, i).await?,
            vec![format!("{}/32", pods[*node])],
            "{node}"
        );
        let want = expected_routes(&cluster, &cidrs, i, &NODES)?;
        poll_until(&format!("{node}'s host-gw routes"), DEADLINE, || async {
            Ok((agent_routes(&cluster, i).await? == want).then_some(()))
        })
        .await
        .with_context(|| cluster.logs_tail(40))?;
    }
    curl_every_pod_from_every_host(&cluster, &pods).await?;

    // The joined agents watch every Node as system:kube-proxy, with a certificate each asked
    // for as itself and the server approved (no kubeconfig made by hand).
    let csrs = cluster.kubectl_json(&["get", "csr", "-o", "json"]).await?;
    for node in &NODES[1..] {
        let approved = csrs["items"].as_array().into_iter().flatten().any(|csr| {
            csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client"
                && csr["spec"]["username"] == format!("system:node:{node}").as_str()
                && csr["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Approved" && c["reason"] == "AutoApproved")
                && csr["status"]["certificate"].is_string()
        });
        ensure!(approved, "no approved kube-proxy CSR of {node}: {csrs}");
    }

    // An agent restarted (after a kill -9) adopts its pod with its IP and adds no second
    // address or route.
    cluster.kill9_agent(0).await?;
    cluster.restart_agent(0).await?;
    let after = ready_pods(&cluster).await?;
    assert_eq!(
        after, pods,
        "the pods keep their IPs across the agent's restart"
    );
    assert_eq!(
        pod_device_addresses(&cluster, 1).await?,
        vec![format!("{}/32", pods[NODES[1]])]
    );
    assert_eq!(
        agent_routes(&cluster, 1).await?,
        expected_routes(&cluster, &cidrs, 1, &NODES)?
    );
    // Its wasm pod ended with it and is started again: the status read above may still be
    // the one from before the kill, so its listener answers a moment later.
    poll_until(
        "every pod answering after the restart",
        DEADLINE,
        || async { Ok(curl_every_pod_from_every_host(&cluster, &pods).await.ok()) },
    )
    .await?;

    // A Node deleted (its agent gone) leaves the other nodes' tables.
    cluster.kill9_agent(1).await?;
    cluster.kubectl_ok(&["delete", "node", NODES[2]]).await?;
    let deleted = std::time::Instant::now();
    for i in [0, 1] {
        let want = expected_routes(&cluster, &cidrs, i, &NODES[..2])?;
        poll_until(
            &format!("the route to {} gone from host {i}", NODES[2]),
            DEADLINE,
            || async { Ok((agent_routes(&cluster, i).await? == want).then_some(())) },
        )
        .await?;
    }
    eprintln!(
        "{TEST}: the deleted Node's route gone from both other hosts {:?} after the delete",
        deleted.elapsed()
    );
    // The two nodes left still reach each other's pods.
    for from in 0..2 {
        for node in &NODES[..2] {
            let url = format!("http://{}:8080/", pods[*node]);
            cluster
                .host(from)?
                .run_ok("curl", &["-sS", "--max-time", "10", &url])
                .await
                .with_context(|| format!("host {from} -> the pod on {node}"))?;
        }
    }

    // `wasmkube agent --cleanup` (agent stopped) removes the device and the agent's routes,
    // and nothing else.
    cluster.kill9_agent(0).await?;
    let host = cluster.host(1)?;
    let before = host.run_ok("ip", &["-4", "route", "show"]).await?;
    host.run_ok(env!("CARGO_BIN_EXE_wasmkube"), &["agent", "--cleanup"])
        .await
        .context("wasmkube agent --cleanup")?;
    let links = host.run_ok("ip", &["-o", "link", "show"]).await?;
    ensure!(!links.contains("wasmkube0"), "{links}");
    assert_eq!(agent_routes(&cluster, 1).await?, Vec::<String>::new());
    let after = host.run_ok("ip", &["-4", "route", "show"]).await?;
    let kept: Vec<&str> = before.lines().filter(|l| !l.contains("proto 87")).collect();
    assert_eq!(
        after.lines().collect::<Vec<_>>(),
        kept,
        "only the agent's routes went"
    );
    Ok(())
}

#[tokio::test]
async fn a_cluster_ip_reaches_the_routed_pods_of_every_node_from_every_node() -> Result<()> {
    const TEST: &str = "a_cluster_ip_reaches_the_routed_pods_of_every_node_from_every_node";
    if lab_tests_opted_out(TEST) {
        return Ok(());
    }
    let Some(cluster) = routed_cluster(TEST).await? else {
        return Ok(());
    };
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP},
        "spec": {
            "selector": {"app": APP},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &http_hello_deployment(APP))
        .await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &service.to_string())
        .await?;
    let pods = ready_pods(&cluster).await?;
    let cluster_ip = cluster
        .kubectl_ok(&["get", "service", APP, "-o", "jsonpath={.spec.clusterIP}"])
        .await?;
    for i in 0..NODES.len() {
        // What a real host's default route would do for the service CIDR: lead to the
        // network (here the lab's switch), so that the node's nftables DNAT sees the packet.
        cluster
            .host(i)?
            .run_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "eth0"])
            .await?;
    }
    // Every node's kube-proxy DNATs to all three pods before the requests are counted.
    for i in 0..NODES.len() {
        poll_until(
            &format!("host {i}'s kube-proxy with every endpoint"),
            DEADLINE,
            || async {
                let out = cluster
                    .host(i)?
                    .run("nft", &["list", "table", "ip", "wasmkube"])
                    .await?;
                let targets = dnat_targets(&String::from_utf8_lossy(&out.stdout));
                Ok(pods
                    .values()
                    .all(|ip| targets.contains(&format!("{ip}:8080")))
                    .then_some(()))
            },
        )
        .await?;
    }
    const REQUESTS: usize = 60;
    for i in 0..NODES.len() {
        let url = format!("http://{cluster_ip}/svc-{i}-");
        let urls: Vec<String> = (0..REQUESTS).map(|n| format!("{url}{n}")).collect();
        let mut args = vec!["-sS", "--max-time", "10", "-H", "Connection: close"];
        args.extend(urls.iter().map(String::as_str));
        let body = cluster.host(i)?.run_ok("curl", &args).await?;
        ensure!(
            body.matches("hello from wasm\n").count() == REQUESTS,
            "host {i}: {body}"
        );
    }
    // Who answered: each pod logs the requests it served.
    let pod_names = cluster
        .kubectl_ok(&["get", "pods", "-l", &format!("app={APP}"), "-o", "name"])
        .await?;
    // Host -> how many of its requests each pod served.
    let mut answered: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for pod in pod_names.lines() {
        let logs = cluster.kubectl_ok(&["logs", pod]).await?;
        for i in 0..NODES.len() {
            let served = logs.matches(&format!("GET /svc-{i}-")).count();
            if served > 0 {
                answered.entry(i).or_default().push(served);
            }
        }
    }
    for i in 0..NODES.len() {
        let responders = answered.get(&i).map_or(0, Vec::len);
        eprintln!(
            "{TEST}: {REQUESTS} requests from host {i} reached {responders} pods ({:?} each)",
            answered.get(&i)
        );
        assert_eq!(
            responders, 3,
            "from host {i} the ClusterIP reaches every pod ({pods:?}): {answered:?}"
        );
    }
    Ok(())
}
