//! Reading a CertificateSigningRequest's `spec.request`: the PEM `CERTIFICATE REQUEST` a
//! client sent, its subject and subject alternative names, with its signature checked
//! (x509-parser), and the key usages `spec.usages` may name.

use std::net::IpAddr;

use base64::Engine;
use serde_json::Value;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Every key usage `spec.usages` may name, as Kubernetes' `KeyUsage` values.
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// What a certificate request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations (the groups of a client certificate).
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Email subject alternative names.
    pub emails: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
}

impl RequestInfo {
    /// Whether the request names any subject alternative name.
    pub fn has_sans(&self) -> bool {
        !(self.dns_names.is_empty()
            && self.ip_addresses.is_empty()
            && self.emails.is_empty()
            && self.uris.is_empty())
    }
}

/// The PEM text of `spec.request` (base64 in JSON), or why there is none.
pub fn request_pem(csr: &Value) -> Result<String, String> {
    let encoded = csr
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not valid base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())
}

/// Parses a PEM `CERTIFICATE REQUEST` and checks its signature, with Go's messages
/// where Kubernetes shows them.
pub fn parse(pem: &str) -> Result<RequestInfo, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, request) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    request
        .verify_signature()
        .map_err(|_| "x509: ECDSA verification failure".to_string())?;
    let info = &request.certification_request_info;
    let mut out = RequestInfo {
        common_name: info
            .subject
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string(),
        organizations: info
            .subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_string)
            .collect(),
        ..RequestInfo::default()
    };
    for extension in request.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => out.dns_names.push(dns.to_string()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            out.ip_addresses.push(ip);
                        }
                    }
                    GeneralName::RFC822Name(email) => out.emails.push(email.to_string()),
                    GeneralName::URI(uri) => out.uris.push(uri.to_string()),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// An IP address from the 4 or 16 bytes of an IP SAN.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The `spec.usages` of a CSR object.
pub fn usages(csr: &Value) -> Vec<String> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| {
            u.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PEM CSR for `cn` in `orgs` with the given SANs.
    pub(crate) fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("sans");
        let mut dn = rcgen::DistinguishedName::new();
        for org in orgs {
            dn.push(rcgen::DnType::OrganizationName, *org);
        }
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn a_request_reads_back_its_subject_and_names() {
        let pem = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1", "127.0.0.5", "::1"],
        );
        let info = parse(&pem).expect("parses");
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, vec!["system:nodes"]);
        assert_eq!(info.dns_names, vec!["n1"]);
        assert_eq!(
            info.ip_addresses,
            vec![
                "127.0.0.5".parse::<IpAddr>().unwrap(),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(info.has_sans());
    }

    #[test]
    fn anything_but_a_signed_request_is_refused() {
        assert!(parse("not pem").is_err());
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
        assert_eq!(
            parse(&cert.cert.pem()).unwrap_err(),
            "PEM block type must be CERTIFICATE REQUEST"
        );
    }
}
