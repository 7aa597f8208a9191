//! ResourceQuota and LimitRange validation (`ValidateResourceQuota`, `ValidateLimitRange`)
//! and LimitRange defaulting (`SetDefaults_LimitRangeItem`).

use serde_json::Value;
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::quantity::Quantity;

use super::{Cause, causes, get_list, get_str};

/// The resource names a quota may limit without a domain prefix.
const STANDARD_QUOTA_RESOURCES: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// Quota resources counted in whole units.
fn is_integer_resource(name: &str) -> bool {
    matches!(
        name,
        "pods"
            | "services"
            | "replicationcontrollers"
            | "resourcequotas"
            | "secrets"
            | "configmaps"
            | "persistentvolumeclaims"
            | "services.nodeports"
            | "services.loadbalancers"
    ) || name.starts_with("count/")
}

const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

fn quoted(q: &Quantity) -> Rendered {
    Rendered(format!("\"{q}\""))
}

/// A map of resource name -> quantity: invalid quantities and negative values are errors.
fn resource_map(
    v: Option<&Value>,
    path: &FieldPath,
    quota: bool,
) -> (Vec<(String, Quantity)>, Vec<FieldError>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (name, value) in v.and_then(Value::as_object).into_iter().flatten() {
        let p = path.key(name);
        let q = match Quantity::from_json(value) {
            Ok(q) => q,
            Err(e) => {
                errs.push(FieldError::invalid(&p, value, &e.to_string()));
                continue;
            }
        };
        if quota && !name.contains('/') && !is_standard_quota_resource(name) {
            errs.push(FieldError::invalid(
                &p,
                name.as_str(),
                "must be a standard resource for quota",
            ));
        }
        if q.is_negative() {
            errs.push(FieldError::invalid(
                &p,
                quoted(&q),
                "must be greater than or equal to 0",
            ));
        } else if quota && is_integer_resource(name) && q.milli_value() % 1000 != 0 {
            errs.push(FieldError::invalid(&p, quoted(&q), "must be an integer"));
        }
        out.push((name.clone(), q));
    }
    (out, errs)
}

fn is_standard_quota_resource(name: &str) -> bool {
    STANDARD_QUOTA_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

/// Validates a ResourceQuota: hard (and status) quantities and resource names, scopes.
pub fn validate_resource_quota(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let spec = FieldPath::new("spec");
    let (_, mut errs) = resource_map(obj.pointer("/spec/hard"), &spec.child("hard"), true);
    for (key, field) in [("hard", "hard"), ("used", "used")] {
        let path = FieldPath::new("status").child(field);
        errs.extend(resource_map(obj.pointer(&format!("/status/{key}")), &path, true).1);
    }
    for (i, scope) in get_list(obj.get("spec").unwrap_or(&Value::Null), "scopes")
        .iter()
        .enumerate()
    {
        let s = scope.as_str().unwrap_or("");
        if !SCOPES.contains(&s) {
            errs.push(FieldError::not_supported(
                &spec.child("scopes").index(i),
                s,
                SCOPES,
            ));
        }
    }
    for (i, e) in obj
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = spec
            .child("scopeSelector")
            .child("matchExpressions")
            .index(i);
        let scope = get_str(e, "scopeName");
        if !SCOPES.contains(&scope) {
            errs.push(FieldError::not_supported(
                &p.child("scopeName"),
                scope,
                SCOPES,
            ));
        }
        let op = get_str(e, "operator");
        const OPS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
        if !OPS.contains(&op) {
            errs.push(FieldError::not_supported(&p.child("operator"), op, OPS));
        }
    }
    causes(errs)
}

/// `SetDefaults_LimitRangeItem`: a `Container` item's `default` limit defaults to `max`, its
/// `defaultRequest` to `default`, then to `min`.
pub fn default_limit_range(obj: &mut Value) {
    let Some(items) = obj
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in items.iter_mut() {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let get = |item: &Value, key: &str| {
            item.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let max = get(item, "max");
        let min = get(item, "min");
        let mut default = get(item, "default");
        let mut default_request = get(item, "defaultRequest");
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        for (k, v) in &default {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        for (k, v) in min {
            default_request.entry(k).or_insert(v);
        }
        if !default.is_empty() {
            item["default"] = Value::Object(default);
        }
        if !default_request.is_empty() {
            item["defaultRequest"] = Value::Object(default_request);
        }
    }
}

/// Validates a LimitRange: item types, quantities and how min, max, defaults and the ratio
/// relate, with Kubernetes' messages.
pub fn validate_limit_range(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let limits = FieldPath::new("spec").child("limits");
    for (i, item) in obj
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = limits.index(i);
        let kind = get_str(item, "type");
        const TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];
        if kind.is_empty() {
            errs.push(FieldError::required(&p.child("type"), ""));
        } else if !TYPES.contains(&kind) {
            errs.push(FieldError::not_supported(&p.child("type"), kind, TYPES));
        }
        let mut field = |key: &str| {
            let (list, e) = resource_map(item.get(key), &p.child(key), false);
            errs.extend(e);
            list.into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let max = field("max");
        let min = field("min");
        let default = field("default");
        let default_request = field("defaultRequest");
        let ratio = field("maxLimitRequestRatio");
        if kind == "Pod" {
            if !default.is_empty() {
                errs.push(FieldError::forbidden(
                    &p.child("default"),
                    "may not be specified when `type` is 'Pod'",
                ));
            }
            if !default_request.is_empty() {
                errs.push(FieldError::forbidden(
                    &p.child("defaultRequest"),
                    "may not be specified when `type` is 'Pod'",
                ));
            }
        }
        let mut keys: std::collections::BTreeSet<&String> = max.keys().collect();
        keys.extend(min.keys());
        keys.extend(default.keys());
        keys.extend(default_request.keys());
        keys.extend(ratio.keys());
        for k in keys {
            let (mn, mx, d, dr, r) = (
                min.get(k),
                max.get(k),
                default.get(k),
                default_request.get(k),
                ratio.get(k),
            );
            if let (Some(mn), Some(mx)) = (mn, mx)
                && mn > mx
            {
                errs.push(FieldError::invalid(
                    &p.child("min").key(k),
                    quoted(mn),
                    &format!("min value {mn} is greater than max value {mx}"),
                ));
            }
            if let (Some(dr), Some(mn)) = (dr, mn)
                && mn > dr
            {
                errs.push(FieldError::invalid(
                    &p.child("defaultRequest").key(k),
                    quoted(dr),
                    &format!("min value {mn} is greater than default request value {dr}"),
                ));
            }
            if let (Some(dr), Some(mx)) = (dr, mx)
                && dr > mx
            {
                errs.push(FieldError::invalid(
                    &p.child("defaultRequest").key(k),
                    quoted(dr),
                    &format!("default request value {dr} is greater than max value {mx}"),
                ));
            }
            if let (Some(dr), Some(d)) = (dr, d)
                && dr > d
            {
                errs.push(FieldError::invalid(
                    &p.child("defaultRequest").key(k),
                    quoted(dr),
                    &format!("default request value {dr} is greater than default limit value {d}"),
                ));
            }
            if let (Some(d), Some(mn)) = (d, mn)
                && mn > d
            {
                errs.push(FieldError::invalid(
                    &p.child("default").key(k),
                    quoted(d),
                    &format!("min value {mn} is greater than default value {d}"),
                ));
            }
            if let (Some(d), Some(mx)) = (d, mx)
                && d > mx
            {
                errs.push(FieldError::invalid(
                    &p.child("default").key(k),
                    quoted(d),
                    &format!("default value {d} is greater than max value {mx}"),
                ));
            }
            if let Some(r) = r {
                let one =
                    Quantity::from_units(1, wasmkube_api::quantity::QuantityFormat::DecimalSI);
                if *r < one {
                    errs.push(FieldError::invalid(
                        &p.child("maxLimitRequestRatio").key(k),
                        quoted(r),
                        &format!("ratio {r} is less than 1"),
                    ));
                }
                if let (Some(mn), Some(mx)) = (mn, mx)
                    && !mn.is_zero()
                {
                    let allowed = mx.milli_value() as f64 / mn.milli_value() as f64;
                    let ratio = r.milli_value() as f64 / 1000.0;
                    if ratio > allowed {
                        errs.push(FieldError::invalid(
                            &p.child("maxLimitRequestRatio").key(k),
                            quoted(r),
                            &format!("ratio {r} is greater than max/min = {allowed:.6}"),
                        ));
                    }
                }
            }
        }
    }
    causes(errs)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::summary;
    use super::*;

    #[test]
    fn quota_names_quantities_and_scopes_are_checked() {
        let q = json!({"spec": {
            "hard": {"pods": "1.5", "cpu": "-1", "gpus": "1", "count/deployments.apps": "2"},
            "scopes": ["BestEffort", "Sometimes"],
        }});
        assert_eq!(
            summary(&validate_resource_quota(&q, None)),
            vec![
                "spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.hard[gpus]: Invalid value: \"gpus\": must be a standard resource for quota",
                "spec.hard[pods]: Invalid value: \"1500m\": must be an integer",
                "spec.scopes[1]: Unsupported value: \"Sometimes\": supported values: \"Terminating\", \"NotTerminating\", \"BestEffort\", \"NotBestEffort\", \"PriorityClass\", \"CrossNamespacePodAffinity\", \"VolumeAttributesClass\"",
            ]
        );
    }

    #[test]
    fn limit_range_defaults_follow_max_default_and_min() {
        let mut lr = json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "32Mi"}},
            {"type": "Pod", "max": {"cpu": "2"}},
        ]}});
        default_limit_range(&mut lr);
        assert_eq!(
            lr["spec"]["limits"][0],
            json!({"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "32Mi"},
                   "default": {"cpu": "1"}, "defaultRequest": {"cpu": "1", "memory": "32Mi"}})
        );
        assert_eq!(
            lr["spec"]["limits"][1],
            json!({"type": "Pod", "max": {"cpu": "2"}})
        );
    }

    #[test]
    fn limit_range_relations_are_checked() {
        let lr = json!({"spec": {"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"memory": "500m"}},
            {"type": "Pod", "default": {"cpu": "1"}},
            {"type": "Node"},
        ]}});
        assert_eq!(
            summary(&validate_limit_range(&lr, None)),
            vec![
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
                "spec.limits[0].maxLimitRequestRatio[memory]: Invalid value: \"500m\": ratio 500m is less than 1",
                "spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'",
                "spec.limits[2].type: Unsupported value: \"Node\": supported values: \"Pod\", \"Container\", \"PersistentVolumeClaim\"",
            ]
        );
    }
}
