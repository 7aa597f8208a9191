//! The limits that protect the apiserver (issue 9, review findings 5 and 10): the size of an
//! object after every write path, JSON patch `copy` amplification, watch buffers, requests in
//! flight, idle connections and per-client fairness. Each test drives a real server over
//! HTTPS and asserts the Status Kubernetes answers with, and that the server stays healthy.

use anyhow::{Context, Result, bail};
use http::Method;
use serde_json::{Value, json};

use crate::bad_input::{expect_status, still_serving};
use crate::harness::TestCluster;
use crate::harness::raw::{self, RawResponse};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
/// etcd's default `--max-request-bytes`, the largest object wasmkube stores.
const MAX_OBJECT: usize = 1536 * 1024;

async fn send_json(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Result<RawResponse> {
    raw::send(
        client,
        method,
        path,
        Some(content_type),
        serde_json::to_vec(body)?,
    )
    .await
}

/// The server's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(cluster: &TestCluster) -> Result<u64> {
    let pid = cluster.server_pid().context("the server is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/<pid>/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM without a value")?
        .parse()
        .context("VmHWM is not a number")?;
    Ok(kib * 1024)
}

fn deployment(name: &str, arg: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "example/app:1", "args": [arg]}]}}}})
}

/// [`expect_status`], without printing a body of megabytes when the code is not `code`.
fn expect_code(response: &RawResponse, code: u16, reason: &str) -> Result<Value> {
    if response.status != code {
        let head: String = response.body.chars().take(600).collect();
        bail!(
            "expected {code} {reason}, got {}: {head}...",
            response.status
        );
    }
    expect_status(response, code, reason)
}

/// Review finding 5: a ~900-byte JSON patch whose `copy` operations double a free-form field
/// made a 134 MB object and a 1.5 GB memory peak. Kubernetes bounds what the copies of one
/// patch add up to (3 MiB): the patch now fails with 422 as it runs, and the server's memory
/// peak stays far below what the doublings would have taken.
#[tokio::test]
async fn json_patch_copy_amplification_fails_fast_with_a_bounded_memory_peak() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let created = send_json(
        &client,
        Method::POST,
        CONFIGMAPS,
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed",
            "managedFields": [{"manager": "t", "operation": "Update", "apiVersion": "v1",
                "fieldsV1": {"f:data": {"f:k": "x".repeat(100)}}}]},
            "data": {"k": "v"}}),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.body);

    // 24 doublings of ~130 bytes would be ~2 GB.
    let ops: Vec<Value> = (0..24)
        .map(|i| {
            json!({"op": "copy", "from": "/metadata/managedFields/0/fieldsV1",
                "path": format!("/metadata/managedFields/0/fieldsV1/f:{i}")})
        })
        .collect();
    let patch = Value::Array(ops);
    assert!(serde_json::to_vec(&patch)?.len() < 4096);
    let before = peak_rss(&cluster)?;
    let response = send_json(
        &client,
        Method::PATCH,
        &format!("{CONFIGMAPS}/seed"),
        "application/json-patch+json",
        &patch,
    )
    .await?;
    let status = expect_code(&response, 422, "Invalid")?;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message
            .starts_with("Unable to complete the copy, the accumulated size increase of copy is")
            && message.ends_with("exceeding the limit 3145728"),
        "{status:#}"
    );
    let after = peak_rss(&cluster)?;
    println!(
        "server peak RSS: {} MiB before the patch, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (128 << 20),
        "the copies grew the server's memory peak from {before} to {after} bytes"
    );
    still_serving(&client, "a copy-amplifying JSON patch").await?;
    let seed = raw::get(&client, &format!("{CONFIGMAPS}/seed"))
        .await?
        .json()?;
    assert_eq!(
        seed["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {"f:k": "x".repeat(100)}}),
        "the failed patch changed nothing"
    );
    Ok(())
}

/// An object larger than etcd stores (1.5 MiB) is refused on every write path with 413
/// RequestEntityTooLarge, before anything is written: create, update, merge patch, JSON patch
/// and the status subresource.
#[tokio::test]
async fn objects_over_the_store_limit_are_refused_on_every_write_path() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let too_large = |response: &RawResponse, path: &str| -> Result<()> {
        let status = expect_code(response, 413, "RequestEntityTooLarge")
            .with_context(|| format!("writing with {path}"))?;
        let message = status["message"].as_str().unwrap_or_default();
        if !message.starts_with("Request entity too large: deployments.apps \"d\" would be")
            || !message.contains(&format!("over the limit of {MAX_OBJECT} bytes"))
        {
            bail!("unexpected message on {path}: {status:#}");
        }
        Ok(())
    };

    // Create: a pod template whose argument alone is over the limit.
    let big = "x".repeat(MAX_OBJECT + 1);
    let response = send_json(
        &client,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        &deployment("d", &big),
    )
    .await?;
    too_large(&response, "create")?;
    assert_eq!(
        raw::get(&client, &format!("{DEPLOYMENTS}/d")).await?.status,
        404
    );

    // A Deployment of 1 MiB that every write below tries to grow past 1.5 MiB.
    let mib = "y".repeat(1 << 20);
    let created = send_json(
        &client,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        &deployment("d", &mib),
    )
    .await?;
    assert_eq!(
        created.status,
        201,
        "{}",
        &created.body[..created.body.len().min(600)]
    );
    let original: Value = created.json()?;
    let half = "z".repeat(600 * 1024);
    let url = format!("{DEPLOYMENTS}/d");

    let mut replaced = original.clone();
    replaced["spec"]["template"]["spec"]["containers"][0]["args"] = json!([mib, half]);
    let response = send_json(&client, Method::PUT, &url, "application/json", &replaced).await?;
    too_large(&response, "update")?;

    let response = send_json(
        &client,
        Method::PATCH,
        &url,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"a": "b"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "example/app:1", "args": [mib, half]}]}}}}),
    )
    .await?;
    too_large(&response, "a merge patch")?;

    let response = send_json(
        &client,
        Method::PATCH,
        &url,
        "application/json-patch+json",
        &json!([{"op": "copy", "from": "/spec/template/spec/containers/0/args/0",
            "path": "/spec/template/spec/containers/0/args/-"}]),
    )
    .await?;
    too_large(&response, "a JSON patch")?;

    let response = send_json(
        &client,
        Method::PATCH,
        &format!("{url}/status"),
        "application/merge-patch+json",
        &json!({"status": {"conditions": [{"type": "Progressing", "status": "True",
            "reason": "Big", "message": half}]}}),
    )
    .await?;
    too_large(&response, "a status patch")?;

    let current = raw::get(&client, &url).await?.json()?;
    assert_eq!(
        current["metadata"]["resourceVersion"], original["metadata"]["resourceVersion"],
        "no refused write changed the Deployment"
    );
    still_serving(&client, "objects over the store limit").await?;
    Ok(())
}

/// A raw TLS connection to the cluster, as `user` (a client certificate the cluster CA
/// issued, no groups but `system:authenticated`), offering HTTP/1.1 only.
async fn connect_as(
    cluster: &TestCluster,
    user: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    connect_with_groups(cluster, user, &[]).await
}

/// [`connect_as`] with `groups` in the certificate.
async fn connect_with_groups(
    cluster: &TestCluster,
    user: &str,
    groups: &[&str],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let pki = wasmkube_apiserver::pki::Pki::load_or_create(cluster.data_dir(), &[])
        .context("loading the cluster PKI")?;
    let (cert, key) = pki.issue_client_cert(user, groups)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes())?)?;
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(
        CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?,
        PrivateKeyDer::from_pem_slice(key.as_bytes())?,
    )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port())).await?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("TLS handshake")?;
    Ok(stream)
}

/// Starts `method path` as `user` with a body that never arrives: the request holds its
/// seat until the returned connection is dropped.
async fn stalled_request(
    cluster: &TestCluster,
    user: &str,
    method: &str,
    path: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let mut stream = connect_as(cluster, user).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    Ok(stream)
}

/// A kube client for `user` that does not retry 429s by itself (kube-rs' default does).
async fn client_as(cluster: &TestCluster, user: &str) -> Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let path = cluster.user_kubeconfig(user, None).await?;
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// The value of the sample `name` (with its labels, e.g. `x{a="b"}`) at `/metrics`.
async fn metric(admin: &kube::Client, sample: &str) -> Result<f64> {
    let text = raw::get(admin, "/metrics").await?.body;
    let prefix = format!("{sample} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .with_context(|| format!("no {sample} in /metrics:\n{text}"))?
        .trim()
        .parse()
        .context("a metric value")
}

/// Waits until `/metrics` shows `sample` at `value`.
async fn metric_reaches(admin: &kube::Client, sample: &str, value: f64) -> Result<()> {
    crate::harness::poll_until(
        &format!("{sample} = {value}"),
        std::time::Duration::from_secs(30),
        || async { Ok((metric(admin, sample).await? == value).then_some(())) },
    )
    .await
}

/// `--max-requests-inflight` and `--max-mutating-requests-inflight`: over the limit a request
/// is answered 429 with `Retry-After: 1` and Kubernetes' message; watches take no seat;
/// system:masters and health probes are exempt; a freed seat serves the next request.
#[tokio::test]
async fn requests_over_the_in_flight_limits_get_429_with_retry_after() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--disable-scheduler")
        .server_arg("--max-requests-inflight=1")
        .server_arg("--max-mutating-requests-inflight=1")
        .start()
        .await?;
    let admin = cluster.client().await?;
    for user in ["alice", "bob"] {
        cluster
            .kubectl_ok(&[
                "create",
                "rolebinding",
                &format!("{user}-edit"),
                "--clusterrole=edit",
                &format!("--user={user}"),
                "-n",
                "default",
            ])
            .await?;
    }
    let bob = client_as(&cluster, "bob").await?;
    let configmap =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});

    // Alice's create holds the only mutating seat.
    let held = stalled_request(&cluster, "alice", "POST", CONFIGMAPS).await?;
    metric_reaches(
        &admin,
        "apiserver_current_inflight_requests{request_kind=\"mutating\"}",
        1.0,
    )
    .await?;
    let refused = send_json(
        &bob,
        Method::POST,
        CONFIGMAPS,
        "application/json",
        &configmap("b1"),
    )
    .await?;
    let status = expect_status(&refused, 429, "TooManyRequests")?;
    assert_eq!(
        status["message"],
        "Too many requests, please try again later."
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 1, "{status:#}");
    assert_eq!(
        refused
            .headers
            .get(http::header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // kubectl tells its user the same.
    let bob_kubeconfig = cluster.user_kubeconfig("bob", None).await?;
    let stderr = cluster
        .kubectl_fails(&[
            &format!("--kubeconfig={}", bob_kubeconfig.display()),
            "create",
            "configmap",
            "b2",
            "-n",
            "default",
        ])
        .await?;
    assert!(stderr.contains("Too many requests"), "{stderr}");
    // Reads have seats of their own, and the cluster admin is never refused.
    assert_eq!(raw::get(&bob, CONFIGMAPS).await?.status, 200);
    let created = send_json(
        &admin,
        Method::POST,
        CONFIGMAPS,
        "application/json",
        &configmap("a1"),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.body);

    // Alice's list holds the only read-only seat: bob's list is refused, his watch is not.
    let held_read = stalled_request(&cluster, "alice", "GET", CONFIGMAPS).await?;
    metric_reaches(
        &admin,
        "apiserver_current_inflight_requests{request_kind=\"readOnly\"}",
        1.0,
    )
    .await?;
    expect_status(&raw::get(&bob, CONFIGMAPS).await?, 429, "TooManyRequests")?;
    // Health probes take no seat: a busy server is not a dead one.
    let ready = raw::get(&bob, "/readyz").await?;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let watch = raw::get(&bob, &format!("{CONFIGMAPS}?watch=true&timeoutSeconds=1")).await?;
    assert_eq!(watch.status, 200, "{}", watch.body);
    assert!(watch.body.contains("\"a1\""), "{}", watch.body);
    assert!(
        metric(
            &admin,
            "apiserver_dropped_requests_total{request_kind=\"mutating\"}"
        )
        .await?
            >= 1.0
    );
    assert!(
        metric(
            &admin,
            "apiserver_dropped_requests_total{request_kind=\"readOnly\"}"
        )
        .await?
            >= 1.0
    );

    // Seats come back when the requests end.
    drop((held, held_read));
    metric_reaches(
        &admin,
        "apiserver_current_inflight_requests{request_kind=\"mutating\"}",
        0.0,
    )
    .await?;
    let created = send_json(
        &bob,
        Method::POST,
        CONFIGMAPS,
        "application/json",
        &configmap("b3"),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    Ok(())
}

/// Fairness: one client that keeps requests in flight gets a share of the seats, never all
/// of them, so another client is still served.
#[tokio::test]
async fn one_client_cannot_take_every_seat() -> Result<()> {
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--disable-scheduler")
        .server_arg("--max-requests-inflight=4")
        .start()
        .await?;
    let admin = cluster.client().await?;
    for user in ["greedy", "bob"] {
        cluster
            .kubectl_ok(&[
                "create",
                "rolebinding",
                &format!("{user}-view"),
                "--clusterrole=view",
                &format!("--user={user}"),
                "-n",
                "default",
            ])
            .await?;
    }
    // The greedy client tries to hold eight lists at once; alone it gets half the seats
    // (the admin reading /metrics is exempt and takes none).
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(stalled_request(&cluster, "greedy", "GET", CONFIGMAPS).await?);
    }
    metric_reaches(
        &admin,
        "apiserver_current_inflight_requests{request_kind=\"readOnly\"}",
        2.0,
    )
    .await?;
    assert!(
        metric(
            &admin,
            "apiserver_dropped_requests_total{request_kind=\"readOnly\"}"
        )
        .await?
            >= 6.0
    );
    let greedy = client_as(&cluster, "greedy").await?;
    expect_status(
        &raw::get(&greedy, CONFIGMAPS).await?,
        429,
        "TooManyRequests",
    )?;
    // Another client is served all the same.
    let bob = client_as(&cluster, "bob").await?;
    let listed = raw::get(&bob, CONFIGMAPS).await?;
    assert_eq!(listed.status, 200, "{}", listed.body);
    drop(held);
    Ok(())
}

/// Idle connections are closed (`--idle-connection-timeout`, `--tls-handshake-timeout`):
/// one that never finishes its TLS handshake, and one that finished it but sends nothing.
#[tokio::test]
async fn idle_connections_are_closed_by_the_server() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let cluster = TestCluster::builder()
        .without_controllers()
        .server_arg("--disable-scheduler")
        .server_arg("--idle-connection-timeout=1")
        .server_arg("--tls-handshake-timeout=1")
        .start()
        .await?;
    let deadline = std::time::Duration::from_secs(30);
    let mut no_handshake = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port())).await?;
    let mut rest = Vec::new();
    tokio::time::timeout(deadline, no_handshake.read_to_end(&mut rest))
        .await
        .context("the server kept a connection without a TLS handshake")??;
    let mut idle = connect_as(&cluster, "idle").await?;
    match tokio::time::timeout(deadline, idle.read_to_end(&mut rest)).await {
        Err(_) => bail!("the server kept an idle TLS connection open"),
        Ok(Err(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            bail!("reading the idle connection: {e}")
        }
        Ok(_) => {}
    }
    still_serving(&cluster.client().await?, "closing idle connections").await?;
    Ok(())
}

/// The events of a raw HTTP/1.1 watch response read to its end: the body's chunks
/// decoded, split into lines. Fails unless the chunked body ends with its last chunk (the
/// server ended the response, it did not cut the connection).
fn watch_events(raw: &[u8]) -> Result<Vec<Value>> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("not a 200: {head}");
    }
    let mut rest = &raw[head_end + 4..];
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("the response was cut: no end of a chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end])?.trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        if rest.len() < size + 2 {
            bail!("the response was cut in a chunk");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).context("a watch event"))
        .collect()
}

/// Review finding 5, watch half: 256 messages of any size per watcher, so 20 watchers that
/// stopped reading held 160 MB. A watcher's buffer is now bounded in bytes, and a watcher
/// that leaves it full is closed and its buffer freed
/// (`apiserver_terminated_watchers_total`); its response ends cleanly, and the client that
/// watches again from the last resourceVersion it got misses nothing.
#[tokio::test]
async fn slow_watchers_are_closed_with_their_buffers_freed_and_resume() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WATCHERS: usize = 20;
    const OBJECTS: usize = 24;
    // No controllers at all: the root-CA publisher (which `without_controllers` keeps) would
    // be one more ConfigMap watcher, and no pod is made here.
    let cluster = TestCluster::builder()
        .server_arg("--disable-controllers")
        .server_arg("--disable-scheduler")
        .start()
        .await?;
    let admin = cluster.client().await?;
    let before = peak_rss(&cluster)?;

    // Watchers that never read what they asked for. Each watches from the resourceVersion of
    // a list, as client-go's reflector and kube-rs' watcher do, so that a watcher that got no
    // event at all still knows where to resume: watching again from `0` would not resume but
    // start over, with the current state as ADDED events in name order (big-0, big-1,
    // big-10, ...) and whatever else the namespace holds.
    let listed = raw::get(&admin, CONFIGMAPS).await?;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json()?;
    let list_rv = listed["metadata"]["resourceVersion"]
        .as_str()
        .context("the list's resourceVersion")?
        .to_owned();
    let mut slow = Vec::new();
    for i in 0..WATCHERS {
        let mut stream =
            connect_with_groups(&cluster, &format!("slow-{i}"), &["system:masters"]).await?;
        let request = format!(
            "GET {CONFIGMAPS}?watch=true&resourceVersion={list_rv} HTTP/1.1\r\n\
             Host: localhost\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        slow.push(stream);
    }
    metric_reaches(
        &admin,
        "apiserver_registered_watchers{group=\"\",kind=\"ConfigMap\",version=\"v1\"}",
        WATCHERS as f64,
    )
    .await?;

    // 24 ConfigMaps of 1 MB each: 480 MB of events for the 20 watchers.
    let payload = "x".repeat(1_000_000);
    for i in 0..OBJECTS {
        let created = send_json(
            &admin,
            Method::POST,
            CONFIGMAPS,
            "application/json",
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("big-{i}")}, "data": {"payload": payload}}),
        )
        .await?;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    metric_reaches(
        &admin,
        "apiserver_terminated_watchers_total{resource=\"configmaps\"}",
        WATCHERS as f64,
    )
    .await?;
    let after = peak_rss(&cluster)?;
    let grown = after.saturating_sub(before);
    println!(
        "{WATCHERS} slow watchers, {OBJECTS} objects of 1 MB: peak RSS {} -> {} MiB (+{} MiB)",
        before >> 20,
        after >> 20,
        grown >> 20
    );
    // Each watcher holds at most its 1 MiB buffer and what hyper and TLS have taken from
    // it; 256 events of 1 MB would be 20 times that.
    assert!(
        grown < 200 << 20,
        "20 slow watchers grew the server's peak RSS by {} MiB",
        grown >> 20
    );
    assert_eq!(
        metric(
            &admin,
            "apiserver_registered_watchers{group=\"\",kind=\"ConfigMap\",version=\"v1\"}"
        )
        .await?,
        0.0,
        "the closed watchers are gone"
    );

    // A closed watcher's response ended cleanly with what it had been sent; watching again
    // from its last resourceVersion delivers the rest.
    let mut first = slow.swap_remove(0);
    drop(slow);
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        first.read_to_end(&mut raw),
    )
    .await
    .context("the closed watch's response did not end")?
    .or_else(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(0)
        } else {
            Err(e)
        }
    })?;
    let events = watch_events(&raw)?;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert!(
        names.len() < OBJECTS,
        "the slow watcher got every event: {names:?}"
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(*name, format!("big-{i}"), "events in order: {names:?}");
    }
    let last_rv = match events.last() {
        Some(event) => event["object"]["metadata"]["resourceVersion"]
            .as_str()
            .context("a resourceVersion")?
            .to_owned(),
        None => list_rv,
    };
    let resumed = raw::get(
        &admin,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={last_rv}&timeoutSeconds=2"),
    )
    .await?;
    assert_eq!(resumed.status, 200);
    let rest: Vec<String> = resumed
        .body
        .lines()
        .map(|l| {
            let event: Value = serde_json::from_str(l)?;
            Ok(event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned())
        })
        .collect::<Result<_>>()?;
    let expected: Vec<String> = (names.len()..OBJECTS).map(|i| format!("big-{i}")).collect();
    assert_eq!(rest, expected, "watching again delivers exactly the rest");
    still_serving(&admin, "closing slow watchers").await?;
    Ok(())
}
