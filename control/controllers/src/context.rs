//! What every controller shares: the API client, the configuration and Event recorders.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use wasmkube_scheduler::Metrics;
use wasmkube_scheduler::events::EventRecorder;

use crate::config::ControllersConfig;

/// `Normal` events.
pub use wasmkube_scheduler::events::NORMAL;
/// `Warning` events.
pub use wasmkube_scheduler::events::WARNING;

/// Shared by the controllers of one controller-manager. Cheap to clone (`Arc` it).
#[derive(Clone)]
pub struct Context {
    /// The API client every controller reads and writes with.
    pub client: kube::Client,
    /// The controller-manager's settings.
    pub config: ControllersConfig,
    metrics: Arc<Metrics>,
}

impl Context {
    /// A context over `client`.
    pub fn new(client: kube::Client, config: ControllersConfig) -> Self {
        Context {
            client,
            config,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// An Event recorder whose Events say they come from `component`
    /// (`replicaset-controller`, ... as kube-controller-manager's controllers name
    /// themselves; `kubectl describe` shows it in the `From` column). Call once per
    /// controller: it starts a background writer task.
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder {
            inner: EventRecorder::new(
                self.client.clone(),
                component.to_string(),
                self.config.identity.clone(),
                self.metrics.clone(),
            ),
        }
    }
}

/// Records Events about objects in the background (a write never blocks a reconcile;
/// repeats of the same reason and message bump `count`).
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: EventRecorder,
}

impl Recorder {
    /// Records an Event of `type_` ([`NORMAL`] or [`WARNING`]) about `object`.
    pub fn publish<K>(&self, object: &K, type_: &'static str, reason: &'static str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_ref(object.object_ref(&()), type_, reason, message);
    }

    /// Records an Event about the object `involved` refers to.
    pub fn publish_ref(
        &self,
        involved: ObjectReference,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) {
        self.inner
            .record_object(involved, type_, reason, reason, message);
    }
}
