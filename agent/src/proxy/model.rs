//! What the proxy programs, from Services and EndpointSlices: one [`ServicePort`] per port
//! of every Service with a cluster IP, and its endpoints, as kube-proxy's `ServicePortMap`
//! and `EndpointsMap` (`pkg/proxy/servicechangetracker.go`, `endpointschangetracker.go`).
//!
//! Pure: no I/O, so the rule model's tests build Services and slices by hand.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A transport protocol the proxy forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    fn parse(value: Option<&str>) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' name of the protocol (`tcp`, `udp`, `sctp`).
    pub(crate) fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/name` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ServiceKey {
    /// The namespace.
    pub(crate) namespace: String,
    /// The name.
    pub(crate) name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service, as the proxy forwards it (kube-proxy's `ServicePort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePort {
    /// The Service.
    pub(crate) service: ServiceKey,
    /// The port's name (`""` for a single unnamed port).
    pub(crate) port_name: String,
    /// The protocol.
    pub(crate) protocol: Protocol,
    /// The cluster IP.
    pub(crate) cluster_ip: Ipv4Addr,
    /// The Service port.
    pub(crate) port: u16,
    /// The node port (NodePort and LoadBalancer Services).
    pub(crate) node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub(crate) affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub(crate) internal_local: bool,
    /// `externalTrafficPolicy: Local` (only meaningful with a node port).
    pub(crate) external_local: bool,
}

impl ServicePort {
    /// `namespace/name/protocol/port-name`, kube-proxy's `ServicePortName` with protocol.
    pub(crate) fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.service,
            self.protocol.nft_name(),
            self.port_name
        )
    }
}

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (three hours).
pub(crate) const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The ports of `service` the proxy forwards: none for ExternalName and headless Services or
/// without an IPv4 cluster IP.
pub(crate) fn service_ports(service: &Service) -> Vec<ServicePort> {
    let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name)
    else {
        return Vec::new();
    };
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let has_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let service_key = ServiceKey {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                service: service_key.clone(),
                port_name: p.name.clone().unwrap_or_default(),
                protocol: Protocol::parse(p.protocol.as_deref())?,
                cluster_ip,
                port: u16::try_from(p.port).ok()?,
                node_port: p
                    .node_port
                    .filter(|_| has_node_ports)
                    .and_then(|n| u16::try_from(n).ok()),
                affinity_timeout,
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                external_local: has_node_ports
                    && spec.external_traffic_policy.as_deref() == Some("Local"),
            })
        })
        .collect()
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Endpoint {
    /// The pod's address.
    pub(crate) ip: Ipv4Addr,
    /// The target port.
    pub(crate) port: u16,
    /// Ready (nil counts as ready, as the API says).
    pub(crate) ready: bool,
    /// Serving (nil: as ready).
    pub(crate) serving: bool,
    /// Terminating.
    pub(crate) terminating: bool,
    /// On this node.
    pub(crate) local: bool,
}

/// The endpoints of `port` in `slices` (the slices of its Service), deduplicated by address
/// and port (a pod may be listed by two slices while they change).
pub(crate) fn endpoints(
    port: &ServicePort,
    slices: &[&EndpointSlice],
    node: &str,
) -> Vec<Endpoint> {
    let mut found: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(target) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port.port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(port.protocol)
        }) else {
            continue;
        };
        let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            found.entry((ip, target_port)).or_insert(Endpoint {
                ip,
                port: target_port,
                ready,
                serving,
                terminating,
                local: endpoint.node_name.as_deref() == Some(node),
            });
        }
    }
    found.into_values().collect()
}

/// The endpoints traffic may go to, kube-proxy's `CategorizeEndpoints` for one scope: the
/// ready ones, else (none ready) the serving and terminating ones, so a rollout's last
/// pods keep answering while they drain.
pub(crate) fn usable<'a>(
    endpoints: impl Iterator<Item = &'a Endpoint> + Clone,
) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = endpoints.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.filter(|e| e.serving && e.terminating).collect()
}

/// The endpoints of a Service port, split as the proxy uses them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Categorized {
    /// For traffic with the Cluster policy.
    pub(crate) cluster: Vec<Endpoint>,
    /// For traffic with the Local policy: the usable endpoints on this node.
    pub(crate) local: Vec<Endpoint>,
    /// Whether the Service has any endpoint at all (none: its traffic is rejected, not
    /// dropped).
    pub(crate) any: bool,
}

/// Splits `all` for cluster-wide and node-local traffic.
pub(crate) fn categorize(all: &[Endpoint]) -> Categorized {
    Categorized {
        cluster: usable(all.iter()).into_iter().cloned().collect(),
        local: usable(all.iter().filter(|e| e.local))
            .into_iter()
            .cloned()
            .collect(),
        any: !all.is_empty(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, ServicePort as ApiServicePort, ServiceSpec, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as ApiEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A ClusterIP Service `ns/name` at `ip` with one TCP port named `http`.
    pub(crate) fn service(name: &str, ip: &str, port: i32) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                type_: Some("ClusterIP".into()),
                ports: Some(vec![ApiServicePort {
                    name: Some("http".into()),
                    port,
                    protocol: Some("TCP".into()),
                    ..ApiServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// A slice of Service `name` with ready endpoints `(ip, node)` on port `http` -> `port`.
    pub(crate) fn slice(
        name: &str,
        suffix: &str,
        port: i32,
        eps: &[(&str, &str)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{name}-{suffix}")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), name.to_string())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, node)| ApiEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..ApiEndpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        }
    }

    #[test]
    fn ports_of_services_with_cluster_ips_only() {
        let mut s = service("web", "10.43.0.10", 80);
        let ports = service_ports(&s);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].id(), "default/web/tcp/http");
        assert_eq!(ports[0].node_port, None);
        assert_eq!(ports[0].affinity_timeout, None);
        let spec = s.spec.as_mut().expect("spec");
        spec.session_affinity = Some("ClientIP".into());
        assert_eq!(
            service_ports(&s)[0].affinity_timeout,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        let spec = s.spec.as_mut().expect("spec");
        spec.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(30),
            }),
        });
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.ports.as_mut().expect("ports")[0].node_port = Some(30080);
        let port = &service_ports(&s)[0];
        assert_eq!(port.affinity_timeout, Some(30));
        assert_eq!(port.node_port, Some(30080));
        assert!(port.external_local);

        let spec = s.spec.as_mut().expect("spec");
        spec.cluster_ip = Some("None".into());
        assert!(service_ports(&s).is_empty(), "headless");
        let spec = s.spec.as_mut().expect("spec");
        spec.cluster_ip = Some("10.43.0.10".into());
        spec.type_ = Some("ExternalName".into());
        assert!(service_ports(&s).is_empty(), "ExternalName");
    }

    #[test]
    fn endpoints_are_deduplicated_and_fall_back_to_serving_terminating_ones() {
        let s = service("web", "10.43.0.10", 80);
        let port = &service_ports(&s)[0];
        let a = slice(
            "web",
            "a",
            8080,
            &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
        );
        let b = slice("web", "b", 8080, &[("10.42.2.2", "n2")]);
        let all = endpoints(port, &[&a, &b], "n1");
        assert_eq!(all.len(), 2);
        let c = categorize(&all);
        assert_eq!(c.cluster.len(), 2);
        assert_eq!(c.local.len(), 1);
        assert_eq!(c.local[0].ip, Ipv4Addr::new(10, 42, 1, 2));

        let mut draining = a.clone();
        for e in &mut draining.endpoints {
            e.conditions = Some(EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true),
            });
        }
        draining.endpoints[1].conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(true),
        });
        let c = categorize(&endpoints(port, &[&draining], "n1"));
        assert_eq!(c.cluster.len(), 1, "only the serving terminating one");
        assert!(c.any);
        let c = categorize(&endpoints(port, &[], "n1"));
        assert!(!c.any && c.cluster.is_empty());
    }
}
