//! The Event recorder every component uses, as client-go's `tools/record`: core/v1 Events
//! as `kubectl describe` and `kubectl get events` show them (`source.component` in the
//! `From` column, `count` as `(x5 over 3m)`).
//!
//! [`EventRecorder::record`] never blocks and never fails: the Event goes into a bounded
//! queue (when it is full the Event is dropped and counted in [`EventMetrics::dropped`]).
//! One background task per recorder drains the queue through the [`correlator`] —
//! client-go's aggregation of similar Events into `(combined from similar events): ...`,
//! counting of repeats into one Event (`count + 1`, new `lastTimestamp`, by PATCH) and
//! spam filtering (25 Events per source and object, then one per 5 minutes) — and writes
//! them with a bounded number of writes in flight, retrying a few times while the
//! apiserver cannot answer and then giving up (Events are best effort in Kubernetes too).
//! So a burst of thousands of `Scheduled` Events is written shortly after the burst,
//! behind the bindings it reports.
//!
//! The scheduler (`default-scheduler`), each controller (`replicaset-controller`, ...) and
//! the node agent (`kubelet`, with the node as `source.host` and container field paths from
//! [`pod_reference`]) each own a recorder.

mod correlator;
mod dispatch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use tokio::sync::mpsc;

pub use correlator::COMBINED_PREFIX;

/// Events waiting to be correlated and written; more are dropped.
const QUEUE: usize = 16_384;
/// Event writes in flight at once.
const MAX_IN_FLIGHT: usize = 32;

/// `Normal` or `Warning` (an Event's `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong, or may.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Who reports: the Events' `source` and `reporting*` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// `source.component` and `reportingComponent` (`default-scheduler`, `kubelet`,
    /// `replicaset-controller`).
    pub component: String,
    /// `source.host`: the node, for the kubelet; `None` for control-plane components.
    pub host: Option<String>,
    /// `reportingInstance`: this process (its identity, or the node name).
    pub instance: String,
}

/// Counters of what the recorders did (shared by all recorders given the same `Arc`).
#[derive(Debug, Default)]
pub struct EventMetrics {
    /// Events handed to a recorder.
    pub recorded: AtomicU64,
    /// Event creates and patches the apiserver accepted.
    pub written: AtomicU64,
    /// Events lost: the queue was full, or the write failed for good.
    pub dropped: AtomicU64,
    /// Events skipped by the spam filter.
    pub spam_filtered: AtomicU64,
    /// Repeats folded into a later write of their series while one was in flight.
    pub coalesced: AtomicU64,
}

impl EventMetrics {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records Events in the background. Cheap to clone; the writer task ends once every clone
/// is dropped and the queue is written.
#[derive(Clone, Debug)]
pub struct EventRecorder {
    reporter: Arc<Reporter>,
    queue: mpsc::Sender<Event>,
    metrics: Arc<EventMetrics>,
}

impl EventRecorder {
    /// A recorder writing as `reporter` through `client`, counting into `metrics`. Starts
    /// the writer task, so it must be called within a Tokio runtime.
    pub fn new(client: kube::Client, reporter: Reporter, metrics: Arc<EventMetrics>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch::dispatch(
            pending,
            correlator::Correlator::new(correlator::CorrelatorOptions::default()),
            MAX_IN_FLIGHT,
            metrics.clone(),
            move |write| dispatch::write(client.clone(), write),
        ));
        EventRecorder {
            reporter: Arc::new(reporter),
            queue,
            metrics,
        }
    }

    /// Who this recorder reports as.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// The counters this recorder adds to.
    pub fn metrics(&self) -> &Arc<EventMetrics> {
        &self.metrics
    }

    /// Records an Event about the object `involved` refers to. The Event lives in the
    /// object's namespace (`default` for cluster-scoped objects, as Kubernetes does).
    pub fn record(
        &self,
        involved: ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        self.record_action(involved, type_, reason, None, message);
    }

    /// [`EventRecorder::record`] with the Event's `action` (what was done or failed:
    /// the scheduler's `Binding`, `Scheduling`).
    pub fn record_action(
        &self,
        involved: ObjectReference,
        type_: EventType,
        reason: &str,
        action: Option<&str>,
        message: String,
    ) {
        EventMetrics::inc(&self.metrics.recorded);
        let event = self.make_event(involved, type_, reason, action, message);
        if self.queue.try_send(event).is_err() {
            EventMetrics::inc(&self.metrics.dropped);
        }
    }

    /// Records an Event about `object`.
    pub fn publish<K>(&self, object: &K, type_: EventType, reason: &str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.record(object.object_ref(&()), type_, reason, message);
    }

    /// A fresh Event (client-go's `makeEvent`): count 1, named `<object>.<unique hex>`.
    fn make_event(
        &self,
        involved: ObjectReference,
        type_: EventType,
        reason: &str,
        action: Option<&str>,
        message: String,
    ) -> Event {
        let now = Timestamp::now();
        let name = involved.name.clone().unwrap_or_default();
        let namespace = involved
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string());
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&name, now)),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.as_str().to_string()),
            action: action.map(str::to_string),
            source: Some(EventSource {
                component: Some(self.reporter.component.clone()),
                host: self.reporter.host.clone(),
            }),
            reporting_component: Some(self.reporter.component.clone()),
            reporting_instance: Some(self.reporter.instance.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            event_time: None,
            related: None,
            series: None,
        }
    }
}

/// A reference to `pod`, or (`container`: name, and whether it is an init container) to one
/// of its containers by field path `spec.containers{name}` / `spec.initContainers{name}`,
/// as the kubelet refers to containers in its Events.
pub fn pod_reference(pod: &Pod, container: Option<(&str, bool)>) -> ObjectReference {
    ObjectReference {
        field_path: container.map(|(name, init)| {
            if init {
                format!("spec.initContainers{{{name}}}")
            } else {
                format!("spec.containers{{{name}}}")
            }
        }),
        ..pod.object_ref(&())
    }
}

/// `<object>.<hex>`, unique per process and time, like client-go's Event names.
fn event_name(object: &str, now: Timestamp) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{object}.{:x}", nanos.wrapping_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("u".into());
        pod
    }

    #[test]
    fn event_names_are_unique_even_at_the_same_instant() {
        let now = Timestamp::now();
        let a = event_name("p", now);
        let b = event_name("p", now);
        assert_ne!(a, b);
        assert!(a.starts_with("p."));
    }

    #[test]
    fn container_references_name_the_container_by_field_path() {
        let c = pod_reference(&pod(), Some(("c", false)));
        assert_eq!(c.field_path.as_deref(), Some("spec.containers{c}"));
        assert_eq!(c.kind.as_deref(), Some("Pod"));
        assert_eq!(c.uid.as_deref(), Some("u"));
        let i = pod_reference(&pod(), Some(("i", true)));
        assert_eq!(i.field_path.as_deref(), Some("spec.initContainers{i}"));
        assert_eq!(pod_reference(&pod(), None).field_path, None);
    }

    #[tokio::test]
    async fn recording_never_blocks_and_a_full_queue_counts_the_drop() {
        let (queue, mut pending) = mpsc::channel(1);
        let metrics = Arc::new(EventMetrics::default());
        let recorder = EventRecorder {
            reporter: Arc::new(Reporter {
                component: "kubelet".into(),
                host: Some("node-1".into()),
                instance: "node-1".into(),
            }),
            queue,
            metrics: metrics.clone(),
        };
        recorder.record(
            pod_reference(&pod(), None),
            EventType::Normal,
            "Pulled",
            "a".into(),
        );
        recorder.record(
            pod_reference(&pod(), None),
            EventType::Normal,
            "Pulled",
            "b".into(),
        );
        assert_eq!(metrics.recorded.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.dropped.load(Ordering::Relaxed), 1);
        let e = pending.try_recv().expect("the first event is queued");
        assert_eq!(e.message.as_deref(), Some("a"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        let source = e.source.unwrap_or_default();
        assert_eq!(source.component.as_deref(), Some("kubelet"));
        assert_eq!(source.host.as_deref(), Some("node-1"));
        assert_eq!(e.reporting_instance.as_deref(), Some("node-1"));
        assert_eq!(e.count, Some(1));
    }

    #[test]
    fn events_about_cluster_scoped_objects_live_in_default() {
        let metrics = Arc::new(EventMetrics::default());
        let (queue, _pending) = mpsc::channel(1);
        let recorder = EventRecorder {
            reporter: Arc::new(Reporter {
                component: "node-controller".into(),
                host: None,
                instance: "me".into(),
            }),
            queue,
            metrics,
        };
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..ObjectReference::default()
        };
        let e = recorder.make_event(node, EventType::Normal, "NodeNotReady", None, "m".into());
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert!(
            e.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("n1."))
        );
        assert_eq!(e.source.and_then(|s| s.host), None);
    }
}
