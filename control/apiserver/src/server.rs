//! Assembling and running the apiserver: store, PKI, kubeconfig, router, TLS listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::AppState;

/// How long a stopping server waits for the audit log's last events to be written.
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `wasmkube server` configures.
#[derive(Clone, Debug)]
pub struct Config {
    /// Store, certificates, tokens and kubeconfig live here.
    pub data_dir: PathBuf,
    /// The HTTPS listen address.
    pub bind: SocketAddr,
    /// Extra subject alternative names for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Watch history kept: at most this many events...
    pub history_max_events: usize,
    /// ...and no older than this.
    pub history_max_age: Duration,
    /// The `tolerationSeconds` of the not-ready/unreachable tolerations pods get by
    /// default (the DefaultTolerationSeconds admission plugin; 300 s each).
    pub default_toleration_seconds: crate::validation::DefaultTolerationSeconds,
    /// The authorizers every request is put to, in order (`--authorization-mode`; the
    /// `system:masters` group is always allowed first).
    pub authorization_modes: Vec<crate::authz::AuthorizationMode>,
    /// The EncryptionConfiguration (`--encryption-provider-config`); `None` = the data
    /// directory's own, written for a new cluster (Secrets encrypted, then identity).
    pub encryption_provider_config: Option<PathBuf>,
    /// The longest validity of certificates the server signs for CertificateSigningRequests
    /// (kube-controller-manager's `--cluster-signing-duration`).
    pub cluster_signing_duration: Duration,
    /// Service-account token issuers, keys and audiences.
    pub service_accounts: crate::serviceaccount::ServiceAccountConfig,
    /// Auditing (`--audit-policy-file`, `--audit-log-*`); the default audits nothing.
    pub audit: crate::audit::AuditConfig,
    /// The cluster DNS Service the apiserver keeps (`kube-system/kube-dns`), pointed at
    /// where the DNS server listens; `None`: left as it is (no DNS server runs).
    pub cluster_dns: Option<crate::services::ClusterDns>,
    /// Where objects are stored: the embedded redb file in the data directory (the
    /// default), or an etcd cluster (`--datastore-endpoint`).
    pub datastore: Datastore,
}

/// The store behind the apiserver.
#[derive(Clone, Debug, Default)]
pub enum Datastore {
    /// `<data-dir>/store.redb`, with the watch history of [`Config::history_max_events`]
    /// and [`Config::history_max_age`].
    #[default]
    Redb,
    /// An etcd cluster (k3s' `--datastore-endpoint`); its history is bounded by its
    /// compactor ([`wasmkube_store::EtcdConfig::compaction_interval`]).
    Etcd(wasmkube_store::EtcdConfig),
}

/// The default of [`Config::cluster_signing_duration`]: one year, as Kubernetes'.
pub const DEFAULT_CLUSTER_SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The limits that protect the apiserver from its clients; [`Limits::default`] has
/// kube-apiserver's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--max-requests-inflight`: read-only requests at once (`0`: no limit).
    pub max_requests_inflight: usize,
    /// `--max-mutating-requests-inflight`: mutating requests at once (`0`: no limit).
    pub max_mutating_requests_inflight: usize,
    /// TLS handshake and idle connection timeouts.
    pub serve: crate::serve::ServeOptions,
    /// Writes fail with 507 while the store's filesystem has less free space than this
    /// (`0`: never).
    pub store_min_free_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_requests_inflight: crate::inflight::DEFAULT_MAX_REQUESTS_INFLIGHT,
            max_mutating_requests_inflight: crate::inflight::DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
            serve: crate::serve::ServeOptions::default(),
            store_min_free_bytes: wasmkube_store::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

impl Config {
    /// `wasmkube server`'s defaults for a server with its data in `data_dir` listening on
    /// `bind`: no extra SANs, watch history of 100,000 events and 300 s, 300 s default
    /// tolerations, RBAC authorization, the data directory's own encryption configuration,
    /// certificates signed for a year, no auditing.
    pub fn new(data_dir: impl Into<PathBuf>, bind: SocketAddr) -> Config {
        Config {
            data_dir: data_dir.into(),
            bind,
            extra_sans: Vec::new(),
            history_max_events: 100_000,
            history_max_age: Duration::from_secs(300),
            default_toleration_seconds: Default::default(),
            authorization_modes: vec![crate::authz::AuthorizationMode::Rbac],
            encryption_provider_config: None,
            cluster_signing_duration: DEFAULT_CLUSTER_SIGNING_DURATION,
            service_accounts: Default::default(),
            audit: crate::audit::AuditConfig::default(),
            cluster_dns: None,
            datastore: Datastore::Redb,
        }
    }
}

/// Errors that stop the apiserver from starting. Each message carries its reason, so none
/// is a `#[source]`: an error chain (`{:#}`) would print the reason twice.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created or used.
    #[error("cannot use data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The store cannot be opened.
    #[error("cannot open the store: {0}")]
    Store(wasmkube_store::StoreError),
    /// The encryption provider configuration is unusable.
    #[error("{0}")]
    Encryption(crate::encryption::ConfigError),
    /// Certificates or tokens cannot be created or loaded.
    #[error("cannot set up TLS: {0}")]
    Pki(crate::pki::PkiError),
    /// The service-account keys cannot be loaded or created.
    #[error("cannot set up service-account tokens: {0}")]
    ServiceAccountKeys(crate::serviceaccount::KeyError),
    /// The audit policy or log cannot be used.
    #[error("cannot start auditing: {0}")]
    Audit(crate::audit::AuditError),
    /// The client certificate for node agents cannot be loaded.
    #[error("cannot set up the node agent client: {0}")]
    NodeClient(String),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {error} (is another server running? choose another --bind)")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A started apiserver.
pub struct Running {
    /// Where the admin kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The HTTPS URL of the apiserver.
    pub url: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The cluster's certificates and keys (the embedded agent's identity is issued from
    /// them).
    pub pki: Arc<crate::pki::Pki>,
    /// Finishes when the server has stopped.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Reconciles the default RBAC policy, loads the RBAC cache, aggregates the aggregated
/// ClusterRoles once (so `admin`, `edit` and `view` are complete before the first request)
/// and keeps them aggregated; returns the authorizer chain of `modes`.
async fn start_authorization(
    state: &AppState,
    modes: &[crate::authz::AuthorizationMode],
) -> Result<
    (
        Arc<dyn crate::authz::Authorizer>,
        Arc<crate::authz::node::graph::NodeGraph>,
    ),
    wasmkube_store::StoreError,
> {
    crate::rbac::bootstrap(state).await?;
    let cache = crate::rbac::PolicyCache::start(Arc::clone(state.store()), state.stopped()).await?;
    let rbac: Arc<dyn crate::authz::Authorizer> =
        Arc::new(crate::rbac::RbacAuthorizer::new(Arc::clone(&cache)));
    let graph =
        crate::authz::node::graph::NodeGraph::start(Arc::clone(state.store()), state.stopped())
            .await?;
    let node: Arc<dyn crate::authz::Authorizer> =
        Arc::new(crate::authz::node::NodeAuthorizer::new(Arc::clone(&graph)));
    let chain: Arc<dyn crate::authz::Authorizer> =
        Arc::new(crate::authz::build_chain(modes, rbac, node));
    let _ = state.inner.authz.set(crate::authz::Authz {
        authorizer: Arc::clone(&chain),
        rbac: Arc::clone(&cache),
    });
    crate::rbac::converge(state, &cache).await?;
    crate::rbac::spawn_aggregation_controller(state.clone(), cache);
    tracing::info!(
        modes = ?modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "authorization ready"
    );
    Ok((chain, graph))
}

/// Creates the data directory readable only by this user (0700), or makes an existing one
/// so (older versions made it 0755): it holds the store, the keys and the tokens.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        if std::fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Opens the store, prepares TLS and identity, bootstraps and starts serving with the
/// default [`Limits`]. The server stops when `shutdown` resolves.
pub async fn start(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    start_with_limits(config, Limits::default(), shutdown).await
}

/// [`start`] with the given [`Limits`].
pub async fn start_with_limits(
    config: Config,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    create_private_dir(&config.data_dir).map_err(|error| StartError::DataDir {
        path: config.data_dir.clone(),
        error,
    })?;
    crate::validation::set_default_toleration_seconds(config.default_toleration_seconds);
    let (audit, audit_stopped) =
        crate::audit::Audit::start(&config.audit).map_err(StartError::Audit)?;
    let store: Arc<dyn wasmkube_store::Store> = match &config.datastore {
        Datastore::Redb => wasmkube_store::RedbStore::open(wasmkube_store::StoreConfig {
            history_max_events: config.history_max_events,
            history_max_age: config.history_max_age,
            min_free_bytes: limits.store_min_free_bytes,
            ..wasmkube_store::StoreConfig::new(config.data_dir.join("store.redb"))
        })
        .map_err(StartError::Store)?,
        Datastore::Etcd(etcd) => {
            let redb = config.data_dir.join("store.redb");
            if redb.exists() {
                return Err(StartError::Store(wasmkube_store::StoreError::Unavailable(
                    format!(
                        "the data directory {} holds an embedded store ({}): its objects are not in \
                     etcd; start with another --data-dir to use etcd",
                        config.data_dir.display(),
                        redb.display()
                    ),
                )));
            }
            wasmkube_store::EtcdStore::open(etcd.clone())
                .await
                .map_err(StartError::Store)?
        }
    };
    let encryption = match &config.encryption_provider_config {
        Some(path) => crate::encryption::EncryptionConfig::load(path),
        None => crate::encryption::EncryptionConfig::load_or_create_default(&config.data_dir),
    }
    .map_err(StartError::Encryption)?;
    let store = crate::encryption::EncryptedStore::wrap(store, encryption);

    let mut sans = config.extra_sans.clone();
    sans.push(config.bind.ip().to_string());
    let pki = crate::pki::Pki::load_or_create(&config.data_dir, &sans).map_err(StartError::Pki)?;

    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|error| StartError::Bind {
            addr: config.bind,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| StartError::Bind {
        addr: config.bind,
        error,
    })?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = if addr.is_ipv6() {
        format!("https://[{host}]:{}", addr.port())
    } else {
        format!("https://{host}:{}", addr.port())
    };
    let kubeconfig =
        crate::pki::write_kubeconfig(&config.data_dir, &url, &pki).map_err(StartError::Pki)?;

    crate::join::remove_legacy_join_token(&config.data_dir, &pki).map_err(StartError::Pki)?;
    let state = AppState::new(store);
    let _ = state.inner.ca_pem.set(pki.ca_pem().to_string());
    // The apiserver's identity towards node agents: no group, RBAC binds it to
    // system:kubelet-api-admin (see `node_proxy`).
    match pki
        .issue_client_cert(crate::node_proxy::KUBELET_CLIENT_USER, &[])
        .map_err(StartError::Pki)
        .and_then(|(cert, key)| {
            crate::node_proxy::NodeClient::new(&cert, &key, pki.ca_pem())
                .map_err(StartError::NodeClient)
        }) {
        Ok(client) => {
            let _ = state.inner.node_client.set(client);
        }
        Err(e) => return Err(e),
    }
    crate::namespace::bootstrap(&state, addr, config.cluster_dns.as_ref())
        .await
        .map_err(StartError::Store)?;
    let (authorizer, node_graph) = start_authorization(&state, &config.authorization_modes)
        .await
        .map_err(StartError::Store)?;
    crate::certificates::spawn_controllers(
        state.clone(),
        pki.signing_authority(config.cluster_signing_duration),
    );
    state.set_ready();

    let accounts = Arc::new(
        crate::serviceaccount::ServiceAccounts::load(&config.service_accounts, &config.data_dir)
            .map_err(StartError::ServiceAccountKeys)?,
    );
    let _ = state.inner.service_accounts.set(Arc::clone(&accounts));
    let authn = crate::authn::Authn::new(pki.token_authenticator(), authorizer)
        .with_token_authenticator(Arc::new(
            crate::bootstrap_token::BootstrapTokenAuthenticator::new(state.clone()),
        ))
        .with_token_authenticator(Arc::new(
            crate::serviceaccount::ServiceAccountAuthenticator::new(accounts, state.clone()),
        ))
        .with_node_graph(node_graph, Arc::clone(state.store()));
    *state.token_authenticators_slot() = Some(authn.clone());
    let in_flight = crate::inflight::InFlight::new(
        limits.max_requests_inflight,
        limits.max_mutating_requests_inflight,
    );
    let rendered = in_flight.clone();
    state
        .metrics()
        .add_collector(Box::new(move |out| rendered.render(out)));
    // Seats are taken after authentication and authorization (the layer added last runs
    // first).
    let routes = crate::routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        in_flight,
        crate::inflight::limit,
    ));
    let app = crate::authn::require_authentication(routes, authn);
    let app = crate::audit::layer(app, audit).layer(tower_http::trace::TraceLayer::new_for_http());
    let tls = pki.server_config();
    let serving = crate::serve::serve_tls_with(listener, tls, app, limits.serve, shutdown);
    let task = tokio::spawn(async move {
        let served = serving.await;
        // Ends the background tasks, which hold the store open.
        state.set_stopped();
        // The last audit events reach the log (the router and its requests are gone).
        audit_stopped.wait(AUDIT_FLUSH_TIMEOUT).await;
        served
    });
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), "apiserver serving");
    Ok(Running {
        kubeconfig,
        addr,
        url,
        ca_pem: pki.ca_pem().to_string(),
        pki: Arc::new(pki),
        task,
    })
}
