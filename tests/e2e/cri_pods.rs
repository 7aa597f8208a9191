//! Linux container pods through CRI (issue 12): a private containerd in a lab host
//! (`harness::containerd`), a `wasmkube server` whose embedded agent is started with
//! `--container-runtime-endpoint` at it, the real kubectl.
//!
//! The server (its embedded agent) runs in the same lab host as containerd, as a kubelet
//! beside its runtime: it reaches containerd over its unix socket, the CRI streaming server
//! on the host's loopback and the pods at their CNI addresses (the agent's own conflist:
//! `bridge` + `host-local` on a private range, written into containerd's CNI directory);
//! no container address leaves the machine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

use crate::harness::{
    BUSYBOX_IMAGE, Containerd, NetnsLab, NodeSpec, PortForward, TestCluster, container_status,
    cri_tests_opted_out, curl, events_of, free_port, http_service, poll_until, ready_app_pods,
};

/// How long a container pod may take to reach a state (image import, sandbox, runc).
const DEADLINE: Duration = Duration::from_secs(90);

/// A lab host with containerd (busybox and pause imported) and a cluster whose node runs
/// containers there.
struct CriCluster {
    cluster: TestCluster,
    containerd: Containerd,
    _cni: tempfile::TempDir,
    _lab: Arc<NetnsLab>,
}

/// The server (with its node agent) and containerd share lab host 0, as a node's kubelet and
/// runtime share a host: the CRI streaming server's loopback address and the pods' CNI
/// addresses are the agent's too.
async fn cri_cluster() -> Result<CriCluster> {
    cri_cluster_started(None)
        .await?
        .context("a cluster without samples always starts")
}

/// [`cri_cluster`] with the samples imported into the node (`None` when they are not built
/// and the test may skip, see `start_with_samples`).
async fn cri_cluster_with_samples(test: &str) -> Result<Option<CriCluster>> {
    cri_cluster_started(Some(test)).await
}

async fn cri_cluster_started(samples_for: Option<&str>) -> Result<Option<CriCluster>> {
    let lab = Arc::new(NetnsLab::new(1).await?);
    let host = lab.host(0)?;
    let cni = tempfile::tempdir()?;
    // The agent's own conflist (network/cni.rs), its host-local reservations in the test's
    // directory: nothing is left machine-wide when a test dies.
    let network = wasmkube_agent::network::cni::CniNetwork {
        name: "wasmkube".to_owned(),
        bridge: "wkcni0".to_owned(),
        subnet: "10.42.1.0".parse()?,
        prefix: 24,
        range_start: "10.42.1.128".parse()?,
        range_end: "10.42.1.254".parse()?,
        gateway: "10.42.1.127".parse()?,
        mtu: None,
        ipam_data_dir: cni.path().join("ipam"),
    };
    wasmkube_agent::network::cni::write_conflist(
        cni.path(),
        wasmkube_agent::network::cni::CONFLIST_FILE,
        &network,
    )?;
    let containerd = Containerd::start(host, cni.path()).await?;
    containerd.import_test_images().await?;
    let endpoint = containerd.endpoint();
    let builder = TestCluster::builder()
        .embedded_agent(
            NodeSpec::named("cri-node").arg(&format!("--container-runtime-endpoint={endpoint}")),
        )
        .in_given_netns_lab(lab.clone());
    let cluster = match samples_for {
        Some(test) => match builder.start_with_samples(test).await? {
            Some(cluster) => cluster,
            None => return Ok(None),
        },
        None => builder.start().await?,
    };
    Ok(Some(CriCluster {
        cluster,
        containerd,
        _cni: cni,
        _lab: lab,
    }))
}

fn busybox_pod(name: &str, script: &str, restart_policy: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}"}},
            "spec": {{"restartPolicy": "{restart_policy}",
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{{"name": "main", "image": "{BUSYBOX_IMAGE}",
                                       "imagePullPolicy": "IfNotPresent",
                                       "command": ["sh", "-c", {script:?}]}}]}}}}"#
    )
}

async fn pod(cluster: &TestCluster, name: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(cluster.client().await?);
    pods.get(name)
        .await
        .with_context(|| format!("getting pod {name}"))
}

/// Polls until the pod's first container status satisfies `check`.
async fn wait_container(
    cluster: &TestCluster,
    name: &str,
    what: &str,
    check: impl Fn(&k8s_openapi::api::core::v1::ContainerStatus) -> bool,
) -> Result<Pod> {
    poll_until(&format!("{name}: {what}"), DEADLINE, || async {
        let p = pod(cluster, name).await?;
        Ok(container_status(&p).filter(|s| check(s)).map(|_| p))
    })
    .await
    .with_context(|| cluster.log_tail(40))
}

/// The sandboxes containerd's CRI plugin holds (`ctr -n k8s.io containers ls` lists
/// sandboxes and containers alike; a sandbox runs the pause image).
async fn cri_containers(containerd: &Containerd) -> Result<Vec<String>> {
    let out = containerd.ctr_ok(&["containers", "ls", "-q"]).await?;
    Ok(out.lines().map(str::to_string).collect())
}

#[tokio::test]
async fn a_busybox_pod_runs_logs_and_is_deleted_without_leftovers() -> Result<()> {
    if cri_tests_opted_out("a_busybox_pod_runs_logs_and_is_deleted_without_leftovers") {
        return Ok(());
    }
    // Bound, not `..`: an unbound field would be dropped here (the lab and the CNI directory).
    let CriCluster {
        cluster,
        containerd,
        _cni,
        _lab,
    } = cri_cluster().await?;

    // The node says what it runs.
    let nodes: Api<Node> = Api::all(cluster.client().await?);
    let node = nodes.get("cri-node").await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get("wasmkube.io/runtime.runc").map(String::as_str) == Some("true"),
        "{labels:?}"
    );
    let handlers: Vec<String> = node
        .status
        .as_ref()
        .and_then(|s| s.runtime_handlers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| h.name)
        .collect();
    ensure!(handlers == ["wasmtime", "runc"], "{handlers:?}");

    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &busybox_pod("hi", "echo hi; sleep 3600", "Always"),
        )
        .await?;
    let running = wait_container(&cluster, "hi", "Running", |s| {
        s.state.as_ref().is_some_and(|st| st.running.is_some())
    })
    .await?;
    let status = running.status.clone().unwrap_or_default();
    ensure!(
        status.pod_ip.as_deref().is_some_and(|ip| ip
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[..3] == [10, 42, 1] && ip.octets()[3] >= 128)),
        "the pod IP comes from the sandbox's CNI (10.42.1.128-254): {:?}",
        status.pod_ip
    );
    let logs = poll_until("kubectl logs hi", DEADLINE, || async {
        let out = cluster.kubectl_ok(&["logs", "hi"]).await?;
        Ok((out == "hi\n").then_some(out))
    })
    .await?;
    assert_eq!(logs, "hi\n");
    let events = events_of(&cluster.client().await?, "hi").await?;
    let reasons: Vec<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
    for reason in ["Pulled", "Created", "Started"] {
        ensure!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
    ensure!(
        !cri_containers(&containerd).await?.is_empty(),
        "containerd holds the pod's sandbox and container"
    );

    cluster
        .kubectl_ok(&["delete", "pod", "hi", "--wait=true", "--timeout=60s"])
        .await?;
    poll_until(
        "no sandbox or container left in containerd",
        DEADLINE,
        || async {
            let left = cri_containers(&containerd).await?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn container_exit_codes_restarts_and_runtime_failures_read_as_the_kubelets() -> Result<()> {
    if cri_tests_opted_out(
        "container_exit_codes_restarts_and_runtime_failures_read_as_the_kubelets",
    ) {
        return Ok(());
    }
    let CriCluster {
        cluster,
        containerd: _containerd,
        _cni,
        _lab,
    } = cri_cluster().await?;

    // Exit code 3, restarted with back-off.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &busybox_pod("crash", "echo bye; exit 3", "Always"),
        )
        .await?;
    let crashed = wait_container(&cluster, "crash", "restarted after exit 3", |s| {
        s.restart_count >= 1
            && s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 3 && t.reason.as_deref() == Some("Error"))
    })
    .await?;
    ensure!(container_status(&crashed).is_some());

    // A command that is not in the image: the runtime's message.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "nocmd"}},
                    "spec": {{"containers": [{{"name": "main", "image": "{BUSYBOX_IMAGE}",
                              "imagePullPolicy": "IfNotPresent",
                              "command": ["/no/such/program"]}}]}}}}"#
            ),
        )
        .await?;
    wait_container(
        &cluster,
        "nocmd",
        "StartError with the runtime's message",
        |s| {
            s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .or(s.state.as_ref().and_then(|st| st.terminated.as_ref()))
                .is_some_and(|t| {
                    t.reason.as_deref() == Some("StartError")
                        && t.message
                            .as_deref()
                            .is_some_and(|m| m.contains("/no/such/program"))
                })
        },
    )
    .await?;

    // An image no registry has: ErrImagePull, then ImagePullBackOff, the runtime's message.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noimage"},
                "spec": {"containers": [{"name": "main",
                          "image": "127.0.0.1:1/wasmkube-test/nothing:1"}]}}"#,
        )
        .await?;
    let seen_err_image_pull = std::sync::atomic::AtomicBool::new(false);
    poll_until(
        "noimage: ErrImagePull then ImagePullBackOff",
        DEADLINE,
        || {
            let seen = &seen_err_image_pull;
            let cluster = &cluster;
            async move {
                let p = pod(cluster, "noimage").await?;
                let waiting = container_status(&p)
                    .and_then(|s| s.state)
                    .and_then(|st| st.waiting);
                let Some(w) = waiting else { return Ok(None) };
                let message = w.message.clone().unwrap_or_default();
                match w.reason.as_deref() {
                    Some("ErrImagePull") => {
                        ensure!(message.starts_with("rpc error: code = "), "{message}");
                        ensure!(message.contains("127.0.0.1:1"), "{message}");
                        seen.store(true, std::sync::atomic::Ordering::SeqCst);
                        Ok(None)
                    }
                    Some("ImagePullBackOff") => {
                        ensure!(
                            seen.load(std::sync::atomic::Ordering::SeqCst),
                            "ImagePullBackOff before any ErrImagePull was seen"
                        );
                        ensure!(
                            message.contains("127.0.0.1:1/wasmkube-test/nothing:1"),
                            "{message}"
                        );
                        Ok(Some(()))
                    }
                    _ => Ok(None),
                }
            }
        },
    )
    .await?;

    // A privileged container is refused with a reason.
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "priv"}},
                    "spec": {{"containers": [{{"name": "main", "image": "{BUSYBOX_IMAGE}",
                              "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
                              "securityContext": {{"privileged": true}}}}]}}}}"#
            ),
        )
        .await?;
    wait_container(&cluster, "priv", "refused as privileged", |s| {
        s.state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .is_some_and(|w| {
                w.reason.as_deref() == Some("CreateContainerConfigError")
                    && w.message
                        .as_deref()
                        .is_some_and(|m| m.contains("privileged"))
            })
    })
    .await?;
    Ok(())
}

/// `kubectl exec` (a command, and stdin with `-i`), `kubectl cp` both ways and `kubectl
/// port-forward` reach a container through the runtime's streaming server.
#[tokio::test]
async fn exec_cp_and_port_forward_reach_a_container() -> Result<()> {
    if cri_tests_opted_out("exec_cp_and_port_forward_reach_a_container") {
        return Ok(());
    }
    let CriCluster {
        cluster,
        containerd: _containerd,
        _cni,
        _lab,
    } = cri_cluster().await?;
    let script = "mkdir -p /www && echo hello-from-httpd > /www/index.html \
                  && exec httpd -f -p 8080 -h /www";
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &busybox_pod("shell", script, "Never"),
        )
        .await?;
    wait_container(&cluster, "shell", "running", |s| {
        s.state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .is_some()
    })
    .await?;

    let hostname = cluster
        .kubectl_ok(&["exec", "shell", "--", "cat", "/etc/hostname"])
        .await?;
    ensure!(hostname.trim() == "shell", "/etc/hostname: {hostname:?}");
    let counted = cluster
        .kubectl_ok_stdin(
            &[
                "exec",
                "-i",
                "shell",
                "--",
                "sh",
                "-c",
                "cat > /tmp/in; wc -c < /tmp/in",
            ],
            "twelve bytes",
        )
        .await?;
    ensure!(
        counted.trim() == "12",
        "stdin reached the command: {counted:?}"
    );
    let failed = cluster
        .kubectl(&["exec", "shell", "--", "sh", "-c", "exit 7"])
        .await?;
    ensure!(
        failed.status.code() == Some(7),
        "kubectl exec exits with the command's code: {failed:?}"
    );

    // kubectl cp runs tar in the container, both ways.
    let local = tempfile::tempdir()?;
    let into = local.path().join("into.txt");
    std::fs::write(&into, "copied in\n")?;
    cluster
        .kubectl_ok(&["cp", &into.to_string_lossy(), "shell:/tmp/into.txt"])
        .await?;
    let inside = cluster
        .kubectl_ok(&["exec", "shell", "--", "cat", "/tmp/into.txt"])
        .await?;
    ensure!(inside == "copied in\n", "{inside:?}");
    let out = local.path().join("out.html");
    cluster
        .kubectl_ok(&["cp", "shell:/www/index.html", &out.to_string_lossy()])
        .await?;
    let copied = std::fs::read_to_string(&out)?;
    ensure!(copied == "hello-from-httpd\n", "{copied:?}");

    // port-forward: the runtime forwards inside the sandbox's network namespace.
    let port = free_port()?;
    let mut forward = PortForward::start(&cluster, &["pod/shell", &format!("{port}:8080")], &[])?;
    forward
        .wait_for(
            "forwarding",
            &format!("Forwarding from 127.0.0.1:{port} -> 8080"),
        )
        .await?;
    let body = curl(port, "/index.html").await?;
    ensure!(body == "hello-from-httpd\n", "{body:?}");
    forward.ensure_running()?;
    Ok(())
}

/// Exec probes run through the runtime (a failing liveness probe restarts the container, a
/// readiness probe gates Ready), configMap / secret / emptyDir volumes appear in the
/// container with their content, and a memory limit kills a hog with OOMKilled.
#[tokio::test]
async fn exec_probes_volumes_and_memory_limits_act_on_containers() -> Result<()> {
    if cri_tests_opted_out("exec_probes_volumes_and_memory_limits_act_on_containers") {
        return Ok(());
    }
    let CriCluster {
        cluster,
        containerd: _containerd,
        _cni,
        _lab,
    } = cri_cluster().await?;
    let manifest = serde_json::json!({
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
             "data": {"greeting": "hello from a configMap"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
             "stringData": {"password": "s3cret"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
             "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "touch /tmp/healthy; echo $(date) >> /scratch/starts; sleep 3600"],
                    "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                                      "periodSeconds": 1, "failureThreshold": 1},
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]},
                                       "periodSeconds": 1},
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/settings"},
                        {"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                        {"name": "scratch", "mountPath": "/scratch"}]}],
                "volumes": [
                    {"name": "settings", "configMap": {"name": "settings"}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                    {"name": "scratch", "emptyDir": {}}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
             "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["tail", "/dev/zero"],
                    "resources": {"limits": {"memory": "24Mi"}}}]}}
        ]
    });
    for item in manifest["items"].as_array().into_iter().flatten() {
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], &item.to_string())
            .await?;
    }
    wait_container(&cluster, "probed", "running", |s| {
        s.state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .is_some()
    })
    .await?;

    // Volumes, read in the container.
    for (path, want) in [
        ("/etc/settings/greeting", "hello from a configMap"),
        ("/etc/creds/password", "s3cret"),
    ] {
        let got = cluster
            .kubectl_ok(&["exec", "probed", "--", "cat", path])
            .await?;
        ensure!(got == want, "{path}: {got:?}");
    }
    let refused = cluster
        .kubectl(&["exec", "probed", "--", "touch", "/etc/creds/new"])
        .await?;
    ensure!(
        !refused.status.success(),
        "a readOnly mount refuses writes: {refused:?}"
    );

    // Readiness through an exec probe: not Ready until the file exists.
    let p = pod(&cluster, "probed").await?;
    ensure!(
        container_status(&p).is_some_and(|s| !s.ready),
        "not ready before /tmp/ready exists"
    );
    cluster
        .kubectl_ok(&["exec", "probed", "--", "touch", "/tmp/ready"])
        .await?;
    wait_container(&cluster, "probed", "ready", |s| s.ready).await?;

    // Liveness: the probe fails once the file is gone, and the container is restarted (the
    // emptyDir keeps what the first instance wrote).
    cluster
        .kubectl_ok(&["exec", "probed", "--", "rm", "/tmp/healthy"])
        .await?;
    wait_container(&cluster, "probed", "restarted by its liveness probe", |s| {
        s.restart_count >= 1
            && s.state
                .as_ref()
                .and_then(|st| st.running.as_ref())
                .is_some()
    })
    .await?;
    let events = events_of(&cluster.client().await?, "probed").await?;
    ensure!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unhealthy")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("Liveness probe failed:"))),
        "an Unhealthy event says why: {:?}",
        events
            .iter()
            .map(|e| (&e.reason, &e.message))
            .collect::<Vec<_>>()
    );
    let starts = cluster
        .kubectl_ok(&["exec", "probed", "--", "cat", "/scratch/starts"])
        .await?;
    ensure!(
        starts.lines().count() >= 2,
        "the emptyDir outlives the restart: {starts:?}"
    );

    // The memory hog is killed by its limit.
    wait_container(&cluster, "hog", "OOMKilled", |s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
    })
    .await?;
    Ok(())
}

/// Mixed: on a routed node, the agent writes the CNI configuration itself (container pods get
/// the upper half of the Node's pod CIDR, wasm pods the lower), and one Service selecting a
/// wasm Deployment and a container Deployment reaches both kinds, from the node and from a
/// container.
#[tokio::test]
async fn one_service_fronts_wasm_and_container_pods() -> Result<()> {
    const TEST: &str = "one_service_fronts_wasm_and_container_pods";
    if cri_tests_opted_out(TEST) {
        return Ok(());
    }
    let lab = Arc::new(NetnsLab::new(1).await?);
    let host = lab.host(0)?;
    // Empty: the agent writes its conflist here once the Node has a pod CIDR.
    let cni = tempfile::tempdir()?;
    let containerd = Containerd::start(host, cni.path()).await?;
    containerd.import_test_images().await?;
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(
            NodeSpec::named("mixed-node")
                .cpu("4")
                .arg("--pod-network=routed")
                .arg(&format!(
                    "--container-runtime-endpoint={}",
                    containerd.endpoint()
                ))
                .arg(&format!("--cni-conf-dir={}", cni.path().display())),
        )
        .in_given_netns_lab(lab.clone())
        .start_with_samples(TEST)
        .await?
    else {
        return Ok(());
    };
    let wasm = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mixed-wasm"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "mixed", "kind": "wasm"}},
            "template": {"metadata": {"labels": {"app": "mixed", "kind": "wasm"}},
                "spec": {"runtimeClassName": "wasmtime", "containers": [{
                    "name": "http-hello", "image": "wasmkube.local/samples/http-hello:v1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                       "periodSeconds": 1}}]}}}
    });
    let container = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mixed-ctr"},
        "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "mixed", "kind": "container"}},
            "template": {"metadata": {"labels": {"app": "mixed", "kind": "container"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "httpd", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "mkdir -p /www && echo hello from a container \
                                > /www/index.html && exec httpd -f -p 8080 -h /www"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}]}}}
    });
    for manifest in [
        wasm.to_string(),
        container.to_string(),
        http_service("mixed"),
    ] {
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], &manifest)
            .await?;
    }
    let pods = ready_app_pods(&cluster, "mixed", 2, DEADLINE)
        .await
        .with_context(|| cluster.log_tail(40))?;

    // The two halves of the Node's pod CIDR.
    let nodes: Api<Node> = Api::all(cluster.client().await?);
    let node = nodes.get("mixed-node").await?;
    let cidr = node
        .spec
        .and_then(|s| s.pod_cidr)
        .context("the node has a pod CIDR")?;
    let (base, prefix) = cidr.split_once('/').context("a CIDR")?;
    let (base, prefix): (std::net::Ipv4Addr, u32) = (base.parse()?, prefix.parse()?);
    let half = u32::from(base) + (1 << (32 - prefix)) / 2;
    for pod in &pods {
        let ip: std::net::Ipv4Addr = pod.ip.parse()?;
        let upper = u32::from(ip) > half;
        ensure!(
            upper == pod.name.starts_with("mixed-ctr"),
            "{} has {ip}: container pods get the upper half of {cidr}, wasm pods the lower",
            pod.name
        );
    }

    // Through the Service, from the node: both kinds answer (kube-proxy picks at random).
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(cluster.client().await?);
    let cluster_ip = services
        .get("mixed")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has a cluster IP")?;
    let url = format!("http://{cluster_ip}/index.html");
    // The route a real host's default route stands for (the lab has none): the service
    // CIDR out of eth0, so that the node's own connections reach kube-proxy's DNAT.
    host.run_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "eth0"])
        .await?;
    let answers = poll_until("both kinds answered through the Service", DEADLINE, || {
        let url = url.clone();
        async move {
            let mut args = vec!["-sS", "--max-time", "10"];
            args.extend(std::iter::repeat_n(url.as_str(), 20));
            let out = host.run_ok("curl", &args).await?;
            let wasm = out.contains("hello from wasm");
            let container = out.contains("hello from a container");
            Ok((wasm && container).then_some(out))
        }
    })
    .await?;
    ensure!(!answers.is_empty());

    // From the container: the Service answers too.
    let ctr = pods
        .iter()
        .find(|p| p.name.starts_with("mixed-ctr"))
        .context("the container pod")?;
    let fetched = cluster
        .kubectl_ok(&["exec", &ctr.name, "--", "wget", "-qO-", &url])
        .await?;
    ensure!(
        fetched.contains("hello from wasm") || fetched.contains("hello from a container"),
        "{fetched:?}"
    );
    drop(containerd);
    Ok(())
}

/// The container runtime killed with SIGKILL: the Node says so (condition and Warning event)
/// and stays Ready, the wasm pod keeps running, the container pod keeps its container (its
/// shim outlives containerd) and answers exec again once containerd is back. Then the agent
/// is killed and restarted: the container pod runs again with exactly one sandbox and one
/// container in the runtime, nothing duplicated or left behind.
#[tokio::test]
async fn a_runtime_outage_and_an_agent_restart_lose_and_duplicate_nothing() -> Result<()> {
    const TEST: &str = "a_runtime_outage_and_an_agent_restart_lose_and_duplicate_nothing";
    if cri_tests_opted_out(TEST) {
        return Ok(());
    }
    let Some(CriCluster {
        mut cluster,
        mut containerd,
        _cni,
        _lab,
    }) = cri_cluster_with_samples(TEST).await?
    else {
        return Ok(());
    };
    let wasm = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "wasm"},
        "spec": {"runtimeClassName": "wasmtime", "containers": [{
            "name": "http-hello", "image": "wasmkube.local/samples/http-hello:v1",
            "ports": [{"containerPort": 8080}]}]}
    });
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &wasm.to_string())
        .await?;
    cluster
        .kubectl_ok_stdin(
            &["apply", "-f", "-"],
            &busybox_pod("sleeper", "sleep 3600", "Always"),
        )
        .await?;
    let running = |s: &k8s_openapi::api::core::v1::ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .is_some()
    };
    wait_container(&cluster, "wasm", "running", running).await?;
    let before = wait_container(&cluster, "sleeper", "running", running).await?;
    let container_id = container_status(&before).and_then(|s| s.container_id.clone());
    ensure!(
        container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "the runtime's container ID, as the kubelet reports it: {container_id:?}"
    );

    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let runtime_condition = |node: &Node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "ContainerRuntimeReady"))
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
    };
    let condition_is = |status: &'static str| {
        let nodes = nodes.clone();
        move || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get("cri-node").await?;
                Ok(runtime_condition(&node)
                    .filter(|(s, _)| s == status)
                    .map(|_| node))
            }
        }
    };
    ensure!(
        runtime_condition(&nodes.get("cri-node").await?).map(|(s, _)| s) == Some("True".into()),
        "the runtime is ready at first"
    );

    containerd.kill9().await?;
    let down = poll_until(
        "ContainerRuntimeReady False",
        DEADLINE,
        condition_is("False"),
    )
    .await?;
    ensure!(
        runtime_condition(&down).is_some_and(|(_, reason)| reason == "ContainerRuntimeDown"),
        "{:?}",
        runtime_condition(&down)
    );
    ensure!(
        crate::harness::node_is_ready(&down),
        "the node stays Ready: it still runs wasm pods"
    );
    let events = events_of(&client, "cri-node").await?;
    ensure!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ContainerRuntimeUnhealthy")),
        "a Warning event on the node: {:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    for name in ["wasm", "sleeper"] {
        let p = pod(&cluster, name).await?;
        ensure!(
            container_status(&p).is_some_and(|s| running(&s) && s.restart_count == 0),
            "{name} keeps running while containerd is down: {:?}",
            container_status(&p)
        );
    }

    containerd.restart().await?;
    poll_until("ContainerRuntimeReady True", DEADLINE, condition_is("True")).await?;
    let after = pod(&cluster, "sleeper").await?;
    ensure!(
        container_status(&after)
            .is_some_and(|s| s.restart_count == 0 && s.container_id == container_id && running(&s)),
        "the same container runs on: {:?}",
        container_status(&after)
    );
    cluster
        .kubectl_ok(&["exec", "sleeper", "--", "true"])
        .await
        .context("exec once containerd is back")?;

    // The agent (embedded in the server) killed and started again. It does not adopt a
    // container pod's running sandbox yet: it removes it and makes a new one (the container
    // is replaced). Either way the runtime must end with exactly the pod's one sandbox and
    // one container, the one its status names.
    cluster.kill9().await?;
    cluster.restart().await?;
    wait_container(&cluster, "wasm", "running after the agent restart", running).await?;
    let held = poll_until(
        "the replaced container, alone with its sandbox in the runtime",
        DEADLINE,
        || async {
            let held = cri_containers(&containerd).await?;
            let p = pod(&cluster, "sleeper").await?;
            let now = container_status(&p)
                .filter(|s| running(s))
                .and_then(|s| s.container_id.clone());
            let replaced = now.as_ref().is_some_and(|id| {
                Some(id) != container_id.as_ref() && held.iter().any(|h| id.ends_with(h.as_str()))
            });
            Ok((replaced && held.len() == 2).then_some(held))
        },
    )
    .await
    .with_context(|| cluster.log_tail(40))?;
    ensure!(held.len() == 2, "{held:?}");
    Ok(())
}
