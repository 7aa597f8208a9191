//! The Event recorder against the real apiserver: repeats become one Event with a count,
//! similar Events are combined after ten messages, a source is held to its burst, and
//! Events for a namespace that does not exist are dropped without retrying.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, ListParams};
use wasmkube_client::events::COMBINED_PREFIX;
use wasmkube_client::{EventMetrics, EventRecorder, EventType, Reporter};

use wasmkube_apiserver::testing::TestApiserver;

const DEADLINE: Duration = Duration::from_secs(30);

fn recorder(client: &kube::Client) -> (EventRecorder, Arc<EventMetrics>) {
    let metrics = Arc::new(EventMetrics::default());
    let reporter = Reporter {
        component: "test-controller".into(),
        host: None,
        instance: "test-1".into(),
    };
    (
        EventRecorder::new(client.clone(), reporter, metrics.clone()),
        metrics,
    )
}

fn object(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("ReplicaSet".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectReference::default()
    }
}

/// Polls the Events of `name` until `done` holds for them.
async fn wait_events(
    client: &kube::Client,
    name: &str,
    done: impl Fn(&[Event]) -> bool,
) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let events = api
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await?
            .items;
        if done(&events) {
            return Ok(events);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("events of {name} never settled: {events:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn total(events: &[Event]) -> i32 {
    events.iter().map(|e| e.count.unwrap_or(1)).sum()
}

#[tokio::test]
async fn repeats_of_an_event_are_one_event_with_a_count() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let (recorder, metrics) = recorder(&client);
    for _ in 0..3 {
        recorder.record(
            object("default", "web"),
            EventType::Normal,
            "Scaled",
            "scaled to 3".into(),
        );
    }
    let events = wait_events(&client, "web", |e| total(e) == 3).await?;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.count, Some(3));
    assert_eq!(e.message.as_deref(), Some("scaled to 3"));
    assert_eq!(e.reason.as_deref(), Some("Scaled"));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("test-controller")
    );
    assert_eq!(e.reporting_instance.as_deref(), Some("test-1"));
    assert!(e.first_timestamp <= e.last_timestamp);
    assert_eq!(metrics.dropped.load(Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn similar_events_are_combined_after_ten_messages() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let (recorder, _metrics) = recorder(&client);
    for i in 0..12 {
        recorder.record(
            object("default", "rs"),
            EventType::Normal,
            "SuccessfulCreate",
            format!("Created pod: rs-{i}"),
        );
    }
    let events = wait_events(&client, "rs", |e| total(e) == 12 && e.len() == 10).await?;
    let combined: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with(COMBINED_PREFIX))
        })
        .collect();
    assert_eq!(combined.len(), 1, "{events:?}");
    assert_eq!(combined[0].count, Some(3));
    assert_eq!(
        combined[0].message.as_deref(),
        Some("(combined from similar events): Created pod: rs-11")
    );
    Ok(())
}

#[tokio::test]
async fn a_source_is_held_to_25_events_about_one_object() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let (recorder, metrics) = recorder(&client);
    for _ in 0..30 {
        recorder.record(
            object("default", "noisy"),
            EventType::Warning,
            "Unhealthy",
            "probe failed".into(),
        );
    }
    // The other object is not held back by the noisy one.
    recorder.record(
        object("default", "quiet"),
        EventType::Normal,
        "Scaled",
        "once".into(),
    );
    wait_events(&client, "quiet", |e| total(e) == 1).await?;
    let events = wait_events(&client, "noisy", |e| total(e) == 25).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(metrics.spam_filtered.load(Ordering::Relaxed), 5);
    Ok(())
}

#[tokio::test]
async fn events_for_a_missing_namespace_are_dropped_without_retrying() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let (recorder, metrics) = recorder(&client);
    recorder.record(
        object("nowhere", "ghost"),
        EventType::Normal,
        "Scaled",
        "m".into(),
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while metrics.dropped.load(Ordering::Relaxed) == 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("the event was neither written nor dropped");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.written.load(Ordering::Relaxed), 0);
    Ok(())
}
