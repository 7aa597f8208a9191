//! NetworkPolicy (networking.k8s.io/v1) for wasm pods, enforced in-process.
//!
//! A wasm guest's sockets are the agent's: every connect, UDP send, `wasi:http` outgoing
//! request and accepted connection goes through `wasmkube-runtime`, which asks the pod's
//! connect policy first. So the agent enforces NetworkPolicy itself, with no CNI plugin and
//! no kernel rules: a refused connect fails in the guest (`access-denied`), a refused peer's
//! connection is closed before the guest sees it.
//!
//! The pieces:
//! - [`NetworkPolicies`]: the node's view of the cluster ([`ClusterView`]: compiled
//!   policies, pods by key and by IP, namespaces' labels, Services and their
//!   EndpointSlices), kept current by shared informers of NetworkPolicies, Pods,
//!   Namespaces, Services and EndpointSlices (one watch each, cluster-wide; pods trimmed to
//!   labels, IPs and container ports). They need an identity that may list and watch
//!   those everywhere, which a node's own may not: the agent's cluster-wide identity
//!   (`system:kube-proxy`, ClusterRole `wasmkube:network-policy`, as k3s' embedded network
//!   policy controller runs as `system:k3s-controller`).
//! - [`PodPolicy`]: one per pod, handed to the runtime; it answers each connection from
//!   the view as it is at that moment, so a policy, label or pod change applies to the
//!   next connection (established connections are left alone, as conntrack-based
//!   enforcement does).
//! - `model` (what is kept of the objects) and `eval` (Kubernetes' semantics, see
//!   [`ClusterView::decide`]).
//!
//! Until the informers have listed, no pod is isolated. Refusals are logged at debug level
//! only: a denied peer may retry in a loop.
//!
//! Containers (CRI) are not covered: their traffic does not pass through the agent, and
//! enforcing policy for them is a CNI plugin's job.

mod eval;
mod model;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmkube_client::informers::{Change, HandlerRegistration, SharedInformerFactory};

pub use eval::{ClusterView, Decision, Direction};
use model::{CompiledPolicy, PodKey};
pub use model::{PodInfo, Protocol};

/// The node's NetworkPolicy view, shared by every pod's [`PodPolicy`]; cheap to clone.
#[derive(Clone)]
pub struct NetworkPolicies {
    view: Arc<RwLock<ClusterView>>,
    /// Keeps the informers and their handlers alive.
    _live: Option<Arc<Live>>,
}

struct Live {
    _factory: SharedInformerFactory,
    _handlers: Vec<HandlerRegistration>,
}

impl std::fmt::Debug for NetworkPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkPolicies")
            .field("enforced", &self._live.is_some())
            .finish_non_exhaustive()
    }
}

impl NetworkPolicies {
    /// A view no informer feeds: nothing is ever isolated (an agent without a cluster-wide
    /// identity; tests).
    pub fn disabled() -> Self {
        NetworkPolicies {
            view: Arc::new(RwLock::new(ClusterView::default())),
            _live: None,
        }
    }

    /// A view of `view` that nothing else changes (tests).
    pub fn fixed(view: ClusterView) -> Self {
        NetworkPolicies {
            view: Arc::new(RwLock::new(view)),
            _live: None,
        }
    }

    /// Starts the informers (through `client`, which must list and watch pods, namespaces
    /// and networkpolicies cluster-wide) for a node whose own addresses are `node_ips`.
    pub fn start(client: kube::Client, node_ips: Vec<IpAddr>) -> Self {
        let view = Arc::new(RwLock::new(ClusterView::new(node_ips)));
        let factory = SharedInformerFactory::new(client);
        let policies = factory.informer::<NetworkPolicy>();
        let pods = factory.informer::<Pod>();
        let namespaces = factory.informer::<Namespace>();
        // Egress to a cluster IP is judged by the Service's endpoints.
        let services = factory.informer::<Service>();
        let slices = factory.informer::<EndpointSlice>();
        // Only what the evaluation reads is kept of every pod and namespace of the cluster.
        let _ = pods.set_transform(trim_pod);
        let _ = namespaces.set_transform(|ns: &mut Namespace| {
            *ns = Namespace {
                metadata: trim_meta(&ns.metadata),
                ..Namespace::default()
            };
        });
        let on_policy = Arc::clone(&view);
        let on_pod = Arc::clone(&view);
        let on_namespace = Arc::clone(&view);
        let on_service = Arc::clone(&view);
        let on_slice = Arc::clone(&view);
        let handlers = vec![
            policies.add_handler(move |change| {
                let mut view = write(&on_policy);
                match change {
                    Change::Applied { new, .. } => view.set_policy(CompiledPolicy::compile(new)),
                    Change::Deleted(old) => view.remove_policy(
                        old.metadata.namespace.as_deref().unwrap_or_default(),
                        old.metadata.name.as_deref().unwrap_or_default(),
                    ),
                    Change::Relisted => {}
                }
            }),
            pods.add_handler(move |change| {
                let mut view = write(&on_pod);
                match change {
                    Change::Applied { new, .. } => view.set_pod(PodInfo::of(new)),
                    Change::Deleted(old) => view.remove_pod(&PodInfo::of(old).key()),
                    Change::Relisted => {}
                }
            }),
            namespaces.add_handler(move |change| {
                let mut view = write(&on_namespace);
                match change {
                    Change::Applied { new, .. } => view.set_namespace(
                        new.metadata.name.as_deref().unwrap_or_default(),
                        new.metadata.labels.clone().unwrap_or_default(),
                    ),
                    Change::Deleted(old) => {
                        view.remove_namespace(old.metadata.name.as_deref().unwrap_or_default())
                    }
                    Change::Relisted => {}
                }
            }),
            services.add_handler(move |change| {
                let mut view = write(&on_service);
                match change {
                    Change::Applied { new, .. } => view.set_service(Arc::clone(new)),
                    Change::Deleted(old) => {
                        if let (Some(namespace), Some(name)) =
                            (&old.metadata.namespace, &old.metadata.name)
                        {
                            view.remove_service(&crate::proxy::model::ServiceKey {
                                namespace: namespace.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                    Change::Relisted => {}
                }
            }),
            slices.add_handler(move |change| {
                let mut view = write(&on_slice);
                match change {
                    Change::Applied { old, new } => {
                        if let Some(old) = old {
                            view.remove_slice(old);
                        }
                        view.set_slice(Arc::clone(new));
                    }
                    Change::Deleted(old) => view.remove_slice(old),
                    Change::Relisted => {}
                }
            }),
        ];
        factory.start();
        NetworkPolicies {
            view,
            _live: Some(Arc::new(Live {
                _factory: factory,
                _handlers: handlers,
            })),
        }
    }

    /// The connect policy of `pod` (a pod of this node), with `pod_ip` its address.
    pub fn for_pod(&self, pod: &Pod, pod_ip: Option<IpAddr>) -> Arc<PodPolicy> {
        let mut own = PodInfo::of(pod);
        if own.ips.is_empty() {
            own.ips.extend(pod_ip);
        }
        Arc::new(PodPolicy {
            view: Arc::clone(&self.view),
            key: own.key(),
            own,
        })
    }
}

fn write(view: &RwLock<ClusterView>) -> std::sync::RwLockWriteGuard<'_, ClusterView> {
    view.write().unwrap_or_else(PoisonError::into_inner)
}

fn trim_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        resource_version: meta.resource_version.clone(),
        uid: meta.uid.clone(),
        ..ObjectMeta::default()
    }
}

/// A pod as the evaluation reads it: labels, host network, container ports, IPs, phase.
fn trim_pod(pod: &mut Pod) {
    let spec = pod.spec.take().map(|s| PodSpec {
        containers: s
            .containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                ports: c.ports,
                ..Container::default()
            })
            .collect(),
        host_network: s.host_network,
        ..PodSpec::default()
    });
    let status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        pod_ips: s.pod_ips,
        ..PodStatus::default()
    });
    *pod = Pod {
        metadata: trim_meta(&pod.metadata),
        spec,
        status,
    };
}

/// The connect policy of one pod: answers from the node's view at the time of each
/// connection.
pub struct PodPolicy {
    view: Arc<RwLock<ClusterView>>,
    key: PodKey,
    /// The pod as the agent started it, for as long as the informer has not seen it.
    own: PodInfo,
}

impl std::fmt::Debug for PodPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodPolicy")
            .field("pod", &self.key)
            .finish_non_exhaustive()
    }
}

impl PodPolicy {
    /// Decides a connection with `peer` on `port` (the pod's own port for ingress, the
    /// peer's for egress).
    pub fn decide(
        &self,
        direction: Direction,
        peer: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Decision {
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let decision = match view.pod(&self.key) {
            // Its IP comes from the agent: the status the informer shows may not have it yet.
            Some(seen) if seen.ips.is_empty() && !self.own.ips.is_empty() => {
                let mut seen = seen.clone();
                seen.ips.clone_from(&self.own.ips);
                view.decide(&seen, direction, peer, port, protocol)
            }
            Some(seen) => view.decide(seen, direction, peer, port, protocol),
            None => view.decide(&self.own, direction, peer, port, protocol),
        };
        if !decision.allowed() {
            tracing::debug!(
                pod = %format!("{}/{}", self.key.namespace, self.key.name),
                ?direction,
                %peer,
                port,
                ?protocol,
                "NetworkPolicy refused a connection"
            );
        }
        decision
    }

    /// Whether the pod may connect (TCP) or send (UDP) to `to`.
    pub fn allows_egress(&self, to: SocketAddr, protocol: Protocol) -> bool {
        self.decide(Direction::Egress, to.ip(), to.port(), protocol)
            .allowed()
    }

    /// Whether the pod may accept a connection or datagram from `from` on its `local_port`.
    pub fn allows_ingress(&self, from: SocketAddr, local_port: u16, protocol: Protocol) -> bool {
        self.decide(Direction::Ingress, from.ip(), local_port, protocol)
            .allowed()
    }
}

impl wasmkube_runtime::ConnectPolicy for PodPolicy {
    fn allow_egress(&self, to: SocketAddr, protocol: wasmkube_runtime::Protocol) -> bool {
        self.allows_egress(to, runtime_protocol(protocol))
    }

    fn allow_ingress(
        &self,
        from: SocketAddr,
        local_port: u16,
        protocol: wasmkube_runtime::Protocol,
    ) -> bool {
        self.allows_ingress(from, local_port, runtime_protocol(protocol))
    }
}

fn runtime_protocol(protocol: wasmkube_runtime::Protocol) -> Protocol {
    match protocol {
        wasmkube_runtime::Protocol::Tcp => Protocol::Tcp,
        wasmkube_runtime::Protocol::Udp => Protocol::Udp,
    }
}
