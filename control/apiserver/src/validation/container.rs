//! Container validation: names, images, ports, env, volume mounts, pull and termination
//! message policies, probes and resource requirements, as Kubernetes'
//! `validateContainers` / `validateInitContainers` / `validateContainerCommon`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::quantity::Quantity;
use wasmkube_api::validate::{
    is_config_map_key, is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_qualified_name,
    is_valid_port_name, is_valid_port_num,
};

use super::metadata::nonnegative;
use super::{get_i64, get_list, get_str};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Validates `spec.containers` and `spec.initContainers` of a pod spec at `path`;
/// `volumes` are the names declared in `spec.volumes`.
pub(super) fn containers_errors(
    spec: &Value,
    path: &FieldPath,
    volumes: &BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = get_list(spec, "containers");
    let cpath = path.child("containers");
    if containers.is_empty() {
        errs.push(FieldError::required(&cpath, ""));
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = cpath.index(i);
        errs.extend(container_common_errors(c, &p, volumes));
        let name = get_str(c, "name");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
        errs.extend(probe_errors(c, &p));
        if c.get("restartPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers, &cpath));

    let ipath = path.child("initContainers");
    for (i, c) in get_list(spec, "initContainers").iter().enumerate() {
        let p = ipath.index(i);
        errs.extend(container_common_errors(c, &p, volumes));
        let restart_always = match c.get("restartPolicy").and_then(Value::as_str) {
            Some("Always") => true,
            Some(other) => {
                errs.push(FieldError::not_supported(
                    &p.child("restartPolicy"),
                    other,
                    &["Always"],
                ));
                false
            }
            None => false,
        };
        let name = get_str(c, "name");
        if names.contains(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        errs.extend(host_port_conflicts(std::slice::from_ref(c), &ipath));
        if restart_always {
            errs.extend(probe_errors(c, &p));
        } else {
            for field in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if c.get(field).is_some_and(|v| !v.is_null()) {
                    errs.push(FieldError::forbidden(
                        &p.child(field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}

fn container_common_errors(
    c: &Value,
    path: &FieldPath,
    volumes: &BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else {
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid(&path.child("name"), name, &msg));
        }
    }
    if get_str(c, "image").is_empty() {
        errs.push(FieldError::required(&path.child("image"), ""));
    }
    match get_str(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            &path.child("terminationMessagePolicy"),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            &path.child("terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(port_errors(get_list(c, "ports"), &path.child("ports")));
    errs.extend(env_errors(get_list(c, "env"), &path.child("env")));
    errs.extend(volume_mount_errors(
        get_list(c, "volumeMounts"),
        volumes,
        &path.child("volumeMounts"),
    ));
    match get_str(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldError::required(&path.child("imagePullPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            &path.child("imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    if let Some(resources) = c.get("resources") {
        errs.extend(resources_errors(resources, &path.child("resources")));
    }
    errs
}

fn port_errors(ports: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = get_str(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.iter()
                        .map(|m| FieldError::invalid(&p.child("name"), name, m)),
                );
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        match get_i64(port, "containerPort").unwrap_or(0) {
            0 => errs.push(FieldError::required(&p.child("containerPort"), "")),
            n => errs.extend(
                is_valid_port_num(n)
                    .iter()
                    .map(|m| FieldError::invalid(&p.child("containerPort"), n, m)),
            ),
        }
        match get_i64(port, "hostPort").unwrap_or(0) {
            0 => {}
            n => errs.extend(
                is_valid_port_num(n)
                    .iter()
                    .map(|m| FieldError::invalid(&p.child("hostPort"), n, m)),
            ),
        }
        match get_str(port, "protocol") {
            "" => errs.push(FieldError::required(&p.child("protocol"), "")),
            proto if !PROTOCOLS.contains(&proto) => {
                errs.push(FieldError::not_supported(
                    &p.child("protocol"),
                    proto,
                    PROTOCOLS,
                ));
            }
            _ => {}
        }
    }
    errs
}

/// Host ports must be unique per protocol and host IP across the containers given.
fn host_port_conflicts(containers: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in get_list(c, "ports").iter().enumerate() {
            let host_port = get_i64(port, "hostPort").unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{host_port}",
                get_str(port, "protocol"),
                get_str(port, "hostIP")
            );
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    &path.index(ci).child("ports").index(pi).child("hostPort"),
                    key,
                ));
            }
        }
    }
    errs
}

fn env_errors(env: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, var) in env.iter().enumerate() {
        let p = path.index(i);
        let name = get_str(var, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            errs.extend(
                is_env_var_name(name)
                    .iter()
                    .map(|m| FieldError::invalid(&p.child("name"), name, m)),
            );
        }
        let Some(from) = var.get("valueFrom").filter(|v| v.is_object()) else {
            continue;
        };
        let fpath = p.child("valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .into_iter()
        .filter(|k| from.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
        for source in &sources {
            if matches!(*source, "configMapKeyRef" | "secretKeyRef") {
                errs.extend(key_selector_errors(&from[*source], &fpath.child(source)));
            }
            if *source == "fieldRef" && get_str(&from["fieldRef"], "fieldPath").is_empty() {
                errs.push(FieldError::required(
                    &fpath.child("fieldRef").child("fieldPath"),
                    "",
                ));
            }
        }
        if sources.is_empty() {
            errs.push(FieldError::invalid(
                &fpath,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !get_str(var, "value").is_empty() {
            errs.push(FieldError::invalid(
                &fpath,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources.len() > 1 {
            errs.push(FieldError::invalid(
                &fpath,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn key_selector_errors(selector: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(selector, "name");
    errs.extend(
        is_dns1123_subdomain(name)
            .iter()
            .map(|m| FieldError::invalid(&path.child("name"), name, m)),
    );
    let key = get_str(selector, "key");
    if key.is_empty() {
        errs.push(FieldError::required(&path.child("key"), ""));
    } else {
        errs.extend(
            is_config_map_key(key)
                .iter()
                .map(|m| FieldError::invalid(&path.child("key"), key, m)),
        );
    }
    errs
}

fn volume_mount_errors(
    mounts: &[Value],
    volumes: &BTreeSet<String>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut mount_points: BTreeSet<&str> = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = path.index(i);
        let name = get_str(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if !volumes.contains(name) {
            errs.push(FieldError::not_found(&p.child("name"), name));
        }
        let mount_path = get_str(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(&p.child("mountPath"), ""));
        }
        if !mount_points.insert(mount_path) {
            errs.push(FieldError::invalid(
                &p.child("mountPath"),
                mount_path,
                "must be unique",
            ));
        }
        let sub_path = get_str(m, "subPath");
        if sub_path.starts_with('/') {
            errs.push(FieldError::invalid(
                &p.child("subPath"),
                sub_path,
                "must be a relative path",
            ));
        } else if sub_path.split('/').any(|part| part == "..") {
            errs.push(FieldError::invalid(
                &p.child("subPath"),
                sub_path,
                "must not contain '..'",
            ));
        }
    }
    errs
}

fn probe_errors(c: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = c.get(field).filter(|v| v.is_object()) else {
            continue;
        };
        let p = path.child(field);
        errs.extend(handler_errors(probe, &p));
        for n in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            if let Some(v) = get_i64(probe, n) {
                errs.extend(nonnegative(v, &p.child(n)));
            }
        }
        if let Some(grace) = get_i64(probe, "terminationGracePeriodSeconds") {
            if field == "readinessProbe" {
                errs.push(FieldError::invalid(
                    &p.child("terminationGracePeriodSeconds"),
                    grace,
                    "must not be set for readinessProbes",
                ));
            } else if grace <= 0 {
                errs.push(FieldError::invalid(
                    &p.child("terminationGracePeriodSeconds"),
                    grace,
                    "must be greater than 0",
                ));
            }
        }
        let success = get_i64(probe, "successThreshold").unwrap_or(1);
        if field != "readinessProbe" && success != 1 {
            errs.push(FieldError::invalid(
                &p.child("successThreshold"),
                success,
                "must be 1",
            ));
        }
    }
    if let Some(lifecycle) = c.get("lifecycle").filter(|v| v.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get(hook).filter(|v| v.is_object()) {
                errs.extend(handler_errors(h, &path.child("lifecycle").child(hook)));
            }
        }
    }
    errs
}

/// Exactly one of exec, httpGet, tcpSocket, grpc, sleep, each well formed.
fn handler_errors(handler: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    for kind in ["exec", "httpGet", "tcpSocket", "grpc", "sleep"] {
        let Some(h) = handler.get(kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let p = path.child(kind);
        if count > 0 {
            errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match kind {
            "exec" if get_list(h, "command").is_empty() => {
                errs.push(FieldError::required(&p.child("command"), ""));
            }
            "httpGet" => {
                if get_str(h, "path").is_empty() {
                    errs.push(FieldError::required(&p.child("path"), ""));
                }
                errs.extend(port_num_or_name_errors(h.get("port"), &p.child("port")));
                let scheme = get_str(h, "scheme");
                if !matches!(scheme, "HTTP" | "HTTPS") {
                    errs.push(FieldError::not_supported(
                        &p.child("scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
            }
            "tcpSocket" | "grpc" => {
                errs.extend(port_num_or_name_errors(h.get("port"), &p.child("port")))
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    errs
}

/// `ValidatePortNumOrName` of an int-or-string port.
pub(super) fn port_num_or_name_errors(port: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    match port {
        Some(Value::String(name)) => is_valid_port_name(name)
            .iter()
            .map(|m| FieldError::invalid(path, name, m))
            .collect(),
        Some(v) => {
            let n = v.as_i64().unwrap_or(0);
            is_valid_port_num(n)
                .iter()
                .map(|m| FieldError::invalid(path, n, m))
                .collect()
        }
        None => is_valid_port_num(0)
            .iter()
            .map(|m| FieldError::invalid(path, 0i64, m))
            .collect(),
    }
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// Extended resources (`example.com/gpu`) and hugepages cannot be overcommitted, and
/// extended resources are whole numbers.
fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

fn overcommit_allowed(name: &str) -> bool {
    !name.starts_with("hugepages-") && !is_extended_resource(name)
}

/// Validates `resources.limits` / `resources.requests` (names, quantities, and requests
/// not above limits).
pub(super) fn resources_errors(resources: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let limits = quantities(resources.get("limits"), &lim_path, &mut errs);
    let requests = quantities(resources.get("requests"), &req_path, &mut errs);
    for (name, request) in &requests {
        match limits.get(name) {
            Some(limit) if !overcommit_allowed(name) && request != limit => {
                errs.push(FieldError::invalid(
                    &req_path,
                    request.to_string(),
                    &format!("must be equal to {name} limit of {limit}"),
                ))
            }
            Some(limit) if request > limit => errs.push(FieldError::invalid(
                &req_path,
                request.to_string(),
                &format!("must be less than or equal to {name} limit of {limit}"),
            )),
            Some(_) => {}
            None if !overcommit_allowed(name) => errs.push(FieldError::required(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
    errs
}

/// Parses one resource list, reporting bad names and quantities at `path[name]`.
fn quantities(
    list: Option<&Value>,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    let Some(map) = list.and_then(Value::as_object) else {
        return out;
    };
    for (name, raw) in map {
        let p = path.key(name);
        errs.extend(
            is_qualified_name(name)
                .iter()
                .map(|m| FieldError::invalid(&p, name, m)),
        );
        if !name.contains('/') && !is_standard_container_resource(name) {
            errs.push(FieldError::invalid(
                &p,
                name,
                "must be a standard resource for containers",
            ));
        }
        match Quantity::from_json(raw) {
            Err(e) => errs.push(FieldError::invalid(
                &p,
                Rendered(super::compact(raw)),
                &e.to_string(),
            )),
            Ok(q) => {
                if q.is_negative() {
                    errs.push(FieldError::invalid(
                        &p,
                        q.to_string(),
                        "must be greater than or equal to 0",
                    ));
                }
                if is_extended_resource(name) && q.milli_value() % 1000 != 0 {
                    errs.push(FieldError::invalid(&p, q.to_string(), "must be an integer"));
                }
                out.insert(name.clone(), q);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: Value) -> Vec<String> {
        let volumes: BTreeSet<String> = get_list(&spec, "volumes")
            .iter()
            .map(|v| get_str(v, "name").to_string())
            .collect();
        containers_errors(&spec, &FieldPath::new("spec"), &volumes)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn ctr(extra: Value) -> Value {
        let mut c = json!({"name": "app", "image": "reg/app:1", "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File"});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    #[test]
    fn a_well_formed_container_passes() {
        let spec = json!({
            "volumes": [{"name": "data"}],
            "containers": [ctr(json!({
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "500m", "memory": 1000}},
                "livenessProbe": {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "successThreshold": 1}
            }))]
        });
        assert_eq!(errors(spec), Vec::<String>::new());
    }

    #[test]
    fn containers_are_required() {
        assert_eq!(errors(json!({})), vec!["spec.containers: Required value"]);
        assert_eq!(
            errors(json!({"containers": []})),
            vec!["spec.containers: Required value"]
        );
    }

    #[test]
    fn container_names_are_dns_labels_unique_across_init_containers() {
        let spec = json!({"containers": [ctr(json!({"name": "Web"})), ctr(json!({})), ctr(json!({}))],
                          "initContainers": [ctr(json!({}))]});
        let e = errors(spec);
        assert!(e[0].starts_with(
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
        ));
        assert_eq!(e[1], "spec.containers[2].name: Duplicate value: \"app\"");
        assert_eq!(
            e[2],
            "spec.initContainers[0].name: Duplicate value: \"app\""
        );
        assert_eq!(
            errors(json!({"containers": [ctr(json!({"name": ""}))]})),
            vec!["spec.containers[0].name: Required value"]
        );
    }

    #[test]
    fn image_and_policies_are_required_and_enumerated() {
        let spec = json!({"containers": [{"name": "a", "imagePullPolicy": "Sometimes", "terminationMessagePolicy": "Never"}]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].image: Required value",
                "spec.containers[0].terminationMessagePolicy: Unsupported value: \"Never\": supported values: \"File\", \"FallbackToLogsOnError\"",
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            ]
        );
    }

    #[test]
    fn ports_need_a_valid_number_protocol_and_unique_name() {
        let spec = json!({"containers": [ctr(json!({"ports": [
            {"containerPort": 0, "protocol": "TCP"},
            {"containerPort": 70000, "protocol": "HTTP"},
            {"name": "web", "containerPort": 80, "protocol": "TCP", "hostPort": 8080},
            {"name": "web", "containerPort": 81, "protocol": "TCP", "hostPort": 8080},
        ]}))]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].ports[0].containerPort: Required value",
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[3].name: Duplicate value: \"web\"",
                "spec.containers[0].ports[3].hostPort: Duplicate value: \"TCP//8080\"",
            ]
        );
    }

    #[test]
    fn env_names_and_sources_are_checked() {
        let spec = json!({"containers": [ctr(json!({"env": [
            {"name": ""},
            {"name": "A=B"},
            {"name": "C", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "D", "valueFrom": {}},
            {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "cm"}}},
        ]}))]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].env[0].name: Required value",
                "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
                "spec.containers[0].env[3].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                "spec.containers[0].env[4].valueFrom.configMapKeyRef.key: Required value",
            ]
        );
    }

    #[test]
    fn volume_mounts_must_reference_declared_volumes_once() {
        let spec = json!({"volumes": [{"name": "data"}], "containers": [ctr(json!({"volumeMounts": [
            {"name": "data", "mountPath": "/d"},
            {"name": "cache", "mountPath": "/d"},
            {"name": "data", "mountPath": "/e", "subPath": "../x"},
        ]}))]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].volumeMounts[1].name: Not found: \"cache\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique",
                "spec.containers[0].volumeMounts[2].subPath: Invalid value: \"../x\": must not contain '..'",
            ]
        );
    }

    #[test]
    fn resources_parse_and_requests_stay_within_limits() {
        let spec = json!({"containers": [ctr(json!({"resources": {
            "limits": {"cpu": "1", "memory": "bogus", "gpu": "1"},
            "requests": {"cpu": "2", "memory": "-1"}
        }}))]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
                "spec.containers[0].resources.limits[memory]: Invalid value: \"bogus\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            ]
        );
    }

    #[test]
    fn extended_resources_must_be_whole_and_equal_to_limits() {
        let spec = json!({"containers": [ctr(json!({"resources": {
            "limits": {"example.com/gpu": "1"},
            "requests": {"example.com/gpu": "500m", "example.com/fpga": "1"}
        }}))]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].resources.requests[example.com/gpu]: Invalid value: \"500m\": must be an integer",
                "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
                "spec.containers[0].resources.requests: Invalid value: \"500m\": must be equal to example.com/gpu limit of 1",
            ]
        );
    }

    #[test]
    fn probes_need_one_well_formed_handler() {
        let spec = json!({"containers": [ctr(json!({
            "livenessProbe": {"successThreshold": 2},
            "readinessProbe": {"exec": {"command": []}, "tcpSocket": {"port": 80}, "periodSeconds": -1},
            "startupProbe": {"httpGet": {"path": "", "port": "Http", "scheme": "FTP"}},
        }))]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].livenessProbe: Required value: must specify a handler type",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].readinessProbe.exec.command: Required value",
                "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.containers[0].startupProbe.httpGet.path: Required value",
                "spec.containers[0].startupProbe.httpGet.port: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].startupProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
            ]
        );
    }

    #[test]
    fn init_containers_restrict_restart_policy_and_probes() {
        let spec = json!({"containers": [ctr(json!({"restartPolicy": "Always"}))], "initContainers": [
            ctr(json!({"name": "init", "restartPolicy": "Never", "livenessProbe": {"exec": {"command": ["true"]}}})),
            ctr(json!({"name": "sidecar", "restartPolicy": "Always", "livenessProbe": {"exec": {"command": ["true"]}}})),
        ]});
        assert_eq!(
            errors(spec),
            vec![
                "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
                "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
            ]
        );
    }
}
