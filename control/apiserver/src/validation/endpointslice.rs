//! EndpointSlice (discovery.k8s.io/v1) validation and defaulting, as Kubernetes'
//! `pkg/apis/discovery/validation` and `SetDefaults_EndpointPort`.
//!
//! One deliberate difference: Kubernetes refuses loopback addresses as endpoints
//! (`ValidateNonSpecialIP`), but a wasmkube node without network privileges gives its pods
//! `127.N.x.y` addresses (see `agent/src/network.rs`), so loopback IPv4/IPv6 addresses are
//! accepted; unspecified, link-local and link-local multicast addresses are refused as there.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath};
use wasmkube_api::validate::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_label_value,
};

use super::metadata::label_errors;
use super::{Cause, causes, get_list, get_str, set_default};

/// Address types a new slice may have.
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// At most this many endpoints per slice (the API's limit; the controller writes 100).
const MAX_ENDPOINTS: usize = 1000;
/// At most this many ports per slice.
const MAX_PORTS: usize = 100;
const MAX_ADDRESSES: usize = 100;
const MAX_TOPOLOGY_LABELS: usize = 16;
const MAX_HINTS: usize = 8;

/// Port defaults: `name: ""`, `protocol: TCP`.
pub fn default_endpointslice(obj: &mut Value) {
    if let Some(Value::Array(ports)) = obj.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if p.get("name").is_none_or(Value::is_null) {
                p.insert("name".into(), json!(""));
            }
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Validates an EndpointSlice; on update `addressType` is immutable.
pub fn validate_endpointslice(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let address_type = get_str(obj, "addressType");
    let path = FieldPath::new("addressType");
    if address_type.is_empty() {
        errs.push(FieldError::required(&path, ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.push(FieldError::not_supported(
            &path,
            address_type,
            ADDRESS_TYPES,
        ));
    }
    errs.extend(endpoint_errors(
        get_list(obj, "endpoints"),
        address_type,
        &FieldPath::new("endpoints"),
    ));
    errs.extend(port_errors(
        get_list(obj, "ports"),
        &FieldPath::new("ports"),
    ));
    if let Some(old) = old {
        let before = get_str(old, "addressType");
        if before != address_type {
            errs.push(FieldError::invalid(
                &path,
                address_type,
                "field is immutable",
            ));
        }
    }
    causes(errs)
}

fn endpoint_errors(endpoints: &[Value], address_type: &str, path: &FieldPath) -> Vec<FieldError> {
    if endpoints.len() > MAX_ENDPOINTS {
        return vec![FieldError::too_many(path, endpoints.len(), MAX_ENDPOINTS)];
    }
    let mut errs = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let p = path.index(i);
        let addresses_path = p.child("addresses");
        let addresses = get_list(endpoint, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                &addresses_path,
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(FieldError::too_many(
                &addresses_path,
                addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        for (j, address) in addresses.iter().enumerate() {
            let address = address.as_str().unwrap_or_default();
            errs.extend(address_errors(
                address,
                address_type,
                &addresses_path.index(j),
            ));
        }
        let node_name = get_str(endpoint, "nodeName");
        if endpoint.get("nodeName").is_some_and(Value::is_string) {
            for msg in is_dns1123_subdomain(node_name) {
                errs.push(FieldError::invalid(&p.child("nodeName"), node_name, &msg));
            }
        }
        let topology = p.child("deprecatedTopology");
        let labels = endpoint.get("deprecatedTopology");
        let count = labels.and_then(Value::as_object).map_or(0, |m| m.len());
        if count > MAX_TOPOLOGY_LABELS {
            errs.push(FieldError::too_many(&topology, count, MAX_TOPOLOGY_LABELS));
        }
        errs.extend(label_errors(labels, &topology));
        if let Some(hostname) = endpoint.get("hostname").and_then(Value::as_str) {
            for msg in is_dns1123_label(hostname) {
                errs.push(FieldError::invalid(&p.child("hostname"), hostname, &msg));
            }
        }
        if let Some(hints) = endpoint.get("hints") {
            errs.extend(hint_errors(hints, &p.child("hints")));
        }
    }
    errs
}

/// `forZones` names are label values, `forNodes` names node names; at most 8 of each,
/// no duplicates.
fn hint_errors(hints: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (list, check) in [
        ("forZones", is_valid_label_value as fn(&str) -> Vec<String>),
        ("forNodes", is_dns1123_subdomain),
    ] {
        let items = get_list(hints, list);
        let p = path.child(list);
        if items.len() > MAX_HINTS {
            errs.push(FieldError::too_many(&p, items.len(), MAX_HINTS));
            continue;
        }
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let name = get_str(item, "name");
            let name_path = p.index(i).child("name");
            if !seen.insert(name) {
                errs.push(FieldError::duplicate(&name_path, name));
            }
            for msg in check(name) {
                errs.push(FieldError::invalid(&name_path, name, &msg));
            }
        }
    }
    errs
}

/// One address of a slice of `address_type` (unknown types are not checked further, as
/// Kubernetes does: the type itself was already refused).
fn address_errors(address: &str, address_type: &str, path: &FieldPath) -> Vec<FieldError> {
    match address_type {
        "IPv4" => match address.parse::<Ipv4Addr>() {
            Ok(ip) => special_ip_errors(IpAddr::V4(ip), address, path),
            Err(_) => vec![FieldError::invalid(
                path,
                address,
                "must be a valid IPv4 address",
            )],
        },
        "IPv6" => match address.parse::<Ipv6Addr>() {
            Ok(ip) => special_ip_errors(IpAddr::V6(ip), address, path),
            Err(_) => vec![FieldError::invalid(
                path,
                address,
                "must be a valid IPv6 address",
            )],
        },
        "FQDN" => fqdn_errors(address, path),
        _ => Vec::new(),
    }
}

/// `ValidateNonSpecialIP` without the loopback rule (see the module docs).
fn special_ip_errors(ip: IpAddr, address: &str, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if ip.is_unspecified() {
        errs.push(FieldError::invalid(
            path,
            address,
            &format!("may not be unspecified ({address})"),
        ));
    }
    let (link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => (v4.is_link_local(), v4.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0 == 0xfe80, s[0] & 0xff0f == 0xff02)
        }
    };
    if link_local {
        errs.push(FieldError::invalid(
            path,
            address,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            address,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// `IsFullyQualifiedDomainName`: a subdomain of at least two labels (a trailing dot is
/// allowed).
fn fqdn_errors(name: &str, path: &FieldPath) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let problems = is_dns1123_subdomain(name);
    if !problems.is_empty() {
        return vec![FieldError::invalid(path, name, &problems.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let problems = is_dns1123_label(label);
        if !problems.is_empty() {
            return vec![FieldError::invalid(path, label, &problems.join(","))];
        }
    }
    Vec::new()
}

fn port_errors(ports: &[Value], path: &FieldPath) -> Vec<FieldError> {
    if ports.len() > MAX_PORTS {
        return vec![FieldError::too_many(path, ports.len(), MAX_PORTS)];
    }
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = get_str(port, "name");
        if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(&p.child("name"), name, &msg));
            }
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
        match port.get("protocol").and_then(Value::as_str) {
            None => errs.push(FieldError::required(&p.child("protocol"), "")),
            Some(protocol) if !PROTOCOLS.contains(&protocol) => errs.push(
                FieldError::not_supported(&p.child("protocol"), protocol, PROTOCOLS),
            ),
            Some(_) => {}
        }
        if let Some(number) = port.get("port").and_then(Value::as_i64)
            && !(0..=65535).contains(&number)
        {
            // The Go type is an int32 Kubernetes does not range-check; a number that is no
            // port at all is refused here rather than stored.
            errs.push(FieldError::invalid(
                &p.child("port"),
                number,
                "must be between 0 and 65535, inclusive",
            ));
        }
        if let Some(app_protocol) = port.get("appProtocol").and_then(Value::as_str) {
            for msg in is_qualified_name(app_protocol) {
                errs.push(FieldError::invalid(
                    &p.child("appProtocol"),
                    app_protocol,
                    &msg,
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};

    fn slice(body: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web-abc", "namespace": "default"}});
        for (k, v) in body.as_object().unwrap() {
            s[k] = v.clone();
        }
        default_endpointslice(&mut s);
        s
    }

    #[test]
    fn a_slice_written_by_the_controller_is_valid_and_ports_get_defaults() {
        let s = slice(json!({
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.1.0.5"], "conditions": {"ready": true},
                           "nodeName": "node-1", "zone": "a",
                           "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
            "ports": [{"port": 8080}],
        }));
        assert_eq!(
            s["ports"],
            json!([{"port": 8080, "name": "", "protocol": "TCP"}])
        );
        assert_eq!(validate_endpointslice(&s, None), vec![]);
    }

    #[test]
    fn the_address_type_is_required_supported_and_immutable() {
        assert_eq!(
            summary(&validate_endpointslice(
                &slice(json!({"endpoints": []})),
                None
            )),
            vec!["addressType: Required value"]
        );
        assert_eq!(
            summary(&validate_endpointslice(
                &slice(json!({"addressType": "IP"})),
                None
            )),
            vec![
                "addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            ]
        );
        let old = slice(json!({"addressType": "IPv4"}));
        assert_eq!(
            summary(&validate_endpointslice(
                &slice(json!({"addressType": "IPv6"})),
                Some(&old)
            )),
            vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
    }

    #[test]
    fn addresses_match_the_address_type() {
        let s = slice(json!({"addressType": "IPv4", "endpoints": [
            {"addresses": []},
            {"addresses": ["10.0.0.1", "fd00::1", "0.0.0.0", "169.254.1.1", "224.0.0.5"]},
        ]}));
        assert_eq!(
            summary(&validate_endpointslice(&s, None)),
            vec![
                "endpoints[0].addresses: Required value: must contain at least 1 address",
                "endpoints[1].addresses[1]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
                "endpoints[1].addresses[2]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
                "endpoints[1].addresses[3]: Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
                "endpoints[1].addresses[4]: Invalid value: \"224.0.0.5\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
            ]
        );
        let v6 = slice(
            json!({"addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1", "10.0.0.1", "fe80::1"]}]}),
        );
        assert_eq!(
            fields(&validate_endpointslice(&v6, None)),
            vec!["endpoints[0].addresses[1]", "endpoints[0].addresses[2]"]
        );
        let fqdn = slice(
            json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com.", "localhost", "Bad_Name.com"]}]}),
        );
        assert_eq!(
            fields(&validate_endpointslice(&fqdn, None)),
            vec!["endpoints[0].addresses[1]", "endpoints[0].addresses[2]"]
        );
    }

    #[test]
    fn more_than_a_thousand_endpoints_or_a_hundred_ports_are_too_many() {
        let endpoints: Vec<Value> = (0..1001)
            .map(|i| json!({"addresses": [format!("10.1.{}.{}", i / 256, i % 256)]}))
            .collect();
        let s = slice(json!({"addressType": "IPv4", "endpoints": endpoints}));
        assert_eq!(
            summary(&validate_endpointslice(&s, None)),
            vec!["endpoints: Too many: 1001: must have at most 1000 items"]
        );
        let ports: Vec<Value> = (0..101)
            .map(|i| json!({"name": format!("p{i}"), "port": 1000 + i}))
            .collect();
        let s = slice(json!({"addressType": "IPv4", "ports": ports}));
        assert_eq!(
            summary(&validate_endpointslice(&s, None)),
            vec!["ports: Too many: 101: must have at most 100 items"]
        );
    }

    #[test]
    fn ports_are_uniquely_named_labels_with_known_protocols() {
        let s = slice(json!({"addressType": "IPv4", "ports": [
            {"name": "http", "port": 80},
            {"name": "http", "port": 81},
            {"name": "Web", "port": 82, "protocol": "HTTP"},
            {"port": 83, "appProtocol": "kubernetes.io/h2c"},
            {"port": 84},
        ]}));
        assert_eq!(
            fields(&validate_endpointslice(&s, None)),
            vec![
                "ports[1].name",
                "ports[2].name",
                "ports[2].protocol",
                "ports[4].name"
            ]
        );
    }

    #[test]
    fn node_names_hostnames_topology_and_hints_are_checked() {
        let s = slice(json!({"addressType": "IPv4", "endpoints": [{
            "addresses": ["10.0.0.1"], "nodeName": "Node_1", "hostname": "a.b",
            "deprecatedTopology": {"bad key!": "x"},
            "hints": {"forZones": [{"name": "a"}, {"name": "a"}]},
        }]}));
        assert_eq!(
            fields(&validate_endpointslice(&s, None)),
            vec![
                "endpoints[0].nodeName",
                "endpoints[0].deprecatedTopology",
                "endpoints[0].hostname",
                "endpoints[0].hints.forZones[1].name"
            ]
        );
    }
}
