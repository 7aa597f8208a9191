//! `wasi:http/proxy` components served through [`HttpService`]: responses, failures as
//! status codes, timeouts, bounded concurrency and the built-in hyper server.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmkube_runtime::{
    GuestNetwork, HttpService, HttpSpec, Limits, MemorySink, Protocol, ResponseBody,
};

use crate::guests::{self, Handler};
use crate::{PATIENCE, eventually, load, test_runtime};

async fn service(handler: Handler, spec: HttpSpec) -> (HttpService, tempfile::TempDir) {
    let (runtime, dir) = test_runtime();
    let program = load(&runtime, &guests::proxy_component(&handler)).await;
    (runtime.http_service(&program, spec), dir)
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "pod.example")
        .body(Empty::new())
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn body_text(response: http::Response<ResponseBody>) -> String {
    let bytes = tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("body still streaming after {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("body failed: {e}"))
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn a_proxy_component_answers_a_request() {
    let (service, _dir) = service(Handler::Hello("hello from wasm\n"), HttpSpec::default()).await;
    let response = service.handle(get("/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "hello from wasm\n");
    let stats = service.stats();
    assert_eq!((stats.requests, stats.responses, stats.failures), (1, 1, 0));
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance_and_many_run_at_once() {
    // The handler answers how many requests its instance has seen: always 1.
    let (service, _dir) = service(Handler::CountCalls, HttpSpec::default()).await;
    let requests = (0..8).map(|_| {
        let service = service.clone();
        tokio::spawn(async move { body_text(service.handle(get("/")).await).await })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.ok().as_deref(), Some("1"));
    }
    assert_eq!(body_text(service.handle(get("/")).await).await, "1");
    assert_eq!(service.stats().responses, 9);
    eventually("instances to be released", || {
        service.stats().in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn a_trapping_handler_costs_its_request_a_500_and_logs_to_stderr() {
    let stderr = MemorySink::new();
    let spec = HttpSpec {
        stderr: Box::new(stderr.clone()),
        ..HttpSpec::default()
    };
    let (service, _dir) = service(Handler::Trap, spec).await;
    let response = service.handle(get("/")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(service.stats().failures, 1);
    assert!(stderr.text().contains("unreachable"), "{}", stderr.text());
}

#[tokio::test]
async fn a_handler_past_its_memory_limit_is_counted_as_out_of_memory() {
    let spec = HttpSpec {
        limits: Limits {
            memory_bytes: Some(16 << 20),
            ..Limits::default()
        },
        ..HttpSpec::default()
    };
    let (service, _dir) = service(Handler::GrowMemory, spec).await;
    let response = service.handle(get("/")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body_text(response).await, "handler ran out of memory\n");
    assert_eq!(service.stats().out_of_memory, 1);
}

#[tokio::test]
async fn a_handler_that_never_answers_times_out_with_504() {
    let spec = HttpSpec {
        request_timeout: Duration::from_millis(200),
        ..HttpSpec::default()
    };
    let (service, _dir) = service(Handler::Spin, spec).await;
    let response = service.handle(get("/")).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    eventually("the timeout to be counted", || {
        service.stats().timeouts == 1
    })
    .await;
    eventually("the instance to be dropped", || {
        service.stats().in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn concurrency_is_bounded_and_stop_ends_in_flight_and_waiting_requests() {
    let spec = HttpSpec {
        max_concurrent_requests: 1,
        ..HttpSpec::default()
    };
    let (service, _dir) = service(Handler::Spin, spec).await;
    let first = tokio::spawn({
        let service = service.clone();
        async move { service.handle(get("/first")).await.status() }
    });
    eventually("the first request to run", || {
        service.stats().in_flight == 1
    })
    .await;
    let second = tokio::spawn({
        let service = service.clone();
        async move { service.handle(get("/second")).await.status() }
    });
    eventually("the second request to arrive", || {
        service.stats().requests == 2
    })
    .await;
    // The second waits for the only slot: still one instance.
    assert_eq!(service.stats().in_flight, 1);
    service.stop();
    for request in [first, second] {
        let status = tokio::time::timeout(PATIENCE, request)
            .await
            .unwrap_or_else(|_| panic!("request still running after stop"))
            .ok();
        assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE));
    }
    eventually("the instance to be dropped", || {
        service.stats().in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn serve_answers_http_on_a_listener_and_shuts_down_gracefully() {
    let (service, _dir) = service(Handler::Hello("served\n"), HttpSpec::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .serve(listener, async {
                    let _ = shutdown_signal.await;
                })
                .await
        }
    });

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("no reply after {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("served\n"), "{reply}");

    let _ = shutdown.send(());
    let result = tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap_or_else(|_| panic!("server still running after shutdown"));
    assert!(matches!(result, Ok(Ok(()))));
}

/// Lets in connections from one address only, and asks nothing else.
struct OnlyFrom(
    std::net::IpAddr,
    std::sync::Mutex<Vec<(std::net::SocketAddr, u16)>>,
);

impl wasmkube_runtime::ConnectPolicy for OnlyFrom {
    fn allow_egress(&self, _to: std::net::SocketAddr, _protocol: Protocol) -> bool {
        true
    }

    fn allow_ingress(
        &self,
        from: std::net::SocketAddr,
        local_port: u16,
        protocol: Protocol,
    ) -> bool {
        assert_eq!(protocol, Protocol::Tcp);
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((from, local_port));
        from.ip() == self.0
    }
}

/// Sends one request from `source` and returns the reply ("" when the connection was closed
/// without one).
async fn request_from(source: [u8; 4], to: std::net::SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = socket.connect(to).await.unwrap_or_else(|e| panic!("{e}"));
    // A refused peer's connection may be closed before or while this is written.
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")
        .await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("connection still open after {PATIENCE:?}"));
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn serve_closes_connections_the_policy_refuses_at_once() {
    let policy = std::sync::Arc::new(OnlyFrom(
        std::net::IpAddr::from([127, 0, 0, 7]),
        std::sync::Mutex::default(),
    ));
    let network =
        GuestNetwork::new(std::net::IpAddr::from([127, 0, 0, 1])).with_policy(policy.clone());
    let spec = HttpSpec {
        network: Some(network),
        ..HttpSpec::default()
    };
    let (service, _dir) = service(Handler::Hello("served\n"), spec).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .serve(listener, async {
                    let _ = shutdown_signal.await;
                })
                .await
        }
    });

    let refused = request_from([127, 0, 0, 8], address).await;
    assert_eq!(refused, "", "a refused peer gets no answer");
    assert_eq!(service.stats().requests, 0, "nor reaches the guest");
    let served = request_from([127, 0, 0, 7], address).await;
    assert!(served.contains("served\n"), "{served}");
    let asked = policy.1.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(asked.len(), 2);
    assert!(
        asked.iter().all(|(_, port)| *port == address.port()),
        "{asked:?}"
    );

    let _ = shutdown.send(());
    let result = tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap_or_else(|_| panic!("server still running after shutdown"));
    assert!(matches!(result, Ok(Ok(()))));
}
