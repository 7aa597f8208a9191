//! The generic resource handlers: one dispatcher for every kind in the registry.
//!
//! `dispatch` maps (method, path shape, subresource) to a verb. Reads live in
//! `handlers/read.rs`, create/update/patch in `handlers/write.rs`, deletion in
//! `handlers/delete.rs`, `/status`, `/scale`, `/binding` and `/log` in
//! `handlers/subresource.rs`, `pods/eviction` in `handlers/eviction.rs`,
//! `pods/portforward` in `crate::portforward`; watches in `crate::watch`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::{ResourceType, Subresource};
use crate::request::{Output, Query, Target};
use crate::state::AppState;
use write::Part;

pub mod delete;
pub mod eviction;
pub mod read;
pub mod review;
pub mod subresource;
pub mod write;

/// One resource request, parsed.
pub struct Request<'a> {
    pub state: &'a AppState,
    pub rt: &'a ResourceType,
    pub namespace: Option<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub output: Output,
    /// Which object a Table row carries (`includeObject`).
    pub include: crate::table::IncludeObject,
    /// The (possibly impersonated) user making the request; `None` only for requests the
    /// server makes to itself.
    pub user: Option<crate::authn::Identity>,
}

impl Request<'_> {
    /// The namespace to use for a namespaced kind (path first, body second, `default` never:
    /// Kubernetes requires it on the path).
    pub fn store_namespace(&self) -> Option<&str> {
        if self.rt.namespaced {
            self.namespace.as_deref()
        } else {
            None
        }
    }
}

/// Who sent a request, and its connection's upgrade (HTTP/1.1 requests; only
/// `pods/portforward` takes it).
pub struct Caller {
    /// The (possibly impersonated) user; `None` only for the server's own requests.
    pub user: Option<crate::authn::Identity>,
    /// The connection, once the response switches protocols.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Serves one request aimed at a resource.
pub async fn dispatch(
    state: &AppState,
    method: Method,
    target: Target<'_>,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
    caller: Caller,
) -> ApiResult<Response> {
    let Caller { user, upgrade } = caller;
    let output = crate::request::negotiate(&headers)?;
    let Target {
        rt,
        namespace,
        name,
        subresource,
        proxy_path,
        raw_query,
    } = target;
    if rt.namespaced && name.is_some() && namespace.is_none() {
        return Err(ApiError::no_route(format!(
            "the server could not find the requested resource: {} is namespaced; use /namespaces/{{namespace}}/{}/{{name}}",
            rt.plural, rt.plural
        )));
    }
    let include = crate::table::IncludeObject::parse(query.get("includeObject"))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let req = Request {
        state,
        rt,
        namespace,
        query,
        headers,
        output,
        include,
        user,
    };
    if rt.create_only {
        return match (method, name, subresource) {
            (Method::POST, None, None) => review::create(&req, body).await,
            (m, _, _) => Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on {}: it only supports create (POST)",
                rt.plural
            ))),
        };
    }
    let verb_not_allowed = |what: &str| {
        ApiError::method_not_allowed(format!(
            "{what} is not supported on {}",
            path_desc(rt, subresource)
        ))
    };
    match (method, name, subresource) {
        (Method::GET, None, None) => {
            if req.query.flag("watch") {
                crate::watch::serve(&req).await
            } else {
                read::list(&req).await
            }
        }
        (Method::POST, None, None) => write::create(&req, body).await,
        (Method::DELETE, None, None) => delete::delete_collection(&req, body).await,
        (Method::GET, Some(name), None) => read::get(&req, &name).await,
        (Method::PUT, Some(name), None) => write::update(&req, &name, body, Part::Main).await,
        (Method::PATCH, Some(name), None) => write::patch(&req, &name, body, Part::Main).await,
        (Method::DELETE, Some(name), None) => delete::delete(&req, &name, body).await,
        (Method::GET, Some(name), Some(Subresource::Status)) => read::get(&req, &name).await,
        (Method::PUT, Some(name), Some(Subresource::Status)) => {
            write::update(&req, &name, body, Part::Status).await
        }
        (Method::PATCH, Some(name), Some(Subresource::Status)) => {
            write::patch(&req, &name, body, Part::Status).await
        }
        (Method::GET, Some(name), Some(Subresource::Approval)) => read::get(&req, &name).await,
        (Method::PUT, Some(name), Some(Subresource::Approval)) => {
            write::update(&req, &name, body, Part::Approval).await
        }
        (Method::PATCH, Some(name), Some(Subresource::Approval)) => {
            write::patch(&req, &name, body, Part::Approval).await
        }
        (Method::GET, Some(name), Some(Subresource::Scale)) => {
            subresource::get_scale(&req, &name).await
        }
        (Method::PUT, Some(name), Some(Subresource::Scale)) => {
            subresource::update_scale(&req, &name, body).await
        }
        (Method::PATCH, Some(name), Some(Subresource::Scale)) => {
            subresource::patch_scale(&req, &name, body).await
        }
        (Method::POST, Some(name), Some(Subresource::Binding)) => {
            subresource::bind(&req, &name, body).await
        }
        (Method::POST, Some(name), Some(Subresource::Eviction)) => {
            eviction::evict(&req, &name, body).await
        }
        (Method::GET, Some(name), Some(Subresource::Log)) => subresource::log(&req, &name).await,
        (Method::GET | Method::POST, Some(name), Some(Subresource::PortForward)) => {
            crate::portforward::connect(&req, &name, upgrade).await
        }
        (method, Some(name), Some(Subresource::Proxy)) => {
            // The path and the query go to the agent as sent.
            let mut path = proxy_path.unwrap_or_else(|| "/".to_string());
            if let Some(q) = &raw_query {
                path.push('?');
                path.push_str(q);
            }
            subresource::node_proxy(&req, &name, method, &path, body).await
        }
        (Method::GET | Method::POST, Some(name), Some(Subresource::Exec)) => {
            crate::exec::connect(
                &req,
                &name,
                crate::exec::Stream::Exec,
                raw_query.as_deref(),
                upgrade,
            )
            .await
        }
        (Method::GET | Method::POST, Some(name), Some(Subresource::Attach)) => {
            crate::exec::connect(
                &req,
                &name,
                crate::exec::Stream::Attach,
                raw_query.as_deref(),
                upgrade,
            )
            .await
        }
        (Method::POST, Some(name), Some(Subresource::Token)) => {
            crate::serviceaccount::token_request::create(&req, &name, body).await
        }
        (Method::POST, Some(_), None) => Err(verb_not_allowed(
            "POST to a named object (use PUT or PATCH)",
        )),
        (m, _, _) => Err(verb_not_allowed(m.as_str())),
    }
}

fn path_desc(rt: &ResourceType, sub: Option<Subresource>) -> String {
    match sub {
        Some(s) => format!("{}/{}", rt.plural, s.name()),
        None => rt.plural.to_string(),
    }
}

/// A JSON response.
pub fn json_response(code: StatusCode, value: &Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("cannot encode response: {e}")).into_response(),
    }
}

/// Renders one object in the form the client asked for.
pub fn object_response(req: &Request<'_>, code: StatusCode, obj: Value) -> Response {
    match req.output {
        Output::Object => json_response(code, &obj),
        Output::Metadata => json_response(code, &partial_metadata(&obj)),
        Output::Table => {
            let table = crate::table::object_to_table(
                req.rt,
                &obj,
                req.include,
                jiff::Timestamp::now(),
                true,
            );
            json_response(code, &table)
        }
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    serde_json::json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
    })
}

/// Maps a store error on one object to the Kubernetes error.
pub fn store_error(rt: &ResourceType, name: &str, err: wasmkube_store::StoreError) -> ApiError {
    use wasmkube_store::StoreError as E;
    match err {
        E::AlreadyExists { .. } => ApiError::already_exists(rt.group, rt.plural, name),
        E::NotFound { .. } => ApiError::not_found(rt.group, rt.plural, name),
        E::Conflict { .. } => ApiError::stale(rt.group, rt.plural, name),
        E::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        E::FutureRevision { requested, current } => ApiError {
            code: StatusCode::GATEWAY_TIMEOUT,
            reason: "Timeout",
            message: format!("Too large resource version: {requested}, current: {current}"),
            details: Some(serde_json::json!({"retryAfterSeconds": 1})),
            close_connection: false,
        },
        E::Closed => ApiError::unavailable("the apiserver is shutting down"),
        E::TooLarge { size, limit, .. } => ApiError::too_large(format!(
            "Request entity too large: {} \"{name}\" would be {size} bytes when stored, over the \
             limit of {limit} bytes (etcdserver: request is too large)",
            crate::error::group_resource(rt.group, rt.plural)
        )),
        E::NoSpace { .. } => ApiError::insufficient_storage(format!(
            "Insufficient storage: {} \"{name}\" was not written: {err}",
            crate::error::group_resource(rt.group, rt.plural)
        )),
        E::Unavailable(_) => {
            let mut error = ApiError::unavailable(format!(
                "the store cannot serve {} now, try again later: {err}",
                crate::error::group_resource(rt.group, rt.plural)
            ));
            error.details = Some(serde_json::json!({"retryAfterSeconds": 1}));
            error
        }
        other => ApiError::internal(other.to_string()),
    }
}
