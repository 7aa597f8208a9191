//! wasi:http handler pods: served on the pod IP, probes gating Ready and restarting, graceful
//! deletion. They need `samples/out/http-hello.wasm` (built by `samples/build`); without it
//! they fail naming that command (unless `WASMKUBE_ALLOW_MISSING_SAMPLES=1`).

use std::net::SocketAddr;
use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::guests;
use crate::harness::{Cluster, container, phase};

const WAIT: Duration = Duration::from_secs(60);

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Imports the http-hello sample as `wasmkube.test/http-hello:v1`; `false` only when it is
/// not built and `WASMKUBE_ALLOW_MISSING_SAMPLES=1` lets `test` skip.
fn http_hello(cluster: &Cluster, test: &str) -> bool {
    match guests::sample(test, "http-hello") {
        Some(wasm) => {
            guests::import_wasm(&cluster.data_dir(), "wasmkube.test/http-hello:v1", &wasm);
            true
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_handler_answers_on_its_pod_ip_and_readiness_gates_ready() {
    let cluster = Cluster::start().await;
    if !http_hello(&cluster, "an_http_handler_answers_on_its_pod_ip") {
        return;
    }
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "web", "image": "wasmkube.test/http-hello:v1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
                }],
            },
        }))
        .await;
    let pod = cluster.wait_pod("web", WAIT, |p| container(p).ready).await;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
    let response = http_get(addr, "/greeting").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("hello from wasm"), "{response}");
    assert!(response.contains("/greeting"), "{response}");

    cluster
        .pods()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    cluster.wait_gone("web", Duration::from_secs(20)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens on the pod's port after deletion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_readiness_probe_keeps_the_pod_unready_and_a_failing_liveness_probe_restarts_it()
{
    let cluster = Cluster::start().await;
    if !http_hello(&cluster, "a_failing_readiness_probe_keeps_the_pod_unready") {
        return;
    }
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sick"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "web", "image": "wasmkube.test/http-hello:v1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/status/503", "port": 8080}, "periodSeconds": 1},
                    "livenessProbe": {"httpGet": {"path": "/status/500", "port": "http"}, "periodSeconds": 1, "failureThreshold": 2},
                }],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("sick", WAIT, |p| container(p).restart_count >= 1)
        .await;
    assert_eq!(phase(&pod), "Running");
    assert!(!container(&pod).ready);
    let events = cluster.wait_event("sick", "Killing", WAIT).await;
    let killing = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Killing"))
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    assert_eq!(
        killing,
        "Container web failed liveness probe, will be restarted"
    );
    let unhealthy: Vec<String> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert!(
        unhealthy
            .iter()
            .any(|m| m.starts_with("Liveness probe failed: HTTP probe failed with statuscode: 500")),
        "{unhealthy:?}"
    );
    assert!(
        unhealthy.iter().any(
            |m| m.starts_with("Readiness probe failed: HTTP probe failed with statuscode: 503")
        ),
        "{unhealthy:?}"
    );
}
