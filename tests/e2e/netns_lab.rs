//! Proves the network-namespace lab the networking tests run their clusters in: hosts reach
//! each other over the lab's switch, nothing routes out of a host (no packet to a private or
//! public address leaves the machine), and a cluster started in a lab has its nodes at their
//! hosts' addresses, reachable with kubectl from every host.

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{LAB_SUBNET, NetnsLab, NodeSpec, TestCluster, lab_tests_opted_out};

#[tokio::test]
async fn lab_hosts_reach_each_other_and_nothing_routes_out() -> Result<()> {
    if lab_tests_opted_out("lab_hosts_reach_each_other_and_nothing_routes_out") {
        return Ok(());
    }
    let lab = NetnsLab::new(2).await?;
    let (a, b) = (lab.host(0)?.clone(), lab.host(1)?.clone());
    assert_eq!(a.ip().to_string(), "10.77.0.1");
    assert_eq!(b.ip().to_string(), "10.77.0.2");

    // TCP from host a to a listener in host b, with curl run inside a.
    let listener = b
        .run_blocking(|| std::net::TcpListener::bind(("10.77.0.2", 0)))
        .await??;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await?;
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await?;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nhello\n")
            .await?;
        anyhow::Ok(peer)
    });
    let url = format!("http://10.77.0.2:{port}/");
    let body = a.run_ok("curl", &["-sS", "--max-time", "10", &url]).await?;
    assert_eq!(body, "hello\n");
    let peer = server.await??;
    assert_eq!(peer.ip().to_string(), "10.77.0.1", "the client is host a");

    // Only the lab's subnet is routed: public, pod-CIDR and service-CIDR addresses are
    // unreachable from inside, not sent anywhere.
    for (host, other) in [(&a, &b), (&b, &a)] {
        let other = other.ip().to_string();
        let route = host.run_ok("ip", &["route", "get", &other]).await?;
        ensure!(route.contains("dev eth0"), "{route}");
        for outside in ["1.1.1.1", "10.42.0.1", "10.43.0.1", "192.168.1.1"] {
            let out = host.run("ip", &["-4", "route", "get", outside]).await?;
            ensure!(
                !out.status.success(),
                "{outside} is routable from {}: {}",
                host.netns(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let routes = host.run_ok("ip", &["-4", "route", "show"]).await?;
        ensure!(!routes.contains("default"), "a default route: {routes}");
        ensure!(routes.starts_with(LAB_SUBNET), "{routes}");
        let forward = host
            .run_ok("sysctl", &["-n", "net.ipv4.ip_forward"])
            .await?;
        assert_eq!(forward.trim(), "1");
    }

    let paths: Vec<_> = lab.hosts().iter().map(|h| h.netns_path()).collect();
    drop(lab);
    for path in paths {
        ensure!(!path.exists(), "{} outlived the lab", path.display());
    }
    Ok(())
}

#[tokio::test]
async fn a_cluster_in_a_lab_has_its_nodes_at_their_hosts_addresses() -> Result<()> {
    if lab_tests_opted_out("a_cluster_in_a_lab_has_its_nodes_at_their_hosts_addresses") {
        return Ok(());
    }
    let cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("lab-server"))
        .agent(NodeSpec::named("lab-agent"))
        .in_netns_lab()
        .start()
        .await?;
    for (name, host) in [("lab-server", 0), ("lab-agent", 1)] {
        let address = cluster
            .kubectl_ok(&[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
            ])
            .await?;
        assert_eq!(address, cluster.host(host)?.ip().to_string(), "{name}");
    }
    // kubectl inside each host reaches the apiserver at host 0's lab address.
    for host in [0, 1] {
        let names = cluster
            .kubectl_ok_on(host, &["get", "nodes", "-o", "name"])
            .await
            .with_context(|| format!("kubectl in host {host}"))?;
        assert_eq!(names, "node/lab-agent\nnode/lab-server\n");
    }
    Ok(())
}
