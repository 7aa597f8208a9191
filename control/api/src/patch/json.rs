//! RFC 6902 JSON patch and RFC 7386 JSON merge patch, on top of the `json-patch` crate, with
//! Kubernetes' limits and error classes (see `handlers/patch.go` in k8s.io/apiserver):
//! a patch that does not decode is 400, more than 10 000 operations is 413, an operation
//! that fails (a `test` mismatch, a missing path) is 422.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

use super::{MAX_JSON_PATCH_OPERATIONS, PatchError};

/// Applies an RFC 6902 JSON patch to a copy of `original`.
pub(super) fn apply_json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::malformed(format!(
            "invalid JSON patch: expected a list of operations, got {}",
            kind_of(patch)
        )));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations { count: ops.len() });
    }
    let ops: Vec<PatchOperation> = ops
        .iter()
        .enumerate()
        .map(|(index, op)| {
            serde_json::from_value(op.clone()).map_err(|e| {
                PatchError::malformed(format!("invalid JSON patch operation {index}: {e}"))
            })
        })
        .collect::<Result<_, _>>()?;

    let mut doc = original.clone();
    // `patch_unsafe` leaves the document half-patched on error, which is fine: `doc` is a
    // copy that is dropped then. It also avoids the crate's undo path.
    json_patch::patch_unsafe(&mut doc, &ops).map_err(|e| {
        let op = ops.get(e.operation);
        PatchError::OperationFailed {
            index: e.operation,
            op: op.map(op_name).unwrap_or("unknown"),
            path: e.path.to_string(),
            reason: describe(&e.kind, op),
        }
    })?;
    Ok(doc)
}

/// Applies an RFC 7386 JSON merge patch to a copy of `original`.
///
/// Like Kubernetes (evanphx/json-patch), a `null` or scalar patch is rejected as malformed;
/// an array patch replaces the document, which the caller then rejects as not an object.
pub(super) fn apply_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    match patch {
        Value::Object(_) | Value::Array(_) => {
            let mut doc = original.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        other => Err(PatchError::malformed(format!(
            "invalid JSON merge patch: expected an object, got {}",
            kind_of(other)
        ))),
    }
}

fn op_name(op: &PatchOperation) -> &'static str {
    match op {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    }
}

fn describe(kind: &PatchErrorKind, op: Option<&PatchOperation>) -> String {
    match (kind, op) {
        (PatchErrorKind::TestFailed, Some(PatchOperation::Test(t))) => {
            format!("test failed: the value is not {}", t.value)
        }
        (PatchErrorKind::InvalidPointer, Some(PatchOperation::Add(_))) => {
            "the parent of the path does not exist or is not a container".to_string()
        }
        (PatchErrorKind::InvalidPointer, _) => "the path does not exist".to_string(),
        (PatchErrorKind::InvalidFromPointer, _) => "the \"from\" path does not exist".to_string(),
        (kind, _) => kind.to_string(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25"},
                    {"name": "sidecar", "image": "envoy:1.30"}
                ]}}
            }
        })
    }

    #[test]
    fn json_patch_add_replace_and_remove_apply_in_order() {
        let patched = apply_json_patch(
            &deployment(),
            &json!([
                {"op": "add", "path": "/metadata/labels/tier", "value": "frontend"},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "remove", "path": "/spec/template/spec/containers/1"},
                {"op": "add", "path": "/spec/template/spec/containers/-",
                 "value": {"name": "log", "image": "fluent-bit:3"}}
            ]),
        )
        .unwrap();
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "web", "tier": "frontend"})
        );
        assert_eq!(patched["spec"]["replicas"], 3);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:1.25"}, {"name": "log", "image": "fluent-bit:3"}])
        );
    }

    #[test]
    fn json_patch_test_that_fails_is_a_422_naming_the_operation() {
        let err = apply_json_patch(
            &deployment(),
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "test", "path": "/spec/replicas", "value": 2}
            ]),
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 422);
        let PatchError::OperationFailed {
            index, op, path, ..
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!((*index, *op, path.as_str()), (1, "test", "/spec/replicas"));
        assert!(err.to_string().contains("test failed"), "{err}");
    }

    #[test]
    fn json_patch_test_that_passes_lets_the_patch_through() {
        let patched = apply_json_patch(
            &deployment(),
            &json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(patched["spec"]["replicas"], 2);
    }

    #[test]
    fn json_patch_removing_a_missing_path_is_a_422() {
        let err = apply_json_patch(
            &deployment(),
            &json!([{"op": "remove", "path": "/spec/paused"}]),
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 422);
        assert!(err.to_string().contains("/spec/paused"), "{err}");
    }

    #[test]
    fn json_patch_replacing_a_missing_path_is_a_422() {
        let err = apply_json_patch(
            &deployment(),
            &json!([{"op": "replace", "path": "/metadata/annotations/a", "value": "b"}]),
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 422);
    }

    #[test]
    fn json_patch_with_an_unknown_operation_is_a_400() {
        let err = apply_json_patch(
            &deployment(),
            &json!([{"op": "frobnicate", "path": "/spec"}]),
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 400);
        assert!(err.to_string().contains("operation 0"), "{err}");
    }

    #[test]
    fn json_patch_that_is_not_a_list_is_a_400() {
        let err = apply_json_patch(&deployment(), &json!({"op": "add"})).unwrap_err();
        assert_eq!(err.http_code(), 400);
    }

    #[test]
    fn json_patch_with_too_many_operations_is_a_413() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/spec/replicas", "value": 1}))
            .collect();
        let err = apply_json_patch(&deployment(), &Value::Array(ops)).unwrap_err();
        assert_eq!(err.http_code(), 413);
        assert!(matches!(
            err,
            PatchError::TooManyOperations { count: 10_001 }
        ));
    }

    #[test]
    fn json_patch_failure_leaves_the_original_unchanged() {
        let original = deployment();
        let _ = apply_json_patch(
            &original,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 9},
                {"op": "remove", "path": "/nope"}
            ]),
        );
        assert_eq!(original, deployment());
    }

    #[test]
    fn merge_patch_null_removes_a_key_and_objects_merge() {
        let patched = apply_merge_patch(
            &deployment(),
            &json!({"metadata": {"labels": {"app": null, "tier": "web"}}, "spec": {"paused": true}}),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["labels"], json!({"tier": "web"}));
        assert_eq!(patched["spec"]["paused"], true);
        assert_eq!(patched["spec"]["replicas"], 1);
    }

    #[test]
    fn merge_patch_replaces_lists_wholesale() {
        let patched = apply_merge_patch(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
    }

    #[test]
    fn merge_patch_that_is_null_or_a_scalar_is_a_400() {
        for patch in [json!(null), json!(3), json!("x"), json!(true)] {
            let err = apply_merge_patch(&deployment(), &patch).unwrap_err();
            assert_eq!(err.http_code(), 400, "{patch}");
        }
    }
}
