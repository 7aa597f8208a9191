//! Kubernetes' NetworkPolicy semantics over the informers' view ([`ClusterView`]).
//!
//! For a connection of a local pod (the subject) with a peer address, port and protocol:
//! - the node the pod runs on and the pod itself are always allowed (Kubernetes: "traffic
//!   to and from the node where a Pod is running is always allowed", "a pod cannot block
//!   access to itself");
//! - the pod is isolated for the direction when some policy of its namespace selects it
//!   (`spec.podSelector`) and lists that direction in `policyTypes`; a pod no policy
//!   isolates is allowed everything;
//! - an isolated pod's connection is allowed when some rule of some selecting policy allows
//!   it (policies add up): its peers (`from`/`to`; none = every peer) include the peer and
//!   its ports (none = every port) include the port;
//! - a peer is a podSelector (pods of the policy's namespace), a namespaceSelector (every
//!   pod of the selected namespaces), both (selected pods of selected namespaces), or an
//!   ipBlock (addresses in `cidr` but in no `except`). Pod peers are found by their IP
//!   (`status.podIPs`); an address no pod has matches only ipBlocks;
//! - a port is a number, a range (`port`..=`endPort`) or the name of a containerPort of the
//!   pod the traffic goes to (the subject for ingress, the peer pod for egress), each for
//!   one protocol.
//!
//! Egress to a Service's cluster IP: Kubernetes judges the endpoint kube-proxy's DNAT
//! picked, which the agent cannot know when the guest connects. The connection is allowed
//! when the cluster IP itself is (an ipBlock), or when every endpoint the DNAT may pick
//! (the ready ones, else the serving terminating ones) is allowed at its target port: never
//! more than Kubernetes would allow, and all of a Service a policy opens.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{
    CompiledPolicy, Labels, Namespaces, Peer, PodInfo, PodKey, PolicyPort, PortSpec, Protocol, Rule,
};
use crate::proxy::model::{self as services, ServiceKey};

/// Which way a connection goes, seen from the subject pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Into the pod, from the peer.
    Ingress,
    /// Out of the pod, to the peer.
    Egress,
}

/// The answer for one connection, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No policy isolates the pod for this direction.
    NotIsolated,
    /// The peer is the pod's node or the pod itself, which no policy blocks.
    Always,
    /// Allowed by the policy `namespace/name`.
    Allowed(String),
    /// The pod is isolated and no rule allows the connection.
    Denied,
}

impl Decision {
    /// Whether the connection may go ahead.
    pub fn allowed(&self) -> bool {
        !matches!(self, Decision::Denied)
    }
}

/// What the informers know: policies, pods (by key and by IP), namespaces' labels; and the
/// addresses of this node.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// namespace -> name -> policy.
    policies: HashMap<String, BTreeMap<String, Arc<CompiledPolicy>>>,
    pods: HashMap<PodKey, Arc<PodInfo>>,
    by_ip: HashMap<IpAddr, Vec<PodKey>>,
    namespaces: HashMap<String, Labels>,
    node_ips: Vec<IpAddr>,
    services: HashMap<ServiceKey, Arc<Service>>,
    /// Cluster IP -> its Service.
    cluster_ips: HashMap<IpAddr, ServiceKey>,
    /// Service -> slice name -> slice.
    slices: HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>,
}

impl ClusterView {
    /// An empty view for a node with these addresses.
    pub fn new(node_ips: Vec<IpAddr>) -> Self {
        ClusterView {
            node_ips,
            ..ClusterView::default()
        }
    }

    /// Adds or replaces a policy.
    pub(crate) fn set_policy(&mut self, policy: CompiledPolicy) {
        self.policies
            .entry(policy.namespace.clone())
            .or_default()
            .insert(policy.name.clone(), Arc::new(policy));
    }

    /// Removes a policy.
    pub(crate) fn remove_policy(&mut self, namespace: &str, name: &str) {
        if let Some(in_ns) = self.policies.get_mut(namespace) {
            in_ns.remove(name);
            if in_ns.is_empty() {
                self.policies.remove(namespace);
            }
        }
    }

    /// Adds or replaces a pod.
    pub fn set_pod(&mut self, pod: PodInfo) {
        let key = pod.key();
        self.remove_pod(&key);
        if !pod.host_network {
            for ip in &pod.ips {
                self.by_ip.entry(*ip).or_default().push(key.clone());
            }
        }
        self.pods.insert(key, Arc::new(pod));
    }

    /// Removes a pod.
    pub(crate) fn remove_pod(&mut self, key: &PodKey) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        for ip in &old.ips {
            if let Some(keys) = self.by_ip.get_mut(ip) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    /// Sets a namespace's labels.
    pub fn set_namespace(&mut self, name: &str, labels: Labels) {
        self.namespaces.insert(name.to_string(), labels);
    }

    /// Removes a namespace.
    pub(crate) fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Adds or replaces a Service.
    pub(crate) fn set_service(&mut self, service: Arc<Service>) {
        let Some(key) = service_key(&service.metadata) else {
            return;
        };
        self.remove_service(&key);
        let ips = service
            .spec
            .iter()
            .flat_map(|s| s.cluster_ip.iter().chain(s.cluster_ips.iter().flatten()));
        for ip in ips.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            self.cluster_ips.insert(ip, key.clone());
        }
        self.services.insert(key, service);
    }

    /// Removes a Service.
    pub(crate) fn remove_service(&mut self, key: &ServiceKey) {
        if self.services.remove(key).is_some() {
            self.cluster_ips.retain(|_, k| k != key);
        }
    }

    /// Adds or replaces an EndpointSlice (filed under the Service its label names).
    pub(crate) fn set_slice(&mut self, slice: Arc<EndpointSlice>) {
        let (Some(key), Some(name)) = (slice_service(&slice), slice.metadata.name.clone()) else {
            return;
        };
        self.slices.entry(key).or_default().insert(name, slice);
    }

    /// Removes an EndpointSlice.
    pub(crate) fn remove_slice(&mut self, slice: &EndpointSlice) {
        let (Some(key), Some(name)) = (slice_service(slice), slice.metadata.name.as_ref()) else {
            return;
        };
        if let Some(slices) = self.slices.get_mut(&key) {
            slices.remove(name);
            if slices.is_empty() {
                self.slices.remove(&key);
            }
        }
    }

    /// The endpoints (address, target port) a connection to `ip:port` may be DNATed to, when
    /// `ip` is a Service's cluster IP serving that port.
    fn service_targets(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Option<Vec<(IpAddr, u16)>> {
        let key = self.cluster_ips.get(&ip)?;
        let service = self.services.get(key)?;
        let service_port = services::service_ports(service)
            .into_iter()
            .find(|p| p.port == port && same_protocol(p.protocol, protocol))?;
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(key)
            .into_iter()
            .flat_map(|s| s.values().map(Arc::as_ref))
            .collect();
        let all = services::endpoints(&service_port, &slices, "");
        Some(
            services::usable(all.iter())
                .into_iter()
                .map(|e| (IpAddr::V4(e.ip), e.port))
                .collect(),
        )
    }

    /// The pod `key`, as the informer has it.
    pub(crate) fn pod(&self, key: &PodKey) -> Option<&PodInfo> {
        self.pods.get(key).map(Arc::as_ref)
    }

    /// The pod that has `ip`: a running one before a finished one whose IP was reused.
    pub(crate) fn pod_at(&self, ip: IpAddr) -> Option<&PodInfo> {
        let pods = self.by_ip.get(&ip)?.iter().filter_map(|k| self.pod(k));
        let mut finished = None;
        for pod in pods {
            if !pod.finished {
                return Some(pod);
            }
            finished.get_or_insert(pod);
        }
        finished
    }

    /// Decides a connection of `subject` (a pod of this node) with `peer` on `port`
    /// (the subject's port for ingress, the peer's for egress) over `protocol`.
    pub fn decide(
        &self,
        subject: &PodInfo,
        direction: Direction,
        peer: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Decision {
        let peer = peer.to_canonical();
        let direct = self.decide_direct(subject, direction, peer, port, protocol);
        if direct.allowed() || direction == Direction::Ingress {
            return direct;
        }
        let Some(targets) = self.service_targets(peer, port, protocol) else {
            return direct;
        };
        let mut allowed_by = None;
        for (ip, target_port) in targets {
            match self.decide_direct(subject, direction, ip, target_port, protocol) {
                Decision::Denied => return Decision::Denied,
                decision => {
                    allowed_by.get_or_insert(decision);
                }
            }
        }
        // No endpoint: kube-proxy rejects the connection anyway.
        allowed_by.unwrap_or(direct)
    }

    /// [`decide`](Self::decide) for `peer` as it is (no Service's endpoints).
    fn decide_direct(
        &self,
        subject: &PodInfo,
        direction: Direction,
        peer: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Decision {
        if self.node_ips.contains(&peer) || subject.ips.contains(&peer) {
            return Decision::Always;
        }
        let Some(policies) = self.policies.get(&subject.namespace) else {
            return Decision::NotIsolated;
        };
        let peer_pod = self.pod_at(peer);
        // Named ports are the containerPorts of the pod the traffic goes to.
        let target = match direction {
            Direction::Ingress => Some(subject),
            Direction::Egress => peer_pod,
        };
        let mut isolated = false;
        for policy in policies.values() {
            if !policy.pod_selector.matches(&subject.labels) {
                continue;
            }
            let rules = match direction {
                Direction::Ingress => policy.ingress.as_ref(),
                Direction::Egress => policy.egress.as_ref(),
            };
            let Some(rules) = rules else {
                continue;
            };
            isolated = true;
            let allows = |rule: &Rule| {
                let peer_ok = rule
                    .peers
                    .as_ref()
                    .is_none_or(|peers| peers.iter().any(|p| self.peer_matches(p, peer, peer_pod)));
                let port_ok = rule.ports.is_empty()
                    || rule
                        .ports
                        .iter()
                        .any(|p| port_matches(p, port, protocol, target));
                peer_ok && port_ok
            };
            if rules.iter().any(allows) {
                return Decision::Allowed(format!("{}/{}", policy.namespace, policy.name));
            }
        }
        if isolated {
            Decision::Denied
        } else {
            Decision::NotIsolated
        }
    }

    fn peer_matches(&self, peer: &Peer, ip: IpAddr, pod: Option<&PodInfo>) -> bool {
        match peer {
            Peer::IpBlock { cidr, except } => {
                cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
            }
            Peer::Pods { namespaces, pods } => pod.is_some_and(|pod| {
                let namespace_ok = match namespaces {
                    Namespaces::Own(ns) => pod.namespace == *ns,
                    Namespaces::Selected(selector) => {
                        // A namespace the informer has not seen yet has no labels.
                        let empty = Labels::new();
                        let labels = self.namespaces.get(&pod.namespace).unwrap_or(&empty);
                        selector.matches(labels)
                    }
                };
                namespace_ok && pods.matches(&pod.labels)
            }),
            Peer::Nothing => false,
        }
    }
}

fn service_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
    })
}

fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: slice.metadata.namespace.clone()?,
        name: slice
            .metadata
            .labels
            .as_ref()?
            .get(services::SERVICE_NAME_LABEL)?
            .clone(),
    })
}

fn same_protocol(a: services::Protocol, b: Protocol) -> bool {
    matches!(
        (a, b),
        (services::Protocol::Tcp, Protocol::Tcp)
            | (services::Protocol::Udp, Protocol::Udp)
            | (services::Protocol::Sctp, Protocol::Sctp)
    )
}

fn port_matches(p: &PolicyPort, port: u16, protocol: Protocol, target: Option<&PodInfo>) -> bool {
    if p.protocol != Some(protocol) {
        return false;
    }
    match &p.port {
        PortSpec::All => true,
        PortSpec::Range(from, to) => (*from..=*to).contains(&port),
        PortSpec::Named(name) => {
            port != 0 && target.and_then(|t| t.named_port(name, protocol)) == Some(port)
        }
        PortSpec::Never => false,
    }
}
