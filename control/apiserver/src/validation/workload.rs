//! Replicated workloads of apps/v1: Deployment, ReplicaSet and DaemonSet. Each has a
//! label selector that must select its pod template, a template validated as a pod spec
//! under `spec.template.spec`, its own counters and update strategy, and the apps/v1 rule
//! that the selector never changes. The selector/template helpers are shared with `job`.

use serde_json::{Map, Value, json};
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::selector::LabelSelector;
use wasmkube_api::validate::is_valid_percent;

use super::metadata::{
    go_label_selector, go_labels, label_selector_errors, nonnegative, template_meta_errors,
};
use super::pod::pod_spec_errors;
use super::pod_defaults::default_pod_spec;
use super::{Cause, causes, get_i64, get_str, object_entry, set_default, string_map};

/// Deployment defaults: replicas 1, RollingUpdate 25%/25%, revisionHistoryLimit 10,
/// progressDeadlineSeconds 600, and pod template defaults.
pub fn default_deployment(obj: &mut Value) {
    let Some(spec) = spec_mut(obj) else { return };
    set_default(spec, "replicas", json!(1));
    let strategy = object_entry(spec, "strategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = object_entry(strategy, "rollingUpdate");
        set_default(rolling, "maxUnavailable", json!("25%"));
        set_default(rolling, "maxSurge", json!("25%"));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

/// ReplicaSet defaults: replicas 1 and pod template defaults.
pub fn default_replicaset(obj: &mut Value) {
    let Some(spec) = spec_mut(obj) else { return };
    set_default(spec, "replicas", json!(1));
    default_template(spec);
}

/// DaemonSet defaults: RollingUpdate with maxUnavailable 1 / maxSurge 0,
/// revisionHistoryLimit 10, and pod template defaults.
pub fn default_daemonset(obj: &mut Value) {
    let Some(spec) = spec_mut(obj) else { return };
    let strategy = object_entry(spec, "updateStrategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = object_entry(strategy, "rollingUpdate");
        set_default(rolling, "maxUnavailable", json!(1));
        set_default(rolling, "maxSurge", json!(0));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_template(spec);
}

pub(super) fn spec_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    Some(object_entry(obj.as_object_mut()?, "spec"))
}

pub(super) fn default_template(spec: &mut Map<String, Value>) {
    let template = object_entry(spec, "template");
    default_pod_spec(object_entry(template, "spec"));
}

/// Validates a Deployment.
pub fn validate_deployment(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let path = FieldPath::new("spec");
    let mut errs = replicated_errors(spec, &path, "deployment");
    errs.extend(deployment_strategy_errors(
        spec.get("strategy").unwrap_or(&Value::Null),
        &path.child("strategy"),
    ));
    if let Some(limit) = get_i64(spec, "revisionHistoryLimit") {
        errs.extend(nonnegative(limit, &path.child("revisionHistoryLimit")));
    }
    if let Some(deadline) = get_i64(spec, "progressDeadlineSeconds") {
        if deadline <= 0 {
            errs.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                deadline,
                "must be greater than zero",
            ));
        }
        if deadline <= get_i64(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs.extend(immutable_selector(obj, old));
    causes(errs)
}

/// Validates a ReplicaSet.
pub fn validate_replicaset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = replicated_errors(spec, &FieldPath::new("spec"), "deployment");
    errs.extend(immutable_selector(obj, old));
    causes(errs)
}

/// Validates a DaemonSet.
pub fn validate_daemonset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let path = FieldPath::new("spec");
    let mut errs = selector_and_template_errors(spec, &path, "daemonset", &["Always"]);
    if let Some(deadline) = spec
        .pointer("/template/spec/activeDeadlineSeconds")
        .filter(|v| !v.is_null())
    {
        errs.push(FieldError::invalid(
            &path
                .child("template")
                .child("spec")
                .child("activeDeadlineSeconds"),
            deadline,
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    for field in [
        "minReadySeconds",
        "templateGeneration",
        "revisionHistoryLimit",
    ] {
        if let Some(v) = get_i64(spec, field) {
            errs.extend(nonnegative(v, &path.child(field)));
        }
    }
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    let spath = path.child("updateStrategy");
    match get_str(strategy, "type") {
        "OnDelete" => {}
        "RollingUpdate" if strategy.get("rollingUpdate").is_none_or(Value::is_null) => {
            errs.push(FieldError::required(&spath.child("rollingUpdate"), ""));
        }
        "RollingUpdate" => {
            let rolling = strategy.get("rollingUpdate").unwrap_or(&Value::Null);
            let rpath = spath.child("rollingUpdate");
            let unavailable = rolling.get("maxUnavailable");
            let surge = rolling.get("maxSurge");
            errs.extend(int_or_percent_errors(
                unavailable,
                &rpath.child("maxUnavailable"),
            ));
            errs.extend(int_or_percent_errors(surge, &rpath.child("maxSurge")));
            errs.extend(not_more_than_100_percent(
                unavailable,
                &rpath.child("maxUnavailable"),
            ));
            errs.extend(not_more_than_100_percent(surge, &rpath.child("maxSurge")));
            match (int_or_percent(unavailable) != 0, int_or_percent(surge) != 0) {
                (true, true) => errs.push(FieldError::invalid(
                    &rpath.child("maxSurge"),
                    int_or_string(surge),
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => errs.push(FieldError::required(
                    &rpath.child("maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                )),
                _ => {}
            }
        }
        other => errs.push(FieldError::not_supported(
            &spath.child("type"),
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    errs.extend(immutable_selector(obj, old));
    causes(errs)
}

/// Deployment and ReplicaSet: replicas, minReadySeconds, selector and template.
fn replicated_errors(spec: &Value, path: &FieldPath, kind: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["replicas", "minReadySeconds"] {
        if let Some(v) = get_i64(spec, field) {
            errs.extend(nonnegative(v, &path.child(field)));
        }
    }
    errs.extend(selector_and_template_errors(spec, path, kind, &["Always"]));
    if spec
        .pointer("/template/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        errs.push(FieldError::forbidden(
            &path
                .child("template")
                .child("spec")
                .child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

/// The selector (required, valid, non-empty when `kind` is given), that it selects the
/// template's labels, the template as a pod spec, and the allowed restart policies.
pub(super) fn selector_and_template_errors(
    spec: &Value,
    path: &FieldPath,
    kind: &str,
    restart: &[&str],
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sel_path = path.child("selector");
    let selector_value = spec.get("selector").filter(|v| !v.is_null());
    match selector_value {
        None => errs.push(FieldError::required(&sel_path, "")),
        Some(sel) => {
            errs.extend(label_selector_errors(sel, &sel_path));
            let terms = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .map_or(0, Map::len)
                + sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
            if terms == 0 && !kind.is_empty() {
                errs.push(FieldError::invalid(
                    &sel_path,
                    go_label_selector(sel),
                    &format!("empty selector is invalid for {kind}"),
                ));
            }
        }
    }
    let template = spec.get("template").unwrap_or(&Value::Null);
    let tpath = path.child("template");
    let labels = template.pointer("/metadata/labels");
    match parse_selector(selector_value) {
        Err(()) => {
            if let Some(sel) = selector_value {
                errs.push(FieldError::invalid(
                    &sel_path,
                    go_label_selector(sel),
                    "invalid label selector",
                ));
            }
        }
        Ok(selector) if !selector.is_empty() && !selector.matches(&string_map(labels)) => {
            errs.push(FieldError::invalid(
                &tpath.child("metadata").child("labels"),
                go_labels(labels),
                "`selector` does not match template `labels`",
            ));
        }
        Ok(_) => {}
    }
    errs.extend(template_meta_errors(
        template.get("metadata"),
        &tpath.child("metadata"),
    ));
    let pod_spec = template.get("spec").unwrap_or(&Value::Null);
    errs.extend(pod_spec_errors(pod_spec, &tpath.child("spec"), false));
    let policy = get_str(pod_spec, "restartPolicy");
    if !policy.is_empty() && !restart.contains(&policy) {
        errs.push(FieldError::not_supported(
            &tpath.child("spec").child("restartPolicy"),
            policy,
            restart,
        ));
    }
    errs
}

/// `metav1.LabelSelectorAsSelector`: a missing selector selects nothing.
pub(super) fn parse_selector(selector: Option<&Value>) -> Result<LabelSelector, ()> {
    let Some(value) = selector else {
        return Ok(LabelSelector::nothing());
    };
    let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(value.clone()).map_err(|_| ())?;
    LabelSelector::from_k8s(&typed).map_err(|_| ())
}

fn deployment_strategy_errors(strategy: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rolling = strategy.get("rollingUpdate").filter(|v| !v.is_null());
    match get_str(strategy, "type") {
        "Recreate" => {
            if rolling.is_some() {
                errs.push(FieldError::forbidden(
                    &path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match rolling {
            None => errs.push(FieldError::required(
                &path.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(r) => {
                let rpath = path.child("rollingUpdate");
                let unavailable = r.get("maxUnavailable");
                let surge = r.get("maxSurge");
                errs.extend(int_or_percent_errors(
                    unavailable,
                    &rpath.child("maxUnavailable"),
                ));
                errs.extend(int_or_percent_errors(surge, &rpath.child("maxSurge")));
                if int_or_percent(unavailable) == 0 && int_or_percent(surge) == 0 {
                    errs.push(FieldError::invalid(
                        &rpath.child("maxUnavailable"),
                        int_or_string(unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                errs.extend(not_more_than_100_percent(
                    unavailable,
                    &rpath.child("maxUnavailable"),
                ));
            }
        },
        other => errs.push(FieldError::not_supported(
            path,
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    errs
}

/// An int-or-string as Kubernetes prints it (its `String()`, unquoted).
fn int_or_string(v: Option<&Value>) -> Rendered {
    Rendered(match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".into(),
    })
}

/// The number of an int-or-percent (`25%` -> 25, `3` -> 3); unparsable is 0.
fn int_or_percent(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.trim_end_matches('%').parse().unwrap_or(0),
        Some(v) => v.as_i64().unwrap_or(0),
        None => 0,
    }
}

fn int_or_percent_errors(v: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    match v {
        Some(Value::String(s)) => is_valid_percent(s)
            .iter()
            .map(|m| FieldError::invalid(path, int_or_string(v), m))
            .collect(),
        Some(n) => nonnegative(n.as_i64().unwrap_or(0), path),
        None => Vec::new(),
    }
}

fn not_more_than_100_percent(v: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    match v {
        Some(Value::String(s)) if is_valid_percent(s).is_empty() && int_or_percent(v) > 100 => {
            vec![FieldError::invalid(
                path,
                int_or_string(v),
                "must not be greater than 100%",
            )]
        }
        _ => Vec::new(),
    }
}

pub(super) fn go_selector(v: &Value) -> Rendered {
    go_label_selector(v)
}

/// `field is immutable` when `new` differs from `old` (missing and null are equal).
pub(super) fn immutable(
    new: Option<&Value>,
    old: Option<&Value>,
    path: &FieldPath,
    show: impl Fn(&Value) -> Rendered,
) -> Vec<FieldError> {
    let new = new.filter(|v| !v.is_null());
    let old = old.filter(|v| !v.is_null());
    if new == old {
        return Vec::new();
    }
    vec![FieldError::invalid(
        path,
        show(new.unwrap_or(&Value::Null)),
        "field is immutable",
    )]
}

/// apps/v1 selectors never change.
fn immutable_selector(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let Some(old) = old else {
        return Vec::new();
    };
    immutable(
        obj.pointer("/spec/selector"),
        old.pointer("/spec/selector"),
        &FieldPath::new("spec").child("selector"),
        go_selector,
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};

    /// A valid pod template with these labels and restart policy.
    pub(in crate::validation) fn template(labels: Value, restart: &str) -> Value {
        json!({
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": restart, "dnsPolicy": "ClusterFirst", "containers": [
                {"name": "app", "image": "reg/app:1", "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File"}
            ]}
        })
    }

    fn deployment(spec: Value) -> Value {
        let mut d = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        default_deployment(&mut d);
        d
    }

    fn valid_deployment() -> Value {
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}), "Always")}),
        )
    }

    #[test]
    fn deployments_get_kubernetes_defaults() {
        let d = valid_deployment();
        assert_eq!(d["spec"]["replicas"], json!(1));
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], json!(10));
        assert_eq!(d["spec"]["progressDeadlineSeconds"], json!(600));
        assert_eq!(
            d["spec"]["template"]["spec"]["schedulerName"],
            json!("default-scheduler")
        );
        // Pod-only defaults stay out of templates.
        assert_eq!(
            d["spec"]["template"]["spec"].get("serviceAccountName"),
            None
        );
        let recreate = deployment(json!({"replicas": 0, "strategy": {"type": "Recreate"}}));
        assert_eq!(recreate["spec"]["replicas"], json!(0));
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn a_valid_deployment_passes_create_and_update() {
        let d = valid_deployment();
        assert_eq!(validate_deployment(&d, None), vec![]);
        assert_eq!(validate_deployment(&d, Some(&d)), vec![]);
    }

    #[test]
    fn the_selector_must_match_the_template_labels() {
        let d = deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "db"}), "Always")}),
        );
        assert_eq!(
            summary(&validate_deployment(&d, None)),
            vec![
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
            ]
        );
    }

    #[test]
    fn a_missing_selector_is_required_and_selects_nothing() {
        let d = deployment(json!({"template": template(json!({"app": "web"}), "Always")}));
        assert_eq!(
            fields(&validate_deployment(&d, None)),
            vec!["spec.selector", "spec.template.metadata.labels"]
        );
        let empty = deployment(
            json!({"selector": {}, "template": template(json!({"app": "web"}), "Always")}),
        );
        assert_eq!(
            summary(&validate_deployment(&empty, None)),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
            ]
        );
    }

    #[test]
    fn templates_are_validated_as_pod_specs_under_spec_template_spec() {
        let mut d = valid_deployment();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["template"]["metadata"]["labels"]["bad key"] = json!("x");
        assert_eq!(
            fields(&validate_deployment(&d, None)),
            vec![
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image",
                "spec.template.spec.restartPolicy",
            ]
        );
    }

    #[test]
    fn replicas_and_strategy_are_checked() {
        let mut d = valid_deployment();
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": "0%", "maxSurge": 0});
        d["spec"]["progressDeadlineSeconds"] = json!(5);
        d["spec"]["minReadySeconds"] = json!(10);
        assert_eq!(
            summary(&validate_deployment(&d, None)),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0%: may not be 0 when `maxSurge` is 0",
                "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds",
            ]
        );
        let mut bad = valid_deployment();
        bad["spec"]["strategy"] = json!({"type": "Rolling"});
        assert_eq!(
            summary(&validate_deployment(&bad, None)),
            vec![
                "spec.strategy: Unsupported value: \"Rolling\": supported values: \"Recreate\", \"RollingUpdate\""
            ]
        );
        let mut pct = valid_deployment();
        pct["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!("150%");
        pct["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!("x");
        assert_eq!(
            fields(&validate_deployment(&pct, None)),
            vec![
                "spec.strategy.rollingUpdate.maxSurge",
                "spec.strategy.rollingUpdate.maxUnavailable"
            ]
        );
    }

    #[test]
    fn selectors_are_immutable_on_update() {
        let old = valid_deployment();
        let mut new = valid_deployment();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("front");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("front");
        assert_eq!(
            summary(&validate_deployment(&new, Some(&old))),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"front\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
            ]
        );
    }

    #[test]
    fn replicasets_default_replicas_and_reject_deadlines() {
        let mut rs = json!({"metadata": {"name": "rs"}, "spec": {
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
            "template": template(json!({"app": "web"}), "Always")
        }});
        default_replicaset(&mut rs);
        assert_eq!(rs["spec"]["replicas"], json!(1));
        assert_eq!(validate_replicaset(&rs, None), vec![]);
        rs["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        assert_eq!(
            summary(&validate_replicaset(&rs, None)),
            vec![
                "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"
            ]
        );
    }

    #[test]
    fn daemonsets_default_their_update_strategy_and_validate_it() {
        let mut ds = json!({"metadata": {"name": "ds"}, "spec": {
            "selector": {"matchLabels": {"app": "agent"}}, "template": template(json!({"app": "agent"}), "Always")
        }});
        default_daemonset(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], json!(10));
        assert_eq!(validate_daemonset(&ds, None), vec![]);
        ds["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": 0});
        assert_eq!(
            summary(&validate_daemonset(&ds, None)),
            vec![
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
            ]
        );
        ds["spec"]["updateStrategy"] = json!({"type": "Sometimes"});
        assert_eq!(
            fields(&validate_daemonset(&ds, None)),
            vec!["spec.updateStrategy.type"]
        );
        ds["spec"]["selector"] = json!({});
        ds["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert_eq!(
            summary(&validate_daemonset(&ds, None)),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for daemonset"
            ]
        );
    }
}
