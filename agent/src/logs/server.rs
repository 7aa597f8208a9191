//! The agent's HTTPS server: `/containerLogs/{namespace}/{pod}/{container}` like the
//! kubelet's, for the apiserver's `pods/log` proxy, `/portForward/{namespace}/{pod}` for its
//! `pods/portforward` relay ([`crate::portforward`]), and `/healthz`.
//!
//! Query parameters: `follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `previous`,
//! `timestamps`, `limitBytes`. Errors are plain text with the kubelet's status codes and
//! messages (the apiserver passes them on).
//!
//! Who may use it: a client presenting a certificate signed by the cluster CA, or a bearer
//! token the apiserver vouches for (TokenReview), whom the apiserver allows to use this
//! node's subresource ([`auth`](super::auth): the kubelet's webhook authentication and
//! authorization), `/healthz` included, as on the kubelet's port.
//!
//! The server presents whatever certificate a [`CertificateSlot`] holds, looked up for every
//! handshake, so a renewed certificate is served without a restart: the node's serving
//! certificate, which the agent asks the cluster for (`certificates`, signer
//! `kubernetes.io/kubelet-serving`; handshakes fail until it is issued), or for an agent
//! configured without that, the certificate given or a self-signed one made at start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::auth::{NodeAction, NodeAuthorizer, Refusal, Requester};
use super::{LogOptions, LogRegistry, container_dir, instances};
use crate::certificates::{CertificateSlot, Credentials, ServerCertResolver};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The serving certificate and key (PEM).
#[derive(Clone)]
pub struct ServerTls {
    /// Certificate chain, leaf first.
    pub cert_pem: String,
    /// Private key (PKCS#8 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Settings of the log server.
#[derive(Clone, Debug)]
pub struct LogServerConfig {
    /// Listen address (`0.0.0.0:10250` like the kubelet, or `127.0.0.1:0` in tests).
    pub bind: SocketAddr,
    /// Serving certificate when the agent does not ask the cluster for one; `None` = a
    /// self-signed one is made at start.
    pub tls: Option<ServerTls>,
    /// Client certificates signed by this CA (PEM) authenticate their users (without it
    /// every request is 401).
    pub client_ca_pem: Option<String>,
    /// Extra names for a self-signed certificate (the node name, its addresses).
    pub names: Vec<String>,
}

/// Why the log server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LogServerError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate, key or CA is unusable.
    #[error("log server TLS: {0}")]
    Tls(String),
}

/// A running log server.
#[derive(Debug)]
pub(crate) struct LogServer {
    /// The bound address.
    pub(crate) addr: SocketAddr,
    /// Ends when the server stops.
    pub(crate) task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Ctx {
    registry: LogRegistry,
    pods_dir: PathBuf,
    authorizer: Arc<NodeAuthorizer>,
    /// The node's container runtime: container pods' streams go to its streaming server.
    cri: Option<wasmkube_cri::Client>,
}

/// The certificate of a server that does not ask the cluster for one: the configured one,
/// or a new self-signed one.
pub(crate) fn static_certificate(config: &LogServerConfig) -> Result<Credentials, LogServerError> {
    let tls = match config.tls.clone() {
        Some(tls) => tls,
        None => self_signed(&config.names)?,
    };
    Credentials::from_pem(&tls.cert_pem, &tls.key_pem)
        .map_err(|e| LogServerError::Tls(e.to_string()))
}

/// Starts serving the certificate in `certificate`, authorizing requests with
/// `authorizer`; stops when `shutdown` resolves.
pub(crate) async fn start(
    config: LogServerConfig,
    certificate: std::sync::Arc<CertificateSlot>,
    authorizer: Arc<NodeAuthorizer>,
    registry: LogRegistry,
    pods_dir: PathBuf,
    cri: Option<wasmkube_cri::Client>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<LogServer, LogServerError> {
    let server_config = server_config(certificate, config.client_ca_pem.as_deref())?;
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| LogServerError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| LogServerError::Bind {
            addr: config.bind,
            source,
        })?;
    let ctx = Arc::new(Ctx {
        registry,
        pods_dir,
        authorizer,
        cri,
    });
    let acceptor = TlsAcceptor::from(server_config);
    let task = tokio::spawn(accept_loop(listener, acceptor, ctx, shutdown));
    tracing::info!(%addr, "log server listening");
    Ok(LogServer { addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let ctx = Arc::clone(&ctx);
                connections.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let requester = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(Requester::from_certificate)
                        .map(Arc::new);
                    let service = hyper::service::service_fn(move |req| {
                        let ctx = Arc::clone(&ctx);
                        let requester = requester.clone();
                        async move {
                            Ok::<_, Infallible>(handle(&ctx, requester.as_deref(), req).await)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // With upgrades: `/portForward` turns its connection into a SPDY session.
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        }
    }
    connections.abort_all();
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The `/`-separated segments of a request path's rest, percent-decoded.
fn path_segments(rest: &str) -> Vec<String> {
    rest.split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

pub(super) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    ctx: &Ctx,
    requester: Option<&Requester>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    // A client certificate first, then a bearer token (the kubelet's order).
    let from_token;
    let requester = match requester {
        Some(requester) => requester,
        None => {
            let token = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(super::auth::bearer_token);
            let Some(token) = token else {
                return text(StatusCode::UNAUTHORIZED, "Unauthorized");
            };
            match ctx.authorizer.authenticate_token(token).await {
                Ok(Some(who)) => {
                    from_token = who;
                    &from_token
                }
                // The kubelet answers 401 when the review itself fails too (logged).
                Ok(None) | Err(_) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            }
        }
    };
    let action = NodeAction::of(req.method(), &path);
    match ctx.authorizer.authorize(requester, &action).await {
        Ok(()) => {}
        Err(Refusal::Forbidden(message)) => return text(StatusCode::FORBIDDEN, message),
        Err(Refusal::Unavailable(message)) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, message);
        }
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if let Some(rest) = path.strip_prefix("/portForward/") {
        return port_forward(ctx, rest, req).await;
    }
    for stream in ["exec", "attach"] {
        if let Some(rest) = path.strip_prefix(&format!("/{stream}/")) {
            return exec_or_attach(ctx, stream, rest, req).await;
        }
    }
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    };
    let parts = path_segments(rest);
    let [namespace, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /containerLogs/{namespace}/{pod}/{container}",
        );
    };
    let opts = match LogOptions::from_query(req.uri().query().unwrap_or(""), jiff::Timestamp::now())
    {
        Ok(o) => o,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    container_logs(ctx, namespace, pod, container, opts)
}

fn container_logs(
    ctx: &Ctx,
    namespace: &str,
    pod: &str,
    container: &str,
    opts: LogOptions,
) -> Response<Body> {
    let Some(uid) = ctx.registry.pod_uid(namespace, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{namespace}\" not found on this node"),
        );
    };
    if !ctx.registry.has_container(namespace, pod, container) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        );
    }
    let dir = container_dir(&ctx.pods_dir, &uid, container);
    let found = instances(&dir);
    let instance = if opts.previous {
        match found.len() {
            n if n >= 2 => found[n - 2],
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                );
            }
        }
    } else {
        match found.last() {
            Some(n) => *n,
            None => {
                let why = ctx
                    .registry
                    .waiting_reason(namespace, pod, container)
                    .unwrap_or_else(|| "ContainerCreating".into());
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container \"{container}\" in pod \"{pod}\" is waiting to start: {why}"
                    ),
                );
            }
        }
    };
    let path = dir.join(format!("{instance}.log"));
    let stream = super::follow(&ctx.registry, path, 0, opts, 0).map_ok(Frame::data);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// `/exec/{namespace}/{pod}/{container}` and `/attach/...` (the kubelet's paths, which the
/// apiserver's `pods/exec` and `pods/attach` relay to): a container the runtime runs gets
/// the runtime's streaming server ([`streaming`](super::streaming)); a wasm container runs
/// no process a command could join, so both are refused with a reason kubectl prints.
async fn exec_or_attach(
    ctx: &Ctx,
    stream: &str,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let parts = path_segments(rest);
    let [namespace, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("expected /{stream}/{{namespace}}/{{pod}}/{{container}}"),
        );
    };
    if let Some(cri) = &ctx.cri {
        match container_stream_url(cri, stream, namespace, pod, container, req.uri().query()).await
        {
            Ok(Some(url)) => return super::streaming::relay(&url, req).await,
            Ok(None) => {}
            Err(resp) => return resp,
        }
    }
    if !ctx.registry.has_container(namespace, pod, container) {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} of pod \"{namespace}/{pod}\" not found on this node"),
        );
    }
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "container {container:?} of pod \"{namespace}/{pod}\" is a wasm program run in-process by the node agent: it has no operating-system process to {stream} to (kubectl exec and attach work for container pods run through CRI)"
        ),
    )
}

/// The runtime's streaming URL for exec/attach in `container`, `None` when the runtime
/// holds no sandbox of the pod (a wasm pod), or the refusal to answer.
async fn container_stream_url(
    cri: &wasmkube_cri::Client,
    stream: &str,
    namespace: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Result<Option<String>, Response<Body>> {
    let unavailable = |e: wasmkube_cri::Error| {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the container runtime did not answer: {e}"),
        )
    };
    let id = match super::streaming::running_container(cri, namespace, pod, container).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return match super::streaming::ready_sandbox(cri, namespace, pod).await {
                Ok(Some(_)) => Err(text(
                    StatusCode::BAD_REQUEST,
                    format!("container {container:?} of pod \"{namespace}/{pod}\" is not running"),
                )),
                Ok(None) => Ok(None),
                Err(e) => Err(unavailable(e)),
            };
        }
        Err(e) => return Err(unavailable(e)),
    };
    let opts = super::streaming::StreamOptions::from_query(query.unwrap_or(""));
    let answer = if stream == "exec" {
        cri.exec(wasmkube_cri::v1::ExecRequest {
            container_id: id,
            cmd: opts.command,
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await
        .map(|r| r.url)
    } else {
        cri.attach(wasmkube_cri::v1::AttachRequest {
            container_id: id,
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await
        .map(|r| r.url)
    };
    answer.map(Some).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!("the container runtime refused to {stream}: {}", e.message()),
        )
    })
}

/// `/portForward/{namespace}/{pod}[/{uid}]` (GET or POST, as the kubelet's): checks the
/// upgrade, answers 101 and serves the SPDY session on the upgraded connection.
async fn port_forward(ctx: &Ctx, rest: &str, mut req: Request<Incoming>) -> Response<Body> {
    if req.method() != http::Method::GET && req.method() != http::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let parts = path_segments(rest);
    let (namespace, pod, uid) = match parts.as_slice() {
        [ns, pod] => (ns, pod, None),
        [ns, pod, uid] => (ns, pod, Some(uid)),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "expected /portForward/{namespace}/{pod}[/{uid}]",
            );
        }
    };
    if let Some(cri) = &ctx.cri {
        // A container pod: the runtime forwards inside its sandbox's network namespace
        // (so a listener on the pod's localhost is reached too, as with the kubelet).
        match super::streaming::ready_sandbox(cri, namespace, pod).await {
            Ok(Some(sandbox)) => {
                let answer = cri
                    .port_forward(wasmkube_cri::v1::PortForwardRequest {
                        pod_sandbox_id: sandbox,
                        port: Vec::new(),
                    })
                    .await;
                return match answer {
                    Ok(r) => super::streaming::relay(&r.url, req).await,
                    Err(e) => text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the container runtime refused to port-forward: {}",
                            e.message()
                        ),
                    ),
                };
            }
            Ok(None) => {}
            Err(e) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the container runtime did not answer: {e}"),
                );
            }
        }
    }
    let Some((pod_uid, ip)) = ctx
        .registry
        .pod_address(namespace, pod)
        .filter(|(pod_uid, _)| uid.is_none_or(|u| u == pod_uid))
    else {
        return text(StatusCode::NOT_FOUND, "pod does not exist");
    };
    let protocol = match crate::portforward::check_upgrade(req.headers()) {
        Ok(p) => p,
        Err(refusal) => {
            let mut resp = text(refusal.status, refusal.message);
            if let Some(accepted) = refusal.accepted {
                resp.headers_mut().insert(
                    "x-accepted-stream-protocol-versions",
                    http::HeaderValue::from_static(accepted),
                );
            }
            return resp;
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let target = crate::portforward::Target {
        pod: pod.clone(),
        uid: pod_uid,
        ip,
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => crate::portforward::serve(TokioIo::new(upgraded), target).await,
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    let mut resp = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(crate::portforward::SPDY_31),
    );
    if let Some(protocol) = protocol {
        headers.insert(
            "x-stream-protocol-version",
            http::HeaderValue::from_static(protocol),
        );
    }
    resp
}

/// The rustls configuration: the slot's serving certificate, and client certificates from
/// the CA accepted but not required at the TLS layer (a request without one is answered
/// 401, as the kubelet answers it).
fn server_config(
    certificate: Arc<CertificateSlot>,
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, LogServerError> {
    let err = |e: &dyn std::fmt::Display| LogServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ServerCertResolver(certificate)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed serving certificate for `names` (plus localhost and 127.0.0.1).
fn self_signed(names: &[String]) -> Result<ServerTls, LogServerError> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    sans.extend(names.iter().filter(|n| !n.is_empty()).cloned());
    sans.sort();
    sans.dedup();
    let certified =
        rcgen::generate_simple_self_signed(sans).map_err(|e| LogServerError::Tls(e.to_string()))?;
    Ok(ServerTls {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}
