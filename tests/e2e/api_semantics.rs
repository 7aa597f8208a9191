//! Proves the finer API semantics controllers and tools rely on, through kube-rs: list paging
//! with limit/continue (complete, ordered, no duplicates), generateName, dryRun=All (validated,
//! answered, not stored), deletecollection with a selector, status written only through the
//! /status subresource (and spec never through it), generation bumped by spec changes only,
//! watches that end on their own at timeoutSeconds and accept allowWatchBookmarks, and a
//! terminating namespace that refuses new content.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::harness::TestCluster;
use crate::kube_client::create_namespace;

fn labelled_configmap(name: &str, label: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("test".to_owned(), label.to_owned())])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn paging_generate_name_dry_run_and_deletecollection() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    create_namespace(&client, "semantics").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "semantics");

    let mut expected: Vec<String> = (0..25).map(|i| format!("page-{i:02}")).collect();
    for name in expected.iter().rev() {
        api.create(&PostParams::default(), &labelled_configmap(name, "paging"))
            .await?;
    }
    expected.sort();

    // Pages of 10: 10 + 10 + 5, in name order, then no continue token.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = ListParams::default().labels("test=paging").limit(10);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await?;
        pages += 1;
        assert!(page.items.len() <= 10, "a page larger than the limit");
        seen.extend(page.items.iter().map(ResourceExt::name_any));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
        if pages > 10 {
            bail!("paging does not terminate; seen {seen:?}");
        }
    }
    assert_eq!(pages, 3, "25 objects in pages of 10");
    assert_eq!(
        seen, expected,
        "pages are complete, ordered and without duplicates"
    );

    // generateName: the server picks a unique name with the prefix.
    let mut generated = labelled_configmap("", "generated");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".to_owned());
    let a = api.create(&PostParams::default(), &generated).await?;
    let b = api.create(&PostParams::default(), &generated).await?;
    for cm in [&a, &b] {
        let name = cm.name_any();
        assert!(name.starts_with("gen-") && name.len() > 4, "{name}");
        assert_eq!(cm.metadata.generate_name.as_deref(), Some("gen-"));
    }
    assert_ne!(a.name_any(), b.name_any());

    // dryRun=All: answered like a create, validated, but nothing is stored.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answer = api.create(&dry, &labelled_configmap("dry", "dry")).await?;
    assert_eq!(answer.name_any(), "dry");
    assert!(
        api.get_opt("dry").await?.is_none(),
        "a dry run stored the object"
    );
    let invalid = api
        .create(&dry, &labelled_configmap("Not_Valid", "dry"))
        .await
        .err()
        .ok_or_else(|| anyhow!("a dry run skipped validation"))?;
    assert!(
        matches!(&invalid, kube::Error::Api(s) if s.code == 422),
        "{invalid:?}"
    );

    // deletecollection removes exactly what the selector matches.
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("test=paging"),
    )
    .await?;
    let left = api
        .list(&ListParams::default().labels("test=paging"))
        .await?;
    assert!(left.items.is_empty(), "{:?}", left.items.len());
    let generated_left = api
        .list(&ListParams::default().labels("test=generated"))
        .await?;
    assert_eq!(generated_left.items.len(), 2);
    Ok(())
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "main", "image": "ghcr.io/wasmkube/hello:1.0"}]}
            }
        }
    }))?;
    let created = deployments.create(&PostParams::default(), &deploy).await?;
    assert_eq!(created.metadata.generation, Some(1));

    // Status sent to the main resource is ignored.
    let mut with_status = created.clone();
    with_status.status = Some(serde_json::from_value(
        json!({"replicas": 5, "readyReplicas": 5}),
    )?);
    with_status
        .labels_mut()
        .insert("touched".to_owned(), "yes".to_owned());
    let replaced = deployments
        .replace("d", &PostParams::default(), &with_status)
        .await?;
    assert_eq!(
        replaced.labels().get("touched").map(String::as_str),
        Some("yes")
    );
    let status_replicas = replaced.status.as_ref().and_then(|s| s.replicas);
    assert!(
        matches!(status_replicas, None | Some(0)),
        "status changed through the main resource: {:?}",
        replaced.status
    );
    assert_eq!(
        replaced.metadata.generation,
        Some(1),
        "metadata changes keep generation"
    );

    // Through /status, status changes and spec does not; generation stays.
    let patched = deployments
        .patch_status(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}, "status": {"replicas": 2, "observedGeneration": 1}})),
        )
        .await?;
    assert_eq!(patched.status.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(patched.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(patched.metadata.generation, Some(1));
    let fetched = deployments.get_status("d").await?;
    assert_eq!(fetched.status.as_ref().and_then(|s| s.replicas), Some(2));

    // A spec change through the main resource bumps generation and keeps the status.
    let patched = deployments
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.status.as_ref().and_then(|s| s.replicas), Some(2));

    // The same for pods: phase is the agent's to report, through /status.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "ghcr.io/wasmkube/hello:1.0"}]}
    }))?;
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    assert_eq!(phase(&pod).as_deref(), Some("Pending"));
    let patched = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await?;
    assert_eq!(phase(&patched).as_deref(), Some("Pending"));
    let patched = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await?;
    assert_eq!(phase(&patched).as_deref(), Some("Running"));
    Ok(())
}

#[tokio::test]
async fn watches_end_at_their_timeout_and_accept_bookmarks() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();

    // kube-rs sends allowWatchBookmarks=true by default.
    let params = WatchParams::default().timeout(2);
    let mut stream = api.watch(&params, &rv).await?.boxed();
    api.create(&PostParams::default(), &labelled_configmap("w", "watch"))
        .await?;
    let mut added = false;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = stream.next().await {
            match event? {
                WatchEvent::Added(cm) => added |= cm.name_any() == "w",
                WatchEvent::Bookmark(b) => {
                    assert!(
                        !b.metadata.resource_version.is_empty(),
                        "a bookmark has a version"
                    );
                }
                WatchEvent::Error(status) => bail!("watch error {status:?}"),
                WatchEvent::Modified(_) | WatchEvent::Deleted(_) => {}
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match ended {
        Ok(result) => result?,
        Err(_) => bail!("a watch with timeoutSeconds=2 was still open after 60 s"),
    }
    assert!(added, "the watch delivered the create before it ended");
    Ok(())
}

#[tokio::test]
async fn a_terminating_namespace_refuses_new_content() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    create_namespace(&client, "doomed").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    cms.create(
        &PostParams::default(),
        &labelled_configmap("inside", "doomed"),
    )
    .await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await?;
    if let Some(ns) = namespaces.get_opt("doomed").await? {
        assert!(ns.metadata.deletion_timestamp.is_some(), "{ns:?}");
        let phase = ns.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(phase.as_deref(), Some("Terminating"), "{ns:?}");
    }
    let refused = cms
        .create(
            &PostParams::default(),
            &labelled_configmap("late", "doomed"),
        )
        .await
        .err()
        .ok_or_else(|| anyhow!("created an object in a terminating namespace"))?;
    match &refused {
        // Kubernetes: 403 Forbidden while the namespace is terminating, 404 once it is gone.
        kube::Error::Api(s) if s.code == 403 => {
            assert_eq!(s.reason, "Forbidden", "{s:?}");
            assert!(s.message.contains("being terminated"), "{s:?}");
        }
        kube::Error::Api(s) if s.code == 404 => {}
        other => bail!("unexpected error creating into a terminating namespace: {other:?}"),
    }
    Ok(())
}
