//! CertificateSigningRequest (certificates.k8s.io/v1), after Kubernetes'
//! `pkg/apis/certificates/validation`: a signed PEM request, known and distinct usages, a
//! qualified signer name (not the legacy one), at least ten minutes of requested validity,
//! consistent conditions (Approved and Denied exclusive, no duplicates, none removed), a
//! PEM certificate; and, on `/status`, no approval decisions.

use std::collections::BTreeMap;

use serde_json::Value;
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::validate::{is_dns1123_label, is_dns1123_subdomain};

use super::{Cause, causes, get_list, get_str};
use crate::certificates::{SIGNER_LEGACY_UNKNOWN, csr};

/// The registry hook: validation of a created or updated CSR.
pub fn validate_csr(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let spec_path = FieldPath::new("spec");
    let request_unchanged =
        old.is_some_and(|o| o.pointer("/spec/request") == obj.pointer("/spec/request"));
    if !request_unchanged && let Err(why) = csr::request_pem(obj).and_then(|pem| csr::parse(&pem)) {
        errs.push(FieldError::invalid(
            &spec_path.child("request"),
            Rendered("<request data>".into()),
            &why,
        ));
    }
    let usages = get_list(spec, "usages");
    if usages.is_empty() {
        errs.push(FieldError::required(&spec_path.child("usages"), ""));
    }
    let mut supported: Vec<&str> = csr::USAGES.to_vec();
    supported.sort_unstable();
    let mut seen = Vec::new();
    for (i, usage) in usages.iter().enumerate() {
        let path = spec_path.child("usages").index(i);
        let usage = usage.as_str().unwrap_or("");
        if old.is_none() && !csr::USAGES.contains(&usage) {
            errs.push(FieldError::not_supported(&path, usage, &supported));
        }
        if seen.contains(&usage) {
            errs.push(FieldError::duplicate(&path, usage));
        }
        seen.push(usage);
    }
    let signer = get_str(spec, "signerName");
    let legacy_before = old.is_some_and(|o| {
        o.pointer("/spec/signerName").and_then(Value::as_str) == Some(SIGNER_LEGACY_UNKNOWN)
    });
    if signer == SIGNER_LEGACY_UNKNOWN && !legacy_before {
        errs.push(FieldError::invalid(
            &spec_path.child("signerName"),
            signer,
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        errs.extend(signer_name_errors(&spec_path.child("signerName"), signer));
    }
    if let Some(seconds) = spec.get("expirationSeconds").and_then(Value::as_i64)
        && seconds < 600
    {
        errs.push(FieldError::invalid(
            &spec_path.child("expirationSeconds"),
            seconds,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    errs.extend(condition_errors(obj));
    let certificate = obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    let certificate_unchanged =
        old.is_some_and(|o| o.pointer("/status/certificate") == obj.pointer("/status/certificate"));
    if !certificate.is_empty()
        && !certificate_unchanged
        && let Err(why) = certificate_errors(certificate)
    {
        errs.push(FieldError::invalid(
            &FieldPath::new("status").child("certificate"),
            Rendered("\"<certificate data>\"".into()),
            &why,
        ));
    }
    if let Some(old) = old {
        errs.extend(update_errors(old, obj));
    }
    causes(errs)
}

/// The checks of a `/status` update: it may not decide the request.
pub fn validate_csr_status_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let path = FieldPath::new("status").child("conditions");
    for kind in ["Approved", "Denied"] {
        let before = conditions_of(old, kind);
        let after = conditions_of(new, kind);
        if after.len() > before.len() {
            errs.push(FieldError::forbidden(
                &path,
                &format!("updates may not add a condition of type {kind:?}"),
            ));
        } else if after.len() == before.len() && after != before {
            errs.push(FieldError::forbidden(
                &path,
                &format!("updates may not modify a condition of type {kind:?}"),
            ));
        }
    }
    causes(errs)
}

fn conditions_of<'a>(obj: &'a Value, kind: &str) -> Vec<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .collect()
}

fn update_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for kind in ["Approved", "Denied", "Failed"] {
        if conditions_of(new, kind).len() < conditions_of(old, kind).len() {
            errs.push(FieldError::forbidden(
                &FieldPath::new("status").child("conditions"),
                &format!("updates may not remove a condition of type {kind:?}"),
            ));
        }
    }
    let old_cert = old
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    let new_cert = new
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !old_cert.is_empty() && old_cert != new_cert {
        errs.push(FieldError::forbidden(
            &FieldPath::new("status").child("certificate"),
            "updates may not modify existing certificate content",
        ));
    }
    errs
}

fn condition_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = FieldPath::new("status").child("conditions");
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let (mut approved, mut denied) = (false, false);
    let list = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, c) in list.iter().enumerate() {
        let kind = get_str(c, "type");
        if kind.is_empty() {
            errs.push(FieldError::required(&path.index(i).child("type"), ""));
        }
        let status = get_str(c, "status");
        let allowed: &[&str] = if matches!(kind, "Approved" | "Denied" | "Failed") {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if status.is_empty() {
            errs.push(FieldError::required(&path.index(i).child("status"), ""));
        } else if !allowed.contains(&status) {
            errs.push(FieldError::not_supported(
                &path.index(i).child("status"),
                status,
                allowed,
            ));
        }
        match kind {
            "Approved" => {
                approved = true;
                if denied {
                    errs.push(FieldError::invalid(
                        &path,
                        kind,
                        "Approved and Denied conditions are mutually exclusive",
                    ));
                }
            }
            "Denied" => {
                denied = true;
                if approved {
                    errs.push(FieldError::invalid(
                        &path,
                        kind,
                        "Approved and Denied conditions are mutually exclusive",
                    ));
                }
            }
            _ => {}
        }
        if seen.insert(kind.to_string(), ()).is_some() {
            errs.push(FieldError::duplicate(&path.index(i).child("type"), kind));
        }
    }
    errs
}

/// `status.certificate` (base64 in JSON) must be PEM CERTIFICATE blocks.
fn certificate_errors(encoded: &str) -> Result<(), String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not valid base64: {e}"))?;
    let mut blocks = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = pem.map_err(|e| e.to_string())?;
        if pem.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                pem.label
            ));
        }
        pem.parse_x509().map_err(|e| e.to_string())?;
        blocks += 1;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// Kubernetes' `ValidateSignerName`: `example.com/signer-name`.
fn signer_name_errors(path: &FieldPath, signer: &str) -> Vec<FieldError> {
    if signer.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let segments: Vec<&str> = signer.split('/').collect();
    let [domain, name] = segments.as_slice() else {
        return vec![FieldError::invalid(
            path,
            signer,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    };
    let mut errs = Vec::new();
    let labels: Vec<&str> = domain.split('.').collect();
    for label in &labels {
        if let Some(e) = is_dns1123_label(label).first() {
            errs.push(FieldError::invalid(
                path,
                *domain,
                &format!("validating label {label:?}: {e}"),
            ));
            break;
        }
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            path,
            *domain,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for e in is_dns1123_subdomain(name) {
        errs.push(FieldError::invalid(
            path,
            *name,
            &format!("validating path {name:?}: {e}"),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::*;

    fn csr(signer: &str, usages: &[&str]) -> Value {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        json!({"spec": {
            "signerName": signer,
            "usages": usages,
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
        }})
    }

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_well_formed_request_is_valid() {
        let obj = csr("example.com/signer", &["digital signature", "client auth"]);
        assert_eq!(fields(&validate_csr(&obj, None)), Vec::<String>::new());
    }

    #[test]
    fn bad_requests_fail_with_kubernetes_messages() {
        let mut obj = csr(
            "kubernetes.io/legacy-unknown",
            &["client auth", "client auth", "bogus"],
        );
        obj["spec"]["request"] = json!("bm90IGEgY3Ny");
        obj["spec"]["expirationSeconds"] = json!(60);
        let got = fields(&validate_csr(&obj, None));
        assert!(
            got.iter()
                .any(|m| m.starts_with("spec.request: Invalid value")),
            "{got:?}"
        );
        assert!(
            got.contains(&"spec.usages[1]: Duplicate value: \"client auth\"".to_string()),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|m| m.starts_with("spec.usages[2]: Unsupported value: \"bogus\"")),
            "{got:?}"
        );
        assert!(got.contains(&"spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version".to_string()), "{got:?}");
        assert!(got.contains(&"spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)".to_string()), "{got:?}");
        let bad_signer = csr("signer", &["client auth"]);
        assert_eq!(
            fields(&validate_csr(&bad_signer, None)),
            vec![
                "spec.signerName: Invalid value: \"signer\": must be a fully qualified domain and path of the form 'example.com/signer-name'"
            ]
        );
    }

    #[test]
    fn decisions_are_exclusive_and_permanent() {
        let mut both = csr("example.com/s", &["client auth"]);
        both["status"] = json!({"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert!(fields(&validate_csr(&both, None))
            .contains(&"status.conditions: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive".to_string()));
        let mut approved = csr("example.com/s", &["client auth"]);
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let pending = csr("example.com/s", &["client auth"]);
        let mut pending = pending;
        pending["spec"] = approved["spec"].clone();
        assert!(fields(&validate_csr(&pending, Some(&approved)))
            .contains(&"status.conditions: Forbidden: updates may not remove a condition of type \"Approved\"".to_string()));
        assert_eq!(
            fields(&validate_csr_status_update(&pending, &approved)),
            vec![
                "status.conditions: Forbidden: updates may not add a condition of type \"Approved\""
            ]
        );
    }
}
