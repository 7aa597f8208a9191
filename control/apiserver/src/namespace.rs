//! Namespace lifecycle inside the apiserver: the built-in namespaces, and emptying a
//! deleted namespace before it goes away.
//!
//! Kubernetes runs the second part as the namespace controller; here it is a task of the
//! apiserver because it needs nothing but the store and the registry, and that keeps a
//! `kubectl delete namespace` working on a cluster with no controllers. A terminating
//! namespace refuses new content (see `handlers::write::ensure_namespace_open`).

use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_store::ListOptions;

use crate::object;
use crate::state::AppState;

/// The namespaces every cluster has from its first start.
pub const BUILTIN: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the built-in namespaces that do not exist yet and resumes the emptying of
/// namespaces that were terminating when the server stopped.
pub async fn bootstrap(state: &AppState) -> Result<(), wasmkube_store::StoreError> {
    let Some(rt) = state.registry().by_kind("", "Namespace") else {
        return Ok(());
    };
    for name in BUILTIN {
        let key = rt.key(None, name);
        if state.store().get(&key).await?.is_some() {
            continue;
        }
        let mut ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        crate::handlers::write::prepare_create(rt, &mut ns);
        ns["status"] = json!({"phase": "Active"});
        let bytes = object::encode(&ns)
            .map_err(|e| wasmkube_store::StoreError::Backend(e.message.into()))?;
        match state.store().create(&key, bytes).await {
            Ok(_) | Err(wasmkube_store::StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let all = state
        .store()
        .list(ListOptions {
            prefix: rt.key_prefix(),
            ..Default::default()
        })
        .await?;
    for kv in all.items {
        if let Ok(ns) = object::decode(&kv) {
            if object::is_deleting(&ns) {
                spawn_finalizer(state.clone(), object::name(&ns).to_string());
            }
        }
    }
    Ok(())
}

/// Empties a terminating namespace and then removes it, in the background.
pub fn spawn_finalizer(state: AppState, namespace: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        loop {
            match finalize_once(&state, &namespace).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%namespace, error = %e, "emptying namespace failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// One pass: deletes what is left in the namespace; when nothing is, removes the
/// `kubernetes` finalizer and the namespace. Returns whether the namespace is gone.
async fn finalize_once(
    state: &AppState,
    namespace: &str,
) -> Result<bool, wasmkube_store::StoreError> {
    let store = state.store();
    let mut remaining = 0usize;
    for rt in state.registry().all().iter().filter(|t| t.namespaced) {
        let prefix = format!("{}{namespace}/", rt.key_prefix());
        let items = store
            .list(ListOptions {
                prefix,
                ..Default::default()
            })
            .await?
            .items;
        for kv in items {
            remaining += 1;
            let Ok(obj) = object::decode(&kv) else {
                continue;
            };
            let finalizers = object::finalizers(&obj);
            if finalizers.is_empty() {
                match store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_)
                    | Err(
                        wasmkube_store::StoreError::NotFound { .. }
                        | wasmkube_store::StoreError::Conflict { .. },
                    ) => {}
                    Err(e) => return Err(e),
                }
            } else if !object::is_deleting(&obj) {
                let mut marked = obj.clone();
                let meta = object::meta_mut(&mut marked);
                meta.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                if let Ok(bytes) = object::encode(&marked) {
                    let _ = store.update(&kv.key, bytes, kv.mod_revision).await;
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    let Some(ns_rt) = state.registry().by_kind("", "Namespace") else {
        return Ok(true);
    };
    let key = ns_rt.key(None, namespace);
    let Some(kv) = store.get(&key).await? else {
        return Ok(true);
    };
    let ns: Value =
        object::decode(&kv).map_err(|e| wasmkube_store::StoreError::Backend(e.message.into()))?;
    let blocking = object::finalizers(&ns);
    if !blocking.is_empty() {
        // metadata.finalizers of other owners still hold the namespace.
        return Ok(false);
    }
    match store.delete(&key, Some(kv.mod_revision)).await {
        Ok(_) | Err(wasmkube_store::StoreError::NotFound { .. }) => {
            tracing::info!(%namespace, "namespace deleted");
            Ok(true)
        }
        Err(wasmkube_store::StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
