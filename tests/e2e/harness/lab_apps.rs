//! What the lab tests (pod network, Services, wasm networking) deploy: nodes of the routed
//! pod network, a Deployment of the http-hello sample with one pod per node, and the Service
//! in front of it; and what a node's kube-proxy DNATs to.

use std::collections::BTreeSet;

use serde_json::json;

use super::NodeSpec;

/// A node of the routed pod network with 1 CPU, so that http-hello pods (600m each) go one
/// per node; `--proxy-mode=MODE` when `proxy_mode` is given (else the agent's default).
pub(crate) fn routed_node(name: &str, proxy_mode: Option<&str>) -> NodeSpec {
    let node = NodeSpec::named(name).cpu("1").arg("--pod-network=routed");
    match proxy_mode {
        Some(mode) => node.arg(&format!("--proxy-mode={mode}")),
        None => node,
    }
}

/// A Deployment `app` of 3 http-hello replicas (label `app=APP`, port `http` 8080, a 1 s
/// readiness probe, 600m of CPU each).
pub(crate) fn http_hello_deployment(app: &str) -> String {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "containers": [{
                        "name": "http-hello",
                        "image": "wasmkube.local/samples/http-hello:v1",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "http"},
                            "periodSeconds": 1,
                        },
                        "resources": {"requests": {"cpu": "600m", "memory": "16Mi"}},
                    }],
                },
            },
        },
    })
    .to_string()
}

/// A ClusterIP Service `app` selecting `app=APP`: port 80 to the pods' port named `http`.
pub(crate) fn http_service(app: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    })
    .to_string()
}

/// The `ip:port` targets a node's kube-proxy DNATs to, from the text of `nft list table ip
/// wasmkube`: `dnat to IP:PORT` (the endpoint chains of Services with session affinity) and
/// `dnat ip to numgen random mod N map { 0 : IP . PORT, ... }` (the service chain of a
/// Service without).
pub(crate) fn dnat_targets(table: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in table.match_indices("dnat ") {
        let rest = &table[i + "dnat ".len()..];
        if let Some(rest) = rest.strip_prefix("to ") {
            out.extend(rest.split_whitespace().next().map(str::to_string));
        } else if let Some(rest) = rest.strip_prefix("ip to numgen ") {
            let map = rest
                .split_once('{')
                .and_then(|(_, map)| map.split_once('}'))
                .map_or("", |(map, _)| map);
            for entry in map.split(',') {
                if let Some((_, target)) = entry.split_once(':')
                    && let Some((ip, port)) = target.split_once(" . ")
                {
                    out.insert(format!("{}:{}", ip.trim(), port.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn dnat_targets_reads_both_forms() {
    let table = "chain endpoint-X {\n\t\tip saddr 10.42.1.5 jump mark-for-masquerade\n\t\tmeta l4proto tcp dnat to 10.42.1.5:8080\n\t}\n\tchain service-Y {\n\t\tmeta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.42.2.7 . 8080, 1 : 10.42.0.3 . 53 }\n\t}\n";
    assert_eq!(
        dnat_targets(table).into_iter().collect::<Vec<_>>(),
        ["10.42.0.3:53", "10.42.1.5:8080", "10.42.2.7:8080"]
    );
}
