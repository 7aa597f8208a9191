//! Traffic through a Service while its endpoints change, in a network-namespace lab with the
//! routed pod network and the agents' nftables kube-proxy: a pod whose readiness probe fails
//! stops receiving requests, a deleted pod with a `preStop` hook drains (serving, not ready)
//! without a failed request, and the Service heals after an agent is killed with -9. Every
//! request comes from a client inside the lab's host 0 and stays inside the lab.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    LabHost, TestCluster, dnat_targets, http_service, lab_tests_opted_out, pod_is_ready,
    poll_until, ready_app_pods, routed_node,
};

const DEADLINE: Duration = Duration::from_secs(120);
/// The label every pod of these tests carries and the Service selects.
const APP: &str = "traffic";
const IMAGE: &str = "wasmkube.local/samples/http-hello:v1";
/// How long after a change of endpoints (seen in the API) kube-proxy has to stop sending
/// traffic to the old ones: the acceptance bound of issue 10.
const PROPAGATION: Duration = Duration::from_secs(2);

/// The http-hello container, 600m of CPU, with `extra` merged into it.
fn container(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({
        "name": "http-hello",
        "image": IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": "600m", "memory": "16Mi"}},
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

/// An HTTP responder in `host` on `port` whose answer the test switches: 200 while `healthy`
/// is true, 500 otherwise. It stands for a dependency the pods' readiness probes check
/// (`httpGet.host`), so the test decides when a pod is ready.
async fn switchable_responder(
    host: &LabHost,
    port: u16,
    healthy: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let ip = host.ip();
    let listener = host
        .run_blocking(move || std::net::TcpListener::bind((ip, port)))
        .await??;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let status = if healthy.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = stream.read(&mut request).await;
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }))
}

/// One request of a [`SteadyClient`].
#[derive(Debug, Clone)]
struct Sample {
    /// Since the client started.
    at: Duration,
    ok: bool,
}

/// Requests, one after another, from inside a lab host to `target`, each with its own path
/// `/<tag>-<n>` so that the pods' logs tell who served which; bounded by `max` requests and
/// stopped by [`SteadyClient::stop`].
struct SteadyClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<Sample>>>,
}

impl SteadyClient {
    fn start(host: &LabHost, target: SocketAddr, tag: &'static str, max: usize) -> SteadyClient {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let host = host.clone();
        let task = tokio::spawn(async move {
            host.run_blocking(move || {
                let start = Instant::now();
                let mut samples = Vec::new();
                for n in 0..max {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let ok = get(target, &format!("/{tag}-{n}")).is_ok_and(|body| {
                        body.starts_with("HTTP/1.1 200") && body.contains("hello from wasm")
                    });
                    samples.push(Sample {
                        at: start.elapsed(),
                        ok,
                    });
                    std::thread::sleep(Duration::from_millis(20));
                }
                samples
            })
            .await
        });
        SteadyClient { stop, task }
    }

    async fn stop(self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

/// One `GET path` to `target` over a new connection, with short timeouts; the raw response.
fn get(target: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// `n` requests from `host` to `target`, tagged `tag`; fails unless every one succeeds.
async fn requests(host: &LabHost, target: SocketAddr, tag: &'static str, n: usize) -> Result<()> {
    let results = host
        .run_blocking(move || {
            (0..n)
                .map(|i| get(target, &format!("/{tag}-{i}")))
                .collect::<Vec<_>>()
        })
        .await?;
    for (i, r) in results.into_iter().enumerate() {
        let body = r.with_context(|| format!("request /{tag}-{i}"))?;
        ensure!(
            body.starts_with("HTTP/1.1 200"),
            "request /{tag}-{i}: {body}"
        );
    }
    Ok(())
}

/// How many requests tagged `tag` pod `pod` served (from its log).
async fn served(cluster: &TestCluster, pod: &str, tag: &str) -> Result<usize> {
    let logs = cluster.kubectl_ok(&["logs", pod]).await?;
    Ok(logs.matches(&format!("GET /{tag}-")).count())
}

/// The ClusterIP of the Service, once every host's kube-proxy DNATs to exactly `ips`.
async fn service_target(cluster: &TestCluster, hosts: usize, ips: &[String]) -> Result<SocketAddr> {
    let cluster_ip: Ipv4Addr = cluster
        .kubectl_ok(&["get", "service", APP, "-o", "jsonpath={.spec.clusterIP}"])
        .await?
        .parse()?;
    for i in 0..hosts {
        wait_rules(cluster, i, ips).await?;
    }
    Ok(SocketAddr::new(IpAddr::V4(cluster_ip), 80))
}

/// Waits until host `i`'s nftables DNAT to exactly the pod IPs `ips` on port 8080.
async fn wait_rules(cluster: &TestCluster, i: usize, ips: &[String]) -> Result<()> {
    poll_until(
        &format!("host {i}'s kube-proxy DNAT to exactly {ips:?}"),
        DEADLINE,
        || async {
            let out = cluster
                .host(i)?
                .run("nft", &["list", "table", "ip", "wasmkube"])
                .await?;
            // Only the pods' port: the table also DNATs the cluster's own Services
            // (kubernetes, kube-dns).
            let found: Vec<String> = dnat_targets(&String::from_utf8_lossy(&out.stdout))
                .iter()
                .filter_map(|target| target.strip_suffix(":8080"))
                .map(str::to_string)
                .collect();
            let mut want = ips.to_vec();
            want.sort();
            Ok((found == want).then_some(()))
        },
    )
    .await
}

/// Pod name -> pod IP of the pods labelled `app=APP`, once `n` of them are ready and not
/// being deleted.
async fn ready_pods(cluster: &TestCluster, n: usize) -> Result<Vec<(String, String)>> {
    Ok(ready_app_pods(cluster, APP, n, DEADLINE)
        .await?
        .into_iter()
        .map(|p| (p.name, p.ip))
        .collect())
}

/// The conditions (ready, serving, terminating) of the endpoint with address `ip` in the
/// Service's EndpointSlices, if it is listed.
async fn endpoint_conditions(
    cluster: &TestCluster,
    ip: &str,
) -> Result<Option<(bool, bool, bool)>> {
    let slices: Api<EndpointSlice> = Api::default_namespaced(cluster.client().await?);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={APP}")))
        .await?;
    Ok(list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|e| e.addresses.iter().any(|a| a == ip))
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        }))
}

/// Adds the route a real host's default route stands for: the service CIDR to the network
/// (the lab's switch), so that the node's nftables DNAT sees the packets.
async fn route_services(cluster: &TestCluster, hosts: usize) -> Result<()> {
    for i in 0..hosts {
        cluster
            .host(i)?
            .run_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "eth0"])
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn readiness_and_a_pre_stop_drain_steer_service_traffic() -> Result<()> {
    const TEST: &str = "readiness_and_a_pre_stop_drain_steer_service_traffic";
    if lab_tests_opted_out(TEST) {
        return Ok(());
    }
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(routed_node("traffic-0", Some("nftables")))
        .agent(routed_node("traffic-1", Some("nftables")))
        .in_netns_lab()
        .start_with_samples(TEST)
        .await?
    else {
        return Ok(());
    };
    let client = cluster.host(0)?.clone();
    // Each pod's readiness probe asks its own switchable responder in host 0.
    static NEXT_PORT: AtomicU16 = AtomicU16::new(9101);
    let mut responders = Vec::new();
    let mut healthy = Vec::new();
    for (name, pre_stop) in [("traffic-a", false), ("traffic-b", true)] {
        let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let flag = Arc::new(AtomicBool::new(true));
        responders.push(switchable_responder(&client, port, flag.clone()).await?);
        healthy.push(flag);
        let mut extra = json!({
            "readinessProbe": {
                "httpGet": {"host": client.ip().to_string(), "port": port, "path": "/healthz"},
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
        });
        if pre_stop {
            extra["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 8}}});
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": APP}},
            "spec": {
                "runtimeClassName": "wasmtime",
                "terminationGracePeriodSeconds": 30,
                "containers": [container(extra)],
            },
        });
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], &pod.to_string())
            .await?;
    }
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &http_service(APP))
        .await?;
    route_services(&cluster, 2).await?;
    let pods = ready_pods(&cluster, 2).await?;
    let ip_of = |name: &str| -> Result<String> {
        pods.iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| ip.clone())
            .with_context(|| format!("no ready pod {name}: {pods:?}"))
    };
    let (ip_a, ip_b) = (ip_of("traffic-a")?, ip_of("traffic-b")?);
    let target = service_target(&cluster, 2, &[ip_a.clone(), ip_b.clone()]).await?;

    // Both pods serve the Service.
    requests(&client, target, "both", 40).await?;
    let (a, b) = (
        served(&cluster, "traffic-a", "both").await?,
        served(&cluster, "traffic-b", "both").await?,
    );
    eprintln!("{TEST}: 40 requests through {target}: traffic-a {a}, traffic-b {b}");
    ensure!(a > 0 && b > 0 && a + b == 40, "a {a}, b {b}");

    // traffic-a's readiness fails: it leaves the endpoints, and 2 s after the API says it is
    // not ready it receives no request.
    healthy[0].store(false, Ordering::SeqCst);
    poll_until("traffic-a not ready in its endpoint", DEADLINE, || async {
        Ok(
            (endpoint_conditions(&cluster, &ip_a).await? == Some((false, false, false)))
                .then_some(()),
        )
    })
    .await?;
    tokio::time::sleep(PROPAGATION).await;
    requests(&client, target, "unready", 30).await?;
    let a = served(&cluster, "traffic-a", "unready").await?;
    ensure!(
        a == 0,
        "traffic-a served {a} requests {PROPAGATION:?} after its readiness failed"
    );
    healthy[0].store(true, Ordering::SeqCst);
    wait_rules(&cluster, 0, &[ip_a.clone(), ip_b.clone()]).await?;

    // traffic-b is deleted: while its preStop hook sleeps it stays serving but not ready, so
    // the Service drains it; steady traffic sees no failure through the whole deletion.
    let steady = SteadyClient::start(&client, target, "steady", 5_000);
    cluster
        .kubectl_ok(&["delete", "pod", "traffic-b", "--wait=false"])
        .await?;
    poll_until("traffic-b terminating and serving", DEADLINE, || async {
        Ok(
            (endpoint_conditions(&cluster, &ip_b).await? == Some((false, true, true)))
                .then_some(()),
        )
    })
    .await?;
    let drained_at = Instant::now();
    let pod = cluster
        .kubectl_json(&["get", "pod", "traffic-b", "-o", "json"])
        .await?;
    ensure!(
        pod["status"]["containerStatuses"][0]["ready"] == json!(true),
        "a pod in its preStop hook keeps its readiness: {}",
        pod["status"]
    );
    tokio::time::sleep(PROPAGATION).await;
    requests(&client, target, "draining", 30).await?;
    let a = served(&cluster, "traffic-a", "draining").await?;
    ensure!(
        a == 30,
        "while traffic-b drains, traffic-a serves every request ({a} of 30)"
    );
    let pods_api: Api<Pod> = Api::default_namespaced(cluster.client().await?);
    poll_until("traffic-b gone", DEADLINE, || async {
        Ok(pods_api.get_opt("traffic-b").await?.is_none().then_some(()))
    })
    .await?;
    eprintln!(
        "{TEST}: traffic-b gone {:?} after its endpoint showed it terminating",
        drained_at.elapsed()
    );
    ensure!(
        drained_at.elapsed() >= Duration::from_secs(5),
        "the preStop sleep of 8 s held the pod: gone after {:?}",
        drained_at.elapsed()
    );
    wait_rules(&cluster, 0, std::slice::from_ref(&ip_a)).await?;
    requests(&client, target, "after", 20).await?;
    let samples = steady.stop().await?;
    let failed = samples.iter().filter(|s| !s.ok).count();
    eprintln!(
        "{TEST}: {} steady requests through the deletion, {failed} failed",
        samples.len()
    );
    ensure!(
        failed == 0,
        "requests failed while traffic-b drained: {:?}",
        samples.iter().filter(|s| !s.ok).collect::<Vec<_>>()
    );
    ensure!(
        samples.len() > 10,
        "too few steady requests: {}",
        samples.len()
    );
    for r in responders {
        r.abort();
    }
    Ok(())
}

#[tokio::test]
async fn service_traffic_heals_after_an_agent_is_killed() -> Result<()> {
    const TEST: &str = "service_traffic_heals_after_an_agent_is_killed";
    if lab_tests_opted_out(TEST) {
        return Ok(());
    }
    const NODES: [&str; 3] = ["heal-0", "heal-1", "heal-2"];
    // A node whose lease is 20 s old is NotReady (its pods' Ready turns False, so they leave
    // the endpoints); its pods tolerate being unreachable for 2 s, then they are evicted and
    // replaced on the free node.
    let Some(mut cluster) = TestCluster::builder()
        .embedded_agent(routed_node(NODES[0], Some("nftables")))
        .agent(routed_node(NODES[1], Some("nftables")))
        .agent(routed_node(NODES[2], Some("nftables")))
        .server_arg("--node-monitor-grace-period=20")
        .server_arg("--node-monitor-period=1")
        .server_arg("--default-unreachable-toleration-seconds=2")
        .server_arg("--default-not-ready-toleration-seconds=2")
        .in_netns_lab()
        .start_with_samples(TEST)
        .await?
    else {
        return Ok(());
    };
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "containers": [container(json!({
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "http"},
                            "periodSeconds": 1,
                        },
                    }))],
                },
            },
        },
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &deployment.to_string())
        .await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &http_service(APP))
        .await?;
    route_services(&cluster, 3).await?;
    let pods = ready_pods(&cluster, 2).await?;
    let ips: Vec<String> = pods.iter().map(|(_, ip)| ip.clone()).collect();
    let target = service_target(&cluster, 1, &ips).await?;
    // The agent to kill: one whose node runs a pod (agents 0 and 1 are hosts 1 and 2).
    let pods_api: Api<Pod> = Api::default_namespaced(cluster.client().await?);
    let mut victim = None;
    for (name, _) in &pods {
        let node = pods_api
            .get(name)
            .await?
            .spec
            .and_then(|s| s.node_name)
            .unwrap_or_default();
        if let Some(i) = NODES[1..].iter().position(|n| *n == node) {
            victim = Some((i, node, name.clone()));
        }
    }
    let (victim, victim_node, victim_pod) =
        victim.context("two pods on three nodes: one runs on an agent's node")?;

    let client = cluster.host(0)?.clone();
    requests(&client, target, "before", 20).await?;
    let steady = SteadyClient::start(&client, target, "steady", 20_000);
    let killed_at = Instant::now();
    cluster.kill9_agent(victim).await?;
    eprintln!("{TEST}: killed the agent of {victim_node} (pod {victim_pod})");
    // Healed: the replacement is ready and serves, and requests succeed again.
    let healed = poll_until("a replacement pod ready", Duration::from_secs(180), || {
        let pods_api = pods_api.clone();
        let victim_pod = victim_pod.clone();
        async move {
            let list = pods_api
                .list(&ListParams::default().labels(&format!("app={APP}")))
                .await?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| pod_is_ready(p) && p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.name.clone())
                .filter(|n| *n != victim_pod)
                .collect();
            Ok((ready.len() == 2).then_some(ready))
        }
    })
    .await
    .with_context(|| cluster.logs_tail(40))?;
    let new_ips: Vec<String> = ready_pods(&cluster, 2)
        .await?
        .into_iter()
        .filter(|(n, _)| healed.contains(n))
        .map(|(_, ip)| ip)
        .collect();
    wait_rules(&cluster, 0, &new_ips).await?;
    requests(&client, target, "after", 20).await?;
    let samples = steady.stop().await?;
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok).collect();
    let last_failure = failed.last().map(|s| s.at);
    eprintln!(
        "{TEST}: {} requests after the kill -9, {} failed, the last failure {:?} after the \
         kill; replacement ready and in the rules {:?} after the kill",
        samples.len(),
        failed.len(),
        last_failure,
        killed_at.elapsed()
    );
    // Every request after the last failure succeeded, and there were some.
    let tail = samples.iter().rev().take_while(|s| s.ok).count();
    ensure!(
        tail >= 10,
        "requests did not recover: {tail} successes at the end"
    );
    // The replacement takes its share (20 requests over two endpoints at random: none at all
    // would happen once in a million runs).
    let replacement = healed
        .iter()
        .find(|n| !pods.iter().any(|(p, _)| p == *n))
        .context("a replacement pod")?;
    let share = served(&cluster, replacement, "after").await?;
    ensure!(
        share > 0,
        "the replacement {replacement} served none of 20 requests"
    );
    Ok(())
}
