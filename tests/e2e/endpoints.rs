//! Proves Services' endpoints as Kubernetes keeps them, through the real kubectl:
//! EndpointSlices (discovery.k8s.io/v1) are served, printed and validated as Kubernetes does
//! them, and bad Services and slices are refused with 422 naming the field, storing nothing;
//! the EndpointSlice and Endpoints controllers list a Service's pods (IPs, named target
//! ports, readiness, node and zone), follow readiness changes and deletions, update slices
//! in place, split more than 100 pods over several slices, leave hand-made slices of
//! selector-less Services alone and go with their Service.
//!
//! The private-range addresses here (hand-made slices in 10.42/16, cluster IPs in and outside
//! 10.43/16) are API data only: these tests' clusters run with a loopback node IP, so their
//! kube-proxy is off (`--proxy-mode auto`) and their pod network is the loopback one (no pod
//! routes); nothing dials an EndpointSlice's addresses, a ClusterIP or a Node's pod CIDR. The
//! tests that send traffic to such addresses (kube_proxy.rs, pod_network.rs) run inside
//! network namespaces the harness makes, with no route out.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::harness::{NodeSpec, TestCluster, poll_until};

/// A hand-made slice of `endpoints` IPv4 addresses and `ports` ports.
fn slice(name: &str, endpoints: usize, ports: usize) -> Value {
    let endpoints: Vec<Value> = (0..endpoints)
        .map(|i| json!({"addresses": [format!("10.42.{}.{}", i / 250, 1 + i % 250)]}))
        .collect();
    let ports: Vec<Value> = (0..ports)
        .map(|i| json!({"name": format!("p{i}"), "port": 8000 + i, "protocol": "TCP"}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "external"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// A ClusterIP Service with `ports` and, optionally, a `clusterIP`.
fn service(name: &str, ports: Value, cluster_ip: Option<&str>) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": ports},
    });
    if let Some(ip) = cluster_ip {
        svc["spec"]["clusterIP"] = json!(ip);
    }
    svc
}

/// `kubectl create -f -` of `object` must fail with a 422 whose message names `field` and
/// says `detail`; afterwards the object does not exist.
async fn refused(cluster: &TestCluster, object: &Value, field: &str, detail: &str) -> Result<()> {
    let out = cluster
        .kubectl_with_stdin(&["create", "-f", "-"], Some(&object.to_string()))
        .await?;
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        !out.status.success(),
        "{kind} {name} was accepted: {}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains(&format!("{kind} \"{name}\" is invalid"))
            && out.stderr.contains(&format!("{field}: "))
            && out.stderr.contains(detail),
        "{kind} {name}: expected a 422 naming {field} ({detail}), got:\n{}",
        out.stderr
    );
    let resource = if kind == "Service" {
        "service"
    } else {
        "endpointslice"
    };
    let get = cluster.kubectl(&["get", resource, name]).await?;
    assert!(
        !get.status.success() && get.stderr.contains("NotFound"),
        "a refused {kind} must not be stored: {}{}",
        get.stdout,
        get.stderr
    );
    Ok(())
}

#[tokio::test]
async fn endpointslices_are_served_printed_and_validated_as_kubernetes_does() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    let resources = cluster.kubectl_ok(&["api-resources"]).await?;
    let row: Vec<&str> = resources
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&"endpointslices"))
        .unwrap_or_default();
    assert_eq!(
        row,
        [
            "endpointslices",
            "discovery.k8s.io/v1",
            "true",
            "EndpointSlice"
        ],
        "{resources}"
    );
    let explained = cluster
        .kubectl_ok(&["explain", "endpointslice.endpoints.conditions.serving"])
        .await?;
    assert!(explained.contains("boolean"), "{explained}");

    // A user's slice, as for a Service without a selector.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &slice("external-1", 4, 2).to_string(),
        )
        .await?;
    let out = cluster.kubectl_ok(&["get", "endpointslices"]).await?;
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        lines.next().unwrap_or_default(),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines.collect();
    let row = rows
        .iter()
        .find(|r| r.first() == Some(&"external-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        row[..6],
        [
            "external-1",
            "IPv4",
            "8000,8001",
            "10.42.0.1,10.42.0.2,10.42.0.3",
            "+",
            "1"
        ],
        "{out}"
    );
    let stored = cluster
        .kubectl_json(&["get", "endpointslice", "external-1"])
        .await?;
    assert_eq!(stored["ports"][0]["protocol"], "TCP");
    // The apiserver keeps the `kubernetes` Service's slice, as its Endpoints.
    let apiserver = rows
        .iter()
        .find(|r| r.first() == Some(&"kubernetes"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        apiserver[..4],
        [
            "kubernetes",
            "IPv4",
            &cluster.port().to_string(),
            "127.0.0.1"
        ],
        "{out}"
    );

    // The API's limits, and the rules of each field.
    refused(
        &cluster,
        &slice("too-many-endpoints", 1001, 1),
        "endpoints",
        "Too many: 1001: must have at most 1000 items",
    )
    .await?;
    refused(
        &cluster,
        &slice("too-many-ports", 1, 101),
        "ports",
        "Too many: 101: must have at most 100 items",
    )
    .await?;
    let mut bad_type = slice("bad-type", 1, 1);
    bad_type["addressType"] = json!("IP");
    refused(
        &cluster,
        &bad_type,
        "addressType",
        "Unsupported value: \"IP\"",
    )
    .await?;
    let mut bad_address = slice("bad-address", 1, 1);
    bad_address["endpoints"][0]["addresses"] = json!(["fd00::1"]);
    refused(
        &cluster,
        &bad_address,
        "endpoints[0].addresses[0]",
        "must be a valid IPv4 address",
    )
    .await?;
    let mut twice = slice("port-name-twice", 1, 2);
    twice["ports"][1]["name"] = json!("p0");
    refused(&cluster, &twice, "ports[1].name", "Duplicate value: \"p0\"").await?;
    let mut immutable = cluster
        .kubectl_json(&["get", "endpointslice", "external-1"])
        .await?;
    immutable["addressType"] = json!("IPv6");
    let out = cluster
        .kubectl_with_stdin(&["replace", "-f", "-"], Some(&immutable.to_string()))
        .await?;
    assert!(
        out.stderr
            .contains("addressType: Invalid value: \"IPv6\": field is immutable"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn bad_services_are_refused_with_the_field_and_leave_nothing_behind() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    refused(
        &cluster,
        &service("port-range", json!([{"port": 70000}]), Some("10.43.7.7")),
        "spec.ports[0].port",
        "Invalid value: 70000: must be between 1 and 65535, inclusive",
    )
    .await?;
    refused(
        &cluster,
        &service(
            "port-names",
            json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
            None,
        ),
        "spec.ports[1].name",
        "Duplicate value: \"http\"",
    )
    .await?;
    refused(
        &cluster,
        &service(
            "outside",
            json!([{"port": 80}]),
            Some("10.96.0.10"),
        ),
        "spec.clusterIPs",
        "the provided IP (10.96.0.10) is not in the valid range. The range of valid IPs is 10.43.0.0/16",
    )
    .await?;

    // The address the refused `port-range` asked for was not allocated: another may take it.
    let inside = service("inside", json!([{"port": 80}]), Some("10.43.7.7"));
    cluster
        .kubectl_ok_stdin(&["create", "-f", "-"], &inside.to_string())
        .await?;
    let mut moved = cluster.kubectl_json(&["get", "service", "inside"]).await?;
    moved["spec"]["clusterIP"] = json!("10.43.7.8");
    let out = cluster
        .kubectl_with_stdin(&["replace", "-f", "-"], Some(&moved.to_string()))
        .await?;
    assert!(
        out.stderr.contains(
            "spec.clusterIPs[0]: Invalid value: []string{\"10.43.7.8\"}: may not change once set"
        ),
        "{}",
        out.stderr
    );
    let kept = cluster.kubectl_json(&["get", "service", "inside"]).await?;
    assert_eq!(kept["spec"]["clusterIP"], "10.43.7.7");
    Ok(())
}

/// How long pods get to start and endpoints to follow them.
const DEADLINE: Duration = Duration::from_secs(120);

/// One endpoint of a Service's slices, as a test looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeenEndpoint {
    slice: String,
    ip: String,
    pod: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: String,
    zone: String,
}

/// The EndpointSlices of `service` (by their `kubernetes.io/service-name` label).
async fn slices_of(cluster: &TestCluster, service: &str) -> Result<Vec<Value>> {
    let list = cluster
        .kubectl_json(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
        ])
        .await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Every endpoint of `service`'s slices.
async fn endpoints_of(cluster: &TestCluster, service: &str) -> Result<Vec<SeenEndpoint>> {
    let mut out = Vec::new();
    for slice in slices_of(cluster, service).await? {
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let flag = |k: &str| e["conditions"][k].as_bool() == Some(true);
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            out.push(SeenEndpoint {
                slice: text(&slice["metadata"]["name"]),
                ip: text(&e["addresses"][0]),
                pod: text(&e["targetRef"]["name"]),
                ready: flag("ready"),
                serving: flag("serving"),
                terminating: flag("terminating"),
                node: text(&e["nodeName"]),
                zone: text(&e["zone"]),
            });
        }
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(out)
}

/// `(ready IPs, not-ready IPs, ports)` of the legacy Endpoints `name`, or `None`.
async fn legacy_endpoints(
    cluster: &TestCluster,
    name: &str,
) -> Result<Option<(Vec<String>, Vec<String>, Vec<i64>)>> {
    let out = cluster
        .kubectl(&["get", "endpoints", name, "-o", "json"])
        .await?;
    if !out.status.success() {
        return Ok(None);
    }
    let ep: Value = serde_json::from_str(&out.stdout)?;
    let (mut ready, mut not_ready, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for subset in ep["subsets"].as_array().into_iter().flatten() {
        let ips = |k: &str| -> Vec<String> {
            subset[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str().map(str::to_string))
                .collect()
        };
        ready.extend(ips("addresses"));
        not_ready.extend(ips("notReadyAddresses"));
        ports.extend(
            subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64()),
        );
    }
    ready.sort();
    not_ready.sort();
    ports.dedup();
    Ok(Some((ready, not_ready, ports)))
}

/// `name -> podIP` of the running pods labelled `app=<app>`.
async fn pod_ips(cluster: &TestCluster, app: &str) -> Result<BTreeMap<String, String>> {
    let list = cluster
        .kubectl_json(&["get", "pods", "-l", &format!("app={app}")])
        .await?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            let ip = p["status"]["podIP"].as_str()?;
            Some((p["metadata"]["name"].as_str()?.to_string(), ip.to_string()))
        })
        .collect())
}

fn web_service(name: &str, target_port: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "web"}},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": target_port}]},
    })
}

#[tokio::test]
async fn a_services_endpoints_follow_its_pods_readiness_and_deletion() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agent(NodeSpec::named("node-a").label("topology.kubernetes.io/zone", "zone-1"))
        .start_with_samples("a_services_endpoints_follow_its_pods_readiness_and_deletion")
        .await?
    else {
        return Ok(());
    };
    cluster
        .apply_json(&cluster.sample_workload("Deployment", "web", "http-hello", 3)?)
        .await?;
    cluster
        .apply_json(&web_service("web", json!("http")))
        .await?;

    // The slice lists the three pods, ready, on port 8080 (the named targetPort).
    let ips = poll_until("three web pods with IPs", DEADLINE, || async {
        let ips = pod_ips(&cluster, "web").await?;
        Ok((ips.len() == 3).then_some(ips))
    })
    .await?;
    let seen = poll_until("the slice lists the three ready pods", DEADLINE, || async {
        let seen = endpoints_of(&cluster, "web").await?;
        let all_ready = seen.len() == 3 && seen.iter().all(|e| e.ready && e.serving);
        Ok(all_ready.then_some(seen))
    })
    .await?;
    for e in &seen {
        assert_eq!(ips.get(&e.pod), Some(&e.ip), "{seen:#?}");
        assert_eq!((e.node.as_str(), e.zone.as_str()), ("node-a", "zone-1"));
        assert!(!e.terminating);
    }
    let slices = slices_of(&cluster, "web").await?;
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    let name = slice["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = slice["metadata"]["uid"].clone();
    assert!(name.starts_with("web-"), "{name}");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        slice["metadata"]["labels"],
        json!({"team": "web", "kubernetes.io/service-name": "web",
               "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["controller"], true);
    let want: Vec<String> = ips
        .values()
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    poll_until("the Endpoints list the three pods", DEADLINE, || async {
        let ep = legacy_endpoints(&cluster, "web").await?;
        Ok(ep.filter(|(ready, not_ready, ports)| {
            *ready == want && not_ready.is_empty() && *ports == [8080]
        }))
    })
    .await?;
    let table = cluster
        .kubectl_ok(&["get", "endpointslices", &name])
        .await?;
    assert!(table.contains("IPv4") && table.contains("8080"), "{table}");

    // Readiness: a pod whose probe asks a second pod ("switch") is ready while the switch
    // runs, and not ready once it is gone.
    let mut switch = cluster.sample_pod("http-hello")?;
    switch["metadata"] = json!({"name": "switch", "labels": {"role": "switch"}});
    cluster.apply_json(&switch).await?;
    let switch_ip = cluster
        .wait_pod("switch", "an IP", DEADLINE, |p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
        })
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .unwrap_or_default();
    let mut flaky = cluster.sample_pod("http-hello")?;
    flaky["metadata"] = json!({"name": "flaky", "labels": {"app": "web"}});
    let probe = &mut flaky["spec"]["containers"][0]["readinessProbe"];
    probe["httpGet"] = json!({"host": switch_ip, "port": 8080, "path": "/ready"});
    probe["periodSeconds"] = json!(1);
    probe["failureThreshold"] = json!(1);
    cluster.apply_json(&flaky).await?;
    let flaky_endpoint = |ready: bool| {
        let cluster = &cluster;
        async move {
            let seen = endpoints_of(cluster, "web").await?;
            Ok(seen
                .into_iter()
                .find(|e| e.pod == "flaky" && e.ready == ready && e.serving == ready))
        }
    };
    poll_until("flaky is a ready endpoint", DEADLINE, || {
        flaky_endpoint(true)
    })
    .await?;
    cluster.kubectl_ok(&["delete", "pod", "switch"]).await?;
    let flaky_seen = poll_until("flaky is a not-ready endpoint", DEADLINE, || {
        flaky_endpoint(false)
    })
    .await?;
    assert!(!flaky_seen.terminating);
    poll_until(
        "the Endpoints list flaky as not ready",
        DEADLINE,
        || async {
            let ep = legacy_endpoints(&cluster, "web").await?;
            Ok(ep.filter(|(ready, not_ready, _)| {
                *not_ready == [flaky_seen.ip.clone()] && *ready == want
            }))
        },
    )
    .await?;

    // Deleting a pod removes it; the Deployment's replacement comes in.
    let (victim, victim_ip) = ips
        .iter()
        .next()
        .map(|(n, i)| (n.clone(), i.clone()))
        .unwrap_or_default();
    cluster.kubectl_ok(&["delete", "pod", &victim]).await?;
    let after = poll_until(
        "the deleted pod leaves, its replacement is ready",
        DEADLINE,
        || async {
            let seen = endpoints_of(&cluster, "web").await?;
            let web_ready = seen.iter().filter(|e| e.pod != "flaky" && e.ready).count();
            let gone = seen.iter().all(|e| e.pod != victim);
            Ok((gone && web_ready == 3).then_some(seen))
        },
    )
    .await?;
    assert!(
        after.iter().all(|e| e.pod != victim),
        "the deleted pod is no endpoint: {after:#?} ({victim_ip})"
    );
    // All along the slice was updated in place.
    let slices = slices_of(&cluster, "web").await?;
    assert_eq!(slices.len(), 1, "{slices:#?}");
    assert_eq!(slices[0]["metadata"]["name"], json!(name));
    assert_eq!(slices[0]["metadata"]["uid"], uid);

    // Deleting the Service deletes its slices and its Endpoints.
    cluster.kubectl_ok(&["delete", "service", "web"]).await?;
    poll_until(
        "the Service's slices and Endpoints are gone",
        DEADLINE,
        || async {
            let slices = slices_of(&cluster, "web").await?;
            let ep = legacy_endpoints(&cluster, "web").await?;
            Ok((slices.is_empty() && ep.is_none()).then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn many_pods_fill_several_slices_and_hand_made_slices_are_left_alone() -> Result<()> {
    const PODS: usize = 120;
    let Some(cluster) = TestCluster::builder()
        .agent(NodeSpec::named("node-a").max_pods(200))
        .start_with_samples("many_pods_fill_several_slices_and_hand_made_slices_are_left_alone")
        .await?
    else {
        return Ok(());
    };
    // A Service without a selector and the slice its user keeps for it.
    let external = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
        "spec": {"ports": [{"port": 5432}]},
    });
    cluster.apply_json(&external).await?;
    cluster.apply_json(&slice("external-1", 2, 1)).await?;
    let hand_made = cluster
        .kubectl_json(&["get", "endpointslice", "external-1"])
        .await?;

    let mut counters = cluster.sample_workload("Deployment", "counters", "counter", PODS as i32)?;
    counters["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .map(|c| c.remove("resources"));
    cluster.apply_json(&counters).await?;
    cluster
        .apply_json(&web_service("counters", json!(9000)))
        .await?;

    let seen = poll_until("every counter pod is an endpoint", DEADLINE * 2, || async {
        let seen = endpoints_of(&cluster, "counters").await?;
        let ready = seen.iter().filter(|e| e.ready).count();
        Ok((ready == PODS).then_some(seen))
    })
    .await?;
    let mut per_slice: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &seen {
        *per_slice.entry(e.slice.as_str()).or_default() += 1;
    }
    assert!(per_slice.len() >= 2, "{per_slice:?}");
    assert!(per_slice.values().all(|n| *n <= 100), "{per_slice:?}");
    let distinct: std::collections::BTreeSet<&str> = seen.iter().map(|e| e.ip.as_str()).collect();
    assert_eq!(distinct.len(), PODS);
    poll_until("the Endpoints list every counter pod", DEADLINE, || async {
        let ep = legacy_endpoints(&cluster, "counters").await?;
        Ok(ep.filter(|(ready, _, ports)| ready.len() == PODS && *ports == [9000]))
    })
    .await?;

    // The controllers ran all along; the user's slice is as they wrote it, and nothing
    // was made for their Service.
    let now = cluster
        .kubectl_json(&["get", "endpointslice", "external-1"])
        .await?;
    assert_eq!(
        now["metadata"]["resourceVersion"],
        hand_made["metadata"]["resourceVersion"]
    );
    assert_eq!(slices_of(&cluster, "external").await?.len(), 1);
    assert_eq!(legacy_endpoints(&cluster, "external").await?, None);
    Ok(())
}
