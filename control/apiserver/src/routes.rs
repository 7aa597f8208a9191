//! The HTTP surface: health, version, discovery, OpenAPI, and every resource path.
//!
//! Resource paths (`/api/...`, `/apis/...`) are parsed by `request::parse_path` rather
//! than by router patterns, because Kubernetes paths are ambiguous to a pattern router
//! (`/api/v1/namespaces/{name}` vs `/api/v1/namespaces/{ns}/{plural}`).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, Method, StatusCode};
use serde_json::Value;

use crate::error::ApiError;
use crate::handlers::{self, json_response};
use crate::metrics::RequestLabels;
use crate::request::{self, ApiPath, MAX_BODY_BYTES, Query};
use crate::state::AppState;

/// Media type of aggregated discovery (kubectl asks for it first).
const DISCOVERY_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The apiserver's router (authentication is layered on by the caller).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/cacerts", get(cacerts))
        .route("/metrics", get(metrics))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .fallback(api)
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if !state.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: bootstrapping").into_response();
    }
    // Not ready while the store refuses writes (a full disk); ready again by itself.
    match state.store().health() {
        Ok(()) => "ok".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]etcd failed: {e}\nreadyz check failed\n"),
        )
            .into_response(),
    }
}

/// The cluster CA certificate (public: agents check it against their join token's hash).
async fn cacerts(State(state): State<AppState>) -> Response {
    match state.inner.ca_pem.get() {
        Some(pem) => (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "text/plain")],
            pem.clone(),
        )
            .into_response(),
        None => ApiError::unavailable("the cluster CA is not loaded yet").into_response(),
    }
}

/// The Prometheus metrics (authenticated, as kube-apiserver's `/metrics`).
async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics().render(),
    )
        .into_response()
}

async fn version() -> Response {
    json_response(StatusCode::OK, &crate::discovery::version_info())
}

async fn openapi_index(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, state.inner.openapi.index())
}

async fn openapi_document(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    match state.inner.openapi.document(&path) {
        Some(doc) => (
            StatusCode::OK,
            [
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("public, immutable"),
                ),
            ],
            Body::from(doc.json.clone()),
        )
            .into_response(),
        None => ApiError::no_route(format!("no OpenAPI v3 document for {path}")).into_response(),
    }
}

fn wants_aggregated(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList"))
}

/// Every `/api` and `/apis` request, and the 404 for anything else.
async fn api(State(state): State<AppState>, request: Request) -> Response {
    match serve_api(state, request).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    }
}

async fn serve_api(state: AppState, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if !(path == "/api"
        || path.starts_with("/api/")
        || path == "/apis"
        || path.starts_with("/apis/"))
    {
        return Err(ApiError::no_route(format!(
            "the server could not find the requested resource ({path})"
        )));
    }
    if !state.is_ready() {
        return Err(ApiError::unavailable(
            "the apiserver is starting; try again in a moment",
        ));
    }
    let registry = state.registry();
    let parsed = request::parse_path(registry, &path)?;
    let target = match parsed {
        ApiPath::Root { legacy } => {
            only_get(&parts.method)?;
            if wants_aggregated(&parts.headers) {
                let doc = crate::discovery::aggregated_v2(registry, legacy);
                return Ok(with_content_type(
                    json_response(StatusCode::OK, &doc),
                    DISCOVERY_V2,
                ));
            }
            let doc = if legacy {
                crate::discovery::api_versions(&server_address(&parts.headers))
            } else {
                crate::discovery::api_group_list(registry)
            };
            return Ok(json_response(StatusCode::OK, &doc));
        }
        ApiPath::Group { group } => {
            only_get(&parts.method)?;
            let doc = crate::discovery::api_group(registry, &group).unwrap_or(Value::Null);
            return Ok(json_response(StatusCode::OK, &doc));
        }
        ApiPath::GroupVersion { group, version } => {
            only_get(&parts.method)?;
            let doc = crate::discovery::api_resource_list(registry, &group, &version)
                .unwrap_or(Value::Null);
            return Ok(json_response(StatusCode::OK, &doc));
        }
        ApiPath::Resource(mut target) => {
            target.raw_query = parts.uri.query().map(str::to_string);
            target
        }
    };
    let query = Query::parse(parts.uri.query());
    let labels = request_labels(&parts.method, &target, &query);
    let result = match read_body(body, &parts.headers).await {
        Ok(body) => {
            let user = parts.extensions.get::<crate::authn::Identity>().cloned();
            // Only `pods/portforward` takes the connection over (HTTP/1.1 upgrades).
            let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            handlers::dispatch(
                &state,
                parts.method,
                target,
                query,
                parts.headers,
                body,
                handlers::Caller { user, upgrade },
            )
            .await
        }
        Err(e) => Err(e),
    };
    let code = match &result {
        Ok(response) => response.status(),
        Err(e) => e.code,
    };
    state.metrics().request_done(labels, code.as_u16());
    result
}

/// kube-apiserver's labels of a resource request for `apiserver_request_total`.
fn request_labels<'a>(
    method: &Method,
    target: &request::Target<'a>,
    query: &Query,
) -> RequestLabels<'a> {
    let named = target.name.is_some();
    let verb = match *method {
        Method::GET | Method::HEAD if named => "GET",
        Method::GET | Method::HEAD if query.flag("watch") => "WATCH",
        Method::GET | Method::HEAD => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if named => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    };
    RequestLabels {
        verb,
        resource: target.rt,
        subresource: target.subresource.map_or("", |s| s.name()),
        scope: if named {
            "resource"
        } else {
            crate::metrics::collection_scope(target.namespace.as_deref())
        },
        dry_run: query.get("dryRun") == Some("All"),
    }
}

/// The address the client reached us at, for `serverAddressByClientCIDRs`.
fn server_address(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:6443")
        .to_string()
}

/// Bodies past the limit are read and discarded up to this size, so that the client
/// finishes sending and sees the 413 on a connection it can keep using.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a request body of at most [`MAX_BODY_BYTES`].
async fn read_body(body: Body, headers: &http::HeaderMap) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT) {
        let mut err = too_large();
        err.close_connection = true;
        return Err(err);
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_LIMIT {
            let mut err = too_large();
            err.close_connection = true;
            return Err(err);
        }
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "Request entity too large: limit is {MAX_BODY_BYTES}"
    ))
}

fn only_get(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on discovery documents; use GET"
        )))
    }
}

fn with_content_type(mut resp: Response, ct: &'static str) -> Response {
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}
