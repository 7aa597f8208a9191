//! Environment from ConfigMaps and Secrets, and a missing ConfigMap holding a container in
//! `CreateContainerConfigError` until it appears.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::guests;
use crate::harness::{Cluster, container, phase};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_comes_from_configmaps_and_secrets_and_waits_for_a_missing_configmap() {
    let cluster = Cluster::start().await;
    guests::import(&cluster.data_dir(), "wasmkube.test/hello:v1", guests::HELLO);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "configured"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "hello", "image": "wasmkube.test/hello:v1",
                    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}},
                        {"name": "MODE_COPY", "value": "mode=$(CFG_mode)"},
                    ],
                }],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("configured", WAIT, |p| {
            container(p)
                .state
                .and_then(|s| s.waiting)
                .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        })
        .await;
    let message = container(&pod)
        .state
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert_eq!(message, "configmap \"settings\" not found");
    assert_eq!(phase(&pod), "Pending");

    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"mode": "fast"},
    }))
    .expect("configmap");
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    // Retried after the back-off (10 s): the container starts once the ConfigMap exists.
    let pod = cluster
        .wait_pod("configured", WAIT, |p| phase(p) == "Succeeded")
        .await;
    let log = std::fs::read_to_string(cluster.log_file(&pod, "hello", 0)).expect("log");
    for expected in [
        "stdout F CFG_mode=fast",
        "stdout F PASSWORD=s3cret",
        "stdout F MODE_COPY=mode=fast",
    ] {
        assert!(
            log.lines().any(|l| l.ends_with(expected)),
            "missing {expected:?} in {log}"
        );
    }
    assert!(!log.contains("OPTIONAL="), "{log}");
}
