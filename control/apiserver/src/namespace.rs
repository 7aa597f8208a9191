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
pub async fn bootstrap(
    state: &AppState,
    apiserver: std::net::SocketAddr,
    cluster_dns: Option<&crate::services::ClusterDns>,
) -> Result<(), wasmkube_store::StoreError> {
    let Some(rt) = state.registry().by_kind("", "Namespace") else {
        return Ok(());
    };
    for name in BUILTIN {
        let ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        create_builtin(state, rt, &rt.key(None, name), ns).await?;
    }
    bootstrap_kubernetes_service(state, apiserver).await?;
    match cluster_dns {
        Some(dns) => bootstrap_cluster_dns(state, dns).await?,
        None => remove_cluster_dns(state).await?,
    }
    bootstrap_runtime_class(state).await?;
    let all = state
        .store()
        .list(ListOptions {
            prefix: rt.key_prefix(),
            ..Default::default()
        })
        .await?;
    for kv in all.items {
        if let Ok(ns) = object::decode(&kv)
            && object::is_deleting(&ns)
        {
            spawn_finalizer(state.clone(), object::name(&ns).to_string());
        }
    }
    Ok(())
}

/// Empties a terminating namespace and then removes it, in the background.
pub fn spawn_finalizer(state: AppState, namespace: String) {
    let stopped = state.stopped();
    tokio::spawn(async move {
        tokio::select! {
            _ = stopped => {}
            _ = finalize(state, namespace) => {}
        }
    });
}

/// Retries [`finalize_once`] with back-off until the namespace is gone.
async fn finalize(state: AppState, namespace: String) {
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
}

/// One pass: deletes what is left in the namespace; when nothing is, removes the
/// `kubernetes` finalizer and the namespace. Returns whether the namespace is gone.
async fn finalize_once(
    state: &AppState,
    namespace: &str,
) -> Result<bool, wasmkube_store::StoreError> {
    let store = state.store();
    let mut remaining = 0usize;
    for rt in state
        .registry()
        .all()
        .iter()
        .filter(|t| t.namespaced && !t.create_only)
    {
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

/// Creates the `kubernetes` service (10.43.0.1:443), its Endpoints and its EndpointSlice
/// in `default` (the apiserver keeps them itself, as kube-apiserver's endpoint reconciler).
async fn bootstrap_kubernetes_service(
    state: &AppState,
    apiserver: std::net::SocketAddr,
) -> Result<(), wasmkube_store::StoreError> {
    let ip = if apiserver.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        apiserver.ip().to_string()
    };
    let (svc, endpoints) = crate::services::kubernetes_service(&ip, apiserver.port());
    let slice = crate::services::kubernetes_endpoint_slice(&ip, apiserver.port());
    if let Some(rt) = state.registry().by_kind("", "Service") {
        let alloc = format!(
            "/registry/allocations/serviceips/{}",
            crate::services::KUBERNETES_SERVICE_IP
        );
        ignore_exists(
            state
                .store()
                .create(&alloc, bytes::Bytes::from_static(b"default/kubernetes"))
                .await,
        )?;
        create_builtin(state, rt, &rt.key(Some("default"), "kubernetes"), svc).await?;
    }
    if let Some(rt) = state.registry().by_kind("", "Endpoints") {
        let key = rt.key(Some("default"), "kubernetes");
        point_at_apiserver(state, rt, &key, endpoints, &["subsets"]).await?;
    }
    if let Some(rt) = state
        .registry()
        .by_kind("discovery.k8s.io", "EndpointSlice")
    {
        let key = rt.key(Some("default"), "kubernetes");
        point_at_apiserver(state, rt, &key, slice, &["endpoints", "ports"]).await?;
    }
    Ok(())
}

/// Creates `kube-system/kube-dns` (its cluster IP allocated as any Service's) unless it
/// exists, and points its Endpoints and EndpointSlice at the DNS server at every start (its
/// address may change between starts). An address taken by another Service, or a kube-dns
/// Service with another address, is logged and left alone: the cluster IP of a Service
/// cannot change.
async fn bootstrap_cluster_dns(
    state: &AppState,
    dns: &crate::services::ClusterDns,
) -> Result<(), wasmkube_store::StoreError> {
    let (namespace, name) = crate::services::CLUSTER_DNS_SERVICE;
    let owner = format!("{namespace}/{name}");
    if !crate::services::in_service_range(dns.ip) {
        tracing::warn!(ip = %dns.ip, "the cluster DNS address is outside the service range 10.43.0.0/16; {owner} not created");
        return Ok(());
    }
    if let Some(rt) = state.registry().by_kind("", "Service") {
        let key = rt.key(Some(namespace), name);
        match state.store().get(&key).await? {
            Some(kv) => {
                let existing = object::decode(&kv)
                    .map_err(|e| wasmkube_store::StoreError::Backend(e.message.into()))?;
                let ip = existing.pointer("/spec/clusterIP").and_then(Value::as_str);
                if ip != Some(dns.ip.to_string().as_str()) {
                    tracing::warn!(service = %owner, cluster_ip = ?ip, cluster_dns = %dns.ip,
                        "the cluster DNS Service has another cluster IP than --cluster-dns; delete it to have it made again");
                }
            }
            None => {
                let alloc = format!("/registry/allocations/serviceips/{}", dns.ip);
                match state
                    .store()
                    .create(&alloc, bytes::Bytes::from(owner.clone()))
                    .await
                {
                    Ok(_) => {}
                    Err(wasmkube_store::StoreError::AlreadyExists { .. }) => {
                        let holder = state.store().get(&alloc).await?;
                        if holder
                            .as_ref()
                            .is_some_and(|kv| kv.value != owner.as_bytes())
                        {
                            tracing::warn!(ip = %dns.ip, service = %owner,
                                "the cluster DNS address is taken by another Service; the cluster DNS Service is not created");
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
                let svc = crate::services::cluster_dns_service(dns);
                create_builtin(state, rt, &key, svc).await?;
            }
        }
    }
    let (endpoints, slice) = crate::services::cluster_dns_endpoints(dns);
    if let Some(rt) = state.registry().by_kind("", "Endpoints") {
        let key = rt.key(Some(namespace), name);
        point_at_apiserver(state, rt, &key, endpoints, &["subsets"]).await?;
    }
    if let Some(rt) = state
        .registry()
        .by_kind("discovery.k8s.io", "EndpointSlice")
    {
        let key = rt.key(Some(namespace), name);
        point_at_apiserver(state, rt, &key, slice, &["endpoints", "ports"]).await?;
    }
    Ok(())
}

/// Without a cluster DNS server (`--disable-cluster-dns`), removes the `kube-system/kube-dns`
/// Service, Endpoints and EndpointSlice an earlier start with one made (k3s uninstalls a
/// disabled packaged component the same way), so no Service is left pointing at a listener
/// that is gone. Only the apiserver's own objects go: a kube-dns Service with a selector
/// (a CoreDNS the user runs) is left alone, and so are objects without its labels.
async fn remove_cluster_dns(state: &AppState) -> Result<(), wasmkube_store::StoreError> {
    let (namespace, name) = crate::services::CLUSTER_DNS_SERVICE;
    let label = |obj: &Value, key: &str| {
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    for (group, kind) in [
        ("", "Service"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
    ] {
        let Some(rt) = state.registry().by_kind(group, kind) else {
            continue;
        };
        let key = rt.key(Some(namespace), name);
        let Some(kv) = state.store().get(&key).await? else {
            continue;
        };
        let obj = object::decode(&kv)
            .map_err(|e| wasmkube_store::StoreError::Backend(e.message.into()))?;
        let ours = label(&obj, "k8s-app").as_deref() == Some("kube-dns")
            && match kind {
                "Service" => {
                    obj.pointer("/spec/selector").is_none_or(Value::is_null)
                        && label(&obj, "kubernetes.io/name").as_deref() == Some("CoreDNS")
                }
                _ => true,
            };
        if !ours {
            continue;
        }
        match state.store().delete(&key, Some(kv.mod_revision)).await {
            Ok(_) => {
                tracing::info!(kind, object = %format!("{namespace}/{name}"),
                    "the cluster DNS is disabled: removed its object");
                crate::services::on_deleted(state, rt, &obj).await;
            }
            // Changed or deleted by someone else meanwhile: theirs now.
            Err(
                wasmkube_store::StoreError::NotFound { .. }
                | wasmkube_store::StoreError::Conflict { .. },
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `desired` at `key`, or, when it exists, sets its `fields` to the desired ones
/// (the apiserver may have moved: another `--bind`; the DNS server another address).
async fn point_at_apiserver(
    state: &AppState,
    rt: &crate::registry::ResourceType,
    key: &str,
    desired: Value,
    fields: &[&str],
) -> Result<(), wasmkube_store::StoreError> {
    let to_backend =
        |e: crate::error::ApiError| wasmkube_store::StoreError::Backend(e.message.into());
    let Some(kv) = state.store().get(key).await? else {
        return create_builtin(state, rt, key, desired).await;
    };
    let mut current = object::decode(&kv).map_err(to_backend)?;
    if fields.iter().all(|f| current.get(f) == desired.get(f)) {
        return Ok(());
    }
    for f in fields {
        current[*f] = desired[*f].clone();
    }
    // A concurrent writer (another server starting) wins; it writes the same.
    let _ = state
        .store()
        .update(
            key,
            object::encode(&current).map_err(to_backend)?,
            kv.mod_revision,
        )
        .await;
    Ok(())
}

/// Creates the built-in RuntimeClasses: `wasmtime` (handler `wasmtime`), whose pods run on
/// the agents' embedded wasm runtime (every agent offers it and carries its label), and
/// `runc` (handler `runc`, containerd's default), whose pods run as Linux containers through
/// the container runtime of nodes started with `--container-runtime-endpoint`: the
/// `nodeSelector` keeps them off wasm-only nodes.
async fn bootstrap_runtime_class(state: &AppState) -> Result<(), wasmkube_store::StoreError> {
    let Some(rt) = state.registry().by_kind("node.k8s.io", "RuntimeClass") else {
        return Ok(());
    };
    for handler in ["wasmtime", "runc"] {
        let class = json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": handler, "labels": {"app.kubernetes.io/managed-by": "wasmkube"}},
            "handler": handler,
            "scheduling": {"nodeSelector": {format!("wasmkube.io/runtime.{handler}"): "true"}},
        });
        create_builtin(state, rt, &rt.key(None, handler), class).await?;
    }
    Ok(())
}

/// Stores a built-in object unless its key exists: server-managed metadata is added, and
/// the given status is kept (bootstrap objects are born with theirs).
async fn create_builtin(
    state: &AppState,
    rt: &crate::registry::ResourceType,
    key: &str,
    mut obj: Value,
) -> Result<(), wasmkube_store::StoreError> {
    let status = obj.get("status").cloned();
    crate::handlers::write::prepare_create(rt, &mut obj);
    if let Some(status) = status {
        obj["status"] = status;
    }
    let bytes =
        object::encode(&obj).map_err(|e| wasmkube_store::StoreError::Backend(e.message.into()))?;
    ignore_exists(state.store().create(key, bytes).await)
}

/// A create that found its key taken is fine at bootstrap: the object is there.
fn ignore_exists<T>(
    created: Result<T, wasmkube_store::StoreError>,
) -> Result<(), wasmkube_store::StoreError> {
    match created {
        Ok(_) | Err(wasmkube_store::StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
