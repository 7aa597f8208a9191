//! What an API error means, decided as apimachinery's `k8s.io/apimachinery/pkg/api/errors`
//! does (`IsNotFound`, `IsConflict`, ...): by the `metav1.Status` reason, and by the HTTP
//! code only when the server gave no reason it knows. This is the one place that looks at
//! status codes; callers ask `is_not_found(&e)`, never `e.code == 404`.
//!
//! kube-rs has similar methods on its `Status`, but they match the reason only (a 404
//! without a reason is not "not found" there) and take the `Status` rather than the
//! `kube::Error` a call returns.

use kube::core::Status;

/// The reasons apimachinery knows (`knownReasons`); a Status with any other reason (or
/// none) is judged by its code.
const KNOWN_REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ServerTimeout",
    "StoreReadError",
    "Timeout",
    "TooManyRequests",
    "BadRequest",
    "MethodNotAllowed",
    "NotAcceptable",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Expired",
    "ServiceUnavailable",
];

/// The Status of an API error; `None` for errors that never reached the apiserver
/// (connection, TLS, decoding).
pub fn api_status(error: &kube::Error) -> Option<&Status> {
    match error {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

/// Whether the Status has `reason`, or no known reason and `code`.
fn reason_or_code(error: &kube::Error, reason: &str, code: u16) -> bool {
    api_status(error).is_some_and(|s| {
        s.reason == reason || (!KNOWN_REASONS.contains(&s.reason.as_str()) && s.code == code)
    })
}

/// 404 Not Found: the object (or its namespace) does not exist.
pub fn is_not_found(error: &kube::Error) -> bool {
    reason_or_code(error, "NotFound", 404)
}

/// 409 AlreadyExists: a create found the name taken. By reason only: a 409 without it is
/// a [`is_conflict`].
pub fn is_already_exists(error: &kube::Error) -> bool {
    api_status(error).is_some_and(|s| s.reason == "AlreadyExists")
}

/// 409 Conflict: the write carried a stale `resourceVersion` or a failed precondition.
pub fn is_conflict(error: &kube::Error) -> bool {
    reason_or_code(error, "Conflict", 409)
}

/// 403 Forbidden: not allowed, or (with the `NamespaceTerminating` cause) a create in a
/// namespace being deleted.
pub fn is_forbidden(error: &kube::Error) -> bool {
    reason_or_code(error, "Forbidden", 403)
}

/// 422 Invalid: the object failed validation (also a JSON patch whose `test` failed).
pub fn is_invalid(error: &kube::Error) -> bool {
    reason_or_code(error, "Invalid", 422)
}

/// 410 Gone.
pub fn is_gone(error: &kube::Error) -> bool {
    reason_or_code(error, "Gone", 410)
}

/// 410 Expired: a watch or list from a compacted `resourceVersion`; relist.
pub fn is_resource_expired(error: &kube::Error) -> bool {
    api_status(error).is_some_and(|s| s.reason == "Expired")
}

/// 429 Too Many Requests (whatever the reason, as apimachinery).
pub fn is_too_many_requests(error: &kube::Error) -> bool {
    api_status(error).is_some_and(|s| s.reason == "TooManyRequests" || s.code == 429)
}

/// Whether the error is worth retrying as is: no answer from the apiserver at all, a 5xx,
/// or 429. Any other Status is a decision the same request will get again.
pub fn is_retriable(error: &kube::Error) -> bool {
    match api_status(error) {
        None => true,
        Some(s) => s.code >= 500 || is_too_many_requests(error),
    }
}

/// Whether the Status' details carry a cause of type (`reason`) `cause`
/// (`errors.HasStatusCause`).
pub fn has_status_cause(error: &kube::Error, cause: &str) -> bool {
    api_status(error)
        .and_then(|s| s.details.as_ref())
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == cause))
}

/// A create refused because its namespace is being deleted (`NamespaceTerminating`).
pub fn is_namespace_terminating(error: &kube::Error) -> bool {
    has_status_cause(error, "NamespaceTerminating")
}

/// The apiserver's message for an API error (what Kubernetes puts in Events and
/// conditions), or the client's error.
pub fn api_message(error: &kube::Error) -> String {
    match api_status(error) {
        Some(s) if !s.message.is_empty() => s.message.clone(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("m", reason).with_code(code)))
    }

    #[test]
    fn the_reason_decides_when_the_server_gave_one() {
        assert!(is_not_found(&api(404, "NotFound")));
        assert!(is_conflict(&api(409, "Conflict")));
        assert!(is_already_exists(&api(409, "AlreadyExists")));
        assert!(
            !is_conflict(&api(409, "AlreadyExists")),
            "AlreadyExists is a known reason, so its 409 is not a conflict"
        );
        assert!(!is_already_exists(&api(409, "Conflict")));
        assert!(is_forbidden(&api(403, "Forbidden")));
        assert!(is_invalid(&api(422, "Invalid")));
        assert!(is_resource_expired(&api(410, "Expired")));
        assert!(!is_gone(&api(410, "Expired")));
    }

    #[test]
    fn the_code_decides_when_the_reason_is_missing_or_unknown() {
        assert!(is_not_found(&api(404, "")));
        assert!(is_conflict(&api(409, "SomethingNew")));
        assert!(is_gone(&api(410, "")));
        assert!(!is_already_exists(&api(409, "")));
        assert!(!is_not_found(&api(500, "")));
    }

    #[test]
    fn errors_that_never_reached_the_apiserver_are_no_status_and_retriable() {
        let e = kube::Error::LinesCodecMaxLineLengthExceeded;
        assert!(!is_not_found(&e) && !is_conflict(&e));
        assert!(api_status(&e).is_none());
        assert!(is_retriable(&e));
        assert!(is_retriable(&api(503, "ServiceUnavailable")));
        assert!(is_retriable(&api(429, "")));
        assert!(!is_retriable(&api(403, "Forbidden")));
        assert!(!is_retriable(&api(404, "NotFound")));
    }

    #[test]
    fn a_create_in_a_terminating_namespace_is_recognised_by_its_cause() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "pods \"x\" is forbidden: namespace ns is being terminated",
            "reason": "Forbidden",
            "code": 403,
            "details": {"causes": [{"reason": "NamespaceTerminating"}]},
        }))
        .expect("a Status");
        let e = kube::Error::Api(Box::new(status));
        assert!(is_namespace_terminating(&e));
        assert!(is_forbidden(&e));
        assert!(!is_namespace_terminating(&api(403, "Forbidden")));
        assert_eq!(
            api_message(&e),
            "pods \"x\" is forbidden: namespace ns is being terminated"
        );
    }
}
