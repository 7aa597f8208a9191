//! The `audit.k8s.io/v1` `Event`: one JSON line of the audit log, with kube-apiserver's
//! field names and order, empty fields left out as Go's `omitempty` does.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::policy::{Level, Stage};
use crate::authn::Identity;

/// The annotation with the authorizer's decision: `allow` or `forbid`.
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// The annotation with the authorizer's reason.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";
/// The annotation saying request and response objects were left out for their size.
pub const TRUNCATED_ANNOTATION: &str = "audit.k8s.io/truncated";

/// One audit event.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `Event`.
    pub kind: &'static str,
    /// `audit.k8s.io/v1`.
    pub api_version: &'static str,
    /// The level the policy chose.
    pub level: Level,
    /// The request's audit ID (also its `Audit-Id` response header).
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// The stage this event was written at.
    pub stage: Stage,
    /// The path and query as the client sent them.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// The Kubernetes verb (`list`, `create`, ...) or, for non-resource URLs, the
    /// lower-cased HTTP method.
    pub verb: String,
    /// The authenticated user (empty when authentication failed).
    pub user: UserInfo,
    /// The user impersonated, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    /// `X-Forwarded-For`, `X-Real-Ip` and the peer address.
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The `User-Agent` header.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// The object the request is about (resource requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// The response code, and for failures the Status' status, reason and message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// The request body (levels Request and RequestResponse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Value>,
    /// The response body (level RequestResponse; not for long-running requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Value>,
    /// When the request arrived (RFC 3339, microseconds).
    pub request_received_timestamp: String,
    /// When this stage was reached.
    pub stage_timestamp: String,
    /// Annotations: the authorization decision and reason, admission's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A user in an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The user name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The user's uid.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The user's groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl From<&Identity> for UserInfo {
    fn from(identity: &Identity) -> Self {
        UserInfo {
            username: identity.user.clone(),
            uid: String::new(),
            groups: identity.groups.clone(),
        }
    }
}

/// The object of a resource request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// The resource (plural).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// The namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name (for creates, from the request body).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's uid, when the request body names it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The API group (empty for the core group).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// The API version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The resourceVersion the request body names.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// The subresource.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The `metav1.Status` of an event: the code, and what a failure's Status said.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResponseStatus {
    /// Always `{}` (as kube-apiserver writes it).
    pub metadata: serde_json::Map<String, Value>,
    /// `Success` or `Failure`, from a Status response.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// The Status message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The Status reason (`Forbidden`, `NotFound`, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The Status details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// The HTTP status code.
    pub code: u16,
}

impl ResponseStatus {
    /// A status with only a code.
    pub fn code(code: u16) -> Self {
        ResponseStatus {
            metadata: serde_json::Map::new(),
            status: String::new(),
            message: String::new(),
            reason: String::new(),
            details: None,
            code,
        }
    }

    /// Takes status, message, reason and details from a `Status` object.
    pub fn with_status_object(mut self, status: &Value) -> Self {
        if status.get("kind").and_then(Value::as_str) != Some("Status") {
            return self;
        }
        let text = |key: &str| {
            status
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        self.status = text("status");
        self.message = text("message");
        self.reason = text("reason");
        self.details = status.get("details").filter(|d| !d.is_null()).cloned();
        self
    }
}

/// A timestamp as `metav1.MicroTime` writes it: `2024-05-01T10:00:00.123456Z`.
pub fn micro_time(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Drops `metadata.managedFields` from an object, or from each item of a list.
pub fn omit_managed_fields(object: &mut Value) {
    fn strip(object: &mut Value) {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
    }
    strip(object);
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_serializes_with_kubernetes_names_and_leaves_out_empty_fields() {
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::Metadata,
            audit_id: "id".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/d/secrets".into(),
            verb: "create".into(),
            user: UserInfo {
                username: "alice".into(),
                uid: String::new(),
                groups: vec!["system:authenticated".into()],
            },
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: String::new(),
            object_ref: Some(ObjectReference {
                resource: "secrets".into(),
                namespace: "d".into(),
                name: "s".into(),
                api_version: "v1".into(),
                ..ObjectReference::default()
            }),
            response_status: Some(ResponseStatus::code(201)),
            request_object: None,
            response_object: None,
            request_received_timestamp: micro_time(jiff::Timestamp::UNIX_EPOCH),
            stage_timestamp: micro_time(
                jiff::Timestamp::from_microsecond(1_500_000).expect("valid"),
            ),
            annotations: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_string(&event).expect("serializes"),
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/secrets","verb":"create","user":{"username":"alice","groups":["system:authenticated"]},"sourceIPs":["127.0.0.1"],"objectRef":{"resource":"secrets","namespace":"d","name":"s","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"1970-01-01T00:00:00.000000Z","stageTimestamp":"1970-01-01T00:00:01.500000Z"}"#
        );
    }

    #[test]
    fn a_failure_status_gives_its_status_reason_and_message() {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets is forbidden: ...", "reason": "Forbidden",
            "details": {"kind": "secrets"}, "code": 403
        });
        let rs = ResponseStatus::code(403).with_status_object(&status);
        assert_eq!(
            serde_json::to_value(&rs).expect("serializes"),
            serde_json::json!({"metadata": {}, "status": "Failure", "message": "secrets is forbidden: ...",
                               "reason": "Forbidden", "details": {"kind": "secrets"}, "code": 403})
        );
        let not_status =
            ResponseStatus::code(200).with_status_object(&serde_json::json!({"kind": "Pod"}));
        assert_eq!(not_status, ResponseStatus::code(200));
    }

    #[test]
    fn managed_fields_are_dropped_from_objects_and_list_items() {
        let mut list = serde_json::json!({
            "metadata": {"managedFields": [1]},
            "items": [{"metadata": {"name": "a", "managedFields": [2]}}]
        });
        omit_managed_fields(&mut list);
        assert_eq!(
            list,
            serde_json::json!({"metadata": {}, "items": [{"metadata": {"name": "a"}}]})
        );
    }
}
