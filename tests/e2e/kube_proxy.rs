//! kube-proxy in every agent (`--proxy-mode nftables`, and the `userspace` relay), with
//! traffic: a cluster of three nodes in a network-namespace lab, selector-less Services whose hand-made EndpointSlices
//! point at HTTP responders the test runs in each host, and curl run inside the hosts. No
//! packet leaves the lab: the hosts have no default route, and the route to the service
//! CIDR each host gets here (what a real host's default route would do) leads to the lab's
//! switch.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{LabHost, NodeSpec, TestCluster, lab_tests_opted_out, poll_until};

const NODES: [&str; 3] = ["proxy-server", "proxy-a", "proxy-b"];
/// The port the responders listen on in every host.
const TARGET_PORT: u16 = 8080;

/// Runs an HTTP responder on `host`'s address, answering every request with `name`.
async fn responder(host: &LabHost, name: String) -> Result<tokio::task::JoinHandle<()>> {
    let ip = host.ip();
    let listener = host
        .run_blocking(move || std::net::TcpListener::bind((ip, TARGET_PORT)))
        .await??;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = stream.read(&mut request).await;
                let body = format!("{name}\n");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }))
}

/// A selector-less Service (`spec` adds to its spec; with `node_port`, a NodePort Service)
/// and its hand-made EndpointSlice listing `endpoints` (address, node), as YAML for kubectl.
fn service_yaml(
    name: &str,
    spec: &str,
    node_port: Option<u16>,
    endpoints: &[(Ipv4Addr, &str)],
) -> String {
    let node_port = node_port
        .map(|p| format!("    nodePort: {p}\n  type: NodePort\n"))
        .unwrap_or_default();
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}  ports:\n  - name: http\n    port: 80\n    targetPort: {TARGET_PORT}\n{node_port}\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: {TARGET_PORT}\n  protocol: TCP\nendpoints:"
    );
    yaml.push_str(if endpoints.is_empty() { " []\n" } else { "\n" });
    for (ip, node) in endpoints {
        yaml.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  nodeName: {node}\n  conditions: {{ready: true}}\n"
        ));
    }
    yaml
}

/// `curl` inside `host` `n` times at `url`; the responders' names, in order.
async fn responders(host: &LabHost, url: &str, n: usize) -> Result<Vec<String>> {
    let mut args = vec!["-sS", "--max-time", "10"];
    for _ in 0..n {
        args.push(url);
    }
    let out = host.run_ok("curl", &args).await?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The rules of host `host`'s `ip wasmkube` table, without their handles, sorted.
async fn table_rules(host: &LabHost) -> Result<Vec<String>> {
    let out = host
        .run_ok("nft", &["-j", "list", "table", "ip", "wasmkube"])
        .await?;
    let listing: serde_json::Value = serde_json::from_str(&out)?;
    let mut rules: Vec<String> = listing["nftables"]
        .as_array()
        .context("no nftables array")?
        .iter()
        .filter_map(|o| {
            let mut rule = o.get("rule")?.clone();
            rule.as_object_mut()?.remove("handle");
            Some(rule.to_string())
        })
        .collect();
    rules.sort();
    Ok(rules)
}

#[tokio::test]
async fn services_reach_their_endpoints_from_every_node_through_nftables() -> Result<()> {
    if lab_tests_opted_out("services_reach_their_endpoints_from_every_node_through_nftables") {
        return Ok(());
    }
    let mut cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named(NODES[0]).arg("--proxy-mode=nftables"))
        .agent(NodeSpec::named(NODES[1]).arg("--proxy-mode=nftables"))
        .agent(NodeSpec::named(NODES[2]).arg("--proxy-mode=nftables"))
        .in_netns_lab()
        .start()
        .await?;
    let hosts: Vec<LabHost> = (0..3)
        .map(|i| cluster.host(i).cloned())
        .collect::<Result<_>>()?;
    let mut servers = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        servers.push(responder(host, format!("host-{i}")).await?);
        host.run_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "eth0"])
            .await?;
    }
    let all: Vec<(Ipv4Addr, &str)> = hosts.iter().map(|h| h.ip()).zip(NODES).collect();
    let manifests = [
        service_yaml("hello", "", Some(30080), &all),
        service_yaml("empty", "", None, &[]),
        service_yaml(
            "local",
            "  externalTrafficPolicy: Local\n",
            Some(30081),
            &all[1..2],
        ),
        service_yaml(
            "sticky",
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 60\n",
            None,
            &all,
        ),
    ];
    for yaml in &manifests {
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], yaml)
            .await?;
    }
    let mut ips = BTreeMap::new();
    for name in ["hello", "empty", "local", "sticky"] {
        let ip = cluster
            .kubectl_ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
            .await?;
        ips.insert(name, ip);
    }

    // From every node, the cluster IP reaches all three endpoints.
    let hello = format!("http://{}/", ips["hello"]);
    for (i, host) in hosts.iter().enumerate() {
        poll_until(
            &format!("host {i} reaches {hello}"),
            std::time::Duration::from_secs(60),
            || async { Ok(responders(host, &hello, 1).await.ok()) },
        )
        .await?;
        let seen: BTreeSet<String> = responders(host, &hello, 60).await?.into_iter().collect();
        assert_eq!(seen.len(), 3, "host {i} reached {seen:?} over 60 requests");
    }

    // A Service without endpoints is refused at once, not blackholed.
    let empty = format!("http://{}/", ips["empty"]);
    for host in &hosts {
        let out = host
            .run("curl", &["-sS", "--max-time", "10", &empty])
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(7),
            "curl's exit code for a refused connection: {stderr}"
        );
        // curl 7.88 words ECONNREFUSED "Couldn't connect to server", older ones
        // "Connection refused"; a timeout would be exit code 28.
        assert!(
            stderr.contains("Couldn't connect") || stderr.contains("Connection refused"),
            "{stderr}"
        );
    }

    // NodePort on every node's address, from every host.
    for client in &hosts {
        for node in &hosts {
            let url = format!("http://{}:30080/", node.ip());
            let got = responders(client, &url, 3).await?;
            assert_eq!(got.len(), 3, "{url} from {}: {got:?}", client.ip());
        }
    }

    // externalTrafficPolicy Local: only the node with an endpoint answers on its NodePort.
    let local_node = format!("http://{}:30081/", hosts[1].ip());
    assert_eq!(
        responders(&hosts[0], &local_node, 5).await?,
        vec!["host-1"; 5]
    );
    for other in [&hosts[0], &hosts[2]] {
        let url = format!("http://{}:30081/", other.ip());
        let out = hosts[1]
            .run("curl", &["-sS", "--max-time", "2", &url])
            .await?;
        assert_eq!(
            out.status.code(),
            Some(28),
            "{url} must not answer: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // sessionAffinity ClientIP: one client, one endpoint.
    let sticky = format!("http://{}/", ips["sticky"]);
    for host in &hosts {
        let seen: BTreeSet<String> = responders(host, &sticky, 20).await?.into_iter().collect();
        assert_eq!(seen.len(), 1, "{seen:?}");
    }

    // An agent restarted (after a kill -9) rewrites its table in place: while it was down a
    // Service was added; once its rules are there, every other rule is there exactly once.
    let before = table_rules(&hosts[1]).await?;
    let unique: BTreeSet<&String> = before.iter().collect();
    ensure!(
        unique.len() == before.len(),
        "duplicate rules before the restart"
    );
    cluster.kill9_agent(0).await?;
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &service_yaml("later", "", None, &all),
        )
        .await?;
    cluster.restart_agent(0).await?;
    let after = poll_until(
        "the restarted agent programs the new Service",
        std::time::Duration::from_secs(60),
        || async {
            let rules = table_rules(&hosts[1]).await?;
            Ok(rules
                .iter()
                .any(|r| r.contains("default/later/"))
                .then_some(rules))
        },
    )
    .await?;
    let without_later: Vec<String> = after
        .iter()
        .filter(|r| !r.contains("default/later/"))
        .cloned()
        .collect();
    assert_eq!(
        without_later, before,
        "the restart kept exactly one copy of each rule"
    );
    let later = format!(
        "http://{}/",
        cluster
            .kubectl_ok(&[
                "get",
                "service",
                "later",
                "-o",
                "jsonpath={.spec.clusterIP}"
            ])
            .await?
    );
    let seen: BTreeSet<String> = responders(&hosts[1], &later, 30)
        .await?
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");

    for server in servers {
        server.abort();
    }
    Ok(())
}

/// Whether `ip` is an address of `host`'s `lo` (where the userspace proxy puts cluster IPs).
async fn on_loopback(host: &LabHost, ip: &str) -> Result<bool> {
    let out = host
        .run_ok("ip", &["-j", "addr", "show", "dev", "lo"])
        .await?;
    let links: serde_json::Value = serde_json::from_str(&out)?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| link["addr_info"].as_array())
        .flatten()
        .any(|a| a["local"].as_str() == Some(ip)))
}

#[tokio::test]
async fn services_reach_their_endpoints_from_every_node_through_the_userspace_relay() -> Result<()>
{
    if lab_tests_opted_out(
        "services_reach_their_endpoints_from_every_node_through_the_userspace_relay",
    ) {
        return Ok(());
    }
    let nodes = ["relay-server", "relay-a", "relay-b"];
    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named(nodes[0]).arg("--proxy-mode=userspace"))
        .agent(NodeSpec::named(nodes[1]).arg("--proxy-mode=userspace"))
        .agent(NodeSpec::named(nodes[2]).arg("--proxy-mode=userspace"))
        .in_netns_lab()
        .start()
        .await?;
    let hosts: Vec<LabHost> = (0..3)
        .map(|i| cluster.host(i).cloned())
        .collect::<Result<_>>()?;
    let mut servers = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        servers.push(responder(host, format!("host-{i}")).await?);
    }
    let all: Vec<(Ipv4Addr, &str)> = hosts.iter().map(|h| h.ip()).zip(nodes).collect();
    for yaml in [
        service_yaml("hello", "", Some(30090), &all),
        service_yaml("empty", "", None, &[]),
    ] {
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], &yaml)
            .await?;
    }
    let mut ips = BTreeMap::new();
    for name in ["hello", "empty"] {
        let ip = cluster
            .kubectl_ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
            .await?;
        ips.insert(name, ip);
    }
    // No nftables rule is involved: the relay is the agent's own listener.
    for host in &hosts {
        let out = host
            .run("nft", &["list", "table", "ip", "wasmkube"])
            .await?;
        ensure!(
            !out.status.success(),
            "host {} has a wasmkube nftables table in userspace mode",
            host.ip()
        );
    }

    // From every node, the cluster IP (an address the node's relay put on its lo) reaches
    // all three endpoints.
    let hello = format!("http://{}/", ips["hello"]);
    for (i, host) in hosts.iter().enumerate() {
        poll_until(
            &format!("host {i} reaches {hello}"),
            std::time::Duration::from_secs(60),
            || async { Ok(responders(host, &hello, 1).await.ok()) },
        )
        .await?;
        ensure!(
            on_loopback(host, &ips["hello"]).await?,
            "host {i}: the cluster IP is not on lo"
        );
        let seen: BTreeSet<String> = responders(host, &hello, 60).await?.into_iter().collect();
        assert_eq!(seen.len(), 3, "host {i} reached {seen:?} over 60 requests");
    }

    // A NodePort answers on every node's address, from every host, and reaches every
    // endpoint.
    for client in &hosts {
        for node in &hosts {
            let url = format!("http://{}:30090/", node.ip());
            let got = responders(client, &url, 6).await?;
            assert_eq!(got.len(), 6, "{url} from {}: {got:?}", client.ip());
            let seen: BTreeSet<&String> = got.iter().collect();
            assert_eq!(seen.len(), 3, "{url} from {}: {got:?}", client.ip());
        }
    }

    // A Service without a ready endpoint: its cluster IP is on lo and every connection is
    // reset by its relay (or refused, before the relay listens), at once; a hang would be
    // curl's timeout, exit code 28.
    let empty = format!("http://{}/", ips["empty"]);
    for (i, host) in hosts.iter().enumerate() {
        poll_until(
            &format!("host {i} relays {empty}"),
            std::time::Duration::from_secs(60),
            || async { Ok(on_loopback(host, &ips["empty"]).await?.then_some(())) },
        )
        .await?;
        let out = host
            .run("curl", &["-sS", "--max-time", "10", &empty])
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // curl: 56 "Connection reset by peer", 7 "Couldn't connect to server" (refused).
        assert!(
            matches!(out.status.code(), Some(56 | 7)),
            "curl's exit code for a reset or refused connection from host {i}: {:?} {stderr}",
            out.status.code()
        );
        assert!(
            stderr.contains("reset") || stderr.contains("Couldn't connect"),
            "{stderr}"
        );
    }

    // The Service gains an endpoint: the same relay now forwards to it.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &service_yaml("empty", "", None, &all[2..]),
        )
        .await?;
    let got = poll_until(
        "the formerly empty Service answers",
        std::time::Duration::from_secs(60),
        || async { Ok(responders(&hosts[0], &empty, 1).await.ok()) },
    )
    .await?;
    assert_eq!(got, vec!["host-2"]);

    for server in servers {
        server.abort();
    }
    Ok(())
}
