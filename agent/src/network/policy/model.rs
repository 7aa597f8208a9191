//! What the evaluation keeps of the API objects: NetworkPolicies compiled once per change
//! (selectors parsed, CIDRs parsed, ports as ranges or names), and of each pod only its
//! labels, IPs and named container ports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wasmkube_api::selector::LabelSelector;

/// A transport protocol, as NetworkPolicy ports and containerPorts name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (never seen from a wasm guest, kept so a SCTP-only rule matches nothing else).
    Sctp,
}

impl Protocol {
    /// The protocol a field names; absent means TCP (the API's default).
    pub(crate) fn parse(name: Option<&str>) -> Option<Self> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// Labels of a pod or namespace.
pub(crate) type Labels = BTreeMap<String, String>;

/// `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PodKey {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// What the evaluation needs of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// Named `containerPorts`: name, number, protocol.
    pub named_ports: Vec<(String, u16, Protocol)>,
    /// Whether it runs in the host's network (its IP is the node's, not its own).
    pub host_network: bool,
    /// Whether it has finished (Succeeded or Failed): its IP may already be another pod's.
    pub finished: bool,
}

impl PodInfo {
    /// The parts of `pod` the evaluation reads.
    pub fn of(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok())
        {
            ips.push(ip);
        }
        let spec = pod.spec.as_ref();
        let named_ports = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone()?;
                let number = u16::try_from(p.container_port).ok()?;
                let protocol = Protocol::parse(p.protocol.as_deref())?;
                Some((name, number, protocol))
            })
            .collect();
        PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            ips,
            named_ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            finished: matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
        }
    }

    pub(crate) fn key(&self) -> PodKey {
        PodKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The number of the container port named `name` for `protocol`.
    pub(crate) fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, _, p)| n == name && *p == protocol)
            .map(|(_, number, _)| *number)
    }
}

/// Which ports a rule's port entry covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PortSpec {
    /// Every port (no `port`).
    All,
    /// `port` to `endPort` (or just `port`).
    Range(u16, u16),
    /// A named container port of the pod the traffic goes to.
    Named(String),
    /// A port that cannot match anything (out of range: refused by validation anyway).
    Never,
}

/// One entry of a rule's `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyPort {
    /// `None`: a protocol this agent does not know, which matches nothing.
    pub(crate) protocol: Option<Protocol>,
    pub(crate) port: PortSpec,
}

/// The namespaces a pod peer may be in.
#[derive(Clone, Debug)]
pub(crate) enum Namespaces {
    /// Only the policy's own (no `namespaceSelector`).
    Own(String),
    /// Those whose labels match.
    Selected(LabelSelector),
}

/// One entry of a rule's `from` or `to`.
#[derive(Clone, Debug)]
pub(crate) enum Peer {
    /// Pods matching `pods` in `namespaces`.
    Pods {
        namespaces: Namespaces,
        pods: LabelSelector,
    },
    /// Addresses in `cidr` and in none of `except`.
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
    /// A peer that matches nothing (a selector or CIDR that does not parse).
    Nothing,
}

/// One ingress or egress rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// `None`: `from`/`to` empty or absent, every peer.
    pub(crate) peers: Option<Vec<Peer>>,
    /// Empty: every port.
    pub(crate) ports: Vec<PolicyPort>,
}

/// A NetworkPolicy, ready to evaluate.
#[derive(Clone, Debug)]
pub(crate) struct CompiledPolicy {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// The pods (of `namespace`) it applies to.
    pub(crate) pod_selector: LabelSelector,
    /// `Some` when `policyTypes` has Ingress: the selected pods are isolated for ingress and
    /// these rules allow.
    pub(crate) ingress: Option<Vec<Rule>>,
    /// `Some` when `policyTypes` has Egress.
    pub(crate) egress: Option<Vec<Rule>>,
}

impl CompiledPolicy {
    /// Compiles `policy`; what does not parse matches nothing (the API refuses it anyway).
    pub(crate) fn compile(policy: &networking::NetworkPolicy) -> Self {
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let spec = policy.spec.clone().unwrap_or_default();
        // An absent spec.podSelector is the empty selector: every pod of the namespace.
        let pod_selector = selector(spec.pod_selector.as_ref().or(Some(&K8sSelector::default())));
        let egress_rules = spec.egress.unwrap_or_default();
        // policyTypes as the API defaults them, should an object lack them.
        let types = match spec.policy_types {
            Some(types) if !types.is_empty() => types,
            _ if egress_rules.is_empty() => vec!["Ingress".to_string()],
            _ => vec!["Ingress".to_string(), "Egress".to_string()],
        };
        let ingress = types.iter().any(|t| t == "Ingress").then(|| {
            spec.ingress
                .unwrap_or_default()
                .iter()
                .map(|r| rule(r.from.as_deref(), r.ports.as_deref(), &namespace))
                .collect()
        });
        let egress = types.iter().any(|t| t == "Egress").then(|| {
            egress_rules
                .iter()
                .map(|r| rule(r.to.as_deref(), r.ports.as_deref(), &namespace))
                .collect()
        });
        CompiledPolicy {
            name: policy.metadata.name.clone().unwrap_or_default(),
            namespace,
            pod_selector,
            ingress,
            egress,
        }
    }
}

/// A selector that does not parse selects nothing.
fn selector(s: Option<&K8sSelector>) -> LabelSelector {
    LabelSelector::from_k8s_opt(s).unwrap_or_else(|_| LabelSelector::nothing())
}

fn rule(
    peers: Option<&[networking::NetworkPolicyPeer]>,
    ports: Option<&[networking::NetworkPolicyPort]>,
    namespace: &str,
) -> Rule {
    let peers = peers
        .filter(|p| !p.is_empty())
        .map(|peers| peers.iter().map(|p| peer(p, namespace)).collect());
    let ports = ports.unwrap_or_default().iter().map(port).collect();
    Rule { peers, ports }
}

fn peer(p: &networking::NetworkPolicyPeer, namespace: &str) -> Peer {
    if let Some(block) = &p.ip_block {
        let Ok(cidr) = block.cidr.parse::<IpNet>() else {
            return Peer::Nothing;
        };
        let except: Result<Vec<IpNet>, _> = block
            .except
            .iter()
            .flatten()
            .map(|e| e.parse::<IpNet>())
            .collect();
        return match except {
            Ok(except) => Peer::IpBlock { cidr, except },
            Err(_) => Peer::Nothing,
        };
    }
    let namespaces = match &p.namespace_selector {
        Some(s) => Namespaces::Selected(selector(Some(s))),
        None => Namespaces::Own(namespace.to_string()),
    };
    let pods = match &p.pod_selector {
        Some(s) => selector(Some(s)),
        // A namespaceSelector alone: every pod of the selected namespaces.
        None if p.namespace_selector.is_some() => LabelSelector::everything(),
        None => return Peer::Nothing,
    };
    Peer::Pods { namespaces, pods }
}

fn port(p: &networking::NetworkPolicyPort) -> PolicyPort {
    let protocol = Protocol::parse(p.protocol.as_deref());
    let port = match &p.port {
        None => PortSpec::All,
        Some(IntOrString::String(name)) => PortSpec::Named(name.clone()),
        Some(IntOrString::Int(n)) => {
            let end = p.end_port.unwrap_or(*n);
            match (u16::try_from(*n), u16::try_from(end)) {
                (Ok(from), Ok(to)) if from > 0 => PortSpec::Range(from, to),
                _ => PortSpec::Never,
            }
        }
    };
    PolicyPort { protocol, port }
}
