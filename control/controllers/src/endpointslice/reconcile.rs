//! The EndpointSlices a Service should have, and the fewest writes that get there: a pure
//! function of the Service, its pods, the nodes' zones and the slices it has, after
//! Kubernetes' `k8s.io/endpointslice` reconciler (read, not copied).
//!
//! Pods are grouped by their resolved ports (a pod without a named `targetPort` is left out
//! of that port, so it lands in another group) and address type. Per group, existing slices
//! keep the endpoints still desired (updated in place when a condition changed), the rest
//! fill the slices already being updated (fullest first), then the unchanged slice that comes
//! closest to full, then new slices of at most `max_endpoints`. Slices with nothing left go;
//! a create and a delete in one sync become one update of the slice that would go. A Service
//! with no endpoints keeps one empty placeholder slice per address type, as Kubernetes'.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::service_pods::{
    endpoint_target_ref, find_port, hostname, is_headless, is_ready, node_name, pod_ips,
    publishes_not_ready, should_be_in_endpoints,
};

/// The label naming a slice's Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub(crate) const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`], Kubernetes' own.
pub(crate) const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The label a headless Service's slices carry.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' `--max-endpoints-per-slice` default.
pub(crate) const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// What a node tells a pod's endpoint: `None` when the node is unknown.
pub(crate) type NodeZone<'a> = &'a dyn Fn(&str) -> Option<Option<String>>;

/// The writes one sync makes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// New slices (named by `generateName`).
    pub(crate) create: Vec<EndpointSlice>,
    /// Changed slices, with the existing slices' metadata (name, resourceVersion).
    pub(crate) update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub(crate) delete: Vec<EndpointSlice>,
    /// Pods left out because their node is not known (yet); the sync is retried.
    pub(crate) unknown_nodes: Vec<String>,
}

impl Plan {
    /// Whether the sync writes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The identity of an endpoint across syncs (Kubernetes' endpoint hash): its addresses,
/// hostname and the pod it stands for. Everything else may change in place.
type EndpointKey = (Vec<String>, String, String, String);

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    (
        addresses,
        endpoint.hostname.clone().unwrap_or_default(),
        target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        target.and_then(|t| t.name.clone()).unwrap_or_default(),
    )
}

/// Ports as a comparable key (sorted, every field).
type PortKey = Vec<(String, Option<i32>, String, String)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

/// The address types a Service's slices have: its IP families, else its cluster IP's,
/// else (headless, no families) both.
pub(crate) fn address_types(service: &Service) -> BTreeSet<&'static str> {
    let spec = service.spec.as_ref();
    let mut types: BTreeSet<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    if types.is_empty() {
        match spec
            .and_then(|s| s.cluster_ip.as_deref())
            .filter(|_| !is_headless(service))
        {
            Some(ip) if ip.contains(':') => {
                types.insert("IPv6");
            }
            Some(_) => {
                types.insert("IPv4");
            }
            None => types.extend(["IPv4", "IPv6"]),
        }
    }
    types
}

/// The ports of the pod's endpoint: each Service port whose `targetPort` the pod has.
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|port| {
            let number = find_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// `podToEndpoint`: the pod's addresses of `address_type`, conditions (serving = ready,
/// terminating = being deleted, ready = serving and not terminating, or always with
/// `publishNotReadyAddresses`), node, zone, hostname and a reference to the pod.
fn pod_endpoint(
    pod: &Pod,
    zone: Option<String>,
    service: &Service,
    address_type: &str,
) -> Endpoint {
    let serving = is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publishes_not_ready(service) || (serving && !terminating);
    let addresses = pod_ips(pod)
        .filter(|ip| match ip {
            IpAddr::V4(_) => address_type == "IPv4",
            IpAddr::V6(_) => address_type == "IPv6",
        })
        .map(|ip| ip.to_string())
        .collect();
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(pod, service).map(str::to_string),
        node_name: node_name(pod),
        target_ref: Some(endpoint_target_ref(pod)),
        zone: zone.filter(|z| !z.is_empty()),
        ..Endpoint::default()
    }
}

/// The controller reference every slice has to its Service.
fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the slice belongs to this Service (not to an older one of the same name).
fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

fn is_reserved_label(key: &str) -> bool {
    matches!(key, SERVICE_NAME_LABEL | MANAGED_BY_LABEL | HEADLESS_LABEL)
}

/// `setEndpointSliceLabels`: the Service's labels (but the reserved ones), the Service
/// name, the manager and the headless mark; and whether the non-reserved labels differ.
fn slice_labels(slice: &EndpointSlice, service: &Service) -> (BTreeMap<String, String>, bool) {
    let own = |labels: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        labels
            .into_iter()
            .flatten()
            .filter(|(k, _)| !is_reserved_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let current = own(slice.metadata.labels.as_ref());
    let mut labels = own(service.metadata.labels.as_ref());
    let changed = current != labels;
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

/// A new slice of `service` (named by the apiserver from `<service>-`).
fn new_slice(service: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    let mut slice = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(if name.len() < 253 {
                format!("{name}-")
            } else {
                name
            }),
            namespace: service.metadata.namespace.clone(),
            owner_references: Some(vec![owner_reference(service)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(ports),
    };
    slice.metadata.labels = Some(slice_labels(&slice, service).0);
    slice
}

/// The desired endpoints of one address type, grouped by their ports.
type Groups = BTreeMap<PortKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)>;

/// Plans the writes that make `existing` (the slices this controller manages for the
/// Service) the Service's slices for `pods` (those its selector matches).
pub(crate) fn reconcile(
    service: &Service,
    pods: &[Arc<Pod>],
    node_zone: NodeZone<'_>,
    existing: &[Arc<EndpointSlice>],
    max_endpoints: usize,
) -> Plan {
    let mut plan = Plan::default();
    let types = address_types(service);
    for slice in existing {
        if !types.contains(slice.address_type.as_str()) {
            plan.delete.push((**slice).clone());
        }
    }
    for address_type in types {
        let of_type: Vec<&EndpointSlice> = existing
            .iter()
            .map(|s| &**s)
            .filter(|s| s.address_type == address_type)
            .collect();
        let mut groups = Groups::new();
        for pod in pods {
            if !should_be_in_endpoints(pod, true) {
                continue;
            }
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or_default();
            let zone = match node_zone(node) {
                Some(zone) => zone,
                None if publishes_not_ready(service) => None,
                None => {
                    plan.unknown_nodes.push(node.to_string());
                    continue;
                }
            };
            let ports = endpoint_ports(service, pod);
            let endpoint = pod_endpoint(pod, zone, service, address_type);
            if endpoint.addresses.is_empty() {
                continue;
            }
            let group = groups
                .entry(port_key(&ports))
                .or_insert_with(|| (ports, BTreeMap::new()));
            group.1.insert(endpoint_key(&endpoint), endpoint);
        }
        reconcile_address_type(
            service,
            address_type,
            &of_type,
            groups,
            max_endpoints,
            &mut plan,
        );
    }
    finalize(service, &mut plan);
    plan
}

fn reconcile_address_type(
    service: &Service,
    address_type: &str,
    existing: &[&EndpointSlice],
    mut groups: Groups,
    max_endpoints: usize,
    plan: &mut Plan,
) {
    let mut by_ports: BTreeMap<PortKey, Vec<&EndpointSlice>> = BTreeMap::new();
    let deleted_before = plan.delete.len();
    for slice in existing {
        if owned_by(slice, service) {
            let key = port_key(slice.ports.as_deref().unwrap_or_default());
            by_ports.entry(key).or_default().push(slice);
        } else {
            plan.delete.push((*slice).clone());
        }
    }
    let mut created = 0;
    for (key, (ports, desired)) in std::mem::take(&mut groups) {
        let slices = by_ports.remove(&key).unwrap_or_default();
        created += reconcile_ports(
            service,
            address_type,
            ports,
            &slices,
            desired,
            max_endpoints,
            plan,
        );
    }
    // Port sets no longer desired.
    for slices in by_ports.into_values() {
        plan.delete.extend(slices.into_iter().cloned());
    }
    // No endpoints at all: one empty placeholder slice.
    let deleted = plan.delete.len() - deleted_before;
    if existing.len() == deleted && created == 0 {
        let placeholder = new_slice(service, Vec::new(), address_type);
        let keeps = deleted == 1
            && plan.delete.last().is_some_and(|only| {
                only.endpoints.is_empty()
                    && only.ports.as_deref().unwrap_or_default().is_empty()
                    && only.metadata.labels == placeholder.metadata.labels
                    && owned_by(only, service)
            });
        if keeps {
            plan.delete.pop();
        } else {
            plan.create.push(placeholder);
        }
    }
}

/// `reconcileByPortMapping`; returns how many slices it creates.
fn reconcile_ports(
    service: &Service,
    address_type: &str,
    ports: Vec<EndpointPort>,
    existing: &[&EndpointSlice],
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    max_endpoints: usize,
    plan: &mut Plan,
) -> usize {
    let mut updated: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<EndpointSlice> = Vec::new();
    // 1. Keep what is still desired, in place; note changed endpoints and labels.
    for slice in existing {
        let mut kept = Vec::with_capacity(slice.endpoints.len());
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(endpoint)) {
                changed |= &want != endpoint;
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(slice, service);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                plan.delete.push((*slice).clone());
            } else {
                let mut copy = (*slice).clone();
                copy.endpoints = kept;
                copy.metadata.labels = Some(labels);
                updated.push(copy);
            }
        } else if labels_changed {
            let mut copy = (*slice).clone();
            copy.metadata.labels = Some(labels);
            updated.push(copy);
        } else {
            unchanged.push((*slice).clone());
        }
    }
    let mut remaining = desired.into_values();
    let mut next = remaining.next();
    // 2. Fill the slices being updated anyway, fullest first.
    updated.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
    for slice in &mut updated {
        while slice.endpoints.len() < max_endpoints {
            let Some(endpoint) = next.take() else { break };
            slice.endpoints.push(endpoint);
            next = remaining.next();
        }
    }
    // 3. The rest: into the unchanged slice that comes closest to full, else new slices.
    let rest: Vec<Endpoint> = next.into_iter().chain(remaining).collect();
    let mut rest = rest.into_iter().peekable();
    let mut created = 0;
    while rest.peek().is_some() {
        let left = rest.len();
        let fill = (left < max_endpoints)
            .then(|| closest_to_full(&unchanged, left, max_endpoints))
            .flatten();
        let mut slice = match fill {
            Some(i) => unchanged.remove(i),
            None => new_slice(service, ports.clone(), address_type),
        };
        while slice.endpoints.len() < max_endpoints {
            let Some(endpoint) = rest.next() else { break };
            slice.endpoints.push(endpoint);
        }
        if slice.metadata.name.is_some() {
            updated.push(slice);
        } else {
            plan.create.push(slice);
            created += 1;
        }
    }
    plan.update.extend(updated);
    created
}

/// `getSliceToFill`: the slice `count` more endpoints bring closest to `max` (not past it).
fn closest_to_full(slices: &[EndpointSlice], count: usize, max: usize) -> Option<usize> {
    slices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.endpoints.len() + count <= max)
        .min_by_key(|(_, s)| max - (s.endpoints.len() + count))
        .map(|(i, _)| i)
}

/// A create and a delete of the same address type become an update of the slice that
/// would go (fewer writes, and its name stays).
fn finalize(service: &Service, plan: &mut Plan) {
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let reusable = {
            let doomed = &plan.delete[i];
            let newest = plan.create.last().map(|s| s.address_type.as_str());
            Some(doomed.address_type.as_str()) == newest && owned_by(doomed, service)
        };
        if reusable {
            let doomed = plan.delete.remove(i);
            if let Some(mut slice) = plan.create.pop() {
                let mut metadata = doomed.metadata;
                metadata.labels = slice.metadata.labels.take();
                metadata.owner_references = slice.metadata.owner_references.take();
                slice.metadata = metadata;
                plan.update.push(slice);
            }
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
