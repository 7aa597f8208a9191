//! A minimal HTTPS GET for the agent's log server (the workspace has no HTTP client crate):
//! TLS with rustls, HTTP/1.1 with `Connection: close`, chunked bodies decoded.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the client proves who it is.
pub(crate) enum Auth<'a> {
    /// The cluster's admin client certificate from `<data-dir>/pki`.
    AdminCert(&'a Path),
    /// A client certificate and its key (PEM).
    Cert(&'a str, &'a str),
    /// A bearer token.
    Token(&'a str),
    /// Nothing.
    None,
}

/// GETs `path` from the log server at `addr` (trusting `server_cert_pem`); returns the status
/// code and the body.
pub(crate) async fn get(
    addr: SocketAddr,
    server_cert_pem: &str,
    auth: Auth<'_>,
    path: &str,
) -> (u16, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_cert_pem.as_bytes()) {
        roots.add(cert.expect("server cert")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match &auth {
        Auth::AdminCert(pki) => {
            let cert = std::fs::read(pki.join("admin.crt")).expect("admin cert");
            let key = std::fs::read(pki.join("admin.key")).expect("admin key");
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(&key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        Auth::Cert(cert, key) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        _ => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.expect("tls handshake");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Auth::Token(t) = auth {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    // The server may close without a TLS close_notify; what arrived is enough.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
