//! The csrsigning controller's signers: which requests each of Kubernetes' `kubernetes.io`
//! signers accepts (`kube-apiserver-client`, `kube-apiserver-client-kubelet`,
//! `kubelet-serving`, with the checks of Kubernetes' `ValidateKubeletClientCSR` and
//! `ValidateKubeletServingCSR`), and signing an accepted request with the cluster CA.
//!
//! The issued certificate carries the request's subject and subject alternative names and
//! the key usages of `spec.usages`; it is valid for `spec.expirationSeconds` or the signing
//! duration, whichever is shorter, never past the CA's own expiry, and from a little
//! before now for clients whose clocks run behind (five minutes, or a tenth of a short
//! lifetime, so a short certificate is not half expired when issued).

use std::collections::BTreeSet;

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::csr::{self, RequestInfo};
use super::{SIGNER_KUBE_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING};

/// How far `notBefore` is backdated at most, for clients whose clocks run a little behind.
const BACKDATE: Duration = Duration::minutes(5);

/// The cluster CA as a signer: its certificate and key, and the longest validity it gives.
#[derive(Clone)]
pub struct SigningAuthority {
    cert_pem: String,
    key_pem: String,
    /// The validity of issued certificates (`--cluster-signing-duration`).
    pub duration: std::time::Duration,
}

impl std::fmt::Debug for SigningAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningAuthority")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// Why a request is not signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The request does not meet its signer's requirements: the CSR gets a `Failed`
    /// condition with reason `SignerValidationFailure` and this message.
    #[error("{0}")]
    Invalid(String),
    /// The CA cannot sign (its key or certificate is unusable).
    #[error("signing failed: {0}")]
    Ca(String),
}

impl SigningAuthority {
    /// A signer over the CA certificate and key (PEM), issuing for at most `duration`.
    pub fn new(cert_pem: &str, key_pem: &str, duration: std::time::Duration) -> Self {
        SigningAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            duration,
        }
    }

    /// Signs the CSR object `csr` (approved, of a signer [`is_signed_here`]); returns the
    /// certificate, PEM.
    pub fn sign(&self, csr_obj: &Value) -> Result<String, SignError> {
        let signer = csr_obj
            .pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let pem = csr::request_pem(csr_obj).map_err(SignError::Invalid)?;
        let info = csr::parse(&pem).map_err(SignError::Invalid)?;
        let usages = csr::usages(csr_obj);
        check_request(signer, &info, &usages).map_err(SignError::Invalid)?;
        let mut request = CertificateSigningRequestParams::from_pem(&pem).map_err(|e| {
            SignError::Invalid(format!("the certificate request cannot be signed: {e}"))
        })?;
        let requested = csr_obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .and_then(|s| u64::try_from(s).ok())
            .map(std::time::Duration::from_secs);
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| SignError::Ca(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &key)
            .map_err(|e| SignError::Ca(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let lifetime = requested.map_or(self.duration, |r| r.min(self.duration));
        let lifetime = Duration::try_from(lifetime).unwrap_or(Duration::days(365));
        let mut not_after = now + lifetime;
        if let Some(ca_end) = ca_not_after(&self.cert_pem)
            && ca_end < not_after
        {
            not_after = ca_end;
        }
        let params = &mut request.params;
        params.not_before = now - BACKDATE.min(lifetime / 10);
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = true;
        let (key_usages, extended) = key_usages(&usages).map_err(SignError::Invalid)?;
        params.key_usages = key_usages;
        params.extended_key_usages = extended;
        let cert = request
            .signed_by(&issuer)
            .map_err(|e| SignError::Ca(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// Whether this cluster's signer signs requests for `signer_name`.
pub fn is_signed_here(signer_name: &str) -> bool {
    matches!(
        signer_name,
        SIGNER_KUBE_APISERVER_CLIENT | SIGNER_KUBELET_CLIENT | SIGNER_KUBELET_SERVING
    )
}

/// The requirements of each signer, with Kubernetes' messages.
pub fn check_request(signer: &str, info: &RequestInfo, usages: &[String]) -> Result<(), String> {
    let usages: BTreeSet<&str> = usages.iter().map(String::as_str).collect();
    match signer {
        SIGNER_KUBELET_CLIENT => {
            if info.has_sans() {
                return Err("subjectAltNames are not allowed".into());
            }
            check_node_subject(info)?;
            check_usages(
                &usages,
                &[
                    &["key encipherment", "digital signature", "client auth"],
                    &["digital signature", "client auth"],
                ],
            )
        }
        SIGNER_KUBELET_SERVING => {
            check_node_subject(info)?;
            if info.dns_names.is_empty() && info.ip_addresses.is_empty() {
                return Err("DNS or IP subjectAltName is required".into());
            }
            if !info.emails.is_empty() {
                return Err("Email subjectAltNames are not allowed".into());
            }
            if !info.uris.is_empty() {
                return Err("URI subjectAltNames are not allowed".into());
            }
            check_usages(
                &usages,
                &[
                    &["key encipherment", "digital signature", "server auth"],
                    &["digital signature", "server auth"],
                ],
            )
        }
        SIGNER_KUBE_APISERVER_CLIENT => {
            for usage in &usages {
                if !matches!(
                    *usage,
                    "client auth" | "digital signature" | "key encipherment"
                ) {
                    return Err(format!("invalid usage for client certificate: {usage}"));
                }
            }
            if !usages.contains("client auth") {
                return Err("missing required usages for client certificate: client auth".into());
            }
            Ok(())
        }
        other => Err(format!("signer {other:?} is not handled by this cluster")),
    }
}

fn check_node_subject(info: &RequestInfo) -> Result<(), String> {
    if info.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !info.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

fn check_usages(usages: &BTreeSet<&str>, allowed: &[&[&str]]) -> Result<(), String> {
    if allowed
        .iter()
        .any(|set| set.iter().copied().collect::<BTreeSet<&str>>() == *usages)
    {
        return Ok(());
    }
    let wanted: Vec<String> = allowed
        .iter()
        .map(|set| format!("[{}]", set.join(" ")))
        .collect();
    Err(format!("usages did not match {}", wanted.join(" or ")))
}

/// The key usage and extended key usage extensions for `spec.usages`.
fn key_usages(
    usages: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), String> {
    let mut key = Vec::new();
    let mut extended = Vec::new();
    for usage in usages {
        match usage.as_str() {
            "signing" | "digital signature" => key.push(KeyUsagePurpose::DigitalSignature),
            "content commitment" => key.push(KeyUsagePurpose::ContentCommitment),
            "key encipherment" => key.push(KeyUsagePurpose::KeyEncipherment),
            "key agreement" => key.push(KeyUsagePurpose::KeyAgreement),
            "data encipherment" => key.push(KeyUsagePurpose::DataEncipherment),
            "cert sign" => key.push(KeyUsagePurpose::KeyCertSign),
            "crl sign" => key.push(KeyUsagePurpose::CrlSign),
            "encipher only" => key.push(KeyUsagePurpose::EncipherOnly),
            "decipher only" => key.push(KeyUsagePurpose::DecipherOnly),
            "any" => extended.push(ExtendedKeyUsagePurpose::Any),
            "server auth" => extended.push(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => extended.push(ExtendedKeyUsagePurpose::ClientAuth),
            "code signing" => extended.push(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" | "s/mime" => {
                extended.push(ExtendedKeyUsagePurpose::EmailProtection)
            }
            "ipsec end system" => extended.push(ExtendedKeyUsagePurpose::Other(vec![
                1, 3, 6, 1, 5, 5, 7, 3, 5,
            ])),
            "ipsec tunnel" => extended.push(ExtendedKeyUsagePurpose::Other(vec![
                1, 3, 6, 1, 5, 5, 7, 3, 6,
            ])),
            "ipsec user" => extended.push(ExtendedKeyUsagePurpose::Other(vec![
                1, 3, 6, 1, 5, 5, 7, 3, 7,
            ])),
            "timestamping" => extended.push(ExtendedKeyUsagePurpose::TimeStamping),
            "ocsp signing" => extended.push(ExtendedKeyUsagePurpose::OcspSigning),
            "microsoft sgc" => extended.push(ExtendedKeyUsagePurpose::Other(vec![
                1, 3, 6, 1, 4, 1, 311, 10, 3, 3,
            ])),
            "netscape sgc" => extended.push(ExtendedKeyUsagePurpose::Other(vec![
                2, 16, 840, 1, 113730, 4, 1,
            ])),
            other => return Err(format!("unknown key usage {other:?}")),
        }
    }
    key.dedup();
    extended.dedup();
    Ok((key, extended))
}

fn ca_not_after(cert_pem: &str) -> Option<OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    serial[0] |= 0x01; // with no leading zero byte to strip
    SerialNumber::from_slice(&serial)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::super::csr::tests::request;
    use super::*;

    fn authority() -> (SigningAuthority, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = params.self_signed(&key).unwrap();
        (
            SigningAuthority::new(
                &ca.pem(),
                &key.serialize_pem(),
                std::time::Duration::from_secs(3600),
            ),
            ca.pem(),
        )
    }

    fn csr_object(signer: &str, pem: &str, usages: &[&str]) -> Value {
        json!({
            "spec": {
                "signerName": signer,
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "usages": usages,
            },
        })
    }

    #[test]
    fn a_kubelet_client_request_is_signed_with_its_subject() {
        let (ca, ca_pem) = authority();
        let obj = csr_object(
            SIGNER_KUBELET_CLIENT,
            &request("system:node:n1", &["system:nodes"], &[]),
            &["digital signature", "client auth"],
        );
        let pem = ca.sign(&obj).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let identity = crate::authn::identity_from_certificate(&block.contents).unwrap();
        assert_eq!(identity.user, "system:node:n1");
        assert_eq!(identity.groups, vec!["system:nodes"]);
        let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
        let ca_cert = ca_block.parse_x509().unwrap();
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300);
        let short = SigningAuthority::new(
            &ca.cert_pem,
            &ca.key_pem,
            std::time::Duration::from_secs(100),
        );
        let pem = short.sign(&obj).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 100 + 10);
    }

    #[test]
    fn requests_outside_their_signers_rules_are_refused_with_kubernetes_words() {
        let (ca, _) = authority();
        let masters = csr_object(
            SIGNER_KUBELET_CLIENT,
            &request("system:node:n1", &["system:masters"], &[]),
            &["digital signature", "client auth"],
        );
        assert_eq!(
            ca.sign(&masters),
            Err(SignError::Invalid(
                "subject organization is not system:nodes".into()
            ))
        );
        let serving_as_client = csr_object(
            SIGNER_KUBELET_CLIENT,
            &request("system:node:n1", &["system:nodes"], &[]),
            &["digital signature", "server auth"],
        );
        assert!(
            matches!(ca.sign(&serving_as_client), Err(SignError::Invalid(m)) if m.starts_with("usages did not match"))
        );
        let serving_without_names = csr_object(
            SIGNER_KUBELET_SERVING,
            &request("system:node:n1", &["system:nodes"], &[]),
            &["digital signature", "server auth"],
        );
        assert_eq!(
            ca.sign(&serving_without_names),
            Err(SignError::Invalid(
                "DNS or IP subjectAltName is required".into()
            ))
        );
    }

    #[test]
    fn a_serving_request_keeps_its_addresses() {
        let (ca, _) = authority();
        let obj = csr_object(
            SIGNER_KUBELET_SERVING,
            &request("system:node:n1", &["system:nodes"], &["n1", "127.0.0.9"]),
            &["digital signature", "key encipherment", "server auth"],
        );
        let pem = ca.sign(&obj).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 2);
    }
}
