//! The node's certificates, as the kubelet's certificate manager keeps them: a client
//! certificate (`system:node:<name>` in `system:nodes`) the agent authenticates to the
//! apiserver with, and a serving certificate for its HTTPS endpoint (`logs::server`), for
//! the same subject and the node's name and address, which the apiserver verifies before it
//! sends a request there.
//!
//! * Serving ([`load_serving`], signer `kubernetes.io/kubelet-serving`): asked for once the
//!   Node is registered with its addresses, approved by the server when the requester is
//!   that node and the names are the Node's own, renewed like the client certificate and
//!   put in the log server's slot, which every new handshake reads.
//!
//! * Joining ([`request::request_certificate`]): the agent makes a key (ECDSA P-256), sends
//!   a CertificateSigningRequest (signer `kubernetes.io/kube-apiserver-client-kubelet`,
//!   authenticated with its bootstrap token) and waits until the server approved and signed
//!   it. The certificate and key are stored in `<data-dir>/agent/pki/` (mode 0600) and
//!   used from then on, also after a restart ([`load`]).
//! * Rotation ([`rotation`]): at a random point between 70% and 84% of the certificate's
//!   lifetime (the kubelet's jitter) the agent asks for a new one with its current
//!   identity (approved as `selfnodeclient`), stores it and switches to it.
//! * kube-proxy ([`request::CertificateRequest::kube_proxy`], signer
//!   `kubernetes.io/kube-apiserver-client`): a joined agent with the routed pod network asks,
//!   as itself, for a `system:kube-proxy` certificate (approved by the server for nodes, as
//!   k3s hands its agents one), kept and renewed like the others in [`KUBE_PROXY_FILE`]:
//!   its Node watch needs every Node, which a node's own credentials may not read.
//! * Switching: the certificate in use lives in a [`CertificateSlot`]; the API client's
//!   TLS configuration resolves its client certificate from the slot on every new
//!   connection ([`client::api_client`]), so a rotated certificate is used without
//!   rebuilding the clients every part of the agent holds.

pub mod client;
pub mod request;
pub mod rotation;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The node client certificate's file under the agent's pki directory (certificate and key).
pub const CLIENT_FILE: &str = "kubelet-client-current.pem";
/// The serving certificate's file under the agent's pki directory.
pub const SERVING_FILE: &str = "kubelet-server-current.pem";
/// The node's kube-proxy client certificate (`system:kube-proxy`) under the pki directory.
pub const KUBE_PROXY_FILE: &str = "kube-proxy-current.pem";
/// The cluster CA the agent trusts, under the agent's pki directory.
pub const CA_FILE: &str = "ca.crt";

/// Why a certificate cannot be obtained, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A certificate or key does not parse.
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The API refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The signing request was denied or failed.
    #[error("certificate signing request {name} was {outcome}: {reason}")]
    NotIssued {
        /// The CSR's name.
        name: String,
        /// `denied` or `failed`.
        outcome: &'static str,
        /// The condition's reason and message.
        reason: String,
    },
    /// The agent stopped while waiting.
    #[error("stopped while waiting for certificate signing request {0}")]
    Stopped(String),
}

/// A certificate and its key, parsed for TLS.
#[derive(Clone)]
pub struct Credentials {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    certified: Arc<CertifiedKey>,
    /// The subject's common name.
    pub common_name: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// The IP subject alternative names.
    pub ips: Vec<std::net::IpAddr>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> CertificateError {
    CertificateError::Invalid(e.to_string())
}

fn system_time(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

impl Credentials {
    /// Parses a certificate chain (leaf first) and its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertificateError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(invalid)?;
        let leaf = chain
            .first()
            .ok_or_else(|| invalid("no certificate in the PEM text"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(invalid)?;
        let common_name = parsed
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        let not_before = system_time(parsed.validity().not_before.timestamp());
        let not_after = system_time(parsed.validity().not_after.timestamp());
        let (dns_names, ips) = subject_alt_names(&parsed);
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(invalid)?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(invalid)?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(invalid)?;
        Ok(Credentials {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            certified: Arc::new(certified),
            common_name,
            not_before,
            not_after,
            dns_names,
            ips,
        })
    }

    /// Whether the certificate names exactly these DNS names and IPs (in any order).
    pub fn names_exactly(&self, dns_names: &[String], ips: &[std::net::IpAddr]) -> bool {
        let same = |a: &[String], b: &[String]| {
            let mut a = a.to_vec();
            let mut b = b.to_vec();
            a.sort();
            a.dedup();
            b.sort();
            b.dedup();
            a == b
        };
        let mut mine = self.ips.clone();
        let mut wanted = ips.to_vec();
        mine.sort();
        mine.dedup();
        wanted.sort();
        wanted.dedup();
        same(&self.dns_names, dns_names) && mine == wanted
    }

    /// Parses the combined file form: certificate(s), then the key.
    pub fn from_combined_pem(text: &str) -> Result<Self, CertificateError> {
        let start = text
            .find("-----BEGIN PRIVATE KEY-----")
            .or_else(|| text.find("-----BEGIN EC PRIVATE KEY-----"))
            .or_else(|| text.find("-----BEGIN RSA PRIVATE KEY-----"))
            .ok_or_else(|| invalid("no private key in the file"))?;
        let (certs, key) = text.split_at(start);
        Self::from_pem(certs, key)
    }

    /// The combined file form.
    pub fn to_combined_pem(&self) -> String {
        let mut out = self.cert_pem.trim_end().to_string();
        out.push('\n');
        out.push_str(self.key_pem.trim_end());
        out.push('\n');
        out
    }

    /// The certificate and key for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// Whether the certificate is signed by `ca_pem`, names `common_name` and is valid at
    /// `now`.
    pub fn is_usable(&self, ca_pem: &str, common_name: &str, now: SystemTime) -> bool {
        if self.common_name != common_name || now >= self.not_after || now < self.not_before {
            return false;
        }
        let Ok((_, ca)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
            return false;
        };
        let Ok(ca) = ca.parse_x509() else {
            return false;
        };
        let Some(leaf) = self.certified.cert.first() else {
            return false;
        };
        let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf) else {
            return false;
        };
        leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// The DNS and IP subject alternative names of a certificate.
fn subject_alt_names(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> (Vec<String>, Vec<std::net::IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let octets: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
                        ips.push(std::net::IpAddr::from(octets));
                    }
                    16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(bytes);
                        ips.push(std::net::IpAddr::from(octets));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// The certificate currently in use, shared by the TLS configurations that present it.
#[derive(Debug, Default)]
pub struct CertificateSlot {
    current: RwLock<Option<Credentials>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl CertificateSlot {
    /// A slot holding `credentials` (or nothing yet).
    pub fn new(credentials: Option<Credentials>) -> Arc<Self> {
        Arc::new(CertificateSlot {
            current: RwLock::new(credentials),
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The credentials in use.
    pub fn get(&self) -> Option<Credentials> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Switches to `credentials`.
    pub fn set(&self, credentials: Credentials) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(credentials);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Notified after every [`CertificateSlot::set`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(Credentials::certified_key)
    }
}

/// Presents a slot's certificate as a TLS client.
#[derive(Debug)]
pub struct ClientCertResolver(pub Arc<CertificateSlot>);

impl rustls::client::ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Presents a slot's certificate as a TLS server (no certificate yet: the handshake fails).
#[derive(Debug)]
pub struct ServerCertResolver(pub Arc<CertificateSlot>);

impl rustls::server::ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }
}

/// `<data-dir>/agent/pki`.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("pki")
}

/// Loads the credentials stored in `file` under the pki directory if they are still usable
/// (signed by `ca_pem`, for `common_name`, not expired); `None` otherwise.
pub fn load(pki: &Path, file: &str, ca_pem: &str, common_name: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(pki.join(file)).ok()?;
    let credentials = Credentials::from_combined_pem(&text).ok()?;
    credentials
        .is_usable(ca_pem, common_name, SystemTime::now())
        .then_some(credentials)
}

/// The serving certificate stored under `pki` if it is still usable: signed by `ca_pem`,
/// for `request`'s subject, valid now, and naming exactly `request`'s names and addresses
/// (a node whose address changed asks for a new one).
pub fn load_serving(
    pki: &Path,
    ca_pem: &str,
    request: &request::CertificateRequest,
) -> Option<Credentials> {
    load(pki, SERVING_FILE, ca_pem, &request.common_name)
        .filter(|c| c.names_exactly(&request.dns_names, &request.ips))
}

/// Writes `text` to `dir/file` with mode 0600 (through a temporary file renamed over it).
pub fn write_private(dir: &Path, file: &str, text: &str) -> Result<(), CertificateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertificateError::Io { path, source }
    };
    crate::create_private_dir(dir).map_err(io(dir))?;
    let path = dir.join(file);
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    out.write_all(text.as_bytes()).map_err(io(&tmp))?;
    out.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Stores `credentials` in `dir/file`.
pub fn store(dir: &Path, file: &str, credentials: &Credentials) -> Result<(), CertificateError> {
    write_private(dir, file, &credentials.to_combined_pem())
}

/// The node identity stored under `pki` by an earlier join: the cluster CA and a usable
/// client certificate for `common_name`.
pub fn load_node_identity(pki: &Path, common_name: &str) -> Option<(String, Credentials)> {
    let ca_pem = std::fs::read_to_string(pki.join(CA_FILE)).ok()?;
    let credentials = load(pki, CLIENT_FILE, &ca_pem, common_name)?;
    Some((ca_pem, credentials))
}

/// Joins: stores the cluster CA, asks `server` for a client certificate of `node` with the
/// bootstrap `token`, waits until it is issued and stores it (the kubelet's TLS
/// bootstrap). Returns the certificate.
pub async fn bootstrap(
    server: &str,
    ca_pem: &str,
    token: &str,
    node: &str,
    pki: &Path,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<Credentials, CertificateError> {
    write_private(pki, CA_FILE, ca_pem)?;
    let client = client::bootstrap_client(server, ca_pem, token)?;
    let request = request::CertificateRequest::node_client(node).named("node-csr-");
    let credentials = request::request_certificate(&client, &request, stopped).await?;
    store(pki, CLIENT_FILE, &credentials)?;
    tracing::info!(subject = %credentials.common_name, "joined: the node has its client certificate");
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (rcgen::Issuer::new(params, key), cert.pem())
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, cn: &str) -> Credentials {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).unwrap();
        Credentials::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    #[test]
    fn stored_credentials_load_back_only_for_their_ca_and_name() {
        let (issuer, ca_pem) = ca();
        let (_, other_ca) = ca();
        let creds = leaf(&issuer, "system:node:n1");
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), CLIENT_FILE, &creds).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(CLIENT_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let loaded = load(dir.path(), CLIENT_FILE, &ca_pem, "system:node:n1").expect("usable");
        assert_eq!(loaded.cert_pem, creds.cert_pem);
        assert!(load(dir.path(), CLIENT_FILE, &ca_pem, "system:node:n2").is_none());
        assert!(load(dir.path(), CLIENT_FILE, &other_ca, "system:node:n1").is_none());
        assert!(load(dir.path(), SERVING_FILE, &ca_pem, "system:node:n1").is_none());
    }

    #[test]
    fn a_stored_serving_certificate_is_used_only_for_the_nodes_current_names() {
        let (issuer, ca_pem) = ca();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["n1".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.9".parse().unwrap()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let cert = params.signed_by(&key, &issuer).unwrap();
        let creds = Credentials::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), SERVING_FILE, &creds).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let same = request::CertificateRequest::node_serving(
            "n1",
            vec!["n1".into()],
            vec![ip("127.0.0.9")],
        );
        assert!(load_serving(dir.path(), &ca_pem, &same).is_some());
        let moved = request::CertificateRequest::node_serving(
            "n1",
            vec!["n1".into()],
            vec![ip("127.0.0.8")],
        );
        assert!(load_serving(dir.path(), &ca_pem, &moved).is_none());
        let renamed = request::CertificateRequest::node_serving(
            "n1",
            vec!["n1".into(), "host".into()],
            vec![ip("127.0.0.9")],
        );
        assert!(load_serving(dir.path(), &ca_pem, &renamed).is_none());
    }

    #[test]
    fn a_slot_hands_out_the_latest_certificate() {
        let (issuer, _) = ca();
        let slot = CertificateSlot::new(None);
        assert!(slot.certified_key().is_none());
        let changes = slot.subscribe();
        slot.set(leaf(&issuer, "a"));
        assert!(changes.has_changed().unwrap());
        slot.set(leaf(&issuer, "b"));
        assert_eq!(slot.get().unwrap().common_name, "b");
    }
}
