//! Serving the API over TLS: the accept loop, per-connection handshakes, client
//! certificate identity, HTTP/1.1 + HTTP/2, and graceful shutdown.
//!
//! Each accepted connection gets its own task, so a slow or broken TLS handshake never
//! holds up another client; handshakes are cut after [`HANDSHAKE_TIMEOUT`]. The verified
//! client certificate (if any) becomes an [`Identity`] extension on every request of the
//! connection, which [`crate::authn::authenticate`] then trusts. On shutdown the listener
//! closes at once, in-flight requests get [`SHUTDOWN_GRACE`] to finish, and whatever is
//! still open then (long-lived watches) is cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::authn::{Identity, identity_from_certificate};

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run on after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// How long to back off after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` over TLS on `listener` until `shutdown` completes.
///
/// Requests carry `ConnectInfo<SocketAddr>` and, when the client presented a certificate
/// the TLS layer verified, its [`Identity`] (CN as user, O values as groups). Returns
/// after the listener is closed and every connection has finished or been cut.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
                };
                let watcher = graceful.watcher();
                connections.spawn(async move { connection.run(tcp, watcher).await });
            }
        }
    }

    drop(listener);
    tracing::debug!(
        connections = connections.len(),
        "stopped accepting; draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::debug!(connections = connections.len(), "grace period over; cutting connections");
        }
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
}

impl Connection {
    async fn run(self, tcp: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        let Connection {
            acceptor,
            builder,
            app,
            peer,
        } = self;
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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

        let service = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(identity) = &identity {
                req.extensions_mut().insert(identity.clone());
            }
            req
        });
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service),
        );
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
