//! API clients of the agent: one authenticated by a bootstrap token (to ask for the
//! node's first certificate), and one presenting whatever certificate a
//! [`CertificateSlot`] holds, looked up anew for every connection so a rotated
//! certificate is used without rebuilding the client.

use std::sync::Arc;

use kube::client::ConfigExt;

use super::{CertificateError, CertificateSlot, ClientCertResolver};

fn config(server: &str, ca_pem: &str) -> Result<kube::Config, CertificateError> {
    let url = server
        .parse()
        .map_err(|_| CertificateError::Invalid(format!("--server {server:?} is not a URL")))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(ca_certificates(ca_pem)?);
    Ok(config)
}

/// The DER certificates of a PEM bundle.
pub fn ca_certificates(pem: &str) -> Result<Vec<Vec<u8>>, CertificateError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| CertificateError::Invalid(format!("the cluster CA: {e}")))?;
    if certs.is_empty() {
        return Err(CertificateError::Invalid(
            "the cluster CA holds no certificate".into(),
        ));
    }
    Ok(certs)
}

/// A client of `server` (trusting `ca_pem`) that authenticates with a bootstrap token.
pub fn bootstrap_client(
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<kube::Client, CertificateError> {
    let mut config = config(server, ca_pem)?;
    config.auth_info.token = Some(token.to_string().into());
    kube::Client::try_from(config).map_err(|source| CertificateError::Api {
        what: "building the bootstrap client".into(),
        source,
    })
}

/// A client of `server` (trusting `ca_pem`) presenting the certificate in `slot`.
pub fn api_client(
    server: &str,
    ca_pem: &str,
    slot: Arc<CertificateSlot>,
) -> Result<kube::Client, CertificateError> {
    let config = config(server, ca_pem)?;
    let api_error = |source| CertificateError::Api {
        what: "building the API client".into(),
        source,
    };
    let mut tls = config.rustls_client_config().map_err(api_error)?;
    tls.client_auth_cert_resolver = Arc::new(ClientCertResolver(slot));
    wasmkube_client::connection::client_with_tls(config, tls).map_err(api_error)
}
