//! One request's audit context: what is known of the request when it arrives, what
//! authentication, impersonation and authorization add, and the events built from it.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::Value;

use super::event::{
    Event, ObjectReference, ResponseStatus, TRUNCATED_ANNOTATION, UserInfo, micro_time,
    omit_managed_fields,
};
use super::log::Sink;
use super::policy::{Level, Policy, RequestAuditConfig, Stage};
use crate::authn::Identity;
use crate::authz::{RequestInfo, resolve_request};
use crate::request::MAX_BODY_BYTES;

/// The largest response body logged as `responseObject`; larger ones are left out with
/// the `audit.k8s.io/truncated` annotation.
const MAX_RESPONSE_OBJECT_BYTES: usize = 10 * 1024 * 1024;

/// Verbs and subresources of long-running requests (kube-apiserver's defaults).
const LONG_RUNNING_VERBS: &[&str] = &["watch", "proxy"];
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];

/// The audit context of one request.
pub(crate) struct RequestAudit {
    policy: Arc<Policy>,
    sink: Sink,
    audit_id: String,
    received: jiff::Timestamp,
    request_uri: String,
    info: RequestInfo,
    source_ips: Vec<String>,
    user_agent: String,
    long_running: bool,
    impersonation_requested: bool,
    /// Why authentication failed, should it (`Authentication failed, attempted: bearer`).
    auth_failure: String,
    request_headers: HeaderMap,
    request_body: Option<Arc<Mutex<Captured>>>,
    state: Mutex<AuditState>,
}

#[derive(Default)]
struct AuditState {
    user: Option<Identity>,
    config: Option<RequestAuditConfig>,
    impersonated: Option<UserInfo>,
    annotations: BTreeMap<String, String>,
}

/// Bytes read from a body, up to a limit.
#[derive(Debug, Default)]
struct Captured {
    chunks: Vec<Bytes>,
    len: usize,
    overflow: bool,
}

impl Captured {
    fn push(&mut self, data: &Bytes, limit: usize) {
        if self.overflow {
            return;
        }
        self.len += data.len();
        if self.len > limit {
            self.overflow = true;
            self.chunks.clear();
        } else {
            self.chunks.push(data.clone());
        }
    }

    fn bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }
}

impl RequestAudit {
    /// The context of `req`, and `req` with its body read through the context.
    pub(crate) fn new(
        policy: Arc<Policy>,
        sink: Sink,
        audit_id: String,
        req: Request,
    ) -> (RequestAudit, Request) {
        let info = resolve_request(
            req.method(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
        );
        let long_running = LONG_RUNNING_VERBS.contains(&info.verb.as_str())
            || LONG_RUNNING_SUBRESOURCES.contains(&info.subresource.as_str());
        let request_uri = req.uri().path_and_query().map_or_else(
            || req.uri().path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        let has_body = matches!(info.verb.as_str(), "create" | "update" | "patch")
            || (info.resource_request && info.verb.starts_with("delete"));
        let mut context = RequestAudit {
            policy,
            sink,
            audit_id,
            received: jiff::Timestamp::now(),
            request_uri,
            source_ips: source_ips(&req),
            user_agent: header(req.headers(), http::header::USER_AGENT),
            long_running,
            impersonation_requested: crate::impersonation::requested(req.headers()),
            auth_failure: auth_failure_message(&req),
            request_headers: HeaderMap::new(),
            request_body: None,
            info,
            state: Mutex::new(AuditState::default()),
        };
        if !has_body {
            return (context, req);
        }
        if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
            context
                .request_headers
                .insert(http::header::CONTENT_TYPE, ct.clone());
        }
        let captured = Arc::new(Mutex::new(Captured::default()));
        context.request_body = Some(Arc::clone(&captured));
        let req = req.map(|inner| Body::new(TeeBody { inner, captured }));
        (context, req)
    }

    pub(crate) fn audit_id(&self) -> &str {
        &self.audit_id
    }

    fn state(&self) -> MutexGuard<'_, AuditState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn authenticated(&self, user: &Identity) {
        let config = self.policy.evaluate(Some(user), &self.info);
        let event = {
            let mut state = self.state();
            state.user = Some(user.clone());
            state.config = Some(config);
            (config.level > Level::None && !config.omit_stages.contains(Stage::RequestReceived))
                .then(|| self.event(Stage::RequestReceived, &state, config.level))
        };
        if let Some(event) = event {
            self.sink.process(event).await;
        }
    }

    pub(crate) fn impersonated(&self, user: &Identity) {
        if self.impersonation_requested {
            self.state().impersonated = Some(UserInfo::from(user));
        }
    }

    pub(crate) fn annotate(&self, key: &str, value: &str) {
        self.state()
            .annotations
            .insert(key.to_string(), value.to_string());
    }

    fn event(&self, stage: Stage, state: &AuditState, level: Level) -> Event {
        let object_ref = self.info.resource_request.then(|| ObjectReference {
            resource: self.info.resource.clone(),
            namespace: self.info.namespace.clone(),
            name: self.info.name.clone(),
            api_group: self.info.api_group.clone(),
            api_version: self.info.api_version.clone(),
            subresource: self.info.subresource.clone(),
            ..ObjectReference::default()
        });
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level,
            audit_id: self.audit_id.clone(),
            stage,
            request_uri: self.request_uri.clone(),
            verb: self.info.verb.clone(),
            user: state.user.as_ref().map(UserInfo::from).unwrap_or_default(),
            impersonated_user: state.impersonated.clone(),
            source_ips: self.source_ips.clone(),
            user_agent: self.user_agent.clone(),
            object_ref,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: micro_time(self.received),
            stage_timestamp: micro_time(jiff::Timestamp::now()),
            annotations: state.annotations.clone(),
        }
    }

    /// The handler panicked: a `Panic` event (the panic then goes on).
    pub(crate) async fn panicked(&self, message: String) {
        let event = {
            let state = self.state();
            let config = self.config(&state);
            (config.level > Level::None && !config.omit_stages.contains(Stage::Panic)).then(|| {
                let mut event = self.event(Stage::Panic, &state, config.level);
                let mut status = ResponseStatus::code(500);
                status.status = "Failure".into();
                status.reason = "InternalError".into();
                status.message = format!("APIServer panic'd: {message}");
                event.response_status = Some(status);
                event
            })
        };
        if let Some(event) = event {
            self.sink.process(event).await;
        }
    }

    /// The policy's answer; for a request that never authenticated, with no user.
    fn config(&self, state: &AuditState) -> RequestAuditConfig {
        state
            .config
            .unwrap_or_else(|| self.policy.evaluate(None, &self.info))
    }

    /// Writes the response stages of `response` and returns it (a long-running one with
    /// a body that writes `ResponseComplete` when it ends).
    pub(crate) async fn respond(context: Arc<RequestAudit>, response: Response) -> Response {
        let code = response.status().as_u16();
        let (config, authenticated) = {
            let state = context.state();
            (context.config(&state), state.user.is_some())
        };
        if config.level == Level::None {
            return response;
        }
        if !authenticated {
            // kube-apiserver's failed-authentication audit: one ResponseStarted event.
            if !config.omit_stages.contains(Stage::ResponseStarted) {
                let event = {
                    let state = context.state();
                    let mut event = context.event(Stage::ResponseStarted, &state, config.level);
                    let mut status = ResponseStatus::code(code);
                    if code == 401 {
                        status.status = "Failure".into();
                        status.reason = "Unauthorized".into();
                        status.message = context.auth_failure.clone();
                    }
                    event.response_status = Some(status);
                    event
                };
                context.sink.process(event).await;
            }
            return response;
        }
        if context.long_running {
            if !config.omit_stages.contains(Stage::ResponseStarted) {
                let event = {
                    let state = context.state();
                    let mut event = context.event(Stage::ResponseStarted, &state, config.level);
                    event.response_status = Some(ResponseStatus::code(code));
                    event
                };
                context.sink.process(event).await;
            }
            if config.omit_stages.contains(Stage::ResponseComplete) {
                return response;
            }
            let completion = Completion {
                context,
                config,
                code,
            };
            return response.map(|inner| {
                Body::new(LongRunningBody {
                    inner,
                    completion: Some(completion),
                })
            });
        }
        if config.omit_stages.contains(Stage::ResponseComplete) {
            return response;
        }
        let completion = Completion {
            context,
            config,
            code,
        };
        let wants_body = config.level == Level::RequestResponse || code >= 400;
        if !wants_body {
            let (sink, event) = completion.event(None, None);
            sink.process(event).await;
            return response;
        }
        // Not long-running: the body is in memory already, so reading it costs no wait.
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(error = %e, "reading a response body for the audit log failed");
                let (sink, event) = completion.event(None, None);
                sink.process(event).await;
                return Response::from_parts(parts, Body::empty());
            }
        };
        let (sink, event) = completion.event(Some(&parts.headers), Some(&bytes));
        sink.process(event).await;
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// What writing `ResponseComplete` needs.
struct Completion {
    context: Arc<RequestAudit>,
    config: RequestAuditConfig,
    code: u16,
}

impl Completion {
    /// The `ResponseComplete` event, with the response body if given (and wanted).
    fn event(self, headers: Option<&HeaderMap>, body: Option<&Bytes>) -> (Sink, Event) {
        let context = &self.context;
        let level = self.config.level;
        let mut event = {
            let state = context.state();
            context.event(Stage::ResponseComplete, &state, level)
        };
        let mut status = ResponseStatus::code(self.code);
        let response_object = match (headers, body) {
            (Some(headers), Some(body)) => decode_response(headers, body),
            _ => None,
        };
        if let Some(object) = &response_object {
            status = status.with_status_object(object);
        }
        event.response_status = Some(status);
        if let Some(captured) = &context.request_body {
            let captured = captured.lock().unwrap_or_else(|p| p.into_inner());
            if captured.overflow {
                if level >= Level::Request {
                    event
                        .annotations
                        .insert(TRUNCATED_ANNOTATION.into(), "true".into());
                }
            } else if !captured.chunks.is_empty() {
                let bytes = captured.bytes();
                drop(captured);
                context.request_details(&mut event, level, &bytes, self.config.omit_managed_fields);
            }
        }
        if level == Level::RequestResponse && !context.long_running {
            match (response_object, body) {
                (_, Some(body)) if body.len() > MAX_RESPONSE_OBJECT_BYTES => {
                    event
                        .annotations
                        .insert(TRUNCATED_ANNOTATION.into(), "true".into());
                }
                (Some(mut object), _) => {
                    if self.config.omit_managed_fields {
                        omit_managed_fields(&mut object);
                    }
                    event.response_object = Some(object);
                }
                _ => {}
            }
        }
        (context.sink.clone(), event)
    }
}

impl RequestAudit {
    /// Fills `objectRef` from the request body (creates and updates name their object
    /// there) and, at `Request` and above, `requestObject`.
    fn request_details(&self, event: &mut Event, level: Level, body: &Bytes, omit_fields: bool) {
        let is_object_write = matches!(self.info.verb.as_str(), "create" | "update");
        if level < Level::Request {
            if is_object_write && let Some(reference) = event.object_ref.as_mut() {
                let content_type = header(&self.request_headers, http::header::CONTENT_TYPE);
                if content_type.is_empty() || content_type.contains("json") {
                    fill_reference_from_json(reference, body);
                } else if let Some(object) = decode_request(&self.request_headers, body) {
                    fill_reference(reference, object.get("metadata"));
                }
            }
            return;
        }
        let Some(mut object) = decode_request(&self.request_headers, body) else {
            return;
        };
        if is_object_write && let Some(reference) = event.object_ref.as_mut() {
            fill_reference(reference, object.get("metadata"));
        }
        if omit_fields {
            omit_managed_fields(&mut object);
        }
        event.request_object = Some(object);
    }
}

/// Name, namespace, uid and resourceVersion from an object's metadata, where the URL did
/// not give them (kube-apiserver's `LogRequestObject`).
fn fill_reference(reference: &mut ObjectReference, metadata: Option<&Value>) {
    let Some(metadata) = metadata else { return };
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    for (field, key) in [
        (&mut reference.namespace, "namespace"),
        (&mut reference.name, "name"),
        (&mut reference.uid, "uid"),
        (&mut reference.resource_version, "resourceVersion"),
    ] {
        if field.is_empty() {
            *field = text(key).to_string();
        }
    }
}

/// Like [`fill_reference`], reading only `metadata` (level Metadata: the rest of the body,
/// a Secret's data included, is skipped without being kept).
fn fill_reference_from_json(reference: &mut ObjectReference, body: &Bytes) {
    #[derive(serde::Deserialize)]
    struct Partial {
        metadata: Option<Value>,
    }
    if let Ok(partial) = serde_json::from_slice::<Partial>(body) {
        fill_reference(reference, partial.metadata.as_ref());
    }
}

/// The request body as JSON: an object in JSON, YAML or protobuf, or a patch document.
fn decode_request(headers: &HeaderMap, body: &Bytes) -> Option<Value> {
    crate::request::decode_body(headers, body)
        .ok()
        .or_else(|| serde_json::from_slice(body).ok())
}

/// The response body as JSON (JSON or protobuf responses).
fn decode_response(headers: &HeaderMap, body: &Bytes) -> Option<Value> {
    let content_type = header(headers, http::header::CONTENT_TYPE);
    if content_type.contains("protobuf") {
        return crate::protobuf::decode(body).ok();
    }
    if content_type.starts_with("application/json") {
        return serde_json::from_slice(body).ok();
    }
    None
}

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// kube-apiserver's `SourceIPs`: `X-Forwarded-For`, then `X-Real-Ip` if new, then the
/// peer address unless it repeats the last one.
fn source_ips(req: &Request) -> Vec<String> {
    let mut ips: Vec<std::net::IpAddr> = Vec::new();
    if let Some(forwarded) = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        ips.extend(
            forwarded
                .split(',')
                .filter_map(|p| p.trim().parse::<std::net::IpAddr>().ok()),
        );
    }
    if let Some(real) = req
        .headers()
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        && !ips.contains(&real)
    {
        ips.push(real);
    }
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>()
        && ips.last() != Some(&peer.ip())
    {
        ips.push(peer.ip());
    }
    ips.iter().map(ToString::to_string).collect()
}

/// kube-apiserver's message for a failed authentication: the methods attempted.
fn auth_failure_message(req: &Request) -> String {
    let mut methods = Vec::new();
    let authorization = header(req.headers(), http::header::AUTHORIZATION);
    let mut parts = authorization.trim().splitn(2, ' ');
    match parts.next() {
        Some(scheme) if scheme.eq_ignore_ascii_case("basic") => methods.push("basic"),
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer") && parts.next().is_some() => {
            methods.push("bearer")
        }
        _ => {}
    }
    if req.extensions().get::<Identity>().is_some() {
        methods.push("x509");
    }
    if methods.is_empty() {
        "Authentication failed, no credentials provided".to_string()
    } else {
        format!("Authentication failed, attempted: {}", methods.join(", "))
    }
}

/// A request body that keeps what the handler reads of it (up to the API's limit).
struct TeeBody {
    inner: Body,
    captured: Arc<Mutex<Captured>>,
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.captured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(data, MAX_BODY_BYTES);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of a long-running response: `ResponseComplete` is written when it ends or is
/// dropped (the client went away, the server stops).
struct LongRunningBody {
    inner: Body,
    completion: Option<Completion>,
}

impl LongRunningBody {
    fn complete(&mut self) {
        if let Some(completion) = self.completion.take() {
            let (sink, event) = completion.event(None, None);
            sink.process_detached(event);
        }
    }
}

impl HttpBody for LongRunningBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            self.complete();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LongRunningBody {
    fn drop(&mut self) {
        self.complete();
    }
}
