//! `pods/portforward`: `kubectl port-forward`'s connection, relayed to the pod's node agent.
//!
//! kubectl (client-go 1.31+) first asks for a WebSocket (`GET`, `Upgrade: websocket`,
//! `Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`) carrying SPDY frames in binary
//! messages, and when that upgrade fails falls back to plain SPDY (`POST`, `Upgrade:
//! SPDY/3.1`, `X-Stream-Protocol-Version: portforward.k8s.io`). Both are served:
//!
//! 1. the pod must exist (404) and be Running (400, `unable to forward port because pod is
//!    not running. Current status=Pending`, kubectl's own words); RBAC has already
//!    authorized `create` (POST) or `get` (GET) on `pods/portforward`;
//! 2. the apiserver sends the agent of the pod's node (found and verified as for
//!    `pods/log`, [`crate::node_proxy`]) a SPDY upgrade for `/portForward/{ns}/{pod}`;
//!    an agent refusal is passed back as it came (status and text);
//! 3. on the agent's 101 the client gets its 101 (the SPDY headers, or the WebSocket
//!    handshake with the tunnelling subprotocol) and the two connections are joined: bytes
//!    as they are for SPDY, binary WebSocket messages to and from the agent's byte stream
//!    for the tunnel ([`websocket`]).
//!
//! The apiserver relays and never parses SPDY, as kube-apiserver's UpgradeAwareHandler and
//! its tunnelling handler do: the session (stream pairs, pings, errors) lives in one place,
//! the agent, and the apiserver's cost per connection is two copies. Terminating SPDY here
//! and opening a connection per stream would duplicate the session logic for no gain.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Request;
use crate::handlers::read::read_object;
use crate::handlers::subresource::agent_endpoint;
use crate::node_proxy::AgentUpgrade;

pub mod websocket;

/// The port-forward subprotocol.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in WebSocket messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// SPDY's upgrade token.
const SPDY_31: &str = "SPDY/3.1";

/// Which upgrade the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Upgrade {
    /// Plain SPDY/3.1 with these offered subprotocols.
    Spdy(Vec<HeaderValue>),
    /// SPDY inside a WebSocket; the client's `Sec-WebSocket-Key`.
    Tunnel(String),
}

pub(crate) fn header_has(
    headers: &HeaderMap,
    name: &http::header::HeaderName,
    token: &str,
) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn requested_upgrade(headers: &HeaderMap) -> ApiResult<Upgrade> {
    let connection_upgrade = header_has(headers, &http::header::CONNECTION, "upgrade");
    if connection_upgrade && header_has(headers, &http::header::UPGRADE, "websocket") {
        if !header_has(
            headers,
            &http::header::SEC_WEBSOCKET_PROTOCOL,
            TUNNEL_PROTOCOL,
        ) {
            let offered: Vec<&str> = headers
                .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            return Err(ApiError::bad_request(format!(
                "unable to upgrade: port forwarding over WebSockets needs the subprotocol {TUNNEL_PROTOCOL:?} (Sec-WebSocket-Protocol), the client offered {offered:?}"
            )));
        }
        let key = headers
            .get(http::header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("unable to upgrade: missing Sec-WebSocket-Key header")
            })?;
        return Ok(Upgrade::Tunnel(key.trim().to_string()));
    }
    if connection_upgrade && header_has(headers, &http::header::UPGRADE, SPDY_31) {
        let offered = headers
            .get_all("x-stream-protocol-version")
            .iter()
            .cloned()
            .collect();
        return Ok(Upgrade::Spdy(offered));
    }
    Err(ApiError::bad_request(
        "Upgrade request required: pods/portforward takes a connection upgrade to SPDY/3.1 (Upgrade: SPDY/3.1, X-Stream-Protocol-Version: portforward.k8s.io) or to a WebSocket with the subprotocol SPDY/3.1+portforward.k8s.io",
    ))
}

/// `GET|POST pods/{name}/portforward`.
pub async fn connect(
    req: &Request<'_>,
    name: &str,
    upgrade: Option<OnUpgrade>,
) -> ApiResult<Response> {
    let (pod, _) = read_object(req, name).await?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    let wanted = requested_upgrade(&req.headers)?;
    let Some(client_upgrade) = upgrade else {
        return Err(ApiError::bad_request(
            "unable to upgrade: port forwarding needs an HTTP/1.1 connection (HTTP/2 cannot upgrade)",
        ));
    };
    let (node, address, port) = pod_agent(req, &pod, name).await?;
    let node = node.as_str();
    let ns = req.store_namespace().unwrap_or("default");
    let encode = path_segment;
    let path = format!("/portForward/{}/{}", encode(ns), encode(name));
    let mut agent_headers = HeaderMap::new();
    agent_headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    agent_headers.insert(http::header::UPGRADE, HeaderValue::from_static(SPDY_31));
    match &wanted {
        Upgrade::Spdy(offered) => {
            for v in offered {
                agent_headers.append("x-stream-protocol-version", v.clone());
            }
        }
        Upgrade::Tunnel(_) => {
            agent_headers.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(PROTOCOL),
            );
        }
    }
    let (agent_101, agent_io) =
        match agent_upgrade(req, node, &address, port, &path, agent_headers).await? {
            Ok(upgraded) => upgraded,
            Err(refusal) => return Ok(refusal),
        };
    let pod_name = name.to_string();
    let mut resp = (StatusCode::SWITCHING_PROTOCOLS, Body::empty()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    match wanted {
        Upgrade::Spdy(_) => {
            headers.insert(http::header::UPGRADE, HeaderValue::from_static(SPDY_31));
            if let Some(v) = agent_101.get("x-stream-protocol-version") {
                headers.insert("x-stream-protocol-version", v.clone());
            }
            join_spdy(client_upgrade, agent_io, "port-forward", pod_name);
        }
        Upgrade::Tunnel(key) => {
            headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            let accept = websocket::accept_key(&key);
            headers.insert(
                http::header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&accept)
                    .map_err(|e| ApiError::internal(format!("Sec-WebSocket-Accept: {e}")))?,
            );
            headers.insert(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(TUNNEL_PROTOCOL),
            );
            tokio::spawn(async move {
                let Ok(client_io) = client_upgrade.await else {
                    return;
                };
                let result =
                    websocket::tunnel(TokioIo::new(client_io), TokioIo::new(agent_io)).await;
                tracing::debug!(pod = %pod_name, ?result, "port-forward (WebSocket) ended");
            });
        }
    }
    Ok(resp)
}

/// The node a pod is bound to and where its agent listens; 400 for a pod not scheduled.
pub(crate) async fn pod_agent(
    req: &Request<'_>,
    pod: &Value,
    name: &str,
) -> ApiResult<(String, String, u16)> {
    let Some(node) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let (address, port) = agent_endpoint(req, node).await?;
    Ok((node.to_string(), address, port))
}

/// One path segment, percent-encoded for the agent's URL.
pub(crate) fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends the agent of `node` the upgrade request (`path`, `headers`): its 101 headers and
/// connection, or (`Err`) its refusal as a response to pass back as it came (a 404 for a
/// pod it does not run, a 403...).
pub(crate) async fn agent_upgrade(
    req: &Request<'_>,
    node: &str,
    address: &str,
    port: u16,
    path: &str,
    headers: HeaderMap,
) -> ApiResult<Result<(HeaderMap, hyper::upgrade::Upgraded), Response>> {
    let client = req
        .state
        .inner
        .node_client
        .get()
        .ok_or_else(|| ApiError::unavailable("the apiserver has no node client configured"))?;
    match client.upgrade(node, address, port, path, headers).await? {
        AgentUpgrade::Upgraded(headers, io) => Ok(Ok((headers, io))),
        AgentUpgrade::Refused(status, headers, body) => {
            let mut resp = (status, Body::from(body)).into_response();
            for name in [
                http::header::CONTENT_TYPE,
                http::header::HeaderName::from_static("x-accepted-stream-protocol-versions"),
            ] {
                if let Some(v) = headers.get(&name) {
                    resp.headers_mut().insert(name, v.clone());
                }
            }
            Ok(Err(resp))
        }
    }
}

/// Joins the client's SPDY connection (once upgraded) to the agent's, byte for byte.
pub(crate) fn join_spdy(
    client_upgrade: OnUpgrade,
    agent_io: hyper::upgrade::Upgraded,
    what: &'static str,
    pod_name: String,
) {
    tokio::spawn(async move {
        let Ok(client_io) = client_upgrade.await else {
            return;
        };
        let mut client_io = TokioIo::new(client_io);
        let mut agent_io = TokioIo::new(agent_io);
        let copied = tokio::io::copy_bidirectional(&mut client_io, &mut agent_io).await;
        tracing::debug!(pod = %pod_name, result = ?copied, "{what} (SPDY) ended");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn kubectls_two_upgrades_are_recognised() {
        let ws = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]);
        assert_eq!(
            requested_upgrade(&ws).unwrap(),
            Upgrade::Tunnel("dGhlIHNhbXBsZSBub25jZQ==".into())
        );
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]);
        assert_eq!(
            requested_upgrade(&spdy).unwrap(),
            Upgrade::Spdy(vec![HeaderValue::from_static("portforward.k8s.io")])
        );
    }

    #[test]
    fn other_requests_are_told_what_is_needed() {
        let plain = requested_upgrade(&headers(&[])).unwrap_err();
        assert_eq!(plain.code, StatusCode::BAD_REQUEST);
        assert!(plain.message.contains("Upgrade request required"));
        let exec_protocol = requested_upgrade(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "x"),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]))
        .unwrap_err();
        assert!(
            exec_protocol.message.contains("Sec-WebSocket-Protocol"),
            "{}",
            exec_protocol.message
        );
        let keyless = requested_upgrade(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", TUNNEL_PROTOCOL),
        ]))
        .unwrap_err();
        assert!(keyless.message.contains("Sec-WebSocket-Key"));
    }
}
