//! Service address allocation: cluster IPs and node ports, as the Kubernetes apiserver
//! allocates them at create time.
//!
//! Each allocated address is a key of its own in the store
//! (`/registry/allocations/serviceips/10.43.0.17`), created with create-if-absent, so two
//! services can never get the same address even under concurrent creates, and the
//! allocation survives restarts with the services themselves. Deleting a service releases
//! its keys.

use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Value, json};
use wasmkube_store::StoreError;

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::ResourceType;
use crate::state::AppState;
use crate::validation::Cause;

/// The service CIDR: 10.43.0.0/16 (as k3s). `.0.1` is the `kubernetes` service.
const SERVICE_NET: [u8; 2] = [10, 43];
/// The node port range, as Kubernetes' default.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
const IP_PREFIX: &str = "/registry/allocations/serviceips/";
const PORT_PREFIX: &str = "/registry/allocations/nodeports/";

/// The cluster IP of the `kubernetes` service in `default`.
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";
/// The cluster DNS Service's default address (k3s' `--cluster-dns`).
pub const DEFAULT_CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
/// The cluster DNS Service's namespace and name.
pub const CLUSTER_DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");

/// The cluster DNS Service (`kube-system/kube-dns`) the apiserver keeps: its cluster IP and
/// where the DNS server listens (UDP and TCP), its one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The Service's cluster IP (`--cluster-dns`), in the service range.
    pub ip: Ipv4Addr,
    /// The DNS server's address.
    pub endpoint: std::net::SocketAddr,
}

/// Whether `ip` is in the service range (10.43.0.0/16).
pub fn in_service_range(ip: Ipv4Addr) -> bool {
    ip.octets()[..2] == SERVICE_NET
}

fn invalid(svc: &Value, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        object::name(svc),
        &[Cause {
            reason: "FieldValueInvalid",
            message,
            field: field.into(),
        }],
    )
}

/// A store failure while allocating `what` for `svc`, answered as the same failure on the
/// service itself would be (507 on a full disk, 503 while the store is unavailable), not 500.
fn store_failure(rt: &ResourceType, svc: &Value, what: &str, err: StoreError) -> ApiError {
    let mut error = crate::handlers::store_error(rt, object::name(svc), err);
    error.message = format!("allocating {what}: {}", error.message);
    error
}

fn owner(svc: &Value) -> bytes::Bytes {
    let ns = object::meta_str(svc, "namespace").unwrap_or("");
    bytes::Bytes::from(format!("{ns}/{}", object::name(svc)))
}

/// Allocates the cluster IP and node ports a new service needs and writes them into it.
/// Returns the allocation keys, to release them if the service is not stored after all.
pub async fn allocate(
    state: &AppState,
    rt: &ResourceType,
    svc: &mut Value,
) -> ApiResult<Vec<String>> {
    let mut keys = Vec::new();
    match allocate_inner(state, rt, svc, &mut keys).await {
        Ok(()) => Ok(keys),
        Err(e) => {
            release_keys(state, &keys).await;
            Err(e)
        }
    }
}

async fn allocate_inner(
    state: &AppState,
    rt: &ResourceType,
    svc: &mut Value,
    keys: &mut Vec<String>,
) -> ApiResult<()> {
    let store = state.store();
    let svc_type = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if svc_type == "ExternalName" {
        return Ok(());
    }
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ip = match requested.as_str() {
        "None" => "None".to_string(),
        "" => {
            let mut found = None;
            for _ in 0..64 {
                let (a, b) = {
                    let mut rng = rand::rng();
                    (rng.random_range(0..=255u8), rng.random_range(1..=254u8))
                };
                if a == 0 && b <= 10 {
                    continue; // .0.1 is the kubernetes service, .0.10 by convention DNS
                }
                let candidate = Ipv4Addr::new(SERVICE_NET[0], SERVICE_NET[1], a, b).to_string();
                let key = format!("{IP_PREFIX}{candidate}");
                match store.create(&key, owner(svc)).await {
                    Ok(_) => {
                        keys.push(key);
                        found = Some(candidate);
                        break;
                    }
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => {
                        return Err(store_failure(rt, svc, "a cluster IP", e));
                    }
                }
            }
            found.ok_or_else(|| ApiError::internal("the service IP range 10.43.0.0/16 is full"))?
        }
        ip => {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid(
                    svc,
                    "spec.clusterIPs",
                    format!("Invalid value: \"{ip}\": must be a valid IP address"),
                )
            })?;
            let o = parsed.octets();
            if o[0] != SERVICE_NET[0] || o[1] != SERVICE_NET[1] {
                return Err(invalid(
                    svc,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
                    ),
                ));
            }
            let key = format!("{IP_PREFIX}{ip}");
            match store.create(&key, owner(svc)).await {
                Ok(_) => keys.push(key),
                Err(StoreError::AlreadyExists { .. }) => {
                    return Err(invalid(
                        svc,
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                        ),
                    ));
                }
                Err(e) => return Err(store_failure(rt, svc, "a cluster IP", e)),
            }
            ip.to_string()
        }
    };
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    if ip != "None" && svc.pointer("/spec/ipFamilies").is_none() {
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for (i, mut port) in ports.into_iter().enumerate() {
            let wanted = port.get("nodePort").and_then(Value::as_u64).unwrap_or(0);
            let chosen = if wanted == 0 {
                let mut chosen = None;
                for _ in 0..128 {
                    let candidate = rand::rng().random_range(NODE_PORTS);
                    let key = format!("{PORT_PREFIX}{candidate}");
                    match store.create(&key, owner(svc)).await {
                        Ok(_) => {
                            keys.push(key);
                            chosen = Some(candidate);
                            break;
                        }
                        Err(StoreError::AlreadyExists { .. }) => continue,
                        Err(e) => {
                            return Err(store_failure(rt, svc, "a node port", e));
                        }
                    }
                }
                chosen.ok_or_else(|| ApiError::internal("no free node port in 30000-32767"))?
            } else {
                let field = format!("spec.ports[{i}].nodePort");
                let p = u16::try_from(wanted).ok().filter(|p| NODE_PORTS.contains(p)).ok_or_else(|| {
                    invalid(svc, &field, format!("Invalid value: {wanted}: provided port is not in the valid range. The range of valid ports is 30000-32767"))
                })?;
                let key = format!("{PORT_PREFIX}{p}");
                match store.create(&key, owner(svc)).await {
                    Ok(_) => keys.push(key),
                    Err(StoreError::AlreadyExists { .. }) => {
                        return Err(invalid(
                            svc,
                            &field,
                            format!("Invalid value: {p}: provided port is already allocated"),
                        ));
                    }
                    Err(e) => return Err(store_failure(rt, svc, "a node port", e)),
                }
                p
            };
            port["nodePort"] = json!(chosen);
            out.push(port);
        }
        svc["spec"]["ports"] = json!(out);
        if svc.pointer("/spec/externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
    }
    Ok(())
}

/// Keeps the addresses of the stored service when an update leaves them out
/// (clients that PUT a manifest without `clusterIP`).
pub fn carry_over(current: &Value, new: &mut Value) {
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = new
            .pointer(&format!("/spec/{field}"))
            .is_none_or(|v| v.is_null() || v == "");
        if missing
            && let Some(v) = current.pointer(&format!("/spec/{field}"))
            && new.get("spec").is_some_and(Value::is_object)
        {
            new["spec"][field] = v.clone();
        }
    }
    let old_ports = current
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut() {
            if port
                .get("nodePort")
                .is_some_and(|p| p.as_u64().unwrap_or(0) != 0)
            {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol")
            });
            if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                port["nodePort"] = np.clone();
            }
        }
    }
}

/// The allocation keys a stored service holds.
fn keys_of(svc: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str)
        && ip != "None"
        && !ip.is_empty()
    {
        keys.push(format!("{IP_PREFIX}{ip}"));
    }
    for port in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = port
            .get("nodePort")
            .and_then(Value::as_u64)
            .filter(|p| *p != 0)
        {
            keys.push(format!("{PORT_PREFIX}{np}"));
        }
    }
    keys
}

/// Releases the addresses of a deleted service.
pub async fn release(state: &AppState, svc: &Value) {
    release_keys(state, &keys_of(svc)).await;
}

async fn release_keys(state: &AppState, keys: &[String]) {
    for key in keys {
        if let Err(e) = state.store().delete(key, None).await
            && !matches!(e, StoreError::NotFound { .. })
        {
            tracing::warn!(%key, error = %e, "releasing a service allocation failed");
        }
    }
}

/// What happens after an object left the store: a service's addresses are released.
pub async fn on_deleted(state: &AppState, rt: &crate::registry::ResourceType, obj: &Value) {
    if rt.group.is_empty() && rt.kind == "Service" {
        release(state, obj).await;
    }
}

/// The `kubernetes` Service's EndpointSlice, as kube-apiserver's endpoints adapter writes
/// it (named as the Service, labelled with it, one ready endpoint: the apiserver).
pub fn kubernetes_endpoint_slice(apiserver_ip: &str, apiserver_port: u16) -> Value {
    let address_type = if apiserver_ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [apiserver_ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": apiserver_port, "protocol": "TCP"}],
    })
}

/// The `kubernetes` service and its endpoints in `default`, pointing at the apiserver.
pub fn kubernetes_service(apiserver_ip: &str, apiserver_port: u16) -> (Value, Value) {
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": KUBERNETES_SERVICE_IP,
            "clusterIPs": [KUBERNETES_SERVICE_IP],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": apiserver_port}],
        },
        "status": {"loadBalancer": {}},
    });
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{
            "addresses": [{"ip": apiserver_ip}],
            "ports": [{"name": "https", "port": apiserver_port, "protocol": "TCP"}],
        }],
    });
    (svc, endpoints)
}

/// The cluster DNS Service, as k3s' CoreDNS manifest has it (`k8s-app: kube-dns`, ports
/// `dns` 53/UDP and `dns-tcp` 53/TCP) but without a selector: its endpoint is the server's
/// DNS listener, kept by the apiserver (as the `kubernetes` Service's), not by a controller.
pub fn cluster_dns_service(dns: &ClusterDns) -> Value {
    let (namespace, name) = CLUSTER_DNS_SERVICE;
    let ip = dns.ip.to_string();
    let port = dns.endpoint.port();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
            ],
        },
        "status": {"loadBalancer": {}},
    })
}

/// The cluster DNS Service's Endpoints and EndpointSlice (named as the Service): one ready
/// endpoint, the DNS server's address (127.0.0.1 for an unspecified one).
pub fn cluster_dns_endpoints(dns: &ClusterDns) -> (Value, Value) {
    let (namespace, name) = CLUSTER_DNS_SERVICE;
    let ip = if dns.endpoint.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        dns.endpoint.ip().to_string()
    };
    let port = dns.endpoint.port();
    let address_type = if ip.contains(':') { "IPv6" } else { "IPv4" };
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"k8s-app": "kube-dns",
                                "endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{
            "addresses": [{"ip": ip}],
            "ports": [
                {"name": "dns", "port": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": port, "protocol": "TCP"},
            ],
        }],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": name, "k8s-app": "kube-dns"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    });
    (endpoints, slice)
}
