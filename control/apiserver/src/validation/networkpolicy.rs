//! NetworkPolicy (networking.k8s.io/v1) validation and defaulting, as Kubernetes'
//! `pkg/apis/networking/validation` (`ValidateNetworkPolicySpec`) and
//! `SetDefaults_NetworkPolicy` / `SetDefaults_NetworkPolicyPort`.
//!
//! Ports are 1-65535 or an IANA port name; `endPort` only with a numeric `port` and not
//! below it; protocols TCP, UDP, SCTP; a peer names at least one of podSelector,
//! namespaceSelector and ipBlock, and an ipBlock no other; an ipBlock's `cidr` is a CIDR
//! and each `except` a strict subset of it; policyTypes are Ingress or Egress, at most two.

use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath};
use wasmkube_api::validate::{is_valid_port_name, is_valid_port_num};

use super::metadata::label_selector_errors;
use super::{Cause, causes, get_list, get_str};

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];
/// Kubernetes' message for a string that is not a CIDR (`IsValidCIDRForLegacyField`).
const NOT_A_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// `policyTypes` default to `[Ingress]`, plus `Egress` when there are egress rules; a
/// port's protocol defaults to TCP.
pub fn default_network_policy(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for direction in ["ingress", "egress"] {
        let Some(Value::Array(rules)) = spec.get_mut(direction) else {
            continue;
        };
        for rule in rules.iter_mut() {
            let Some(Value::Array(ports)) = rule.get_mut("ports") else {
                continue;
            };
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                // Only an absent protocol: an explicit "" is refused by validation.
                if port.get("protocol").is_none_or(Value::is_null) {
                    port.insert("protocol".into(), json!("TCP"));
                }
            }
        }
    }
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

/// Validates a NetworkPolicy's spec (the same on create and update).
pub fn validate_network_policy(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let path = FieldPath::new("spec");
    let mut errs = Vec::new();
    if let Some(selector) = spec.get("podSelector").filter(|s| !s.is_null()) {
        errs.extend(label_selector_errors(selector, &path.child("podSelector")));
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in get_list(spec, direction).iter().enumerate() {
            let rule_path = path.child(direction).index(i);
            for (j, port) in get_list(rule, "ports").iter().enumerate() {
                errs.extend(port_errors(port, &rule_path.child("ports").index(j)));
            }
            for (j, peer) in get_list(rule, peers).iter().enumerate() {
                errs.extend(peer_errors(peer, &rule_path.child(peers).index(j)));
            }
        }
    }
    let types = get_list(spec, "policyTypes");
    let types_path = path.child("policyTypes");
    if types.len() > POLICY_TYPES.len() {
        let listed: Vec<String> = types
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_string())
            .collect();
        errs.push(FieldError::invalid(
            &types_path,
            listed.as_slice(),
            "may not specify more than two policyTypes",
        ));
        return causes(errs);
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or_default();
        if !POLICY_TYPES.contains(&t) {
            errs.push(FieldError::not_supported(
                &types_path.index(i),
                t,
                POLICY_TYPES,
            ));
        }
    }
    causes(errs)
}

/// `ValidateNetworkPolicyPort`.
fn port_errors(port: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(protocol) = port.get("protocol").filter(|p| !p.is_null()) {
        let protocol = protocol.as_str().unwrap_or_default();
        if !PROTOCOLS.contains(&protocol) {
            errs.push(FieldError::not_supported(
                &path.child("protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
    }
    let end_port = port.get("endPort").and_then(Value::as_i64);
    let end_path = path.child("endPort");
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                errs.push(FieldError::invalid(
                    &end_path,
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for msg in is_valid_port_name(name) {
                errs.push(FieldError::invalid(
                    &path.child("port"),
                    name.as_str(),
                    &msg,
                ));
            }
        }
        Some(number) => {
            let number = number.as_i64().unwrap_or_default();
            for msg in is_valid_port_num(number) {
                errs.push(FieldError::invalid(&path.child("port"), number, &msg));
            }
            if let Some(end) = end_port {
                if end < number {
                    // Kubernetes shows the port here, not the endPort.
                    errs.push(FieldError::invalid(
                        &end_path,
                        number,
                        "must be greater than or equal to `port`",
                    ));
                }
                for msg in is_valid_port_num(end) {
                    errs.push(FieldError::invalid(&end_path, end, &msg));
                }
            }
        }
        None => {
            if let Some(end) = end_port {
                errs.push(FieldError::invalid(
                    &end_path,
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
    errs
}

/// `ValidateNetworkPolicyPeer`.
fn peer_errors(peer: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut peers = 0;
    for selector in ["podSelector", "namespaceSelector"] {
        if let Some(s) = peer.get(selector).filter(|s| !s.is_null()) {
            peers += 1;
            errs.extend(label_selector_errors(s, &path.child(selector)));
        }
    }
    let ip_block = peer.get("ipBlock").filter(|b| !b.is_null());
    if let Some(block) = ip_block {
        peers += 1;
        errs.extend(ip_block_errors(block, &path.child("ipBlock")));
    }
    if peers == 0 {
        errs.push(FieldError::required(path, "must specify a peer"));
    } else if peers > 1 && ip_block.is_some() {
        errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
    errs
}

/// `ValidateIPBlock`: a CIDR, and excepts that are strict subsets of it.
fn ip_block_errors(block: &Value, path: &FieldPath) -> Vec<FieldError> {
    let cidr = get_str(block, "cidr");
    let cidr_path = path.child("cidr");
    if cidr.is_empty() {
        return vec![FieldError::required(&cidr_path, "")];
    }
    let Ok(net) = cidr.parse::<ipnet::IpNet>() else {
        return vec![FieldError::invalid(&cidr_path, cidr, NOT_A_CIDR)];
    };
    let mut errs = Vec::new();
    for (i, except) in get_list(block, "except").iter().enumerate() {
        let except = except.as_str().unwrap_or_default();
        let except_path = path.child("except").index(i);
        match except.parse::<ipnet::IpNet>() {
            Err(_) => errs.push(FieldError::invalid(&except_path, except, NOT_A_CIDR)),
            Ok(inner) => {
                if !net.contains(&inner.network()) || net.prefix_len() >= inner.prefix_len() {
                    errs.push(FieldError::invalid(
                        &except_path,
                        except,
                        "must be a strict subset of `cidr`",
                    ));
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};

    fn policy(spec: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": spec,
        })
    }

    fn check(spec: Value) -> Vec<Cause> {
        let mut obj = policy(spec);
        default_network_policy(&mut obj);
        validate_network_policy(&obj, None)
    }

    #[test]
    fn policy_types_default_to_ingress_and_egress_when_egress_rules_exist() {
        let mut obj = policy(json!({"podSelector": {}}));
        default_network_policy(&mut obj);
        assert_eq!(obj["spec"]["policyTypes"], json!(["Ingress"]));
        let mut obj = policy(json!({"podSelector": {}, "egress": [{}]}));
        default_network_policy(&mut obj);
        assert_eq!(obj["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let mut obj = policy(json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        default_network_policy(&mut obj);
        assert_eq!(obj["spec"]["policyTypes"], json!(["Egress"]));
    }

    #[test]
    fn a_port_without_protocol_is_tcp() {
        let mut obj = policy(json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80}, {"port": 53, "protocol": "UDP"}
        ]}]}));
        default_network_policy(&mut obj);
        let ports = &obj["spec"]["ingress"][0]["ports"];
        assert_eq!(ports[0]["protocol"], "TCP");
        assert_eq!(ports[1]["protocol"], "UDP");
    }

    #[test]
    fn a_complete_policy_is_valid() {
        let spec = json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"role": "client"}}},
                    {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                     "podSelector": {}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
                ],
                "ports": [{"port": 8080}, {"port": "http"}, {"port": 30000, "endPort": 32767},
                          {"protocol": "SCTP"}]
            }],
            "egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/32"}}], "ports": [{"port": 53, "protocol": "UDP"}]}],
            "policyTypes": ["Ingress", "Egress"]
        });
        assert_eq!(check(spec), vec![]);
    }

    #[test]
    fn bad_ports_are_refused_naming_the_field() {
        let cases = [
            (
                json!({"port": 0}),
                "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            (
                json!({"port": 70000}),
                "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (
                json!({"port": 80, "endPort": 79}),
                "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
            ),
            (
                json!({"port": 80, "endPort": 65536}),
                "spec.ingress[0].ports[0].endPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
            ),
            (
                json!({"port": "http", "endPort": 90}),
                "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
            ),
            (
                json!({"endPort": 90}),
                "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is not specified",
            ),
            (
                json!({"port": 80, "protocol": "ICMP"}),
                "spec.ingress[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
            ),
        ];
        for (port, expected) in cases {
            let c = check(json!({"podSelector": {}, "ingress": [{"ports": [port]}]}));
            assert_eq!(summary(&c), vec![expected.to_string()], "{port}");
        }
        let c = check(json!({"podSelector": {}, "egress": [{"ports": [{"port": "Not_A_Name"}]}]}));
        assert_eq!(fields(&c), vec!["spec.egress[0].ports[0].port"]);
    }

    #[test]
    fn peers_need_one_kind_and_an_ip_block_stands_alone() {
        let c = check(json!({"podSelector": {}, "ingress": [{"from": [{}]}]}));
        assert_eq!(
            summary(&c),
            vec!["spec.ingress[0].from[0]: Required value: must specify a peer"]
        );
        let c = check(json!({"podSelector": {}, "egress": [{"to": [
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}
        ]}]}));
        assert_eq!(
            summary(&c),
            vec!["spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer"]
        );
    }

    #[test]
    fn ip_blocks_need_a_cidr_and_excepts_strictly_inside_it() {
        let block = |b: Value| json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": b}]}]});
        assert_eq!(
            summary(&check(block(json!({"cidr": ""})))),
            vec!["spec.ingress[0].from[0].ipBlock.cidr: Required value"]
        );
        assert_eq!(
            summary(&check(block(json!({"cidr": "10.0.0.0/33"})))),
            vec![format!(
                "spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": {NOT_A_CIDR}"
            )]
        );
        let c = check(block(json!({"cidr": "10.0.0.0/16", "except": [
            "10.0.1.0/24", "10.1.0.0/24", "10.0.0.0/16", "10.0.0.0/8", "nonsense"
        ]})));
        assert_eq!(
            fields(&c),
            vec![
                "spec.ingress[0].from[0].ipBlock.except[1]",
                "spec.ingress[0].from[0].ipBlock.except[2]",
                "spec.ingress[0].from[0].ipBlock.except[3]",
                "spec.ingress[0].from[0].ipBlock.except[4]",
            ]
        );
        assert!(c[0].message.contains("must be a strict subset of `cidr`"));
        // A CIDR with host bits is accepted, as Go's ParseCIDR.
        assert_eq!(check(block(json!({"cidr": "10.0.0.7/16"}))), vec![]);
    }

    #[test]
    fn policy_types_are_ingress_or_egress_at_most_two() {
        let c = check(json!({"podSelector": {}, "policyTypes": ["Inbound"]}));
        assert_eq!(
            summary(&c),
            vec![
                "spec.policyTypes[0]: Unsupported value: \"Inbound\": supported values: \"Ingress\", \"Egress\""
            ]
        );
        let c = check(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}));
        assert_eq!(fields(&c), vec!["spec.policyTypes"]);
        assert!(
            c[0].message
                .contains("may not specify more than two policyTypes")
        );
    }

    #[test]
    fn selectors_are_validated_where_they_appear() {
        let c = check(json!({
            "podSelector": {"matchLabels": {"bad key!": "x"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "In", "values": []}
            ]}}]}]
        }));
        assert_eq!(
            fields(&c),
            vec![
                "spec.podSelector.matchLabels",
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values"
            ]
        );
    }
}
