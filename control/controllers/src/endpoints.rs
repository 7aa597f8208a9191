//! The Endpoints controller, as kube-controller-manager's (`pkg/controller/endpoint`): the
//! legacy core/v1 Endpoints of every Service with a selector, named as the Service, with
//! the Service's labels: its pods' addresses in `subsets`, ready ones under `addresses`, the
//! others under `notReadyAddresses`, grouped by the ports each pod resolves.
//!
//! Pods being deleted are left out (unless the Service publishes not-ready addresses, as
//! there); a pod without a named `targetPort` is left out of that port. Services without
//! a selector and ExternalName Services are not touched. When a Service goes, so do its
//! Endpoints (they carry no owner reference, as in Kubernetes); at start, Endpoints whose
//! Service is gone are deleted (but leader-election records).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{ObjectRef, Store};
use wasmkube_client::informers::{Change, SharedInformerFactory};
use wasmkube_client::status::{
    is_already_exists, is_conflict, is_namespace_terminating, is_not_found,
};

use crate::context::Context;
use crate::endpointslice::TRIGGER_TIME_ANNOTATION;
use crate::endpointslice::reconcile::address_types;
use crate::retry::{Retries, drain, object_key, requeue_failed};
use crate::service_pods::{
    ServiceQueue, endpoint_target_ref, find_port, hostname, is_external_name, is_headless,
    is_ready, node_name, pod_ips, publishes_not_ready, selected_pods, selector,
    should_be_in_endpoints,
};

/// The label headless Services' Endpoints carry.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// At most this many addresses in one Endpoints object (Kubernetes' `maxCapacity`); the
/// rest is left out and the object says so.
const MAX_CAPACITY: usize = 1000;
/// Marks Endpoints that were truncated to [`MAX_CAPACITY`].
const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// Endpoints holding a leader-election record (never deleted as leftovers).
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Why a sync failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
#[error("{what} Endpoints {key}: {source}")]
pub(crate) struct Error {
    what: &'static str,
    key: String,
    #[source]
    source: kube::Error,
}

struct Controller {
    client: kube::Client,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    retries: Retries,
}

/// The Endpoints controller over the shared informers; runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let services = informers.informer::<Service>();
    let pods = informers.informer::<Pod>();
    let endpoints = informers.informer::<Endpoints>();
    async move {
        let ServiceQueue {
            queue,
            sender,
            mut deleted,
            handlers: _handlers,
        } = ServiceQueue::new(&services, &pods);
        // Endpoints deleted by someone else are made again.
        let _endpoints_handler = endpoints.add_handler(move |change| {
            if let Change::Deleted(ep) = change
                && let Some(namespace) = ep.namespace()
            {
                let _ = sender.unbounded_send(ObjectRef::new(&ep.name_any()).within(&namespace));
            }
        });
        let synced = services.wait_synced().await
            && pods.wait_synced().await
            && endpoints.wait_synced().await;
        if !synced {
            tracing::error!("Endpoints controller: an informer stopped before listing");
            return std::future::pending().await;
        }
        tracing::info!("Endpoints controller started");
        let controller = Arc::new(Controller {
            client: ctx.client.clone(),
            pods: pods.store(),
            endpoints: endpoints.store(),
            retries: Retries::client_go_default(),
        });
        // Endpoints of Services deleted while no controller ran.
        let service_store = services.store();
        for ep in endpoints.store().state() {
            let service = ObjectRef::<Service>::new(&ep.name_any())
                .within(&ep.namespace().unwrap_or_default());
            if service_store.get(&service).is_none()
                && !ep.annotations().contains_key(LEADER_ANNOTATION)
            {
                controller.delete_endpoints(&ep).await;
            }
        }
        let cleanup = {
            let controller = controller.clone();
            async move {
                while let Some(service) = deleted.next().await {
                    let stored = controller.endpoints.get(
                        &ObjectRef::new(&service.name_any())
                            .within(&service.namespace().unwrap_or_default()),
                    );
                    if let Some(ep) = stored {
                        controller.delete_endpoints(&ep).await;
                    }
                }
            }
        };
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
                    // Our view was older than our own last write (the informer has not
                    // shown it yet): retried quietly.
                    is_conflict(&error.source) || is_already_exists(&error.source),
                )
            },
            controller,
            service_store,
            queue.map(Ok::<_, Infallible>),
            ApplierConfig::default().concurrency(ctx.config.concurrency),
        );
        futures::join!(drain("endpoints", results), cleanup);
        std::future::pending().await
    }
}

impl Controller {
    /// Deletes the Endpoints of a Service that is gone, a few times if the API fails.
    async fn delete_endpoints(&self, ep: &Endpoints) {
        let api: Api<Endpoints> =
            Api::namespaced(self.client.clone(), &ep.namespace().unwrap_or_default());
        let params = DeleteParams {
            preconditions: ep.uid().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..5u32 {
            match api.delete(&ep.name_any(), &params).await {
                Ok(_) => return,
                Err(e) if is_not_found(&e) || is_conflict(&e) => return,
                Err(e) => {
                    tracing::warn!(endpoints = %object_key(ep), error = %e, "deleting the Endpoints of a deleted Service failed");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    /// One Service's sync (`syncService`).
    async fn sync(&self, service: &Service) -> Result<Action, Error> {
        if is_external_name(service) {
            return Ok(Action::await_change());
        }
        let Some(selector) = selector(service) else {
            return Ok(Action::await_change());
        };
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let key = object_key(service);
        let pods = selected_pods(&self.pods, &namespace, selector);
        let mut subsets = subsets(service, &pods);
        let truncated = truncate(&mut subsets, MAX_CAPACITY);
        let current = self
            .endpoints
            .get(&ObjectRef::new(&name).within(&namespace));
        let mut labels = service.labels().clone();
        if let Some(current) = &current {
            let mut current_labels = current.labels().clone();
            current_labels.remove(HEADLESS_LABEL);
            let marked = current.annotations().contains_key(OVER_CAPACITY_ANNOTATION);
            if normalized(current.subsets.clone()) == subsets
                && current_labels == labels
                && marked == truncated
            {
                self.retries.succeeded(&service.uid().unwrap_or_default());
                return Ok(Action::await_change());
            }
        }
        if is_headless(service) {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let mut endpoints = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            subsets: None,
        });
        endpoints.subsets = subsets;
        endpoints.metadata.labels = Some(labels);
        let annotations = endpoints.annotations_mut();
        annotations.insert(TRIGGER_TIME_ANNOTATION.into(), Timestamp::now().to_string());
        if truncated {
            annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY_ANNOTATION);
        }
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &namespace);
        let written = if current.is_some() {
            api.replace(&name, &PostParams::default(), &endpoints)
                .await
                .map_err(|source| ("updating", source))
        } else {
            match api.create(&PostParams::default(), &endpoints).await {
                Err(e) if is_namespace_terminating(&e) => return Ok(Action::await_change()),
                other => other.map_err(|source| ("creating", source)),
            }
        };
        written.map_err(|(what, source)| Error { what, key, source })?;
        self.retries.succeeded(&service.uid().unwrap_or_default());
        Ok(Action::await_change())
    }
}

fn none_if_empty<T>(v: Option<Vec<T>>) -> Option<Vec<T>> {
    v.filter(|v| !v.is_empty())
}

/// Subsets with empty lists as absent, the form compared and written.
fn normalized(subsets: Option<Vec<EndpointSubset>>) -> Option<Vec<EndpointSubset>> {
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: none_if_empty(s.addresses),
            not_ready_addresses: none_if_empty(s.not_ready_addresses),
            ports: none_if_empty(s.ports),
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect();
    (!subsets.is_empty()).then_some(subsets)
}

/// A port of a subset, comparable.
type PortKey = (String, i32, String, String);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_default(),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

/// `truncateEndpoints`: keeps at most `max` addresses, ready ones first: when the ready
/// ones alone are too many, every subset keeps its share of `max` of them (the last the
/// rest) and no not-ready one; otherwise the not-ready ones are cut so. Returns whether
/// anything was cut. (Done before comparing with the stored object, so a truncated
/// Endpoints is not written again at every sync, as Kubernetes' would be.)
fn truncate(subsets: &mut Option<Vec<EndpointSubset>>, max: usize) -> bool {
    let Some(list) = subsets.as_mut() else {
        return false;
    };
    let len = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = list.iter().map(|s| len(&s.addresses)).sum();
    let not_ready: usize = list.iter().map(|s| len(&s.not_ready_addresses)).sum();
    if ready + not_ready <= max {
        return false;
    }
    let cut_ready = ready > max;
    let (room, total) = if cut_ready {
        (max, ready)
    } else {
        (max - ready, not_ready)
    };
    let mut left = room;
    let last = list.len() - 1;
    for (i, subset) in list.iter_mut().enumerate() {
        let field = if cut_ready {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let here = len(field);
        let share = if i == last {
            left
        } else {
            (here * room).div_ceil(total)
        };
        if let Some(addresses) = field.as_mut() {
            addresses.truncate(share.min(left));
        }
        left -= len(field);
        if cut_ready {
            subset.not_ready_addresses = None;
        }
    }
    *subsets = normalized(subsets.take());
    true
}

/// The pods of one port set: (ports, ready addresses, not-ready addresses).
type Group = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// The Endpoints' subsets for the Service's selected `pods` (`syncService` then
/// `RepackSubsets`): one subset per distinct set of resolved ports, addresses sorted by IP.
pub(crate) fn subsets(service: &Service, pods: &[Arc<Pod>]) -> Option<Vec<EndpointSubset>> {
    let publish = publishes_not_ready(service);
    let family_v6 = address_types(service).first() == Some(&"IPv6");
    let service_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<Vec<PortKey>, Group> = BTreeMap::new();
    for pod in pods {
        if !should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(ip) = pod_ips(pod).find(|ip| matches!(ip, IpAddr::V6(_)) == family_v6) else {
            continue;
        };
        let address = EndpointAddress {
            ip: ip.to_string(),
            hostname: hostname(pod, service).map(str::to_string),
            node_name: node_name(pod),
            target_ref: Some(endpoint_target_ref(pod)),
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|port| {
                Some(EndpointPort {
                    name: port.name.clone().filter(|n| !n.is_empty()),
                    port: find_port(pod, port)?,
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                })
            })
            .collect();
        if ports.is_empty() && !(service_ports.is_empty() && is_headless(service)) {
            continue;
        }
        let mut key: Vec<PortKey> = ports.iter().map(port_key).collect();
        key.sort();
        let group = groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || is_ready(pod) {
            group.1.push(address);
        } else {
            group.2.push(address);
        }
    }
    let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
        let uid = |x: &EndpointAddress| x.target_ref.as_ref().and_then(|t| t.uid.clone());
        a.ip.cmp(&b.ip).then_with(|| uid(a).cmp(&uid(b)))
    };
    let subsets = groups
        .into_values()
        .map(|(mut ports, mut ready, mut not_ready)| {
            ports.sort_by_key(port_key);
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            EndpointSubset {
                addresses: Some(ready),
                not_ready_addresses: Some(not_ready),
                ports: Some(ports),
            }
        })
        .collect();
    normalized(Some(subsets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn service(publish: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                cluster_ip: Some("10.43.0.20".into()),
                publish_not_ready_addresses: Some(publish),
                ports: Some(vec![
                    ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        protocol: Some("TCP".into()),
                        target_port: Some(IntOrString::String("http".into())),
                        ..ServicePort::default()
                    },
                    ServicePort {
                        name: Some("admin".into()),
                        port: 81,
                        protocol: Some("TCP".into()),
                        target_port: Some(IntOrString::Int(9000)),
                        ..ServicePort::default()
                    },
                ]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn pod(n: u8, ready: bool, named_port: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("web-{n}")),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{n}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "app".into(),
                    ports: named_port.then(|| {
                        vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..ContainerPort::default()
                        }]
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ips: Some(vec![PodIP {
                    ip: format!("127.1.0.{n}"),
                }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_are_split_and_grouped_by_their_ports() {
        let pods = [
            pod(3, true, true),
            pod(1, true, true),
            pod(2, false, true),
            pod(4, true, false),
        ];
        let subsets = subsets(&service(false), &pods).unwrap();
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        // Both ports: pods 1-3; only the numeric one: pod 4 (no port named http).
        let both = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 2)
            .unwrap();
        assert_eq!(ips(&both.addresses), ["127.1.0.1", "127.1.0.3"]);
        assert_eq!(ips(&both.not_ready_addresses), ["127.1.0.2"]);
        let ports: Vec<(Option<&str>, i32)> = both
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port))
            .collect();
        assert_eq!(ports, [(Some("admin"), 9000), (Some("http"), 8080)]);
        let one = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 1)
            .unwrap();
        assert_eq!(ips(&one.addresses), ["127.1.0.4"]);
        assert_eq!(one.not_ready_addresses, None);
        let address = &both.addresses.as_ref().unwrap()[0];
        assert_eq!(address.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            address.target_ref.as_ref().and_then(|t| t.uid.as_deref()),
            Some("uid-1")
        );
    }

    #[test]
    fn terminating_pods_leave_unless_not_ready_addresses_are_published() {
        let mut leaving = (*pod(1, true, true)).clone();
        leaving.metadata.deletion_timestamp = Some(Time("2026-12-07T08:00:00Z".parse().unwrap()));
        let pods = [Arc::new(leaving), pod(2, false, true)];
        let kept = subsets(&service(false), &pods).unwrap();
        assert_eq!(ips(&kept[0].addresses), Vec::<&str>::new());
        assert_eq!(ips(&kept[0].not_ready_addresses), ["127.1.0.2"]);
        let published = subsets(&service(true), &pods).unwrap();
        assert_eq!(ips(&published[0].addresses), ["127.1.0.1", "127.1.0.2"]);
    }

    fn addresses(n: usize, from: usize) -> Option<Vec<EndpointAddress>> {
        Some(
            (from..from + n)
                .map(|i| EndpointAddress {
                    ip: format!("10.42.{}.{}", i / 250, i % 250),
                    ..EndpointAddress::default()
                })
                .collect(),
        )
    }

    fn counts(subsets: &Option<Vec<EndpointSubset>>) -> Vec<(usize, usize)> {
        let len = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
        subsets
            .iter()
            .flatten()
            .map(|s| (len(&s.addresses), len(&s.not_ready_addresses)))
            .collect()
    }

    #[test]
    fn over_a_thousand_addresses_are_cut_ready_ones_last_and_in_proportion() {
        let subset = |ready, not_ready, from| EndpointSubset {
            addresses: addresses(ready, from),
            not_ready_addresses: addresses(not_ready, from + ready),
            ports: None,
        };
        let mut fits = Some(vec![subset(600, 400, 0)]);
        assert!(!truncate(&mut fits, MAX_CAPACITY));
        // Too many not-ready ones: they are cut, the ready ones stay.
        let mut some = Some(vec![subset(700, 200, 0), subset(50, 150, 2000)]);
        assert!(truncate(&mut some, MAX_CAPACITY));
        assert_eq!(counts(&some), [(700, 143), (50, 107)]);
        // Too many ready ones: every subset keeps its share, no not-ready one.
        let mut many = Some(vec![subset(1500, 10, 0), subset(500, 10, 3000)]);
        assert!(truncate(&mut many, MAX_CAPACITY));
        assert_eq!(counts(&many), [(750, 0), (250, 0)]);
    }

    #[test]
    fn no_pods_no_subsets() {
        assert_eq!(subsets(&service(false), &[]), None);
    }
}
