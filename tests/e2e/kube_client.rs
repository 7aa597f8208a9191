//! Proves that kube-rs, the client every wasmkube component uses, works against the server with
//! typed APIs: create / get / list / replace / delete, watch from a list's resourceVersion
//! (ADDED, MODIFIED, DELETED in order), 409 Conflict on a replace with a stale resourceVersion,
//! and the watch contract under compaction: a watch resumed from a compacted resourceVersion
//! gets 410 Gone, after which a relist (and `kube::runtime::watcher`) recovers the full state.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::harness::{POLL_INTERVAL, TestCluster};

/// How long to wait for one watch event.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// A labelled configmap with one data entry.
fn configmap(name: &str, label: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("test".to_owned(), label.to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("value".to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    }
}

/// The `value` data entry of a configmap.
fn value_of(cm: &ConfigMap) -> Option<&str> {
    cm.data.as_ref()?.get("value").map(String::as_str)
}

/// Create namespace `name` through kube-rs.
pub(crate) async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Is `err` an API error with HTTP `code`?
fn is_api_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

#[tokio::test]
async fn kube_rs_typed_crud_watch_and_conflict() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    create_namespace(&client, "typed").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "typed");

    let created = api
        .create(&PostParams::default(), &configmap("a", "typed", "1"))
        .await?;
    assert_eq!(created.name_any(), "a");
    assert_eq!(created.namespace().as_deref(), Some("typed"));
    let uid = created
        .uid()
        .ok_or_else(|| anyhow!("no uid: {created:?}"))?;
    let rv1 = created
        .resource_version()
        .ok_or_else(|| anyhow!("no resourceVersion: {created:?}"))?;
    assert!(created.creation_timestamp().is_some());

    let fetched = api.get("a").await?;
    assert_eq!(fetched.uid().as_deref(), Some(uid.as_str()));
    assert_eq!(fetched.resource_version().as_deref(), Some(rv1.as_str()));
    assert_eq!(value_of(&fetched), Some("1"));

    let missing = api
        .get("nope")
        .await
        .err()
        .ok_or_else(|| anyhow!("get nope succeeded"))?;
    assert!(is_api_code(&missing, 404), "{missing:?}");

    let list = api
        .list(&ListParams::default().labels("test=typed"))
        .await?;
    assert_eq!(list.items.len(), 1);
    let list_rv = list
        .metadata
        .resource_version
        .ok_or_else(|| anyhow!("a list has a resourceVersion"))?;

    let mut events = api
        .watch(&WatchParams::default().labels("test=typed"), &list_rv)
        .await?
        .boxed();

    api.create(&PostParams::default(), &configmap("b", "typed", "b"))
        .await?;

    let mut updated = fetched.clone();
    updated.data = Some(BTreeMap::from([("value".to_owned(), "2".to_owned())]));
    let replaced = api.replace("a", &PostParams::default(), &updated).await?;
    assert_eq!(value_of(&replaced), Some("2"));
    assert_ne!(replaced.resource_version(), Some(rv1.clone()));
    assert_eq!(replaced.uid().as_deref(), Some(uid.as_str()));

    // `updated` still carries rv1: replacing with it again is a lost update, refused with 409.
    let mut stale = updated.clone();
    stale.data = Some(BTreeMap::from([("value".to_owned(), "stale".to_owned())]));
    let conflict = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .err()
        .ok_or_else(|| anyhow!("a replace with a stale resourceVersion succeeded"))?;
    match &conflict {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert_eq!(status.reason, "Conflict", "{status:?}");
        }
        other => bail!("expected a 409 Status, got {other:?}"),
    }
    assert_eq!(value_of(&api.get("a").await?), Some("2"));

    api.delete("a", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(EVENT_DEADLINE, events.next())
            .await
            .map_err(|_| anyhow!("watch stalled after {seen:?}"))?
            .ok_or_else(|| anyhow!("watch ended after {seen:?}"))??;
        match event {
            WatchEvent::Added(cm) => {
                seen.push(("ADDED", cm.name_any(), value_of(&cm).map(str::to_owned)))
            }
            WatchEvent::Modified(cm) => {
                seen.push(("MODIFIED", cm.name_any(), value_of(&cm).map(str::to_owned)));
            }
            WatchEvent::Deleted(cm) => {
                seen.push(("DELETED", cm.name_any(), value_of(&cm).map(str::to_owned)))
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => bail!("watch error: {status:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "b".to_owned(), Some("b".to_owned())),
            ("MODIFIED", "a".to_owned(), Some("2".to_owned())),
            ("DELETED", "a".to_owned(), Some("2".to_owned())),
        ]
    );

    // Every namespace also gets the root-CA publisher's kube-root-ca.crt, as in Kubernetes.
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|name| name != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["b"]);
    Ok(())
}

/// Outcome of one attempt to resume a watch from an old resourceVersion.
enum Resume {
    /// The server answered 410 Gone (as an HTTP status or as an ERROR event).
    Gone,
    /// The server still had the history and delivered events.
    StillAvailable,
}

async fn try_resume(api: &Api<ConfigMap>, rv: &str) -> Result<Resume> {
    let params = WatchParams::default().labels("test=compaction").timeout(20);
    let mut stream = match api.watch(&params, rv).await {
        Ok(stream) => stream.boxed(),
        Err(e) if is_api_code(&e, 410) => return Ok(Resume::Gone),
        Err(e) => return Err(e).context("starting the watch"),
    };
    let first = tokio::time::timeout(EVENT_DEADLINE, stream.next())
        .await
        .map_err(|_| anyhow!("a watch from {rv} delivered nothing"))?;
    match first {
        Some(Ok(WatchEvent::Error(status))) if status.code == 410 => Ok(Resume::Gone),
        Some(Err(e)) if is_api_code(&e, 410) => Ok(Resume::Gone),
        Some(Ok(WatchEvent::Error(status))) => bail!("unexpected watch error {status:?}"),
        Some(Ok(_)) => Ok(Resume::StillAvailable),
        Some(Err(e)) => Err(e).context("reading the watch"),
        None => bail!("a watch from {rv} ended without an event"),
    }
}

#[tokio::test]
async fn kube_rs_watch_from_compacted_version_gets_410_and_relist_recovers() -> Result<()> {
    const OBJECTS: usize = 10;
    let cluster = TestCluster::builder()
        .without_controllers()
        .history_max_events(20)
        .start()
        .await?;
    let client = cluster.client().await?;
    create_namespace(&client, "compaction").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "compaction");

    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..OBJECTS {
        let name = format!("cm-{i}");
        api.create(&PostParams::default(), &configmap(&name, "compaction", "0"))
            .await?;
        expected.insert(name, "0".to_owned());
    }
    let list = api
        .list(&ListParams::default().labels("test=compaction"))
        .await?;
    assert_eq!(list.items.len(), OBJECTS);
    let old_rv = list
        .metadata
        .resource_version
        .ok_or_else(|| anyhow!("a list has a resourceVersion"))?;

    // Far more writes than the history keeps, then keep writing until compaction has caught up
    // (it runs in the background) and a watch from the old version is refused.
    let mut round = 0u32;
    let write_round = |round: u32| {
        let api = api.clone();
        async move {
            let mut values = Vec::new();
            for i in 0..OBJECTS {
                let name = format!("cm-{i}");
                let mut cm = api.get(&name).await?;
                let value = format!("{round}");
                cm.data = Some(BTreeMap::from([("value".to_owned(), value.clone())]));
                api.replace(&name, &PostParams::default(), &cm).await?;
                values.push((name, value));
            }
            Ok::<_, anyhow::Error>(values)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let writes_so_far = round as usize * OBJECTS;
        if writes_so_far < 60 {
            round += 1;
            expected.extend(write_round(round).await?);
            continue;
        }
        match try_resume(&api, &old_rv).await? {
            Resume::Gone => break,
            Resume::StillAvailable => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "a watch from resourceVersion {old_rv} still worked after {writes_so_far} writes \
                 with --history-max-events 20"
            );
        }
        round += 1;
        expected.extend(write_round(round).await?);
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // The relist a client does after 410 returns the whole current state.
    let relist = api
        .list(&ListParams::default().labels("test=compaction"))
        .await?;
    let got: BTreeMap<String, String> = relist
        .items
        .iter()
        .map(|cm| (cm.name_any(), value_of(cm).unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(got, expected);
    let relist_rv = relist
        .metadata
        .resource_version
        .ok_or_else(|| anyhow!("a list has a resourceVersion"))?;

    // A watch from the relist's version works and sees the next change.
    let mut stream = api
        .watch(
            &WatchParams::default().labels("test=compaction"),
            &relist_rv,
        )
        .await?
        .boxed();
    let mut cm = api.get("cm-0").await?;
    cm.data = Some(BTreeMap::from([("value".to_owned(), "after".to_owned())]));
    api.replace("cm-0", &PostParams::default(), &cm).await?;
    expected.insert("cm-0".to_owned(), "after".to_owned());
    loop {
        let event = tokio::time::timeout(EVENT_DEADLINE, stream.next())
            .await
            .map_err(|_| anyhow!("no event after the relist"))?
            .ok_or_else(|| anyhow!("watch after relist ended"))??;
        match event {
            WatchEvent::Modified(cm) if cm.name_any() == "cm-0" => {
                assert_eq!(value_of(&cm), Some("after"));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected event after relist: {other:?}"),
        }
    }

    // kube-runtime's watcher (what controllers use) converges on the same state.
    let mut initial: BTreeMap<String, String> = BTreeMap::new();
    let mut watch = watcher(
        api.clone(),
        watcher::Config::default().labels("test=compaction"),
    )
    .boxed();
    loop {
        let event = tokio::time::timeout(EVENT_DEADLINE, watch.try_next())
            .await
            .map_err(|_| anyhow!("watcher stalled during its initial list"))?
            .context("watcher failed")?
            .ok_or_else(|| anyhow!("watcher ended"))?;
        match event {
            watcher::Event::Init => initial.clear(),
            watcher::Event::InitApply(cm) => {
                initial.insert(cm.name_any(), value_of(&cm).unwrap_or_default().to_owned());
            }
            watcher::Event::InitDone => break,
            other => bail!("unexpected watcher event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, expected);
    Ok(())
}
