//! The watch cache the answers come from: Services and EndpointSlices as the shared informers
//! report them, reduced to what DNS needs and indexed by the names queries ask for (a
//! Service's slices, the names an IP address has for PTR). Updated by the informers' handlers
//! under a short write lock; read by every query. Nothing here lists from the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespace and a name.
pub(crate) type Key = (String, String);

/// What DNS knows of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceEntry {
    pub(crate) kind: ServiceKind,
    pub(crate) ports: Vec<PortEntry>,
}

/// How a Service's name resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    /// To its cluster IPs (`spec.clusterIPs`; none yet while unallocated).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: to its ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to `spec.externalName`.
    ExternalName(String),
}

/// A port of a Service or an EndpointSlice; name and protocol lower-cased, as queries match
/// them without case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortEntry {
    pub(crate) name: String,
    pub(crate) protocol: String,
    pub(crate) port: u16,
}

/// A ready address of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointEntry {
    pub(crate) ip: IpAddr,
    /// Its DNS label: the endpoint's `hostname`, else the address with `-` for `.` and `:`
    /// (CoreDNS's `endpointHostname`), lower-cased.
    pub(crate) label: String,
}

/// What DNS knows of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceEntry {
    service: String,
    pub(crate) endpoints: Vec<EndpointEntry>,
    pub(crate) ports: Vec<PortEntry>,
}

/// Services, EndpointSlices and the indexes over them.
#[derive(Debug, Default)]
pub(crate) struct Index {
    services: HashMap<Key, ServiceEntry>,
    /// How many Services each namespace has (`NS.svc.<zone>` exists while it has one).
    services_per_namespace: HashMap<String, usize>,
    slices: HashMap<Key, SliceEntry>,
    /// The slices of each Service, by (namespace, service name).
    slices_of: HashMap<Key, BTreeSet<String>>,
    /// The names (relative to the zone, e.g. `kubernetes.default.svc`) of each address, with
    /// how many objects give it that name.
    reverse: HashMap<IpAddr, BTreeMap<String, usize>>,
    /// Seconds since the epoch of the last change (the SOA serial, as CoreDNS's).
    serial: u32,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn now_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// A Service's DNS view; `None` for an object without a namespace or name.
fn service_entry(svc: &Service) -> Option<(Key, ServiceEntry)> {
    let key = key_of(&svc.metadata)?;
    let spec = svc.spec.as_ref();
    let kind = match spec {
        Some(s) if s.type_.as_deref() == Some("ExternalName") => {
            ServiceKind::ExternalName(s.external_name.clone().unwrap_or_default())
        }
        Some(s) if s.cluster_ip.as_deref() == Some("None") => ServiceKind::Headless,
        Some(s) => {
            let ips = s
                .cluster_ips
                .iter()
                .flatten()
                .chain(s.cluster_ip.iter())
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
                .fold(Vec::new(), |mut all, ip| {
                    if !all.contains(&ip) {
                        all.push(ip);
                    }
                    all
                });
            ServiceKind::ClusterIp(ips)
        }
        None => ServiceKind::ClusterIp(Vec::new()),
    };
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(PortEntry {
                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some((key, ServiceEntry { kind, ports }))
}

/// The DNS label of an endpoint address (CoreDNS's `endpointHostname`).
pub(crate) fn endpoint_label(ip: IpAddr, hostname: Option<&str>) -> String {
    match hostname.filter(|h| !h.is_empty()) {
        Some(h) => h.to_ascii_lowercase(),
        None => ip.to_string().replace(['.', ':'], "-"),
    }
}

/// An EndpointSlice's DNS view: its Service and ready addresses (a missing `ready` condition
/// counts as ready, as the API says consumers should read it). FQDN slices and slices
/// without a Service label have none.
fn slice_entry(slice: &EndpointSlice) -> Option<(Key, SliceEntry)> {
    let key = key_of(&slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))?
        .clone();
    if slice.address_type == "FQDN" {
        return None;
    }
    let mut endpoints = Vec::new();
    for endpoint in &slice.endpoints {
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
        if !ready {
            continue;
        }
        for address in &endpoint.addresses {
            if let Ok(ip) = address.parse::<IpAddr>() {
                endpoints.push(EndpointEntry {
                    ip,
                    label: endpoint_label(ip, endpoint.hostname.as_deref()),
                });
            }
        }
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortEntry {
                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    Some((
        key,
        SliceEntry {
            service,
            endpoints,
            ports,
        },
    ))
}

impl Index {
    /// Adds or replaces a Service.
    pub(crate) fn apply_service(&mut self, svc: &Service) {
        let Some((key, entry)) = service_entry(svc) else {
            return;
        };
        self.remove_service_key(&key);
        if let ServiceKind::ClusterIp(ips) = &entry.kind {
            let name = format!("{}.{}.svc", key.1, key.0);
            for ip in ips {
                self.add_reverse(*ip, &name);
            }
        }
        *self
            .services_per_namespace
            .entry(key.0.clone())
            .or_default() += 1;
        self.services.insert(key, entry);
        self.serial = now_serial();
    }

    /// Removes a Service.
    pub(crate) fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = key_of(&svc.metadata) {
            self.remove_service_key(&key);
            self.serial = now_serial();
        }
    }

    fn remove_service_key(&mut self, key: &Key) {
        let Some(old) = self.services.remove(key) else {
            return;
        };
        if let ServiceKind::ClusterIp(ips) = &old.kind {
            let name = format!("{}.{}.svc", key.1, key.0);
            for ip in ips {
                self.remove_reverse(*ip, &name);
            }
        }
        if let Some(count) = self.services_per_namespace.get_mut(&key.0) {
            *count -= 1;
            if *count == 0 {
                self.services_per_namespace.remove(&key.0);
            }
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub(crate) fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(key) = key_of(&slice.metadata) else {
            return;
        };
        self.remove_slice_key(&key);
        if let Some((key, entry)) = slice_entry(slice) {
            for endpoint in &entry.endpoints {
                let name = format!("{}.{}.{}.svc", endpoint.label, entry.service, key.0);
                self.add_reverse(endpoint.ip, &name);
            }
            self.slices_of
                .entry((key.0.clone(), entry.service.clone()))
                .or_default()
                .insert(key.1.clone());
            self.slices.insert(key, entry);
        }
        self.serial = now_serial();
    }

    /// Removes an EndpointSlice.
    pub(crate) fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = key_of(&slice.metadata) {
            self.remove_slice_key(&key);
            self.serial = now_serial();
        }
    }

    fn remove_slice_key(&mut self, key: &Key) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        for endpoint in &old.endpoints {
            let name = format!("{}.{}.{}.svc", endpoint.label, old.service, key.0);
            self.remove_reverse(endpoint.ip, &name);
        }
        let of = (key.0.clone(), old.service.clone());
        if let Some(names) = self.slices_of.get_mut(&of) {
            names.remove(&key.1);
            if names.is_empty() {
                self.slices_of.remove(&of);
            }
        }
    }

    fn add_reverse(&mut self, ip: IpAddr, name: &str) {
        *self
            .reverse
            .entry(ip)
            .or_default()
            .entry(name.to_string())
            .or_default() += 1;
    }

    fn remove_reverse(&mut self, ip: IpAddr, name: &str) {
        if let Some(names) = self.reverse.get_mut(&ip) {
            if let Some(count) = names.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    names.remove(name);
                }
            }
            if names.is_empty() {
                self.reverse.remove(&ip);
            }
        }
    }

    /// The Service `name` in `namespace`.
    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Whether `namespace` has a Service.
    pub(crate) fn has_namespace(&self, namespace: &str) -> bool {
        self.services_per_namespace.contains_key(namespace)
    }

    /// The EndpointSlices of the Service `name` in `namespace`, in name order.
    pub(crate) fn slices(&self, namespace: &str, name: &str) -> Vec<&SliceEntry> {
        self.slices_of
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(&(namespace.to_string(), slice.clone())))
            .collect()
    }

    /// The names (relative to the zone) an address has, in order.
    pub(crate) fn names_of(&self, ip: IpAddr) -> Vec<&str> {
        self.reverse
            .get(&ip)
            .into_iter()
            .flat_map(|names| names.keys().map(String::as_str))
            .collect()
    }

    /// The SOA serial: when the cache last changed.
    pub(crate) fn serial(&self) -> u32 {
        self.serial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    name: Some("HTTP".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn slice(name: &str, service: &str, ips: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: ips
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: None,
        }
    }

    #[test]
    fn reverse_names_follow_updates_and_deletes() {
        let mut index = Index::default();
        index.apply_service(&svc("a", "10.43.0.5"));
        assert_eq!(
            index.names_of("10.43.0.5".parse().unwrap()),
            ["a.default.svc"]
        );
        assert_eq!(index.service("default", "a").unwrap().ports[0].name, "http");
        index.apply_service(&svc("a", "10.43.0.6"));
        assert!(index.names_of("10.43.0.5".parse().unwrap()).is_empty());
        index.delete_service(&svc("a", "10.43.0.6"));
        assert!(index.names_of("10.43.0.6".parse().unwrap()).is_empty());
        assert!(!index.has_namespace("default"));
    }

    #[test]
    fn only_ready_or_unknown_endpoints_count() {
        let mut index = Index::default();
        index.apply_slice(&slice(
            "s-1",
            "web",
            &[
                ("10.42.0.1", Some(true)),
                ("10.42.0.2", Some(false)),
                ("10.42.0.3", None),
            ],
        ));
        let slices = index.slices("default", "web");
        let ips: Vec<String> = slices[0]
            .endpoints
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(ips, ["10.42.0.1", "10.42.0.3"]);
        assert_eq!(
            index.names_of("10.42.0.1".parse().unwrap()),
            ["10-42-0-1.web.default.svc"]
        );
        index.delete_slice(&slice("s-1", "web", &[]));
        assert!(index.slices("default", "web").is_empty());
        assert!(index.names_of("10.42.0.1".parse().unwrap()).is_empty());
    }
}
