//! host-gw routing, as flannel's `host-gw` backend: one route per other Node, its
//! `spec.podCIDR` via its InternalIP, kept in step with a watch of every Node (added, changed,
//! deleted) and repaired by a periodic resync against the kernel's table.
//!
//! The agent owns only the routes carrying [`RTPROT_WASMKUBE`](super::RTPROT_WASMKUBE):
//! at start it takes over those an earlier run left (keeping the ones still wanted, deleting
//! the rest); a route to a pod CIDR that someone else made is reported and left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::NetworkError;
use super::routed::{Netlink, PodRoute};

/// How often the routes are compared with the kernel's table even without Node changes.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed route change is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How often the agent looks for its Node's pod CIDR while it waits for one.
const POD_CIDR_POLL: Duration = Duration::from_millis(500);

/// Parses a pod CIDR such as `10.42.1.0/24` (IPv4 only).
pub(crate) fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (network, prefix) = cidr.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((network.parse().ok()?, prefix))
}

/// The IPv4 pod CIDR of `node`: the first IPv4 one of `spec.podCIDRs`, else `spec.podCIDR`.
fn pod_cidr(node: &Node) -> Option<(Ipv4Addr, u8)> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|c| parse_cidr(c))
}

/// The first IPv4 InternalIP of `node`.
fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The route other nodes need to reach `node`'s pods, if it has a pod CIDR and an address.
fn route_to(node: &Node) -> Option<PodRoute> {
    let (network, prefix) = pod_cidr(node)?;
    Some(PodRoute {
        network,
        prefix,
        gateway: internal_ip(node)?,
    })
}

/// Waits until Node `node_name` has a pod CIDR and returns it; `None` once `stopped`.
pub(crate) async fn wait_for_pod_cidr(
    client: &kube::Client,
    node_name: &str,
    stopped: impl Future<Output = ()>,
) -> Option<(Ipv4Addr, u8)> {
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::pin!(stopped);
    let mut said = false;
    loop {
        match nodes.get_opt(node_name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = pod_cidr(&node) {
                    return Some(cidr);
                }
                if !said {
                    said = true;
                    tracing::info!(
                        node = node_name,
                        "waiting for the Node's spec.podCIDR (node IPAM in the controller-manager, \
                         --cluster-cidr) before starting pods"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading the Node for its pod CIDR"),
        }
        tokio::select! {
            () = &mut stopped => return None,
            () = tokio::time::sleep(POD_CIDR_POLL) => {}
        }
    }
}

/// The routes wanted and the routes made.
struct HostGw {
    netlink: Netlink,
    node_name: String,
    /// Node name -> the route to its pods (other Nodes only).
    wanted: BTreeMap<String, PodRoute>,
    /// The agent's routes in the kernel, by destination.
    made: BTreeMap<(Ipv4Addr, u8), PodRoute>,
    /// Routes already reported as taken by someone else (reported once).
    reported: BTreeSet<PodRoute>,
}

impl HostGw {
    fn observe(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        if name == self.node_name {
            return;
        }
        match route_to(node) {
            Some(route) => {
                self.wanted.insert(name, route);
            }
            None => {
                self.wanted.remove(&name);
            }
        }
    }

    async fn refresh_made(&mut self) -> Result<(), NetworkError> {
        self.made = self
            .netlink
            .pod_routes()
            .await?
            .into_iter()
            .map(|r| ((r.network, r.prefix), r))
            .collect();
        Ok(())
    }

    /// Makes the kernel's routes what is wanted; `false` when something failed.
    async fn reconcile(&mut self) -> bool {
        let mut ok = true;
        let wanted: BTreeMap<(Ipv4Addr, u8), PodRoute> = self
            .wanted
            .values()
            .map(|r| ((r.network, r.prefix), *r))
            .collect();
        let stale: Vec<PodRoute> = self
            .made
            .iter()
            .filter(|(key, _)| !wanted.contains_key(key))
            .map(|(_, r)| *r)
            .collect();
        for route in stale {
            match self.netlink.remove_pod_route(route).await {
                Ok(()) => {
                    tracing::info!(%route, "removed the route to a Node's pods");
                    self.made.remove(&(route.network, route.prefix));
                }
                Err(e) => {
                    tracing::warn!(error = %e, %route, "removing a pod route failed");
                    ok = false;
                }
            }
        }
        for (key, route) in wanted {
            if self.made.get(&key) == Some(&route) {
                continue;
            }
            match self.netlink.add_pod_route(route).await {
                Ok(()) => {
                    tracing::info!(%route, "routed a Node's pod CIDR (host-gw)");
                    self.made.insert(key, route);
                    self.reported.remove(&route);
                }
                Err(e @ NetworkError::RouteTaken { .. }) => {
                    if self.reported.insert(route) {
                        tracing::warn!(error = %e, "not routing a Node's pod CIDR");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, %route, "routing a Node's pod CIDR failed");
                    ok = false;
                }
            }
        }
        ok
    }
}

/// Keeps a route to every other Node's pod CIDR until `stopped`. `client` must be allowed to
/// list and watch Nodes (a node's own credentials are not: see `AgentConfig::kube_proxy_client`).
pub(crate) async fn run(
    netlink: Netlink,
    client: kube::Client,
    node_name: String,
    stopped: impl Future<Output = ()>,
) {
    let mut state = HostGw {
        netlink,
        node_name,
        wanted: BTreeMap::new(),
        made: BTreeMap::new(),
        reported: BTreeSet::new(),
    };
    if let Err(e) = state.refresh_made().await {
        tracing::warn!(error = %e, "listing the routes of an earlier run failed");
    }
    let nodes: Api<Node> = Api::all(client);
    let mut stream =
        std::pin::pin!(watcher::watcher(nodes, watcher::Config::default()).default_backoff());
    tokio::pin!(stopped);
    // Until the first listing is complete nothing is removed: an earlier run's routes stay.
    let mut listing: Option<BTreeMap<String, PodRoute>> = None;
    let mut listed = false;
    let mut next_sync = tokio::time::Instant::now() + RESYNC;
    loop {
        let event = tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep_until(next_sync) => {
                if listed {
                    if let Err(e) = state.refresh_made().await {
                        tracing::warn!(error = %e, "listing the pod routes failed");
                    }
                    let ok = state.reconcile().await;
                    next_sync = tokio::time::Instant::now() + if ok { RESYNC } else { RETRY };
                } else {
                    next_sync = tokio::time::Instant::now() + RESYNC;
                }
                continue;
            }
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "watching Nodes for the pod routes failed (the routed pod network needs a \
                     client allowed to list and watch every Node: give `wasmkube agent` \
                     --kube-proxy-kubeconfig); retrying"
                );
                continue;
            }
            Some(Ok(Event::Init)) => listing = Some(BTreeMap::new()),
            Some(Ok(Event::InitApply(node))) => {
                if let Some(list) = listing.as_mut()
                    && let Some(name) = node.metadata.name.clone()
                    && name != state.node_name
                    && let Some(route) = route_to(&node)
                {
                    list.insert(name, route);
                }
            }
            Some(Ok(Event::InitDone)) => {
                if let Some(list) = listing.take() {
                    state.wanted = list;
                    listed = true;
                }
            }
            Some(Ok(Event::Apply(node))) => state.observe(&node),
            Some(Ok(Event::Delete(node))) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    state.wanted.remove(name);
                }
            }
        }
        if listed && listing.is_none() {
            let ok = state.reconcile().await;
            if !ok {
                next_sync = next_sync.min(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr, "podCIDRs": cidr.map(|c| vec![c])},
            "status": {"addresses": ip.map(|ip| serde_json::json!([
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip},
            ]))},
        }))
        .expect("a node")
    }

    #[test]
    fn a_route_needs_a_pod_cidr_and_an_internal_ip() {
        let route = route_to(&node("a", Some("10.42.3.0/24"), Some("10.77.0.4"))).expect("route");
        assert_eq!(route.to_string(), "10.42.3.0/24 via 10.77.0.4");
        assert_eq!(route_to(&node("b", None, Some("10.77.0.4"))), None);
        assert_eq!(route_to(&node("c", Some("10.42.3.0/24"), None)), None);
        assert_eq!(
            route_to(&node("d", Some("fd00::/64"), Some("10.77.0.4"))),
            None
        );
        assert_eq!(parse_cidr("10.42.0.0/33"), None);
        assert_eq!(parse_cidr("10.42.0.0"), None);
    }
}
