//! LimitRanger admission: the namespace's LimitRanges default and bound what pods ask for
//! (`plugin/pkg/admission/limitranger`).
//!
//! On pod creation, for every LimitRange of the namespace in turn:
//! - **defaults** (mutating): a container without a limit for a resource of a `Container`
//!   item's `default` gets it, one without a request gets `defaultRequest`; what was set is
//!   recorded in the `kubernetes.io/limit-ranger` annotation (`LimitRanger plugin set: cpu
//!   request for container app; ...`).
//! - **constraints** (validating): `min`, `max` and `maxLimitRequestRatio` of `Container`
//!   items hold for every container, and of `Pod` items for the pod's totals; the first
//!   LimitRange a pod breaks refuses it with 403 and Kubernetes' messages
//!   (`maximum cpu usage per Container is 1, but limit is 2`).
//!
//! Pod updates are not checked: containers' resources cannot change after creation.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use wasmkube_api::quantity::Quantity;

/// The annotation listing what LimitRanger set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Quantities are compared in milli-units when every one fits (as Kubernetes does).
const MAX_MILLI_VALUE: i128 = i64::MAX as i128 / 1000;

type Resources = BTreeMap<String, Quantity>;

fn resources(v: Option<&Value>) -> Resources {
    wasmkube_api::quota::from_json(v)
}

/// The `Container` items of a LimitRange.
fn items<'a>(range: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |i| i.get("type").and_then(Value::as_str) == Some(kind))
}

/// Sets the defaults of every LimitRange in `ranges` on `pod`; returns whether anything
/// changed.
pub fn default_pod(pod: &mut Value, ranges: &[Value]) -> bool {
    let mut notes: Vec<String> = Vec::new();
    for range in ranges {
        let mut limits = Resources::new();
        let mut requests = Resources::new();
        for item in items(range, "Container") {
            limits.extend(resources(item.get("default")));
            requests.extend(resources(item.get("defaultRequest")));
        }
        if limits.is_empty() && requests.is_empty() {
            continue;
        }
        for (list, what) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            let Some(Value::Array(containers)) = pod.pointer_mut(&format!("/spec/{list}")) else {
                continue;
            };
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                merge_container(c, &limits, &requests, what, &mut notes);
            }
        }
    }
    if notes.is_empty() {
        return false;
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
    true
}

fn merge_container(
    c: &mut Map<String, Value>,
    limits: &Resources,
    requests: &Resources,
    what: &str,
    notes: &mut Vec<String>,
) {
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let res = c.entry("resources").or_insert_with(|| json!({}));
    if !res.is_object() {
        *res = json!({});
    }
    let mut set = |key: &str, defaults: &Resources| -> Vec<String> {
        let list = &mut res[key];
        if !list.is_object() {
            *list = json!({});
        }
        let mut set = Vec::new();
        for (k, v) in defaults {
            if list.get(k).is_none() {
                list[k] = json!(v.to_string());
                set.push(k.clone());
            }
        }
        if list.as_object().is_some_and(Map::is_empty)
            && let Some(m) = res.as_object_mut()
        {
            m.remove(key);
        }
        set
    };
    let set_limits = set("limits", limits);
    let set_requests = set("requests", requests);
    // BTreeMap keys are already sorted, as Kubernetes sorts them.
    if !set_requests.is_empty() {
        notes.push(format!(
            "{} request for {what} {name}",
            set_requests.join(", ")
        ));
    }
    if !set_limits.is_empty() {
        notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
    }
}

/// The constraint violations of `pod` against the first LimitRange it breaks, as
/// Kubernetes' aggregated error: one message, or `[a, b]`.
pub fn check_pod(pod: &Value, ranges: &[Value]) -> Option<String> {
    for range in ranges {
        let errors = range_errors(pod, range);
        match errors.len() {
            0 => continue,
            1 => return errors.into_iter().next(),
            _ => return Some(format!("[{}]", errors.join(", "))),
        }
    }
    None
}

fn range_errors(pod: &Value, range: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect();
    for item in range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for c in &containers {
                    let requests = resources(c.pointer("/resources/requests"));
                    let limits = resources(c.pointer("/resources/limits"));
                    constraints("Container", item, &requests, &limits, &mut errors);
                }
            }
            Some("Pod") => {
                let (requests, limits) = pod_totals(pod);
                constraints("Pod", item, &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    errors
}

/// A pod's requests and limits: the containers' sums, at least each init container's.
fn pod_totals(pod: &Value) -> (Resources, Resources) {
    let mut out = (Resources::new(), Resources::new());
    for (key, total) in [("requests", &mut out.0), ("limits", &mut out.1)] {
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            wasmkube_api::quota::add_all(
                total,
                &resources(c.pointer(&format!("/resources/{key}"))),
            );
        }
        for c in pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, v) in resources(c.pointer(&format!("/resources/{key}"))) {
                let entry = total.entry(k).or_insert_with(Quantity::zero);
                if v > *entry {
                    *entry = v;
                }
            }
        }
    }
    out
}

fn constraints(
    kind: &str,
    item: &Value,
    requests: &Resources,
    limits: &Resources,
    errors: &mut Vec<String>,
) {
    for (name, min) in resources(item.get("min")) {
        let (req, lim, enforced) = values(requests.get(&name), limits.get(&name), &min);
        match (requests.get(&name), limits.get(&name)) {
            (None, _) => errors.push(format!(
                "minimum {name} usage per {kind} is {min}.  No request is specified"
            )),
            (Some(r), _) if req < enforced => errors.push(format!(
                "minimum {name} usage per {kind} is {min}, but request is {r}"
            )),
            (_, Some(l)) if lim < enforced => errors.push(format!(
                "minimum {name} usage per {kind} is {min}, but limit is {l}"
            )),
            _ => {}
        }
    }
    for (name, max) in resources(item.get("max")) {
        let (req, lim, enforced) = values(requests.get(&name), limits.get(&name), &max);
        match (requests.get(&name), limits.get(&name)) {
            (_, None) => errors.push(format!(
                "maximum {name} usage per {kind} is {max}.  No limit is specified"
            )),
            (_, Some(l)) if lim > enforced => errors.push(format!(
                "maximum {name} usage per {kind} is {max}, but limit is {l}"
            )),
            (Some(r), _) if req > enforced => errors.push(format!(
                "maximum {name} usage per {kind} is {max}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (name, ratio) in resources(item.get("maxLimitRequestRatio")) {
        let (req, lim, _) = values(requests.get(&name), limits.get(&name), &ratio);
        if requests.get(&name).is_none() || req == 0 {
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
            ));
            continue;
        }
        if limits.get(&name).is_none() || lim == 0 {
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
            ));
            continue;
        }
        let observed = lim as f64 / req as f64;
        let (scaled, allowed) = if ratio.value() <= MAX_MILLI_VALUE {
            (observed * 1000.0, ratio.milli_value() as f64)
        } else {
            (observed, ratio.value() as f64)
        };
        if scaled > allowed {
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
            ));
        }
    }
}

/// Request, limit and the enforced value, in milli-units when all fit (else units).
fn values(
    request: Option<&Quantity>,
    limit: Option<&Quantity>,
    enforced: &Quantity,
) -> (i128, i128, i128) {
    let zero = Quantity::zero();
    let (r, l) = (request.unwrap_or(&zero), limit.unwrap_or(&zero));
    if [r, l, enforced]
        .iter()
        .all(|q| q.value() <= MAX_MILLI_VALUE)
    {
        (r.milli_value(), l.milli_value(), enforced.milli_value())
    } else {
        (r.value(), l.value(), enforced.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Value {
        json!({"spec": {"limits": limits}})
    }

    #[test]
    fn defaults_fill_what_containers_leave_out_and_say_so() {
        let ranges = [range(json!([{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
        }]))];
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "256Mi"}, "requests": {"memory": "256Mi"}}},
            {"name": "b"},
        ]}});
        assert!(default_pod(&mut pod, &ranges));
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "256Mi", "cpu": "100m"}})
        );
        assert_eq!(
            pod["spec"]["containers"][1]["resources"],
            json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            json!(
                "LimitRanger plugin set: cpu request for container a; cpu limit for container a; \
                   cpu, memory request for container b; cpu, memory limit for container b"
            )
        );
        let mut untouched = json!({"metadata": {}, "spec": {"containers": [{"name": "c"}]}});
        assert!(!default_pod(
            &mut untouched,
            &[range(json!([{"type": "Pod", "max": {"cpu": "1"}}]))]
        ));
    }

    #[test]
    fn min_max_and_ratio_refuse_with_kubernetes_messages() {
        let ranges = [range(json!([
            {"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1", "memory": "1Gi"},
             "maxLimitRequestRatio": {"memory": "2"}},
        ]))];
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "50m", "memory": "100Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        }}]}});
        assert_eq!(
            check_pod(&pod, &ranges).as_deref(),
            Some(
                "[minimum cpu usage per Container is 100m, but request is 50m, \
                 maximum cpu usage per Container is 1, but limit is 2, \
                 memory max limit to request ratio per Container is 2, but provided ratio is 10.240000]"
            )
        );
        let ok = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"},
        }}]}});
        assert_eq!(check_pod(&ok, &ranges), None);
        let no_limit = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "200m"}}}]}});
        assert_eq!(
            check_pod(
                &no_limit,
                &[range(json!([{"type": "Pod", "max": {"cpu": "1"}}]))]
            )
            .as_deref(),
            Some("maximum cpu usage per Pod is 1.  No limit is specified")
        );
    }
}
