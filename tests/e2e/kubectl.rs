//! Proves that the real `kubectl` (v1.32) works unmodified against `wasmkube server` for
//! reading and creating: the built-in namespaces, `create ns`, `apply -f` (created / unchanged /
//! configured), `get` in every output format with label and field selectors, `describe`, and
//! `get -w` seeing ADDED, MODIFIED and DELETED in order.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::harness::TestCluster;

/// One manifest of each kind `kubectl apply` must handle.
const APP_MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  greeting: hello
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
type: Opaque
data:
  password: c2VjcmV0
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: app
    image: ghcr.io/wasmkube/hello:1.0
    ports:
    - containerPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: ghcr.io/wasmkube/hello:1.0
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"#;

/// Three pods with labels app=x, app=y, app=z.
const SELECTOR_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p-x
  labels: {app: "x", tier: front}
spec:
  containers:
  - {name: main, image: ghcr.io/wasmkube/hello:1.0}
---
apiVersion: v1
kind: Pod
metadata:
  name: p-y
  labels: {app: "y", tier: back}
spec:
  containers:
  - {name: main, image: ghcr.io/wasmkube/hello:1.0}
---
apiVersion: v1
kind: Pod
metadata:
  name: p-z
  labels: {app: "z"}
spec:
  containers:
  - {name: main, image: ghcr.io/wasmkube/hello:1.0}
"#;

/// The lines of `output` (stdout of kubectl) with one entry per non-empty line.
fn lines(output: &str) -> Vec<&str> {
    output.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// The sorted `kind/name` lines of `kubectl ... -o name`.
fn sorted_names(output: &str) -> Vec<String> {
    let mut names: Vec<String> = lines(output).iter().map(|l| l.trim().to_owned()).collect();
    names.sort();
    names
}

/// The whitespace-separated columns of the first (header) line.
fn header(output: &str) -> Vec<&str> {
    output
        .lines()
        .next()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

/// The row of a table whose first column is `name`, split on whitespace.
fn row<'a>(output: &'a str, name: &str) -> Option<Vec<&'a str>> {
    output
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
}

#[tokio::test]
async fn kubectl_lists_builtin_namespaces_and_creates_one() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    let out = cluster.kubectl_ok(&["get", "ns"]).await?;
    assert_eq!(header(&out), ["NAME", "STATUS", "AGE"], "output:\n{out}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let cols = row(&out, ns).ok_or_else(|| anyhow!("namespace {ns} missing:\n{out}"))?;
        assert_eq!(cols.get(1), Some(&"Active"), "row of {ns}: {cols:?}");
    }

    let out = cluster.kubectl_ok(&["create", "ns", "x"]).await?;
    assert_eq!(out.trim(), "namespace/x created");
    let ns = cluster.kubectl_json(&["get", "ns", "x"]).await?;
    assert_eq!(ns["metadata"]["name"], "x");
    assert_eq!(ns["status"]["phase"], "Active", "{ns:#}");
    assert!(
        ns["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(ns["metadata"]["creationTimestamp"].as_str().is_some());

    let err = cluster.kubectl_fails(&["create", "ns", "x"]).await?;
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "stderr: {err}"
    );

    let out = cluster.kubectl_ok(&["get", "ns", "-o", "name"]).await?;
    assert!(
        sorted_names(&out).contains(&"namespace/x".to_owned()),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_apply_reports_created_then_unchanged_then_configured() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    let out = cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], APP_MANIFEST)
        .await?;
    let expected_created = [
        "configmap/app-config created",
        "secret/app-secret created",
        "pod/web created",
        "deployment.apps/web created",
        "service/web created",
    ];
    assert_eq!(lines(&out), expected_created, "first apply printed:\n{out}");

    let out = cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], APP_MANIFEST)
        .await?;
    let expected_unchanged: Vec<String> = expected_created
        .iter()
        .map(|l| l.replace(" created", " unchanged"))
        .collect();
    assert_eq!(
        lines(&out),
        expected_unchanged,
        "second apply printed:\n{out}"
    );

    let changed = APP_MANIFEST.replace("color: blue", "color: green");
    let out = cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &changed)
        .await?;
    let out_lines = lines(&out);
    assert!(
        out_lines.contains(&"configmap/app-config configured"),
        "third apply printed:\n{out}"
    );
    for other in [
        "secret/app-secret unchanged",
        "pod/web unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ] {
        assert!(out_lines.contains(&other), "missing {other:?} in:\n{out}");
    }

    let cm = cluster
        .kubectl_json(&["get", "configmap", "app-config"])
        .await?;
    assert_eq!(cm["data"]["color"], "green", "{cm:#}");
    assert_eq!(cm["data"]["greeting"], "hello", "{cm:#}");
    let last_applied =
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .ok_or_else(|| anyhow!("no last-applied-configuration annotation: {cm:#}"))?;
    assert!(last_applied.contains("green"), "{last_applied}");

    let secret = cluster
        .kubectl_json(&["get", "secret", "app-secret"])
        .await?;
    assert_eq!(secret["data"]["password"], "c2VjcmV0");
    let deploy = cluster.kubectl_json(&["get", "deployment", "web"]).await?;
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["metadata"]["generation"], 1, "{deploy:#}");
    let svc = cluster.kubectl_json(&["get", "service", "web"]).await?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 80, "{svc:#}");
    Ok(())
}

#[tokio::test]
async fn kubectl_get_pods_in_every_format_with_selectors() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], SELECTOR_PODS)
        .await?;

    let out = cluster.kubectl_ok(&["get", "pods"]).await?;
    assert_eq!(
        header(&out),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "output:\n{out}"
    );
    let cols = row(&out, "p-x").ok_or_else(|| anyhow!("p-x missing:\n{out}"))?;
    assert_eq!(&cols[1..4], ["0/1", "Pending", "0"], "row: {cols:?}");

    let out = cluster.kubectl_ok(&["get", "pods", "-o", "wide"]).await?;
    let head = header(&out);
    assert_eq!(
        &head[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "output:\n{out}"
    );
    for name in ["p-x", "p-y", "p-z"] {
        assert!(row(&out, name).is_some(), "{name} missing:\n{out}");
    }

    let out = cluster.kubectl_ok(&["get", "pods", "-o", "yaml"]).await?;
    let list: Value = serde_yaml_ng::from_str(&out).context("-o yaml is not YAML")?;
    assert_eq!(list["kind"], "List");
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .ok_or_else(|| anyhow!("no items: {out}"))?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["p-x", "p-y", "p-z"]);
    for item in list["items"].as_array().into_iter().flatten() {
        assert_eq!(item["kind"], "Pod");
        assert_eq!(item["apiVersion"], "v1");
    }

    let list = cluster.kubectl_json(&["get", "pods"]).await?;
    let items = list["items"].as_array().ok_or_else(|| anyhow!("{list}"))?;
    assert_eq!(items.len(), 3, "{list:#}");
    for pod in items {
        assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
        assert_eq!(pod["metadata"]["namespace"], "default");
    }

    let by_label = |selector: &'static str| {
        let cluster = &cluster;
        async move {
            let out = cluster
                .kubectl_ok(&["get", "pods", "-l", selector, "-o", "name"])
                .await?;
            Ok::<_, anyhow::Error>(sorted_names(&out))
        }
    };
    assert_eq!(by_label("app=x").await?, ["pod/p-x"]);
    assert_eq!(by_label("app!=x").await?, ["pod/p-y", "pod/p-z"]);
    assert_eq!(by_label("app in (x,y)").await?, ["pod/p-x", "pod/p-y"]);
    assert_eq!(by_label("app notin (x)").await?, ["pod/p-y", "pod/p-z"]);
    assert_eq!(by_label("tier").await?, ["pod/p-x", "pod/p-y"]);
    assert_eq!(by_label("!tier").await?, ["pod/p-z"]);
    assert_eq!(by_label("app in (x,y),tier=back").await?, ["pod/p-y"]);

    let by_field = |selector: &'static str| {
        let cluster = &cluster;
        async move {
            let out = cluster
                .kubectl_ok(&["get", "pods", "--field-selector", selector, "-o", "name"])
                .await?;
            Ok::<_, anyhow::Error>(sorted_names(&out))
        }
    };
    assert_eq!(by_field("metadata.name=p-y").await?, ["pod/p-y"]);
    assert_eq!(
        by_field("metadata.name!=p-y").await?,
        ["pod/p-x", "pod/p-z"]
    );
    assert_eq!(
        by_field("status.phase=Pending").await?,
        ["pod/p-x", "pod/p-y", "pod/p-z"]
    );
    assert!(by_field("status.phase=Running").await?.is_empty());
    assert_eq!(
        by_field("metadata.namespace=default,metadata.name=p-z").await?,
        ["pod/p-z"]
    );

    // Field selectors that Kubernetes does not support for pods are refused, not ignored.
    let err = cluster
        .kubectl_fails(&["get", "pods", "--field-selector", "spec.image=x"])
        .await?;
    assert!(
        err.contains("BadRequest") || err.contains("not supported") || err.contains("field label"),
        "stderr: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_describe_pod_shows_its_essentials() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], APP_MANIFEST)
        .await?;

    let out = cluster.kubectl_ok(&["describe", "pod", "web"]).await?;
    let field = |key: &str| -> Option<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .map(|l| l[key.len() + 1..].trim().to_owned())
    };
    assert_eq!(field("Name").as_deref(), Some("web"), "describe:\n{out}");
    assert_eq!(
        field("Namespace").as_deref(),
        Some("default"),
        "describe:\n{out}"
    );
    assert_eq!(
        field("Labels").as_deref(),
        Some("app=web"),
        "describe:\n{out}"
    );
    assert_eq!(
        field("Status").as_deref(),
        Some("Pending"),
        "describe:\n{out}"
    );
    assert!(field("Containers").is_some(), "describe:\n{out}");
    assert!(
        out.lines().any(|l| l.trim() == "app:"),
        "container `app` not listed:\n{out}"
    );
    assert!(
        out.contains("ghcr.io/wasmkube/hello:1.0"),
        "image missing:\n{out}"
    );

    let out = cluster
        .kubectl_ok(&["describe", "deployment", "web"])
        .await?;
    assert!(
        out.lines()
            .any(|l| l.starts_with("Name:") && l.ends_with("web")),
        "{out}"
    );
    Ok(())
}

/// What the background `kubectl get -w` saw: (event type, pod name, pod labels).
pub(crate) type SeenEvent = (String, String, Value);

/// Read concatenated JSON documents from kubectl's stdout and forward each watch event.
pub(crate) async fn forward_watch_events(
    mut stdout: tokio::process::ChildStdout,
    tx: mpsc::UnboundedSender<Result<SeenEvent>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stdout.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("reading kubectl's stdout: {e}")));
                return;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match stream.next() {
                Some(Ok(doc)) => {
                    let consumed = stream.byte_offset();
                    buf.drain(..consumed);
                    let event = (
                        doc["type"].as_str().unwrap_or_default().to_owned(),
                        doc["object"]["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        doc["object"]["metadata"]["labels"].clone(),
                    );
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let _ = tx.send(Err(anyhow!("kubectl printed invalid JSON ({e}): {text}")));
                    return;
                }
                None => break,
            }
        }
    }
}

/// Wait for the next event about `name` satisfying `pred`, collecting every event about it.
pub(crate) async fn wait_for_event(
    rx: &mut mpsc::UnboundedReceiver<Result<SeenEvent>>,
    seen: &mut Vec<SeenEvent>,
    name: &str,
    pred: impl Fn(&SeenEvent) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| anyhow!("no matching watch event for {name}; saw {seen:?}"))?;
        let event = next.ok_or_else(|| anyhow!("kubectl get -w ended; saw {seen:?}"))??;
        if event.1 != name {
            continue;
        }
        let matched = pred(&event);
        seen.push(event);
        if matched {
            return Ok(());
        }
    }
}

#[tokio::test]
async fn kubectl_get_watch_sees_added_modified_deleted_in_order() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let mut watch = cluster
        .kubectl_command(&["get", "pods", "-w", "--output-watch-events", "-o", "json"])
        .spawn()
        .context("spawning kubectl get -w")?;
    let stdout = watch
        .stdout
        .take()
        .ok_or_else(|| anyhow!("kubectl has no stdout pipe"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(forward_watch_events(stdout, tx));

    let pod = r#"
apiVersion: v1
kind: Pod
metadata:
  name: watched
  labels: {app: watched}
spec:
  containers:
  - {name: main, image: ghcr.io/wasmkube/hello:1.0}
"#;
    cluster.kubectl_ok_stdin(&["apply", "-f", "-"], pod).await?;
    let mut seen = Vec::new();
    wait_for_event(&mut rx, &mut seen, "watched", |e| e.0 == "ADDED").await?;

    cluster
        .kubectl_ok(&["label", "pod", "watched", "stage=two"])
        .await?;
    wait_for_event(&mut rx, &mut seen, "watched", |e| {
        e.0 == "MODIFIED" && e.2["stage"] == "two"
    })
    .await?;

    cluster
        .kubectl_ok(&["delete", "pod", "watched", "--grace-period=0", "--force"])
        .await?;
    wait_for_event(&mut rx, &mut seen, "watched", |e| e.0 == "DELETED").await?;

    let types: Vec<&str> = seen.iter().map(|e| e.0.as_str()).collect();
    if types.first() != Some(&"ADDED") || types.last() != Some(&"DELETED") {
        bail!("events out of order: {types:?}");
    }
    let first_labelled = seen
        .iter()
        .position(|e| e.0 == "MODIFIED" && e.2["stage"] == "two")
        .ok_or_else(|| anyhow!("no MODIFIED with the new label: {seen:?}"))?;
    assert!(
        first_labelled > 0 && first_labelled < seen.len() - 1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "ADDED").count(),
        1,
        "more than one ADDED: {types:?}"
    );

    let _ = watch.start_kill();
    let _ = watch.wait().await;
    reader.abort();
    Ok(())
}
