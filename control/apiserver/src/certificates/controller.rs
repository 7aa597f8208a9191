//! The certificate controllers of the server: approving (`approver`), signing (`signer`)
//! and cleaning up CertificateSigningRequests, as kube-controller-manager's `csrapproving`,
//! `csrsigning` and `csrcleaner`.
//!
//! They run inside the apiserver, not in `wasmkube-controllers`: the signer needs the
//! cluster CA's key, which only the server holds, and with the approver beside it a node
//! can join a server started with `--disable-controllers`. One task lists the CSRs, then
//! follows their store watch; every change of a CSR is looked at once more (approve when
//! it is pending and the rules allow, sign when it is approved and has no certificate),
//! and a write is a compare-and-swap, so several servers on one store never sign twice.
//! Every [`RESYNC`] the task relists, which also deletes old requests: approved or denied
//! ones an hour after the decision, pending ones after a day, as Kubernetes' cleaner.

use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_store::{Event, ListOptions, StoreError};

use super::approver::{self, NodeNames};
use super::signer::{SignError, SigningAuthority, is_signed_here};
use crate::object;
use crate::state::AppState;

/// How often every CSR is looked at again (and old ones deleted).
const RESYNC: Duration = Duration::from_secs(60);
/// The pause before relisting after a watch error.
const RELIST_BACKOFF: Duration = Duration::from_millis(500);
/// How long a decided request is kept after its decision.
const DECIDED_TTL: i64 = 3600;
/// How long a pending request is kept.
const PENDING_TTL: i64 = 24 * 3600;

/// Runs the certificate controllers until the server stops.
pub fn spawn(state: AppState, ca: SigningAuthority) {
    let stopped = state.stopped();
    tokio::spawn(async move {
        tokio::select! {
            _ = stopped => {}
            _ = run(state, ca) => {}
        }
    });
}

async fn run(state: AppState, ca: SigningAuthority) {
    let Some(rt) = state
        .registry()
        .by_kind(super::GROUP, "CertificateSigningRequest")
    else {
        return;
    };
    let prefix = rt.key_prefix();
    loop {
        let page = match state
            .store()
            .list(ListOptions {
                prefix: prefix.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(page) => page,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "listing certificate signing requests failed");
                tokio::time::sleep(RELIST_BACKOFF).await;
                continue;
            }
        };
        let now = jiff::Timestamp::now();
        for kv in &page.items {
            if let Ok(obj) = object::decode(kv)
                && is_expired(&obj, now)
            {
                tracing::info!(csr = %object::name(&obj), "deleting an old certificate signing request");
                let _ = state.store().delete(&kv.key, Some(kv.mod_revision)).await;
                continue;
            }
            sync(&state, &ca, &kv.key).await;
        }
        let mut watch = match state.store().watch(&prefix, page.revision).await {
            Ok(w) => w,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "watching certificate signing requests failed");
                tokio::time::sleep(RELIST_BACKOFF).await;
                continue;
            }
        };
        let resync = tokio::time::sleep(RESYNC);
        tokio::pin!(resync);
        loop {
            tokio::select! {
                () = &mut resync => break,
                event = watch.next() => match event {
                    Ok(Event::Put { kv, .. }) => sync(&state, &ca, &kv.key).await,
                    Ok(Event::Delete { .. }) => {}
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "the certificate signing request watch ended; relisting");
                        tokio::time::sleep(RELIST_BACKOFF).await;
                        break;
                    }
                },
            }
        }
    }
}

/// Whether the cleaner deletes `csr` now.
fn is_expired(csr: &Value, now: jiff::Timestamp) -> bool {
    let age_of = |time: Option<&str>| {
        time.and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| now.as_second() - t.as_second())
    };
    let decided = conditions(csr).find_map(|c| {
        matches!(
            c.get("type").and_then(Value::as_str),
            Some("Approved" | "Denied" | "Failed")
        )
        .then(|| {
            age_of(
                c.get("lastUpdateTime")
                    .or_else(|| c.get("lastTransitionTime"))
                    .and_then(Value::as_str),
            )
        })
    });
    match decided {
        Some(age) => age.is_some_and(|a| a > DECIDED_TTL),
        None => age_of(object::meta_str(csr, "creationTimestamp")).is_some_and(|a| a > PENDING_TTL),
    }
}

fn conditions(csr: &Value) -> impl Iterator<Item = &Value> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    conditions(csr).any(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn push_condition(csr: &mut Value, kind: &str, reason: &str, message: &str) {
    let now = object::now_rfc3339();
    if !csr.get("status").is_some_and(Value::is_object) {
        csr["status"] = json!({});
    }
    let status = &mut csr["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    if let Some(list) = status["conditions"].as_array_mut() {
        list.push(json!({
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }));
    }
}

/// What the controllers make of one CSR: `None` when nothing is to be done.
async fn next_state(state: &AppState, ca: &SigningAuthority, csr: &Value) -> Option<Value> {
    let mut updated = csr.clone();
    let mut changed = false;
    if !approver::is_decided(csr) {
        let node = match approver::serving_node(csr) {
            Some(name) => node_names(state, &name).await,
            None => None,
        };
        let authz = state.authz().ok()?;
        if let Some(message) = approver::decide(csr, authz.authorizer.as_ref(), node.as_ref()) {
            tracing::info!(csr = %object::name(csr), "{message}");
            push_condition(&mut updated, "Approved", approver::REASON, message);
            changed = true;
        }
    }
    let signer = updated
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let issued = updated
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if has_condition(&updated, "Approved")
        && !has_condition(&updated, "Failed")
        && !has_condition(&updated, "Denied")
        && !issued
        && is_signed_here(&signer)
    {
        match ca.sign(&updated) {
            Ok(pem) => {
                use base64::Engine;
                updated["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(pem));
                tracing::info!(csr = %object::name(csr), %signer, "signed a certificate");
                changed = true;
            }
            Err(SignError::Invalid(message)) => {
                tracing::info!(csr = %object::name(csr), %message, "not signing a certificate signing request");
                push_condition(&mut updated, "Failed", "SignerValidationFailure", &message);
                changed = true;
            }
            Err(e @ SignError::Ca(_)) => {
                tracing::error!(csr = %object::name(csr), error = %e, "cannot sign");
            }
        }
    }
    changed.then_some(updated)
}

async fn node_names(state: &AppState, name: &str) -> Option<NodeNames> {
    let rt = state.registry().by_kind("", "Node")?;
    let kv = state.store().get(&rt.key(None, name)).await.ok()??;
    object::decode(&kv).ok().map(|node| NodeNames::of(&node))
}

/// Approves and signs the CSR at `key` as far as the rules allow, with compare-and-swap
/// writes (re-read on a conflict).
async fn sync(state: &AppState, ca: &SigningAuthority, key: &str) {
    for _ in 0..8 {
        let kv = match state.store().get(key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%key, error = %e, "reading a certificate signing request failed");
                return;
            }
        };
        let Ok(csr) = object::decode(&kv) else {
            return;
        };
        let Some(updated) = next_state(state, ca, &csr).await else {
            return;
        };
        let Ok(bytes) = object::encode(&updated) else {
            return;
        };
        match state.store().update(key, bytes, kv.mod_revision).await {
            Ok(_) => continue,
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return,
            Err(e) => {
                tracing::warn!(%key, error = %e, "writing a certificate signing request failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cleaner_keeps_recent_requests_and_drops_old_ones() {
        let now: jiff::Timestamp = "2025-01-02T00:00:00Z".parse().unwrap();
        let pending = json!({"metadata": {"creationTimestamp": "2025-01-01T12:00:00Z"}});
        assert!(!is_expired(&pending, now));
        let old_pending = json!({"metadata": {"creationTimestamp": "2024-12-31T12:00:00Z"}});
        assert!(is_expired(&old_pending, now));
        let approved = json!({"metadata": {"creationTimestamp": "2025-01-01T23:30:00Z"},
            "status": {"conditions": [{"type": "Approved", "lastUpdateTime": "2025-01-01T23:30:00Z"}]}});
        assert!(!is_expired(&approved, now));
        let old_approved = json!({"metadata": {"creationTimestamp": "2025-01-01T20:00:00Z"},
            "status": {"conditions": [{"type": "Approved", "lastUpdateTime": "2025-01-01T20:00:00Z"}]}});
        assert!(is_expired(&old_approved, now));
    }
}
