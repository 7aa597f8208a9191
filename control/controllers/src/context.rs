//! What every controller shares: the API client, the configuration and Event recorders.
//!
//! The client of a [`Context`] is the identity its controller acts as. The controller-manager's
//! own context holds the manager's client (its informers, its Lease) and, when it was given
//! some, one client per controller service account, as kube-controller-manager's
//! `--use-service-account-credentials`: [`Context::as_controller`] is the context a controller
//! runs with, acting as `system:serviceaccount:kube-system:<account>`, which RBAC's
//! `system:controller:<account>` role allows exactly what that controller does.

use std::collections::HashMap;
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
    /// A client per controller service account (`replicaset-controller`, ...); empty when
    /// every controller acts as [`Context::client`]'s identity.
    accounts: Arc<HashMap<String, kube::Client>>,
}

impl Context {
    /// A context over `client`.
    pub fn new(client: kube::Client, config: ControllersConfig) -> Self {
        Context {
            client,
            config,
            events: Arc::new(EventMetrics::default()),
            accounts: Arc::default(),
        }
    }

    /// This context with a client per controller service account (keyed by the account's
    /// name in `kube-system`).
    pub fn with_service_accounts(mut self, accounts: HashMap<String, kube::Client>) -> Self {
        self.accounts = Arc::new(accounts);
        self
    }

    /// The names of the service accounts this context has a client for, sorted.
    pub fn service_account_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.accounts.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The client that acts as the service account `account`, or this context's own when
    /// there is none for it.
    pub fn client_as(&self, account: &str) -> kube::Client {
        self.accounts
            .get(account)
            .cloned()
            .unwrap_or_else(|| self.client.clone())
    }

    /// The context the controller of service account `account` runs with: its client acts
    /// as that account (when there is one for it), the rest is shared.
    pub fn as_controller(self: &Arc<Self>, account: &str) -> Arc<Self> {
        if !self.accounts.contains_key(account) {
            return self.clone();
        }
        Arc::new(Context {
            client: self.client_as(account),
            ..Context::clone(self)
        })
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
