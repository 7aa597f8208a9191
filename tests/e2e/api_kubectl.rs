//! Proves that the real `kubectl` can change objects the way users do, with Kubernetes'
//! semantics: `label` / `annotate` (with and without `--overwrite`, and removal), `scale`
//! through the scale subresource, `patch` with merge, JSON and strategic merge patches (list
//! merge keys: a strategic patch of one container keeps the others, a merge patch replaces the
//! list), and `delete` with graceful deletion of scheduled pods, immediate deletion of
//! unscheduled ones, forced deletion, and finalizers that hold an object until removed.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use crate::harness::{TestCluster, poll_until};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  replicas: 1
  selector:
    matchLabels: {app: d}
  template:
    metadata:
      labels: {app: d}
    spec:
      containers:
      - name: a
        image: ghcr.io/wasmkube/a:1.0
        env:
        - {name: KEEP, value: "yes"}
      - name: b
        image: ghcr.io/wasmkube/b:1.0
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  labels: {app: p}
spec:
  containers:
  - {name: main, image: ghcr.io/wasmkube/hello:1.0}
"#;

/// The containers of a deployment's pod template as (name, object) pairs.
fn containers(deploy: &Value) -> Vec<(String, Value)> {
    deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["name"].as_str().unwrap_or_default().to_owned(), c.clone()))
        .collect()
}

/// The env entries of one container as (name, value) pairs.
fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn kubectl_label_and_annotate_change_metadata() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster.kubectl_ok_stdin(&["apply", "-f", "-"], POD).await?;

    let out = cluster
        .kubectl_ok(&["label", "pod", "p", "tier=web"])
        .await?;
    assert_eq!(out.trim(), "pod/p labeled");
    let pod = cluster.kubectl_json(&["get", "pod", "p"]).await?;
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "p", "tier": "web"})
    );

    let err = cluster
        .kubectl_fails(&["label", "pod", "p", "tier=db"])
        .await?;
    assert!(err.contains("--overwrite"), "stderr: {err}");

    cluster
        .kubectl_ok(&["label", "pod", "p", "tier=db", "--overwrite"])
        .await?;
    let pod = cluster.kubectl_json(&["get", "pod", "p"]).await?;
    assert_eq!(pod["metadata"]["labels"]["tier"], "db");

    let out = cluster.kubectl_ok(&["label", "pod", "p", "tier-"]).await?;
    assert_eq!(out.trim(), "pod/p unlabeled");
    let pod = cluster.kubectl_json(&["get", "pod", "p"]).await?;
    assert_eq!(pod["metadata"]["labels"], json!({"app": "p"}));

    // Selectors see the change: the pod is found by its new label only while it has it.
    cluster
        .kubectl_ok(&["label", "pod", "p", "color=red"])
        .await?;
    let out = cluster
        .kubectl_ok(&["get", "pods", "-l", "color=red", "-o", "name"])
        .await?;
    assert_eq!(out.trim(), "pod/p");

    let out = cluster
        .kubectl_ok(&["annotate", "pod", "p", "example.com/note=hello world"])
        .await?;
    assert_eq!(out.trim(), "pod/p annotated");
    let pod = cluster.kubectl_json(&["get", "pod", "p"]).await?;
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/note"],
        "hello world"
    );

    cluster
        .kubectl_ok(&[
            "annotate",
            "pod",
            "p",
            "example.com/note=bye",
            "--overwrite",
        ])
        .await?;
    let pod = cluster.kubectl_json(&["get", "pod", "p"]).await?;
    assert_eq!(pod["metadata"]["annotations"]["example.com/note"], "bye");

    cluster
        .kubectl_ok(&["annotate", "pod", "p", "example.com/note-"])
        .await?;
    let pod = cluster.kubectl_json(&["get", "pod", "p"]).await?;
    assert!(
        pod["metadata"]["annotations"]
            .get("example.com/note")
            .is_none(),
        "{pod:#}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_scale_and_patch_a_deployment() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], DEPLOYMENT)
        .await?;
    let before = cluster.kubectl_json(&["get", "deployment", "d"]).await?;
    let generation_before = before["metadata"]["generation"]
        .as_i64()
        .unwrap_or_default();

    let out = cluster
        .kubectl_ok(&["scale", "deployment", "d", "--replicas=3"])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/d scaled");
    let deploy = cluster.kubectl_json(&["get", "deployment", "d"]).await?;
    assert_eq!(deploy["spec"]["replicas"], 3, "{deploy:#}");
    assert!(
        deploy["metadata"]["generation"]
            .as_i64()
            .unwrap_or_default()
            > generation_before,
        "a spec change bumps generation: {deploy:#}"
    );
    let scale = cluster
        .kubectl_ok(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/d/scale",
        ])
        .await?;
    let scale: Value = serde_json::from_str(&scale)?;
    assert_eq!(scale["kind"], "Scale", "{scale:#}");
    assert_eq!(scale["apiVersion"], "autoscaling/v1", "{scale:#}");
    assert_eq!(scale["spec"]["replicas"], 3, "{scale:#}");

    // Strategic merge patch (kubectl's default for built-in kinds): containers merge by name.
    let strategic = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "FOO", "value": "bar"}]}
    ]}}}});
    let out = cluster
        .kubectl_ok(&["patch", "deployment", "d", "-p", &strategic.to_string()])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/d patched");
    let deploy = cluster.kubectl_json(&["get", "deployment", "d"]).await?;
    let cs = containers(&deploy);
    let names: Vec<&str> = cs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "strategic patch must keep container b: {deploy:#}"
    );
    let env_a = env_of(&cs[0].1);
    assert!(env_a.contains(&("FOO".into(), "bar".into())), "{env_a:?}");
    assert!(
        env_a.contains(&("KEEP".into(), "yes".into())),
        "env merges by name: {env_a:?}"
    );
    assert_eq!(cs[1].1["image"], "ghcr.io/wasmkube/b:1.0");
    assert_eq!(cs[0].1["image"], "ghcr.io/wasmkube/a:1.0");

    // JSON patch: precise operations on paths.
    let json_patch = json!([
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "ghcr.io/wasmkube/b:2.0"},
        {"op": "add", "path": "/metadata/labels", "value": {"patched": "json"}}
    ]);
    cluster
        .kubectl_ok(&[
            "patch",
            "deployment",
            "d",
            "--type",
            "json",
            "-p",
            &json_patch.to_string(),
        ])
        .await?;
    let deploy = cluster.kubectl_json(&["get", "deployment", "d"]).await?;
    assert_eq!(containers(&deploy)[1].1["image"], "ghcr.io/wasmkube/b:2.0");
    assert_eq!(deploy["metadata"]["labels"]["patched"], "json");

    // A failing `test` operation makes the whole JSON patch fail and change nothing.
    let failing = json!([
        {"op": "test", "path": "/spec/replicas", "value": 99},
        {"op": "replace", "path": "/spec/replicas", "value": 5}
    ]);
    cluster
        .kubectl_fails(&[
            "patch",
            "deployment",
            "d",
            "--type",
            "json",
            "-p",
            &failing.to_string(),
        ])
        .await?;
    let deploy = cluster.kubectl_json(&["get", "deployment", "d"]).await?;
    assert_eq!(deploy["spec"]["replicas"], 3);

    // Merge patch (RFC 7386): maps merge, null deletes, lists are replaced wholesale.
    let merge = json!({
        "metadata": {"labels": {"patched": null, "merged": "yes"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "ghcr.io/wasmkube/a:3.0"}
        ]}}}
    });
    cluster
        .kubectl_ok(&[
            "patch",
            "deployment",
            "d",
            "--type",
            "merge",
            "-p",
            &merge.to_string(),
        ])
        .await?;
    let deploy = cluster.kubectl_json(&["get", "deployment", "d"]).await?;
    let cs = containers(&deploy);
    assert_eq!(cs.len(), 1, "a merge patch replaces the list: {deploy:#}");
    assert_eq!(cs[0].1["image"], "ghcr.io/wasmkube/a:3.0");
    assert_eq!(deploy["metadata"]["labels"], json!({"merged": "yes"}));

    // A configmap, the simplest target for a merge patch of a map.
    cluster
        .kubectl_ok(&["create", "configmap", "c", "--from-literal=a=1"])
        .await?;
    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "c",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ])
        .await?;
    let cm = cluster.kubectl_json(&["get", "configmap", "c"]).await?;
    assert_eq!(cm["data"], json!({"a": "1", "b": "2"}));
    Ok(())
}

#[tokio::test]
async fn kubectl_delete_honours_graceful_deletion_and_finalizers() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    // A configmap goes away at once.
    cluster
        .kubectl_ok(&["create", "configmap", "gone", "--from-literal=k=v"])
        .await?;
    let out = cluster.kubectl_ok(&["delete", "configmap", "gone"]).await?;
    assert_eq!(out.trim(), r#"configmap "gone" deleted"#);
    let err = cluster.kubectl_fails(&["get", "configmap", "gone"]).await?;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    // Deleting by label selector.
    for name in ["sel-1", "sel-2"] {
        cluster
            .kubectl_ok(&["create", "configmap", name, "--from-literal=k=v"])
            .await?;
        cluster
            .kubectl_ok(&["label", "configmap", name, "group=g"])
            .await?;
    }
    cluster
        .kubectl_ok(&["delete", "configmap", "-l", "group=g"])
        .await?;
    let out = cluster
        .kubectl_ok(&["get", "configmap", "-l", "group=g", "-o", "name"])
        .await?;
    assert!(out.trim().is_empty(), "{out}");

    // A pod that was never scheduled has nothing to stop: Kubernetes deletes it immediately.
    cluster.kubectl_ok_stdin(&["apply", "-f", "-"], POD).await?;
    cluster
        .kubectl_ok(&["delete", "pod", "p", "--wait=false"])
        .await?;
    let err = cluster.kubectl_fails(&["get", "pod", "p"]).await?;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    // A pod bound to a node is deleted gracefully: it stays, Terminating, until the node's agent
    // confirms (there is none here) or someone forces it.
    let bound = POD
        .replace("name: p\n", "name: bound\n")
        .replace("spec:\n", "spec:\n  nodeName: node-a\n");
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &bound)
        .await?;
    let out = cluster
        .kubectl_ok(&["delete", "pod", "bound", "--wait=false"])
        .await?;
    assert_eq!(out.trim(), r#"pod "bound" deleted"#);
    let pod = cluster.kubectl_json(&["get", "pod", "bound"]).await?;
    assert!(
        pod["metadata"]["deletionTimestamp"].as_str().is_some(),
        "graceful deletion sets deletionTimestamp: {pod:#}"
    );
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30, "{pod:#}");
    let table = cluster.kubectl_ok(&["get", "pod", "bound"]).await?;
    assert!(table.contains("Terminating"), "{table}");

    let out = cluster
        .kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"])
        .await?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains(r#"pod "bound" force deleted"#),
        "{out:?}"
    );
    let err = cluster.kubectl_fails(&["get", "pod", "bound"]).await?;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    // A finalizer keeps the object, marked for deletion, until it is removed.
    let kept = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: kept
  finalizers: ["example.com/keep"]
data: {k: v}
"#;
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], kept)
        .await?;
    cluster
        .kubectl_ok(&["delete", "configmap", "kept", "--wait=false"])
        .await?;
    let cm = cluster.kubectl_json(&["get", "configmap", "kept"]).await?;
    assert!(
        cm["metadata"]["deletionTimestamp"].as_str().is_some(),
        "{cm:#}"
    );
    assert_eq!(cm["metadata"]["finalizers"], json!(["example.com/keep"]));
    assert_eq!(cm["data"]["k"], "v");

    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "kept",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .await?;
    poll_until(
        "the finalized configmap to vanish",
        Duration::from_secs(30),
        || async {
            let out = cluster.kubectl(&["get", "configmap", "kept"]).await?;
            if out.status.success() {
                return Ok(None);
            }
            if out.stderr.contains("NotFound") || out.stderr.contains("not found") {
                Ok(Some(()))
            } else {
                Err(anyhow!("unexpected kubectl error: {}", out.stderr))
            }
        },
    )
    .await?;
    Ok(())
}
