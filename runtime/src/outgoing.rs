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
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

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
        Box::new(send(tls, request, options))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Connects (TLS for `https`), sends `request` over HTTP/1.1 and returns the response and
/// a future of the connection's end.
async fn send(
    tls: Arc<rustls::ClientConfig>,
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

    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
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
