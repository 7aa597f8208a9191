//! What the lab tests (pod network, Services, wasm networking) deploy: nodes of the routed
//! pod network, a Deployment of the http-hello sample with one pod per node, and the Service
//! in front of it.

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
