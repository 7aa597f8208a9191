//! Wasm pods end to end, as a Kubernetes user sees them: the sample guests (`samples/`)
//! imported into a node agent running as its own `wasmkube agent` process, deployed with the
//! real `kubectl apply`, observed through pod status, events, `kubectl logs` and the pod's own
//! IP. Each test fails, naming `samples/build --oci`, when the sample images are not built.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::harness::{NodeSpec, TestCluster, container_status, poll_until};

/// How long a pod may take to reach a state that needs no more than one start of a guest.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// The pod's phase.
fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The value of condition `type_` of `pod`.
fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[tokio::test]
async fn hello_succeeds_with_exit_code_0_and_kubectl_logs_shows_its_output() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("hello_succeeds_with_exit_code_0_and_kubectl_logs_shows_its_output")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("hello").await?;
    let pod = cluster
        .wait_pod("hello", "phase Succeeded", START_DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(cluster.agent_node_name(0)?.as_str())
    );
    let status = container_status(&pod).context("hello has no container status")?;
    let terminated = status
        .state
        .and_then(|s| s.terminated)
        .context("hello's container is not terminated")?;
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert_eq!(status.restart_count, 0);

    let logs = cluster.kubectl_ok(&["logs", "hello"]).await?;
    for line in [
        "arg[1]=first-arg",
        "arg[2]=second arg",
        "env GREETING=hello from the pod spec",
        "env POD_NAME=hello",
        "env POD_NAMESPACE=default",
    ] {
        assert!(
            logs.lines().any(|l| l == line),
            "`kubectl logs hello` lacks {line:?}:\n{logs}"
        );
    }

    let table = cluster.kubectl_ok(&["get", "pod", "hello"]).await?;
    assert!(table.contains("Completed"), "{table}");
    let describe = cluster.kubectl_ok(&["describe", "pod", "hello"]).await?;
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            describe.contains(reason),
            "`kubectl describe pod hello` lacks a {reason} event:\n{describe}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn hello_component_runs_on_the_servers_embedded_agent() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("embedded"))
        .start_with_samples("hello_component_runs_on_the_servers_embedded_agent")
        .await?
    else {
        return Ok(());
    };
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"]["name"] = json!("hello-component");
    pod["spec"]["containers"][0]["image"] = json!("wasmkube.local/samples/hello-component:v1");
    cluster.apply_json(&pod).await?;
    let pod = cluster
        .wait_pod("hello-component", "phase Succeeded", START_DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("embedded")
    );
    let logs = cluster.kubectl_ok(&["logs", "hello-component"]).await?;
    assert!(
        logs.contains("env POD_NAME=hello-component"),
        "the component's output is missing:\n{logs}"
    );
    Ok(())
}

/// The seconds of a CrashLoopBackOff message, `back-off 20s restarting failed container=...`.
fn back_off_seconds(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("back-off ")?;
    let (number, _) = rest.split_once("s ")?;
    number.parse().ok()
}

#[tokio::test]
async fn crash_with_restart_policy_always_backs_off_longer_after_each_failure() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("crash_with_restart_policy_always_backs_off_longer_after_each_failure")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("crash").await?;
    // Watch the container through its failures: each waiting message names the back-off,
    // and every terminated state or lastState shows when a run ended (by the agent's clock).
    // Run ends are collected as a set, not per restartCount: a status seen between a restart
    // and the next status write would pair a count with the previous run's end.
    let mut back_offs: Vec<(i32, u64)> = Vec::new();
    let mut finished: std::collections::BTreeSet<k8s_openapi::jiff::Timestamp> =
        std::collections::BTreeSet::new();
    let pod = cluster
        .wait_pod("crash", "three restarts", Duration::from_secs(240), |p| {
            let Some(status) = container_status(p) else {
                return false;
            };
            let count = status.restart_count;
            if let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref())
                && waiting.reason.as_deref() == Some("CrashLoopBackOff")
                && let Some(secs) = waiting.message.as_deref().and_then(back_off_seconds)
                && !back_offs.contains(&(count, secs))
            {
                back_offs.push((count, secs));
            }
            for state in [status.state.as_ref(), status.last_state.as_ref()] {
                if let Some(at) = state
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.finished_at.as_ref())
                {
                    finished.insert(at.0);
                }
            }
            count >= 3 && finished.len() >= 4
        })
        .await?;

    // The back-off announced after each failure grows: 10s, then 20s, then 40s.
    let seconds: Vec<u64> = back_offs.iter().map(|(_, s)| *s).collect();
    ensure!(
        seconds.len() >= 2 && seconds.windows(2).all(|w| w[1] > w[0]),
        "CrashLoopBackOff messages do not announce growing back-offs: {back_offs:?}"
    );
    ensure!(
        seconds[0] == 10,
        "the first back-off is not 10s: {back_offs:?}"
    );
    // And the runs really were that far apart: the gaps between the ends of consecutive
    // runs grow (immediate, 10s, 20s, ... by the agent's timestamps).
    let ends: Vec<_> = finished.iter().copied().collect();
    ensure!(
        ends.len() >= 4,
        "expected the ends of four runs, saw {ends:?}"
    );
    let gaps: Vec<_> = ends.windows(2).map(|w| w[1].duration_since(w[0])).collect();
    ensure!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "the back-off did not grow between runs: ends {ends:?}"
    );

    let status = container_status(&pod).context("crash has no container status")?;
    let last = status
        .last_state
        .and_then(|s| s.terminated)
        .context("crash has no terminated lastState")?;
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));

    let back_off = cluster
        .wait_event("crash", "BackOff", Duration::from_secs(30))
        .await?;
    assert_eq!(back_off.type_.as_deref(), Some("Warning"));
    // Back in back-off after the third failure: the table says so and the previous run's
    // output (stdout and stderr) is still there.
    cluster
        .wait_pod(
            "crash",
            "waiting in CrashLoopBackOff",
            START_DEADLINE,
            |p| {
                container_status(p)
                    .and_then(|s| s.state)
                    .and_then(|s| s.waiting)
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            },
        )
        .await?;
    let table = cluster.kubectl_ok(&["get", "pod", "crash"]).await?;
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    let previous = cluster.kubectl_ok(&["logs", "crash", "--previous"]).await?;
    assert!(
        previous.contains("crash: something went wrong, exiting with status 1"),
        "`kubectl logs --previous` lacks the failed run's stderr:\n{previous}"
    );
    Ok(())
}

/// The `count N` lines `kubectl logs` shows for the counter sample, as numbers.
fn counts(logs: &str) -> Vec<u64> {
    logs.lines()
        .filter_map(|l| l.strip_prefix("count "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Whether the pod is Running with its container running.
fn running(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && container_status(pod)
            .and_then(|s| s.state)
            .is_some_and(|s| s.running.is_some())
}

#[tokio::test]
async fn memhog_over_its_memory_limit_is_oom_killed_and_its_neighbour_keeps_running() -> Result<()>
{
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples(
            "memhog_over_its_memory_limit_is_oom_killed_and_its_neighbour_keeps_running",
        )
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("counter").await?;
    cluster
        .wait_pod("counter", "running", START_DEADLINE, running)
        .await?;
    let memhog = cluster.sample_pod("memhog")?;
    assert_eq!(
        memhog["spec"]["containers"][0]["resources"]["limits"]["memory"],
        json!("32Mi")
    );
    cluster.apply_json(&memhog).await?;
    let pod = cluster
        .wait_pod("memhog", "phase Failed", START_DEADLINE, |p| {
            phase(p) == "Failed"
        })
        .await?;
    let terminated = container_status(&pod)
        .and_then(|s| s.state)
        .and_then(|s| s.terminated)
        .context("memhog's container is not terminated")?;
    assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(terminated.exit_code, 137);
    let logs = cluster.kubectl_ok(&["logs", "memhog"]).await?;
    assert!(
        logs.contains("memhog: growing by 1 MiB every 100 ms"),
        "memhog did not run before it was killed:\n{logs}"
    );

    // The neighbour on the same node never noticed: still running, never restarted, and
    // still counting after memhog died.
    let after_oom = counts(&cluster.kubectl_ok(&["logs", "counter"]).await?);
    let last = after_oom
        .last()
        .copied()
        .context("counter printed nothing")?;
    let counter = cluster.pod("counter").await?;
    assert!(running(&counter), "counter stopped: {:?}", counter.status);
    assert_eq!(container_status(&counter).map(|s| s.restart_count), Some(0));
    poll_until(
        "counter to print a line after memhog's OOM kill",
        START_DEADLINE,
        || async {
            let now = counts(&cluster.kubectl_ok(&["logs", "counter"]).await?);
            Ok(now.last().is_some_and(|n| *n > last).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// `GET path` over plain HTTP/1.1 to `ip:port`, the way any client on the machine reaches a
/// pod; returns the status code and the body.
async fn http_get(ip: &str, port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .with_context(|| format!("connecting to {ip}:{port} timed out"))?
    .with_context(|| format!("connecting to {ip}:{port}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .context("reading the response timed out")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status code in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// The pod's IP and the port of its first container port.
fn pod_address(pod: &Pod) -> Result<(String, u16)> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("the pod has no podIP")?;
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.container_port)
        .context("the pod has no containerPort")?;
    Ok((ip, u16::try_from(port)?))
}

#[tokio::test]
async fn http_hello_answers_on_its_pod_ip_and_readiness_probes_gate_ready() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("http_hello_answers_on_its_pod_ip_and_readiness_probes_gate_ready")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("http-hello").await?;
    // The same component behind a readiness probe that always fails (503).
    let mut unready = cluster.sample_pod("http-hello")?;
    unready["metadata"]["name"] = json!("http-unready");
    unready["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = json!("/status/503");
    cluster.apply_json(&unready).await?;

    let pod = cluster
        .wait_pod("http-hello", "Ready", START_DEADLINE, |p| {
            condition(p, "Ready") == Some("True")
        })
        .await?;
    assert_eq!(condition(&pod, "ContainersReady"), Some("True"));
    let (ip, port) = pod_address(&pod)?;
    assert!(
        ip.starts_with("127."),
        "podIP {ip} is not a loopback address"
    );
    let (code, body) = http_get(&ip, port, "/some/path?x=1").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from wasm"), "{body}");
    assert!(body.contains("/some/path"), "{body}");
    let (code, _) = http_get(&ip, port, "/status/418").await?;
    assert_eq!(code, 418);

    // The failing readiness probe keeps the other pod out of Ready although it runs and
    // serves; it is not restarted for it.
    cluster
        .wait_event("http-unready", "Unhealthy", START_DEADLINE)
        .await?;
    let unready = cluster
        .wait_pod("http-unready", "running", START_DEADLINE, running)
        .await?;
    assert_eq!(condition(&unready, "Ready"), Some("False"));
    assert_eq!(condition(&unready, "ContainersReady"), Some("False"));
    let status = container_status(&unready).context("no container status")?;
    assert!(!status.ready);
    assert_eq!(status.restart_count, 0);
    let (ip, port) = pod_address(&unready)?;
    assert_eq!(http_get(&ip, port, "/").await?.0, 200);
    let table = cluster.kubectl_ok(&["get", "pod", "http-unready"]).await?;
    assert!(table.contains("0/1"), "{table}");
    Ok(())
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_http_hello() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("a_failing_liveness_probe_restarts_http_hello")
        .await?
    else {
        return Ok(());
    };
    let mut pod = cluster.sample_pod("http-hello")?;
    let probe = &mut pod["spec"]["containers"][0]["livenessProbe"];
    probe["httpGet"]["path"] = json!("/status/500");
    probe["periodSeconds"] = json!(1);
    probe["failureThreshold"] = json!(2);
    cluster.apply_json(&pod).await?;

    let pod = cluster
        .wait_pod(
            "http-hello",
            "restarted by its liveness probe",
            START_DEADLINE,
            |p| container_status(p).is_some_and(|s| s.restart_count >= 1),
        )
        .await?;
    let unhealthy = cluster
        .wait_event("http-hello", "Unhealthy", Duration::from_secs(30))
        .await?;
    let message = unhealthy.message.unwrap_or_default();
    assert!(message.contains("Liveness probe failed"), "{message}");
    assert!(message.contains("500"), "{message}");
    let killing = cluster
        .wait_event("http-hello", "Killing", Duration::from_secs(30))
        .await?;
    let message = killing.message.unwrap_or_default();
    assert!(message.contains("liveness probe"), "{message}");
    assert_eq!(phase(&pod), "Running");
    Ok(())
}

#[tokio::test]
async fn kubectl_logs_follow_streams_counter_and_kubectl_delete_stops_it() -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("kubectl_logs_follow_streams_counter_and_kubectl_delete_stops_it")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("counter").await?;
    cluster
        .wait_pod("counter", "running", START_DEADLINE, running)
        .await?;
    let before = counts(&cluster.kubectl_ok(&["logs", "counter"]).await?)
        .last()
        .copied()
        .unwrap_or(0);

    // `kubectl logs -f` keeps the stream open: lines printed after it started arrive on it.
    let mut follow = cluster
        .kubectl_command(&["logs", "-f", "counter"])
        .spawn()
        .context("spawning kubectl logs -f")?;
    let stdout = follow.stdout.take().context("kubectl has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut streamed = Vec::new();
    let read = tokio::time::timeout(START_DEADLINE, async {
        while streamed.len() < 3 {
            let Some(line) = lines.next_line().await? else {
                anyhow::bail!("kubectl logs -f ended after {streamed:?}");
            };
            if let Some(n) = counts(&line).first().filter(|n| **n > before) {
                streamed.push(*n);
            }
        }
        Ok(())
    })
    .await;
    follow.start_kill().context("killing kubectl logs -f")?;
    let _ = follow.wait().await;
    read.with_context(|| format!("3 new lines did not stream in time (got {streamed:?})"))??;
    assert!(
        streamed.windows(2).all(|w| w[1] == w[0] + 1),
        "the streamed counts are not consecutive: {streamed:?}"
    );

    // `kubectl delete` waits until the pod object is gone; the agent confirms the deletion
    // once the guest stopped, within the 10 s grace period of the manifest.
    let out = cluster.kubectl_ok(&["delete", "pod", "counter"]).await?;
    assert!(out.contains("pod \"counter\" deleted"), "{out}");
    let out = cluster.kubectl(&["get", "pod", "counter"]).await?;
    assert!(
        !out.status.success() && out.stderr.contains("NotFound"),
        "counter still exists after kubectl delete returned: {}{}",
        out.stdout,
        out.stderr
    );
    let killing = cluster
        .wait_event("counter", "Killing", Duration::from_secs(30))
        .await?;
    assert!(
        killing
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Stopping container counter")),
        "{killing:?}"
    );
    Ok(())
}

#[tokio::test]
async fn files_sees_its_configmap_secret_downward_api_and_empty_dir_volumes_and_env() -> Result<()>
{
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples(
            "files_sees_its_configmap_secret_downward_api_and_empty_dir_volumes_and_env",
        )
        .await?
    else {
        return Ok(());
    };
    let out = cluster.apply_sample("files").await?;
    assert!(out.contains("configmap/files-config created"), "{out}");
    assert!(out.contains("secret/files-secret created"), "{out}");
    let pod = cluster
        .wait_pod("files", "phase Succeeded", START_DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("files has no node")?;
    let logs = cluster.kubectl_ok(&["logs", "files"]).await?;
    let expected = [
        // configMap volume at /config
        "==> /config/greeting.txt <==".to_owned(),
        "hello from a configMap".to_owned(),
        r#"{"color": "blue", "size": 3}"#.to_owned(),
        // secret volume at /secret
        "==> /secret/password <==".to_owned(),
        "s3cr3t-value".to_owned(),
        // downwardAPI volume at /podinfo
        "==> /podinfo/name <==".to_owned(),
        "tier=\"samples\"".to_owned(),
        "wasmkube.io/sample=\"files\"".to_owned(),
        // emptyDir at /data, written and read back
        "emptyDir: wrote and read back /data/runs.log (1 run)".to_owned(),
        // env from a configMap key, a secret key, fieldRef and resourceFieldRef
        "env CONFIG_GREETING=hello from a configMap".to_owned(),
        "env SECRET_PASSWORD=s3cr3t-value".to_owned(),
        format!("env NODE_NAME={node}"),
        "env MEMORY_LIMIT=67108864".to_owned(),
        "files: done".to_owned(),
    ];
    for line in &expected {
        assert!(
            logs.lines().any(|l| l == line),
            "`kubectl logs files` lacks {line:?}:\n{logs}"
        );
    }
    // The downwardAPI name file holds exactly the pod's name.
    let name_file = logs
        .split("==> /podinfo/name <==\n")
        .nth(1)
        .and_then(|rest| rest.lines().next());
    assert_eq!(name_file, Some("files"), "{logs}");
    Ok(())
}

/// Whether `counts` go up by exactly one each line (one instance printing, none twice).
fn consecutive(counts: &[u64]) -> bool {
    counts.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test]
async fn after_kill_9_and_restart_of_the_agent_its_pods_run_again_exactly_once() -> Result<()> {
    let Some(mut cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("after_kill_9_and_restart_of_the_agent_its_pods_run_again_exactly_once")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("counter").await?;
    cluster.apply_sample("http-hello").await?;
    let counter = cluster
        .wait_pod("counter", "running", START_DEADLINE, running)
        .await?;
    let http = cluster
        .wait_pod("http-hello", "Ready", START_DEADLINE, |p| {
            condition(p, "Ready") == Some("True")
        })
        .await?;
    let (http_ip, http_port) = pod_address(&http)?;
    assert_eq!(http_get(&http_ip, http_port, "/").await?.0, 200);
    // Let the counter print a few lines, so its first run has a log to keep.
    poll_until("counter's first lines", START_DEADLINE, || async {
        let seen = counts(&cluster.kubectl_ok(&["logs", "counter"]).await?);
        Ok((seen.len() >= 2).then_some(()))
    })
    .await?;

    cluster.kill9_agent(0).await?;
    cluster.restart_agent(0).await?;

    // Both pods come back: the counter's guest is started again (one restart), the
    // component serves again on the same pod IP.
    let counter_after = cluster
        .wait_pod(
            "counter",
            "running again after one restart",
            START_DEADLINE,
            |p| running(p) && container_status(p).is_some_and(|s| s.restart_count >= 1),
        )
        .await?;
    assert_eq!(
        container_status(&counter_after).map(|s| s.restart_count),
        Some(1),
        "{:?}",
        counter_after.status
    );
    assert_eq!(
        counter_after.metadata.uid, counter.metadata.uid,
        "the counter pod was replaced instead of restarted"
    );
    assert_eq!(
        counter_after.status.as_ref().and_then(|s| s.pod_ip.clone()),
        counter.status.as_ref().and_then(|s| s.pod_ip.clone()),
        "the pod IP changed across the agent restart"
    );
    poll_until(
        "http-hello to answer again after the agent restart",
        START_DEADLINE,
        || async {
            Ok(http_get(&http_ip, http_port, "/")
                .await
                .ok()
                .filter(|(code, _)| *code == 200))
        },
    )
    .await?;

    // Exactly one instance of the counter runs: its new log counts up one line at a time,
    // with no line printed twice by a second instance.
    let seen = poll_until(
        "six lines from the restarted counter",
        START_DEADLINE,
        || async {
            let seen = counts(&cluster.kubectl_ok(&["logs", "counter"]).await?);
            Ok((seen.len() >= 6).then_some(seen))
        },
    )
    .await?;
    assert!(
        consecutive(&seen),
        "the restarted counter's log is not one instance's: {seen:?}"
    );
    let previous = counts(
        &cluster
            .kubectl_ok(&["logs", "counter", "--previous"])
            .await?,
    );
    assert!(
        previous.len() >= 2 && consecutive(&previous),
        "the run before the kill is not in --previous: {previous:?}"
    );
    // And the node runs exactly the two pods it had.
    let node = cluster.agent_node_name(0)?;
    let pods = cluster
        .kubectl_ok(&[
            "get",
            "pods",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "name",
        ])
        .await?;
    let mut names: Vec<&str> = pods.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["pod/counter", "pod/http-hello"]);
    assert!(cluster.agent_is_running(0)?);
    Ok(())
}
