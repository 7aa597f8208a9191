//! kube-proxy, embedded in every agent: makes each Service's cluster IP (and node ports)
//! reach its ready endpoints on this node, as Kubernetes' kube-proxy does.
//!
//! # Pieces
//! - [`model`]: Services and EndpointSlices as the proxy sees them (ports, endpoints, which
//!   endpoints may take traffic), pure.
//! - [`nftables`]: the default mode. One `ip wasmkube` table modelled on kube-proxy's
//!   nftables proxier (verdict maps from cluster IP . protocol . port to a chain per Service
//!   port, `numgen random` balancing, NodePorts, session affinity, traffic policies, rejects
//!   for Services without endpoints), kept current with one incremental nft transaction per
//!   sync and a periodic full resync. Needs CAP_NET_ADMIN and the `nft` tool.
//! - [`userspace`]: a TCP/UDP relay on each cluster IP (added as a /32 on `lo`, which needs
//!   CAP_NET_ADMIN and the `ip` tool), for machines without nftables.
//!
//! # Syncing
//! The Service and EndpointSlice informers (one watch each, `wasmkube-client`'s shared
//! informers) mark the Services whose objects changed; the sync task takes every Service
//! marked since its last sync and brings the rules of those, and only those, up to date.
//! The first sync after the start is full, so a restarted agent finds its old table and
//! rewrites it in place (no rule twice, none missing, affinity entries kept); so is one
//! every [`ProxyConfig::full_sync_period`], which repairs rules changed behind the
//! proxy's back. [`cleanup`] removes everything the proxy programmed (`wasmkube agent
//! --cleanup`, kube-proxy's `--cleanup`).

pub mod model;
pub mod nftables;
pub mod userspace;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::{Notify, broadcast};
use wasmkube_client::informers::{Change, SharedInformerFactory};

pub use nftables::SyncStats;
pub use nftables::nft::{Nft, NftError};

use model::{SERVICE_NAME_LABEL, ServiceKey};

/// How Services are proxied on this node (`--proxy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// nftables rules (CAP_NET_ADMIN and the `nft` tool).
    Nftables,
    /// A relay in the agent on each cluster IP (CAP_NET_ADMIN and the `ip` tool).
    Userspace,
    /// No proxy (another kube-proxy, or none, serves Services on this node).
    None,
}

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The mode.
    pub mode: ProxyMode,
    /// This node's name (endpoints on it are local).
    pub node_name: String,
    /// The node's addresses NodePorts answer on.
    pub node_ips: Vec<Ipv4Addr>,
    /// How `nft` is run.
    pub nft: Nft,
    /// Every this often, a full sync rewrites the whole table (kube-proxy's nftables
    /// proxier: an hour).
    pub full_sync_period: Duration,
    /// At least this long between two syncs (kube-proxy's `--min-sync-period`); changes
    /// meanwhile are applied together.
    pub min_sync_period: Duration,
}

impl ProxyConfig {
    /// nftables mode for `node_name` with kube-proxy's periods (full sync hourly) and no
    /// wait between syncs.
    pub fn new(mode: ProxyMode, node_name: impl Into<String>, node_ips: Vec<Ipv4Addr>) -> Self {
        ProxyConfig {
            mode,
            node_name: node_name.into(),
            node_ips,
            nft: Nft::default(),
            full_sync_period: Duration::from_secs(3600),
            min_sync_period: Duration::ZERO,
        }
    }
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// nft failed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The userspace relay failed.
    #[error(transparent)]
    Userspace(#[from] userspace::UserspaceError),
}

/// What one sync did, for whoever watches (tests, the benchmark).
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// When the rules were in place.
    pub at: Instant,
    /// How long the sync took (planning and applying).
    pub duration: Duration,
    /// The Services it brought up to date.
    pub services: Vec<SyncedService>,
    /// What it did.
    pub stats: SyncStats,
}

/// One Service a sync brought up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedService {
    /// `namespace/name`.
    pub name: String,
    /// The ready endpoints its slices listed (distinct addresses); 0 for a Service gone.
    pub ready_endpoints: usize,
}

impl SyncedService {
    fn of(key: &ServiceKey, state: Option<&ServiceState>) -> SyncedService {
        let ready_endpoints = state
            .filter(|s| s.service.is_some())
            .map(|s| {
                s.slices
                    .values()
                    .flat_map(|slice| &slice.endpoints)
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                    .filter_map(|e| e.addresses.first())
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .unwrap_or(0);
        SyncedService {
            name: key.to_string(),
            ready_endpoints,
        }
    }
}

/// A Service and its EndpointSlices, as the informers have them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceState {
    pub(crate) service: Option<Arc<Service>>,
    pub(crate) slices: BTreeMap<String, Arc<EndpointSlice>>,
}

/// The informers' view and the Services changed since the last sync.
#[derive(Debug, Default)]
struct Tracker {
    state: BTreeMap<ServiceKey, ServiceState>,
    dirty: BTreeSet<ServiceKey>,
}

type Shared = Arc<(Mutex<Tracker>, Notify)>;

fn service_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    name: Option<&String>,
) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: meta.namespace.clone()?,
        name: name?.clone(),
    })
}

fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    service_key(
        &slice.metadata,
        slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL),
    )
}

fn update(shared: &Shared, edit: impl FnOnce(&mut Tracker)) {
    let (tracker, notify) = &**shared;
    edit(&mut tracker.lock().unwrap_or_else(PoisonError::into_inner));
    notify.notify_one();
}

/// A running proxy.
#[derive(Debug)]
pub struct RunningProxy {
    /// Every sync's report.
    pub syncs: broadcast::Sender<SyncReport>,
    /// Ends when the proxy stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// Removes everything the proxy programmed on this node: the nftables table (kube-proxy's
/// `--cleanup`). Returns whether there was anything.
pub async fn cleanup(nft: &Nft) -> Result<bool, NftError> {
    nft.delete_table().await
}

/// Starts the proxy; it runs until `shutdown` resolves. A `ProxyMode::None` proxy does
/// nothing.
pub fn start(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> RunningProxy {
    let (syncs, _) = broadcast::channel(1024);
    let reports = syncs.clone();
    let task = tokio::spawn(async move {
        if config.mode == ProxyMode::None {
            return;
        }
        run(client, config, reports, shutdown).await;
    });
    RunningProxy { syncs, task }
}

async fn run(
    client: kube::Client,
    config: ProxyConfig,
    reports: broadcast::Sender<SyncReport>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shared: Shared = Arc::new((Mutex::new(Tracker::default()), Notify::new()));
    let factory = SharedInformerFactory::new(client);
    let services = factory.informer::<Service>();
    let slices = factory.informer::<EndpointSlice>();
    let on_service = shared.clone();
    let _services = services.add_handler(move |change| {
        let (service, deleted) = match change {
            Change::Applied { new, .. } => (new, false),
            Change::Deleted(old) => (old, true),
            Change::Relisted => return,
        };
        let Some(key) = service_key(&service.metadata, service.metadata.name.as_ref()) else {
            return;
        };
        update(&on_service, |t| {
            t.state.entry(key.clone()).or_default().service =
                (!deleted).then(|| Arc::clone(service));
            t.dirty.insert(key);
        });
    });
    let on_slice = shared.clone();
    let _slices = slices.add_handler(move |change| {
        let (old, new) = match change {
            Change::Applied { old, new } => (*old, Some(*new)),
            Change::Deleted(old) => (Some(*old), None),
            Change::Relisted => return,
        };
        let Some(name) = new.or(old).and_then(|s| s.metadata.name.clone()) else {
            return;
        };
        update(&on_slice, |t| {
            if let Some(key) = old.and_then(|s| slice_service(s)) {
                t.state.entry(key.clone()).or_default().slices.remove(&name);
                t.dirty.insert(key);
            }
            if let Some(slice) = new
                && let Some(key) = slice_service(slice)
            {
                t.state
                    .entry(key.clone())
                    .or_default()
                    .slices
                    .insert(name.clone(), slice.clone());
                t.dirty.insert(key);
            }
        });
    });
    factory.start();
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = async { services.wait_synced().await; slices.wait_synced().await } => {}
        _ = &mut shutdown => return,
    }
    let mut proxier = match config.mode {
        ProxyMode::Nftables => Proxier::Nftables(nftables::NftProxier::new(
            config.nft.clone(),
            &config.node_name,
            &config.node_ips,
        )),
        ProxyMode::Userspace => Proxier::Userspace(userspace::UserspaceProxier::new(
            &config.node_name,
            &config.node_ips,
        )),
        ProxyMode::None => return,
    };
    let mut next_full = tokio::time::Instant::now();
    let mut retry: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let full = tokio::time::Instant::now() >= next_full;
        let changed: BTreeMap<ServiceKey, Option<ServiceState>> = {
            let mut t = shared.0.lock().unwrap_or_else(PoisonError::into_inner);
            let dirty = std::mem::take(&mut t.dirty);
            dirty
                .into_iter()
                .map(|key| {
                    let state = t.state.get(&key).cloned();
                    if state
                        .as_ref()
                        .is_some_and(|s| s.service.is_none() && s.slices.is_empty())
                    {
                        t.state.remove(&key);
                    }
                    (key, state)
                })
                .collect()
        };
        if !changed.is_empty() || full || retry.is_some() {
            let started = Instant::now();
            let result = proxier.sync(&changed, full).await;
            match result {
                Ok(stats) => {
                    retry = None;
                    backoff = Duration::from_millis(500);
                    if full {
                        next_full = tokio::time::Instant::now() + config.full_sync_period;
                    }
                    let report = SyncReport {
                        at: Instant::now(),
                        duration: started.elapsed(),
                        services: changed
                            .iter()
                            .map(|(key, state)| SyncedService::of(key, state.as_ref()))
                            .collect(),
                        stats,
                    };
                    tracing::debug!(
                        services = report.services.len(),
                        commands = stats.commands,
                        full = stats.full,
                        duration_ms = report.duration.as_millis() as u64,
                        "proxy rules synced"
                    );
                    let _ = reports.send(report);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "syncing the proxy rules failed");
                    retry = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            if !config.min_sync_period.is_zero() {
                tokio::time::sleep(config.min_sync_period).await;
            }
        }
        let wake = retry.map_or(next_full, |r| r.min(next_full));
        tokio::select! {
            _ = shared.1.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = &mut shutdown => break,
        }
    }
    if let Proxier::Userspace(p) = &mut proxier {
        p.stop().await;
    }
}

/// The mode's proxier.
enum Proxier {
    Nftables(nftables::NftProxier),
    Userspace(userspace::UserspaceProxier),
}

impl Proxier {
    async fn sync(
        &mut self,
        changed: &BTreeMap<ServiceKey, Option<ServiceState>>,
        full: bool,
    ) -> Result<SyncStats, ProxyError> {
        match self {
            Proxier::Nftables(p) => Ok(p.sync(changed, full).await?),
            Proxier::Userspace(p) => Ok(p.sync(changed).await?),
        }
    }
}
