//! The runtime's part of `wasi:sockets` for guests with a [`GuestNetwork`]: wasmtime-wasi
//! does the sockets; these definitions, added over its own in the component linker, put the
//! guest at its pod IP, check accepted connections against the policy with their local port,
//! and resolve names through the guest's [`NameResolver`](crate::NameResolver).
//!
//! - `tcp-socket.start-bind`, `udp-socket.start-bind`: a wildcard address becomes the pod IP
//!   ([`GuestNetwork::bind_address`]).
//! - `tcp-socket.start-connect`, `tcp-socket.start-listen`: an unbound socket is first bound
//!   to the pod IP (port 0), so it connects or listens from there.
//! - `tcp-socket.accept`: a connection the policy refuses is closed and the guest sees
//!   `would-block`, as if nothing had arrived.
//! - `ip-name-lookup`: the whole interface (its stream resource is wasmtime-wasi's private
//!   type), resolving through the guest's resolver instead of the host's `getaddrinfo`.
//!
//! Each function delegates to wasmtime-wasi's own host implementation (the traits of
//! `wasmtime_wasi::p2::bindings`), so the sockets' state machine and errors stay wasmtime's.
//! Guests without a network get wasmtime-wasi's behaviour unchanged (their context denies
//! every socket).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::instance_network::Host as InstanceNetworkHost;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, IpSocketAddress};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, Network, SocketResult, TcpSocket, UdpSocket,
};
use wasmtime_wasi::sockets::WasiSocketsView;

use crate::host::ComponentHost;
use crate::network::{GuestNetwork, Protocol, ResolveError};

/// The `wasi:sockets` version wasmtime-wasi 48 defines (guests' 0.2.x imports match it).
const SOCKETS_VERSION: &str = "0.2.12";

/// A component-level result, with wasmtime-wasi's trappable errors split into a trap or the
/// guest's `error-code`.
type Lowered<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

fn lower<T>(result: SocketResult<T>) -> Lowered<T> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(error.downcast()?),)),
    }
}

fn borrow<T: 'static>(resource: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(resource.rep())
}

/// Adds the definitions over wasmtime-wasi's (which must be in `linker` already).
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentHost>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = add_shadows(linker);
    linker.allow_shadowing(false);
    result
}

fn add_shadows(linker: &mut Linker<ComponentHost>) -> wasmtime::Result<()> {
    let mut tcp = linker.instance(&format!("wasi:sockets/tcp@{SOCKETS_VERSION}"))?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store,
         (this, network, local): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let host = store.data_mut();
                let local = match &host.network {
                    Some(net) => net.bind_address(local.into()).into(),
                    None => local,
                };
                let mut view = host.sockets();
                lower(HostTcpSocket::start_bind(&mut view, this, network, local).await)
            })
        },
    )?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-connect",
        |mut store,
         (this, network, remote): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let host = store.data_mut();
                let source = host
                    .network
                    .as_ref()
                    .and_then(|net| net.source_for(SocketAddr::from(remote).ip()));
                let mut view = host.sockets();
                if let Some(source) = source {
                    let bound = HostTcpSocket::local_address(&mut view, borrow(&this)).is_ok();
                    if !bound
                        && let Err(e) = bind_tcp(&mut view, &this, &network, source).await
                    {
                        return lower(Err(e));
                    }
                }
                lower(HostTcpSocket::start_connect(
                    &mut view, this, network, remote,
                ))
            })
        },
    )?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-listen",
        |mut store, (this,): (Resource<TcpSocket>,)| {
            Box::new(async move {
                let host = store.data_mut();
                let pod_ip = host.network.as_ref().map(|net| net.pod_ip);
                let mut view = host.sockets();
                if let Some(pod_ip) = pod_ip {
                    let bound = HostTcpSocket::local_address(&mut view, borrow(&this)).is_ok();
                    if !bound {
                        // The network capability the guest's own bind would pass: wasmtime-wasi
                        // only checks that it exists, so take a fresh one.
                        let network = InstanceNetworkHost::instance_network(&mut view)?;
                        let result = bind_tcp(&mut view, &this, &network, pod_ip).await;
                        view.table.delete(network)?;
                        if let Err(e) = result {
                            return lower(Err(e));
                        }
                    }
                }
                lower(HostTcpSocket::start_listen(&mut view, this).await)
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.accept",
        |mut store, (this,): (Resource<TcpSocket>,)| {
            let host = store.data_mut();
            let network = host.network.clone();
            let mut view = host.sockets();
            let accepted = HostTcpSocket::accept(&mut view, this);
            let (socket, input, output) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => return lower(Err(e)),
            };
            if let Some(network) = network {
                let local = HostTcpSocket::local_address(&mut view, borrow(&socket));
                let peer = HostTcpSocket::remote_address(&mut view, borrow(&socket));
                let allowed = match (local, peer) {
                    (Ok(local), Ok(peer)) => {
                        let local = SocketAddr::from(local);
                        let peer = SocketAddr::from(peer);
                        let ok = network
                            .policy
                            .allow_ingress(peer, local.port(), Protocol::Tcp);
                        if !ok {
                            tracing::debug!(%peer, %local, "guest connection refused by policy");
                        }
                        ok
                    }
                    // Reset before it could be asked about: nothing to hand over.
                    _ => false,
                };
                if !allowed {
                    let _: DynInputStream = view.table.delete(input)?;
                    let _: DynOutputStream = view.table.delete(output)?;
                    HostTcpSocket::drop(&mut view, socket)?;
                    return Ok((Err(ErrorCode::WouldBlock),));
                }
            }
            Ok((Ok((socket, input, output)),))
        },
    )?;

    let mut udp = linker.instance(&format!("wasi:sockets/udp@{SOCKETS_VERSION}"))?;
    udp.func_wrap_async(
        "[method]udp-socket.start-bind",
        |mut store,
         (this, network, local): (Resource<UdpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let host = store.data_mut();
                let local = match &host.network {
                    Some(net) => net.bind_address(local.into()).into(),
                    None => local,
                };
                let mut view = host.sockets();
                lower(HostUdpSocket::start_bind(&mut view, this, network, local).await)
            })
        },
    )?;

    let mut lookup = linker.instance(&format!("wasi:sockets/ip-name-lookup@{SOCKETS_VERSION}"))?;
    lookup.resource(
        "resolve-address-stream",
        ResourceType::host::<Lookup>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<Lookup>::new_own(rep))?;
            Ok(())
        },
    )?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            let host = store.data_mut();
            let _: &Network = host.table.get(&network)?;
            let Some(net) = host.network.clone() else {
                return Ok((Err(ErrorCode::PermanentResolverFailure),));
            };
            let lookup = match literal_or_checked(&name) {
                Err(()) => return Ok((Err(ErrorCode::InvalidArgument),)),
                Ok(Some(ip)) => Lookup::done(Ok(vec![ip])),
                Ok(None) => {
                    let resolving = net.resolver.resolve(&name);
                    Lookup::pending(tokio::spawn(resolving))
                }
            };
            Ok((Ok(host.table.push(lookup)?),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (this,): (Resource<Lookup>,)| {
            let lookup = store.data_mut().table.get_mut(&this)?;
            Ok((lookup.next(),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (this,): (Resource<Lookup>,)| {
            let pollable = wasmtime_wasi::p2::subscribe(&mut store.data_mut().table, this)?;
            Ok((pollable,))
        },
    )?;
    Ok(())
}

/// Binds an unbound TCP socket to `ip` (an ephemeral port).
async fn bind_tcp(
    view: &mut wasmtime_wasi::sockets::WasiSocketsCtxView<'_>,
    this: &Resource<TcpSocket>,
    network: &Resource<Network>,
    ip: IpAddr,
) -> SocketResult<()> {
    let local = IpSocketAddress::from(SocketAddr::new(ip, 0));
    HostTcpSocket::start_bind(view, borrow(this), borrow(network), local).await?;
    HostTcpSocket::finish_bind(view, borrow(this))
}

/// An IP literal as itself, `None` for a name that may be resolved, `Err` for text that is
/// no domain name (empty, too long, a label over 63 characters or of other characters than
/// letters, digits, `-` and `_`).
fn literal_or_checked(name: &str) -> Result<Option<IpAddr>, ()> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Some(ip));
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let valid = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid { Ok(None) } else { Err(()) }
}

/// A `resolve-address-stream`: the resolution running, then its addresses one by one.
pub(crate) struct Lookup {
    pending: Option<tokio::task::JoinHandle<Result<Vec<IpAddr>, ResolveError>>>,
    result: Option<Result<std::vec::IntoIter<IpAddr>, ErrorCode>>,
}

impl Lookup {
    fn pending(task: tokio::task::JoinHandle<Result<Vec<IpAddr>, ResolveError>>) -> Self {
        Lookup {
            pending: Some(task),
            result: None,
        }
    }

    fn done(result: Result<Vec<IpAddr>, ResolveError>) -> Self {
        let mut lookup = Lookup {
            pending: None,
            result: None,
        };
        lookup.finish(result);
        lookup
    }

    fn finish(&mut self, result: Result<Vec<IpAddr>, ResolveError>) {
        self.result = Some(match result {
            Ok(ips) => Ok(ips.into_iter()),
            Err(ResolveError::NotFound(message)) => {
                tracing::debug!(%message, "guest name lookup: not found");
                Err(ErrorCode::NameUnresolvable)
            }
            Err(ResolveError::Temporary(message)) => {
                tracing::debug!(%message, "guest name lookup failed");
                Err(ErrorCode::TemporaryResolverFailure)
            }
            Err(ResolveError::InvalidName(_)) => Err(ErrorCode::InvalidArgument),
        });
    }

    /// The next address, `None` at the end, `would-block` while resolving.
    fn next(&mut self) -> Result<Option<IpAddress>, ErrorCode> {
        if let Some(task) = &mut self.pending {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::Pin::new(task).poll(&mut cx) {
                std::task::Poll::Pending => return Err(ErrorCode::WouldBlock),
                std::task::Poll::Ready(joined) => {
                    self.pending = None;
                    self.finish(joined.unwrap_or_else(|e| {
                        Err(ResolveError::Temporary(format!("the resolver failed: {e}")))
                    }));
                }
            }
        }
        match &mut self.result {
            Some(Ok(ips)) => Ok(ips.next().map(IpAddress::from)),
            Some(Err(code)) => Err(*code),
            None => Err(ErrorCode::WouldBlock),
        }
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        if let Some(task) = &self.pending {
            task.abort();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Lookup {
    async fn ready(&mut self) {
        if let Some(task) = &mut self.pending {
            let joined = task.await;
            self.pending = None;
            self.finish(joined.unwrap_or_else(|e| {
                Err(ResolveError::Temporary(format!("the resolver failed: {e}")))
            }));
        }
    }
}

impl GuestNetwork {
    /// Where a guest's bind of `addr` goes: a wildcard address becomes the pod IP (same
    /// family), except a port-0 wildcard bind when the pod IP is loopback (such a socket
    /// must reach non-loopback addresses).
    pub(crate) fn bind_address(&self, addr: SocketAddr) -> SocketAddr {
        let rewrite = addr.ip().is_unspecified()
            && addr.is_ipv4() == self.pod_ip.is_ipv4()
            && (addr.port() != 0 || !self.pod_ip.is_loopback());
        if rewrite {
            SocketAddr::new(self.pod_ip, addr.port())
        } else {
            addr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_literals_answered() {
        assert_eq!(
            literal_or_checked("10.43.0.1"),
            Ok(Some("10.43.0.1".parse().unwrap()))
        );
        assert_eq!(
            literal_or_checked("[::1]"),
            Ok(Some("::1".parse().unwrap()))
        );
        assert_eq!(literal_or_checked("http-hello"), Ok(None));
        assert_eq!(
            literal_or_checked("http-hello.default.svc.cluster.local."),
            Ok(None)
        );
        assert_eq!(literal_or_checked(""), Err(()));
        assert_eq!(literal_or_checked("a..b"), Err(()));
        assert_eq!(literal_or_checked("bad name"), Err(()));
        assert_eq!(literal_or_checked(&"a".repeat(64)), Err(()));
    }

    #[test]
    fn wildcard_binds_go_to_the_pod_ip() {
        let routed = GuestNetwork::new("10.42.1.5".parse().unwrap());
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(routed.bind_address(any), "10.42.1.5:8080".parse().unwrap());
        let any0: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(routed.bind_address(any0), "10.42.1.5:0".parse().unwrap());
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        assert_eq!(routed.bind_address(v6), v6);
        let loopback = GuestNetwork::new("127.1.0.5".parse().unwrap());
        assert_eq!(
            loopback.bind_address(any),
            "127.1.0.5:8080".parse().unwrap()
        );
        assert_eq!(loopback.bind_address(any0), any0);
        assert!(routed.may_bind("10.42.1.5:80".parse().unwrap()));
        assert!(!routed.may_bind("10.42.1.6:80".parse().unwrap()));
        assert_eq!(loopback.source_for("10.43.0.1".parse().unwrap()), None);
        assert_eq!(
            routed.source_for("10.43.0.1".parse().unwrap()),
            Some("10.42.1.5".parse().unwrap())
        );
    }
}
