//! The apiserver's client for node agents: `pods/log` is proxied to the agent of the
//! pod's node, as kube-apiserver proxies it to the kubelet.
//!
//! The agent is found through the Node object: its `InternalIP` address and
//! `status.daemonEndpoints.kubeletEndpoint.port`. The apiserver authenticates with a client
//! certificate issued by the cluster CA (CN `kube-apiserver-kubelet-client`, group
//! `system:masters`). Like kube-apiserver without `--kubelet-certificate-authority`, it does
//! not verify the agent's serving certificate: agents generate their own.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::error::ApiError;

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Accepts any agent serving certificate (see the module docs), still checking signatures.
#[derive(Debug)]
struct AcceptAgentCertificates(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAgentCertificates {
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
                .with_custom_certificate_verifier(Arc::new(AcceptAgentCertificates(provider)))
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

    /// A client presenting `cert_pem`/`key_pem` (issued by the cluster CA).
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad client certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("bad client key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAgentCertificates(provider)))
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("bad client certificate or key: {e}"))?;
        Ok(NodeClient { tls: Arc::new(tls) })
    }

    /// GETs `path_and_query` from the agent at `host:port` and streams its answer back.
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> Result<Response, ApiError> {
        let unreachable = |what: String| {
            ApiError::unavailable(format!(
                "the node agent at {host}:{port} is unreachable: {what}"
            ))
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let name =
            ServerName::try_from(host.to_string()).map_err(|e| unreachable(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended");
            }
        });
        let request = Request::get(path_and_query)
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
        if status == StatusCode::OK {
            return Ok(out);
        }
        Ok(out)
    }
}
