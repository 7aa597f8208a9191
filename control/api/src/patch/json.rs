//! RFC 6902 JSON patch and RFC 7386 JSON merge patch, on top of the `json-patch` crate, with
//! Kubernetes' limits and error classes (see `handlers/patch.go` in k8s.io/apiserver):
//! a patch that does not decode is 400, more than 10 000 operations is 413, an operation
//! that fails (a `test` mismatch, a missing path) is 422.
//!
//! `copy` is the one operation that makes a document larger than the patch that asks for
//! it (a 900-byte patch of doubling copies reached 134 MB). As kube-apiserver
//! (`--json-patch-max-copy-bytes`, evanphx/json-patch's `AccumulatedCopySizeLimit`), the
//! serialized sizes of everything the copies of one patch duplicate are added up and the
//! patch fails with 422 once the sum passes [`MAX_JSON_PATCH_COPY_BYTES`]. The check runs
//! *before* each copy, on the document as the earlier operations left it, so the document
//! never grows past `original + patch body + the limit`, and measuring stops as soon as
//! the budget is spent, so no copy is serialized in full to be refused.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

use super::{MAX_JSON_PATCH_COPY_BYTES, MAX_JSON_PATCH_OPERATIONS, PatchError};

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
    let mut copied = 0usize;
    for (index, op) in ops.iter().enumerate() {
        if let PatchOperation::Copy(copy) = op
            && let Some(source) = doc.pointer(copy.from.as_str())
        {
            let budget = MAX_JSON_PATCH_COPY_BYTES - copied;
            match serialized_len_within(source, budget) {
                Ok(len) => copied += len,
                Err(over) => {
                    return Err(PatchError::CopyTooLarge {
                        accumulated: copied + over,
                        limit: MAX_JSON_PATCH_COPY_BYTES,
                    });
                }
            }
        }
        // One operation at a time, so the copy budget is checked against the document as
        // the operations before left it. `patch_unsafe` leaves the document half-patched
        // on error, which is fine: `doc` is a copy that is dropped then.
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).map_err(|e| {
            PatchError::OperationFailed {
                index,
                op: op_name(op),
                path: e.path.to_string(),
                reason: describe(&e.kind, Some(op)),
            }
        })?;
    }
    Ok(doc)
}

/// The length of `value` serialized as JSON if it is at most `budget` bytes; otherwise
/// `Err` with how many bytes were counted before giving up (more than `budget`).
fn serialized_len_within(value: &Value, budget: usize) -> Result<usize, usize> {
    /// Counts bytes and fails the serialization once past the budget.
    struct Counter {
        counted: usize,
        budget: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.counted += buf.len();
            if self.counted > self.budget {
                return Err(std::io::Error::other("over budget"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { counted: 0, budget };
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => Ok(counter.counted),
        Err(_) => Err(counter.counted),
    }
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

    /// Review finding 5: a ~900-byte patch of doubling copies made a 134 MB object. Each
    /// copy doubles `/a`; the copies stop at the limit, long before the document is large.
    #[test]
    fn json_patch_copies_past_the_copy_limit_fail_with_a_422_before_growing() {
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": ["x".repeat(64)]})];
        // Unbounded, 20 doublings of 70 bytes would be 73 MB.
        ops.extend((0..20).map(|_| json!({"op": "copy", "from": "/a", "path": "/a/-"})));
        let patch = Value::Array(ops);
        assert!(patch.to_string().len() < 1024, "a small patch");
        let err = apply_json_patch(&deployment(), &patch).unwrap_err();
        assert_eq!(err.http_code(), 422);
        let PatchError::CopyTooLarge { accumulated, limit } = &err else {
            panic!("unexpected error {err:?}");
        };
        let (accumulated, limit) = (*accumulated, *limit);
        assert_eq!(limit, MAX_JSON_PATCH_COPY_BYTES);
        assert!(accumulated > limit, "{accumulated}");
        // Never measured (or grown) much past the limit: at most the last copy's budget.
        assert!(accumulated <= 2 * limit, "{accumulated}");
        assert!(
            err.to_string().starts_with(
                "Unable to complete the copy, the accumulated size increase of copy is"
            ),
            "{err}"
        );
    }

    #[test]
    fn json_patch_copies_within_the_limit_apply() {
        let patched = apply_json_patch(
            &deployment(),
            &json!([
                {"op": "copy", "from": "/metadata/labels", "path": "/spec/selector"},
                {"op": "copy", "from": "/spec/template/spec/containers/0", "path": "/spec/template/spec/containers/-"}
            ]),
        )
        .unwrap();
        assert_eq!(patched["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][2]["name"],
            "web"
        );
    }

    #[test]
    fn json_patch_copy_from_a_missing_path_is_a_422_naming_it() {
        let err = apply_json_patch(
            &deployment(),
            &json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "copy", "from": "/nope", "path": "/spec/x"}
            ]),
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 422);
        let PatchError::OperationFailed { index, op, .. } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!((*index, *op), (1, "copy"));
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
