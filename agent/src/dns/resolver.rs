//! A pod's stub resolver, as a libc resolver reads the pod's resolv.conf: the nameservers in
//! order, `attempts` rounds of `timeout` each, the search list and `ndots` (a name with fewer
//! dots than `ndots` tries the search domains first, then itself; a name with a trailing dot
//! only itself). A and then AAAA queries over UDP, again over TCP when the answer is
//! truncated; NXDOMAIN or no address moves on to the next candidate name. It resolves wasm
//! pods' names (`ip-name-lookup`, outgoing `wasi:http`) through the cluster DNS.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::DnsHandle;
use hickory_server::proto::op::{
    DnsRequest, DnsRequestOptions, Message, MessageType, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::{Name, RecordType};
use wasmkube_runtime::{NameResolver, ResolveError, ResolveFuture};

use super::ResolvConf;

/// The resolver of one resolv.conf; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodResolver {
    nameservers: Vec<SocketAddr>,
    searches: Vec<String>,
    ndots: usize,
    timeout: Duration,
    attempts: usize,
}

/// What asking one name gave.
enum Answer {
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN, or no address of either family.
    NotFound,
    /// No server answered usefully (timeouts, SERVFAIL, REFUSED).
    Failed(String),
}

impl PodResolver {
    /// The resolver `conf` describes (glibc's defaults for what it leaves out: ndots 1,
    /// timeout 5 s, 2 attempts; nameserver lines that are not IP addresses are skipped).
    pub fn new(conf: &ResolvConf) -> Self {
        let option = |name: &str| {
            conf.options.iter().rev().find_map(|o| {
                o.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(':'))
                    .and_then(|v| v.parse::<usize>().ok())
            })
        };
        PodResolver {
            nameservers: conf
                .nameservers
                .iter()
                .filter_map(|ns| ns.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
            searches: conf
                .searches
                .iter()
                .filter(|s| !s.is_empty() && *s != ".")
                .cloned()
                .collect(),
            ndots: option("ndots").unwrap_or(1).min(15),
            timeout: Duration::from_secs(option("timeout").unwrap_or(5).clamp(1, 30) as u64),
            attempts: option("attempts").unwrap_or(2).clamp(1, 5),
        }
    }

    /// The names tried for `name`, in order.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_string()];
        }
        let searched = self.searches.iter().map(|s| format!("{name}.{s}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }

    /// The addresses of `name`.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if self.nameservers.is_empty() {
            return Err(ResolveError::Temporary(format!(
                "cannot resolve {name}: no nameserver configured"
            )));
        }
        let candidates = self.candidates(name);
        let mut failure = None;
        for candidate in &candidates {
            let Ok(fqdn) = Name::from_ascii(format!("{candidate}.")) else {
                return Err(ResolveError::InvalidName(format!(
                    "{name} is not a valid domain name"
                )));
            };
            match self.ask(&fqdn).await {
                Answer::Addresses(ips) => return Ok(ips),
                Answer::NotFound => {}
                Answer::Failed(why) => failure = Some(why),
            }
        }
        let servers: Vec<String> = self
            .nameservers
            .iter()
            .map(|s| s.ip().to_string())
            .collect();
        match failure {
            Some(why) => Err(ResolveError::Temporary(format!(
                "cannot resolve {name}: {why} (nameservers {})",
                servers.join(", ")
            ))),
            None => Err(ResolveError::NotFound(format!(
                "{name} not found (tried {} at {})",
                candidates.join(", "),
                servers.join(", ")
            ))),
        }
    }

    /// A, then AAAA when there is no A record.
    async fn ask(&self, name: &Name) -> Answer {
        match self.query(name, RecordType::A).await {
            Answer::NotFound => self.query(name, RecordType::AAAA).await,
            answer => answer,
        }
    }

    /// One question to the nameservers, in order, `attempts` rounds.
    async fn query(&self, name: &Name, record_type: RecordType) -> Answer {
        let mut last = String::from("no answer");
        for _ in 0..self.attempts {
            for server in &self.nameservers {
                match self.exchange(*server, name, record_type).await {
                    Ok(message) => match message.metadata.response_code {
                        ResponseCode::NoError => {
                            let ips: Vec<IpAddr> = message
                                .answers
                                .iter()
                                .filter(|r| r.record_type() == record_type)
                                .filter_map(|r| r.data.ip_addr())
                                .collect();
                            return if ips.is_empty() {
                                Answer::NotFound
                            } else {
                                Answer::Addresses(ips)
                            };
                        }
                        ResponseCode::NXDomain => return Answer::NotFound,
                        code => last = format!("{server} answered {code}"),
                    },
                    Err(e) => last = format!("{server}: {e}"),
                }
            }
        }
        Answer::Failed(last)
    }

    /// Asks `server` over UDP, and over TCP when the answer is truncated.
    async fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Message, String> {
        let provider = TokioRuntimeProvider::default();
        let udp = UdpClientStream::builder(server, provider.clone())
            .with_timeout(Some(self.timeout))
            .exchange();
        let message = first(udp.send(request(name, record_type))).await?;
        if !message.metadata.truncation {
            return Ok(message);
        }
        let tcp = TcpClientStream::exchange(server, None, self.timeout, None, provider)
            .await
            .map_err(|e| e.to_string())?;
        first(tcp.send(request(name, record_type))).await
    }
}

fn request(name: &Name, record_type: RecordType) -> DnsRequest {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), record_type));
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = true;
    DnsRequest::new(message, options)
}

async fn first<S, E>(mut stream: S) -> Result<Message, String>
where
    S: futures::Stream<Item = Result<hickory_server::proto::op::DnsResponse, E>> + Unpin,
    E: std::fmt::Display,
{
    match stream.next().await {
        Some(Ok(response)) => Ok(response.into_message()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no response".into()),
    }
}

impl NameResolver for PodResolver {
    fn resolve(&self, name: &str) -> ResolveFuture {
        let resolver = self.clone();
        let name = name.to_string();
        Box::pin(async move { resolver.lookup(&name).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> ResolvConf {
        ResolvConf::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_search_list_comes_first_below_ndots() {
        let resolver = PodResolver::new(&conf(
            "nameserver 10.43.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        ));
        assert_eq!(
            resolver.candidates("http-hello"),
            [
                "http-hello.default.svc.cluster.local",
                "http-hello.svc.cluster.local",
                "http-hello.cluster.local",
                "http-hello"
            ]
        );
        assert_eq!(
            resolver.candidates("a.b.c.d.e.f"),
            [
                "a.b.c.d.e.f",
                "a.b.c.d.e.f.default.svc.cluster.local",
                "a.b.c.d.e.f.svc.cluster.local",
                "a.b.c.d.e.f.cluster.local"
            ]
        );
        assert_eq!(resolver.candidates("example.com."), ["example.com"]);
        assert_eq!(resolver.nameservers, ["10.43.0.10:53".parse().unwrap()]);
        assert_eq!(resolver.ndots, 5);
    }

    #[test]
    fn defaults_are_glibcs() {
        let resolver = PodResolver::new(&conf("nameserver 192.0.2.1\n"));
        assert_eq!(
            (resolver.ndots, resolver.timeout, resolver.attempts),
            (1, Duration::from_secs(5), 2)
        );
        assert_eq!(resolver.candidates("example.com"), ["example.com"]);
    }

    #[tokio::test]
    async fn no_nameserver_is_a_clear_temporary_failure() {
        let resolver = PodResolver::new(&ResolvConf::default());
        let err = resolver.lookup("x").await.expect_err("no nameserver");
        assert!(
            matches!(&err, ResolveError::Temporary(m) if m.contains("no nameserver")),
            "{err:?}"
        );
    }
}
