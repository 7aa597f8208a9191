//! Unknown-field detection against the published schemas: the check behind
//! `fieldValidation=Strict|Warn`, reporting paths the way Kubernetes' strict decoder does
//! (`spec.containers[0].foo`).

use serde_json::{Map, Value};

use super::schemas::REF_PREFIX;

/// Deeper than any Kubernetes object; stops runaway recursion on hostile input.
const MAX_DEPTH: usize = 64;

/// Follows `$ref` and single-element `allOf` wrappers to the schema that has the shape.
fn resolve<'a>(defs: &'a Map<String, Value>, mut schema: &'a Value) -> Option<&'a Value> {
    for _ in 0..8 {
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            schema = defs.get(target.strip_prefix(REF_PREFIX)?)?;
        } else if let Some(first) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            schema = first;
        } else {
            return Some(schema);
        }
    }
    None
}

fn walk(
    defs: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
    out: &mut Vec<String>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(schema) = resolve(defs, schema) else {
        return;
    };
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let join = |key: &str| {
                if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                }
            };
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map {
                    match props.get(key) {
                        Some(child_schema) => {
                            walk(defs, child_schema, child, &join(key), depth + 1, out)
                        }
                        None => out.push(join(key)),
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, child) in map {
                    walk(defs, values, child, &join(key), depth + 1, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    walk(defs, item_schema, item, &item_path, depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

/// The schema of `group`/`version`/`kind` among `defs`, found by its GVK extension.
fn kind_schema<'a>(
    defs: &'a Map<String, Value>,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<&'a Value> {
    defs.values().find(|schema| {
        schema
            .get("x-kubernetes-group-version-kind")
            .and_then(Value::as_array)
            .is_some_and(|gvks| {
                gvks.iter().any(|g| {
                    g.get("group").and_then(Value::as_str) == Some(group)
                        && g.get("version").and_then(Value::as_str) == Some(version)
                        && g.get("kind").and_then(Value::as_str) == Some(kind)
                })
            })
    })
}

/// Paths of the fields of `object` that the kind's schema does not declare.
pub(crate) fn unknown_fields(
    defs: &Map<String, Value>,
    group: &str,
    version: &str,
    kind: &str,
    object: &Value,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = kind_schema(defs, group, version, kind) {
        walk(defs, schema, object, "", 0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::openapi::OpenApi;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn a_valid_pod_has_no_unknown_fields() {
        let api = OpenApi::new(&Registry::builtin());
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "ports": [{"containerPort": 80}],
                                     "resources": {"limits": {"cpu": "1"}}}]}
        });
        assert!(api.unknown_fields("", "v1", "Pod", &pod).is_empty());
    }

    #[test]
    fn unknown_fields_are_reported_with_kubernetes_paths() {
        let api = OpenApi::new(&Registry::builtin());
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "bogus": 1,
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Always"}]}
        });
        assert_eq!(
            api.unknown_fields("", "v1", "Pod", &pod),
            ["bogus", "spec.containers[0].imagePullPolcy"]
        );
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "spec": {"replica": 3}});
        assert_eq!(
            api.unknown_fields("apps", "v1", "Deployment", &deploy),
            ["spec.replica"]
        );
    }

    #[test]
    fn kinds_without_a_schema_accept_anything() {
        let api = OpenApi::new(&Registry::builtin());
        assert!(
            api.unknown_fields("example.com", "v1", "Widget", &json!({"x": 1}))
                .is_empty()
        );
    }
}
