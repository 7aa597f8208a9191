//! The three patch formats the Kubernetes apiserver accepts on `PATCH`, applied to objects
//! held as `serde_json::Value`.
//!
//! - [`PatchType::Json`] — RFC 6902 JSON patch (`application/json-patch+json`), a list of
//!   `add`/`remove`/`replace`/`move`/`copy`/`test` operations. Applied with the `json-patch`
//!   crate ([`json`]).
//! - [`PatchType::Merge`] — RFC 7386 JSON merge patch (`application/merge-patch+json`): maps
//!   merge key by key, `null` deletes, anything else replaces. Also the `json-patch` crate.
//! - [`PatchType::StrategicMerge`] — Kubernetes' strategic merge patch
//!   (`application/strategic-merge-patch+json`), what `kubectl apply`, `kubectl set image` and
//!   `kubectl patch` send by default. It is a merge patch that knows, per field of the built-in
//!   types, whether a list is merged by a key (`containers` by `name`, `ports` by
//!   `containerPort`) or replaced, and it understands the `$patch`, `$retainKeys`,
//!   `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives. No Rust library does
//!   this, so it is hand-written in [`strategic`] after the semantics of
//!   `k8s.io/apimachinery/pkg/util/strategicpatch`, with the per-type patch metadata (the Go
//!   `patchStrategy`/`patchMergeKey` struct tags) in [`schema`].
//!
//! Everything here is pure: the apiserver reads the stored object, calls [`apply`], then
//! validates and stores the result. Errors carry the HTTP code Kubernetes answers them with
//! ([`PatchError::http_code`]).
//!
//! Strategic merge patch is only defined for built-in kinds; Kubernetes answers it for custom
//! resources with 415 Unsupported Media Type. The apiserver should offer it only where
//! [`supports_strategic`] is true (see [`supported_patch_types`]); [`apply`] itself treats an
//! unknown kind as having no patch metadata, so the patch behaves like a JSON merge patch whose
//! directives are still honoured and never end up in the object.

mod json;
mod order;
mod schema;
mod strategic;

#[cfg(test)]
mod kubectl_tests;

use serde_json::Value;

pub use schema::supports_strategic;

/// The most operations one JSON patch may carry, as in Kubernetes (`maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The most bytes the `copy` operations of one JSON patch may add up to (the serialized
/// sizes of what they copy), as kube-apiserver's `--json-patch-max-copy-bytes` default (3 MiB).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// A patch format, chosen by the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// RFC 6902 JSON patch: `application/json-patch+json`.
    Json,
    /// RFC 7386 JSON merge patch: `application/merge-patch+json`.
    Merge,
    /// Kubernetes strategic merge patch: `application/strategic-merge-patch+json`.
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value; parameters such as `; charset=utf-8`
    /// are ignored, as Kubernetes does. `None` for anything else (the apiserver answers 415).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media_type = ct.split(';').next().unwrap_or_default().trim();
        [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge]
            .into_iter()
            .find(|t| t.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type naming this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

/// The patch types the apiserver should accept for a kind: all three for built-in kinds,
/// JSON and merge patch for anything else (custom resources), like Kubernetes. Use it for the
/// list of accepted media types in a 415 answer.
pub fn supported_patch_types(group: &str, kind: &str) -> &'static [PatchType] {
    if supports_strategic(group, kind) {
        &[PatchType::Json, PatchType::Merge, PatchType::StrategicMerge]
    } else {
        &[PatchType::Json, PatchType::Merge]
    }
}

/// Why a patch could not be applied. [`PatchError::http_code`] and [`PatchError::reason`]
/// give the `metav1.Status` code and reason Kubernetes answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The patch is not a well-formed patch of its type: a JSON patch that is not a list of
    /// operations, a merge patch that is `null` or a scalar, a strategic merge patch that is
    /// not an object, or a directive with a bad shape (`$retainKeys` not listing a patched
    /// field, `$setElementOrder` out of order, an unknown `$patch` value).
    /// Kubernetes: 400 BadRequest.
    #[error("{message}")]
    Malformed {
        /// What is wrong with the patch.
        message: String,
    },
    /// A JSON patch with more than [`MAX_JSON_PATCH_OPERATIONS`] operations.
    /// Kubernetes: 413 RequestEntityTooLarge.
    #[error(
        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {count}"
    )]
    TooManyOperations {
        /// How many operations the patch had.
        count: usize,
    },
    /// The `copy` operations of a JSON patch duplicate more than
    /// [`MAX_JSON_PATCH_COPY_BYTES`] in all. Kubernetes: 422 with reason Invalid and
    /// evanphx/json-patch's message.
    #[error(
        "Unable to complete the copy, the accumulated size increase of copy is {accumulated}, exceeding the limit {limit}"
    )]
    CopyTooLarge {
        /// The bytes counted when the patch was stopped (measuring stops once past the
        /// limit, so this is a lower bound of what the copies would have added).
        accumulated: usize,
        /// The limit, [`MAX_JSON_PATCH_COPY_BYTES`].
        limit: usize,
    },
    /// A JSON patch operation could not be applied: a `test` that failed, a path that does
    /// not exist. Kubernetes: 422 with reason Invalid.
    #[error("json patch operation {index} ({op} {path}) failed: {reason}")]
    OperationFailed {
        /// Zero-based index of the failing operation.
        index: usize,
        /// The operation name, e.g. `test`.
        op: &'static str,
        /// The operation's JSON pointer.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A well-formed strategic merge patch that does not fit the object: a list element
    /// without its merge key, a list of lists, list elements of different types.
    /// Kubernetes answers most of these with 422 (some with a 500, which is a client mistake
    /// all the same); 422 Invalid here.
    #[error("{message}")]
    Unprocessable {
        /// What does not fit.
        message: String,
    },
    /// The patched document is not a JSON object (e.g. a JSON patch replaced the root with a
    /// number). Kubernetes fails to decode such a result: 422 Invalid.
    #[error("the patched object is not a JSON object")]
    ResultNotAnObject,
}

impl PatchError {
    /// The HTTP status code Kubernetes answers this error with.
    pub fn http_code(&self) -> u16 {
        match self {
            PatchError::Malformed { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::OperationFailed { .. }
            | PatchError::CopyTooLarge { .. }
            | PatchError::Unprocessable { .. }
            | PatchError::ResultNotAnObject => 422,
        }
    }

    /// The `metav1.Status` reason for [`PatchError::http_code`]. For 422 Kubernetes uses the
    /// generic message "the server rejected our request due to an error in our request" with
    /// this error's text as the cause.
    pub fn reason(&self) -> &'static str {
        match self.http_code() {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            _ => "Invalid",
        }
    }

    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        PatchError::Malformed {
            message: message.into(),
        }
    }

    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        PatchError::Unprocessable {
            message: message.into(),
        }
    }
}

/// Applies `patch` of `patch_type` to `original`, an object of `group`/`kind` (`""` for the
/// core group), and returns the patched object. `original` is not modified.
///
/// `group` and `kind` select the strategic-merge metadata; they are ignored for JSON and
/// merge patches. For a kind without metadata ([`supports_strategic`] false) a strategic merge
/// patch acts as a merge patch with its directives honoured and removed.
pub fn apply(
    patch_type: PatchType,
    group: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let patched = match patch_type {
        PatchType::Json => json::apply_json_patch(original, patch)?,
        PatchType::Merge => json::apply_merge_patch(original, patch)?,
        PatchType::StrategicMerge => {
            strategic::apply(schema::root_type(group, kind), original, patch)?
        }
    };
    if patched.is_object() {
        Ok(patched)
    } else {
        Err(PatchError::ResultNotAnObject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_type_with_charset_parameter_is_recognised() {
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("Application/JSON-Patch+JSON"),
            Some(PatchType::Json)
        );
    }

    #[test]
    fn unknown_content_types_are_not_patch_types() {
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
        assert_eq!(PatchType::from_content_type(""), None);
    }

    #[test]
    fn content_type_round_trips() {
        for t in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }

    #[test]
    fn custom_resources_are_offered_only_json_and_merge_patch() {
        assert_eq!(
            supported_patch_types("example.com", "Widget"),
            &[PatchType::Json, PatchType::Merge]
        );
        assert!(supported_patch_types("apps", "Deployment").contains(&PatchType::StrategicMerge));
    }

    #[test]
    fn each_error_maps_to_the_kubernetes_http_code() {
        assert_eq!(PatchError::malformed("x").http_code(), 400);
        assert_eq!(PatchError::malformed("x").reason(), "BadRequest");
        assert_eq!(
            PatchError::TooManyOperations { count: 10_001 }.http_code(),
            413
        );
        assert_eq!(PatchError::unprocessable("x").http_code(), 422);
        assert_eq!(PatchError::unprocessable("x").reason(), "Invalid");
        assert_eq!(PatchError::ResultNotAnObject.http_code(), 422);
    }

    #[test]
    fn json_patch_replacing_the_root_with_a_scalar_is_rejected() {
        let err = apply(
            PatchType::Json,
            "",
            "ConfigMap",
            &json!({"data": {}}),
            &json!([{"op": "replace", "path": "", "value": 5}]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::ResultNotAnObject), "{err}");
    }

    #[test]
    fn merge_patch_that_is_an_array_is_rejected_as_not_an_object() {
        let err = apply(
            PatchType::Merge,
            "",
            "ConfigMap",
            &json!({"data": {}}),
            &json!([1]),
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 422);
    }

    #[test]
    fn apply_leaves_the_original_untouched() {
        let original = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let patched = apply(
            PatchType::StrategicMerge,
            "",
            "ConfigMap",
            &original,
            &json!({"metadata": {"labels": {"x": null}}}),
        )
        .unwrap();
        assert_eq!(patched, json!({"metadata": {"name": "a", "labels": {}}}));
        assert_eq!(original["metadata"]["labels"]["x"], "1");
    }
}
