//! Proves the cluster DNS of `wasmkube server` with the real binary, kubectl and `dig`: the
//! server keeps `kube-system/kube-dns` (10.43.0.10, ports dns/dns-tcp, `k8s-app=kube-dns`)
//! with an EndpointSlice pointing at its DNS listener, and that listener answers as CoreDNS:
//! the `kubernetes` Service, a headless Service's endpoints, SRV, an ExternalName's CNAME,
//! NXDOMAIN versus NODATA, over UDP and TCP; other names go to the upstream, here a dnsmasq
//! this test starts on 127.0.0.1 with one fixed record. Every query goes to 127.0.0.1.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::harness::{TestCluster, free_port, poll_until};

/// A dnsmasq on 127.0.0.1 answering `upstream.test` with 127.0.0.77 and nothing else (no
/// resolv.conf, no hosts file: it never forwards). Killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
}

impl Upstream {
    async fn start() -> Result<Upstream> {
        let port = free_port()?;
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=nobody",
                "--pid-file",
                &format!("--port={port}"),
                "--host-record=upstream.test,127.0.0.77",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting dnsmasq, the upstream resolver of the cluster DNS test \
                 (Debian package dnsmasq-base; tests/run installs it)",
            )?;
        let upstream = Upstream { child, port };
        poll_until("dnsmasq answering", Duration::from_secs(10), || async {
            let out = dig(upstream.port, &["upstream.test", "+short"]).await?;
            Ok((out.trim() == "127.0.0.77").then_some(()))
        })
        .await?;
        Ok(upstream)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `dig @127.0.0.1 -p PORT ARGS` (one try, 2 s), its stdout.
async fn dig(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=2"])
        .args(args)
        .output()
        .await
        .context("running dig (Debian package dnsutils; tests/run installs it)")?;
    if !out.status.success() {
        bail!(
            "dig {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The answers of `dig +short`, sorted.
async fn short(port: u16, args: &[&str]) -> Result<Vec<String>> {
    let mut all: Vec<String> = dig(port, &[args, &["+short"]].concat())
        .await?
        .lines()
        .map(str::to_owned)
        .collect();
    all.sort();
    Ok(all)
}

/// The header line of the answer (`status: NXDOMAIN`) and the section counts.
async fn header(port: u16, args: &[&str]) -> Result<String> {
    dig(port, &[args, &["+noall", "+comments"]].concat()).await
}

/// Polls `dig +short` until it answers `want`.
async fn until(port: u16, args: &[&str], want: &[&str]) -> Result<()> {
    poll_until(
        &format!("dig {args:?} answering {want:?}"),
        Duration::from_secs(20),
        || async { Ok((short(port, args).await? == want).then_some(())) },
    )
    .await
}

#[tokio::test]
async fn the_server_runs_cluster_dns_behind_kube_dns() -> Result<()> {
    let upstream = Upstream::start().await?;
    let cluster = TestCluster::builder()
        .server_arg(format!(
            "--cluster-dns-upstream=127.0.0.1:{}",
            upstream.port
        ))
        .start()
        .await?;

    // kube-system/kube-dns, as k3s has it, pointing at the listener.
    let svc = cluster
        .kubectl_json(&[
            "-n",
            "kube-system",
            "get",
            "service",
            "kube-dns",
            "-o",
            "json",
        ])
        .await?;
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .map(|p| {
            format!(
                "{} {}/{}",
                p["name"].as_str().unwrap_or(""),
                p["port"],
                p["protocol"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(ports, ["dns 53/UDP", "dns-tcp 53/TCP"]);
    let slice = cluster
        .kubectl_json(&[
            "-n",
            "kube-system",
            "get",
            "endpointslice",
            "kube-dns",
            "-o",
            "json",
        ])
        .await?;
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kube-dns"
    );
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");
    let port = u16::try_from(slice["ports"][0]["port"].as_u64().context("a port")?)?;

    // The apiserver's Service and kube-dns itself, over UDP and TCP.
    until(
        port,
        &["kubernetes.default.svc.cluster.local"],
        &["10.43.0.1"],
    )
    .await?;
    assert_eq!(
        short(port, &["+tcp", "kubernetes.default.svc.cluster.local"]).await?,
        ["10.43.0.1"]
    );
    assert_eq!(
        short(
            port,
            &["SRV", "_dns._udp.kube-dns.kube-system.svc.cluster.local"]
        )
        .await?,
        ["0 100 53 kube-dns.kube-system.svc.cluster.local."]
    );
    assert_eq!(
        short(port, &["-x", "10.43.0.1"]).await?,
        ["kubernetes.default.svc.cluster.local."]
    );

    // A headless Service with hand-made endpoints, and an ExternalName one.
    let objects = json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
         "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
         "addressType": "IPv4",
         "endpoints": [
             {"addresses": ["10.42.0.11"], "hostname": "db-0", "conditions": {"ready": true}},
             {"addresses": ["10.42.0.12"], "hostname": "db-1", "conditions": {"ready": true}}],
         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "search"},
         "spec": {"type": "ExternalName", "externalName": "upstream.test"}},
    ]);
    let documents: Vec<String> = objects
        .as_array()
        .context("objects")?
        .iter()
        .map(|o| o.to_string())
        .collect();
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &documents.join("\n---\n"))
        .await?;
    until(
        port,
        &["db.default.svc.cluster.local"],
        &["10.42.0.11", "10.42.0.12"],
    )
    .await?;
    assert_eq!(
        short(port, &["db-1.db.default.svc.cluster.local"]).await?,
        ["10.42.0.12"]
    );
    assert_eq!(
        short(port, &["SRV", "_pg._tcp.db.default.svc.cluster.local"]).await?,
        [
            "0 50 5432 db-0.db.default.svc.cluster.local.",
            "0 50 5432 db-1.db.default.svc.cluster.local."
        ]
    );
    // The CNAME, and its target resolved upstream.
    until(
        port,
        &["search.default.svc.cluster.local"],
        &["127.0.0.77", "upstream.test."],
    )
    .await?;

    // NXDOMAIN for what does not exist, NODATA (NOERROR, no answer, the SOA) for a name
    // without records of the type; the 5 s TTL.
    let nx = header(port, &["nothing.default.svc.cluster.local"]).await?;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("AUTHORITY: 1"), "{nx}");
    let nodata = header(port, &["AAAA", "kubernetes.default.svc.cluster.local"]).await?;
    assert!(nodata.contains("status: NOERROR"), "{nodata}");
    assert!(nodata.contains("ANSWER: 0, AUTHORITY: 1"), "{nodata}");
    let ttl = dig(
        port,
        &["kubernetes.default.svc.cluster.local", "+noall", "+answer"],
    )
    .await?;
    assert_eq!(ttl.split_whitespace().nth(1), Some("5"), "{ttl}");

    // Other names are the upstream's, over UDP and TCP.
    assert_eq!(short(port, &["upstream.test"]).await?, ["127.0.0.77"]);
    assert_eq!(
        short(port, &["+tcp", "upstream.test"]).await?,
        ["127.0.0.77"]
    );
    let elsewhere = header(port, &["elsewhere.test"]).await?;
    assert!(
        elsewhere.contains("status: NXDOMAIN") || elsewhere.contains("status: REFUSED"),
        "{elsewhere}"
    );

    // Deleting the headless Service takes its names away.
    cluster.kubectl_ok(&["delete", "service", "db"]).await?;
    poll_until("db gone from DNS", Duration::from_secs(20), || async {
        let h = header(port, &["db.default.svc.cluster.local"]).await?;
        Ok(h.contains("status: NXDOMAIN").then_some(()))
    })
    .await?;
    Ok(())
}

/// Whether `kubectl get KIND -n kube-system kube-dns` finds it.
async fn kube_dns_exists(cluster: &TestCluster, kind: &str) -> Result<bool> {
    let out = cluster
        .kubectl(&["get", kind, "-n", "kube-system", "kube-dns", "-o", "name"])
        .await?;
    if out.status.success() {
        return Ok(true);
    }
    if out.stderr.contains("NotFound") {
        return Ok(false);
    }
    bail!("kubectl get {kind} kube-dns failed: {}", out.stderr)
}

#[tokio::test]
async fn disabling_the_cluster_dns_removes_its_service_but_not_a_coredns_of_ones_own() -> Result<()>
{
    let mut cluster = TestCluster::builder().start().await?;
    let kinds = ["service", "endpoints", "endpointslices.discovery.k8s.io"];
    for kind in kinds {
        assert!(kube_dns_exists(&cluster, kind).await?, "{kind} kube-dns");
    }

    // Restarted with --disable-cluster-dns: nothing is left pointing at a listener that is
    // gone, and the address is free for another Service. (10.43.0.10 is API data here: this
    // cluster has no node, so no kube-proxy programs it, and nothing sends to it.)
    cluster.terminate().await?;
    cluster.add_server_arg("--disable-cluster-dns");
    cluster.restart().await?;
    for kind in kinds {
        assert!(!kube_dns_exists(&cluster, kind).await?, "{kind} kube-dns");
    }
    let taker = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "takes-the-dns-address"},
        "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"}]},
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &taker.to_string())
        .await?;
    cluster
        .kubectl_ok(&["delete", "service", "takes-the-dns-address"])
        .await?;

    // A kube-dns Service of the user's own (a CoreDNS with a selector) survives a restart.
    let own = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"selector": {"k8s-app": "kube-dns"},
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &own.to_string())
        .await?;
    cluster.terminate().await?;
    cluster.restart().await?;
    assert!(kube_dns_exists(&cluster, "service").await?);
    Ok(())
}
