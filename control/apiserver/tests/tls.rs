//! TLS serving and authentication end to end: a real listener on 127.0.0.1, a real
//! rustls client (and the real kubectl when installed) against `serve_tls` with a small
//! router behind `authenticate`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use wasmkube_apiserver::authn::{Authn, Identity, require_authentication};
use wasmkube_apiserver::pki::{Pki, write_kubeconfig};
use wasmkube_apiserver::serve::{ServeOptions, serve_tls, serve_tls_with};

/// Generous bound so a broken server fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(30);

struct TestServer {
    addr: SocketAddr,
    pki: Pki,
    dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(routes: Router) -> TestServer {
        Self::start_with(routes, None).await
    }

    /// Serves with `options` (`None`: through `serve_tls` and its defaults).
    async fn start_with(routes: Router, options: Option<ServeOptions>) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &["127.0.0.1".to_string()]).expect("pki");
        let app = require_authentication(
            routes,
            Authn::new(
                pki.token_authenticator(),
                Arc::new(wasmkube_apiserver::authz::AlwaysAllow),
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
        };
        let task = match options {
            None => tokio::spawn(serve_tls(listener, pki.server_config(), app, stop)),
            Some(options) => tokio::spawn(serve_tls_with(
                listener,
                pki.server_config(),
                app,
                options,
                stop,
            )),
        };
        TestServer {
            addr,
            pki,
            dir,
            shutdown: Some(tx),
            task,
        }
    }

    /// Signals shutdown and waits for `serve_tls` to return.
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(GUARD, &mut self.task)
            .await
            .expect("serve_tls returned");
        result.expect("task").expect("serve_tls ok");
    }

    fn client_config(&self, with_cert: bool, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pki.ca_pem().as_bytes()).expect("ca"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = if with_cert {
            let chain = CertificateDer::pem_slice_iter(self.pki.admin_cert_pem().as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("admin cert");
            let key = PrivateKeyDer::from_pem_slice(self.pki.admin_key_pem().as_bytes())
                .expect("admin key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    async fn connect(
        &self,
        with_cert: bool,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(self.client_config(with_cert, alpn))
            .connect(name, tcp)
            .await
    }

    /// One HTTP/1.1 GET over a fresh TLS connection.
    async fn get(&self, path: &str, with_cert: bool, bearer: Option<&str>) -> (u16, String) {
        let stream = self
            .connect(with_cert, &[b"http/1.1"])
            .await
            .expect("TLS connect");
        tokio::time::timeout(GUARD, request(stream, path, bearer))
            .await
            .expect("response in time")
    }
}

async fn request(
    mut stream: TlsStream<TcpStream>,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw).await {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "read: {e}");
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn whoami_routes() -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|Extension(id): Extension<Identity>| async move {
                Json(json!({ "user": id.user, "groups": id.groups }))
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

#[tokio::test]
async fn client_certificate_authenticates_as_admin_in_system_masters() {
    let server = TestServer::start(whoami_routes()).await;
    let (status, body) = server.get("/whoami", true, None).await;
    assert_eq!(status, 200, "{body}");
    let who: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(who["user"], "admin");
    let groups = who["groups"].as_array().expect("groups");
    assert!(groups.contains(&json!("system:masters")), "{groups:?}");
    assert!(
        groups.contains(&json!("system:authenticated")),
        "{groups:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bearer_token_authenticates_without_a_client_certificate() {
    let server = TestServer::start(whoami_routes()).await;
    let token = server.pki.admin_token().to_string();
    let (status, body) = server.get("/whoami", false, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let who: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(who["user"], "admin");
    let (status, _) = server.get("/whoami", false, Some("not-a-token")).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn no_credentials_get_a_401_status_object() {
    let server = TestServer::start(whoami_routes()).await;
    let (status, body) = server.get("/whoami", false, None).await;
    assert_eq!(status, 401);
    let status_obj: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status_obj["kind"], "Status");
    assert_eq!(status_obj["apiVersion"], "v1");
    assert_eq!(status_obj["status"], "Failure");
    assert_eq!(status_obj["reason"], "Unauthorized");
    assert_eq!(status_obj["code"], 401);
    server.stop().await;
}

#[tokio::test]
async fn healthz_needs_no_credentials() {
    let server = TestServer::start(whoami_routes()).await;
    let (status, body) = server.get("/healthz", false, None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    server.stop().await;
}

#[tokio::test]
async fn alpn_negotiates_http2_when_the_client_offers_it() {
    let server = TestServer::start(whoami_routes()).await;
    let stream = server
        .connect(true, &[b"h2", b"http/1.1"])
        .await
        .expect("TLS connect");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_stalled_clients_do_not_take_the_server_down() {
    let server = TestServer::start(whoami_routes()).await;
    // A client that connects and never starts the handshake.
    let _stalled = TcpStream::connect(server.addr).await.expect("connect");
    // A client that sends bytes that are not TLS at all.
    let mut garbage = TcpStream::connect(server.addr).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff\x16\x03garbage")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(GUARD, garbage.read_to_end(&mut sink))
        .await
        .expect("server closes it");
    // A client whose certificate comes from another CA fails its handshake.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Pki::load_or_create(other_dir.path(), &[]).expect("other pki");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server.pki.ca_pem().as_bytes()).expect("ca"))
        .expect("root");
    let foreign = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(other.admin_cert_pem().as_bytes()).expect("cert")],
        PrivateKeyDer::from_pem_slice(other.admin_key_pem().as_bytes()).expect("key"),
    )
    .expect("client auth");
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let rejected = match TlsConnector::from(Arc::new(foreign))
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        // TLS 1.3 reports the rejected client certificate only on the first read.
        Ok(mut stream) => {
            let _ = stream
                .write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut raw))
                .await
                .expect("closed in time");
            !raw.starts_with(b"HTTP/")
        }
    };
    assert!(
        rejected,
        "a certificate from another CA must not get a response"
    );
    // Meanwhile, a proper client is served.
    let (status, _) = server.get("/whoami", true, None).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn an_in_flight_request_finishes_during_graceful_shutdown() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (e, r) = (Arc::clone(&entered), Arc::clone(&release));
    let routes = Router::new().route(
        "/slow",
        get(move || {
            let (e, r) = (Arc::clone(&e), Arc::clone(&r));
            async move {
                e.notify_one();
                r.notified().await;
                "done"
            }
        }),
    );
    let mut server = TestServer::start(routes).await;
    let stream = server.connect(true, &[b"http/1.1"]).await.expect("connect");
    let in_flight = tokio::spawn(request(stream, "/slow", None));
    tokio::time::timeout(GUARD, entered.notified())
        .await
        .expect("handler entered");
    let _ = server.shutdown.take().map(|tx| tx.send(()));
    // Stopped accepting: new connections are refused once the listener is dropped.
    let addr = server.addr;
    let refused = tokio::time::timeout(GUARD, async move {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    refused.await.expect("listener closed");
    release.notify_one();
    let (status, body) = tokio::time::timeout(GUARD, in_flight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!((status, body.as_str()), (200, "done"));
    server.stop().await;
}

#[tokio::test]
async fn a_never_ending_response_is_cut_after_the_grace_period() {
    let routes = Router::new().route(
        "/watch",
        get(|| async {
            let first = futures::stream::once(async {
                Ok::<_, Infallible>(Bytes::from_static(b"{\"type\":\"ADDED\"}\n"))
            });
            axum::body::Body::from_stream(futures::StreamExt::chain(
                first,
                futures::stream::pending(),
            ))
        }),
    );
    let server = TestServer::start(routes).await;
    let mut stream = server.connect(true, &[b"http/1.1"]).await.expect("connect");
    stream
        .write_all(b"GET /watch HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
        .await
        .expect("first bytes")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    server.stop().await;
    // The server is gone and so is the watch: the client sees the end of the stream.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("stream ended");
}

#[tokio::test]
async fn kubectl_accepts_the_generated_kubeconfig() {
    // The test command may point KUBECTL at another binary; the default is kubectl on PATH,
    // as for the end-to-end tests (tests/run checks that it is there).
    let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let version = json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-wasmkube.test", "gitCommit": "",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"
    });
    let routes = whoami_routes().route("/version", get(move || async move { Json(version) }));
    let server = TestServer::start(routes).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let kubeconfig = write_kubeconfig(server.dir.path(), &url, &server.pki).expect("kubeconfig");

    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&kubectl);
        command
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .env("HOME", server.dir.path())
            .kill_on_drop(true);
        let name = kubectl.to_string_lossy().into_owned();
        async move {
            tokio::time::timeout(GUARD, command.output())
                .await
                .expect("kubectl in time")
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {}: {e}; install kubectl v1.32 or point KUBECTL at it \
                         (tests/run says how)",
                        name
                    )
                })
        }
    };
    let out = run(&["version", "-o", "json"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl version failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_str(&stdout).expect("kubectl prints JSON");
    assert_eq!(
        printed["serverVersion"]["gitVersion"],
        "v1.33.0-wasmkube.test"
    );

    // kubectl (Go, HTTP/2) presents the admin certificate and the handler sees its identity.
    let out = run(&["get", "--raw", "/whoami"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(who["user"], "admin");
    server.stop().await;
}

/// Short timeouts, so the idle tests see them pass.
fn short_timeouts() -> ServeOptions {
    ServeOptions {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
    }
}

/// Reads until the server closes the connection; fails the test if it does not.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, what: &str) -> Vec<u8> {
    let mut rest = Vec::new();
    match tokio::time::timeout(GUARD, stream.read_to_end(&mut rest)).await {
        Err(_) => panic!("the server did not close {what}"),
        // A TLS peer that closes without close_notify is reported as UnexpectedEof.
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{what}: {e}"),
        Ok(Ok(_)) => {}
    }
    rest
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_disconnected() {
    let server = TestServer::start_with(whoami_routes(), Some(short_timeouts())).await;
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    closed_by_server(&mut stalled, "a connection without a handshake").await;
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(whoami_routes(), Some(short_timeouts())).await;

    // TLS, then not a single request.
    let mut silent = server.connect(true, &[b"http/1.1"]).await.expect("connect");
    closed_by_server(&mut silent, "a connection that sent no request").await;

    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let mut keep_alive = server.connect(true, &[b"http/1.1"]).await.expect("connect");
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\nok") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(GUARD, keep_alive.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before the response: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    let rest = closed_by_server(&mut keep_alive, "an idle keep-alive connection").await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));

    // HTTP/2: the preface and SETTINGS, then no stream. The server sends its SETTINGS,
    // later a GOAWAY, and closes.
    let mut h2 = server.connect(true, &[b"h2"]).await.expect("connect");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write the preface");
    // A client that answers the server's PINGs (a graceful GOAWAY waits for one), until
    // the server closes.
    let mut goaway = false;
    let mut frames: Vec<u8> = Vec::new();
    let closed = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = match h2.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
                    return;
                }
            };
            frames.extend_from_slice(&buf[..n]);
            while frames.len() >= 9 {
                let len = usize::from(frames[0]) << 16
                    | usize::from(frames[1]) << 8
                    | usize::from(frames[2]);
                if frames.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (frames[3], frames[4]);
                goaway |= kind == 7;
                if kind == 6 && flags & 1 == 0 {
                    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&frames[9..17]);
                    let _ = h2.write_all(&ack).await;
                }
                frames.drain(..9 + len);
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server did not close an HTTP/2 connection without streams"
    );
    assert!(goaway, "the server closed without a GOAWAY");
    server.stop().await;
}

#[tokio::test]
async fn a_quiet_watch_keeps_its_connection_past_the_idle_timeout() {
    let release = Arc::new(Notify::new());
    let r = Arc::clone(&release);
    let routes = Router::new().route(
        "/watch",
        get(move || {
            let r = Arc::clone(&r);
            async move {
                let first = futures::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"{\"type\":\"ADDED\"}\n"))
                });
                let second = futures::stream::once(async move {
                    r.notified().await;
                    Ok::<_, Infallible>(Bytes::from_static(b"{\"type\":\"MODIFIED\"}\n"))
                });
                axum::body::Body::from_stream(futures::StreamExt::chain(first, second))
            }
        }),
    );
    let server = TestServer::start_with(routes, Some(short_timeouts())).await;
    let mut watch = server.connect(true, &[b"http/1.1"]).await.expect("connect");
    watch
        .write_all(b"GET /watch HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ADDED") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(GUARD, watch.read(&mut buf))
            .await
            .expect("first event in time")
            .expect("read");
        assert!(n > 0, "closed before the first event");
        seen.extend_from_slice(&buf[..n]);
    }
    // The clock: a connection opened now without a request is closed once the idle
    // timeout has passed.
    let mut clock = server.connect(true, &[b"http/1.1"]).await.expect("connect");
    closed_by_server(&mut clock, "the idle connection").await;
    // The watch is a request in flight: its connection is still open and the next event
    // arrives.
    release.notify_one();
    while !String::from_utf8_lossy(&seen).contains("MODIFIED") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(GUARD, watch.read(&mut buf))
            .await
            .expect("second event in time")
            .expect("read");
        assert!(n > 0, "the quiet watch's connection was closed");
        seen.extend_from_slice(&buf[..n]);
    }
    server.stop().await;
}
