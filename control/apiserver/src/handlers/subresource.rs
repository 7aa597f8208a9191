//! The subresources with handlers of their own: `/scale` (autoscaling/v1 Scale),
//! `/binding` and `/log`. (`/status` and `/approval` are the object's update and patch
//! handlers with a [`Part`].)

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::read::read_object;
use super::write::{Part, apply_patch, apply_update, decode_patch};
use super::{Request, json_response};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::request;

/// The autoscaling/v1 Scale view of an object.
fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let pick = |f: &str| meta.get(f).cloned().unwrap_or(Value::Null);
    // Kubernetes' string form (sorted by key); an invalid selector cannot be stored.
    let selector =
        crate::table::format::selector_string(obj.pointer("/spec/selector")).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// `GET …/scale`.
pub async fn get_scale(req: &Request<'_>, name: &str) -> ApiResult<Response> {
    let (obj, _) = read_object(req, name).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&obj)))
}

fn replicas_from_scale(scale: &Value) -> ApiResult<i64> {
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    match replicas.as_i64() {
        Some(r) if r >= 0 => Ok(r),
        _ => Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            object::name(scale),
            &[crate::validation::Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        )),
    }
}

async fn write_scale(
    req: &Request<'_>,
    name: &str,
    precondition: Option<i64>,
    to_scale: &(dyn Fn(&Value) -> ApiResult<Value> + Sync),
) -> ApiResult<Response> {
    let dry_run = req.query.dry_run()?;
    let updated = apply_update(
        req,
        name,
        Part::Main,
        precondition,
        dry_run,
        &mut |current| {
            let scale = to_scale(&scale_of(current))?;
            let replicas = replicas_from_scale(&scale)?;
            let mut new = current.clone();
            new["spec"]["replicas"] = json!(replicas);
            object::meta_mut(&mut new).remove("resourceVersion");
            Ok(new)
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated.object)))
}

/// `PUT …/scale`.
pub async fn update_scale(req: &Request<'_>, name: &str, body: Bytes) -> ApiResult<Response> {
    let scale = request::decode_body(&req.headers, &body)?;
    let precondition = object::resource_version(&scale)?;
    write_scale(req, name, precondition, &|_| Ok(scale.clone())).await
}

/// `PATCH …/scale` (what `kubectl scale` sends).
pub async fn patch_scale(req: &Request<'_>, name: &str, body: Bytes) -> ApiResult<Response> {
    let patch = decode_patch(req, &body)?;
    write_scale(req, name, None, &|current| {
        apply_patch(req, ("autoscaling", "Scale"), current, &patch)
    })
    .await
}

/// `POST pods/{name}/binding`: assigns the pod to a node, once.
pub async fn bind(req: &Request<'_>, name: &str, body: Bytes) -> ApiResult<Response> {
    let binding = request::decode_body(&req.headers, &body)?;
    if let Some(bname) = object::meta_str(&binding, "name")
        && !bname.is_empty()
        && bname != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the binding ({bname}) does not match the pod name on the URL ({name})"
        )));
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            &[crate::validation::Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: "target.name".into(),
            }],
        ));
    }
    let precondition_uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let rt = req.rt;
    let now = object::now_rfc3339();
    apply_update(
        req,
        name,
        Part::Binding,
        None,
        req.query.dry_run()?,
        &mut |current| {
            if let Some(uid) = &precondition_uid
                && object::meta_str(current, "uid") != Some(uid.as_str())
            {
                return Err(ApiError::conflict(
                    rt.group,
                    rt.plural,
                    name,
                    "the pod's UID does not match the binding",
                ));
            }
            if object::is_deleting(current) {
                return Err(ApiError::conflict(
                    rt.group,
                    rt.plural,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            match current.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(existing) if !existing.is_empty() => {
                    return Err(ApiError::conflict(
                        rt.group,
                        rt.plural,
                        name,
                        &format!("pod {name} is already assigned to node \"{existing}\""),
                    ));
                }
                _ => {}
            }
            let mut new = current.clone();
            new["spec"]["nodeName"] = json!(node);
            let mut conditions: Vec<Value> = new
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            new["status"]["conditions"] = json!(conditions);
            object::meta_mut(&mut new).remove("resourceVersion");
            Ok(new)
        },
    )
    .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &status))
}

/// `GET pods/{name}/log`: proxied to the node agent that runs the pod.
pub async fn log(req: &Request<'_>, name: &str) -> ApiResult<Response> {
    let (pod, _) = read_object(req, name).await?;
    let containers: Vec<String> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let regular: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match req.query.get("container") {
        Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if regular.len() == 1 => regular[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                regular.join(" ")
            )));
        }
    };
    let Some(node) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled to a node yet"
        )));
    };
    for (param, what) in [
        ("tailLines", "tailLines"),
        ("sinceSeconds", "sinceSeconds"),
        ("limitBytes", "limitBytes"),
    ] {
        if let Some(v) = req.query.int(param)?
            && (v < 0 || (param != "tailLines" && v == 0))
        {
            return Err(ApiError::bad_request(format!(
                "{what} must be a positive integer (got {v})"
            )));
        }
    }
    let (address, port) = agent_endpoint(req, node).await?;
    let mut query = Vec::new();
    for key in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "limitBytes",
    ] {
        if let Some(v) = req.query.get(key) {
            let encoded: String =
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            query.push(format!("{key}={encoded}"));
        }
    }
    let ns = req.store_namespace().unwrap_or("default");
    let mut path = format!("/containerLogs/{ns}/{name}/{container}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let client = req
        .state
        .inner
        .node_client
        .get()
        .ok_or_else(|| ApiError::unavailable("the apiserver has no node client configured"))?;
    client.get(node, &address, port, &path).await
}

/// `nodes/{name}/proxy/{path}`: the request (method, path and query, body, its
/// `Content-Type` and `Accept`) passed on to the node's agent, which authorizes the
/// apiserver's own identity (`system:kubelet-api-admin`), as kube-apiserver proxies to the
/// kubelet. Who may ask is decided before, by RBAC on `nodes/proxy` with the method's verb.
pub async fn node_proxy(
    req: &Request<'_>,
    node: &str,
    method: http::Method,
    path_and_query: &str,
    body: Bytes,
) -> ApiResult<Response> {
    let (address, port) = agent_endpoint(req, node).await?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(http_body_util::Full::new(body))
        .map_err(|e| {
            ApiError::bad_request(format!("invalid proxy path {path_and_query:?}: {e}"))
        })?;
    for name in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
        if let Some(value) = req.headers.get(&name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let client = req
        .state
        .inner
        .node_client
        .get()
        .ok_or_else(|| ApiError::unavailable("the apiserver has no node client configured"))?;
    client.send(node, &address, port, request).await
}

/// Where the agent of node `node` listens: the Node's InternalIP (else its first address)
/// and `status.daemonEndpoints.kubeletEndpoint.Port`.
pub(crate) async fn agent_endpoint(req: &Request<'_>, node: &str) -> ApiResult<(String, u16)> {
    let nodes = req
        .state
        .registry()
        .by_kind("", "Node")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let node_obj = match req.state.store().get(&nodes.key(None, node)).await {
        Ok(Some(kv)) => object::decode(&kv)?,
        Ok(None) => return Err(ApiError::not_found("", "nodes", node)),
        Err(e) => return Err(super::store_error(nodes, node, e)),
    };
    let address = node_obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
                .or_else(|| a.first())
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {node} has no address in status.addresses to reach its agent at"
            ))
        })?
        .to_string();
    let port = node_obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {node} has no agent endpoint (status.daemonEndpoints.kubeletEndpoint.Port)"
            ))
        })?;
    Ok((address, port))
}
