//! Making and checking the cluster's certificates: the CA, serving and client leaf
//! certificates (rcgen), the SANs a serving certificate needs, whether a stored leaf can
//! be kept (x509-parser), and the rustls server configuration built from them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use time::{Duration, OffsetDateTime};

use super::PkiError;

/// Common name of the cluster CA.
const CA_COMMON_NAME: &str = "wasmkube-ca";
/// Common name of the serving certificate.
const SERVER_COMMON_NAME: &str = "wasmkube-apiserver";

const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Leaf certificates closer than this to expiry are re-issued on start.
const RENEW_BEFORE: Duration = Duration::days(30);
/// Backdating of `notBefore`, for clients whose clocks run a little behind.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// SANs every serving certificate carries, besides the configured ones.
const DEFAULT_SANS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A serving SAN, normalised so the wanted set compares with what a certificate holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum San {
    /// An IP address SAN.
    Ip(IpAddr),
    /// A DNS name SAN, lowercased.
    Dns(String),
}

pub(super) fn serving_sans(extra: &[String]) -> Result<BTreeSet<San>, PkiError> {
    let mut sans = BTreeSet::new();
    for raw in DEFAULT_SANS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        let name = raw.trim().trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            continue;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {}
            Ok(ip) => {
                sans.insert(San::Ip(ip));
            }
            Err(_) => {
                // Validate now so a bad name is a clear error, not a generation failure.
                rcgen::string::Ia5String::try_from(name).map_err(|source| {
                    PkiError::InvalidSan {
                        name: name.to_string(),
                        source,
                    }
                })?;
                sans.insert(San::Dns(name.to_ascii_lowercase()));
            }
        }
    }
    Ok(sans)
}

/// Whether a stored leaf certificate can be kept: it parses, is signed by the CA, is
/// not close to expiry, and (for a serving certificate) covers every wanted SAN.
pub(super) fn leaf_is_current(
    cert_pem: &str,
    ca_der: &CertificateDer<'_>,
    wanted: Option<&BTreeSet<San>>,
) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca_der) else {
        return false;
    };
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return false;
    }
    let renew_at = (OffsetDateTime::now_utc() + RENEW_BEFORE).unix_timestamp();
    if cert.validity().not_after.timestamp() < renew_at {
        return false;
    }
    let Some(wanted) = wanted else { return true };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let present: BTreeSet<San> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                Some(San::Dns(dns.to_ascii_lowercase()))
            }
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                ip_from_bytes(bytes).map(San::Ip)
            }
            _ => None,
        })
        .collect();
    wanted.is_subset(&present)
}

pub(super) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn base_params(common_name: &str, organizations: &[&str], validity: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    serial[0] |= 0x01; // and no leading zero byte to strip
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

pub(super) fn new_ca() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "the CA key",
        source,
    })?;
    let mut params = base_params(CA_COMMON_NAME, &[], CA_VALIDITY);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Generate {
            what: "the CA certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(super) fn new_server_cert(
    issuer: &Issuer<'_, &KeyPair>,
    sans: &BTreeSet<San>,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "the serving key",
        source,
    })?;
    let mut params = base_params(SERVER_COMMON_NAME, &[], LEAF_VALIDITY);
    for san in sans {
        params.subject_alt_names.push(match san {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(name) => {
                SanType::DnsName(rcgen::string::Ia5String::try_from(name.as_str()).map_err(
                    |source| PkiError::InvalidSan {
                        name: name.clone(),
                        source,
                    },
                )?)
            }
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| PkiError::Generate {
            what: "the serving certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(super) fn issue_client_cert(
    issuer: &Issuer<'_, &KeyPair>,
    common_name: &str,
    organizations: &[&str],
) -> Result<(String, String), PkiError> {
    if organizations.len() > 1 {
        return Err(PkiError::TooManyGroups(
            organizations.iter().map(|o| o.to_string()).collect(),
        ));
    }
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "a client key",
        source,
    })?;
    let mut params = base_params(common_name, organizations, LEAF_VALIDITY);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| PkiError::Generate {
            what: "a client certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(super) fn build_server_config(
    ca_der: &CertificateDer<'static>,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).map_err(|e| tls(&e))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(&e))?;
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| tls(&e))?];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
