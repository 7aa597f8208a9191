//! The ResourceQuota controller (`resourcequota-controller`): keeps every quota's
//! `status.hard` equal to its `spec.hard` and `status.used` equal to what the namespace's
//! objects consume, as kube-controller-manager's (`pkg/controller/resourcequota`).
//!
//! The apiserver's quota admission charges `status.used` when it admits a create; this
//! controller gives usage back (replenishment) and keeps it true:
//! - a kube-runtime `Controller` over the shared ResourceQuota informer reconciles one quota
//!   at a time, and again every [`RESYNC`] (Kubernetes' `--resource-quota-sync-period`);
//! - the shared pod, service, configmap and secret informers trigger the namespace's quotas
//!   when an object goes or stops consuming (a pod that finished, a service whose type
//!   changed), as Kubernetes' replenishment does;
//! - a sync lists the namespace's objects of every kind the quota names from the apiserver
//!   (a consistent read, not a cache: the shared pod store is trimmed of container
//!   resources) and adds up [`wasmkube_api::quota::usage`], the same accounting admission
//!   uses; `count/<resource>.<group>` kinds are found through discovery;
//! - the status is written with the quota's `resourceVersion` (a charge by admission in
//!   between is a 409 and a quick retry, never overwritten).
//!
//! One guard Kubernetes lacks: admission charges a quota just before the object is stored,
//! so a list taken in that gap misses an object already counted. Lowering `used` is
//! therefore deferred until the quota has been still for [`SETTLE`]; raising it never is.

mod usage;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota, Secret, Service};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use wasmkube_api::quota::{self as accounting, ResourceList};
use wasmkube_client::informers::{
    Change, HandlerRegistration, SharedInformer, SharedInformerFactory,
};
use wasmkube_client::status::is_conflict;

use crate::context::Context;
use crate::informer::synced;
use crate::retry::{Retries, drain, requeue_failed, run_forever};

/// How often every quota is recalculated even without a trigger (Kubernetes' default
/// `--resource-quota-sync-period`).
const RESYNC: Duration = Duration::from_secs(300);
/// How long a quota must have been unchanged before its usage may go down.
const SETTLE: Duration = Duration::from_secs(2);

/// Why a quota sync failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QuotaError {
    /// Listing the objects the quota counts failed.
    #[error("counting the usage of quota {quota}: {source}")]
    Usage {
        /// `namespace/name`.
        quota: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("writing the status of quota {quota}: {source}")]
    Status {
        /// `namespace/name`.
        quota: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The quota informer has not listed yet.
    #[error("the quota cache is not synced yet")]
    NotSynced,
}

/// What every reconcile shares.
struct QuotaController {
    client: kube::Client,
    usage: usage::Counter,
    /// When each quota (`namespace/name`) last changed without this controller writing it.
    changed: Mutex<HashMap<String, Instant>>,
    retries: Retries,
    synced: wasmkube_client::informers::Synced,
}

/// The controller over the shared informers; runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let quotas = informers.informer::<ResourceQuota>();
    let pods = informers.informer::<Pod>();
    let services = informers.informer::<Service>();
    let configmaps = informers.informer::<ConfigMap>();
    let secrets = informers.informer::<Secret>();
    async move {
        run_forever("resourcequota", || {
            run_controller(&ctx, &quotas, &pods, &services, &configmaps, &secrets)
        })
        .await;
    }
}

async fn run_controller(
    ctx: &Arc<Context>,
    quotas: &SharedInformer<ResourceQuota>,
    pods: &SharedInformer<Pod>,
    services: &SharedInformer<Service>,
    configmaps: &SharedInformer<ConfigMap>,
    secrets: &SharedInformer<Secret>,
) {
    let controller = Arc::new(QuotaController {
        client: ctx.client.clone(),
        usage: usage::Counter::new(ctx.client.clone()),
        changed: Mutex::new(HashMap::new()),
        retries: Retries::default(),
        synced: quotas.synced(),
    });
    let (tx, rx) = futures::channel::mpsc::unbounded::<ObjectRef<ResourceQuota>>();
    let store = quotas.store();
    // Replenishment: a namespace's quotas are synced when an object there stops consuming.
    let trigger = {
        let store = store.clone();
        move |namespace: &str| {
            for q in quotas_in(&store, namespace) {
                let _ = tx.unbounded_send(ObjectRef::from_obj(&*q));
            }
        }
    };
    let trigger = Arc::new(trigger);
    let _registrations: Vec<HandlerRegistration> = vec![
        replenish(pods, trigger.clone(), pod_usage_changed),
        replenish(services, trigger.clone(), service_usage_changed),
        replenish(configmaps, trigger.clone(), |_, _| false),
        replenish(secrets, trigger.clone(), |_, _| false),
        {
            let c = controller.clone();
            quotas.add_handler(move |change| c.observe(change))
        },
    ];
    let results = Controller::for_shared_stream(quotas.subscribe(), store)
        .reconcile_on(rx)
        .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
        .run(reconcile, error_policy, controller);
    drain("resourcequota", results).await;
}

/// A handler on `informer` that triggers the object's namespace's quotas when an object is
/// deleted, or changes so that `changed(old, new)` says its usage differs.
fn replenish<K>(
    informer: &SharedInformer<K>,
    trigger: Arc<impl Fn(&str) + Send + Sync + 'static>,
    changed: fn(&K, &K) -> bool,
) -> HandlerRegistration
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    informer.add_handler(move |change| {
        let namespace: Option<String> = match change {
            Change::Deleted(obj) => obj.meta().namespace.clone(),
            Change::Applied {
                old: Some(old),
                new,
            } if changed(old, new) => new.meta().namespace.clone(),
            _ => None,
        };
        if let Some(ns) = namespace {
            trigger(&ns);
        }
    })
}

fn pod_usage_changed(old: &Pod, new: &Pod) -> bool {
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    let terminal = |p: &Pod| matches!(phase(p).as_deref(), Some("Succeeded" | "Failed"));
    terminal(old) != terminal(new)
}

fn service_usage_changed(old: &Service, new: &Service) -> bool {
    let shape = |s: &Service| {
        s.spec
            .as_ref()
            .map(|spec| (spec.type_.clone(), spec.ports.as_ref().map_or(0, Vec::len)))
    };
    shape(old) != shape(new)
}

/// The quotas of `namespace` in `store`.
fn quotas_in(store: &Store<ResourceQuota>, namespace: &str) -> Vec<Arc<ResourceQuota>> {
    store
        .state()
        .into_iter()
        .filter(|q| q.metadata.namespace.as_deref() == Some(namespace))
        .collect()
}

fn key(q: &ResourceQuota) -> String {
    format!("{}/{}", q.namespace().unwrap_or_default(), q.name_any())
}

fn error_policy(q: Arc<ResourceQuota>, error: &QuotaError, c: Arc<QuotaController>) -> Action {
    let conflict = matches!(error, QuotaError::Status { source, .. } if is_conflict(source));
    requeue_failed(&c.retries, "resourcequota", &*q, error, conflict)
}

async fn reconcile(q: Arc<ResourceQuota>, c: Arc<QuotaController>) -> Result<Action, QuotaError> {
    if !synced(c.synced.wait()).await {
        return Err(QuotaError::NotSynced);
    }
    let action = c.sync(&q).await?;
    c.retries.succeeded(&q.uid().unwrap_or_default());
    Ok(action)
}

impl QuotaController {
    /// Notes quota changes this controller did not make (admission's charges, edits).
    fn observe(&self, change: &Change<'_, Arc<ResourceQuota>>) {
        let mut changed = self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        match change {
            Change::Applied { new, .. } => {
                changed.insert(key(new), Instant::now());
            }
            Change::Deleted(old) => {
                changed.remove(&key(old));
            }
            Change::Relisted => {}
        }
    }

    /// How long until the quota has been still for [`SETTLE`] (zero when it has).
    fn settling(&self, quota_key: &str) -> Duration {
        let changed = self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        changed
            .get(quota_key)
            .map_or(Duration::ZERO, |at| SETTLE.saturating_sub(at.elapsed()))
    }

    /// One sync: count, then write the status if it differs.
    async fn sync(&self, q: &ResourceQuota) -> Result<Action, QuotaError> {
        let namespace = q.namespace().unwrap_or_default();
        let value = serde_json::to_value(q).unwrap_or(Value::Null);
        let hard = accounting::from_json(value.pointer("/spec/hard"));
        let names: BTreeSet<String> = hard.keys().cloned().collect();
        let counted = self
            .usage
            .count(&namespace, &value, &names)
            .await
            .map_err(|source| QuotaError::Usage {
                quota: key(q),
                source,
            })?;
        let current_hard = accounting::from_json(value.pointer("/status/hard"));
        let current_used = accounting::from_json(value.pointer("/status/used"));
        if current_hard == hard && same(&current_used, &counted) {
            return Ok(Action::requeue(RESYNC));
        }
        // Going down only once admission's charges had time to become objects.
        let lowers = counted
            .iter()
            .any(|(k, v)| current_used.get(k).is_some_and(|u| v < u));
        let wait = self.settling(&key(q));
        if lowers && !wait.is_zero() {
            return Ok(Action::requeue(wait + Duration::from_millis(100)));
        }
        let mut updated = q.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.hard = Some(to_quantities(&hard));
        status.used = Some(to_quantities(&counted));
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), &namespace);
        api.replace_status(&q.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(|source| QuotaError::Status {
                quota: key(q),
                source,
            })?;
        tracing::debug!(quota = %key(q), used = %accounting::pretty(&counted), "quota usage written");
        Ok(Action::requeue(RESYNC))
    }
}

/// Equal amounts for the same names (`1000m` equals `1`).
fn same(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

fn to_quantities(
    list: &ResourceList,
) -> std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    list.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn a_pod_that_finishes_gives_its_usage_back() {
        assert!(pod_usage_changed(&pod("Running"), &pod("Succeeded")));
        assert!(!pod_usage_changed(&pod("Pending"), &pod("Running")));
    }

    #[test]
    fn equal_amounts_in_other_notations_are_the_same_usage() {
        let q = |s: &str| wasmkube_api::Quantity::parse(s).expect("quantity");
        let a: ResourceList = [("cpu".to_string(), q("1000m"))].into();
        let b: ResourceList = [("cpu".to_string(), q("1"))].into();
        assert!(same(&a, &b));
        let c: ResourceList = [("cpu".to_string(), q("2"))].into();
        assert!(!same(&a, &c));
    }
}
