//! The userspace proxy, for machines without nftables: the agent itself listens on each
//! Service port's `clusterIP:port` and relays every TCP connection (and UDP flow) to one of
//! the port's ready endpoints, taken round robin.
//!
//! A cluster IP is not an address of any machine, so the proxy adds it as a `/32` on `lo`
//! (`ip addr add 10.43.0.10/32 dev lo`; needs CAP_NET_ADMIN and the `ip` tool) and removes
//! it with the Service. Only clients on this node reach it (the address is local to the
//! node), which is what the userspace mode is for: the node's own processes and its wasm
//! pods, which run in the agent. A NodePort is relayed on each of the node's non-loopback
//! addresses (`nodeIP:nodePort`, to the node's own endpoints under
//! `externalTrafficPolicy: Local`), so other machines reach it too. A connection to a port
//! without endpoints is reset at once (what nftables mode's reject does for TCP), never
//! left hanging. Not done here: session affinity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::ServiceState;
use super::model::{self, Protocol, ServiceKey};
use super::nftables::SyncStats;

/// How long a relayed UDP flow lives without packets.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long a relayed TCP connection waits for its endpoint to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the userspace proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    /// The cluster IP could not be added to `lo`.
    #[error(
        "cannot add {ip}/32 to lo: {reason} (the userspace proxy needs CAP_NET_ADMIN and the \
         `ip` tool; or run with --proxy-mode none)"
    )]
    Address {
        /// The cluster IP.
        ip: Ipv4Addr,
        /// What `ip` said.
        reason: String,
    },
}

type Endpoints = Arc<RwLock<Vec<SocketAddr>>>;

struct Relay {
    listen: (Ipv4Addr, u16, Protocol),
    endpoints: Endpoints,
    task: JoinHandle<()>,
    /// Whether `listen`'s address is a cluster IP the proxy added to `lo`.
    cluster_ip: bool,
}

/// The relays of every Service port.
#[derive(Default)]
pub(crate) struct UserspaceProxier {
    node: String,
    /// The node's addresses NodePorts are relayed on (loopback ones left out).
    node_ips: Vec<Ipv4Addr>,
    relays: BTreeMap<String, Relay>,
    ports: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// Cluster IPs added to `lo`, with how many relays use each.
    addresses: HashMap<Ipv4Addr, usize>,
}

impl std::fmt::Debug for UserspaceProxier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceProxier")
            .field("relays", &self.relays.len())
            .finish_non_exhaustive()
    }
}

async fn ip_addr(verb: &str, ip: Ipv4Addr) -> Result<(), UserspaceError> {
    let output = Command::new("ip")
        .args(["addr", verb, &format!("{ip}/32"), "dev", "lo"])
        .output()
        .await
        .map_err(|e| UserspaceError::Address {
            ip,
            reason: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || (verb == "add" && stderr.contains("File exists")) {
        Ok(())
    } else {
        Err(UserspaceError::Address {
            ip,
            reason: stderr.trim().to_string(),
        })
    }
}

fn pick(endpoints: &Endpoints, next: &AtomicUsize) -> Option<SocketAddr> {
    let list = endpoints.read().unwrap_or_else(PoisonError::into_inner);
    if list.is_empty() {
        return None;
    }
    Some(list[next.fetch_add(1, Ordering::Relaxed) % list.len()])
}

async fn relay_tcp(listener: TcpListener, endpoints: Endpoints) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(target) = pick(&endpoints, &next) else {
            // No endpoint: reset the connection (SO_LINGER 0, then close), so the client
            // fails at once instead of reading an empty answer.
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        };
        tokio::spawn(async move {
            let Ok(Ok(mut upstream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

async fn relay_udp(socket: UdpSocket, endpoints: Endpoints) {
    let socket = Arc::new(socket);
    let next = AtomicUsize::new(0);
    let flows: Arc<tokio::sync::Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows.lock().await.get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(target) = pick(&endpoints, &next) else {
                    continue;
                };
                let Ok(u) =
                    UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).await
                else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().await.insert(client, u.clone());
                let (back, reply, table) = (socket.clone(), u.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, reply.recv(&mut buf)).await
                    {
                        let _ = back.send_to(&buf[..n], client).await;
                    }
                    table.lock().await.remove(&client);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

impl UserspaceProxier {
    /// A proxier for node `node`, whose NodePorts are relayed on `node_ips`.
    pub(crate) fn new(node: &str, node_ips: &[Ipv4Addr]) -> UserspaceProxier {
        let mut ips: Vec<Ipv4Addr> = node_ips
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        UserspaceProxier {
            node: node.to_string(),
            node_ips: ips,
            ..UserspaceProxier::default()
        }
    }

    async fn remove(&mut self, id: &str) {
        if let Some(relay) = self.relays.remove(id) {
            relay.task.abort();
            let ip = relay.listen.0;
            if relay.cluster_ip
                && let Some(count) = self.addresses.get_mut(&ip)
            {
                *count -= 1;
                if *count == 0 {
                    self.addresses.remove(&ip);
                    if let Err(e) = ip_addr("del", ip).await {
                        tracing::warn!(error = %e, "removing a cluster IP");
                    }
                }
            }
        }
    }

    async fn listen(
        &mut self,
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        endpoints: Endpoints,
        cluster_ip: bool,
    ) -> Result<JoinHandle<()>, UserspaceError> {
        if cluster_ip {
            if !self.addresses.contains_key(&ip) {
                ip_addr("add", ip).await?;
            }
            *self.addresses.entry(ip).or_default() += 1;
        }
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let bind_error = |e: std::io::Error| UserspaceError::Address {
            ip,
            reason: format!("binding {addr}: {e}"),
        };
        Ok(match protocol {
            Protocol::Udp => {
                let socket = UdpSocket::bind(addr).await.map_err(bind_error)?;
                tokio::spawn(relay_udp(socket, endpoints))
            }
            _ => {
                let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                tokio::spawn(relay_tcp(listener, endpoints))
            }
        })
    }

    /// Brings the relays of the `changed` Services up to date. A port that cannot be served
    /// is logged and skipped; the others go on.
    pub(crate) async fn sync(
        &mut self,
        changed: &BTreeMap<ServiceKey, Option<ServiceState>>,
    ) -> Result<SyncStats, UserspaceError> {
        let mut commands = 0;
        for (key, state) in changed {
            let mut wanted = BTreeMap::new();
            if let Some(state) = state
                && let Some(service) = &state.service
            {
                let slices: Vec<_> = state.slices.values().map(|s| &**s).collect();
                for port in model::service_ports(service) {
                    if port.protocol == Protocol::Sctp {
                        continue;
                    }
                    let all = model::endpoints(&port, &slices, &self.node);
                    let c = model::categorize(&all);
                    let targets = |chosen: &[model::Endpoint]| -> Vec<SocketAddr> {
                        chosen
                            .iter()
                            .map(|e| SocketAddr::new(IpAddr::V4(e.ip), e.port))
                            .collect()
                    };
                    if let Some(node_port) = port.node_port {
                        let external = if port.external_local {
                            &c.local
                        } else {
                            &c.cluster
                        };
                        for ip in &self.node_ips {
                            wanted.insert(
                                format!("{}/nodeport/{ip}", port.id()),
                                (((*ip, node_port, port.protocol), false), targets(external)),
                            );
                        }
                    }
                    let internal = if port.internal_local {
                        &c.local
                    } else {
                        &c.cluster
                    };
                    wanted.insert(
                        port.id(),
                        (
                            ((port.cluster_ip, port.port, port.protocol), true),
                            targets(internal),
                        ),
                    );
                }
            }
            for id in self.ports.remove(key).unwrap_or_default() {
                let keep = match (self.relays.get(&id), wanted.get(&id)) {
                    (Some(relay), Some(((listen, _), _))) => relay.listen == *listen,
                    _ => false,
                };
                if !keep {
                    self.remove(&id).await;
                    commands += 1;
                }
            }
            for (id, ((listen, cluster_ip), targets)) in &wanted {
                if let Some(relay) = self.relays.get(id) {
                    *relay
                        .endpoints
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = targets.clone();
                    continue;
                }
                let endpoints: Endpoints = Arc::new(RwLock::new(targets.clone()));
                match self
                    .listen(listen.0, listen.1, listen.2, endpoints.clone(), *cluster_ip)
                    .await
                {
                    Ok(task) => {
                        self.relays.insert(
                            id.clone(),
                            Relay {
                                listen: *listen,
                                endpoints,
                                task,
                                cluster_ip: *cluster_ip,
                            },
                        );
                        commands += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, service = %key, "cannot relay a Service port")
                    }
                }
            }
            self.ports.insert(
                key.clone(),
                wanted
                    .into_keys()
                    .filter(|id| self.relays.contains_key(id))
                    .collect(),
            );
        }
        Ok(SyncStats {
            commands,
            ..SyncStats::default()
        })
    }

    /// Stops every relay and removes the cluster IPs it added.
    pub(crate) async fn stop(&mut self) {
        let ids: Vec<String> = self.relays.keys().cloned().collect();
        for id in ids {
            self.remove(&id).await;
        }
    }
}
