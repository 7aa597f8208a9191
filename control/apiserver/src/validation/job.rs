//! Jobs (batch/v1): run-to-completion workloads. Besides the selector/template rules of
//! every workload (see `workload`), a Job's counters and completion mode are checked, and
//! a running Job's selector, completions and template never change.
//!
//! Selectors: unless `spec.manualSelector` is true, Kubernetes generates the selector
//! `batch.kubernetes.io/controller-uid: <uid>` and the matching template labels when the
//! Job is created. The handlers assign `metadata.uid` before defaulting, so [`default_job`]
//! does it from `metadata.uid`; without a uid it leaves the selector alone.

use serde_json::{Map, Value, json};
use wasmkube_api::field::{FieldError, FieldPath, Rendered};

use super::metadata::{go_label_selector, nonnegative};
use super::workload::{
    default_template, go_selector, immutable, parse_selector, selector_and_template_errors,
    spec_mut,
};
use super::{Cause, causes, get_i64, get_str, object_entry, set_default, string_map};

const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// Job defaults: completions and parallelism 1 (when both unset), backoffLimit 6,
/// completionMode NonIndexed, suspend false, podReplacementPolicy, the generated
/// controller-uid selector and labels (from `metadata.uid`, unless manualSelector), and
/// the Job's labels copied from its template when it has none.
pub fn default_job(obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = spec_mut(obj) else { return };
    let unset = |s: &Map<String, Value>, k: &str| s.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let backoff = if unset(spec, "backoffLimitPerIndex") {
        6
    } else {
        i64::from(i32::MAX)
    };
    set_default(spec, "backoffLimit", json!(backoff));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual && !uid.is_empty() {
        let template = object_entry(spec, "template");
        let labels = object_entry(object_entry(template, "metadata"), "labels");
        for (key, value) in [
            (LEGACY_JOB_NAME_LABEL, &name),
            (JOB_NAME_LABEL, &name),
            (LEGACY_CONTROLLER_UID_LABEL, &uid),
            (CONTROLLER_UID_LABEL, &uid),
        ] {
            labels.entry(key).or_insert_with(|| json!(value));
        }
        let selector = object_entry(spec, "selector");
        object_entry(selector, "matchLabels")
            .entry(CONTROLLER_UID_LABEL)
            .or_insert_with(|| json!(uid));
    }
    default_template(spec);
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let (Some(labels @ Value::Object(_)), Some(root)) = (template_labels, obj.as_object_mut()) {
        let meta = object_entry(root, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            meta.insert("labels".into(), labels);
        }
    }
}

/// Validates a Job.
pub fn validate_job(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let path = FieldPath::new("spec");
    let mut errs = Vec::new();
    for field in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        if let Some(v) = get_i64(spec, field) {
            errs.extend(nonnegative(v, &path.child(field)));
        }
    }
    match get_str(spec, "completionMode") {
        "" | "NonIndexed" => {}
        "Indexed" => {
            if spec.get("completions").is_none_or(Value::is_null) {
                errs.push(FieldError::required(
                    &path.child("completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    errs.extend(selector_and_template_errors(
        spec,
        &path,
        "",
        &["OnFailure", "Never"],
    ));
    errs.extend(generated_selector_errors(obj, spec, &path));
    if let Some(old) = old {
        // Compared with defaults applied, as Kubernetes defaults objects read from storage.
        let mut old = old.clone();
        default_job(&mut old);
        let old_spec = old.get("spec").unwrap_or(&Value::Null);
        errs.extend(immutable(
            spec.get("selector"),
            old_spec.get("selector"),
            &path.child("selector"),
            go_selector,
        ));
        if get_str(spec, "completionMode") != "Indexed" {
            errs.extend(immutable(
                spec.get("completions"),
                old_spec.get("completions"),
                &path.child("completions"),
                |v| Rendered(super::compact(v)),
            ));
        }
        // Kubernetes lets suspended Jobs change their template (scheduling directives).
        let suspended = old_spec.get("suspend").and_then(Value::as_bool) == Some(true);
        if !suspended {
            errs.extend(immutable(
                spec.get("template"),
                old_spec.get("template"),
                &path.child("template"),
                |v| Rendered(super::compact(v)),
            ));
        }
    }
    causes(errs)
}

/// Without `manualSelector`, the selector must be the generated one: it has to select the
/// labels Kubernetes generates (controller-uid and job-name), which the template carries.
fn generated_selector_errors(obj: &Value, spec: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) || uid.is_empty() {
        return errs;
    }
    let Some(selector) = spec.get("selector").filter(|v| !v.is_null()) else {
        return errs;
    };
    let expected: std::collections::BTreeMap<String, String> = [
        (CONTROLLER_UID_LABEL, uid),
        (LEGACY_CONTROLLER_UID_LABEL, uid),
        (JOB_NAME_LABEL, name),
        (LEGACY_JOB_NAME_LABEL, name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let generated = selector.get("matchLabels").is_some_and(Value::is_object)
        && parse_selector(Some(selector)).is_ok_and(|s| s.matches(&expected));
    if !generated {
        errs.push(FieldError::invalid(
            &path.child("selector"),
            go_label_selector(selector),
            "`selector` not auto-generated",
        ));
    }
    let labels_path = path.child("template").child("metadata").child("labels");
    let labels = string_map(spec.pointer("/template/metadata/labels"));
    for (key, want) in [(CONTROLLER_UID_LABEL, uid), (JOB_NAME_LABEL, name)] {
        match labels.get(key) {
            None => errs.push(FieldError::required(
                &labels_path.key(key),
                &format!("must be '{want}'"),
            )),
            Some(v) if v != want => {
                errs.push(FieldError::invalid(
                    &labels_path.key(key),
                    &labels,
                    &format!("must be '{want}'"),
                ));
            }
            Some(_) => {}
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};
    use crate::validation::workload::tests::template;

    fn job(spec: Value) -> Value {
        let mut j =
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u-1"}, "spec": spec});
        default_job(&mut j);
        j
    }

    #[test]
    fn jobs_get_defaults_and_a_generated_selector() {
        let j = job(json!({"template": template(json!(null), "Never")}));
        let spec = &j["spec"];
        assert_eq!(
            (
                &spec["completions"],
                &spec["parallelism"],
                &spec["backoffLimit"],
                &spec["completionMode"],
                &spec["suspend"]
            ),
            (
                &json!(1),
                &json!(1),
                &json!(6),
                &json!("NonIndexed"),
                &json!(false)
            )
        );
        assert_eq!(spec["podReplacementPolicy"], json!("TerminatingOrFailed"));
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = json!({
            "batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "pi",
            "controller-uid": "u-1", "job-name": "pi"
        });
        assert_eq!(spec["template"]["metadata"]["labels"], labels);
        assert_eq!(j["metadata"]["labels"], labels);
        assert_eq!(validate_job(&j, None), vec![]);
        let parallel = job(json!({"parallelism": 3, "template": template(json!(null), "Never")}));
        assert_eq!(parallel["spec"].get("completions"), None);
    }

    #[test]
    fn jobs_need_a_non_always_restart_policy() {
        let j = job(json!({"template": template(json!(null), "Always")}));
        assert_eq!(
            summary(&validate_job(&j, None)),
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn a_user_selector_needs_manual_selector() {
        let j = job(
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}), "Never")}),
        );
        assert_eq!(fields(&validate_job(&j, None)), vec!["spec.selector"]);
        assert!(summary(&validate_job(&j, None))[0].ends_with("`selector` not auto-generated"));
        let manual = job(
            json!({"manualSelector": true, "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}), "Never")}),
        );
        assert_eq!(validate_job(&manual, None), vec![]);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"app": "x"}})
        );
    }

    #[test]
    fn job_counters_and_modes_are_checked() {
        let j = job(
            json!({"backoffLimit": -1, "completionMode": "Sometimes", "template": template(json!(null), "Never")}),
        );
        assert_eq!(
            summary(&validate_job(&j, None)),
            vec![
                "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.completionMode: Unsupported value: \"Sometimes\": supported values: \"NonIndexed\", \"Indexed\"",
            ]
        );
    }

    #[test]
    fn running_jobs_keep_their_template_and_selector() {
        let old = job(json!({"template": template(json!(null), "Never")}));
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("reg/app:2");
        assert_eq!(
            fields(&validate_job(&new, Some(&old))),
            vec!["spec.template"]
        );
        let mut suspended = old.clone();
        suspended["spec"]["suspend"] = json!(true);
        let mut changed = suspended.clone();
        changed["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        assert_eq!(validate_job(&changed, Some(&suspended)), vec![]);
    }
}
