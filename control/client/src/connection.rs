//! The HTTP connections of an API client: kube-rs' client stack with a bounded pool of idle
//! connections.
//!
//! kube-rs talks HTTP/1.1 to the apiserver through hyper-util's pooled client, whose pool
//! keeps every connection it ever opened for 90 s after its last request, however many
//! there are. A component that sends many requests at once — the agent while 1,000 pods
//! start, each worker writing its status and asking for its token — opens a connection per
//! request in flight, and after the burst hundreds of idle TLS connections keep their
//! buffers on both ends (the client's and the apiserver's): about 30 KiB per pod of the
//! server's memory after 1,000 pods were created 32 at a time (docs/benchmarks.md). As
//! client-go (`MaxIdleConnsPerHost` 25 in apimachinery's transport defaults), at most
//! [`MAX_IDLE_CONNECTIONS_PER_HOST`] idle connections are kept; the others close when
//! their request is done.

use std::sync::{Arc, PoisonError, RwLock};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

/// Idle connections a client keeps to the apiserver (client-go's `MaxIdleConnsPerHost`).
pub const MAX_IDLE_CONNECTIONS_PER_HOST: usize = 25;

/// A client for `config`, as `kube::Client::try_from` builds it (TLS from the config, its
/// timeouts, authentication and headers) but with the bounded connection pool.
pub fn client(config: kube::Config) -> kube::Result<kube::Client> {
    let tls = config.rustls_client_config()?;
    client_with_tls(config, tls)
}

/// [`client`] with a TLS configuration of the caller's (e.g. a client certificate resolver
/// that follows rotations).
pub fn client_with_tls(
    config: kube::Config,
    tls: rustls::ClientConfig,
) -> kube::Result<kube::Client> {
    build(config, tls, None)
}

/// A bearer token its owner renews: every request of a [`client_with_bearer_token`] client
/// carries the value it holds at that moment.
#[derive(Clone)]
pub struct BearerToken(Arc<RwLock<HeaderValue>>);

impl BearerToken {
    /// A holder of `token`; `None` when the token is not a valid header value.
    pub fn new(token: &str) -> Option<BearerToken> {
        Some(BearerToken(Arc::new(RwLock::new(header(token)?))))
    }

    /// Replaces the token (false, and the old one kept, when `token` is not a valid header
    /// value).
    pub fn set(&self, token: &str) -> bool {
        let Some(value) = header(token) else {
            return false;
        };
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
        true
    }

    fn get(&self) -> HeaderValue {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

fn header(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// [`client`] authenticating with `token` alone (as client-go's rest.Config with a
/// BearerToken whose source rotates): the config's own credentials (client certificate,
/// token, exec plugin) are dropped, its server, CA and timeouts kept.
pub fn client_with_bearer_token(
    mut config: kube::Config,
    token: BearerToken,
) -> kube::Result<kube::Client> {
    config.auth_info = kube::config::AuthInfo::default();
    let tls = config.rustls_client_config()?;
    build(config, tls, Some(token))
}

fn build(
    config: kube::Config,
    tls: rustls::ClientConfig,
    token: Option<BearerToken>,
) -> kube::Result<kube::Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: HttpClient<_, Body> = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS_PER_HOST)
        .build(connector);
    let bearer = token.map(|token| {
        MapRequestLayer::new(move |mut request: Request<Body>| {
            request.headers_mut().insert(AUTHORIZATION, token.get());
            request
        })
    });
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .option_layer(bearer)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use kube::api::WatchParams;
    use wasmkube_apiserver::testing::TestApiserver;

    use super::*;

    /// Established connections to `port` on 127.0.0.1, from any client (`/proc/net/tcp`).
    fn connections_to(port: u16) -> usize {
        let remote = format!("0100007F:{port:04X}");
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
            })
            .count()
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn after_a_burst_of_requests_at_most_25_idle_connections_stay_open() {
        let server = TestApiserver::start()
            .await
            .unwrap_or_else(|e| panic!("starting an apiserver: {e}"));
        let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig())
            .unwrap_or_else(|e| panic!("reading the kubeconfig: {e}"));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("loading the kubeconfig: {e}"));
        let client = client(config).unwrap_or_else(|e| panic!("building the client: {e}"));
        let namespaces: Api<Namespace> = Api::all(client);
        let listed = namespaces
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("listing namespaces: {e}"));
        assert!(!listed.items.is_empty());

        // 40 watches at once hold 40 connections until the server ends them (1 s).
        let port = server.addr().port();
        let watches: Vec<_> = (0..40)
            .map(|_| {
                let namespaces = namespaces.clone();
                tokio::spawn(async move {
                    let params = WatchParams::default().timeout(1);
                    let stream = namespaces.watch(&params, "0").await?;
                    stream.for_each(|_| async {}).await;
                    Ok::<(), kube::Error>(())
                })
            })
            .collect();
        wait_for("40 connections for 40 watches", || {
            connections_to(port) >= 40
        })
        .await;
        for watch in watches {
            match watch.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("a watch failed: {e}"),
                Err(e) => panic!("a watch task failed: {e}"),
            }
        }
        wait_for("the idle connections beyond 25 closed", || {
            connections_to(port) <= MAX_IDLE_CONNECTIONS_PER_HOST
        })
        .await;
        // The pooled ones still serve requests.
        namespaces
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("listing namespaces again: {e}"));
    }

    #[tokio::test]
    async fn a_bearer_token_client_sends_the_token_it_holds_now() {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;

        let server = TestApiserver::start()
            .await
            .unwrap_or_else(|e| panic!("starting an apiserver: {e}"));
        let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig())
            .unwrap_or_else(|e| panic!("reading the kubeconfig: {e}"));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("loading the kubeconfig: {e}"));
        let admin = client(config.clone()).unwrap_or_else(|e| panic!("the admin client: {e}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, "default");
        let robot: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "robot"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        accounts
            .create(&Default::default(), &robot)
            .await
            .unwrap_or_else(|e| panic!("creating the service account: {e}"));
        let answer = accounts
            .create_token_request("robot", &Default::default(), &TokenRequest::default())
            .await
            .unwrap_or_else(|e| panic!("requesting a token: {e}"));
        let token = answer.status.map(|s| s.token).unwrap_or_default();

        // The admin's client certificate is dropped: the service account, bound to
        // nothing, is refused (403) rather than allowed.
        let holder = BearerToken::new(&token).unwrap_or_else(|| panic!("a header value"));
        assert_eq!(format!("{holder:?}"), "BearerToken(<redacted>)");
        let robot = client_with_bearer_token(config, holder.clone())
            .unwrap_or_else(|e| panic!("the token client: {e}"));
        let namespaces: Api<Namespace> = Api::all(robot);
        let refused = namespaces
            .list(&Default::default())
            .await
            .expect_err("a service account bound to nothing cannot list namespaces");
        let status = crate::status::api_status(&refused).unwrap_or_else(|| panic!("{refused}"));
        assert_eq!(status.code, 403, "{status:?}");
        assert!(
            status
                .message
                .contains("system:serviceaccount:default:robot"),
            "{status:?}"
        );

        // A new value is used by the next request: an invalid token is not authenticated.
        assert!(holder.set("not-a-token"));
        assert!(
            !holder.set("line\nbreak"),
            "a header value cannot hold a newline"
        );
        let unauthenticated = namespaces
            .list(&Default::default())
            .await
            .expect_err("an invalid token is refused");
        let status = crate::status::api_status(&unauthenticated)
            .unwrap_or_else(|| panic!("{unauthenticated}"));
        assert_eq!(status.code, 401, "{status:?}");
    }
}
