//! What every controller shares: the API client, the configuration and Event recorders.

use std::sync::Arc;

use wasmkube_client::events::{EventMetrics, EventType, Reporter};

use crate::config::ControllersConfig;

/// Records Events about objects in the background (`wasmkube-client`'s recorder: a write
/// never blocks a reconcile; repeats are counted, similar Events combined, spam filtered).
pub use wasmkube_client::events::EventRecorder as Recorder;

/// `Normal` events.
pub const NORMAL: EventType = EventType::Normal;
/// `Warning` events.
pub const WARNING: EventType = EventType::Warning;

/// Shared by the controllers of one controller-manager. Cheap to clone (`Arc` it).
#[derive(Clone)]
pub struct Context {
    /// The API client every controller reads and writes with.
    pub client: kube::Client,
    /// The controller-manager's settings.
    pub config: ControllersConfig,
    /// What the controllers' Event recorders did.
    pub events: Arc<EventMetrics>,
}

impl Context {
    /// A context over `client`.
    pub fn new(client: kube::Client, config: ControllersConfig) -> Self {
        Context {
            client,
            config,
            events: Arc::new(EventMetrics::default()),
        }
    }

    /// An Event recorder whose Events say they come from `component`
    /// (`replicaset-controller`, ... as kube-controller-manager's controllers name
    /// themselves; `kubectl describe` shows it in the `From` column). Call once per
    /// controller: it starts a background writer task.
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder::new(
            self.client.clone(),
            Reporter {
                component: component.to_string(),
                host: None,
                instance: self.config.identity.clone(),
            },
            self.events.clone(),
        )
    }
}
