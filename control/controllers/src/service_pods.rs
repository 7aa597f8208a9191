//! What the Endpoints and EndpointSlice controllers share about a Service's pods, as
//! Kubernetes' `k8s.io/endpointslice/util` and `pkg/api/v1/pod`: which pods a Service
//! selects, which of them belong in its endpoints, their addresses per IP family, the port
//! a `targetPort` names on each pod, hostnames, the pod reference and node name an endpoint
//! carries, and which Services a pod change concerns.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{ObjectRef, Store};
use wasmkube_client::informers::{Change, HandlerRegistration, SharedInformer};

pub(crate) use crate::pods::is_ready;

/// The Service's label selector, if it has one: a Service without a selector (or with an
/// empty one) has endpoints its users write themselves, which the controllers never touch.
pub(crate) fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether `labels` match a Service selector (every key equal).
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the Service is an ExternalName one (it gets no endpoints from the controllers).
pub(crate) fn is_external_name(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}

/// Whether the Service is headless (`clusterIP: None`, or none at all).
pub(crate) fn is_headless(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    ip.is_empty() || ip == "None"
}

/// `spec.publishNotReadyAddresses`.
pub(crate) fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pods of the Service's namespace its selector matches.
pub(crate) fn selected_pods(
    pods: &Store<Pod>,
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<Arc<Pod>> {
    pods.state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| selects(selector, p.metadata.labels.as_ref()))
        .collect()
}

/// `ShouldPodBeInEndpoints`: not finished (Succeeded/Failed), with an address, and, unless
/// `include_terminating`, not being deleted.
pub(crate) fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    if pod_ips(pod).next().is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's addresses: `status.podIPs`, else `status.podIP`, parsed (and so written in
/// their canonical form).
pub(crate) fn pod_ips(pod: &Pod) -> impl Iterator<Item = IpAddr> + '_ {
    let status = pod.status.as_ref();
    let listed: Vec<&str> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.as_str()).collect())
        .unwrap_or_default();
    let single = status.and_then(|s| s.pod_ip.as_deref());
    let all: Vec<&str> = if listed.is_empty() {
        single.into_iter().collect()
    } else {
        listed
    };
    all.into_iter().filter_map(|ip| ip.parse().ok())
}

/// `FindPort`: the port a Service port's `targetPort` means on this pod. A number is itself;
/// a name is looked up among the pod's containers' ports (and its sidecars': init
/// containers with `restartPolicy: Always`) of the same protocol. `None`: the pod has no
/// such port, and is left out of that port's endpoints.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// `ShouldSetHostname`: the pod's `hostname`, when its `subdomain` is this Service (in its
/// namespace).
pub(crate) fn hostname<'a>(pod: &'a Pod, service: &Service) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = pod.metadata.namespace == service.metadata.namespace;
    (same_namespace && spec.subdomain.as_deref() == service.metadata.name.as_deref())
        .then_some(hostname)
}

/// The `targetRef` of a pod's endpoint: kind, namespace, name and uid only, as Kubernetes'
/// `podToEndpoint` and endpoints controller write it (no apiVersion or resourceVersion).
pub(crate) fn endpoint_target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The node a pod is bound to, if any.
pub(crate) fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The Services a pod change concerns: those of its namespace whose selector matched the
/// pod before or after the change (a relist: every Service).
pub(crate) fn services_for_pod_change(
    change: &Change<'_, Arc<Pod>>,
    services: &Store<Service>,
) -> Vec<ObjectRef<Service>> {
    let pods: Vec<&Pod> = match change {
        Change::Applied { old, new } => old.iter().map(|o| &***o).chain([&***new]).collect(),
        Change::Deleted(pod) => vec![&***pod],
        Change::Relisted => {
            return services
                .state()
                .iter()
                .map(|s| ObjectRef::from_obj(&**s))
                .collect();
        }
    };
    let Some(namespace) = pods[0].metadata.namespace.as_deref() else {
        return Vec::new();
    };
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| {
            selector(s).is_some_and(|sel| {
                pods.iter()
                    .any(|p| selects(sel, p.metadata.labels.as_ref()))
            })
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// The queue of Services to sync that both endpoint controllers run on: a Service's own
/// changes and the pod changes that concern it (old and new labels both: a pod that leaves
/// a selector leaves its endpoints). Deleted Services go to `deleted` instead (the queue's
/// applier skips objects its store no longer has).
pub(crate) struct ServiceQueue {
    /// Services to sync.
    pub(crate) queue: mpsc::UnboundedReceiver<ObjectRef<Service>>,
    /// Sends to the queue (for triggers of the controller's own kinds).
    pub(crate) sender: mpsc::UnboundedSender<ObjectRef<Service>>,
    /// Services that were deleted (their last state).
    pub(crate) deleted: mpsc::UnboundedReceiver<Arc<Service>>,
    /// The handlers feeding the queue: registered while this is held (bind it when taking
    /// the queue apart).
    pub(crate) handlers: [HandlerRegistration; 2],
}

impl ServiceQueue {
    /// Queues from the shared Service and pod informers.
    pub(crate) fn new(services: &SharedInformer<Service>, pods: &SharedInformer<Pod>) -> Self {
        let (sender, queue) = mpsc::unbounded();
        let (deleted_tx, deleted) = mpsc::unbounded();
        let service_handler = {
            let sender = sender.clone();
            services.add_handler(move |change| match change {
                Change::Applied { new, .. } => {
                    let _ = sender.unbounded_send(ObjectRef::from_obj(&***new));
                }
                Change::Deleted(service) => {
                    let _ = deleted_tx.unbounded_send((*service).clone());
                }
                Change::Relisted => {}
            })
        };
        let pod_handler = {
            let sender = sender.clone();
            let store = services.store();
            pods.add_handler(move |change| {
                for service in services_for_pod_change(change, &store) {
                    let _ = sender.unbounded_send(service);
                }
            })
        };
        ServiceQueue {
            queue,
            sender,
            deleted,
            handlers: [service_handler, pod_handler],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodIP, PodSpec, PodStatus};

    fn pod_with_ports(ports: &[(&str, i32, &str)]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(name, n, protocol)| ContainerPort {
                                name: Some(name.to_string()),
                                container_port: *n,
                                protocol: Some(protocol.to_string()),
                                ..ContainerPort::default()
                            })
                            .collect(),
                    ),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn service_port(target: Option<IntOrString>, protocol: &str) -> ServicePort {
        ServicePort {
            port: 80,
            protocol: Some(protocol.into()),
            target_port: target,
            ..ServicePort::default()
        }
    }

    #[test]
    fn a_named_target_port_is_looked_up_per_pod_and_protocol() {
        let pod = pod_with_ports(&[("http", 8080, "TCP"), ("dns", 53, "UDP")]);
        let named = |n: &str| Some(IntOrString::String(n.into()));
        assert_eq!(
            find_port(&pod, &service_port(named("http"), "TCP")),
            Some(8080)
        );
        assert_eq!(find_port(&pod, &service_port(named("dns"), "TCP")), None);
        assert_eq!(
            find_port(&pod, &service_port(named("dns"), "UDP")),
            Some(53)
        );
        assert_eq!(
            find_port(&pod, &service_port(named("metrics"), "TCP")),
            None
        );
        assert_eq!(
            find_port(&pod, &service_port(Some(IntOrString::Int(9000)), "TCP")),
            Some(9000)
        );
        assert_eq!(find_port(&pod, &service_port(None, "TCP")), Some(80));
    }

    #[test]
    fn finished_and_addressless_pods_are_no_endpoints() {
        let mut pod = Pod::default();
        assert!(!should_be_in_endpoints(&pod, true));
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ips: Some(vec![PodIP {
                ip: "127.1.0.7".into(),
            }]),
            ..PodStatus::default()
        });
        assert!(should_be_in_endpoints(&pod, false));
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert!(should_be_in_endpoints(&pod, true));
        assert!(!should_be_in_endpoints(&pod, false));
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_be_in_endpoints(&pod, true));
    }

    #[test]
    fn an_empty_selector_selects_nothing_and_keys_must_all_match() {
        let svc = Service::default();
        assert!(selector(&svc).is_none());
        let sel: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "x".to_string()),
        ]
        .into();
        assert!(selects(&sel, Some(&labels)));
        assert!(!selects(&sel, None));
        let other: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        assert!(!selects(&sel, Some(&other)));
    }
}
