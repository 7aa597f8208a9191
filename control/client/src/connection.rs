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

use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use tower::ServiceBuilder;

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
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
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
}
