//! Resource quota accounting shared by the apiserver's ResourceQuota admission and the
//! quota controller, so both count exactly alike (`k8s.io/kubernetes/pkg/quota/v1`).
//!
//! - [`usage`]: what one object consumes, as resource names -> quantities: every object
//!   counts toward `count/<resource>[.<group>]` (and the legacy names `configmaps`, `secrets`,
//!   `services`, ...); a pod that has not reached a terminal phase also counts toward `pods`
//!   and its compute resources (`requests.cpu`/`cpu`, `limits.memory`, ...), summed over its
//!   containers and at least its largest init container, as the scheduler sees it.
//! - [`missing_compute`]: Kubernetes' backward-compatible rule that when a quota limits cpu or
//!   memory every container must state them.
//! - [`matches_scopes`]: the `Terminating`/`NotTerminating`/`BestEffort`/`NotBestEffort` and
//!   `PriorityClass` scopes.
//! - [`ResourceList`] arithmetic and the `k=v,k=v` form quota messages print.
//!
//! Objects are JSON (`serde_json::Value`) as the apiserver and the controllers' dynamic
//! clients hold them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::quantity::{Quantity, QuantityFormat};

/// Resource name -> amount, sorted by name.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The resource names that tie quota to container requests/limits.
const COMPUTE: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The quota resource of an object count: `count/pods`, `count/deployments.apps`.
pub fn count_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// The resource names a kind's usage can name, so a quota's `hard` is matched against
/// only what concerns the object (`pods` and compute for pods, counts for the rest).
pub fn matching_resources(group: &str, plural: &str, hard: &ResourceList) -> BTreeSet<String> {
    hard.keys()
        .filter(|name| concerns(group, plural, name))
        .cloned()
        .collect()
}

fn concerns(group: &str, plural: &str, name: &str) -> bool {
    if *name == count_resource(group, plural) {
        return true;
    }
    if !group.is_empty() {
        return false;
    }
    match plural {
        "pods" => {
            name == "pods"
                || COMPUTE.contains(&name)
                || name == "ephemeral-storage"
                || name.starts_with("requests.")
                || name.starts_with("limits.")
                || name.starts_with("hugepages-")
        }
        "services" => matches!(
            name,
            "services" | "services.nodeports" | "services.loadbalancers"
        ),
        "configmaps"
        | "secrets"
        | "resourcequotas"
        | "replicationcontrollers"
        | "persistentvolumeclaims" => name == plural,
        _ => false,
    }
}

/// What `obj` (of `group`/`plural`) consumes.
pub fn usage(group: &str, plural: &str, obj: &Value) -> ResourceList {
    let mut out = ResourceList::new();
    let one = Quantity::from_units(1, QuantityFormat::DecimalSI);
    out.insert(count_resource(group, plural), one);
    if !group.is_empty() {
        return out;
    }
    match plural {
        "pods" if !is_terminal(obj) => {
            out.insert("pods".into(), one);
            add_all(&mut out, &pod_compute(obj));
        }
        "services" => {
            out.insert("services".into(), one);
            let ty = obj.pointer("/spec/type").and_then(Value::as_str);
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ports = i64::try_from(ports).unwrap_or(i64::MAX);
            match ty {
                Some("NodePort") => {
                    out.insert(
                        "services.nodeports".into(),
                        Quantity::from_units(ports, QuantityFormat::DecimalSI),
                    );
                }
                Some("LoadBalancer") => {
                    out.insert("services.loadbalancers".into(), one);
                    out.insert(
                        "services.nodeports".into(),
                        Quantity::from_units(ports, QuantityFormat::DecimalSI),
                    );
                }
                _ => {}
            }
        }
        "configmaps"
        | "secrets"
        | "resourcequotas"
        | "replicationcontrollers"
        | "persistentvolumeclaims" => {
            out.insert(plural.into(), one);
        }
        _ => {}
    }
    out
}

/// Whether a pod no longer consumes compute quota: it ended (Succeeded, Failed).
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A container's requests and limits.
fn container_resources(c: &Value) -> (ResourceList, ResourceList) {
    let list = |key: &str| -> ResourceList {
        c.pointer(&format!("/resources/{key}"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Quantity::from_json(v).ok().map(|q| (k.clone(), q)))
                    .collect()
            })
            .unwrap_or_default()
    };
    (list("requests"), list("limits"))
}

/// A pod's effective requests or limits: the containers' sum, at least each init
/// container's (`resourcehelper.PodRequests`), plus the pod overhead.
fn pod_effective(pod: &Value, limits: bool) -> ResourceList {
    let pick = |c: &Value| {
        let (r, l) = container_resources(c);
        if limits { l } else { r }
    };
    let mut sum = ResourceList::new();
    for c in list(pod, "/spec/containers") {
        add_all(&mut sum, &pick(c));
    }
    for c in list(pod, "/spec/initContainers") {
        for (k, v) in pick(c) {
            let entry = sum.entry(k).or_insert_with(Quantity::zero);
            if v > *entry {
                *entry = v;
            }
        }
    }
    if let Some(overhead) = pod.pointer("/spec/overhead").and_then(Value::as_object) {
        for (k, v) in overhead {
            if let Ok(q) = Quantity::from_json(v) {
                add(&mut sum, k, q);
            }
        }
    }
    sum
}

/// The compute usage of a pod (`podComputeUsageHelper`).
fn pod_compute(pod: &Value) -> ResourceList {
    let requests = pod_effective(pod, false);
    let limits = pod_effective(pod, true);
    let mut out = ResourceList::new();
    for (name, q) in &requests {
        match name.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                out.insert(name.clone(), *q);
                out.insert(format!("requests.{name}"), *q);
            }
            n if n.starts_with("hugepages-") => {
                out.insert(name.clone(), *q);
                out.insert(format!("requests.{name}"), *q);
            }
            // Extended resources (`example.com/gpu`) are quota'd as `requests.<name>`.
            n if n.contains('/') && !n.starts_with("kubernetes.io/") => {
                out.insert(format!("requests.{name}"), *q);
            }
            _ => {}
        }
    }
    for (name, q) in &limits {
        if matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            out.insert(format!("limits.{name}"), *q);
        }
    }
    out
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `Err("must specify limits.cpu for: a,b; requests.memory for: a")` when `required` names
/// cpu/memory resources some container of `pod` does not state (Kubernetes' rule for
/// quotas that limit compute resources).
pub fn missing_compute(pod: &Value, required: &BTreeSet<String>) -> Result<(), String> {
    let required: BTreeSet<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| COMPUTE.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let containers = list(pod, "/spec/containers")
        .iter()
        .chain(list(pod, "/spec/initContainers"));
    for c in containers {
        let (requests, limits) = container_resources(c);
        let mut has = BTreeSet::new();
        for name in ["cpu", "memory"] {
            if requests.contains_key(name) {
                has.insert(name.to_string());
                has.insert(format!("requests.{name}"));
            }
            if limits.contains_key(name) {
                has.insert(format!("limits.{name}"));
            }
        }
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        for r in &required {
            if !has.contains(*r) {
                missing.entry(r).or_default().insert(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// Whether a quota's scopes (`spec.scopes` and `spec.scopeSelector`) select `obj`. Only
/// pods are scoped; a scoped quota tracks no other kind.
pub fn matches_scopes(quota: &Value, plural: &str, obj: &Value) -> bool {
    let mut selectors: Vec<(String, String, Vec<String>)> = list(quota, "/spec/scopes")
        .iter()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in list(quota, "/spec/scopeSelector/matchExpressions") {
        let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        selectors.push((scope.to_string(), op.to_string(), values));
    }
    if selectors.is_empty() {
        return true;
    }
    if plural != "pods" {
        return false;
    }
    selectors
        .iter()
        .all(|(scope, op, values)| pod_matches_scope(obj, scope, op, values))
}

fn pod_matches_scope(pod: &Value, scope: &str, op: &str, values: &[String]) -> bool {
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s >= 0);
    let best_effort = is_best_effort(pod);
    let holds = match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match op {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        _ => return false,
    };
    match op {
        "Exists" | "" => holds,
        "DoesNotExist" => !holds,
        _ => false,
    }
}

/// Whether no container requests or limits cpu or memory.
fn is_best_effort(pod: &Value) -> bool {
    list(pod, "/spec/containers")
        .iter()
        .chain(list(pod, "/spec/initContainers"))
        .all(|c| {
            let (r, l) = container_resources(c);
            ["cpu", "memory"]
                .iter()
                .all(|n| !r.contains_key(*n) && !l.contains_key(*n))
        })
}

/// Adds `q` to `list[name]` (a new entry takes `q`'s notation).
pub fn add(list: &mut ResourceList, name: &str, q: Quantity) {
    match list.get_mut(name) {
        Some(current) if !current.is_zero() => {
            *current = current.checked_add(q).unwrap_or(*current);
        }
        _ => {
            list.insert(name.to_string(), q);
        }
    }
}

/// Adds every entry of `other` to `list`.
pub fn add_all(list: &mut ResourceList, other: &ResourceList) {
    for (k, v) in other {
        add(list, k, *v);
    }
}

/// The entries of `list` named in `names`.
pub fn mask(list: &ResourceList, names: &BTreeSet<String>) -> ResourceList {
    list.iter()
        .filter(|(k, _)| names.contains(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// `k=v,k=v` in name order, as quota messages print resource lists.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A JSON resource map (`{"pods": "2"}`) as a list; entries that are not quantities are
/// skipped.
pub fn from_json(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Quantity::from_json(v).ok().map(|q| (k.clone(), q)))
                .collect()
        })
        .unwrap_or_default()
}

/// A list as a JSON resource map.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect("quantity")
    }

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}, "status": {"phase": "Pending"}})
    }

    #[test]
    fn a_pod_counts_itself_and_its_compute_resources() {
        let p = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}],
        }});
        let u = usage("", "pods", &p);
        assert_eq!(
            pretty(&u),
            "count/pods=1,cpu=500m,limits.memory=128Mi,memory=64Mi,pods=1,requests.cpu=500m,requests.memory=64Mi"
        );
        let mut done = p.clone();
        done["status"] = json!({"phase": "Succeeded"});
        assert_eq!(pretty(&usage("", "pods", &done)), "count/pods=1");
    }

    #[test]
    fn other_kinds_count_as_objects() {
        assert_eq!(
            pretty(&usage("", "configmaps", &json!({}))),
            "configmaps=1,count/configmaps=1"
        );
        assert_eq!(
            pretty(&usage("apps", "deployments", &json!({}))),
            "count/deployments.apps=1"
        );
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        assert_eq!(
            pretty(&usage("", "services", &svc)),
            "count/services=1,services=1,services.nodeports=2"
        );
        let hard: ResourceList = [("pods", "2"), ("configmaps", "1"), ("requests.cpu", "1")]
            .iter()
            .map(|(k, v)| ((*k).to_string(), q(v)))
            .collect();
        assert_eq!(
            matching_resources("", "pods", &hard),
            ["pods", "requests.cpu"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
    }

    #[test]
    fn quotas_on_compute_need_every_container_to_state_it() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "1"}}},
            {"name": "b"},
        ]));
        let required: BTreeSet<String> = ["requests.cpu", "limits.memory", "pods"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            missing_compute(&p, &required),
            Err("must specify limits.memory for: a,b; requests.cpu for: b".into())
        );
    }

    #[test]
    fn sums_keep_the_notation_of_their_parts() {
        let mut used = ResourceList::new();
        add(&mut used, "memory", Quantity::zero());
        add(&mut used, "memory", q("128Mi"));
        add(&mut used, "memory", q("64Mi"));
        add(&mut used, "cpu", q("250m"));
        add(&mut used, "cpu", q("750m"));
        assert_eq!(pretty(&used), "cpu=1,memory=192Mi");
    }

    #[test]
    fn scopes_select_pods_by_deadline_qos_and_priority_class() {
        let best_effort = pod(json!([{"name": "a"}]));
        let burstable = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        let quota = json!({"spec": {"scopes": ["BestEffort"]}});
        assert!(matches_scopes(&quota, "pods", &best_effort));
        assert!(!matches_scopes(&quota, "pods", &burstable));
        assert!(!matches_scopes(&quota, "configmaps", &json!({})));
        let mut high = burstable.clone();
        high["spec"]["priorityClassName"] = json!("high");
        let by_class = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(matches_scopes(&by_class, "pods", &high));
        assert!(!matches_scopes(&by_class, "pods", &burstable));
    }
}
