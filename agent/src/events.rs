//! Events about pods (`core/v1` Event, source component `kubelet`), as `kubectl describe pod`
//! and `kubectl get events` show them.
//!
//! Reasons the agent records: `Pulling`/`Pulled` (image resolved from the node's store),
//! `Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`, `Failed`. A repeat of the same event
//! (same object, reason, message, type and field path) is not a new object: the existing one
//! gets `count + 1` and a new `lastTimestamp`, as the kubelet's event correlator does.
//!
//! Recording never blocks a pod worker: events go through a bounded queue to one task that
//! writes them; when the apiserver is away a write is retried a few times and then dropped
//! (events are best effort in Kubernetes too).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use wasmkube_client::status::{is_forbidden, is_not_found};

/// The event source component, as the kubelet's.
pub const COMPONENT: &str = "kubelet";
/// Queue length; events beyond it are dropped.
const QUEUE: usize = 1024;
/// Distinct events remembered for aggregation.
const CACHE_LIMIT: usize = 4096;
/// Attempts per event write.
const ATTEMPTS: u32 = 3;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEvent {
    /// The pod it is about.
    pub involved: ObjectReference,
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason (`Started`).
    pub reason: String,
    /// The message.
    pub message: String,
}

/// Records events; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<PodEvent>,
}

impl EventRecorder {
    /// Starts the writer task for node `node_name`.
    pub fn start(client: kube::Client, node_name: String) -> EventRecorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(client, node_name, rx));
        EventRecorder { tx }
    }

    /// A recorder whose events go to `tx` (tests).
    pub fn to_channel(tx: mpsc::Sender<PodEvent>) -> EventRecorder {
        EventRecorder { tx }
    }

    /// Records an event about `pod`, optionally about one of its containers
    /// (`fieldPath` `spec.containers{name}` or `spec.initContainers{name}`).
    pub fn pod(
        &self,
        pod: &Pod,
        container: Option<(&str, bool)>,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: container.map(|(name, init)| {
                if init {
                    format!("spec.initContainers{{{name}}}")
                } else {
                    format!("spec.containers{{{name}}}")
                }
            }),
        };
        let event = PodEvent {
            involved,
            type_,
            reason: reason.to_string(),
            message: message.into(),
        };
        if self.tx.try_send(event).is_err() {
            tracing::debug!(reason, "event queue full; dropping an event");
        }
    }
}

/// What identifies a repeat of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    field_path: String,
    type_: EventType,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
}

async fn write_events(client: kube::Client, node: String, mut rx: mpsc::Receiver<PodEvent>) {
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    while let Some(event) = rx.recv().await {
        let key = Key {
            uid: event.involved.uid.clone().unwrap_or_default(),
            field_path: event.involved.field_path.clone().unwrap_or_default(),
            type_: event.type_,
            reason: event.reason.clone(),
            message: event.message.clone(),
        };
        let namespace = event
            .involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let now = Timestamp::now();
        if let Some(prev) = seen.get(&key).cloned() {
            let count = prev.count + 1;
            let patch = serde_json::json!({
                "count": count,
                "lastTimestamp": Time(now),
            });
            let mut done = false;
            for attempt in 0..ATTEMPTS {
                match api
                    .patch(&prev.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        done = true;
                        break;
                    }
                    Err(e) if is_not_found(&e) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, attempt, "updating an event failed");
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                }
            }
            if done {
                seen.insert(key, Seen { count, ..prev });
                continue;
            }
        }
        let name = format!(
            "{}.{:x}",
            event.involved.name.clone().unwrap_or_default(),
            now.as_nanosecond()
        );
        let object = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: event.involved.clone(),
            reason: Some(event.reason.clone()),
            message: Some(event.message.clone()),
            type_: Some(event.type_.as_str().into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: Some(node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        for attempt in 0..ATTEMPTS {
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    if seen.len() >= CACHE_LIMIT {
                        seen.clear();
                    }
                    seen.insert(key, Seen { name, count: 1 });
                    break;
                }
                Err(e) if is_not_found(&e) || is_forbidden(&e) => {
                    // The namespace is gone (or we may not write there): nothing to do.
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "creating an event failed");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_events_name_the_container_field_path() {
        let (tx, mut rx) = mpsc::channel(4);
        let rec = EventRecorder::to_channel(tx);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        rec.pod(
            &pod,
            Some(("c", false)),
            EventType::Normal,
            "Started",
            "Started container c",
        );
        rec.pod(&pod, Some(("i", true)), EventType::Warning, "BackOff", "x");
        let e = rx.try_recv().unwrap();
        assert_eq!(e.involved.field_path.as_deref(), Some("spec.containers{c}"));
        assert_eq!(e.involved.kind.as_deref(), Some("Pod"));
        let e = rx.try_recv().unwrap();
        assert_eq!(
            e.involved.field_path.as_deref(),
            Some("spec.initContainers{i}")
        );
        assert_eq!(e.type_, EventType::Warning);
    }
}
