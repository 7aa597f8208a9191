//! Proves Services' endpoints as Kubernetes keeps them, through the real kubectl:
//! EndpointSlices (discovery.k8s.io/v1) are served, printed and validated as Kubernetes does
//! them, and bad Services and slices are refused with 422 naming the field, storing nothing.

use anyhow::Result;
use serde_json::{Value, json};

use crate::harness::TestCluster;

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
    let row = lines.next().unwrap_or_default();
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
