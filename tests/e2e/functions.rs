//! Serverless functions with Knative Serving's API (`serving.knative.dev/v1`): a Knative
//! Service from Knative's docs (image swapped for the http-hello sample) applied with
//! kubectl, its Revisions, Deployments and pods with Knative's labels, its URL answered by
//! the server's function ingress (curl with the Host header), scale to zero and activation,
//! traffic split by percent and by tag, and Knative's validation as 422s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::{NodeSpec, POLL_INTERVAL, TestCluster, free_port};

const IMAGE: &str = "wasmkube.local/samples/http-hello:v1";
const DOMAIN: &str = "127.0.0.1.sslip.io";

/// Knative's hello-world Service from its docs, the image swapped for the sample.
fn hello_manifest(name: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\n\
         kind: Service\n\
         metadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  template:\n    spec:\n      containers:\n        - image: {IMAGE}\n          ports:\n            - containerPort: 8080\n          env:\n            - name: TARGET\n              value: \"World\"\n"
    )
}

/// A cluster with an embedded node, the samples imported, and the function ingress on a
/// loopback port (returned); `args` go to the server.
async fn cluster(test: &str, args: &[&str]) -> Result<Option<(TestCluster, u16)>> {
    let port = free_port()?;
    let mut builder = TestCluster::builder()
        .embedded_agent(NodeSpec::named("fn-node"))
        .server_arg(format!("--function-ingress-listen=127.0.0.1:{port}"));
    for arg in args {
        builder = builder.server_arg(*arg);
    }
    Ok(builder
        .start_with_samples(test)
        .await?
        .map(|cluster| (cluster, port)))
}

/// `curl -H 'Host: HOST' http://127.0.0.1:PORT/PATH`: (status, body).
async fn curl(port: u16, host: &str, path: &str) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-H",
            &format!("Host: {host}"),
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .await
        .context("running curl (apt-get install curl)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().with_context(|| {
        format!(
            "curl's status {code:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code, body.to_string()))
}

/// `kubectl get ksvc NAME -o json` until its Ready condition is True.
async fn wait_ksvc_ready(cluster: &TestCluster, name: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let svc = cluster.kubectl_json(&["get", "ksvc", name]).await?;
        let ready = svc["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let observed = svc["status"]["observedGeneration"] == svc["metadata"]["generation"];
        if ready && observed {
            return Ok(svc);
        }
        if Instant::now() > deadline {
            bail!("ksvc {name} not ready: {}", svc["status"]);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn knative_api(client: kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("serving.knative.dev", "v1", kind);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    Api::namespaced_with(
        client,
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// Creates `object` as a Knative Service and expects a 422 naming `field`.
async fn expect_invalid(cluster: &TestCluster, object: Value, field: &str) -> Result<()> {
    let api = knative_api(cluster.client().await?, "Service");
    let object: DynamicObject = serde_json::from_value(object)?;
    match api.create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 422, "expected 422, got {status:?}");
            ensure!(
                status.message.contains(field),
                "the message names {field}: {}",
                status.message
            );
            Ok(())
        }
        other => bail!("expected a 422 naming {field}, got {other:?}"),
    }
}

fn bad_service(annotations: Value, traffic: Option<Value>) -> Value {
    let mut svc = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"image": IMAGE}]},
        }},
    });
    if let Some(traffic) = traffic {
        svc["spec"]["traffic"] = traffic;
    }
    svc
}

#[tokio::test]
async fn a_knative_hello_world_service_is_ready_with_its_url_and_answers_through_the_ingress()
-> Result<()> {
    let Some((cluster, port)) = cluster(
        "a_knative_hello_world_service_is_ready_with_its_url_and_answers_through_the_ingress",
        &[],
    )
    .await?
    else {
        return Ok(());
    };
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &hello_manifest("hello"))
        .await?;
    let svc = wait_ksvc_ready(&cluster, "hello").await?;
    let url = format!("http://hello.default.{DOMAIN}");
    assert_eq!(svc["status"]["url"], url);
    assert_eq!(svc["status"]["latestReadyRevisionName"], "hello-00001");
    assert_eq!(
        svc["status"]["traffic"],
        json!([{"latestRevision": true, "percent": 100, "revisionName": "hello-00001"}])
    );

    // kubectl get ksvc prints Knative's columns.
    let table = cluster.kubectl_ok(&["get", "ksvc"]).await?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "URL",
            "LATESTCREATED",
            "LATESTREADY",
            "READY",
            "REASON"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        row,
        ["hello", url.as_str(), "hello-00001", "hello-00001", "True"]
    );
    let revisions = cluster.kubectl_ok(&["get", "rev", "-o", "name"]).await?;
    assert_eq!(revisions.trim(), "revision.serving.knative.dev/hello-00001");

    // Knative's labels on the Revision's Deployment and pods, selectable as on Knative.
    let pods = cluster
        .kubectl_json(&["get", "pods", "-l", "serving.knative.dev/service=hello"])
        .await?;
    let pod = &pods["items"][0];
    for (label, value) in [
        ("serving.knative.dev/service", "hello"),
        ("serving.knative.dev/configuration", "hello"),
        ("serving.knative.dev/revision", "hello-00001"),
    ] {
        assert_eq!(pod["metadata"]["labels"][label], value, "{label}");
    }
    let deployments = cluster
        .kubectl_ok(&[
            "get",
            "deploy",
            "-l",
            "serving.knative.dev/revision=hello-00001",
            "-o",
            "name",
        ])
        .await?;
    assert_eq!(deployments.trim(), "deployment.apps/hello-00001-deployment");

    // curl with the Host header: the function answers; an unknown host is 404.
    let (code, body) = curl(port, &format!("hello.default.{DOMAIN}"), "/knative").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from wasm"), "{body}");
    assert!(body.contains("path: /knative"), "{body}");
    let (code, _) = curl(port, &format!("nobody.default.{DOMAIN}"), "/").await?;
    assert_eq!(code, 404);

    // Bad input: 422 naming the field.
    expect_invalid(
        &cluster,
        bad_service(
            json!({"autoscaling.knative.dev/min-scale": "5", "autoscaling.knative.dev/max-scale": "3"}),
            None,
        ),
        "spec.template.metadata.annotations[autoscaling.knative.dev/max-scale]",
    )
    .await?;
    expect_invalid(
        &cluster,
        bad_service(json!({"autoscaling.knative.dev/target": "-1"}), None),
        "spec.template.metadata.annotations[autoscaling.knative.dev/target]",
    )
    .await?;
    expect_invalid(
        &cluster,
        bad_service(
            json!({}),
            Some(json!([
                {"latestRevision": true, "percent": 70},
                {"revisionName": "hello-00001", "percent": 20},
            ])),
        ),
        "spec.traffic: Invalid value: 90: Traffic targets sum to 90, want 100",
    )
    .await?;

    // Deleting the Service takes its Configuration, Route, Revisions and pods.
    cluster.kubectl_ok(&["delete", "ksvc", "hello"]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = cluster
            .kubectl_ok(&[
                "get",
                "rev,deploy,pods",
                "-l",
                "serving.knative.dev/service=hello",
                "-o",
                "name",
            ])
            .await?;
        if left.trim().is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "left after deleting the ksvc: {left}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

/// The Deployment's `spec.replicas` and the revision's running pods.
async fn replicas_and_pods(cluster: &TestCluster, revision: &str) -> Result<(i64, usize)> {
    let d = cluster
        .kubectl_json(&["get", "deploy", &format!("{revision}-deployment")])
        .await?;
    let pods = cluster
        .kubectl_json(&[
            "get",
            "pods",
            "-l",
            &format!("serving.knative.dev/revision={revision}"),
        ])
        .await?;
    let count = pods["items"].as_array().map_or(0, Vec::len);
    Ok((d["spec"]["replicas"].as_i64().unwrap_or(-1), count))
}

#[tokio::test]
async fn a_function_scales_to_zero_and_the_next_requests_all_answer() -> Result<()> {
    let Some((cluster, port)) = cluster(
        "a_function_scales_to_zero_and_the_next_requests_all_answer",
        &[
            "--function-scale-to-zero-grace-ms=500",
            "--function-autoscaler-tick-ms=250",
        ],
    )
    .await?
    else {
        return Ok(());
    };
    let manifest = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "idle"},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/window": "6s"}},
            "spec": {"containers": [{"image": IMAGE, "ports": [{"containerPort": 8080}]}]},
        }},
    });
    cluster.apply_json(&manifest).await?;
    wait_ksvc_ready(&cluster, "idle").await?;
    let host = format!("idle.default.{DOMAIN}");
    let (code, body) = curl(port, &host, "/warm").await?;
    assert_eq!(code, 200, "{body}");

    // No requests for the stable window (6 s) and the grace period: zero pods.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (replicas, pods) = replicas_and_pods(&cluster, "idle-00001").await?;
        if replicas == 0 && pods == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not at zero: replicas {replicas}, pods {pods}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let rev = cluster.kubectl_json(&["get", "rev", "idle-00001"]).await?;
    let active = rev["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Active")
        .cloned()
        .unwrap_or_default();
    assert_eq!(active["status"], "False", "{rev}");

    // The next request is held, the function activated, and it answers.
    let started = Instant::now();
    let (code, body) = curl(port, &host, "/cold").await?;
    let cold = started.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("path: /cold"), "{body}");
    eprintln!("the first request to the function at zero answered in {cold:?}");

    // Back at zero, 50 concurrent requests: every one answers 200.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (replicas, pods) = replicas_and_pods(&cluster, "idle-00001").await?;
        if replicas == 0 && pods == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not at zero again: {replicas}/{pods}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let requests = (0..50).map(|i| {
        let host = host.clone();
        async move { curl(port, &host, &format!("/burst/{i}")).await }
    });
    let answers = futures::future::join_all(requests).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let (code, body) = answer?;
        assert_eq!(code, 200, "request {i}: {body}");
        assert!(body.contains(&format!("path: /burst/{i}")), "{body}");
    }
    Ok(())
}

/// How many lines of the revision's pods' logs contain `needle`.
async fn logged(cluster: &TestCluster, revision: &str, needle: &str) -> Result<usize> {
    let logs = cluster
        .kubectl_ok(&[
            "logs",
            "-l",
            &format!("serving.knative.dev/revision={revision}"),
            "--tail=-1",
        ])
        .await?;
    Ok(logs.lines().filter(|l| l.contains(needle)).count())
}

#[tokio::test]
async fn traffic_splits_eighty_twenty_between_two_revisions_and_tags_name_one() -> Result<()> {
    let Some((cluster, port)) = cluster(
        "traffic_splits_eighty_twenty_between_two_revisions_and_tags_name_one",
        &[],
    )
    .await?
    else {
        return Ok(());
    };
    let mut manifest = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "split"},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
            "spec": {"containers": [{"image": IMAGE, "ports": [{"containerPort": 8080}],
                "env": [{"name": "VERSION", "value": "1"}]}]},
        }},
    });
    cluster.apply_json(&manifest).await?;
    wait_ksvc_ready(&cluster, "split").await?;
    // A new template is a new Revision; 80 % to it, 20 % (tagged `old`) to the first.
    manifest["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("2");
    manifest["spec"]["traffic"] = json!([
        {"latestRevision": true, "percent": 80},
        {"revisionName": "split-00001", "percent": 20, "tag": "old"},
    ]);
    cluster.apply_json(&manifest).await?;
    let svc = wait_ksvc_ready(&cluster, "split").await?;
    ensure!(
        svc["status"]["latestReadyRevisionName"] == "split-00002",
        "{}",
        svc["status"]
    );
    assert_eq!(
        svc["status"]["traffic"],
        json!([
            {"latestRevision": true, "percent": 80, "revisionName": "split-00002"},
            {"latestRevision": false, "percent": 20, "revisionName": "split-00001", "tag": "old",
             "url": format!("http://old-split.default.{DOMAIN}")},
        ])
    );

    let host = format!("split.default.{DOMAIN}");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            "-H",
        ])
        .arg(format!("Host: {host}"))
        .args((0..1000).map(|_| format!("http://127.0.0.1:{port}/split")))
        .output()
        .await?;
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = codes.lines().filter(|c| *c == "200").count();
    assert_eq!(ok, 1000, "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (new, old) = loop {
        let new = logged(&cluster, "split-00002", "GET /split").await?;
        let old = logged(&cluster, "split-00001", "GET /split").await?;
        if new + old >= 1000 || Instant::now() > deadline {
            break (new, old);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    // The pods' logs are the count (the sample logs each request); a line the agent's log
    // capture loses must not decide the split, so a handful may be missing.
    let logged_total = new + old;
    assert!(
        (995..=1000).contains(&logged_total),
        "every request logged once: {new} + {old}"
    );
    let share = new as f64 / logged_total as f64;
    assert!(
        (0.75..=0.85).contains(&share),
        "80 % +- 5 % to split-00002: {new} of {logged_total}"
    );

    // The tag's host reaches only the tagged Revision.
    for _ in 0..20 {
        let (code, body) = curl(port, &format!("old-split.default.{DOMAIN}"), "/tagged").await?;
        assert_eq!(code, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged(&cluster, "split-00001", "GET /tagged").await? < 20 {
        ensure!(
            Instant::now() < deadline,
            "the tagged requests were not all logged by split-00001"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert_eq!(logged(&cluster, "split-00002", "GET /tagged").await?, 0);
    Ok(())
}

#[tokio::test]
async fn under_load_a_function_scales_out_to_max_scale_and_back_never_above() -> Result<()> {
    let Some((cluster, port)) = cluster(
        "under_load_a_function_scales_out_to_max_scale_and_back_never_above",
        &["--function-autoscaler-tick-ms=250"],
    )
    .await?
    else {
        return Ok(());
    };
    // 10 requests per second per pod; at most 3 pods; at least 1.
    let manifest = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "ramp"},
        "spec": {"template": {
            "metadata": {"annotations": {
                "autoscaling.knative.dev/metric": "rps",
                "autoscaling.knative.dev/target": "10",
                "autoscaling.knative.dev/min-scale": "1",
                "autoscaling.knative.dev/max-scale": "3",
                "autoscaling.knative.dev/window": "6s",
            }},
            "spec": {"containers": [{"image": IMAGE, "ports": [{"containerPort": 8080}]}]},
        }},
    });
    cluster.apply_json(&manifest).await?;
    wait_ksvc_ready(&cluster, "ramp").await?;
    let host = format!("ramp.default.{DOMAIN}");

    // Load: 8 clients, each one curl after another (hundreds of requests per second).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let stop = stop.clone();
        let host = host.clone();
        load.spawn(async move {
            let mut failures = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let urls: Vec<String> = (0..50)
                    .map(|_| format!("http://127.0.0.1:{port}/load"))
                    .collect();
                let out = Command::new("curl")
                    .args([
                        "-sS",
                        "--max-time",
                        "30",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}\n",
                        "-H",
                    ])
                    .arg(format!("Host: {host}"))
                    .args(&urls)
                    .output()
                    .await;
                if let Ok(out) = out {
                    // The bodies are on stdout too (`-o` names one URL's output): the
                    // status lines are the three-digit ones.
                    failures += String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| l.len() == 3 && l.bytes().all(|b| b.is_ascii_digit()))
                        .filter(|c| *c != "200")
                        .count() as u32;
                }
            }
            failures
        });
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (replicas, pods) = replicas_and_pods(&cluster, "ramp-00001").await?;
        most = most.max(replicas).max(pods as i64);
        ensure!(
            most <= 3,
            "above max-scale: replicas {replicas}, pods {pods}"
        );
        if replicas == 3 && pods == 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "did not scale out to 3 under load: {replicas}/{pods}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    // A few more seconds of load: still never above max-scale.
    let hold = Instant::now() + Duration::from_secs(3);
    while Instant::now() < hold {
        let (replicas, pods) = replicas_and_pods(&cluster, "ramp-00001").await?;
        ensure!(
            replicas <= 3 && pods <= 3,
            "above max-scale: {replicas}/{pods}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failures = 0;
    while let Some(result) = load.join_next().await {
        failures += result?;
    }
    assert_eq!(failures, 0, "requests answered other than 200 under load");

    // The load stopped: back to min-scale once the stable window has passed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (replicas, pods) = replicas_and_pods(&cluster, "ramp-00001").await?;
        ensure!(
            replicas <= 3 && pods <= 3,
            "above max-scale: {replicas}/{pods}"
        );
        if replicas == 1 && pods == 1 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "did not scale back to 1: {replicas}/{pods}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let rev = cluster.kubectl_json(&["get", "rev", "ramp-00001"]).await?;
    assert_eq!(rev["status"]["desiredReplicas"], 1, "{}", rev["status"]);
    Ok(())
}
