//! The apiserver's client for node agents: `pods/log` is proxied to the agent of the
//! pod's node, as kube-apiserver proxies it to the kubelet, and `pods/portforward`'s
//! upgraded connection is relayed to it ([`crate::portforward`]).
//!
//! The agent is found through the Node object: one of its `status.addresses` (InternalIP
//! first) and `status.daemonEndpoints.kubeletEndpoint.Port`. Who may write a Node decides
//! where the apiserver connects, so before any request is sent the agent must prove it is
//! that node, as kube-apiserver with `--kubelet-certificate-authority` does and more:
//!
//! * its serving certificate chains to the cluster CA and is valid for serving,
//! * it covers the address dialled (an IP or DNS subject alternative name),
//! * and it is issued to the node: subject `system:node:<nodeName>` in `system:nodes`,
//!   which the cluster signs (signer `kubernetes.io/kubelet-serving`) only when that node
//!   asks for its own names and addresses.
//!
//! A Node pointing elsewhere (at the apiserver itself, at another node's agent, at any
//! other service) is refused with 503 before a byte of HTTP is sent.
//!
//! The apiserver authenticates to the agent with a client certificate issued by the cluster
//! CA, CN `kube-apiserver-kubelet-client` without groups: RBAC binds it to
//! `system:kubelet-api-admin` (which may use the nodes' proxy subresources and nothing
//! else), so it is no administrator of the cluster if it leaks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::error::ApiError;

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The user the apiserver is towards node agents (its client certificate's CN).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The group of nodes' serving certificates.
const NODES_GROUP: &str = "system:nodes";

/// A client for node agents' HTTPS endpoints.
#[derive(Clone)]
pub struct NodeClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient").finish_non_exhaustive()
    }
}

/// Accepts any server certificate, still checking the handshake's signatures: only for
/// [`unverified_tls`].
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration that accepts any server certificate and presents none:
/// only for fetching the cluster CA, which the caller then checks against a known hash.
pub fn unverified_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // ring supports the safe default versions; this cannot fail with it.
        Err(_) => unreachable!("ring supports the default TLS versions"),
    }
}

impl NodeClient {
    /// GETs a path over TLS without a client certificate and without verifying the
    /// server (see [`unverified_tls`]); returns the status and the whole body.
    pub async fn get_unverified(
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(unverified_tls())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::get(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// A client presenting `cert_pem`/`key_pem` (issued by the cluster CA) that trusts
    /// agents' serving certificates signed by `ca_pem`.
    pub fn new(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad client certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("bad client key: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| format!("bad cluster CA: {e}"))?;
            roots.add(ca).map_err(|e| format!("bad cluster CA: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("bad cluster CA: {e}"))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("bad client certificate or key: {e}"))?;
        Ok(NodeClient { tls: Arc::new(tls) })
    }

    /// A TLS connection to the agent of node `node` at `host:port` (one of the Node's
    /// addresses and its agent port), once the agent proved it is that node (see the module
    /// docs).
    async fn connect(
        &self,
        node: &str,
        host: &str,
        port: u16,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ApiError> {
        let unreachable = |what: String| {
            ApiError::unavailable(format!(
                "the node agent of node \"{node}\" at {host}:{port} is unreachable: {what}"
            ))
        };
        let refused = |what: String| {
            ApiError::unavailable(format!(
                "refusing to proxy to node \"{node}\" at {host}:{port}: {what}"
            ))
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| refused(format!("{host:?} is neither an IP address nor a DNS name")))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match certificate_error(&e) {
                Some(why) => refused(format!(
                    "its serving certificate is not one the cluster issued to node \"{node}\" for {host}: {why}"
                )),
                None if refused_handshake(&e) => unreachable(format!(
                    "TLS: {e} (an agent refuses handshakes until the cluster issued its serving certificate: see `kubectl get csr` for a pending kubernetes.io/kubelet-serving request of system:node:{node})"
                )),
                None => unreachable(format!("TLS: {e}")),
            })?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| refused("it presented no certificate".into()))?;
        check_node_subject(leaf, node).map_err(refused)?;
        Ok(tls)
    }

    /// GETs `path_and_query` from the agent of node `node` at `host:port` and streams its
    /// answer back, once the agent proved it is that node (see the module docs).
    pub async fn get(
        &self,
        node: &str,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> Result<Response, ApiError> {
        let request = Request::get(path_and_query)
            .body(Full::new(bytes::Bytes::new()))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.send(node, host, port, request).await
    }

    /// Sends `request` (its URI a path and query) to the agent of node `node` at
    /// `host:port` and streams its answer back (status, `Content-Type` and body), once the
    /// agent proved it is that node (see the module docs).
    pub async fn send(
        &self,
        node: &str,
        host: &str,
        port: u16,
        mut request: Request<Full<bytes::Bytes>>,
    ) -> Result<Response, ApiError> {
        let unreachable = |what: String| {
            ApiError::unavailable(format!(
                "the node agent of node \"{node}\" at {host}:{port} is unreachable: {what}"
            ))
        };
        let tls = self.connect(node, host, port).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended");
            }
        });
        let host_header = http::HeaderValue::from_str(&format!("{host}:{port}"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        request
            .headers_mut()
            .insert(http::header::HOST, host_header);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let body = Body::new(response.into_body().map_err(axum::Error::new));
        let mut out = (status, body).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert(http::header::CONTENT_TYPE, ct);
        }
        Ok(out)
    }

    /// Sends an HTTP/1.1 upgrade request (`POST path` with `headers`) to the agent of node
    /// `node`: [`AgentUpgrade::Upgraded`] with the agent's 101 headers and the connection
    /// when it switched protocols, else its answer (status, headers, at most 64 KiB of body).
    pub async fn upgrade(
        &self,
        node: &str,
        host: &str,
        port: u16,
        path: &str,
        headers: http::HeaderMap,
    ) -> Result<AgentUpgrade, ApiError> {
        let unreachable = |what: String| {
            ApiError::unavailable(format!(
                "the node agent of node \"{node}\" at {host}:{port} is unreachable: {what}"
            ))
        };
        let tls = self.connect(node, host, port).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "agent connection ended");
            }
        });
        let mut request = Request::post(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        request.headers_mut().extend(headers);
        let mut response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let headers = response.headers().clone();
            let upgraded = hyper::upgrade::on(&mut response)
                .await
                .map_err(|e| unreachable(format!("upgrade: {e}")))?;
            return Ok(AgentUpgrade::Upgraded(headers, upgraded));
        }
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(AgentUpgrade::Refused(parts.status, parts.headers, body))
    }
}

/// The agent's answer to an upgrade request.
#[derive(Debug)]
pub enum AgentUpgrade {
    /// 101: the agent's headers and the upgraded connection.
    Upgraded(http::HeaderMap, hyper::upgrade::Upgraded),
    /// Anything else: its status, headers and body.
    Refused(StatusCode, http::HeaderMap, bytes::Bytes),
}

/// Why the handshake failed, when it is the agent's certificate that was refused.
fn certificate_error(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(why) => Some(match why {
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
                "it is not signed by the cluster CA".to_string()
            }
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => {
                "it does not cover the address in the Node's status".to_string()
            }
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                "it has expired".to_string()
            }
            other => format!("{other:?}"),
        }),
        rustls::Error::NoCertificatesPresented => Some("it presented no certificate".into()),
        _ => None,
    }
}

/// Whether the agent ended the handshake with an alert (as it does while it has no serving
/// certificate).
fn refused_handshake(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::AlertReceived(_)))
}

/// Whether `leaf` is issued to node `node`: CN `system:node:<node>`, O `system:nodes`.
fn check_node_subject(leaf: &CertificateDer<'_>, node: &str) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("its certificate does not parse: {e}"))?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .unwrap_or("");
    let in_nodes = subject
        .iter_organization()
        .any(|o| o.as_str().ok() == Some(NODES_GROUP));
    let wanted = format!("system:node:{node}");
    if common_name != wanted || !in_nodes {
        return Err(format!(
            "its serving certificate is issued to {common_name:?}, not to node \"{node}\" ({wanted:?} in {NODES_GROUP:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf of `ca` for `cn` (in `org`), for `ips`, with `usage`.
    fn leaf(
        ca: &Ca,
        cn: &str,
        org: Option<&str>,
        ips: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        if let Some(org) = org {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = ips
            .iter()
            .map(|ip| SanType::IpAddress(ip.parse::<IpAddr>().unwrap()))
            .collect();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS listener on 127.0.0.1 presenting `cert`; counts the requests that reach it
    /// and answers each `200 ok`.
    async fn listener(cert: (String, String)) -> (u16, Arc<AtomicUsize>) {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.0.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (port, requests)
    }

    fn client(ca: &Ca) -> NodeClient {
        let (cert, key) = leaf(
            ca,
            KUBELET_CLIENT_USER,
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        NodeClient::new(&cert, &key, &ca.pem).unwrap()
    }

    const SERVING: ExtendedKeyUsagePurpose = ExtendedKeyUsagePurpose::ServerAuth;

    #[tokio::test]
    async fn the_agent_of_the_node_is_fetched_from() {
        let ca = ca();
        let cert = leaf(
            &ca,
            "system:node:n1",
            Some(NODES_GROUP),
            &["127.0.0.1"],
            SERVING,
        );
        let (port, requests) = listener(cert).await;
        let response = client(&ca)
            .get("n1", "127.0.0.1", port, "/containerLogs/ns/p/c")
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    /// Review finding 7: a Node whose address points at another server (another node's
    /// agent, the apiserver, any service with a certificate of the cluster CA) made the
    /// apiserver send it a request with its credentials.
    #[tokio::test]
    async fn a_server_that_is_not_the_nodes_agent_is_never_sent_a_request() {
        let other_ca = ca();
        let ca = ca();
        let cases = [
            (
                leaf(
                    &ca,
                    "system:node:n2",
                    Some(NODES_GROUP),
                    &["127.0.0.1"],
                    SERVING,
                ),
                "issued to \"system:node:n2\", not to node \"n1\"",
            ),
            (
                leaf(&ca, "kube-apiserver", None, &["127.0.0.1"], SERVING),
                "issued to \"kube-apiserver\", not to node \"n1\"",
            ),
            (
                leaf(&ca, "system:node:n1", None, &["127.0.0.1"], SERVING),
                "not to node \"n1\" (\"system:node:n1\" in \"system:nodes\")",
            ),
            (
                leaf(
                    &other_ca,
                    "system:node:n1",
                    Some(NODES_GROUP),
                    &["127.0.0.1"],
                    SERVING,
                ),
                "it is not signed by the cluster CA",
            ),
            (
                leaf(
                    &ca,
                    "system:node:n1",
                    Some(NODES_GROUP),
                    &["127.0.0.2"],
                    SERVING,
                ),
                "it does not cover the address in the Node's status",
            ),
            (
                leaf(
                    &ca,
                    "system:node:n1",
                    Some(NODES_GROUP),
                    &["127.0.0.1"],
                    ExtendedKeyUsagePurpose::ClientAuth,
                ),
                "is not one the cluster issued to node \"n1\"",
            ),
        ];
        let client = client(&ca);
        for (cert, why) in cases {
            let (port, requests) = listener(cert).await;
            let err = client
                .get("n1", "127.0.0.1", port, "/containerLogs/ns/p/c")
                .await
                .err()
                .unwrap_or_else(|| panic!("fetched from a server that is not n1's ({why})"));
            assert_eq!(err.code, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                err.message.starts_with(&format!(
                    "refusing to proxy to node \"n1\" at 127.0.0.1:{port}: "
                )),
                "{}",
                err.message
            );
            assert!(err.message.contains(why), "{} / {why}", err.message);
            assert_eq!(requests.load(Ordering::SeqCst), 0, "{why}");
        }
    }

    /// Presents no certificate at all, as an agent whose serving certificate is pending.
    #[derive(Debug)]
    struct NoCertificateYet;
    impl rustls::server::ResolvesServerCert for NoCertificateYet {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    #[tokio::test]
    async fn an_agent_without_its_certificate_yet_is_503_pointing_at_its_csr() {
        let ca = ca();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificateYet));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let _ = acceptor.accept(stream).await;
            }
        });
        let err = client(&ca)
            .get("n1", "127.0.0.1", port, "/x")
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            err.message.contains("see `kubectl get csr` for a pending kubernetes.io/kubelet-serving request of system:node:n1"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_503_with_the_address() {
        let ca = ca();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = client(&ca)
            .get("n1", "127.0.0.1", port, "/x")
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            err.message.starts_with(&format!(
                "the node agent of node \"n1\" at 127.0.0.1:{port} is unreachable"
            )),
            "{}",
            err.message
        );
    }
}
