//! `certificates.k8s.io/v1` CertificateSigningRequests, as Kubernetes serves them.
//!
//! * The registry strategy ([`prepare_create`], [`prepare_update`]): a new CSR records its
//!   requester (`spec.username`, `spec.groups`) from the request's identity, whatever the
//!   client sent, and starts with an empty status; updates of the main resource change
//!   only metadata, `/status` only the status (not the Approved/Denied conditions, see
//!   `validation::validate_csr_update`), `/approval` only the conditions.
//! * The admission plugins of the group ([`admit_create`], [`admit_update`]):
//!   CertificateSubjectRestriction (no `system:masters` certificate from the
//!   `kube-apiserver-client` signer), CertificateApproval (approving or denying needs the
//!   `approve` verb on `signers`, resource name the signer or `<domain>/*`) and
//!   CertificateSigning (setting `status.certificate` needs `sign` on it).
//! * The controllers that approve, sign and clean up (`controller`, with the rules of
//!   [`approver`] and [`signer`]) run inside the server, which holds the CA.
//!
//! `kubectl certificate approve|deny` update `/approval`; `kubectl get csr` prints the
//! Table of `table`.

pub mod approver;
mod controller;
pub mod csr;
pub mod signer;

use serde_json::{Value, json};

use crate::authn::Identity;
use crate::authz::{Attributes, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::handlers::write::Part;
use crate::object;
use crate::state::AppState;

pub use controller::spawn as spawn_controllers;

/// The API group.
pub const GROUP: &str = "certificates.k8s.io";
/// Client certificates for the apiserver, for any user but `system:masters`.
pub const SIGNER_KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Node client certificates (`system:node:<name>` in `system:nodes`).
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Node serving certificates, for the agent's HTTPS endpoint.
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The signer of pre-v1 requests, which v1 refuses to create.
pub const SIGNER_LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// Whether `group`/`kind` is a CertificateSigningRequest.
pub fn is_csr(group: &str, kind: &str) -> bool {
    group == GROUP && kind == "CertificateSigningRequest"
}

/// A new CSR: status cleared, the requester recorded from `user`.
pub fn prepare_create(obj: &mut Value, user: Option<&Identity>) {
    obj["status"] = json!({});
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    if let Some(map) = spec.as_object_mut() {
        for field in ["username", "uid", "groups", "extra"] {
            map.remove(field);
        }
    }
    if let Some(user) = user {
        spec["username"] = json!(user.user);
        spec["groups"] = json!(user.groups);
    }
}

/// What an update of `part` may change, as Kubernetes' CSR strategies: everything else is
/// taken from `current`. New conditions get their timestamps.
pub fn prepare_update(part: Part, current: &Value, new: &mut Value) {
    let spec = current.get("spec").cloned().unwrap_or(json!({}));
    new["spec"] = spec;
    match part {
        Part::Main | Part::Binding => {
            new["status"] = current.get("status").cloned().unwrap_or(json!({}));
        }
        Part::Status => {}
        Part::Approval => {
            let conditions = new.pointer("/status/conditions").cloned();
            new["status"] = current.get("status").cloned().unwrap_or(json!({}));
            match conditions {
                Some(c) => new["status"]["conditions"] = c,
                None => {
                    if let Some(status) = new["status"].as_object_mut() {
                        status.remove("conditions");
                    }
                }
            }
        }
    }
    stamp_conditions(current, new);
}

/// Sets `lastUpdateTime` (and `lastTransitionTime`) of conditions that are new or changed.
fn stamp_conditions(current: &Value, new: &mut Value) {
    let old: Vec<Value> = current
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let now = object::now_rfc3339();
    let Some(conditions) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in conditions.iter_mut() {
        if old.contains(c) || !c.is_object() {
            continue;
        }
        let kind = c.get("type").cloned();
        let previous = old.iter().find(|o| o.get("type") == kind.as_ref());
        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
            c["lastUpdateTime"] = json!(now);
        }
        let same_status = previous.is_some_and(|p| p.get("status") == c.get("status"));
        if c.get("lastTransitionTime").is_none_or(Value::is_null) {
            c["lastTransitionTime"] = match previous {
                Some(p) if same_status => {
                    p.get("lastTransitionTime").cloned().unwrap_or(json!(now))
                }
                _ => json!(now),
            };
        }
    }
}

fn signer_of(obj: &Value) -> &str {
    obj.pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// CertificateSubjectRestriction, on create.
pub fn admit_create(obj: &Value) -> ApiResult<()> {
    if signer_of(obj) != SIGNER_KUBE_APISERVER_CLIENT {
        return Ok(());
    }
    let Ok(pem) = csr::request_pem(obj) else {
        return Ok(()); // validation reports it
    };
    let Ok(info) = csr::parse(&pem) else {
        return Ok(());
    };
    if info
        .organizations
        .iter()
        .any(|o| o == crate::authn::GROUP_MASTERS)
    {
        return Err(ApiError::forbidden_object(
            GROUP,
            "certificatesigningrequests",
            object::name(obj),
            &format!(
                "use of {SIGNER_KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed"
            ),
        ));
    }
    Ok(())
}

/// Whether `user` may `verb` (`approve`, `sign`) requests of `signer`: on the signer's
/// name or on `<domain>/*`.
fn may_on_signer(state: &AppState, user: &Identity, verb: &str, signer: &str) -> ApiResult<bool> {
    let authz = state.authz()?;
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    Ok(names.iter().any(|name| {
        let request = RequestInfo::resource(verb, GROUP, "signers", "", "", name);
        authz
            .authorizer
            .authorize(&Attributes {
                user,
                request: &request,
            })
            .is_allowed()
    }))
}

fn decision_conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            matches!(
                c.get("type").and_then(Value::as_str),
                Some("Approved" | "Denied")
            )
        })
        .cloned()
        .collect()
}

/// CertificateApproval and CertificateSigning, on updates of `/approval` and `/status`.
pub fn admit_update(
    state: &AppState,
    user: Option<&Identity>,
    part: Part,
    current: &Value,
    new: &Value,
) -> ApiResult<()> {
    let Some(user) = user else {
        return Ok(());
    };
    let signer = signer_of(current);
    let refuse = |what: &str| {
        ApiError::forbidden_object(
            GROUP,
            "certificatesigningrequests",
            object::name(current),
            &format!("user not permitted to {what} requests with signerName {signer:?}"),
        )
    };
    let approving =
        part == Part::Approval && decision_conditions(current) != decision_conditions(new);
    let signing = part == Part::Status
        && current.pointer("/status/certificate") != new.pointer("/status/certificate");
    if approving && !may_on_signer(state, user, "approve", signer)? {
        return Err(refuse("approve"));
    }
    if signing && !may_on_signer(state, user, "sign", signer)? {
        return Err(refuse("sign"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_request_records_who_asked_and_nothing_the_client_claimed() {
        let mut obj = json!({
            "spec": {"username": "admin", "groups": ["system:masters"], "signerName": "x/y"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]},
        });
        let user = Identity {
            user: "system:bootstrap:abcdef".into(),
            groups: vec!["system:bootstrappers".into()],
        };
        prepare_create(&mut obj, Some(&user));
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(obj["spec"]["groups"], json!(["system:bootstrappers"]));
        assert_eq!(obj["spec"]["signerName"], "x/y");
        assert_eq!(obj["status"], json!({}));
    }

    #[test]
    fn an_approval_update_changes_only_the_conditions() {
        let current = json!({"spec": {"signerName": "a/b"}, "status": {"certificate": "Y2VydA=="}});
        let mut new = json!({
            "spec": {"signerName": "c/d"},
            "status": {"certificate": "", "conditions": [{"type": "Approved", "status": "True"}]},
        });
        prepare_update(Part::Approval, &current, &mut new);
        assert_eq!(new["spec"]["signerName"], "a/b");
        assert_eq!(new["status"]["certificate"], "Y2VydA==");
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert!(new["status"]["conditions"][0]["lastUpdateTime"].is_string());
    }
}
