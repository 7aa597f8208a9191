//! One probe attempt: `httpGet` and `tcpSocket` against the pod IP, with Kubernetes' success
//! rules and failure messages (the text users see in `Unhealthy` events).
//!
//! The HTTP client is a bare hyper HTTP/1.1 connection per attempt (what the kubelet does: no
//! keep-alive between probes). Redirects to the same host are followed (up to 10), a redirect
//! to another host counts as success, as in the kubelet's prober.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

/// The outcome of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeResult {
    /// The probe passed.
    Success,
    /// The probe failed; the message says why (as the kubelet words it).
    Failure(String),
}

/// The User-Agent the kubelet of Kubernetes 1.33 sends.
const USER_AGENT: &str = "kube-probe/1.33";
/// Redirects followed within one probe.
const MAX_REDIRECTS: usize = 10;
/// Body bytes read (and discarded) per response, as the kubelet bounds it.
const MAX_BODY: usize = 10 * 1024;

/// Runs `probe` once against `pod_ip`, resolving named ports against `ports` (the container's
/// `ports`), giving up after `timeout`.
pub(crate) async fn probe_once(
    probe: &Probe,
    pod_ip: IpAddr,
    ports: &[ContainerPort],
    timeout: Duration,
) -> ProbeResult {
    if let Some(action) = &probe.http_get {
        http_get(action, pod_ip, ports, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        tcp_socket(action, pod_ip, ports, timeout).await
    } else if probe.exec.is_some() {
        ProbeResult::Failure(
            "exec probes are not supported for wasm containers (there is no process to exec \
             into); use httpGet or tcpSocket"
                .into(),
        )
    } else if probe.grpc.is_some() {
        ProbeResult::Failure(
            "grpc probes are not supported for wasm containers; use httpGet or tcpSocket".into(),
        )
    } else {
        ProbeResult::Failure("the probe has no handler (httpGet or tcpSocket)".into())
    }
}

/// Where an `exec` probe runs: a container of the node's CRI runtime.
#[derive(Clone)]
pub(crate) struct ExecTarget {
    pub(crate) client: wasmkube_cri::Client,
    pub(crate) container_id: String,
}

impl std::fmt::Debug for ExecTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecTarget")
            .field("container_id", &self.container_id)
            .finish_non_exhaustive()
    }
}

impl ExecTarget {
    /// Runs the probe's command with `ExecSync`: exit code 0 passes; otherwise the failure
    /// is the command's output, as the kubelet reports it (`Liveness probe failed: ...`).
    pub(crate) async fn run(&self, action: &ExecAction, timeout: Duration) -> ProbeResult {
        let command = action.command.clone().unwrap_or_default();
        if command.is_empty() {
            return ProbeResult::Failure("the exec probe has no command".into());
        }
        match self
            .client
            .exec_sync(&self.container_id, command.clone(), timeout)
            .await
        {
            Ok(r) if r.exit_code == 0 => ProbeResult::Success,
            Ok(r) => {
                let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&r.stderr));
                let output = output.trim_end();
                ProbeResult::Failure(if output.is_empty() {
                    format!("command {command:?} exited with {}", r.exit_code)
                } else {
                    output.to_owned()
                })
            }
            Err(wasmkube_cri::Error::Timeout { .. }) => {
                ProbeResult::Failure(format!("command {command:?} timed out"))
            }
            Err(e) => ProbeResult::Failure(e.message()),
        }
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub(crate) fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {s} in the container's ports"))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

async fn tcp_socket(
    action: &TCPSocketAction,
    pod_ip: IpAddr,
    ports: &[ContainerPort],
    timeout: Duration,
) -> ProbeResult {
    let port = match resolve_port(&action.port, ports) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let target = host_port(&host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => ProbeResult::Success,
        Ok(Err(e)) => ProbeResult::Failure(format!("dial tcp {target}: {}", dial_error(&e))),
        Err(_) => ProbeResult::Failure(format!("dial tcp {target}: i/o timeout")),
    }
}

pub(crate) async fn http_get(
    action: &HTTPGetAction,
    pod_ip: IpAddr,
    ports: &[ContainerPort],
    timeout: Duration,
) -> ProbeResult {
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    if !scheme.eq_ignore_ascii_case("HTTP") {
        return ProbeResult::Failure(format!(
            "scheme {scheme} is not supported for wasm containers yet; use HTTP"
        ));
    }
    let port = match resolve_port(&action.port, ports) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let headers: Vec<(String, String)> = action
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let url = format!("http://{}{path}", host_port(&host, port));
    match tokio::time::timeout(
        timeout,
        get_following_redirects(&host, port, path, &headers),
    )
    .await
    {
        Ok(Ok(status)) if (200..400).contains(&status) => ProbeResult::Success,
        Ok(Ok(status)) => {
            ProbeResult::Failure(format!("HTTP probe failed with statuscode: {status}"))
        }
        Ok(Err(e)) => ProbeResult::Failure(format!("Get \"{url}\": {e}")),
        Err(_) => ProbeResult::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting \
             headers)"
        )),
    }
}

/// GETs `path` from `host:port`, following same-host redirects; the final status code. A
/// redirect elsewhere is reported as 200, as the kubelet treats it as success.
async fn get_following_redirects(
    host: &str,
    port: u16,
    mut path: String,
    headers: &[(String, String)],
) -> Result<u16, String> {
    for _ in 0..=MAX_REDIRECTS {
        let response = get_once(host, port, &path, headers).await?;
        let status = response.status();
        if !status.is_redirection() {
            return Ok(status.as_u16());
        }
        let Some(location) = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
        else {
            return Ok(status.as_u16());
        };
        match same_host_target(location, host, port) {
            Some(next) => path = next,
            // Another host: the kubelet stops and calls the probe a success.
            None => return Ok(200),
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// The path of `location` when it stays on `host:port`, else `None`.
fn same_host_target(location: &str, host: &str, port: u16) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.to_string());
    }
    let uri: http::Uri = location.parse().ok()?;
    let same_host = uri.host().is_some_and(|h| {
        h.trim_start_matches('[').trim_end_matches(']')
            == host.trim_start_matches('[').trim_end_matches(']')
    });
    let same_port = uri.port_u16().unwrap_or(80) == port;
    (uri.scheme_str() == Some("http") && same_host && same_port).then(|| {
        uri.path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
    })
}

async fn get_once(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<http::Response<()>, String> {
    let target = host_port(host, port);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {target}: {}", dial_error(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = http::Request::get(path)
        .header(http::header::HOST, target.as_str())
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request for path {path:?}: {e}"))?;
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        // A header the probe sets replaces the default of the same name.
        request.headers_mut().insert(name, value);
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            conn.abort();
            return Err(e);
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut read = 0;
    while read < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => break,
        }
    }
    conn.abort();
    Ok(http::Response::from_parts(parts, ()))
}

/// `host:port`, with brackets around IPv6 addresses.
fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Go's wording for the common dial errors, which users know from the kubelet.
fn dial_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use k8s_openapi::api::core::v1::{ExecAction, GRPCAction, HTTPHeader};

    use super::*;
    use crate::probes::test_server::{self, TestServer};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A pod's HTTP server: `/ok` 200, `/fail` 500, `/moved` 302 -> `/fail`, `/away` 302 to
    /// another host, `/header` 200 only with `X-Probe: yes`, `/slow` never answers.
    async fn server(ip: [u8; 4]) -> TestServer {
        let service = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let respond = |status: u16, location: Option<&str>| {
                let mut builder = http::Response::builder().status(status);
                if let Some(l) = location {
                    builder = builder.header("location", l);
                }
                Ok::<_, Infallible>(
                    builder
                        .body(Full::new(Bytes::from_static(b"body")))
                        .unwrap_or_default(),
                )
            };
            match req.uri().path() {
                "/ok" => respond(200, None),
                "/fail" => respond(500, None),
                "/moved" => respond(302, Some("/fail")),
                "/away" => respond(302, Some("http://elsewhere.invalid/")),
                "/header" if req.headers().get("x-probe").is_some_and(|v| v == "yes") => {
                    let agent_ok = req
                        .headers()
                        .get("user-agent")
                        .is_some_and(|v| v == USER_AGENT);
                    respond(if agent_ok { 200 } else { 400 }, None)
                }
                "/slow" => std::future::pending().await,
                _ => respond(404, None),
            }
        });
        test_server::serve(ip, service).await
    }

    fn http_probe(path: &str, port: IntOrString) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port,
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }
    }

    fn named_port(name: &str, port: u16) -> Vec<ContainerPort> {
        vec![ContainerPort {
            name: Some(name.into()),
            container_port: i32::from(port),
            ..ContainerPort::default()
        }]
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_fail_on_5xx_with_the_kubelet_message() {
        let server = server([127, 5, 0, 1]).await;
        let ip = server.local_addr().ip();
        let port = IntOrString::Int(i32::from(server.local_addr().port()));
        assert_eq!(
            probe_once(&http_probe("/ok", port.clone()), ip, &[], TIMEOUT).await,
            ProbeResult::Success
        );
        assert_eq!(
            probe_once(&http_probe("/fail", port.clone()), ip, &[], TIMEOUT).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // A same-host redirect is followed; one to another host counts as success.
        assert_eq!(
            probe_once(&http_probe("/moved", port.clone()), ip, &[], TIMEOUT).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            probe_once(&http_probe("/away", port), ip, &[], TIMEOUT).await,
            ProbeResult::Success
        );
    }

    #[tokio::test]
    async fn http_probes_send_their_headers_to_a_named_port() {
        let server = server([127, 5, 0, 2]).await;
        let ip = server.local_addr().ip();
        let ports = named_port("http", server.local_addr().port());
        let mut probe = http_probe("header", IntOrString::String("http".into()));
        assert_eq!(
            probe_once(&probe, ip, &ports, TIMEOUT).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 404".into())
        );
        if let Some(get) = &mut probe.http_get {
            get.http_headers = Some(vec![HTTPHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }]);
        }
        assert_eq!(
            probe_once(&probe, ip, &ports, TIMEOUT).await,
            ProbeResult::Success
        );
        let missing = http_probe("/ok", IntOrString::String("metrics".into()));
        assert!(matches!(
            probe_once(&missing, ip, &ports, TIMEOUT).await,
            ProbeResult::Failure(m) if m.contains("couldn't find port: metrics")
        ));
    }

    #[tokio::test]
    async fn a_probe_that_gets_no_answer_in_time_fails_with_a_deadline_message() {
        let server = server([127, 5, 0, 3]).await;
        let port = IntOrString::Int(i32::from(server.local_addr().port()));
        let result = probe_once(
            &http_probe("/slow", port),
            server.local_addr().ip(),
            &[],
            Duration::from_millis(100),
        )
        .await;
        assert!(
            matches!(&result, ProbeResult::Failure(m) if m.contains("context deadline exceeded")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn tcp_probes_pass_when_the_port_accepts_and_fail_when_refused() {
        let listener = std::net::TcpListener::bind("127.5.0.4:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::Int(i32::from(addr.port())),
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_once(&probe, addr.ip(), &[], TIMEOUT).await,
            ProbeResult::Success
        );
        drop(listener);
        assert_eq!(
            probe_once(&probe, addr.ip(), &[], TIMEOUT).await,
            ProbeResult::Failure(format!("dial tcp {addr}: connect: connection refused"))
        );
        let http = http_probe("/", IntOrString::Int(i32::from(addr.port())));
        assert_eq!(
            probe_once(&http, addr.ip(), &[], TIMEOUT).await,
            ProbeResult::Failure(format!(
                "Get \"http://{addr}/\": dial tcp {addr}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn exec_and_grpc_probes_are_not_supported_for_wasm_containers() {
        let ip = IpAddr::from([127, 5, 0, 5]);
        let exec = Probe {
            exec: Some(ExecAction::default()),
            ..Probe::default()
        };
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9000,
                service: None,
            }),
            ..Probe::default()
        };
        for probe in [exec, grpc] {
            assert!(matches!(
                probe_once(&probe, ip, &[], TIMEOUT).await,
                ProbeResult::Failure(m) if m.contains("not supported for wasm containers")
            ));
        }
    }

    #[test]
    fn ports_resolve_by_number_name_or_numeric_string() {
        let ports = named_port("web", 8080);
        assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("web".into()), &ports),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("81".into()), &ports),
            Ok(81)
        );
        assert!(resolve_port(&IntOrString::Int(0), &ports).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &ports).is_err());
    }
}
