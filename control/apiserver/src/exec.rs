//! `pods/exec` and `pods/attach`: `kubectl exec` and `kubectl attach`, relayed to the pod's
//! node agent as kube-apiserver relays them to the kubelet.
//!
//! 1. The options are read from the query (`command` repeated, `container`, `stdin`,
//!    `stdout`, `stderr`, `tty`) and checked with Kubernetes' messages: a command for exec,
//!    at least one stream, a container the pod has (the only one when none is named);
//!    a pod that has completed is refused. RBAC has already authorized `create` (POST) or
//!    `get` (GET) on the subresource.
//! 2. The streams are SPDY/3.1 (`Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version`
//!    `v4.channel.k8s.io` and older). kubectl 1.30+ first asks for a WebSocket
//!    (`v5.channel.k8s.io`); that is answered 400, which kubectl takes as an upgrade
//!    failure and falls back to SPDY (its `FallbackExecutor`), as it does against a
//!    kube-apiserver without the WebSocket translation.
//! 3. The agent gets the kubelet's request: `/exec/{ns}/{pod}/{container}?command=...&input=1
//!    &output=1&error=1&tty=1` (`/attach/...` without `command`), upgraded to SPDY with the
//!    protocols the client offered; its refusal is passed back as it came, its 101 joins
//!    the two connections byte for byte ([`crate::portforward::join_spdy`]).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Request;
use crate::handlers::read::read_object;
use crate::portforward::{agent_upgrade, header_has, join_spdy, path_segment, pod_agent};

/// Which of the two subresources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `pods/exec`: runs a command in the container.
    Exec,
    /// `pods/attach`: joins the container's main process.
    Attach,
}

impl Stream {
    fn path(self) -> &'static str {
        match self {
            Stream::Exec => "exec",
            Stream::Attach => "attach",
        }
    }
}

/// `PodExecOptions` / `PodAttachOptions` as the query carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    command: Vec<String>,
    container: String,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn truthy(value: &str) -> bool {
    matches!(value, "true" | "1" | "True" | "TRUE" | "t" | "T")
}

impl Options {
    fn parse(query: Option<&str>) -> Options {
        let mut options = Options::default();
        for (key, value) in form_urlencoded(query.unwrap_or("")) {
            match key.as_str() {
                "command" => options.command.push(value),
                "container" => options.container = value,
                "stdin" => options.stdin = truthy(&value),
                "stdout" => options.stdout = truthy(&value),
                "stderr" => options.stderr = truthy(&value),
                "tty" => options.tty = truthy(&value),
                _ => {}
            }
        }
        options
    }

    /// The kubelet's query (`remotecommand` parameter names).
    fn agent_query(&self, stream: Stream) -> String {
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut params: Vec<String> = Vec::new();
        if stream == Stream::Exec {
            params.extend(
                self.command
                    .iter()
                    .map(|c| format!("command={}", encode(c))),
            );
        }
        for (on, name) in [
            (self.stdin, "input"),
            (self.stdout, "output"),
            (self.stderr, "error"),
            (self.tty, "tty"),
        ] {
            if on {
                params.push(format!("{name}=1"));
            }
        }
        params.join("&")
    }
}

/// `key=value` pairs of a query, percent- and `+`-decoded.
fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// The names of a pod's containers of one kind (`containers`, `initContainers`...).
fn container_names<'a>(pod: &'a Value, field: &str) -> Vec<&'a str> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the options against the pod (Kubernetes' `ExecLocation`/`AttachLocation` and
/// the options' validation) and fills in the container.
fn check(stream: Stream, pod: &Value, name: &str, options: &mut Options) -> ApiResult<()> {
    if stream == Stream::Exec && options.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let containers = container_names(pod, "containers");
    let init = container_names(pod, "initContainers");
    let ephemeral = container_names(pod, "ephemeralContainers");
    if options.container.is_empty() {
        if containers.len() == 1 {
            options.container = containers[0].to_string();
        } else {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return Err(ApiError::bad_request(message));
        }
    } else if !containers
        .iter()
        .chain(&init)
        .chain(&ephemeral)
        .any(|c| *c == options.container)
    {
        return Err(ApiError::bad_request(format!(
            "container {} is not valid for pod {name}",
            options.container
        )));
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        let what = match stream {
            Stream::Exec => "exec into",
            Stream::Attach => "attach to",
        };
        return Err(ApiError::bad_request(format!(
            "cannot {what} a container in a completed pod; current phase is {phase}"
        )));
    }
    Ok(())
}

/// The SPDY protocols the client offered; a WebSocket request is refused (kubectl then
/// falls back to SPDY).
fn spdy_protocols(headers: &HeaderMap, stream: Stream) -> ApiResult<Vec<HeaderValue>> {
    let upgrade = header_has(headers, &http::header::CONNECTION, "upgrade");
    if upgrade && header_has(headers, &http::header::UPGRADE, "websocket") {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: {} over WebSockets (v5.channel.k8s.io) is not served; use SPDY/3.1 (kubectl falls back to it)",
            stream.path()
        )));
    }
    if upgrade && header_has(headers, &http::header::UPGRADE, "SPDY/3.1") {
        return Ok(headers
            .get_all("x-stream-protocol-version")
            .iter()
            .cloned()
            .collect());
    }
    Err(ApiError::bad_request(format!(
        "Upgrade request required: pods/{} takes a connection upgrade to SPDY/3.1 (Upgrade: SPDY/3.1, X-Stream-Protocol-Version: v4.channel.k8s.io)",
        stream.path()
    )))
}

/// The agent's refusal (plain text, as the kubelet's) as a `Status`: kubectl decodes a
/// refused upgrade's body as YAML, so a text with `: ` in it would read as an empty
/// object and kubectl print only "Error from server: ".
async fn as_status(refusal: Response) -> ApiError {
    use http_body_util::BodyExt;
    let code = refusal.status();
    let body = refusal
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        c if c.is_server_error() => "InternalError",
        _ => "BadRequest",
    };
    ApiError {
        code,
        reason,
        message,
        details: None,
        close_connection: false,
    }
}

/// `GET|POST pods/{name}/exec` and `pods/{name}/attach`.
pub async fn connect(
    req: &Request<'_>,
    name: &str,
    stream: Stream,
    query: Option<&str>,
    upgrade: Option<OnUpgrade>,
) -> ApiResult<Response> {
    let (pod, _) = read_object(req, name).await?;
    let mut options = Options::parse(query);
    check(stream, &pod, name, &mut options)?;
    let offered = spdy_protocols(&req.headers, stream)?;
    let Some(client_upgrade) = upgrade else {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: {} needs an HTTP/1.1 connection (HTTP/2 cannot upgrade)",
            stream.path()
        )));
    };
    let (node, address, port) = pod_agent(req, &pod, name).await?;
    let node = node.as_str();
    let ns = req.store_namespace().unwrap_or("default");
    let encode = path_segment;
    let path = format!(
        "/{}/{}/{}/{}?{}",
        stream.path(),
        encode(ns),
        encode(name),
        encode(&options.container),
        options.agent_query(stream)
    );
    let mut agent_headers = HeaderMap::new();
    agent_headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    agent_headers.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    for v in offered {
        agent_headers.append("x-stream-protocol-version", v);
    }
    let (agent_101, agent_io) =
        match agent_upgrade(req, node, &address, port, &path, agent_headers).await? {
            Ok(upgraded) => upgraded,
            Err(refusal) => return Err(as_status(refusal).await),
        };
    let mut resp = (StatusCode::SWITCHING_PROTOCOLS, Body::empty()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Some(v) = agent_101.get("x-stream-protocol-version") {
        headers.insert("x-stream-protocol-version", v.clone());
    }
    join_spdy(client_upgrade, agent_io, stream.path(), name.to_string());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], init: &[&str], phase: &str) -> Value {
        let named = |names: &[&str]| -> Vec<Value> {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "x"}))
                .collect()
        };
        json!({"spec": {"containers": named(containers), "initContainers": named(init)},
               "status": {"phase": phase}})
    }

    #[test]
    fn kubectls_query_is_read_and_passed_on_in_the_kubelets_words() {
        let options = Options::parse(Some(
            "command=sh&command=-c&command=echo+hi%21&stdin=true&stdout=true&tty=true&container=app",
        ));
        assert_eq!(options.command, ["sh", "-c", "echo hi!"]);
        assert_eq!(options.container, "app");
        assert!(options.stdin && options.stdout && options.tty && !options.stderr);
        assert_eq!(
            options.agent_query(Stream::Exec),
            "command=sh&command=%2Dc&command=echo%20hi%21&input=1&output=1&tty=1"
        );
        assert_eq!(
            options.agent_query(Stream::Attach),
            "input=1&output=1&tty=1"
        );
    }

    #[test]
    fn options_are_checked_with_kubernetes_messages() {
        let err = |stream, pod: &Value, query: &str| {
            let mut options = Options::parse(Some(query));
            check(stream, pod, "p", &mut options).unwrap_err().message
        };
        let one = pod(&["app"], &[], "Running");
        assert_eq!(
            err(Stream::Exec, &one, "stdout=true"),
            "you must specify at least one command for the container"
        );
        assert_eq!(
            err(Stream::Exec, &one, "command=ls"),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let two = pod(&["a", "b"], &["setup"], "Running");
        assert_eq!(
            err(Stream::Exec, &two, "command=ls&stdout=1"),
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [setup]"
        );
        assert_eq!(
            err(Stream::Attach, &two, "stdout=1&container=c"),
            "container c is not valid for pod p"
        );
        assert_eq!(
            err(
                Stream::Exec,
                &pod(&["app"], &[], "Succeeded"),
                "command=ls&stdout=1"
            ),
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
        let mut options = Options::parse(Some("command=ls&stdout=1"));
        check(Stream::Exec, &one, "p", &mut options).unwrap();
        assert_eq!(options.container, "app");
    }

    #[test]
    fn a_websocket_is_refused_so_kubectl_falls_back_to_spdy() {
        let mut ws = HeaderMap::new();
        ws.insert("connection", HeaderValue::from_static("Upgrade"));
        ws.insert("upgrade", HeaderValue::from_static("websocket"));
        let refused = spdy_protocols(&ws, Stream::Exec).unwrap_err();
        assert_eq!(refused.code, StatusCode::BAD_REQUEST);
        let mut spdy = HeaderMap::new();
        spdy.insert("connection", HeaderValue::from_static("Upgrade"));
        spdy.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        spdy.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert_eq!(spdy_protocols(&spdy, Stream::Exec).unwrap().len(), 1);
    }
}
