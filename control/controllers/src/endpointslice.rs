//! The EndpointSlice controller, as kube-controller-manager's
//! (`pkg/controller/endpointslice`, `k8s.io/endpointslice`): for every Service with a
//! selector, EndpointSlices (`<service>-<suffix>`, labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//! Service) listing the pods it selects, at most 100 per slice.
//!
//! A sync reads the shared Service, pod, node and EndpointSlice informers, plans the writes
//! with the pure [`reconcile`] and makes them. Services without a selector (their users
//! write their slices) and ExternalName Services are never touched; the slices of a deleted
//! Service go with it through their owner reference (the garbage collector). Slices this
//! controller wrote but its informer has not shown yet make a sync wait ([`tracker`]):
//! planning from an older view would create them twice.

pub(crate) mod reconcile;
mod tracker;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use wasmkube_client::informers::{Change, SharedInformerFactory};
use wasmkube_client::status::{is_conflict, is_namespace_terminating, is_not_found};

use crate::context::{Context, Recorder, WARNING};
use crate::retry::{Retries, drain, requeue_failed};
use crate::service_pods::{ServiceQueue, is_external_name, selected_pods, selector};
use reconcile::{CONTROLLER_NAME, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE, SERVICE_NAME_LABEL};
use tracker::SliceTracker;

/// The `source.component` of the controller's Events.
const COMPONENT: &str = "endpointslice-controller";
/// When the pods' or Service's change that led to a write happened (here: when the
/// controller wrote it), as Kubernetes annotates slices and Endpoints.
pub(crate) const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The node label that gives an endpoint its zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Why a sync failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Writing a slice failed.
    #[error("{what} EndpointSlice {name} of Service {service}: {source}")]
    Write {
        /// create, update or delete.
        what: &'static str,
        /// The slice (or its generateName).
        name: String,
        /// `namespace/name` of the Service.
        service: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Some selected pods run on nodes the node informer does not know (yet).
    #[error("skipped pods of Service {service} on nodes not found: {nodes}")]
    NodesNotFound {
        /// `namespace/name` of the Service.
        service: String,
        /// The nodes.
        nodes: String,
    },
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Write { source, .. } if is_conflict(source))
    }
}

struct Controller {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    tracker: SliceTracker,
    retries: Retries,
    recorder: Recorder,
}

/// The EndpointSlice controller over the shared informers; runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let services = informers.informer::<Service>();
    let pods = informers.informer::<Pod>();
    let nodes = informers.informer::<Node>();
    let slices = informers.informer::<EndpointSlice>();
    async move {
        let ServiceQueue {
            queue,
            sender,
            deleted,
            handlers: _handlers,
        } = ServiceQueue::new(&services, &pods);
        drop(deleted); // their slices go with them (owner references)
        let _slice_handler = slices.add_handler(move |change| {
            if let Some(service) = slice_service(change) {
                let _ = sender.unbounded_send(service);
            }
        });
        let synced = services.wait_synced().await
            && pods.wait_synced().await
            && nodes.wait_synced().await
            && slices.wait_synced().await;
        if !synced {
            tracing::error!("EndpointSlice controller: an informer stopped before listing");
            return std::future::pending().await;
        }
        tracing::info!("EndpointSlice controller started");
        let controller = Arc::new(Controller {
            client: ctx.client.clone(),
            pods: pods.store(),
            nodes: nodes.store(),
            slices: slices.store(),
            tracker: SliceTracker::default(),
            retries: Retries::client_go_default(),
            recorder: ctx.recorder(COMPONENT),
        });
        let results = kube::runtime::applier(
            |service, controller: Arc<Controller>| {
                Box::pin(async move { controller.sync(&service).await })
            },
            |service, error: &Error, controller| {
                requeue_failed(
                    &controller.retries,
                    "service",
                    &*service,
                    error,
                    error.is_conflict(),
                )
            },
            controller,
            services.store(),
            queue.map(Ok::<_, Infallible>),
            ApplierConfig::default().concurrency(ctx.config.concurrency),
        );
        drain("endpointslice", results).await;
        std::future::pending().await
    }
}

/// The Service a change of one of this controller's slices concerns (anyone may edit or
/// delete them; the Service's sync puts them right).
fn slice_service(change: &Change<'_, Arc<EndpointSlice>>) -> Option<ObjectRef<Service>> {
    let slice = change.object()?;
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let service = labels.get(SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(service).within(slice.metadata.namespace.as_deref()?))
}

impl Controller {
    /// One Service's sync (`syncService`).
    async fn sync(&self, service: &Service) -> Result<Action, Error> {
        let key = crate::retry::object_key(service);
        if is_external_name(service) {
            return Ok(Action::await_change());
        }
        let Some(selector) = selector(service) else {
            return Ok(Action::await_change());
        };
        let namespace = service.namespace().unwrap_or_default();
        let uid = service.uid().unwrap_or_default();
        let existing = self.managed_slices(&namespace, &service.name_any());
        if self.tracker.stale(&uid, &existing) {
            // Our own last writes are not in the informer yet; their events requeue us.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let pods = selected_pods(&self.pods, &namespace, selector);
        let zone = |node: &str| {
            self.nodes
                .get(&ObjectRef::new(node))
                .map(|n| n.labels().get(ZONE_LABEL).cloned())
        };
        let plan = reconcile::reconcile(service, &pods, &zone, &existing, MAX_ENDPOINTS_PER_SLICE);
        if !plan.is_empty() {
            tracing::debug!(
                service = %key,
                create = plan.create.len(),
                update = plan.update.len(),
                delete = plan.delete.len(),
                "writing EndpointSlices"
            );
        }
        let result = self
            .write(service, &key, &uid, plan.create, plan.update, plan.delete)
            .await;
        if let Err(e) = &result {
            self.recorder.publish(
                service,
                WARNING,
                "FailedToUpdateEndpointSlices",
                format!("Error updating Endpoint Slices for Service {key}: {e}"),
            );
        }
        result?;
        if !plan.unknown_nodes.is_empty() {
            return Err(Error::NodesNotFound {
                service: key,
                nodes: plan.unknown_nodes.join(", "),
            });
        }
        self.retries.succeeded(&uid);
        Ok(Action::await_change())
    }

    /// The slices this controller manages for the Service, from the informer.
    fn managed_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
                label(SERVICE_NAME_LABEL) == Some(service)
                    && label(MANAGED_BY_LABEL) == Some(CONTROLLER_NAME)
            })
            .collect()
    }

    /// Makes the planned writes (`finalize`): no creates for a Service being deleted.
    async fn write(
        &self,
        service: &Service,
        key: &str,
        uid: &str,
        create: Vec<EndpointSlice>,
        update: Vec<EndpointSlice>,
        delete: Vec<EndpointSlice>,
    ) -> Result<(), Error> {
        let namespace = service.namespace().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now().to_string();
        let error = |what, name: &str, source| Error::Write {
            what,
            name: name.to_string(),
            service: key.to_string(),
            source,
        };
        if service.meta().deletion_timestamp.is_none() {
            for mut slice in create {
                slice
                    .annotations_mut()
                    .insert(TRIGGER_TIME_ANNOTATION.into(), now.clone());
                match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => self.tracker.wrote(uid, &created),
                    Err(e) if is_namespace_terminating(&e) => return Ok(()),
                    Err(e) => {
                        let name = slice.metadata.generate_name.unwrap_or_default();
                        return Err(error("creating", &name, e));
                    }
                }
            }
        }
        for mut slice in update {
            slice
                .annotations_mut()
                .insert(TRIGGER_TIME_ANNOTATION.into(), now.clone());
            let name = slice.name_any();
            match api.replace(&name, &PostParams::default(), &slice).await {
                Ok(updated) => self.tracker.wrote(uid, &updated),
                Err(e) => return Err(error("updating", &name, e)),
            }
        }
        for slice in delete {
            let name = slice.name_any();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => self.tracker.deleted(uid, &name),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(error("deleting", &name, e)),
            }
        }
        Ok(())
    }
}
