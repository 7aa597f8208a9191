//! Events about pods (`Scheduled`, `FailedScheduling`) and, through
//! [`EventRecorder::record_object`], about any object (the controllers' `SuccessfulCreate`,
//! `ScalingReplicaSet`, ...), as `kubectl describe` and `kubectl get events` show them.
//!
//! Events are core/v1 Events from `source.component` = the scheduler's name. A repeat of the
//! same reason and message for the same pod bumps `count` and `lastTimestamp` of the earlier
//! Event instead of creating a new one (what `kubectl describe` shows as `(x5 over 3m)`).
//! Writing Events never slows scheduling: Events wait in a bounded queue that a background
//! task drains with at most `MAX_IN_FLIGHT` writes at once, so a burst of thousands of
//! `Scheduled` Events is written shortly after the burst, behind the bindings. Only when the
//! queue is full is an Event dropped (and counted), as Kubernetes' recorder drops Events
//! under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;
use crate::snapshot::PodInfo;

const MAX_IN_FLIGHT: usize = 32;
const QUEUE: usize = 16_384;
const MAX_REMEMBERED_SERIES: usize = 4096;

/// `Normal` events.
pub const NORMAL: &str = "Normal";
/// `Warning` events.
pub const WARNING: &str = "Warning";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    uid: String,
    reason: &'static str,
    message: String,
}

#[derive(Clone, Debug)]
struct Series {
    name: String,
    count: i32,
    first: Timestamp,
}

/// Writes Events about pods. Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    instance: String,
    queue: mpsc::Sender<Pending>,
    series: Arc<Mutex<HashMap<SeriesKey, Series>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("component", &self.component)
            .field("instance", &self.instance)
            .finish()
    }
}

/// An Event waiting to be written.
struct Pending {
    api: Api<Event>,
    event: Event,
    count: i32,
}

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

impl EventRecorder {
    /// A recorder reporting as `component` (the scheduler name) from `instance`. Starts
    /// the writer task (so it must be called within a Tokio runtime); the task ends when
    /// the last clone of the recorder is dropped.
    pub fn new(
        client: kube::Client,
        component: String,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(pending, metrics.clone()));
        EventRecorder {
            client,
            component,
            instance,
            queue,
            series: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        }
    }

    /// Records an Event about `pod` in the background.
    pub fn record(
        &self,
        pod: &PodInfo,
        type_: &'static str,
        reason: &'static str,
        action: &'static str,
        message: String,
    ) {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            resource_version: pod.pod.metadata.resource_version.clone(),
            field_path: None,
        };
        self.record_object(involved, type_, reason, action, message);
    }

    /// Records an Event about any object in the background. The Event lives in the
    /// object's namespace (`default` for cluster-scoped objects, as Kubernetes does).
    pub fn record_object(
        &self,
        involved: ObjectReference,
        type_: &'static str,
        reason: &'static str,
        action: &'static str,
        message: String,
    ) {
        let now = Timestamp::now();
        let name = involved.name.clone().unwrap_or_default();
        let namespace = involved
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = SeriesKey {
            uid: involved.uid.clone().unwrap_or_else(|| name.clone()),
            reason,
            message,
        };
        let series = {
            let Ok(mut map) = self.series.lock() else {
                return;
            };
            if map.len() >= MAX_REMEMBERED_SERIES && !map.contains_key(&key) {
                map.clear();
            }
            let entry = map.entry(key.clone()).or_insert_with(|| Series {
                name: event_name(&name, now),
                count: 0,
                first: now,
            });
            entry.count = entry.count.saturating_add(1);
            entry.clone()
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(series.name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.into()),
            message: Some(key.message),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(Time(series.first)),
            last_timestamp: Some(Time(now)),
            count: Some(series.count),
            event_time: None,
            related: None,
            series: None,
        };
        let pending = Pending {
            api: Api::namespaced(self.client.clone(), &namespace),
            event,
            count: series.count,
        };
        if self.queue.try_send(pending).is_err() {
            self.metrics.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Drains the queue, at most [`MAX_IN_FLIGHT`] writes at once.
async fn write_events(mut pending: mpsc::Receiver<Pending>, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(Pending { api, event, count }) = pending.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = write(&api, &event, count).await {
                metrics.events_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, event = ?event.metadata.name, "could not write event");
            }
        });
    }
}

/// Creates the Event, or bumps the count of the existing one of the series.
async fn write(api: &Api<Event>, event: &Event, count: i32) -> Result<(), kube::Error> {
    let name = event.metadata.name.clone().unwrap_or_default();
    if count > 1 {
        let patch = serde_json::json!({
            "count": count,
            "lastTimestamp": event.last_timestamp,
            "message": event.message,
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    match api.create(&PostParams::default(), event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// `<pod>.<hex>`, unique per process and time, like client-go's recorder.
fn event_name(pod: &str, now: Timestamp) -> String {
    let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{pod}.{:x}", nanos.wrapping_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_unique_even_at_the_same_instant() {
        let now = Timestamp::now();
        let a = event_name("p", now);
        let b = event_name("p", now);
        assert_ne!(a, b);
        assert!(a.starts_with("p."));
    }
}
