//! The middleware with the real authentication middleware inside it: which events a
//! request produces, at which stages, with which fields.

use std::sync::Arc;

use axum::body::Body;
use axum::routing::{get, post};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::authn::{Authn, TokenAuthenticator, require_authentication};

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    nonResourceURLs: ["/healthz"]
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
  - level: RequestResponse
    resources: [{group: "", resources: ["configmaps"]}]
    omitStages: [RequestReceived]
  - level: Request
"#;

fn tokens() -> Arc<TokenAuthenticator> {
    Arc::new(
        TokenAuthenticator::parse("admin-token,admin,1,system:masters\nbob-token,bob,2,devs\n")
            .expect("valid token file"),
    )
}

/// The app: handlers that answer as the API would, behind authentication (RBAC stands in
/// as `AlwaysDeny` but for system:masters) and the audit layer.
fn app(audit: Audit) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/v1/namespaces/default/secrets",
            post(|body: axum::body::Bytes| async move {
                let mut object: Value = serde_json::from_slice(&body).expect("JSON");
                object["metadata"]["uid"] = json!("u-1");
                (StatusCode::CREATED, axum::Json(object))
            }),
        )
        .route(
            "/api/v1/namespaces/default/configmaps",
            post(|body: axum::body::Bytes| async move {
                let object: Value = serde_json::from_slice(&body).expect("JSON");
                (StatusCode::CREATED, axum::Json(object))
            }),
        )
        .route(
            "/api/v1/namespaces/default/pods",
            get(|| async {
                Body::from_stream(futures::stream::iter(vec![
                    Ok::<_, std::io::Error>("{\"type\":\"ADDED\"}\n"),
                    Ok("{\"type\":\"MODIFIED\"}\n"),
                ]))
            }),
        )
        .route(
            "/api/v1/namespaces/default/pods/boom",
            get(|| async {
                if true {
                    panic!("handler exploded");
                }
                "never"
            }),
        );
    let chain = crate::authz::build_chain(
        &[crate::authz::AuthorizationMode::AlwaysDeny],
        Arc::new(crate::authz::AlwaysDeny),
        Arc::new(crate::authz::AlwaysDeny),
    );
    layer(
        require_authentication(router, Authn::new(tokens(), Arc::new(chain))),
        audit,
    )
}

struct Harness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    done: log::WriterDone,
    app: Router,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let (sink, done) =
        log::Sink::start(&path, rotate::Rotation::from_flags(0, 0, 0)).expect("starts");
    let app = app(Audit::with_sink(
        Policy::parse(POLICY).expect("valid"),
        sink,
    ));
    Harness {
        _dir: dir,
        path,
        done,
        app,
    }
}

impl Harness {
    async fn call(&self, req: http::Request<Body>) -> (StatusCode, http::HeaderMap, String) {
        let response = self.app.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// Stops the writer and returns every event written.
    async fn events(self) -> Vec<Value> {
        drop(self.app);
        self.done.wait(Duration::from_secs(10)).await;
        std::fs::read_to_string(&self.path)
            .expect("the log exists")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> http::Request<Body> {
    let mut builder = http::Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).expect("request")
}

fn stages(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["auditID"] == id)
        .map(|e| e["stage"].as_str().expect("stage").to_string())
        .collect()
}

#[tokio::test]
async fn without_a_policy_there_are_no_events_but_every_response_has_an_audit_id() {
    let app = app(Audit::default());
    let response = app
        .clone()
        .oneshot(request("GET", "/healthz", None, None))
        .await
        .expect("infallible");
    let id = response.headers()[AUDIT_ID_HEADER].to_str().expect("text");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let mut req = request("GET", "/healthz", None, None);
    req.headers_mut()
        .insert(AUDIT_ID_HEADER, HeaderValue::from_static("my-own-id"));
    let response = app.oneshot(req).await.expect("infallible");
    assert_eq!(response.headers()[AUDIT_ID_HEADER], "my-own-id");
}

#[tokio::test]
async fn a_secret_create_is_logged_at_metadata_without_its_data() {
    let h = harness();
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "s1"}, "data": {"password": "aHVudGVyMg=="}});
    let (status, headers, _) = h
        .call(request(
            "POST",
            "/api/v1/namespaces/default/secrets?fieldManager=kubectl-create",
            Some("admin-token"),
            Some(secret),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = headers[AUDIT_ID_HEADER].to_str().expect("text").to_string();
    let events = h.events().await;
    assert_eq!(
        stages(&events, &id),
        ["RequestReceived", "ResponseComplete"]
    );
    let done = &events[1];
    assert_eq!(done["kind"], "Event");
    assert_eq!(done["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(done["level"], "Metadata");
    assert_eq!(done["verb"], "create");
    assert_eq!(
        done["requestURI"],
        "/api/v1/namespaces/default/secrets?fieldManager=kubectl-create"
    );
    assert_eq!(
        done["user"],
        json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]})
    );
    assert_eq!(
        done["objectRef"],
        json!({"resource": "secrets", "namespace": "default", "name": "s1", "apiVersion": "v1"})
    );
    assert_eq!(done["responseStatus"], json!({"metadata": {}, "code": 201}));
    assert_eq!(
        done["annotations"],
        json!({"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""})
    );
    assert!(done.get("requestObject").is_none() && done.get("responseObject").is_none());
    assert!(!events[0].to_string().contains("aHVudGVyMg"));
    assert!(!done.to_string().contains("aHVudGVyMg"));
    assert!(events[0].get("responseStatus").is_none());
}

#[tokio::test]
async fn request_response_logs_both_bodies_and_omits_the_stages_its_rule_omits() {
    let h = harness();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "c1", "managedFields": []}, "data": {"k": "v"}});
    let (status, headers, _) = h
        .call(request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("admin-token"),
            Some(cm.clone()),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = headers[AUDIT_ID_HEADER].to_str().expect("text").to_string();
    let events = h.events().await;
    assert_eq!(stages(&events, &id), ["ResponseComplete"]);
    assert_eq!(events[0]["level"], "RequestResponse");
    assert_eq!(events[0]["requestObject"], cm);
    assert_eq!(events[0]["responseObject"], cm);
}

#[tokio::test]
async fn a_forbidden_request_carries_the_decision_and_the_status() {
    let h = harness();
    let (status, headers, _) = h
        .call(request(
            "GET",
            "/api/v1/namespaces/default/secrets",
            Some("bob-token"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let id = headers[AUDIT_ID_HEADER].to_str().expect("text").to_string();
    let events = h.events().await;
    assert_eq!(
        stages(&events, &id),
        ["RequestReceived", "ResponseComplete"]
    );
    let done = &events[1];
    assert_eq!(done["verb"], "list");
    assert_eq!(done["responseStatus"]["code"], 403);
    assert_eq!(done["responseStatus"]["status"], "Failure");
    assert_eq!(done["responseStatus"]["reason"], "Forbidden");
    assert!(
        done["responseStatus"]["message"]
            .as_str()
            .expect("message")
            .starts_with("secrets is forbidden: User \"bob\" cannot list"),
        "{done}"
    );
    assert_eq!(
        done["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert!(done.get("responseObject").is_none(), "Metadata level");
}

#[tokio::test]
async fn a_failed_authentication_is_one_response_started_event() {
    let h = harness();
    let (status, headers, _) = h
        .call(request(
            "GET",
            "/api/v1/namespaces/default/pods",
            Some("wrong"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let id = headers[AUDIT_ID_HEADER].to_str().expect("text").to_string();
    let events = h.events().await;
    assert_eq!(stages(&events, &id), ["ResponseStarted"]);
    assert_eq!(events[0]["user"], json!({}));
    assert_eq!(events[0]["level"], "Request");
    assert_eq!(
        events[0]["responseStatus"],
        json!({"metadata": {}, "status": "Failure", "reason": "Unauthorized",
               "message": "Authentication failed, attempted: bearer", "code": 401})
    );
}

#[tokio::test]
async fn a_watch_has_response_started_and_completes_when_its_body_ends() {
    let h = harness();
    let (status, headers, body) = h
        .call(request(
            "GET",
            "/api/v1/namespaces/default/pods?watch=true",
            Some("admin-token"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("MODIFIED"));
    let id = headers[AUDIT_ID_HEADER].to_str().expect("text").to_string();
    let events = h.events().await;
    assert_eq!(
        stages(&events, &id),
        ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    );
    assert!(events.iter().all(|e| e["verb"] == "watch"));
    assert!(events[2].get("responseObject").is_none());
}

#[tokio::test]
async fn a_panicking_handler_writes_a_panic_event_and_the_panic_goes_on() {
    let h = harness();
    let app = h.app.clone();
    let outcome = tokio::spawn(async move {
        app.oneshot(request(
            "GET",
            "/api/v1/namespaces/default/pods/boom",
            Some("admin-token"),
            None,
        ))
        .await
    })
    .await;
    assert!(outcome.expect_err("the task panicked").is_panic());
    let events = h.events().await;
    let panic = events
        .iter()
        .find(|e| e["stage"] == "Panic")
        .expect("a Panic event");
    assert_eq!(panic["responseStatus"]["code"], 500);
    assert_eq!(
        panic["responseStatus"]["message"],
        "APIServer panic'd: handler exploded"
    );
    assert_eq!(
        stages(&events, panic["auditID"].as_str().expect("id")).len(),
        2
    );
}

#[tokio::test]
async fn a_none_level_request_writes_nothing() {
    let h = harness();
    let (status, _, _) = h
        .call(request("GET", "/healthz", Some("bob-token"), None))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = h.call(request("GET", "/healthz", None, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "AlwaysDeny: anonymous too");
    assert!(h.events().await.is_empty());
}
