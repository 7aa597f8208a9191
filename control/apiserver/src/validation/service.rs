//! Service validation and defaulting (`ValidateService`, `SetDefaults_Service`).
//! Cluster IPs and node ports are allocated elsewhere; this checks what the user wrote.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath, Rendered, go_quote};
use wasmkube_api::validate::{is_dns1123_label, is_dns1123_subdomain, is_valid_port_num};

use super::container::port_num_or_name_errors;
use super::metadata::label_errors;
use super::{Cause, causes, get_i64, get_list, get_str, object_entry, set_default};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// `sessionAffinity: ClientIP` keeps a client on one endpoint for 3 hours by default.
const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: i64 = 10800;

/// Service defaults: type ClusterIP, sessionAffinity None, port protocol TCP and
/// targetPort = port, traffic policies Cluster.
pub fn default_service(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let spec = object_entry(root, "spec");
    set_default(spec, "sessionAffinity", json!("None"));
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
                .is_some_and(|v| !v.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_TIMEOUT_SECONDS}}),
                );
            }
        }
        _ => {}
    }
    set_default(spec, "type", json!("ClusterIP"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(v) => v.as_i64() == Some(0),
            };
            if unset {
                let port = p.get("port").cloned().unwrap_or(Value::Null);
                p.insert("targetPort".into(), port);
            }
        }
    }
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(
        service_type.as_str(),
        "NodePort" | "LoadBalancer" | "ClusterIP"
    ) {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// Validates a Service; on update, its cluster IPs may not change (but to or from
/// ExternalName), as `ValidateServiceUpdate`.
pub fn validate_service(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let path = FieldPath::new("spec");
    let mut errs = Vec::new();
    let service_type = get_str(spec, "type");
    if !service_type.is_empty() && !SERVICE_TYPES.contains(&service_type) {
        errs.push(FieldError::not_supported(
            &path.child("type"),
            service_type,
            SERVICE_TYPES,
        ));
    }
    let headless = get_str(spec, "clusterIP") == "None";
    let external_name = service_type == "ExternalName";
    let ports = get_list(spec, "ports");
    if ports.is_empty() && !headless && !external_name {
        errs.push(FieldError::required(&path.child("ports"), ""));
    }
    if external_name {
        let cname = get_str(spec, "externalName");
        let cname = cname.strip_suffix('.').unwrap_or(cname);
        if cname.is_empty() {
            errs.push(FieldError::required(&path.child("externalName"), ""));
        } else {
            errs.extend(
                is_dns1123_subdomain(cname)
                    .iter()
                    .map(|m| FieldError::invalid(&path.child("externalName"), cname, m)),
            );
        }
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.child("ports").index(i);
        errs.extend(port_errors(port, &p, ports.len() > 1, &mut names));
        let protocol = get_str(port, "protocol");
        let number = get_i64(port, "port").unwrap_or(0);
        if !seen.insert((protocol.to_string(), number)) {
            errs.push(FieldError::duplicate(
                &p,
                Rendered(go_service_port(protocol, number)),
            ));
        }
        if service_type == "ClusterIP" && get_i64(port, "nodePort").unwrap_or(0) != 0 {
            errs.push(FieldError::forbidden(
                &p.child("nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    errs.extend(label_errors(spec.get("selector"), &path.child("selector")));
    match get_str(spec, "sessionAffinity") {
        "" | "None" => {}
        "ClientIP" => {
            if let Some(timeout) = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_i64)
                && !(1..=86400).contains(&timeout)
            {
                errs.push(FieldError::invalid(
                    &path
                        .child("sessionAffinityConfig")
                        .child("clientIP")
                        .child("timeoutSeconds"),
                    timeout,
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }
    if let Some(old) = old {
        errs.extend(cluster_ip_update_errors(old, obj, &path));
    }
    for field in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        let policy = get_str(spec, field);
        if !policy.is_empty() && !matches!(policy, "Cluster" | "Local") {
            errs.push(FieldError::not_supported(
                &path.child(field),
                policy,
                &["Cluster", "Local"],
            ));
        }
    }
    causes(errs)
}

/// The cluster IPs of a Service, `clusterIP` first when `clusterIPs` does not have it (a
/// client that changed only `clusterIP`, as Kubernetes' strategy normalizes them).
fn cluster_ips(spec: &Value) -> Vec<String> {
    let mut ips: Vec<String> = get_list(spec, "clusterIPs")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let primary = get_str(spec, "clusterIP");
    if !primary.is_empty() {
        match ips.first_mut() {
            Some(first) => *first = primary.to_string(),
            None => ips.push(primary.to_string()),
        }
    }
    ips
}

/// `validateUpgradeDowngradeClusterIPs`: an allocated cluster IP stays; a client that
/// leaves it out gets it back (`services::carry_over`), one that changes it gets 422.
fn cluster_ip_update_errors(old: &Value, new: &Value, path: &FieldPath) -> Vec<FieldError> {
    let old_spec = old.get("spec").unwrap_or(&Value::Null);
    let new_spec = new.get("spec").unwrap_or(&Value::Null);
    if get_str(old_spec, "type") == "ExternalName" || get_str(new_spec, "type") == "ExternalName" {
        return Vec::new();
    }
    let (before, after) = (cluster_ips(old_spec), cluster_ips(new_spec));
    let mut errs = Vec::new();
    for (i, ip) in after.iter().enumerate() {
        if before.get(i).is_some_and(|b| b != ip) {
            errs.push(FieldError::invalid(
                &path.child("clusterIPs").index(i),
                after.as_slice(),
                "may not change once set",
            ));
        }
    }
    errs
}

fn port_errors(
    port: &Value,
    path: &FieldPath,
    require_name: bool,
    names: &mut BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(
            is_dns1123_label(name)
                .iter()
                .map(|m| FieldError::invalid(&path.child("name"), name, m)),
        );
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&path.child("name"), name));
        }
    }
    let number = get_i64(port, "port").unwrap_or(0);
    errs.extend(
        is_valid_port_num(number)
            .iter()
            .map(|m| FieldError::invalid(&path.child("port"), number, m)),
    );
    match get_str(port, "protocol") {
        "" => errs.push(FieldError::required(&path.child("protocol"), "")),
        p if !PROTOCOLS.contains(&p) => errs.push(FieldError::not_supported(
            &path.child("protocol"),
            p,
            PROTOCOLS,
        )),
        _ => {}
    }
    errs.extend(port_num_or_name_errors(
        port.get("targetPort"),
        &path.child("targetPort"),
    ));
    errs
}

/// Go's `%#v` of the `core.ServicePort{Protocol, Port}` key Kubernetes reports as duplicate.
fn go_service_port(protocol: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        go_quote(protocol)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};

    fn service(spec: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        default_service(&mut s);
        s
    }

    #[test]
    fn services_get_kubernetes_defaults() {
        let s = service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}, {"name": "x", "port": 81, "targetPort": "http"}]}),
        );
        assert_eq!(
            s["spec"],
            json!({
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}, {"name": "x", "port": 81, "protocol": "TCP", "targetPort": "http"}],
                "sessionAffinity": "None", "type": "ClusterIP", "internalTrafficPolicy": "Cluster"
            })
        );
        let lb = service(
            json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
        );
        assert_eq!(lb["spec"]["externalTrafficPolicy"], json!("Cluster"));
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], json!(true));
        assert_eq!(
            lb["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
    }

    #[test]
    fn a_valid_service_passes() {
        let s = service(
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}),
        );
        assert_eq!(validate_service(&s, None), vec![]);
    }

    #[test]
    fn ports_are_required_unless_headless_or_external_name() {
        assert_eq!(
            summary(&validate_service(&service(json!({})), None)),
            vec!["spec.ports: Required value"]
        );
        assert_eq!(
            validate_service(&service(json!({"clusterIP": "None"})), None),
            vec![]
        );
        let ext = service(json!({"type": "ExternalName", "externalName": "db.example.com."}));
        assert_eq!(validate_service(&ext, None), vec![]);
        let no_name = service(json!({"type": "ExternalName"}));
        assert_eq!(
            summary(&validate_service(&no_name, None)),
            vec!["spec.externalName: Required value"]
        );
    }

    #[test]
    fn ports_are_numbered_named_and_unique() {
        let s = service(json!({"ports": [
            {"port": 0},
            {"name": "web", "port": 80, "protocol": "HTTP", "targetPort": 70000},
            {"name": "web", "port": 80, "protocol": "TCP"},
            {"name": "other", "port": 80},
        ]}));
        assert_eq!(
            summary(&validate_service(&s, None)),
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[2].name: Duplicate value: \"web\"",
                "spec.ports[3]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ]
        );
    }

    #[test]
    fn an_allocated_cluster_ip_may_not_change() {
        let old = service(
            json!({"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "ports": [{"port": 80}]}),
        );
        let same = service(json!({"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}));
        assert_eq!(validate_service(&same, Some(&old)), vec![]);
        let moved = service(
            json!({"clusterIP": "10.43.0.6", "clusterIPs": ["10.43.0.5"], "ports": [{"port": 80}]}),
        );
        assert_eq!(
            summary(&validate_service(&moved, Some(&old))),
            vec![
                "spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.6\"}: may not change once set"
            ]
        );
        let external = service(json!({"type": "ExternalName", "externalName": "db.example.com"}));
        assert_eq!(validate_service(&external, Some(&old)), vec![]);
    }

    #[test]
    fn type_affinity_and_node_ports_are_checked() {
        let s = service(
            json!({"type": "Internal", "sessionAffinity": "Sticky", "ports": [{"port": 80}]}),
        );
        assert_eq!(
            fields(&validate_service(&s, None)),
            vec!["spec.type", "spec.sessionAffinity"]
        );
        let s = service(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            summary(&validate_service(&s, None)),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let s = service(json!({"selector": {"app": "bad value"}, "ports": [{"port": 80}]}));
        assert_eq!(fields(&validate_service(&s, None)), vec!["spec.selector"]);
    }
}
