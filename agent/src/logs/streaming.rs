//! Streams of container pods (`kubectl exec`, `attach`, `port-forward`): the agent asks the
//! container runtime for a URL of its streaming server (CRI `Exec`, `Attach`,
//! `PortForward`) and relays the apiserver's upgrade request to it, then joins the two
//! connections byte for byte, as the kubelet does without redirecting container streams.
//! The runtime's server speaks the same remotecommand/portforward protocols (SPDY/3.1 with
//! `X-Stream-Protocol-Version`), so the agent reads nothing of them.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use wasmkube_cri::{Client, v1};

use super::read::query_pairs;
use super::server::text;
use crate::pod::cri::{CONTAINER_NAME_LABEL, POD_NAME_LABEL, POD_NAMESPACE_LABEL};

/// How long the runtime's streaming server may take to answer the upgrade.
const UPGRADE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The kubelet's exec/attach options: `command` (repeated), `input`, `output`, `error`,
/// `tty` (the apiserver renames `stdin`/`stdout`/`stderr` to these when it relays).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamOptions {
    pub(crate) command: Vec<String>,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

impl StreamOptions {
    pub(crate) fn from_query(query: &str) -> StreamOptions {
        let mut opts = StreamOptions::default();
        let boolean = |v: &str| matches!(v, "" | "true" | "1" | "True" | "TRUE");
        for (key, value) in query_pairs(query) {
            match key.as_str() {
                "command" => opts.command.push(value),
                "input" | "stdin" => opts.stdin = boolean(&value),
                "output" | "stdout" => opts.stdout = boolean(&value),
                "error" | "stderr" => opts.stderr = boolean(&value),
                "tty" => opts.tty = boolean(&value),
                _ => {}
            }
        }
        opts
    }
}

/// The id of the running container `container` of pod `namespace/pod` in the runtime, if
/// the runtime runs one (it does not for wasm pods).
pub(crate) async fn running_container(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<Option<String>, wasmkube_cri::Error> {
    let filter = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue {
            state: v1::ContainerState::ContainerRunning as i32,
        }),
        label_selector: [
            (POD_NAMESPACE_LABEL, namespace),
            (POD_NAME_LABEL, pod),
            (CONTAINER_NAME_LABEL, container),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let listed = client
        .list_containers(v1::ListContainersRequest {
            filter: Some(filter),
        })
        .await?;
    Ok(listed.containers.into_iter().next().map(|c| c.id))
}

/// The id of the ready sandbox of pod `namespace/pod` in the runtime, if it has one.
pub(crate) async fn ready_sandbox(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Option<String>, wasmkube_cri::Error> {
    let filter = v1::PodSandboxFilter {
        state: Some(v1::PodSandboxStateValue {
            state: v1::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: [(POD_NAMESPACE_LABEL, namespace), (POD_NAME_LABEL, pod)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let listed = client
        .list_pod_sandbox(v1::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await?;
    Ok(listed.items.into_iter().next().map(|s| s.id))
}

/// Relays `req` (an upgrade request) to the runtime's streaming server at `url`: its 101
/// answers the client and joins the two connections; anything else is passed back.
pub(crate) async fn relay(url: &str, mut req: Request<Incoming>) -> Response<Body> {
    match relay_inner(url, &mut req).await {
        Ok(resp) => resp,
        Err(message) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error connecting to the container runtime's streaming server: {message}"),
        ),
    }
}

async fn relay_inner(url: &str, req: &mut Request<Incoming>) -> Result<Response<Body>, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the runtime's URL {url:?} is invalid: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "the runtime's streaming URL {url:?} is not plain HTTP (TLS streaming is not supported)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("the runtime's URL {url:?} has no address"))?
        .clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended");
        }
    });
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let mut outgoing = Request::builder()
        .method(req.method().clone())
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    // The stream negotiation (Connection, Upgrade, X-Stream-Protocol-Version), not the
    // apiserver's credentials.
    for (name, value) in req.headers() {
        if name != http::header::AUTHORIZATION && name != http::header::HOST {
            outgoing.headers_mut().append(name.clone(), value.clone());
        }
    }
    outgoing.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
    );
    let mut answer = tokio::time::timeout(UPGRADE_DEADLINE, sender.send_request(outgoing))
        .await
        .map_err(|_| format!("no answer within {UPGRADE_DEADLINE:?}"))?
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let headers = answer.headers().clone();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
    let runtime_side = hyper::upgrade::on(&mut answer);
    let client_side = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let (Ok(client_io), Ok(runtime_io)) = (client_side.await, runtime_side.await) else {
            return;
        };
        let mut client_io = TokioIo::new(client_io);
        let mut runtime_io = TokioIo::new(runtime_io);
        let copied = tokio::io::copy_bidirectional(&mut client_io, &mut runtime_io).await;
        tracing::debug!(result = ?copied, "container stream ended");
    });
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_with_the_kubelets_names() {
        let o = StreamOptions::from_query(
            "command=sh&command=-c&command=echo+a%26b&input=1&output=1&error=0&tty=true",
        );
        assert_eq!(
            o,
            StreamOptions {
                command: vec!["sh".into(), "-c".into(), "echo a&b".into()],
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            }
        );
    }
}
