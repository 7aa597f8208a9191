//! Knative Serving (`serving.knative.dev/v1`) defaulting and validation: Service,
//! Configuration, Revision and Route, as Knative's webhook (`pkg/apis/serving/v1`
//! `SetDefaults` / `Validate`) does, answered as Kubernetes answers (422 with field causes).
//!
//! Defaults: the serving container is named `user-container`, `timeoutSeconds` 300,
//! `containerConcurrency` 0, and a Service without `traffic` sends 100 % to its latest
//! Revision (a target without `revisionName` follows the latest). Checks: the revision's pod
//! spec with Kubernetes' pod rules (after Kubernetes' pod defaults, on a copy), exactly one
//! port at most on the serving container, the autoscaling annotations with Knative's bounds
//! (min-scale <= max-scale, a target >= 0.01, known metrics and classes, a window of 6 s to
//! 1 h), and the traffic: percents 0-100 summing to 100, unique DNS-label tags, a target
//! naming one of `revisionName` / `configurationName` (a Service names no configuration),
//! `latestRevision: true` without a `revisionName`.

use serde_json::{Map, Value, json};
use wasmkube_api::field::{FieldError, FieldPath};
use wasmkube_api::knative;
use wasmkube_api::validate::is_dns1123_label;

use super::pod::pod_spec_errors;
use super::pod_defaults::default_pod_spec;
use super::{Cause, causes, get_list, get_str, object_entry};

/// Fields of a Knative RevisionSpec that are not a PodSpec's.
const REVISION_ONLY_FIELDS: &[&str] = &[
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
];

/// Defaults of a RevisionSpec (the Revision's `spec`, a template's `spec`).
fn default_revision_spec(spec: &mut Map<String, Value>) {
    if spec.get("timeoutSeconds").is_none_or(Value::is_null) {
        spec.insert(
            "timeoutSeconds".into(),
            json!(knative::DEFAULT_TIMEOUT_SECONDS),
        );
    }
    if spec.get("containerConcurrency").is_none_or(Value::is_null) {
        spec.insert("containerConcurrency".into(), json!(0));
    }
    if let Some(Value::Array(containers)) = spec.get_mut("containers") {
        let single = containers.len() == 1;
        for (i, c) in containers.iter_mut().enumerate() {
            let Some(c) = c.as_object_mut() else { continue };
            if c.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                let name = if single || i == 0 {
                    knative::DEFAULT_CONTAINER_NAME.to_string()
                } else {
                    format!("{}-{i}", knative::DEFAULT_CONTAINER_NAME)
                };
                c.insert("name".into(), json!(name));
            }
        }
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    let template = object_entry(spec, "template");
    default_revision_spec(object_entry(template, "spec"));
}

/// Traffic targets without a `revisionName` follow the latest ready Revision.
fn default_traffic(spec: &mut Map<String, Value>, service: bool) {
    let missing = spec
        .get("traffic")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if missing {
        if service {
            spec.insert(
                "traffic".into(),
                json!([{"latestRevision": true, "percent": 100}]),
            );
        }
        return;
    }
    if let Some(Value::Array(traffic)) = spec.get_mut("traffic") {
        for t in traffic.iter_mut().filter_map(Value::as_object_mut) {
            let named = t
                .get("revisionName")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !named && t.get("latestRevision").is_none_or(Value::is_null) {
                t.insert("latestRevision".into(), json!(true));
            }
        }
    }
}

/// Defaults of a Knative Service.
pub fn default_knative_service(obj: &mut Value) {
    let Some(spec) = obj.as_object_mut().map(|o| object_entry(o, "spec")) else {
        return;
    };
    default_template(spec);
    default_traffic(spec, true);
}

/// Defaults of a Configuration.
pub fn default_configuration(obj: &mut Value) {
    if let Some(spec) = obj.as_object_mut().map(|o| object_entry(o, "spec")) {
        default_template(spec);
    }
}

/// Defaults of a Revision.
pub fn default_revision(obj: &mut Value) {
    if let Some(spec) = obj.as_object_mut().map(|o| object_entry(o, "spec")) {
        default_revision_spec(spec);
    }
}

/// Defaults of a Route.
pub fn default_route(obj: &mut Value) {
    if let Some(spec) = obj.as_object_mut().map(|o| object_entry(o, "spec")) {
        default_traffic(spec, false);
    }
}

/// The autoscaling annotations of `metadata` (at `path`), with Knative's bounds.
fn annotation_errors(metadata: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let annotations = knative::annotations_of(metadata);
    match knative::autoscaling(&annotations) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| {
                FieldError::invalid(
                    &path.child("annotations").key(e.key),
                    e.value.as_str(),
                    &e.message,
                )
            })
            .collect(),
    }
}

/// A RevisionSpec: Knative's own fields, then the pod spec under Kubernetes' rules.
fn revision_spec_errors(spec: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(object) = spec.as_object() else {
        errs.push(FieldError::required(path, ""));
        return errs;
    };
    if let Some(v) = object.get("containerConcurrency") {
        match v.as_i64() {
            Some(n) if (0..=1000).contains(&n) => {}
            _ => errs.push(FieldError::invalid(
                &path.child("containerConcurrency"),
                v,
                "expected 0 <= containerConcurrency <= 1000",
            )),
        }
    }
    for field in [
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "idleTimeoutSeconds",
    ] {
        if let Some(v) = object.get(field) {
            match v.as_i64() {
                Some(n) if (0..=600).contains(&n) => {}
                _ => errs.push(FieldError::invalid(
                    &path.child(field),
                    v,
                    &format!("expected 0 <= {field} <= 600"),
                )),
            }
        }
    }
    let containers = get_list(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldError::required(&path.child("containers"), ""));
        return errs;
    }
    let mut with_ports = 0;
    for (i, c) in containers.iter().enumerate() {
        let ports = get_list(c, "ports");
        if ports.len() > 1 {
            errs.push(FieldError::invalid(
                &path.child("containers").index(i).child("ports"),
                ports.len() as i64,
                "more than one container port is set",
            ));
        }
        if !ports.is_empty() {
            with_ports += 1;
        }
    }
    if containers.len() > 1 && with_ports != 1 {
        errs.push(FieldError::invalid(
            &path.child("containers"),
            with_ports as i64,
            "exactly one container must specify a port",
        ));
    }
    // Kubernetes' pod rules on a copy with Kubernetes' pod defaults, as the Deployment the
    // Revision becomes will be checked.
    let mut pod = object.clone();
    for field in REVISION_ONLY_FIELDS {
        pod.remove(*field);
    }
    default_pod_spec(&mut pod);
    errs.extend(pod_spec_errors(&Value::Object(pod), path, false));
    errs
}

/// A revision template: its metadata's annotations and its spec.
fn template_errors(template: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let Some(template) = template.filter(|t| t.is_object()) else {
        return vec![FieldError::required(path, "")];
    };
    let mut errs = annotation_errors(template.get("metadata"), &path.child("metadata"));
    errs.extend(revision_spec_errors(
        template.get("spec").unwrap_or(&Value::Null),
        &path.child("spec"),
    ));
    errs
}

/// Traffic targets (`in_service`: a Service's, which name no configuration).
fn traffic_errors(traffic: &[Value], path: &FieldPath, in_service: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut sum = 0i64;
    let mut tags: Vec<&str> = Vec::new();
    for (i, t) in traffic.iter().enumerate() {
        let p = path.index(i);
        let revision = get_str(t, "revisionName");
        let configuration = get_str(t, "configurationName");
        let latest = t.get("latestRevision").and_then(Value::as_bool);
        if in_service && !configuration.is_empty() {
            errs.push(FieldError::forbidden(
                &p.child("configurationName"),
                "a Service's traffic names no configuration",
            ));
        }
        if !revision.is_empty() && !configuration.is_empty() {
            errs.push(FieldError::invalid(
                &p,
                "revisionName and configurationName",
                "expected exactly one, got both",
            ));
        }
        if latest == Some(true) && !revision.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("latestRevision"),
                "true",
                "may not set revisionName if latestRevision is true",
            ));
        }
        if latest == Some(false) && revision.is_empty() {
            errs.push(FieldError::required(
                &p.child("revisionName"),
                "latestRevision is false",
            ));
        }
        if !in_service && revision.is_empty() && configuration.is_empty() {
            errs.push(FieldError::required(
                &p,
                "expected exactly one of revisionName, configurationName",
            ));
        }
        match t.get("percent") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64() {
                Some(n) if (0..=100).contains(&n) => sum += n,
                _ => errs.push(FieldError::invalid(
                    &p.child("percent"),
                    v,
                    &format!("expected 0 <= {v} <= 100"),
                )),
            },
        }
        let tag = get_str(t, "tag");
        if !tag.is_empty() {
            for message in is_dns1123_label(tag) {
                errs.push(FieldError::invalid(&p.child("tag"), tag, &message));
            }
            if tags.contains(&tag) {
                errs.push(FieldError::duplicate(&p.child("tag"), tag));
            }
            tags.push(tag);
        }
    }
    if !traffic.is_empty() && sum != 100 {
        errs.push(FieldError::invalid(
            path,
            sum,
            &format!("Traffic targets sum to {sum}, want 100"),
        ));
    }
    errs
}

/// Validates a Knative Service.
pub fn validate_knative_service(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let path = FieldPath::new("spec");
    let mut errs = template_errors(spec.get("template"), &path.child("template"));
    errs.extend(traffic_errors(
        get_list(spec, "traffic"),
        &path.child("traffic"),
        true,
    ));
    causes(errs)
}

/// Validates a Configuration.
pub fn validate_configuration(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    causes(template_errors(
        spec.get("template"),
        &FieldPath::new("spec").child("template"),
    ))
}

/// Validates a Revision (its spec is immutable, as Knative's).
pub fn validate_revision(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = annotation_errors(obj.get("metadata"), &FieldPath::new("metadata"));
    errs.extend(revision_spec_errors(
        obj.get("spec").unwrap_or(&Value::Null),
        &FieldPath::new("spec"),
    ));
    if let Some(old) = old
        && old.get("spec") != obj.get("spec")
    {
        errs.push(FieldError::forbidden(
            &FieldPath::new("spec"),
            "a Revision's spec is immutable",
        ));
    }
    causes(errs)
}

/// Validates a Route.
pub fn validate_route(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    causes(traffic_errors(
        get_list(spec, "traffic"),
        &FieldPath::new("spec").child("traffic"),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::summary;
    use super::*;

    fn hello() -> Value {
        json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "hello"},
            "spec": {"template": {"spec": {"containers": [{
                "image": "ghcr.io/knative/helloworld-go:latest",
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "TARGET", "value": "World"}],
            }]}}},
        })
    }

    #[test]
    fn the_docs_hello_world_is_defaulted_and_valid() {
        let mut svc = hello();
        default_knative_service(&mut svc);
        assert_eq!(
            svc["spec"]["template"]["spec"]["containers"][0]["name"],
            "user-container"
        );
        assert_eq!(svc["spec"]["template"]["spec"]["timeoutSeconds"], 300);
        assert_eq!(
            svc["spec"]["traffic"],
            json!([{"latestRevision": true, "percent": 100}])
        );
        assert_eq!(validate_knative_service(&svc, None), vec![]);
    }

    #[test]
    fn min_scale_above_max_scale_names_the_annotation() {
        let mut svc = hello();
        svc["spec"]["template"]["metadata"] = json!({"annotations": {
            "autoscaling.knative.dev/min-scale": "5",
            "autoscaling.knative.dev/max-scale": "3",
        }});
        default_knative_service(&mut svc);
        assert_eq!(
            summary(&validate_knative_service(&svc, None)),
            [
                "spec.template.metadata.annotations[autoscaling.knative.dev/max-scale]: Invalid value: \"3\": max-scale=3 is less than min-scale=5"
            ]
        );
    }

    #[test]
    fn a_negative_target_is_out_of_bounds() {
        let mut svc = hello();
        svc["spec"]["template"]["metadata"] =
            json!({"annotations": {"autoscaling.knative.dev/target": "-1"}});
        default_knative_service(&mut svc);
        assert_eq!(
            summary(&validate_knative_service(&svc, None)),
            [
                "spec.template.metadata.annotations[autoscaling.knative.dev/target]: Invalid value: \"-1\": expected 0.01 <= -1 <= 3.402823e+38"
            ]
        );
    }

    #[test]
    fn traffic_must_sum_to_one_hundred() {
        let mut svc = hello();
        svc["spec"]["traffic"] = json!([
            {"revisionName": "hello-00001", "percent": 50},
            {"latestRevision": true, "percent": 40},
        ]);
        default_knative_service(&mut svc);
        assert_eq!(
            summary(&validate_knative_service(&svc, None)),
            ["spec.traffic: Invalid value: 90: Traffic targets sum to 90, want 100"]
        );
    }

    #[test]
    fn tags_are_unique_dns_labels_and_percents_bounded() {
        let mut route = json!({"spec": {"traffic": [
            {"configurationName": "c", "percent": 120, "tag": "Bad_Tag"},
            {"revisionName": "r", "configurationName": "c", "percent": -20, "tag": "Bad_Tag"},
        ]}});
        default_route(&mut route);
        let fields: Vec<String> = validate_route(&route, None)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.traffic[0].percent",
                "spec.traffic[0].tag",
                "spec.traffic[1]",
                "spec.traffic[1].percent",
                "spec.traffic[1].tag",
                "spec.traffic[1].tag",
                "spec.traffic",
            ]
        );
    }

    #[test]
    fn a_template_without_an_image_is_refused_with_the_pod_rules() {
        let mut svc = hello();
        svc["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        default_knative_service(&mut svc);
        let fields: Vec<String> = validate_knative_service(&svc, None)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["spec.template.spec.containers[0].image"]);
    }

    #[test]
    fn revision_specs_are_immutable() {
        let mut rev = json!({"spec": {"containers": [{"image": "a"}]}});
        default_revision(&mut rev);
        let mut changed = rev.clone();
        changed["spec"]["containers"][0]["image"] = json!("b");
        assert_eq!(
            summary(&validate_revision(&changed, Some(&rev))),
            ["spec: Forbidden: a Revision's spec is immutable"]
        );
    }
}
