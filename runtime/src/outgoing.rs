//! Outgoing `wasi:http` requests of guests (`wasi:http/outgoing-handler`), sent by the host.
//!
//! wasmtime-wasi-http's own client trusts only the public web PKI for HTTPS. A guest of a
//! cluster also needs to reach services whose certificates its cluster's CA issued — the
//! apiserver first of all, with the service-account token projected into the pod — so the
//! runtime sends requests itself: the web PKI roots plus [`RuntimeConfig::extra_tls_roots`]
//! (the agent passes the cluster CA, the `ca.crt` every pod also finds beside its token).
//! HTTP/1.1 over TCP, plain or TLS, with the request's connect and first-byte timeouts
//! (default 600 s as wasmtime's); the between-bytes timeout is not applied.
//!
//! [`RuntimeConfig::extra_tls_roots`]: crate::RuntimeConfig::extra_tls_roots

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::network::{GuestNetwork, Protocol, ResolveError};

/// The timeouts a request that sets none gets (wasmtime's defaults).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The HTTPS client configuration guests' requests use: web PKI roots plus `extra`.
pub(crate) fn tls_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("an extra TLS root is not a usable CA certificate: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS protocol versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates guests' outgoing HTTPS requests trust besides the web PKI (a
/// [`RuntimeConfig`](crate::RuntimeConfig) setting); cheap to clone.
#[derive(Clone, Default)]
pub struct TlsRoots {
    extra: Arc<Vec<CertificateDer<'static>>>,
    config: Arc<std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots")
            .field("extra", &self.extra.len())
            .finish()
    }
}

impl TlsRoots {
    /// The web PKI plus every certificate of `pem` (e.g. the cluster CA); an error when a
    /// certificate cannot be parsed or is not a usable CA.
    pub fn with_pem(pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let extra = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the extra TLS roots are not PEM certificates: {e}"))?;
        let roots = TlsRoots {
            extra: Arc::new(extra),
            config: Arc::default(),
        };
        roots.client_config()?;
        Ok(roots)
    }

    /// The client configuration, built once.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.config.get_or_init(|| tls_config(&self.extra)).clone()
    }
}

/// The `wasi:http` hooks of a guest's store: requests go out through [`send`].
pub(crate) struct OutgoingHttp {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The guest's network: names through its resolver, connections from its pod IP and
    /// asked of its policy. `None`: the host's resolver and source address.
    pub(crate) network: Option<GuestNetwork>,
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        // Request-body errors reach the guest through its own handle; nothing to add here.
        drop(fut);
        let tls = Arc::clone(&self.tls);
        Box::new(send(tls, self.network.clone(), request, options))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Connects (TLS for `https`), sends `request` over HTTP/1.1 and returns the response and
/// a future of the connection's end.
async fn send(
    tls: Arc<rustls::ClientConfig>,
    network: Option<GuestNetwork>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let uri = request.uri().clone();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);

    let tcp = match &network {
        None => tokio::time::timeout(connect_timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Connect)?,
        Some(network) => tokio::time::timeout(connect_timeout, connect_guest(network, &host, port))
            .await
            .map_err(|_| Error::ConnectionTimeout)??,
    };
    let stream: Box<dyn Io> = if https {
        let name = ServerName::try_from(host).map_err(Error::InvalidDnsNameError)?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    let connection = tokio::spawn(connection);
    // Over a connection (not a proxy) the request line carries only the path and query.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io: IoFuture = Box::new(async move {
        match connection.await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Ok(()),
        }
    });
    Ok((response, io))
}

/// Connects as the guest: `host` resolved through its resolver (an IP literal as itself),
/// each address asked of its policy, the connection made from its pod IP; the addresses are
/// tried in order until one connects.
async fn connect_guest(network: &GuestNetwork, host: &str, port: u16) -> Result<TcpStream, Error> {
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => network.resolver.resolve(host).await.map_err(|e| {
            tracing::debug!(host, error = %e, "outgoing request: name not resolved");
            match e {
                ResolveError::NotFound(_) => Error::DnsError {
                    rcode: Some("NXDOMAIN".into()),
                    info_code: None,
                },
                ResolveError::Temporary(_) => Error::DnsTimeout,
                ResolveError::InvalidName(_) => Error::HttpRequestUriInvalid,
            }
        })?,
    };
    let mut last = Error::DestinationNotFound;
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        if !network.policy.allow_egress(addr, Protocol::Tcp) {
            tracing::debug!(%addr, "outgoing request refused by policy");
            last = Error::DestinationIpProhibited;
            continue;
        }
        match connect_from(network.source_for(ip), addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Err(e) => last = Error::Connect(e),
        }
    }
    Err(last)
}

/// A TCP connection to `to`, bound to `source` first when there is one.
async fn connect_from(source: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(to).await;
    };
    let socket = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_root_must_be_a_certificate() {
        assert!(tls_config(&[]).is_ok());
        let err = tls_config(&[CertificateDer::from(vec![1, 2, 3])]).expect_err("refused");
        assert!(err.contains("not a usable CA certificate"), "{err}");
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use crate::network::{AllowAll, ConnectPolicy, NameResolver, ResolveFuture};

    struct DenyAll;

    impl ConnectPolicy for DenyAll {
        fn allow_egress(&self, _to: SocketAddr, _protocol: Protocol) -> bool {
            false
        }

        fn allow_ingress(&self, _from: SocketAddr, _local_port: u16, _protocol: Protocol) -> bool {
            false
        }
    }

    /// `svc` is 127.0.0.1; every other name does not exist.
    struct OneName;

    impl NameResolver for OneName {
        fn resolve(&self, name: &str) -> ResolveFuture {
            let answer = if name == "svc" {
                Ok(vec![IpAddr::from([127, 0, 0, 1])])
            } else {
                Err(ResolveError::NotFound(format!("{name}: NXDOMAIN")))
            };
            Box::pin(std::future::ready(answer))
        }
    }

    #[tokio::test]
    async fn guest_connections_resolve_through_the_resolver_and_ask_the_policy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let allowed = GuestNetwork::new(IpAddr::from([127, 0, 0, 1]))
            .with_resolver(Arc::new(OneName))
            .with_policy(Arc::new(AllowAll));
        let stream = connect_guest(&allowed, "svc", port)
            .await
            .expect("connects");
        let (accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 1]), "from the pod IP");
        drop((stream, accepted));

        let missing = connect_guest(&allowed, "nope", port)
            .await
            .expect_err("no such name");
        assert!(
            matches!(&missing, Error::DnsError { rcode: Some(r), .. } if r == "NXDOMAIN"),
            "{missing:?}"
        );
        let denied = allowed.clone().with_policy(Arc::new(DenyAll));
        let refused = connect_guest(&denied, "svc", port)
            .await
            .expect_err("denied");
        assert!(
            matches!(refused, Error::DestinationIpProhibited),
            "{refused:?}"
        );
        let literal = connect_guest(&denied, "127.0.0.1", port)
            .await
            .expect_err("denied");
        assert!(
            matches!(literal, Error::DestinationIpProhibited),
            "{literal:?}"
        );
    }
}
