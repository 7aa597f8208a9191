//! Wasm pods on the network, in a network-namespace lab of three routed nodes with kube-proxy
//! (nftables) and the server's cluster DNS listening on host 0's lab address behind
//! `kube-system/kube-dns` (10.43.0.10): a Deployment of http-hello (one pod per node) behind a
//! ClusterIP Service is reached by name from every host (`dig @10.43.0.10` answers, curl uses
//! the answer), and from a wasm pod, the net-client sample, over wasi:http and over a raw
//! wasi:sockets TCP connection, its name resolved through the cluster DNS with the pod's search
//! path. A name that does not exist fails with a message in the pod's logs. All traffic stays
//! inside the lab.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::harness::{
    TestCluster, dnat_targets, http_hello_deployment, http_service, lab_tests_opted_out,
    poll_until, ready_app_pods, routed_node,
};

const DEADLINE: Duration = Duration::from_secs(120);
const APP: &str = "http-hello";
const NODES: [&str; 3] = ["wnet-0", "wnet-1", "wnet-2"];
/// Where the cluster DNS listens: host 0's lab address (the server runs in host 0).
const DNS_LISTEN: &str = "10.77.0.1:10053";
const FQDN: &str = "http-hello.default.svc.cluster.local";
/// The cluster DNS's upstream, inside host 0: a dnsmasq answering NXDOMAIN for every name, as
/// the Internet's resolvers do for a name that does not exist (without one, the names the
/// search path sends upstream would fail as SERVFAIL, a temporary failure).
const UPSTREAM_PORT: &str = "5353";

/// A net-client pod on `node` calling `host` (port 80, `path`).
fn client_pod(name: &str, node: &str, host: &str, path: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "containers": [{
                "name": "net-client",
                "image": "wasmkube.local/samples/net-client:v1",
                "args": [host, "80", path],
            }],
        },
    })
    .to_string()
}

/// Node name -> pod IP of the app's pods, once there are three ready ones.
async fn ready_pods(cluster: &TestCluster) -> Result<BTreeMap<String, String>> {
    Ok(ready_app_pods(cluster, APP, 3, DEADLINE)
        .await?
        .into_iter()
        .map(|p| (p.node, p.ip))
        .collect())
}

/// The phase of pod `name` once it is `Succeeded` or `Failed`.
async fn finished(cluster: &TestCluster, name: &str) -> Result<String> {
    let pod = cluster
        .wait_pod(name, "Succeeded or Failed", DEADLINE, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
        })
        .await?;
    Ok(pod.status.and_then(|s| s.phase).unwrap_or_default())
}

#[tokio::test]
async fn wasm_pods_call_a_service_by_name_through_the_cluster_dns() -> Result<()> {
    const TEST: &str = "wasm_pods_call_a_service_by_name_through_the_cluster_dns";
    if lab_tests_opted_out(TEST) {
        return Ok(());
    }
    // The net-client image is among the samples imported; fail naming the build when not.
    if wasmkube_samples::built(TEST, "oci/net-client/index.json")?.is_none() {
        return Ok(());
    }
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(routed_node(NODES[0], Some("nftables")))
        .agent(routed_node(NODES[1], Some("nftables")))
        .agent(routed_node(NODES[2], Some("nftables")))
        .server_arg(format!("--cluster-dns-listen={DNS_LISTEN}"))
        .server_arg(format!("--cluster-dns-upstream=127.0.0.1:{UPSTREAM_PORT}"))
        .in_netns_lab()
        .start_with_samples(TEST)
        .await?
    else {
        return Ok(());
    };
    let _upstream = cluster
        .host(0)?
        .command(
            "dnsmasq",
            [
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=nobody",
                "--pid-file",
                &format!("--port={UPSTREAM_PORT}"),
                "--address=/#/",
            ],
        )
        .spawn()
        .context("starting dnsmasq (Debian package dnsmasq-base; tests/run installs it)")?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &http_hello_deployment(APP))
        .await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &http_service(APP))
        .await?;
    let pods = ready_pods(&cluster).await?;
    assert_eq!(
        pods.keys().map(String::as_str).collect::<Vec<_>>(),
        NODES.to_vec(),
        "one pod per node: {pods:?}"
    );
    let cluster_ip = cluster
        .kubectl_ok(&["get", "service", APP, "-o", "jsonpath={.spec.clusterIP}"])
        .await?;
    let (dns_ip, dns_port) = DNS_LISTEN.split_once(':').context("DNS_LISTEN")?;
    for i in 0..NODES.len() {
        // What a real host's default route would do for the service CIDR (see kube_proxy).
        cluster
            .host(i)?
            .run_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "eth0"])
            .await?;
        poll_until(
            &format!("host {i}'s kube-proxy with the pods and the cluster DNS"),
            DEADLINE,
            || async {
                let out = cluster
                    .host(i)?
                    .run("nft", &["list", "table", "ip", "wasmkube"])
                    .await?;
                let targets = dnat_targets(&String::from_utf8_lossy(&out.stdout));
                Ok((pods
                    .values()
                    .all(|ip| targets.contains(&format!("{ip}:8080")))
                    && targets.contains(&format!("{dns_ip}:{dns_port}")))
                .then_some(()))
            },
        )
        .await?;
    }

    // From every host: the name resolves through the cluster DNS (10.43.0.10, kube-proxy to
    // the server's listener), and curl reaches all three pods at the address it got.
    const REQUESTS: usize = 60;
    for i in 0..NODES.len() {
        let host = cluster.host(i)?;
        let answer = poll_until(
            &format!("host {i}: dig @10.43.0.10 {FQDN}"),
            DEADLINE,
            || async {
                let out = host
                    .run(
                        "dig",
                        &["@10.43.0.10", "+tries=1", "+time=2", "+short", FQDN, "A"],
                    )
                    .await?;
                let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                Ok((out.status.success() && !text.is_empty()).then_some(text))
            },
        )
        .await?;
        assert_eq!(answer, cluster_ip, "host {i}: the Service's A record");
        let resolve = format!("{FQDN}:80:{answer}");
        let urls: Vec<String> = (0..REQUESTS)
            .map(|n| format!("http://{FQDN}/dns-{i}-{n}"))
            .collect();
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Connection: close",
            "--resolve",
            &resolve,
        ];
        args.extend(urls.iter().map(String::as_str));
        let body = host.run_ok("curl", &args).await?;
        ensure!(
            body.matches("hello from wasm\n").count() == REQUESTS,
            "host {i}: {body}"
        );
    }
    let pod_names = cluster
        .kubectl_ok(&["get", "pods", "-l", &format!("app={APP}"), "-o", "name"])
        .await?;
    let mut answered: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for pod in pod_names.lines() {
        let logs = cluster.kubectl_ok(&["logs", pod]).await?;
        for i in 0..NODES.len() {
            if logs.contains(&format!("GET /dns-{i}-")) {
                answered.entry(i).or_default().insert(pod.to_owned());
            }
        }
    }
    for i in 0..NODES.len() {
        let responders = answered.get(&i).map_or(0, BTreeSet::len);
        eprintln!("{TEST}: {REQUESTS} requests by name from host {i} reached {responders} pods");
        assert_eq!(responders, 3, "host {i}: {answered:?}");
    }

    // A wasm pod calls the Service by its short name (the pod's search path completes it),
    // over wasi:http and over raw TCP.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &client_pod("net-client", NODES[2], APP, "/from-wasm"),
        )
        .await?;
    let phase = finished(&cluster, "net-client").await?;
    let logs = cluster.kubectl_ok(&["logs", "net-client"]).await?;
    eprintln!("{TEST}: net-client ({phase}):\n{logs}");
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(
        logs.contains("net-client: http GET http://http-hello/from-wasm -> 200\n"),
        "{logs}"
    );
    assert!(
        logs.contains("net-client: http body hello from wasm"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "net-client: tcp GET http://http-hello:80/from-wasm ({cluster_ip}:80) -> HTTP/1."
        )),
        "{logs}"
    );
    assert!(
        logs.contains("net-client: tcp body hello from wasm"),
        "{logs}"
    );

    // A name that does not exist: the pod fails, saying so.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &client_pod("net-client-missing", NODES[1], "no-such-service", "/"),
        )
        .await?;
    let phase = finished(&cluster, "net-client-missing").await?;
    let logs = cluster.kubectl_ok(&["logs", "net-client-missing"]).await?;
    eprintln!("{TEST}: net-client-missing ({phase}):\n{logs}");
    assert_eq!(phase, "Failed", "{logs}");
    assert!(
        logs.contains("net-client: http GET http://no-such-service/ failed: DNS error NXDOMAIN"),
        "{logs}"
    );
    assert!(
        logs.contains("net-client: cannot resolve no-such-service: name-unresolvable"),
        "{logs}"
    );
    Ok(())
}
