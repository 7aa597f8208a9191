//! The row of a CertificateSigningRequest, as Kubernetes' `printCertificateSigningRequest`:
//! NAME, AGE, SIGNERNAME, REQUESTOR, REQUESTEDDURATION, CONDITION (`Pending`,
//! `Approved,Issued`, `Denied`, with `,Failed` when the signer refused).

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::duration::{human_duration, parse_time, since};
use super::format::{at, str_at};

/// The cells of one CSR.
pub(super) fn cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let signer = str_at(obj, &["spec", "signerName"]);
    let requested = at(obj, &["spec", "expirationSeconds"])
        .and_then(Value::as_i64)
        .map_or_else(
            || "<none>".to_string(),
            |s| human_duration(SignedDuration::from_secs(s)),
        );
    vec![
        json!(str_at(obj, &["metadata", "name"])),
        json!(since(
            now,
            parse_time(at(obj, &["metadata", "creationTimestamp"]))
        )),
        json!(if signer.is_empty() { "<none>" } else { signer }),
        json!(str_at(obj, &["spec", "username"])),
        json!(requested),
        json!(condition(obj)),
    ]
}

/// Kubernetes' `extractCSRStatus`.
fn condition(obj: &Value) -> String {
    let (mut approved, mut denied, mut failed) = (false, false, false);
    for c in at(obj, &["status", "conditions"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match c.get("type").and_then(Value::as_str) {
            Some("Approved") => approved = true,
            Some("Denied") => denied = true,
            Some("Failed") => failed = true,
            _ => {}
        }
    }
    let mut status = if denied {
        "Denied"
    } else if approved {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if failed {
        status.push_str(",Failed");
    }
    if !str_at(obj, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_column_reads_like_kubectl_get_csr() {
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        let obj = json!({
            "metadata": {"name": "node-csr-x", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "username": "system:bootstrap:abcdef", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "eA=="},
        });
        assert_eq!(
            cells(&obj, now),
            vec![
                json!("node-csr-x"),
                json!("10m"),
                json!("kubernetes.io/kube-apiserver-client-kubelet"),
                json!("system:bootstrap:abcdef"),
                json!("24h"),
                json!("Approved,Issued"),
            ]
        );
        assert_eq!(condition(&json!({})), "Pending");
    }
}
