//! Row cells for every kind but pods, ported from Kubernetes' printers. The server always
//! prints "wide" (all columns); kubectl hides priority-1 columns unless `-o wide`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::columns::Printer;
use super::duration::{human_duration, parse_time, since};
use super::format::{
    arr_at, arr_len, at, format_label_selector, format_labels, int_at, int_or, layout_containers,
    map_len, obj_at, selector_string, str_at,
};

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

fn age(obj: &Value, now: Timestamp) -> Value {
    json!(since(
        now,
        parse_time(at(obj, &["metadata", "creationTimestamp"]))
    ))
}

fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

fn deleting(obj: &Value) -> bool {
    at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null())
}

/// CONTAINERS, IMAGES and SELECTOR of a workload with a pod template.
fn template_cells(obj: &Value, selector: String) -> [Value; 3] {
    let (names, images) = layout_containers(at(obj, &["spec", "template", "spec"]));
    [json!(names), json!(images), json!(selector)]
}

/// The cells of one object (not a pod) for `printer`.
pub(crate) fn cells(printer: Printer, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer {
        Printer::Pod => super::pod::pod_row(obj, now).0,
        Printer::Node => node(obj, now),
        Printer::Namespace => vec![
            name(obj),
            json!(str_at(obj, &["status", "phase"])),
            age(obj, now),
        ],
        Printer::Deployment => deployment(obj, now),
        Printer::ReplicaSet => {
            let mut cells = vec![
                name(obj),
                json!(int_or(obj, &["spec", "replicas"], 1)),
                json!(int_at(obj, &["status", "replicas"])),
                json!(int_at(obj, &["status", "readyReplicas"])),
                age(obj, now),
            ];
            let selector = format_label_selector(at(obj, &["spec", "selector"]));
            cells.extend(template_cells(obj, selector));
            cells
        }
        Printer::DaemonSet => {
            let status = |field| json!(int_at(obj, &["status", field]));
            let mut cells = vec![
                name(obj),
                status("desiredNumberScheduled"),
                status("currentNumberScheduled"),
                status("numberReady"),
                status("updatedNumberScheduled"),
                status("numberAvailable"),
                json!(format_labels(obj_at(
                    obj,
                    &["spec", "template", "spec", "nodeSelector"]
                ))),
                age(obj, now),
            ];
            let selector = format_label_selector(at(obj, &["spec", "selector"]));
            cells.extend(template_cells(obj, selector));
            cells
        }
        Printer::Job => job(obj, now),
        Printer::Service => service(obj, now),
        Printer::Endpoints => vec![name(obj), json!(format_endpoints(obj)), age(obj, now)],
        Printer::EndpointSlice => vec![
            name(obj),
            json!(str_at(obj, &["addressType"])),
            json!(format_discovery_ports(obj)),
            json!(format_discovery_endpoints(obj)),
            age(obj, now),
        ],
        Printer::NetworkPolicy => vec![
            name(obj),
            json!(format_label_selector(at(obj, &["spec", "podSelector"]))),
            age(obj, now),
        ],
        Printer::Event => event(obj, now),
        Printer::ConfigMap => vec![
            name(obj),
            json!(map_len(obj, &["data"]) + map_len(obj, &["binaryData"])),
            age(obj, now),
        ],
        Printer::Secret => vec![
            name(obj),
            json!(str_at(obj, &["type"])),
            json!(map_len(obj, &["data"])),
            age(obj, now),
        ],
        Printer::ServiceAccount => {
            vec![name(obj), json!(arr_len(obj, &["secrets"])), age(obj, now)]
        }
        Printer::Lease => vec![
            name(obj),
            json!(str_at(obj, &["spec", "holderIdentity"])),
            age(obj, now),
        ],
        Printer::RuntimeClass => vec![name(obj), json!(str_at(obj, &["handler"])), age(obj, now)],
        Printer::Role => vec![
            name(obj),
            json!(str_at(obj, &["metadata", "creationTimestamp"])),
        ],
        Printer::ResourceQuota => resource_quota(obj, now),
        Printer::LimitRange => vec![
            name(obj),
            json!(str_at(obj, &["metadata", "creationTimestamp"])),
        ],
        Printer::RoleBinding | Printer::ClusterRoleBinding => binding(obj, now),
        Printer::CertificateSigningRequest => super::csr::cells(obj, now),
        Printer::KnativeService => {
            let mut cells = vec![
                name(obj),
                json!(str_at(obj, &["status", "url"])),
                json!(str_at(obj, &["status", "latestCreatedRevisionName"])),
                json!(str_at(obj, &["status", "latestReadyRevisionName"])),
            ];
            cells.extend(ready_and_reason(obj));
            cells
        }
        Printer::KnativeConfiguration => {
            let mut cells = vec![
                name(obj),
                json!(str_at(obj, &["status", "latestCreatedRevisionName"])),
                json!(str_at(obj, &["status", "latestReadyRevisionName"])),
            ];
            cells.extend(ready_and_reason(obj));
            cells
        }
        Printer::KnativeRevision => {
            let label = |key: &str| json!(str_at(obj, &["metadata", "labels", key]));
            let mut cells = vec![
                name(obj),
                label("serving.knative.dev/configuration"),
                label("serving.knative.dev/configurationGeneration"),
            ];
            cells.extend(ready_and_reason(obj));
            let replicas = |field| match at(obj, &["status", field]).and_then(Value::as_i64) {
                Some(n) => json!(n),
                None => Value::Null,
            };
            cells.push(replicas("actualReplicas"));
            cells.push(replicas("desiredReplicas"));
            cells
        }
        Printer::KnativeRoute => {
            let mut cells = vec![name(obj), json!(str_at(obj, &["status", "url"]))];
            cells.extend(ready_and_reason(obj));
            cells
        }
        Printer::Default => vec![name(obj), age(obj, now)],
    }
}

/// READY and REASON of a Knative object: its `Ready` condition's status and reason.
fn ready_and_reason(obj: &Value) -> [Value; 2] {
    let ready = at(obj, &["status", "conditions"])
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    let field = |key| {
        json!(
            ready
                .and_then(|c| c.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
        )
    };
    [field("status"), field("reason")]
}

/// NAME, AGE, REQUEST (`pods: 1/2, requests.cpu: 0/1`), LIMIT (the `limits.*` resources),
/// from the status, as `printResourceQuota`.
fn resource_quota(obj: &Value, now: Timestamp) -> Vec<Value> {
    let hard = wasmkube_api::quota::from_json(at(obj, &["status", "hard"]));
    let used = wasmkube_api::quota::from_json(at(obj, &["status", "used"]));
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for (resource, h) in &hard {
        let u = used
            .get(resource)
            .map_or("0".to_string(), ToString::to_string);
        let cell = format!("{resource}: {u}/{h}");
        if resource.starts_with("limits.") {
            limit.push(cell);
        } else {
            request.push(cell);
        }
    }
    vec![
        name(obj),
        age(obj, now),
        json!(request.join(", ")),
        json!(limit.join(", ")),
    ]
}

/// NAME, ROLE (`Kind/name`), AGE, USERS, GROUPS, SERVICEACCOUNTS (`namespace/name`).
fn binding(obj: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(obj, &["roleRef", "kind"]),
        str_at(obj, &["roleRef", "name"])
    );
    let (mut users, mut groups, mut accounts) = (Vec::new(), Vec::new(), Vec::new());
    for subject in arr_at(obj, &["subjects"]) {
        let name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            "ServiceAccount" => {
                accounts.push(format!("{}/{name}", str_at(subject, &["namespace"])));
            }
            _ => {}
        }
    }
    vec![
        name(obj),
        json!(role),
        age(obj, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(accounts.join(", ")),
    ]
}

fn node(obj: &Value, now: Timestamp) -> Vec<Value> {
    let conditions = arr_at(obj, &["status", "conditions"]);
    let mut status: Vec<String> = Vec::new();
    // Kubernetes keeps the last condition of a type when building its map.
    if let Some(ready) = conditions
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
    {
        if str_at(ready, &["status"]) == "True" {
            status.push("Ready".to_string());
        } else {
            status.push("NotReady".to_string());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if at(obj, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }

    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = obj_at(obj, &["metadata", "labels"]) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                let v = value.as_str().unwrap_or("");
                if !v.is_empty() {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();

    let address = |ty: &str| {
        arr_at(obj, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == ty)
            .map_or("<none>".to_string(), |a| {
                str_at(a, &["address"]).to_string()
            })
    };
    let info =
        |field: &str| or_placeholder(str_at(obj, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        name(obj),
        json!(status.join(",")),
        json!(or_placeholder(&roles.join(","), "<none>")),
        age(obj, now),
        json!(str_at(obj, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn deployment(obj: &Value, now: Timestamp) -> Vec<Value> {
    let desired = int_or(obj, &["spec", "replicas"], 1);
    let ready = int_at(obj, &["status", "readyReplicas"]);
    let selector =
        selector_string(at(obj, &["spec", "selector"])).unwrap_or_else(|_| "<invalid>".to_string());
    let mut cells = vec![
        name(obj),
        json!(format!("{ready}/{desired}")),
        json!(int_at(obj, &["status", "updatedReplicas"])),
        json!(int_at(obj, &["status", "availableReplicas"])),
        age(obj, now),
    ];
    cells.extend(template_cells(obj, selector));
    cells
}

/// `hasJobCondition`: the first condition of `ty` decides.
fn job_condition(obj: &Value, ty: &str) -> bool {
    arr_at(obj, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == ty)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn job(obj: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int_at(obj, &["status", "succeeded"]);
    let completions = match at(obj, &["spec", "completions"]).and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int_at(obj, &["spec", "parallelism"]);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = parse_time(at(obj, &["status", "startTime"]));
    let end = parse_time(at(obj, &["status", "completionTime"]));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.duration_since(s)),
        (Some(s), Some(e)) => human_duration(e.duration_since(s)),
    };
    let status = if job_condition(obj, "Complete") {
        "Complete"
    } else if job_condition(obj, "Failed") {
        "Failed"
    } else if deleting(obj) {
        "Terminating"
    } else if job_condition(obj, "Suspended") {
        "Suspended"
    } else if job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let mut cells = vec![
        name(obj),
        json!(status),
        json!(completions),
        json!(duration),
        age(obj, now),
    ];
    let selector = format_label_selector(at(obj, &["spec", "selector"]));
    cells.extend(template_cells(obj, selector));
    cells
}

fn strings(v: &Value, path: &[&str]) -> Vec<String> {
    arr_at(v, path)
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn service_external_ip(obj: &Value) -> String {
    let external_ips = strings(obj, &["spec", "externalIPs"]);
    match str_at(obj, &["spec", "type"]) {
        "" | "ClusterIP" | "NodePort" => or_placeholder(&external_ips.join(","), "<none>"),
        "LoadBalancer" => {
            let mut ingress: Vec<String> = arr_at(obj, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    let ip = str_at(i, &["ip"]);
                    let host = str_at(i, &["hostname"]);
                    [ip, host]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .map(str::to_string)
                })
                .collect();
            ingress.sort();
            ingress.dedup();
            if !external_ips.is_empty() {
                ingress.extend(external_ips);
                return ingress.join(",");
            }
            or_placeholder(&ingress.join(","), "<pending>")
        }
        "ExternalName" => str_at(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ty = or_placeholder(str_at(obj, &["spec", "type"]), "ClusterIP");
    let cluster_ip = arr_at(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(obj, &["spec", "clusterIP"]));
    let ports: Vec<String> = arr_at(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = or_placeholder(str_at(p, &["protocol"]), "TCP");
            match int_at(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    vec![
        name(obj),
        json!(ty),
        json!(or_placeholder(cluster_ip, "<none>")),
        json!(service_external_ip(obj)),
        json!(or_placeholder(&ports.join(","), "<none>")),
        age(obj, now),
        json!(format_labels(obj_at(obj, &["spec", "selector"]))),
    ]
}

/// `formatDiscoveryPorts`: up to three port numbers (the name of a port without one, `*`
/// without either), then `+ N more...`; `<unset>` for none.
fn format_discovery_ports(obj: &Value) -> String {
    let ports: Vec<String> = arr_at(obj, &["ports"])
        .iter()
        .map(
            |p| match (p.get("port").and_then(Value::as_i64), p.get("name")) {
                (Some(n), _) => n.to_string(),
                (None, Some(Value::String(name))) => name.clone(),
                _ => "*".to_string(),
            },
        )
        .collect();
    list_with_more(&ports)
}

/// `formatDiscoveryEndpoints`: up to three addresses of all endpoints, then `+ N more...`;
/// `<unset>` for none.
fn format_discovery_endpoints(obj: &Value) -> String {
    let addresses: Vec<String> = arr_at(obj, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    list_with_more(&addresses)
}

/// `listWithMoreString` with Kubernetes' maximum of three.
fn list_with_more(items: &[String]) -> String {
    const MAX: usize = 3;
    let shown = items[..items.len().min(MAX)].join(",");
    if items.len() > MAX {
        format!("{shown} + {} more...", items.len() - MAX)
    } else if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

/// `formatEndpoints(endpoints, nil)`: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = arr_at(subset, &["addresses"]);
        let ports = arr_at(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = str_at(address, &["ip"]);
                let port = int_at(port, &["port"]);
                // net.JoinHostPort brackets IPv6 addresses.
                if ip.contains(':') {
                    list.push(format!("[{ip}]:{port}"));
                } else {
                    list.push(format!("{ip}:{port}"));
                }
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

fn event(obj: &Value, now: Timestamp) -> Vec<Value> {
    let first = match parse_time(obj.get("firstTimestamp")) {
        Some(ts) => since(now, Some(ts)),
        None => since(now, parse_time(obj.get("eventTime"))),
    };
    let mut last = match parse_time(obj.get("lastTimestamp")) {
        Some(ts) => since(now, Some(ts)),
        None => first.clone(),
    };
    let mut count = int_at(obj, &["count"]);
    match obj.get("series").filter(|s| !s.is_null()) {
        Some(series) => {
            last = since(now, parse_time(series.get("lastObservedTime")));
            count = int_at(series, &["count"]);
        }
        None if count == 0 => count = 1,
        None => {}
    }
    let kind = str_at(obj, &["involvedObject", "kind"]).to_lowercase();
    let involved = str_at(obj, &["involvedObject", "name"]);
    let target = if involved.is_empty() {
        kind
    } else {
        format!("{kind}/{involved}")
    };
    let component = [
        str_at(obj, &["source", "component"]),
        str_at(obj, &["reportingComponent"]),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    let instance = [
        str_at(obj, &["source", "host"]),
        str_at(obj, &["reportingInstance"]),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(str_at(obj, &["type"])),
        json!(str_at(obj, &["reason"])),
        json!(target),
        json!(str_at(obj, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(str_at(obj, &["message"]).trim()),
        json!(first),
        json!(count),
        name(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-03-01T12:00:00Z".parse().unwrap()
    }

    fn row(printer: Printer, obj: Value) -> Vec<Value> {
        let cells = cells(printer, &obj, now());
        assert_eq!(cells.len(), printer.columns().len(), "{printer:?}");
        cells
    }

    fn meta(name: &str, created: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": created})
    }

    #[test]
    fn node_row_shows_readiness_roles_version_and_wide_system_info() {
        let node = json!({
            "metadata": {"name": "node-a", "creationTimestamp": "2025-02-27T09:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "",
                                    "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"},
                              {"type": "Hostname", "address": "node-a"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-wasmkube.0.1.0", "osImage": "Debian GNU/Linux 12",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": ""}
            }
        });
        assert_eq!(
            row(Printer::Node, node),
            [
                json!("node-a"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge,worker"),
                json!("2d3h"),
                json!("v1.33.0-wasmkube.0.1.0"),
                json!("10.0.0.5"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("<unknown>")
            ]
        );
    }

    #[test]
    fn node_without_ready_condition_is_unknown_and_roleless() {
        let node = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "Unknown"}]}});
        let cells = row(Printer::Node, node);
        assert_eq!(cells[1], json!("NotReady"));
        assert_eq!(cells[2], json!("<none>"));
        let bare = row(Printer::Node, json!({"metadata": {"name": "n"}}));
        assert_eq!(bare[1], json!("Unknown"));
    }

    #[test]
    fn namespace_row_shows_phase() {
        let ns = json!({"metadata": meta("kube-system", "2025-03-01T11:00:00Z"),
                        "status": {"phase": "Active"}});
        assert_eq!(
            row(Printer::Namespace, ns),
            [json!("kube-system"), json!("Active"), json!("60m")]
        );
    }

    #[test]
    fn deployment_row_shows_ready_over_desired_and_wide_template() {
        let d = json!({
            "metadata": meta("web", "2025-03-01T11:57:00Z"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/web:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            row(Printer::Deployment, d),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3m"),
                json!("app"),
                json!("ghcr.io/acme/web:1"),
                json!("app=web")
            ]
        );
    }

    #[test]
    fn replicaset_row_shows_desired_current_ready() {
        let rs = json!({
            "metadata": meta("web-7d9f", "2025-03-01T11:57:00Z"),
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d9f"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        assert_eq!(
            row(Printer::ReplicaSet, rs),
            [
                json!("web-7d9f"),
                json!(2),
                json!(2),
                json!(1),
                json!("3m"),
                json!("app"),
                json!("nginx"),
                json!("app=web,pod-template-hash=7d9f")
            ]
        );
    }

    #[test]
    fn daemonset_row_shows_counts_and_node_selector() {
        let ds = json!({
            "metadata": meta("agent", "2025-03-01T11:00:00Z"),
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                           "containers": [{"name": "a", "image": "agent:2"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}
        });
        assert_eq!(
            row(Printer::DaemonSet, ds),
            [
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("60m"),
                json!("a"),
                json!("agent:2"),
                json!("app=agent")
            ]
        );
    }

    #[test]
    fn job_rows_show_status_completions_and_duration() {
        let complete = json!({
            "metadata": meta("pi", "2025-03-01T11:50:00Z"),
            "spec": {"completions": 5, "parallelism": 2,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 5, "startTime": "2025-03-01T11:50:00Z",
                       "completionTime": "2025-03-01T11:53:20Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            row(Printer::Job, complete),
            [
                json!("pi"),
                json!("Complete"),
                json!("5/5"),
                json!("3m20s"),
                json!("10m"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=u1")
            ]
        );
        let running = json!({
            "metadata": meta("work", "2025-03-01T11:59:00Z"),
            "spec": {"parallelism": 3},
            "status": {"succeeded": 1, "startTime": "2025-03-01T11:59:30Z"}
        });
        let cells = row(Printer::Job, running);
        assert_eq!(
            cells[1..4],
            [json!("Running"), json!("1/1 of 3"), json!("30s")]
        );
        let pending =
            json!({"metadata": {"name": "j", "deletionTimestamp": "2025-03-01T11:59:00Z"}});
        let cells = row(Printer::Job, pending);
        assert_eq!(cells[1..4], [json!("Terminating"), json!("0/1"), json!("")]);
    }

    #[test]
    fn service_rows_show_type_ips_and_ports() {
        let svc = json!({
            "metadata": meta("web", "2025-03-01T11:00:00Z"),
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "selector": {"app": "web"},
                     "ports": [{"port": 80, "protocol": "TCP"},
                               {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}
        });
        assert_eq!(
            row(Printer::Service, svc),
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.20"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("60m"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"},
                        "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]},
                        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}});
        let cells = row(Printer::Service, lb);
        assert_eq!(
            cells[1..5],
            [
                json!("LoadBalancer"),
                json!("<none>"),
                json!("203.0.113.9"),
                json!("53/UDP")
            ]
        );
        let pending = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}});
        let cells = row(Printer::Service, pending);
        assert_eq!(cells[3..5], [json!("<pending>"), json!("<none>")]);
        let ext = json!({"metadata": {"name": "db"},
                         "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(row(Printer::Service, ext)[3], json!("db.example.com"));
    }

    #[test]
    fn endpoints_row_lists_three_addresses_then_more() {
        let ep = json!({
            "metadata": meta("web", "2025-03-01T11:59:50Z"),
            "subsets": [{"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}],
                         "ports": [{"port": 8080}, {"port": 9090}]}]
        });
        assert_eq!(
            row(Printer::Endpoints, ep),
            [
                json!("web"),
                json!("10.1.0.1:8080,10.1.0.2:8080,10.1.0.1:9090 + 1 more..."),
                json!("10s")
            ]
        );
        let empty = json!({"metadata": {"name": "none"}});
        assert_eq!(row(Printer::Endpoints, empty)[1], json!("<none>"));
    }

    #[test]
    fn endpointslice_row_lists_type_ports_and_three_addresses_then_more() {
        let slice = json!({
            "metadata": meta("web-x7k2p", "2025-03-01T11:59:50Z"),
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "all"}, {}],
            "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]},
                          {"addresses": ["10.42.0.3"]}, {"addresses": ["10.42.0.4"]}]
        });
        assert_eq!(
            row(Printer::EndpointSlice, slice),
            [
                json!("web-x7k2p"),
                json!("IPv4"),
                json!("8080,all,*"),
                json!("10.42.0.1,10.42.0.2,10.42.0.3 + 1 more..."),
                json!("10s")
            ]
        );
        let empty = json!({"metadata": {"name": "none"}, "addressType": "IPv4"});
        let cells = row(Printer::EndpointSlice, empty);
        assert_eq!(cells[2..4], [json!("<unset>"), json!("<unset>")]);
    }

    #[test]
    fn networkpolicy_row_shows_the_pod_selector_or_none() {
        let policy = json!({
            "metadata": meta("allow-client", "2025-03-01T11:59:50Z"),
            "spec": {"podSelector": {"matchLabels": {"app": "web"},
                     "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
                     "policyTypes": ["Ingress"]}
        });
        assert_eq!(
            row(Printer::NetworkPolicy, policy),
            [
                json!("allow-client"),
                json!("app=web,tier in (a,b)"),
                json!("10s")
            ]
        );
        let all = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(row(Printer::NetworkPolicy, all)[1], json!("<none>"));
    }

    #[test]
    fn event_row_shows_last_seen_object_and_message() {
        let ev = json!({
            "metadata": {"name": "web-1.17f3", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"nginx\"\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2025-03-01T11:50:00Z", "lastTimestamp": "2025-03-01T11:58:00Z",
            "count": 4
        });
        assert_eq!(
            row(Printer::Event, ev),
            [
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Successfully pulled image \"nginx\""),
                json!("10m"),
                json!(4),
                json!("web-1.17f3")
            ]
        );
    }

    #[test]
    fn new_style_event_uses_event_time_series_and_reporting_controller() {
        let ev = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2025-03-01T11:59:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2025-03-01T11:59:55.000000Z"},
            "reportingComponent": "wasmkube-scheduler", "type": "Warning", "reason": "X"
        });
        let cells = row(Printer::Event, ev);
        assert_eq!(cells[0], json!("5s"));
        assert_eq!(cells[3], json!("node"));
        assert_eq!(cells[5], json!("wasmkube-scheduler"));
        assert_eq!(cells[7], json!("60s"));
        assert_eq!(cells[8], json!(7));
    }

    #[test]
    fn configmap_secret_serviceaccount_lease_and_runtimeclass_rows() {
        let created = "2025-03-01T11:59:58Z";
        let cm = json!({"metadata": meta("cfg", created), "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            row(Printer::ConfigMap, cm),
            [json!("cfg"), json!(2), json!("2s")]
        );
        let secret = json!({"metadata": meta("tls", created), "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            row(Printer::Secret, secret),
            [
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("2s")
            ]
        );
        let sa = json!({"metadata": meta("default", created)});
        assert_eq!(
            row(Printer::ServiceAccount, sa),
            [json!("default"), json!(0), json!("2s")]
        );
        let lease =
            json!({"metadata": meta("node-a", created), "spec": {"holderIdentity": "node-a"}});
        assert_eq!(
            row(Printer::Lease, lease),
            [json!("node-a"), json!("node-a"), json!("2s")]
        );
        let rc = json!({"metadata": {"name": "wasmtime", "creationTimestamp": created},
                        "handler": "wasmtime"});
        assert_eq!(
            row(Printer::RuntimeClass, rc),
            [json!("wasmtime"), json!("wasmtime"), json!("2s")]
        );
        let other = json!({"metadata": meta("x", created)});
        assert_eq!(row(Printer::Default, other), [json!("x"), json!("2s")]);
    }
}
