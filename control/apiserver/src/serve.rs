//! Serving the API over TLS: the accept loop, per-connection handshakes, client
//! certificate identity, HTTP/1.1 + HTTP/2, idle connections, and graceful shutdown.
//!
//! Each accepted connection gets its own task, so a slow or broken TLS handshake never
//! holds up another client; handshakes are cut after [`ServeOptions::handshake_timeout`].
//! The verified client certificate (if any) becomes an [`Identity`] extension on every
//! request of the connection, which [`crate::authn::authenticate`] then trusts.
//!
//! Idle connections are closed as kube-apiserver's (Go's `IdleTimeout`, 90 s): a connection
//! with no request in flight for [`ServeOptions::idle_timeout`] — one that never sent a
//! request after its handshake, an HTTP/1.1 keep-alive connection between requests, an
//! HTTP/2 connection without streams — is shut down gracefully (HTTP/2: GOAWAY) by
//! `idle::Activity`. A request counts as in flight until its response body is finished, so
//! a watch keeps its connection however quiet it is; HTTP/2 keep-alive pings find peers
//! that vanished under one. HTTP/1.1 request heads must arrive within 32 s
//! (kube-apiserver's `ReadHeaderTimeout`).
//!
//! On shutdown the listener closes at once, in-flight requests get [`SHUTDOWN_GRACE`] to
//! finish, and whatever is still open then (long-lived watches) is cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::authn::{Identity, identity_from_certificate};

mod idle;

/// How long a client may take to finish the TLS handshake, by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may go without a request in flight, by default (kube-apiserver's
/// `IdleTimeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an HTTP/1.1 client may take to send a request head (kube-apiserver's
/// `ReadHeaderTimeout`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(32);
/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long in-flight requests may run on after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// How long to back off after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection-level timeouts of [`serve_tls_with`].
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a connection may go without a request in flight before it is closed.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, with the default
/// [`ServeOptions`].
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls_with(listener, tls, app, ServeOptions::default(), shutdown).await
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
///
/// Requests carry `ConnectInfo<SocketAddr>` and, when the client presented a certificate
/// the TLS layer verified, its [`Identity`] (CN as user, O values as groups). Returns
/// after the listener is closed and every connection has finished or been cut.
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT.min(options.idle_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    // Tells every connection to finish its requests and close.
    let (stopping, stop_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Watch events are small writes that must leave at once: without this,
                // Nagle's algorithm meets the client's delayed ACK and adds ~40 ms.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "setting TCP_NODELAY failed");
                }
                let connection = Connection {
                    acceptor: acceptor.clone(),
                    builder: Arc::clone(&builder),
                    app: app.clone(),
                    peer,
                    options,
                };
                let stop = stop_signal.clone();
                connections.spawn(async move { connection.run(tcp, stop).await });
            }
        }
    }

    drop(listener);
    tracing::debug!(
        connections = connections.len(),
        "stopped accepting; draining connections"
    );
    stopping.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            connections = connections.len(),
            "grace period over; cutting connections"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// One accepted TCP connection, before its handshake.
struct Connection {
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    peer: SocketAddr,
    options: ServeOptions,
}

impl Connection {
    async fn run(self, tcp: TcpStream, mut stop: watch::Receiver<bool>) {
        let Connection {
            acceptor,
            builder,
            app,
            peer,
            options,
        } = self;
        let handshake = acceptor.accept(tcp);
        let stream = match tokio::time::timeout(options.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let identity: Option<Identity> = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| identity_from_certificate(cert));
        tracing::trace!(%peer, user = identity.as_ref().map(|i| i.user.as_str()), "TLS connection");

        let activity = Arc::new(idle::Activity::new());
        let tracked = Arc::clone(&activity);
        let service = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(identity) = &identity {
                req.extensions_mut().insert(identity.clone());
            }
            // In flight from here until the response body is finished or dropped.
            let request = tracked.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(request.track(response))
            }
        });
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service),
        );
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = activity.idle_for(options.idle_timeout), if !closing => {
                    tracing::debug!(%peer, "closing an idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
