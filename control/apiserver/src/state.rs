//! Shared state of the apiserver's handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmkube_store::Store;

use crate::openapi::OpenApi;
use crate::registry::Registry;

/// Everything a request handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

/// The shared parts behind [`AppState`].
pub struct Inner {
    pub registry: Registry,
    pub store: Arc<dyn Store>,
    pub openapi: OpenApi,
    /// Set once bootstrap finished and the server accepts API requests.
    pub ready: AtomicBool,
    /// Whether a garbage collector runs, so Orphan/Foreground deletions may wait on it
    /// (their `orphan`/`foregroundDeletion` finalizers). On by default: Kubernetes'
    /// apiserver assumes kube-controller-manager's garbage collector always runs, and
    /// `wasmkube server` runs `wasmkube-controllers`' (or `wasmkube controllers` does).
    pub garbage_collector: AtomicBool,
    /// The client for node agents (`pods/log`), once the server's certificate is issued.
    pub node_client: std::sync::OnceLock<crate::node_proxy::NodeClient>,
    /// The cluster CA certificate (PEM), served at `/cacerts`.
    pub ca_pem: std::sync::OnceLock<String>,
    /// The authorizer chain and the RBAC cache, once the server has loaded them.
    pub authz: std::sync::OnceLock<crate::authz::Authz>,
    /// Issues and verifies service-account tokens, once the server has loaded its keys.
    pub service_accounts: std::sync::OnceLock<Arc<crate::serviceaccount::ServiceAccounts>>,
    /// The bearer-token authenticators, for TokenReview, once the server has built them.
    /// They hold this state (and the store): dropped when the server stops, so the store
    /// closes.
    pub token_authenticators: std::sync::Mutex<Option<crate::authn::Authn>>,
    /// Request and watch counters, served at `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Set to `true` when the server has stopped serving: the apiserver's background
    /// tasks (RBAC cache, role aggregation, namespace finalizers) end then, so the last
    /// handle of the store is dropped and the store closes (a restart in the same process
    /// can open it again).
    pub stopped: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// State over a store with the built-in registry.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let registry = Registry::builtin();
        let openapi = OpenApi::new(&registry);
        AppState {
            inner: Arc::new(Inner {
                registry,
                store,
                openapi,
                ready: AtomicBool::new(false),
                garbage_collector: AtomicBool::new(true),
                node_client: std::sync::OnceLock::new(),
                ca_pem: std::sync::OnceLock::new(),
                authz: std::sync::OnceLock::new(),
                service_accounts: std::sync::OnceLock::new(),
                token_authenticators: std::sync::Mutex::new(None),
                metrics: crate::metrics::Metrics::default(),
                stopped: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Marks the server stopped: every background task waiting in [`AppState::stopped`]
    /// ends.
    pub fn set_stopped(&self) {
        self.inner.stopped.send_replace(true);
        // Breaks the cycle state -> authenticators -> state.
        self.token_authenticators_slot().take();
    }

    /// The TokenReview authenticators' slot.
    pub fn token_authenticators_slot(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<crate::authn::Authn>> {
        self.inner
            .token_authenticators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once the server has stopped ([`AppState::set_stopped`]).
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.stopped.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// The authorizer chain and the RBAC cache (a 500 before the server set them up:
    /// requests are only served after that).
    pub fn authz(&self) -> crate::error::ApiResult<&crate::authz::Authz> {
        self.inner
            .authz
            .get()
            .ok_or_else(|| crate::error::ApiError::internal("authorization is not configured"))
    }

    /// The service-account token issuer (a 500 before the server loaded its keys).
    pub fn service_accounts(
        &self,
    ) -> crate::error::ApiResult<&crate::serviceaccount::ServiceAccounts> {
        self.inner
            .service_accounts
            .get()
            .map(|a| a.as_ref())
            .ok_or_else(|| {
                crate::error::ApiError::internal("service-account tokens are not configured")
            })
    }

    /// Whether deletions add the garbage collector's finalizers (see
    /// [`Inner::garbage_collector`]).
    pub fn has_garbage_collector(&self) -> bool {
        self.inner.garbage_collector.load(Ordering::Acquire)
    }
}
