//! Names outside the cluster zone go to the upstream resolvers, as CoreDNS's
//! `forward . /etc/resolv.conf`: the query is sent on as asked (over the protocol the client
//! used, UDP or TCP) to each upstream in turn until one answers, and its answer is relayed
//! (response code, records, truncation). No upstream answering is SERVFAIL.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::{DnsExchange, DnsHandle, Protocol};
use hickory_server::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Edns, Message, MessageType, OpCode, Query,
};

use crate::DnsError;

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The upstream resolvers of a `resolv.conf` (its `nameserver` lines, port 53).
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read(path).map_err(|source| DnsError::ResolvConf {
        path: path.to_owned(),
        message: source.to_string(),
    })?;
    let config = resolv_conf::Config::parse(&text).map_err(|e| DnsError::ResolvConf {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(config
        .nameservers
        .iter()
        .map(|ns| SocketAddr::new(IpAddr::from(ns.clone()), 53))
        .collect())
}

/// The upstream resolvers and a UDP exchange for each (TCP connects per query).
pub(crate) struct Forwarder {
    upstreams: Vec<(SocketAddr, DnsExchange<TokioRuntimeProvider>)>,
    /// Holds the exchanges' background tasks: they stop when the last clone is dropped.
    provider: TokioRuntimeProvider,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.upstreams.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Forwarder")
            .field("upstreams", &addrs)
            .finish()
    }
}

impl Forwarder {
    /// A forwarder to `upstreams`, in order. Must be made inside the tokio runtime.
    pub(crate) fn new(upstreams: &[SocketAddr]) -> Self {
        let provider = TokioRuntimeProvider::default();
        let upstreams = upstreams
            .iter()
            .map(|addr| {
                let exchange = UdpClientStream::builder(*addr, provider.clone())
                    .with_timeout(Some(UPSTREAM_TIMEOUT))
                    .exchange();
                (*addr, exchange)
            })
            .collect();
        Forwarder {
            upstreams,
            provider,
        }
    }

    /// Whether there is any upstream.
    pub(crate) fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Asks the upstreams `query` over `protocol` (recursion desired as `rd`, EDNS with the
    /// client's payload size when it sent EDNS); the first answer, or `None` when no
    /// upstream answered.
    pub(crate) async fn forward(
        &self,
        query: &Query,
        rd: bool,
        edns_payload: Option<u16>,
        protocol: Protocol,
    ) -> Option<Message> {
        for (addr, udp) in &self.upstreams {
            let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
            message.metadata.recursion_desired = rd;
            message.add_query(query.clone());
            if let Some(payload) = edns_payload {
                let mut edns = Edns::new();
                edns.set_max_payload(payload.max(512));
                message.set_edns(edns);
            }
            let mut options = DnsRequestOptions::default();
            options.recursion_desired = rd;
            let request = DnsRequest::new(message, options);
            let answer = if protocol == Protocol::Tcp {
                match TcpClientStream::exchange(
                    *addr,
                    None,
                    UPSTREAM_TIMEOUT,
                    None,
                    self.provider.clone(),
                )
                .await
                {
                    Ok(tcp) => first_response(tcp.send(request)).await,
                    Err(e) => Err(e.to_string()),
                }
            } else {
                first_response(udp.send(request)).await
            };
            match answer {
                Ok(message) => return Some(message),
                Err(error) => {
                    tracing::debug!(upstream = %addr, %error, "upstream resolver did not answer")
                }
            }
        }
        None
    }
}

/// The first response of a response stream, as a message.
async fn first_response<S>(mut stream: S) -> Result<Message, String>
where
    S: futures::Stream<Item = Result<DnsResponse, NetError>> + Unpin,
{
    match stream.next().await {
        Some(Ok(response)) => Ok(response.into_message()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no response".into()),
    }
}
