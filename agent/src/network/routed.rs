//! The kernel side of the routed pod network, over rtnetlink: the `wasmkube0` device that holds
//! the pod IPs (`/32` each) and the host-gw routes to other nodes' pod CIDRs.
//!
//! # Why a bridge without ports
//! A pod IP must be a local address of the machine before the agent binds the pod's listeners
//! on it, and other machines' packets for it must be delivered locally. Any device carrying
//! the address does that (local delivery goes through the `local` table whatever the device).
//! A dummy device is the usual choice but needs the `dummy` module, which some kernels lack; a
//! Linux bridge is always there, and one with no ports carries no traffic of its own. Keeping
//! the pod IPs off `lo` gives them a device of their own: everything on `wasmkube0` is the
//! agent's, so after a restart it can remove what no pod owns without touching anything else,
//! and `ip addr show wasmkube0` lists the pod IPs of the node.
//!
//! # Routes it owns
//! Every route the agent adds carries the routing protocol [`RTPROT_WASMKUBE`] (`ip route`
//! shows `proto 87`) in the main table; it lists, replaces and deletes only routes carrying it,
//! so routes someone else made to the same prefix are left alone (and reported).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{LinkBridge, RouteMessageBuilder};

use super::NetworkError;

/// The device that holds the pod IPs.
pub const POD_DEVICE: &str = "wasmkube0";
/// The routing protocol number marking the agent's routes (`proto 87` in `ip route`).
pub const RTPROT_WASMKUBE: u8 = 87;

/// Linux errno values netlink answers with.
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;
const ENETUNREACH: i32 = 101;

/// A route to another node's pod CIDR via that node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRoute {
    /// The pod CIDR's network address.
    pub network: Ipv4Addr,
    /// The pod CIDR's prefix length.
    pub prefix: u8,
    /// The node's InternalIP.
    pub gateway: Ipv4Addr,
}

impl std::fmt::Display for PodRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} via {}", self.network, self.prefix, self.gateway)
    }
}

/// A netlink connection and the pod device's index.
#[derive(Debug, Clone)]
pub(crate) struct Netlink {
    handle: rtnetlink::Handle,
    device: u32,
}

/// The errno of a netlink error, if it is one.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// A [`NetworkError::Netlink`] for `what`, with a hint when the kernel refused permission.
fn failure(what: String, error: &rtnetlink::Error) -> NetworkError {
    if errno(error) == Some(EPERM) {
        return NetworkError::Permission { what };
    }
    NetworkError::Netlink {
        what,
        reason: error.to_string(),
    }
}

impl Netlink {
    /// Connects to the kernel and makes sure [`POD_DEVICE`] exists and is up (creating it).
    /// Fails with [`NetworkError::Permission`] without CAP_NET_ADMIN.
    pub(crate) async fn open() -> Result<Netlink, NetworkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetworkError::Netlink {
                what: "opening a netlink socket".into(),
                reason: source.to_string(),
            })?;
        tokio::spawn(connection);
        let device = match Self::device_index(&handle).await? {
            Some(index) => index,
            None => {
                match handle
                    .link()
                    .add(LinkBridge::new(POD_DEVICE).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    // Made meanwhile by another agent of this machine.
                    Err(e) if errno(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(failure(format!("creating {POD_DEVICE}"), &e)),
                }
                Self::device_index(&handle)
                    .await?
                    .ok_or_else(|| NetworkError::Netlink {
                        what: format!("finding {POD_DEVICE}"),
                        reason: "it is gone right after it was made".into(),
                    })?
            }
        };
        let netlink = Netlink { handle, device };
        // Up, also when it existed down (a bridge made by hand, an earlier run's).
        let up = rtnetlink::LinkUnspec::new_with_index(device).up().build();
        netlink
            .handle
            .link()
            .set(up)
            .execute()
            .await
            .map_err(|e| failure(format!("setting {POD_DEVICE} up"), &e))?;
        Ok(netlink)
    }

    async fn device_index(handle: &rtnetlink::Handle) -> Result<Option<u32>, NetworkError> {
        let mut links = handle.link().get().match_name(POD_DEVICE).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(19) => Ok(None), // ENODEV
            Err(e) => Err(failure(format!("looking up {POD_DEVICE}"), &e)),
        }
    }

    /// Adds `ip/32` to [`POD_DEVICE`]; an address already there is fine.
    pub(crate) async fn add_pod_address(&self, ip: Ipv4Addr) -> Result<(), NetworkError> {
        match self
            .handle
            .address()
            .add(self.device, IpAddr::V4(ip), 32)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(failure(format!("adding {ip}/32 to {POD_DEVICE}"), &e)),
        }
    }

    /// Removes `ip/32` from [`POD_DEVICE`]; an address that is not there is fine.
    pub(crate) async fn remove_pod_address(&self, ip: Ipv4Addr) -> Result<(), NetworkError> {
        let found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.device)
            .set_address_filter(IpAddr::V4(ip))
            .execute()
            .try_next()
            .await
            .map_err(|e| failure(format!("listing the addresses of {POD_DEVICE}"), &e))?;
        let Some(message) = found else {
            return Ok(());
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(EADDRNOTAVAIL | ENOENT)) => Ok(()),
            Err(e) => Err(failure(format!("removing {ip}/32 from {POD_DEVICE}"), &e)),
        }
    }

    /// The IPv4 addresses on [`POD_DEVICE`].
    pub(crate) async fn pod_addresses(&self) -> Result<Vec<Ipv4Addr>, NetworkError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.device)
            .execute()
            .try_collect()
            .await
            .map_err(|e| failure(format!("listing the addresses of {POD_DEVICE}"), &e))?;
        Ok(messages
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
            .collect())
    }

    /// The routes of the main table carrying [`RTPROT_WASMKUBE`] (the agent's own).
    pub(crate) async fn pod_routes(&self) -> Result<Vec<PodRoute>, NetworkError> {
        Ok(self
            .main_routes()
            .await?
            .iter()
            .filter(|m| m.header.protocol == RouteProtocol::Other(RTPROT_WASMKUBE))
            .filter_map(pod_route)
            .collect())
    }

    async fn main_routes(&self) -> Result<Vec<RouteMessage>, NetworkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| failure("listing the IPv4 routes".into(), &e))?;
        Ok(routes
            .into_iter()
            .filter(|m| {
                m.header.address_family == AddressFamily::Inet
                    && m.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .collect())
    }

    /// Adds `route`, or moves the agent's own route to its prefix to the new gateway. A route
    /// to the prefix that the agent did not make is left alone: [`NetworkError::RouteTaken`].
    pub(crate) async fn add_pod_route(&self, route: PodRoute) -> Result<(), NetworkError> {
        let message = route_message(route);
        match self.handle.route().add(message.clone()).execute().await {
            Ok(()) => return Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) if errno(&e) == Some(ENETUNREACH) => {
                return Err(NetworkError::Gateway { route });
            }
            Err(e) => return Err(failure(format!("adding the route {route}"), &e)),
        }
        let existing = self.main_routes().await?.into_iter().find(|m| {
            m.header.destination_prefix_length == route.prefix
                && destination(m) == Some(route.network)
        });
        match existing {
            Some(m) if m.header.protocol == RouteProtocol::Other(RTPROT_WASMKUBE) => self
                .handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|e| failure(format!("replacing the route {route}"), &e)),
            _ => Err(NetworkError::RouteTaken { route }),
        }
    }

    /// Deletes the agent's route `route`; one that is not there is fine.
    pub(crate) async fn remove_pod_route(&self, route: PodRoute) -> Result<(), NetworkError> {
        match self
            .handle
            .route()
            .del(route_message(route))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ESRCH | ENOENT)) => Ok(()),
            Err(e) => Err(failure(format!("removing the route {route}"), &e)),
        }
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodNetworkCleanup {
    /// Whether [`POD_DEVICE`] was there (and is gone, with the pod IPs on it).
    pub device: bool,
    /// The agent's routes (protocol [`RTPROT_WASMKUBE`]) that were deleted.
    pub routes: Vec<PodRoute>,
}

/// Removes what the routed pod network made on this machine: the agent's routes and the pod
/// device with its addresses. Run it with the agent stopped (a running one puts them back).
pub async fn cleanup() -> Result<PodNetworkCleanup, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| NetworkError::Netlink {
            what: "opening a netlink socket".into(),
            reason: source.to_string(),
        })?;
    tokio::spawn(connection);
    let mut removed = PodNetworkCleanup::default();
    let device = Netlink::device_index(&handle).await?;
    // A connection without a device still lists and deletes routes.
    let netlink = Netlink {
        handle: handle.clone(),
        device: device.unwrap_or(0),
    };
    for route in netlink.pod_routes().await? {
        netlink.remove_pod_route(route).await?;
        removed.routes.push(route);
    }
    if let Some(index) = device {
        match handle.link().del(index).execute().await {
            Ok(()) => removed.device = true,
            Err(e) if errno(&e) == Some(19) => {} // ENODEV: gone meanwhile
            Err(e) => return Err(failure(format!("deleting {POD_DEVICE}"), &e)),
        }
    }
    Ok(removed)
}

/// The netlink message of the agent's route `route`.
fn route_message(route: PodRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.network, route.prefix)
        .gateway(route.gateway)
        .protocol(RouteProtocol::Other(RTPROT_WASMKUBE))
        .build()
}

fn destination(message: &RouteMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// The [`PodRoute`] of a route message with a destination and an IPv4 gateway.
fn pod_route(message: &RouteMessage) -> Option<PodRoute> {
    let gateway = message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    Some(PodRoute {
        network: destination(message)?,
        prefix: message.header.destination_prefix_length,
        gateway,
    })
}
