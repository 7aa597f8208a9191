//! Proves that what `kubectl get` prints for each kind matches Kubernetes: the server's Table
//! columns for nodes, deployments, replicasets, services, jobs and events (with the values a
//! fresh object shows), a NAME ... AGE table for the other kinds, and that discovery and the
//! OpenAPI documents are good enough for `kubectl api-resources`, short names and `explain`.

use std::net::Ipv4Addr;

use anyhow::{Result, anyhow};

use crate::harness::TestCluster;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-a
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: ghcr.io/wasmkube/hello:1.0}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 3
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers:
      - {name: main, image: ghcr.io/wasmkube/hello:1.0}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: ghcr.io/wasmkube/hello:1.0}
---
apiVersion: v1
kind: Event
metadata: {name: p.started}
involvedObject: {kind: Pod, name: p, namespace: default, apiVersion: v1}
reason: Started
message: Started container main
type: Normal
source: {component: wasmkube-agent}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: holder}
spec: {holderIdentity: me}
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: wasmtime}
handler: wasmtime
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {k: dg==}
"#;

/// The whitespace-separated columns of the header line.
fn header(output: &str) -> Vec<&str> {
    output
        .lines()
        .next()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

/// The row whose first column is `name`.
fn row<'a>(output: &'a str, name: &str) -> Result<Vec<&'a str>> {
    output
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
        .ok_or_else(|| anyhow!("no row {name} in:\n{output}"))
}

#[tokio::test]
async fn kubectl_tables_show_the_kubernetes_columns() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], OBJECTS)
        .await?;

    let out = cluster.kubectl_ok(&["get", "nodes"]).await?;
    assert_eq!(
        header(&out),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{out}"
    );
    let cols = row(&out, "node-a")?;
    assert_eq!(
        cols[1], "Unknown",
        "a node that never reported is Unknown: {out}"
    );

    let out = cluster.kubectl_ok(&["get", "deployments"]).await?;
    assert_eq!(
        header(&out),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(row(&out, "web")?[1], "0/2", "{out}");

    let out = cluster.kubectl_ok(&["get", "replicasets"]).await?;
    assert_eq!(
        header(&out),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{out}"
    );
    assert_eq!(row(&out, "rs")?[1], "3", "{out}");

    let out = cluster.kubectl_ok(&["get", "services"]).await?;
    assert_eq!(
        header(&out),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{out}"
    );
    let cols = row(&out, "web")?;
    assert_eq!(cols[1], "ClusterIP", "{out}");
    assert!(
        cols[2].parse::<Ipv4Addr>().is_ok(),
        "a ClusterIP service gets a virtual IP: {out}"
    );
    assert_eq!(cols[3], "<none>", "{out}");
    assert_eq!(cols[4], "80/TCP", "{out}");

    let out = cluster.kubectl_ok(&["get", "jobs"]).await?;
    assert_eq!(
        header(&out),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{out}"
    );
    let cols = row(&out, "once")?;
    assert_eq!(&cols[1..3], ["Running", "0/1"], "{out}");

    let out = cluster.kubectl_ok(&["get", "events"]).await?;
    assert_eq!(
        header(&out),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("pod/p"))
        .ok_or_else(|| anyhow!("the event is not listed:\n{out}"))?;
    for word in ["Normal", "Started", "Started container main"] {
        assert!(line.contains(word), "{word:?} missing from {line:?}");
    }

    for kind in [
        "configmaps",
        "secrets",
        "serviceaccounts",
        "leases",
        "runtimeclasses",
    ] {
        let out = cluster.kubectl_ok(&["get", kind]).await?;
        let head = header(&out);
        assert_eq!(head.first(), Some(&"NAME"), "{kind}: {out}");
        assert_eq!(head.last(), Some(&"AGE"), "{kind}: {out}");
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_discovery_short_names_and_explain_work() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    let out = cluster.kubectl_ok(&["api-resources"]).await?;
    // NAME SHORTNAMES APIVERSION NAMESPACED KIND ("" = no short name).
    for expected in [
        ["pods", "po", "v1", "true", "Pod"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
        ["nodes", "no", "v1", "false", "Node"],
        ["services", "svc", "v1", "true", "Service"],
        ["configmaps", "cm", "v1", "true", "ConfigMap"],
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["replicasets", "rs", "apps/v1", "true", "ReplicaSet"],
        ["daemonsets", "ds", "apps/v1", "true", "DaemonSet"],
        ["jobs", "", "batch/v1", "true", "Job"],
        ["leases", "", "coordination.k8s.io/v1", "true", "Lease"],
        [
            "runtimeclasses",
            "",
            "node.k8s.io/v1",
            "false",
            "RuntimeClass",
        ],
    ] {
        let cols = row(&out, expected[0])?;
        let want: Vec<&str> = expected.into_iter().filter(|c| !c.is_empty()).collect();
        assert_eq!(cols, want, "{out}");
    }

    cluster
        .kubectl_ok(&[
            "create",
            "deployment",
            "d",
            "--image=ghcr.io/wasmkube/hello:1.0",
        ])
        .await?;
    let out = cluster.kubectl_ok(&["get", "deploy", "-o", "name"]).await?;
    assert_eq!(out.trim(), "deployment.apps/d");
    let out = cluster
        .kubectl_ok(&["get", "ns", "default", "-o", "name"])
        .await?;
    assert_eq!(out.trim(), "namespace/default");

    let out = cluster
        .kubectl_ok(&["explain", "deployment.spec.replicas"])
        .await?;
    assert!(out.contains("replicas"), "{out}");
    assert!(out.contains("integer"), "{out}");
    let out = cluster
        .kubectl_ok(&["explain", "pod.spec.containers.image"])
        .await?;
    assert!(out.contains("image"), "{out}");

    let version = cluster.kubectl_ok(&["version", "-o", "json"]).await?;
    let version: serde_json::Value = serde_json::from_str(&version)?;
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{version:#}"
    );
    Ok(())
}
