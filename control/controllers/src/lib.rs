//! wasmkube-controllers: the controller-manager, the control loops that keep the cluster's
//! actual state equal to the desired state, as kube-controller-manager's.
//!
//! [`run`] starts the enabled controllers once this process holds the controller-manager's
//! Lease (several controller-managers may run; one acts), stops them if the Lease is lost,
//! and releases it on shutdown. Every controller is level-triggered: a kube-runtime
//! `Controller` (or a periodic scan) reconciles one object at a time from what it observes,
//! idempotently, and only ever talks to the apiserver.
//!
//! Controllers (one module each):
//! - [`replicaset`]: keeps `replicas` pods matching the selector.
//! - [`deployment`]: ReplicaSets per template, rolling update and recreate, history, rollback.
//! - [`job`]: pods to completion, parallelism, backoff, deadlines, indexed completion.
//! - [`daemonset`]: one pod per eligible node.
//! - [`garbage_collector`]: dependents of deleted owners (background, foreground, orphan).
//! - [`node_lifecycle`]: nodes whose Lease stops are marked unknown, tainted and evicted.
//! - [`resourcequota`]: every ResourceQuota's `status.hard` and `status.used`.
//! - [`endpointslice`]: the EndpointSlices of every Service with a selector.
//! - [`endpoints`]: the legacy Endpoints of every Service with a selector.
//! - [`nodeipam`]: a pod CIDR for every Node from the cluster CIDR.
//! - [`token_cleaner`]: expired bootstrap tokens are deleted.
//! - [`knative`]: Knative Serving's Service, Configuration, Revision and Route.
//! - [`serviceaccount`]: a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in
//!   every namespace (the ServiceAccount controller and the root-CA publisher).
//!
//! Shared parts: the shared informers of [`wasmkube_client::informers`] (one watch and one store
//! per kind for the whole controller-manager, as client-go's shared informers: every controller
//! that needs pods, nodes or ReplicaSets reads the same store), [`context`] (client, settings,
//! Event recorders), [`pods`] (pods made from templates, owner references, readiness), [`retry`]
//! (the error policy and run loops around the per-object back-off), and for the controllers that
//! own pods (ReplicaSet, Job, DaemonSet): [`informer`] (the pod informer observing the
//! [`expectations`]) and [`pod_control`] (creating in slow-start batches and deleting, with
//! Events).

pub mod config;
pub mod context;
pub mod credentials;
mod daemonset;
mod deployment;
mod endpoints;
mod endpointslice;
mod expectations;
mod garbage_collector;
mod informer;
mod job;
pub mod knative;
mod node_lifecycle;
mod nodeipam;
mod pod_control;
pub mod pods;
mod replicaset;
mod resourcequota;
mod retry;
mod service_pods;
pub mod serviceaccount;
mod token_cleaner;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use tokio::sync::watch;
use tokio::task::JoinSet;
use wasmkube_client::LeaderElector;

pub use config::{
    ALL_CONTROLLERS, ControllersConfig, ControllersError, DEFAULT_CLUSTER_CIDR,
    DEFAULT_FUNCTION_DOMAIN, DEFAULT_NODE_CIDR_MASK_SIZE, IpNet, TTL_AFTER_FINISHED_ACCOUNT,
    service_account, service_accounts,
};
pub use context::Context;

use wasmkube_client::informers::SharedInformerFactory;

/// How often node agents renew their Lease (the kubelet's 10 s).
const NODE_LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the controller-manager until `shutdown` resolves, then releases its Lease (if it
/// led). API failures are retried inside the controllers; only an invalid configuration
/// ends it with an error. Every controller acts as `client`'s identity.
pub async fn run(
    client: kube::Client,
    config: ControllersConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ControllersError> {
    run_with_service_accounts(client, HashMap::new(), config, shutdown).await
}

/// [`run`] with service account credentials, as kube-controller-manager's
/// `--use-service-account-credentials`: `client` (the controller-manager's own identity,
/// `system:kube-controller-manager`) leads and feeds the shared informers, and each controller
/// reads and writes with the client `accounts` holds for its service account
/// ([`service_account`]; one it lacks falls back to `client`).
pub async fn run_with_service_accounts(
    client: kube::Client,
    accounts: HashMap<String, kube::Client>,
    config: ControllersConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ControllersError> {
    config.validate()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut leading, elector) =
        LeaderElector::spawn_or_always(client.clone(), config.leader_election.clone(), stop_rx)?;
    tracing::info!(
        identity = %config.identity,
        controllers = ?config.controllers,
        leader_election = config.leader_election.is_some(),
        "controller-manager starting"
    );
    if config.enabled("nodelifecycle")
        && config.node_monitor_grace_period < NODE_LEASE_RENEWAL * 3 / 2
    {
        tracing::warn!(
            grace_period = ?config.node_monitor_grace_period,
            "the node monitor grace period is barely longer than the agents' 10 s lease renewal: healthy nodes will flap to NotReady"
        );
    }
    let ctx = Arc::new(Context::new(client, config).with_service_accounts(accounts));
    let mut shutdown = std::pin::pin!(shutdown);
    'outer: loop {
        tokio::select! {
            _ = &mut shutdown => break 'outer,
            led = async { leading.wait_for(|l| *l).await.is_ok() } => if !led { break 'outer },
        }
        tracing::info!("leading: starting the controllers");
        ensure_service_accounts(&ctx.client, ctx.service_account_names()).await;
        let (mut running, informers) = start_controllers(&ctx);
        tokio::select! {
            _ = &mut shutdown => {
                running.shutdown().await;
                drop(informers);
                break 'outer;
            }
            _ = async { leading.wait_for(|l| !*l).await.is_ok() } => {
                tracing::warn!("lost the controller-manager lease: stopping the controllers");
                running.shutdown().await;
                drop(informers);
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = elector.await;
    tracing::info!("controller-manager stopped");
    Ok(())
}

/// Creates the `kube-system` ServiceAccount of every controller that acts as one and has
/// none, as kube-controller-manager's service-account client builder does before a
/// controller starts, so `kubectl -n kube-system get serviceaccounts` lists them. The
/// controllers authenticate by client certificate, so a missing object stops nothing: a
/// failure is logged and the controllers start regardless.
async fn ensure_service_accounts(client: &kube::Client, names: Vec<String>) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Api, ObjectMeta, PostParams};
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    for name in names {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(CONTROLLER_NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => tracing::debug!(account = %name, "created the controller's service account"),
            Err(e) if wasmkube_client::status::is_already_exists(&e) => {}
            Err(e) => tracing::warn!(
                account = %name,
                error = %e,
                "cannot create the controller's service account in kube-system"
            ),
        }
    }
}

/// Where the controllers' service accounts live.
const CONTROLLER_NAMESPACE: &str = "kube-system";

/// The context controller `name` runs with: acting as its service account, where the
/// controller-manager has a client for it.
fn as_controller(ctx: &Arc<Context>, name: &str) -> Arc<Context> {
    match service_account(name) {
        Some(account) => ctx.as_controller(account),
        None => ctx.clone(),
    }
}

/// Builds every enabled controller over one set of shared informers, spawns them, then
/// starts the informers' watches (one per kind; they stop when the factory is dropped, and
/// aborting the set stops the controllers). The informers live only while this process
/// leads, as kube-controller-manager starts its informers once it leads.
fn start_controllers(ctx: &Arc<Context>) -> (JoinSet<()>, SharedInformerFactory) {
    let informers = SharedInformerFactory::new(ctx.client.clone());
    if informers
        .informer::<Pod>()
        .set_transform(informer::trim_pod)
        .is_err()
    {
        tracing::warn!("the pod informer already ran: pods are held untrimmed");
    }
    let mut set = JoinSet::new();
    let config = &ctx.config;
    if config.enabled("replicaset") {
        set.spawn(replicaset::run(
            as_controller(ctx, "replicaset"),
            &informers,
        ));
    }
    if config.enabled("deployment") {
        set.spawn(deployment::run(
            as_controller(ctx, "deployment"),
            &informers,
        ));
    }
    if config.enabled("job") {
        set.spawn(job::run(as_controller(ctx, "job"), &informers));
    }
    if config.enabled("daemonset") {
        set.spawn(daemonset::run(as_controller(ctx, "daemonset"), &informers));
    }
    if config.enabled("nodelifecycle") {
        set.spawn(node_lifecycle::run(
            as_controller(ctx, "nodelifecycle"),
            &informers,
        ));
    }
    if config.enabled("resourcequota") {
        set.spawn(resourcequota::run(
            as_controller(ctx, "resourcequota"),
            &informers,
        ));
    }
    if config.enabled("nodeipam") {
        set.spawn(nodeipam::run(
            as_controller(ctx, "nodeipam"),
            &informers,
            config.cluster_cidr,
            config.node_cidr_mask_size,
        ));
    }
    if config.enabled("endpointslice") {
        set.spawn(endpointslice::run(
            as_controller(ctx, "endpointslice"),
            &informers,
        ));
    }
    if config.enabled("endpoint") {
        set.spawn(endpoints::run(as_controller(ctx, "endpoint"), &informers));
    }
    if config.enabled("tokencleaner") {
        set.spawn(token_cleaner::run(
            as_controller(ctx, "tokencleaner"),
            &informers,
        ));
    }
    if config.enabled("serviceaccount") {
        set.spawn(serviceaccount::run_service_accounts(
            as_controller(ctx, "serviceaccount"),
            &informers,
        ));
    }
    if config.enabled("root-ca-cert-publisher") {
        match &config.root_ca {
            Some(ca) => {
                set.spawn(serviceaccount::run_root_ca_publisher(
                    as_controller(ctx, "root-ca-cert-publisher"),
                    &informers,
                    ca.clone(),
                ));
            }
            None => tracing::warn!(
                "no root CA configured: the root-ca-cert-publisher does not run, and pods that \
                 project kube-root-ca.crt cannot start"
            ),
        }
    }
    if config.enabled("knative-serving") {
        set.spawn(knative::run(
            as_controller(ctx, "knative-serving"),
            &informers,
        ));
    }
    // Last: it follows the metadata of the kinds the others made typed informers of
    // through those informers (one watch per kind), and of the other kinds directly.
    if config.enabled("garbagecollector") {
        set.spawn(garbage_collector::run(
            as_controller(ctx, "garbagecollector"),
            informers.clone(),
        ));
    }
    informers.start();
    (set, informers)
}
